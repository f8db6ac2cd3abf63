import t from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { Identity } from '../../transport/identity.js';
import {
  BeaconServer,
  decodeDiscoverReply,
  decodePunchCommand,
  decodeRelayDeliver,
  encodeDiscover,
  encodePunchRequest,
  encodeRelay,
  encodeSignedDiscover,
  encodeSignedDiscoverRaw,
  encodeSync,
  discoverChallenge,
} from '../../natpunch/index.js';
import { KeyBook, TestClock, UdpClient, closeAll, discoverSigned, startBeacon, waitCounter } from './helpers.js';

const isPunch = (b: Buffer): boolean => b[0] === 0x04;
const isDeliver = (b: Buffer): boolean => b[0] === 0x06;

t.test('discover reply carries the observed endpoint; the node-0 probe binds nothing', async (t) => {
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf });
  const c = await UdpClient.open();
  closeAll(t, c);
  c.send(encodeDiscover(0), ep);
  const reply = decodeDiscoverReply(await c.next());
  t.same(reply, { address: '127.0.0.1', port: c.port });
  t.equal(beacon.bindings(), 0);
  t.equal(beacon.stats().counters.discover_probe, 1);
  t.ok(beacon.healthy());
});

t.test('signed discover binds the node to its source endpoint', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock });
  const a = await keys.node(100);
  closeAll(t, a);
  a.client.send(encodeSignedDiscover(a.identity, a.id, clock.t), ep);
  t.same(decodeDiscoverReply(await a.client.next()), { address: '127.0.0.1', port: a.client.port }, 'reply to a signed discover too');
  t.same(beacon.bindingOf(100), { address: '127.0.0.1', port: a.client.port, proven: true });
  t.equal(beacon.bindings(), 1);
  t.equal(beacon.stats().counters.discover_ok, 1);
  // The node moves (new socket): a fresh signed discover moves the binding.
  const moved = await UdpClient.open();
  closeAll(t, moved);
  clock.advance(1);
  moved.send(encodeSignedDiscover(a.identity, a.id, clock.t), ep);
  await moved.next();
  t.equal(beacon.bindingOf(100)?.port, moved.port);
  t.equal(beacon.stats().counters.bindings_moved, 1);
});

t.test('forged, stale, replayed or unknown-node discovers neither bind nor steal a binding', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock });
  const victim = await keys.node(7);
  const attacker = await UdpClient.open();
  closeAll(t, victim, attacker);
  const original = encodeSignedDiscover(victim.identity, 7, clock.t);
  victim.client.send(original, ep);
  await victim.client.next();
  const home = { address: '127.0.0.1', port: victim.client.port, proven: true };
  t.same(beacon.bindingOf(7), home);

  const send = async (buf: Buffer): Promise<void> => {
    attacker.send(buf, ep);
    await attacker.next((b) => b[0] === 0x02);
  };
  const other = Identity.generate();
  clock.advance(10);
  await send(encodeSignedDiscover(other, 7, clock.t)); // signed by the wrong key
  const sig = victim.identity.sign(discoverChallenge(7, clock.t));
  const tampered = Buffer.from(sig);
  tampered[5]! ^= 0x40;
  await send(encodeSignedDiscoverRaw(7, clock.t, tampered)); // corrupted signature
  await send(encodeSignedDiscoverRaw(7, clock.t + 1, sig)); // valid signature over another timestamp
  await send(encodeSignedDiscover(victim.identity, 7, clock.t - 60_001)); // stale (past)
  await send(encodeSignedDiscover(victim.identity, 7, clock.t + 60_001)); // stale (future)
  await send(original); // captured and replayed from another address
  await send(encodeSignedDiscover(other, 999, clock.t)); // node the registry does not know
  await send(encodeDiscover(7)); // unsigned claim (not legacy)
  const c = beacon.stats().counters;
  t.equal(c.discover_bad_signature, 3);
  t.equal(c.discover_stale, 2);
  t.equal(c.discover_replayed, 1);
  t.equal(c.discover_unknown_node, 1);
  t.equal(c.unsigned_discover_ignored, 1);
  t.equal(c.discover_ok, 1);
  t.same(beacon.bindingOf(7), home, 'victim binding untouched');
  t.equal(beacon.bindingOf(999), null);

  // Replaying from the original address does not re-bind either, but a fresh discover still works.
  victim.client.send(original, ep);
  await victim.client.next();
  t.equal(beacon.stats().counters.discover_replayed, 2);
  clock.advance(1000);
  await discoverSigned(victim, ep, clock.t);
  t.equal(beacon.stats().counters.discover_ok, 2);
});

t.test('unsigned discover binds only in legacy mode and never replaces a proven binding', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const strict = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock });
  const legacy = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock, legacy: true });
  const v1 = await UdpClient.open();
  const proven = await keys.node(2);
  const thief = await UdpClient.open();
  closeAll(t, v1, proven, thief);

  v1.send(encodeDiscover(1), strict.ep);
  await v1.next();
  t.equal(strict.beacon.bindingOf(1), null, 'strict beacon ignores unsigned discover');
  t.equal(strict.beacon.stats().counters.unsigned_discover_ignored, 1);

  v1.send(encodeDiscover(1), legacy.ep);
  await v1.next();
  t.same(legacy.beacon.bindingOf(1), { address: '127.0.0.1', port: v1.port, proven: false }, 'legacy beacon binds');
  t.equal(legacy.beacon.stats().counters.discover_legacy_bound, 1);

  await discoverSigned(proven, legacy.ep, clock.t);
  thief.send(encodeDiscover(2), legacy.ep);
  await thief.next();
  t.equal(legacy.beacon.bindingOf(2)?.port, proven.client.port, 'unsigned claim cannot steal a proven binding');
  t.equal(legacy.beacon.stats().counters.discover_steal_refused, 1);
});

t.test('unsigned discover from the endpoint the registry has on record binds (v1 daemons)', async (t) => {
  const keys = new KeyBook();
  const v1 = await UdpClient.open();
  const other = await UdpClient.open();
  closeAll(t, v1, other);
  const { beacon, ep } = await startBeacon(t, {
    publicKeyOf: keys.publicKeyOf,
    registeredEndpointOf: async (id) => (id === 5 ? { address: '127.0.0.1', port: v1.port } : null),
  });
  other.send(encodeDiscover(5), ep);
  await other.next();
  v1.send(encodeDiscover(6), ep);
  await v1.next();
  await waitCounter(beacon, 'unsigned_discover_ignored', 2);
  t.equal(beacon.bindings(), 0, 'wrong endpoint or unknown node: no binding');
  v1.send(encodeDiscover(5), ep);
  await v1.next();
  await waitCounter(beacon, 'discover_registry_bound', 1);
  t.same(beacon.bindingOf(5), { address: '127.0.0.1', port: v1.port, proven: true });
});

t.test('punch: only from a bound requester at its own endpoint, only to bound targets, only when disclosure is allowed', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const allowed = new Set<string>(['10>11']);
  const { beacon, ep } = await startBeacon(t, {
    publicKeyOf: keys.publicKeyOf,
    clock,
    canDisclose: (a, b) => allowed.has(`${a}>${b}`),
  });
  const a = await keys.node(10);
  const b = await keys.node(11);
  const c = await keys.node(12);
  const impostor = await UdpClient.open();
  closeAll(t, a, b, c, impostor);
  await discoverSigned(a, ep, clock.t);
  await discoverSigned(b, ep, clock.t);

  // Unbound requester (13) and impostor claiming node 10 from another socket.
  impostor.send(encodePunchRequest(13, 11), ep);
  impostor.send(encodePunchRequest(10, 11), ep);
  await impostor.barrier(ep);
  // Bound requester, unknown target; and a request the policy denies (11 → 10 is not allowed).
  a.client.send(encodePunchRequest(10, 12), ep);
  a.client.send(encodePunchRequest(10, 10), ep);
  b.client.send(encodePunchRequest(11, 10), ep);
  await a.client.barrier(ep);
  await b.client.barrier(ep);
  const s = beacon.stats().counters;
  t.equal(s.punch_denied_requester_unbound, 1);
  t.equal(s.punch_denied_requester_mismatch, 1);
  t.equal(s.punch_denied_target_unknown, 1);
  t.equal(s.punch_denied_self, 1);
  t.equal(s.punch_denied_policy, 1);
  t.equal(s.punch_commands_sent, 0);
  t.notOk([...a.client.inbox, ...b.client.inbox, ...impostor.inbox].some(isPunch), 'no endpoint disclosed to anyone');

  // Allowed: both sides learn the other's endpoint.
  a.client.send(encodePunchRequest(10, 11), ep);
  t.same(decodePunchCommand(await a.client.next(isPunch)), { address: '127.0.0.1', port: b.client.port });
  t.same(decodePunchCommand(await b.client.next(isPunch)), { address: '127.0.0.1', port: a.client.port });
  t.equal(beacon.stats().counters.punch_ok, 1);
  t.equal(beacon.stats().counters.punch_commands_sent, 2);
});

t.test('asynchronous key source and disclosure rule', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, {
    publicKeyOf: async (id) => keys.publicKeyOf(id),
    canDisclose: async (_a, target) => target !== 31,
    clock,
  });
  const a = await keys.node(30);
  const b = await keys.node(31);
  closeAll(t, a, b);
  a.client.send(encodeSignedDiscover(a.identity, 30, clock.t), ep);
  b.client.send(encodeSignedDiscover(b.identity, 31, clock.t), ep);
  await waitCounter(beacon, 'discover_ok', 2);
  a.client.send(encodePunchRequest(30, 31), ep);
  await waitCounter(beacon, 'punch_denied_policy', 1);
  b.client.send(encodePunchRequest(31, 30), ep);
  t.same(decodePunchCommand(await b.client.next(isPunch)), { address: '127.0.0.1', port: a.client.port });
  t.same(decodePunchCommand(await a.client.next(isPunch)), { address: '127.0.0.1', port: b.client.port });
});

t.test('relay: delivered byte-exact from a bound sender; unbound, mismatched and unknown-destination frames dropped and counted', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock });
  const a = await keys.node(40);
  const b = await keys.node(41);
  const spoof = await UdpClient.open();
  closeAll(t, a, b, spoof);
  await discoverSigned(a, ep, clock.t);
  await discoverSigned(b, ep, clock.t);

  const sizes = [0, 1, 4, 1200, 8192, 60_000];
  let bytes = 0;
  for (const n of sizes) {
    const payload = randomBytes(n);
    bytes += n;
    a.client.send(encodeRelay(40, 41, payload), ep);
    const d = decodeRelayDeliver(await b.client.next(isDeliver));
    t.equal(d.senderId, 40);
    t.ok(d.payload.equals(payload), `payload of ${n} bytes delivered byte-exact`);
  }
  b.client.send(encodeRelay(41, 40, Buffer.from('back')), ep);
  t.equal(decodeRelayDeliver(await a.client.next(isDeliver)).payload.toString(), 'back');

  spoof.send(encodeRelay(99, 41, Buffer.from('unbound')), ep);
  spoof.send(encodeRelay(40, 41, Buffer.from('mismatch')), ep); // claims node 40 from another socket
  spoof.send(Buffer.from([0x05, 0, 0, 0, 40]), ep); // truncated
  await spoof.barrier(ep);
  a.client.send(encodeRelay(40, 77, Buffer.from('nowhere')), ep);
  await a.client.barrier(ep);
  await b.client.barrier(ep);
  t.notOk(b.client.inbox.some(isDeliver), 'nothing from the spoofer reached node 41');
  const s = beacon.stats().counters;
  t.equal(s.relay_delivered, sizes.length + 1);
  t.equal(s.relay_bytes, bytes + 4);
  t.equal(s.relay_dropped_sender_unbound, 1);
  t.equal(s.relay_dropped_sender_mismatch, 1);
  t.equal(s.relay_dropped_malformed, 1);
  t.equal(s.relay_dropped_dest_unknown, 1);
});

t.test('bindings expire after the TTL; punch requests and relays refresh them', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock, limits: { bindingTtlMs: 60_000 } });
  const a = await keys.node(50);
  const b = await keys.node(51);
  closeAll(t, a, b);
  await discoverSigned(a, ep, clock.t);
  await discoverSigned(b, ep, clock.t);
  clock.advance(40_000);
  a.client.send(encodePunchRequest(50, 51), ep); // refreshes 50 only
  await a.client.next(isPunch);
  clock.advance(40_000); // 51 is now 80 s old, 50 is 40 s old
  t.equal(beacon.bindings(), 1);
  t.equal(beacon.bindingOf(51), null);
  t.equal(beacon.stats().counters.bindings_expired, 1);
  a.client.send(encodeRelay(50, 51, Buffer.from('x')), ep);
  b.client.send(encodeRelay(51, 50, Buffer.from('y')), ep);
  await a.client.barrier(ep);
  await b.client.barrier(ep);
  const s = beacon.stats().counters;
  t.equal(s.relay_dropped_dest_unknown, 1, 'relay to an expired node is dropped');
  t.equal(s.relay_dropped_sender_unbound, 1, 'relay from an expired node is dropped');
  clock.advance(61_000);
  t.equal(beacon.bindings(), 0, 'everything expires without refresh');
});

t.test('tables are bounded: bindings, verification rate, in-flight look-ups', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock, limits: { maxBindings: 2 } });
  const nodes = await Promise.all([60, 61, 62].map((id) => keys.node(id)));
  closeAll(t, ...nodes);
  for (const n of nodes) await discoverSigned(n, ep, clock.t);
  t.equal(beacon.bindings(), 2);
  t.equal(beacon.bindingOf(62), null, 'third node refused, first two kept');
  t.equal(beacon.stats().counters.bindings_full, 1);

  const limited = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock, limits: { verifyPerSourcePerSec: 1 } });
  const n = nodes[0]!;
  for (let i = 0; i < 5; i++) await discoverSigned(n, limited.ep, clock.t + i);
  t.equal(limited.beacon.stats().counters.discover_ok, 2, 'burst of 2 verifications, then limited');
  t.equal(limited.beacon.stats().counters.discover_rate_limited, 3);

  let calls = 0;
  const stuck = await startBeacon(t, {
    publicKeyOf: () => {
      calls++;
      return new Promise<null>(() => undefined);
    },
    clock,
    limits: { maxPendingChecks: 2 },
  });
  for (let i = 0; i < 4; i++) await discoverSigned(nodes[i % 3]!, stuck.ep, clock.t + i);
  t.equal(calls, 4);
  t.equal(stuck.beacon.stats().pendingChecks, 2);
  t.equal(stuck.beacon.stats().counters.discover_busy, 2);
});

t.test('a throwing or rejecting key source is counted, not fatal', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  let mode = 0;
  const { beacon, ep } = await startBeacon(t, {
    publicKeyOf: (id) => {
      mode++;
      if (mode === 1) throw new Error('boom');
      if (mode === 2) return Promise.reject(new Error('registry down'));
      return keys.publicKeyOf(id);
    },
    clock,
  });
  const a = await keys.node(70);
  closeAll(t, a);
  await discoverSigned(a, ep, clock.t);
  await discoverSigned(a, ep, clock.t + 1);
  await waitCounter(beacon, 'discover_key_lookup_failed', 2);
  await discoverSigned(a, ep, clock.t + 2);
  t.equal(beacon.stats().counters.discover_ok, 1);
  t.equal(beacon.stats().counters.internal_errors, 0);
});

t.test('garbage datagrams never crash the server', async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, { publicKeyOf: keys.publicKeyOf, clock, legacy: true });
  const a = await keys.node(80);
  const junk = await UdpClient.open();
  closeAll(t, a, junk);
  await discoverSigned(a, ep, clock.t);
  const seeds = [
    encodeDiscover(80),
    encodeSignedDiscover(a.identity, 80, clock.t),
    encodePunchRequest(80, 80),
    encodeRelay(80, 80, randomBytes(20)),
    encodeSync(1, [80]),
    Buffer.from([0x02, 4, 1, 2, 3, 4, 0, 1]),
    Buffer.from([0x04, 16]),
    Buffer.from([0x06, 0, 0, 0, 80, 1]),
  ];
  for (let i = 0; i < 3000; i++) {
    let buf: Buffer;
    if (i % 3 === 0) buf = randomBytes(randomInt(0, 120));
    else {
      buf = Buffer.from(seeds[i % seeds.length]!);
      if (buf.length > 1 && i % 3 === 1) buf[randomInt(1, buf.length)]! ^= 1 << randomInt(8);
      else buf = buf.subarray(0, randomInt(buf.length + 1));
    }
    junk.send(buf, ep);
    if (i % 200 === 0) await junk.barrier(ep); // pace so the kernel buffer never overflows
  }
  await junk.barrier(ep);
  // Still serving: a relay between bound nodes works.
  // (Junk may legitimately relay to node 80 here: legacy mode lets it bind mutated node IDs.)
  a.client.send(encodeRelay(80, 80, Buffer.from('alive')), ep);
  const alive = await a.client.next((b) => isDeliver(b) && b.subarray(5).toString() === 'alive');
  t.equal(decodeRelayDeliver(alive).senderId, 80);
  const s = beacon.stats();
  t.equal(s.counters.internal_errors, 0);
  t.equal(s.counters.socket_errors, 0);
  t.ok(s.counters.datagrams_received >= 3000, `received ${s.counters.datagrams_received}`);
  t.ok(beacon.healthy());
});

const ipv6 = await new Promise<boolean>((resolve) => {
  const probe = createSocket('udp6');
  probe.once('error', () => resolve(false));
  probe.bind(0, '::1', () => {
    probe.close();
    resolve(true);
  });
});

t.test('IPv6: discover reply carries a 16-byte address', { skip: ipv6 ? false : 'no IPv6 loopback (::1) on this host' }, async (t) => {
  const clock = new TestClock();
  const keys = new KeyBook();
  const beacon = new BeaconServer({ listen: { host: '::1', port: 0 }, publicKeyOf: keys.publicKeyOf, clock });
  const addr = await beacon.listen();
  t.teardown(() => beacon.close());
  const a = await keys.node(90, '::1');
  const b = await keys.node(91, '::1');
  closeAll(t, a, b);
  const ep = { address: addr.address, port: addr.port };
  a.client.send(encodeSignedDiscover(a.identity, 90, clock.t), ep);
  const raw = await a.client.next();
  t.equal(raw[1], 16);
  t.same(decodeDiscoverReply(raw), { address: '::1', port: a.client.port });
  await discoverSigned(b, ep, clock.t);
  a.client.send(encodePunchRequest(90, 91), ep);
  t.same(decodePunchCommand(await b.client.next(isPunch)), { address: '::1', port: a.client.port });
  a.client.send(encodeRelay(90, 91, Buffer.from('v6')), ep);
  t.equal(decodeRelayDeliver(await b.client.next(isDeliver)).payload.toString(), 'v6');
});

t.test('lifecycle: listen errors are typed, close frees the port, close is idempotent', async (t) => {
  const keys = new KeyBook();
  const a = new BeaconServer({ listen: { host: '127.0.0.1', port: 0 }, publicKeyOf: keys.publicKeyOf });
  const { port } = await a.listen();
  await t.rejects(a.listen(), { code: 'bad_state' });
  const b = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf });
  await t.rejects(b.listen(), { code: 'listen_failed' });
  t.notOk(b.healthy());
  await a.close();
  await a.close();
  t.notOk(a.healthy());
  const c = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf });
  t.equal((await c.listen()).port, port, 'port reusable after close');
  const s = c.stats();
  t.ok(s.recvBufferBytes >= 4 * 1024 * 1024 || s.recvBufferBytes > 0, `receive buffer ${s.recvBufferBytes}`);
  await c.close();
  t.throws(() => new BeaconServer({ listen: { host: '127.0.0.1', port: 0 }, publicKeyOf: keys.publicKeyOf, beaconId: 2 ** 32 }), { code: 'bad_options' });

  const badHost = new BeaconServer({ listen: { host: 'no-such-host.invalid', port: 0 }, publicKeyOf: keys.publicKeyOf });
  await t.rejects(badHost.listen(), { code: 'listen_failed' });
  const badPeer = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf, peers: [{ host: '127.0.0.1', port: 0 }] });
  await t.rejects(badPeer.listen(), { code: 'bad_options' });
  const again = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf });
  t.equal((await again.listen()).port, port, 'a failed start frees its socket');
  await again.close();
  const racing = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf });
  const starting = racing.listen();
  await racing.close();
  await t.rejects(starting, { code: 'bad_state' }, 'close during listen wins');
  const last = new BeaconServer({ listen: { host: '127.0.0.1', port }, publicKeyOf: keys.publicKeyOf });
  t.equal((await last.listen()).port, port, 'and frees the port');
  await last.close();
});
