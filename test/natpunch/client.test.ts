// NatTraversal in-process on loopback with real UDP: a real registry, a real beacon, two TransportNodes.
// Direct traffic is "firewalled" by an outgoing-datagram filter on each node to force the relay.
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import pino from 'pino';
import t from 'tap';
import { BeaconServer } from '../../natpunch/beacon-server.js';
import { encodePunchCommand, NatTraversal, parseEndpoint, type PeerPath } from '../../natpunch/index.js';
import { encodeStunMessage, encodeXorMappedAddress, StunAttr, StunClass } from '../../natpunch/stun.js';
import { decodeB64Strict, Identity } from '../../transport/identity.js';
import { TransportNode } from '../../transport/node.js';
import type { Endpoint } from '../../transport/tunnel/index.js';
import { startRegistry } from '../registry/helpers.js';
import { sendHashed, serveHash, startPeer, type Peer } from './client-harness.js';

const MiB = 1 << 20;
const FAST = { keepaliveMs: 1000, probeIntervalMs: 600, maxProbeIntervalMs: 2000, directTimeoutMs: 1200, pingTimeoutMs: 800, tickMs: 100 };

interface World {
  registry: Endpoint;
  beacon: Endpoint;
  beaconServer: BeaconServer;
}

async function world(t: Tap): Promise<World> {
  const reg = await startRegistry(t);
  const beaconServer = new BeaconServer({
    listen: { host: '127.0.0.1', port: 0 },
    publicKeyOf: async (n) => {
      try {
        return decodeB64Strict((await reg.client.lookup(n)).public_key, 'public_key');
      } catch {
        return null;
      }
    },
    canDisclose: () => true,
    log: pino({ level: 'silent' }),
  });
  const addr = await beaconServer.listen();
  t.teardown(() => beaconServer.close());
  return { registry: { host: '127.0.0.1', port: reg.port }, beacon: { host: addr.address, port: addr.port }, beaconServer };
}

type Tap = { teardown(fn: () => unknown): void };

/** A switchable firewall: when `blocked`, datagrams to any port in `direct` are dropped. */
class Firewall {
  blocked = false;
  readonly direct = new Set<number>();
  /** Datagrams to the beacon, for the "beacon sees ciphertext only" check. */
  filter = (port: number): boolean => !(this.blocked && this.direct.has(port));
}

async function pair(t: Tap, w: World, fw?: Firewall, nat = FAST): Promise<[Peer, Peer]> {
  const opts = { registry: w.registry, beacon: w.beacon, bind: '127.0.0.1', nat, sendFilter: fw ? (p: number) => fw.filter(p) : undefined };
  const [a, b] = await Promise.all([startPeer(opts), startPeer(opts)]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  fw?.direct.add(a.local.port).add(b.local.port);
  return [a, b];
}

async function until<T>(what: string, fn: () => T | null | undefined | false, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

t.test('discovery: the beacon reports our socket, STUN too, --endpoint skips both', async (t) => {
  const w = await world(t);
  const p = await startPeer({ registry: w.registry, beacon: w.beacon, bind: '127.0.0.1', nat: FAST });
  t.teardown(() => p.close());
  t.same(p.nat.reflexive(), { host: '127.0.0.1', port: p.local.port }, 'beacon discover answers the tunnel socket\'s address');
  t.same(p.registered, p.local, 'and that is what was registered');
  // The signed discover at start bound us: the beacon holds one binding.
  await until('beacon binding', () => w.beaconServer.bindings() === 1);

  // A STUN server answering on loopback (replies reach the tunnel socket as beacon-range datagrams).
  const stun = createSocket('udp4');
  stun.on('message', (req, rinfo) => {
    const txid = req.subarray(8, 20);
    stun.send(encodeStunMessage(txid, { cls: StunClass.SUCCESS, attributes: [{ type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '203.0.113.7', port: 4242 }, txid) }], fingerprint: true }), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => stun.bind(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => stun.close(() => r())));
  const s = await startPeer({ registry: w.registry, bind: '127.0.0.1', stunServers: [`127.0.0.1:${stun.address().port}`], nat: FAST });
  t.teardown(() => s.close());
  t.same(s.nat.reflexive(), { host: '203.0.113.7', port: 4242 }, 'STUN XOR-MAPPED-ADDRESS is our reflexive endpoint');
  t.equal(s.nat.stats().stun_ok, 1);

  const o = await startPeer({ registry: w.registry, beacon: w.beacon, bind: '127.0.0.1', endpointOverride: parseEndpoint('198.51.100.9:7777'), nat: FAST });
  t.teardown(() => o.close());
  t.same(o.registered, { host: '198.51.100.9', port: 7777 }, '--endpoint is registered as is');
  t.equal(o.nat.stats().discovers_sent, 1, 'only the signed binding discover at start, no discovery');
});

t.test('resolved peer: coordinated punch, direct path, hash-verified transfer', async (t) => {
  const w = await world(t);
  const [a, b] = await pair(t, w);
  const sink = serveHash(b);
  const ep = await a.connectTo(b.id);
  t.same(ep, b.registered, 'the registry resolves the registered endpoint');
  const got = sink.expect(2 * MiB);
  const sent = await sendHashed(a, b.id, 2 * MiB);
  const r = await got;
  t.equal(r.sha256, sent.sha256, 'bytes intact');
  const pa = await until('a has a path to b', () => a.nat.path(b.id)?.established && a.nat.path(b.id));
  t.not(pa.path, 'relayed', `a reaches b ${pa.path}`);
  t.same(pa.endpoint, b.local, 'on b\'s own socket');
  t.ok(w.beaconServer.stats().counters.punch_ok >= 1, 'the beacon coordinated a punch');
  const pb = await until('b sees a', () => b.nat.path(a.id));
  t.not(pb.path, 'relayed');
  await until('an RTT sample', () => a.nat.path(b.id)?.rtt !== null, 5000);
  t.ok(a.nat.paths().every((p) => typeof p.changedAt === 'number'));
  sent.conn.destroy();
});

t.test('direct traffic dropped: relay through the beacon, ciphertext only, data intact', async (t) => {
  const w = await world(t);
  const fw = new Firewall();
  fw.blocked = true;
  const marker = Buffer.from('PLAINTEXT-MARKER-must-not-leak-0123456789');
  let leaked = 0;
  let relayed = 0;
  const [a, b] = await pair(t, w, fw);
  // Watch what a sends to the beacon (the beacon sees exactly this).
  const udp = a.node.udp;
  const send = udp.send.bind(udp);
  udp.send = (data, port, host) => {
    if (port === w.beacon.port) {
      const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
      if (buf[0] === 0x05) relayed++;
      if (buf.includes(marker)) leaked++;
    }
    send(data, port, host);
  };
  const sink = serveHash(b);
  await a.connectTo(b.id);
  const got = sink.expect(2 * MiB + marker.length);
  const conn = await a.node.host.connect(new (await import('../../transport/address.js')).Addr(0, b.id), 1000, { noDelay: true, timeoutMs: 30_000 });
  conn.write(marker);
  const sent = await sendHashed(a, b.id, 2 * MiB, { conn });
  const r = await got;
  t.equal(r.bytes, 2 * MiB + marker.length, 'every byte arrived through the relay');
  const pa = a.nat.path(b.id)!;
  t.equal(pa.path, 'relayed', 'a uses the relay');
  t.same(pa.endpoint, w.beacon, 'via the beacon');
  t.equal(b.nat.path(a.id)?.path, 'relayed', 'b too');
  t.ok(relayed > 10, `relay frames went to the beacon (${relayed})`);
  t.equal(leaked, 0, 'the marker never appeared in clear in anything the beacon received');
  t.ok(sent.sha256.length === 64);
  conn.destroy();
});

t.test('relayed stream upgrades to direct mid-stream when the punch starts working; hash intact', async (t) => {
  const w = await world(t);
  const fw = new Firewall();
  fw.blocked = true;
  const [a, b] = await pair(t, w, fw);
  const changes: PeerPath[] = [];
  a.nat.on('path', (p) => p.node === b.id && changes.push(p));
  const sink = serveHash(b);
  await a.connectTo(b.id);
  const total = 6 * MiB;
  const got = sink.expect(total);
  let upgradedAt = -1;
  let sentSoFar = 0;
  const sending = sendHashed(a, b.id, total, { chunk: 64 * 1024, gapMs: 8, onProgress: (n) => (sentSoFar = n) });
  await until('relayed', () => a.nat.path(b.id)?.path === 'relayed' && a.nat.path(b.id)?.established);
  await until('some data relayed', () => sentSoFar > MiB);
  fw.blocked = false; // the NATs "open": probes now get through
  await until('upgrade to direct', () => {
    const p = a.nat.path(b.id);
    if (p && p.path !== 'relayed') upgradedAt = sentSoFar;
    return p && p.path !== 'relayed';
  });
  const sent = await sending;
  const r = await got;
  t.equal(r.sha256, sent.sha256, 'the stream survived the path change byte-exactly');
  t.ok(upgradedAt > 0 && upgradedAt < total, `upgraded mid-stream (after ${upgradedAt} of ${total} bytes)`);
  const pa = a.nat.path(b.id)!;
  t.equal(pa.path, 'punched', 'the path was selected by a punch');
  t.same(pa.endpoint, b.local);
  t.ok(changes.some((c) => c.path === 'relayed') && changes.at(-1)!.path === 'punched', 'path events: relayed, then punched');
  t.ok(a.nat.stats().upgrades + b.nat.stats().upgrades >= 1, 'an authenticated check confirmed the upgrade');
  sent.conn.destroy();
});

t.test('a direct path that dies falls back to the relay; the stream carries on', async (t) => {
  const w = await world(t);
  const fw = new Firewall();
  const [a, b] = await pair(t, w, fw, { ...FAST, keepaliveMs: 500, pingTimeoutMs: 400 });
  const sink = serveHash(b);
  await a.connectTo(b.id);
  const total = 3 * MiB;
  const got = sink.expect(total);
  let sentSoFar = 0;
  const sending = sendHashed(a, b.id, total, { chunk: 64 * 1024, gapMs: 10, onProgress: (n) => (sentSoFar = n) });
  await until('direct', () => a.nat.path(b.id)?.established && a.nat.path(b.id)?.path !== 'relayed');
  await until('some data', () => sentSoFar > MiB / 2);
  fw.blocked = true; // mapping lost for good
  const sent = await sending;
  const r = await got;
  t.equal(r.sha256, sent.sha256, 'data intact across the fallback');
  t.equal(a.nat.path(b.id)?.path, 'relayed', 'a is on the relay now');
  t.ok(a.nat.stats().keepalive_failures >= 1 && a.nat.stats().relay_fallbacks >= 1);
  sent.conn.destroy();
});

t.test('bounded and closable: options validated, close frees timers and listeners', async (t) => {
  const identity = Identity.generate();
  const node = new TransportNode({ identity, lookupPublicKey: async () => null });
  await node.bind('127.0.0.1', 0);
  t.teardown(() => node.close());
  t.throws(() => new NatTraversal({ node, identity, keepaliveMs: 0 }), { code: 'bad_option' });
  const nat = new NatTraversal({ node, identity, beacon: { host: '127.0.0.1', port: 9 }, discoverTimeoutMs: 50, discoverAttempts: 1 });
  t.equal(await nat.discover(), null, 'no beacon answer: null, not an exception');
  node.start(5);
  nat.start(5);
  t.throws(() => nat.start(6), { code: 'node_changed' });
  const before = node.listenerCount('beacon');
  nat.close();
  t.equal(node.listenerCount('beacon'), before - 1, 'listener detached');
  t.throws(() => nat.addPeer(7, { host: '127.0.0.1', port: 9 }), { code: 'closed' });
  t.throws(() => parseEndpoint('nope'), { code: 'bad_endpoint' });
  t.equal(nat.relayFallback(7), false);
});

t.test('garbage from the beacon address and stray probes never throw and never steer', async (t) => {
  const identity = Identity.generate();
  const node = new TransportNode({ identity, lookupPublicKey: async () => null });
  await node.bind('127.0.0.1', 0);
  t.teardown(() => node.close());
  const beacon = { host: '127.0.0.1', port: 9 };
  const sent: Array<{ port: number; first: number }> = [];
  const udp = node.udp;
  const orig = udp.send.bind(udp);
  udp.send = (data, port, host) => {
    const b = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
    sent.push({ port, first: b[0]! });
    orig(data, port, host);
  };
  node.start(11);
  const nat = new NatTraversal({ node, identity, beacon, maxBursts: 8, punchBurst: 2, punchSpacingMs: 1 });
  nat.start(11);
  const from = { address: beacon.host, port: beacon.port, family: 'IPv4' as const, size: 0 };
  for (let i = 0; i < 3000; i++) {
    const len = 1 + (i % 40);
    const b = randomBytes(len);
    b[0] = i % 16; // every beacon type byte, valid or not
    udp.emit('message', b, from);
  }
  // Well-formed punch commands: each starts a bounded burst of probes.
  for (let i = 0; i < 20; i++) udp.emit('message', encodePunchCommand({ address: '127.0.0.1', port: 30000 + i }), from);
  // A punch command from anyone but our beacon is ignored.
  udp.emit('message', encodePunchCommand({ address: '127.0.0.1', port: 31000 }), { ...from, port: 10 });
  // Stray PILPs from endpoints that are no peer of ours.
  for (let i = 0; i < 200; i++) udp.emit('message', Buffer.from('PILP'), { address: '127.0.0.1', port: 20000 + i, family: 'IPv4' as const, size: 4 });
  await new Promise((r) => setTimeout(r, 50));
  const s = nat.stats();
  t.ok(s.punch_commands > 0, `well-formed punch commands in the garbage were obeyed (${s.punch_commands})`);
  t.ok(s.bursts <= 8 && s.bursts_dropped > 0, 'concurrent punch bursts are bounded (excess dropped, counted)');
  t.equal(s.upgrades, 0, 'nothing was steered');
  t.same(nat.paths(), [], 'no peer invented from garbage');
  const probesToStrangers = sent.filter((x) => x.port >= 20000 && x.port < 20200).length;
  t.equal(probesToStrangers, 0, 'stray probes get no answer (no reflection / amplification)');
  t.notOk(sent.some((x) => x.port === 31000), 'a forged punch command from another source was ignored');
  nat.close();
  t.equal(nat.stats().bursts, 0, 'close cleared every burst timer');
});
