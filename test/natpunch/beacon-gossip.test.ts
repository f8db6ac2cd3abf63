import t from 'tap';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { BeaconServer, type BeaconLimits, decodeRelayDeliver, decodeSync, encodeRelay, encodeSync } from '../../natpunch/index.js';
import { KeyBook, TestClock, UdpClient, closeAll, discoverSigned, waitCounter, type Teardown } from './helpers.js';

const isDeliver = (b: Buffer): boolean => b[0] === 0x06;

/** Two beacons that know each other as peers (ports reserved first so each can name the other). */
async function pair(
  t: Teardown,
  keys: KeyBook,
  clock: TestClock,
  limits: Partial<BeaconLimits> = {},
  extraPeersOfA: Array<{ host: string; port: number }> = [],
): Promise<[BeaconServer, BeaconServer]> {
  const ports = await Promise.all([freePort(), freePort()]);
  const mk = (i: number, id: number): BeaconServer =>
    new BeaconServer({
      listen: { host: '127.0.0.1', port: ports[i]! },
      peers: [{ host: '127.0.0.1', port: ports[1 - i]! }, ...(i === 0 ? extraPeersOfA : [])],
      beaconId: id,
      publicKeyOf: keys.publicKeyOf,
      clock,
      limits,
    });
  const a = mk(0, 0xa);
  const b = mk(1, 0xb);
  await a.listen();
  await b.listen();
  t.teardown(() => Promise.all([a.close(), b.close()]));
  return [a, b];
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

const ep = (b: BeaconServer): { address: string; port: number } => b.address()!;

t.test('two beacons gossip bound nodes and forward a relay across', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const [A, B] = await pair(t, keys, clock);
  const x = await keys.node(1);
  const y = await keys.node(2);
  closeAll(t, x, y);
  await discoverSigned(x, ep(A), clock.t);
  await discoverSigned(y, ep(B), clock.t);
  A.syncNow();
  B.syncNow();
  await waitCounter(A, 'sync_received', 1);
  await waitCounter(B, 'sync_received', 1);
  t.equal(A.stats().remoteNodes, 1);
  t.equal(B.stats().remoteNodes, 1);

  const payload = randomBytes(1000);
  x.client.send(encodeRelay(1, 2, payload), ep(A));
  const d = decodeRelayDeliver(await y.client.next(isDeliver));
  t.equal(d.senderId, 1);
  t.ok(d.payload.equals(payload), 'delivered byte-exact across beacons');
  t.equal(A.stats().counters.relay_forwarded, 1);
  t.equal(B.stats().counters.relay_delivered, 1);

  y.client.send(encodeRelay(2, 1, Buffer.from('reply')), ep(B));
  t.equal(decodeRelayDeliver(await x.client.next(isDeliver)).payload.toString(), 'reply', 'and back');
});

t.test('syncs only from configured peers; a forwarded frame is never forwarded again', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const fakePeer = await UdpClient.open(); // plays a peer beacon configured at A
  const stranger = await UdpClient.open();
  closeAll(t, fakePeer, stranger);
  const [A] = await pair(t, keys, clock, {}, [{ host: '127.0.0.1', port: fakePeer.port }]);
  t.equal(A.stats().peers, 2);

  stranger.send(encodeSync(0x5, [1, 2, 3]), ep(A));
  await stranger.barrier(ep(A));
  t.equal(A.stats().counters.sync_rejected_unknown_peer, 1, 'sync from an unknown address rejected');
  t.equal(A.stats().remoteNodes, 0);
  stranger.send(encodeRelay(1, 9, Buffer.from('x')), ep(A));
  await stranger.barrier(ep(A));
  t.equal(A.stats().counters.relay_dropped_sender_unbound, 1, 'strangers cannot pose as a forwarding beacon');

  // The fake peer says node 9 is bound at it, then forwards a relay for node 9 to A. A must not send it
  // back (or anywhere): forwarded frames get at most one hop.
  fakePeer.send(encodeSync(0xf, [9]), ep(A));
  await waitCounter(A, 'sync_received', 1);
  t.equal(A.stats().remoteNodes, 1);
  fakePeer.send(encodeRelay(1, 9, Buffer.from('loop?')), ep(A));
  await fakePeer.barrier(ep(A));
  t.equal(A.stats().counters.relay_dropped_dest_unknown, 1);
  t.equal(A.stats().counters.relay_forwarded, 0);
  t.notOk(fakePeer.inbox.some((b) => b[0] === 0x05), 'nothing bounced back');

  // A locally bound destination receives frames a peer forwards, with the original sender ID.
  const y = await keys.node(2);
  closeAll(t, y);
  await discoverSigned(y, ep(A), clock.t);
  fakePeer.send(encodeRelay(77, 2, Buffer.from('via peer')), ep(A));
  const d = decodeRelayDeliver(await y.client.next(isDeliver));
  t.equal(d.senderId, 77);
  t.equal(d.payload.toString(), 'via peer');

  // A's own gossip reaches the fake peer and lists node 2.
  A.syncNow();
  const sync = decodeSync(await fakePeer.next((b) => b[0] === 0x07));
  t.equal(sync.beaconId, 0xa);
  t.same(sync.nodeIds, [2]);
});

t.test('gossip rounds: split node sets merge, the next round replaces, sets expire after 60 s', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const [A, B] = await pair(t, keys, clock, { syncMaxIds: 2, bindingTtlMs: 10_000 });
  const nodes = await Promise.all([1, 2, 3, 4, 5].map((id) => keys.node(id)));
  closeAll(t, ...nodes);
  for (const n of nodes) await discoverSigned(n, ep(A), clock.t);
  A.syncNow(); // 3 datagrams: [1,2] [3,4] [5]
  await waitCounter(B, 'sync_received', 3);
  t.equal(B.stats().remoteNodes, 5, 'all parts of one round are kept');
  t.equal(A.stats().counters.sync_sent, 3);

  // Nodes 4 and 5 go away (their bindings expire, 1–3 refresh); the next round replaces B's view.
  clock.advance(6000);
  for (const n of nodes.slice(0, 3)) await discoverSigned(n, ep(A), clock.t);
  clock.advance(5000);
  t.equal(A.bindings(), 3);
  A.syncNow();
  await waitCounter(B, 'sync_received', 5);
  t.equal(B.stats().remoteNodes, 3, 'the new round replaced the old set');

  clock.advance(60_001);
  B.sweep();
  t.equal(B.stats().remoteNodes, 0, 'gossiped sets expire after 60 s without a sync');
});

t.test('setPeers replaces the mesh and forgets nodes learned from dropped peers', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const [A, B] = await pair(t, keys, clock);
  const x = await keys.node(1);
  closeAll(t, x);
  await discoverSigned(x, ep(A), clock.t);
  A.syncNow();
  await waitCounter(B, 'sync_received', 1);
  t.equal(B.stats().remoteNodes, 1);
  await B.setPeers([]);
  t.equal(B.stats().peers, 0);
  t.equal(B.stats().remoteNodes, 0);
  A.syncNow();
  await waitCounter(B, 'sync_rejected_unknown_peer', 1);
  await t.rejects(B.setPeers([{ host: '127.0.0.1', port: 0 }]), { code: 'bad_options' });
  await B.setPeers([{ host: 'localhost', port: ep(A).port }]);
  t.equal(B.stats().peers, 1, 'hostnames resolve');
  A.syncNow();
  await waitCounter(B, 'sync_received', 2);
  t.ok(decodeSync(encodeSync(1, [1])).nodeIds.length === 1);
});
