/**
 * Two (or more) Tunnels over real UDP sockets on 127.0.0.1, plus a raw attacker socket.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { Identity } from '../../transport/identity.js';
import {
  AeadKey,
  authSignedMessage,
  decodeRelay,
  decodeTunnelFrame,
  encodeAnonymousKeyExchange,
  encodeAuthKeyExchange,
  encodePlain,
  encodeRelayDeliver,
  encodeSealed,
  UdpEndpoint,
  X25519KeyPair,
  type EstablishedInfo,
} from '../../transport/tunnel/index.js';
import { collect, FakeRegistry, makeNode, packet, payloadOf, RawPeer, settle, until, type TestNode } from './tunnel-helpers.js';

async function pair(t: Test, opts = {}): Promise<{ reg: FakeRegistry; a: TestNode; b: TestNode }> {
  const reg = new FakeRegistry();
  const a = await makeNode(t, reg, 1, opts);
  const b = await makeNode(t, reg, 2, opts);
  return { reg, a, b };
}

async function established(t: Test, opts = {}): Promise<{ reg: FakeRegistry; a: TestNode; b: TestNode }> {
  const p = await pair(t, opts);
  p.a.tunnel.addPeer(2, { host: '127.0.0.1', port: p.b.port });
  await until(() => !!p.a.tunnel.peer(2)?.encrypted && !!p.b.tunnel.peer(1)?.encrypted, 'both sides established');
  await settle();
  return p;
}

/** The last PILS frame a node sent (unwrapped from a 0x05 relay frame if needed). */
function lastSealed(node: TestNode): Buffer {
  const frames = node.wire.map((w) => (w.frame[0] === 0x05 ? w.frame.subarray(9) : w.frame)).filter((f) => f.subarray(0, 4).toString() === 'PILS');
  return frames[frames.length - 1]!;
}

async function attacker(t: Test, host = '127.0.0.1'): Promise<UdpEndpoint> {
  const ep = new UdpEndpoint({ bufferBytes: 0 });
  await ep.bind(host, 0);
  t.teardown(() => ep.close());
  return ep;
}

t.test('two tunnels establish an authenticated exchange and carry packets both ways', async (t) => {
  const { a, b } = await pair(t);
  const estA = collect<[number, EstablishedInfo]>(a.tunnel, 'established');
  const estB = collect<[number, EstablishedInfo]>(b.tunnel, 'established');
  a.tunnel.addPeer(2, { host: '127.0.0.1', port: b.port });
  a.tunnel.send(2, packet(1, 2, 'queued before the exchange'));
  await until(() => b.received.length === 1, 'queued packet delivered');
  t.same(estA[0], [2, { authenticated: true, rekeyed: false }]);
  t.same(estB[0], [1, { authenticated: true, rekeyed: false }]);
  t.equal(b.received[0]!.node, 1);
  t.equal(payloadOf(b.received[0]!.packet), 'queued before the exchange');
  t.same(b.received[0]!.info, { endpoint: { host: '127.0.0.1', port: a.port }, relayed: false, encrypted: true, authenticated: true });

  b.tunnel.send(1, packet(2, 1, 'reply'));
  a.tunnel.send(2, packet(1, 2, 'second'));
  await until(() => a.received.length === 1 && b.received.length === 2, 'both directions');
  t.equal(payloadOf(a.received[0]!.packet), 'reply');
  t.equal(payloadOf(b.received[1]!.packet), 'second');

  const big = randomBytes(60_000);
  a.tunnel.send(2, packet(1, 2, big));
  await until(() => b.received.length === 3, 'large packet');
  t.same(b.received[2]!.packet.subarray(34), big, '60 KB packet intact');

  const infoA = a.tunnel.peer(2)!;
  t.match(infoA, { node_id: 2, path: 'direct', encrypted: true, authenticated: true, endpoint: { host: '127.0.0.1', port: b.port }, packets_out: 3, packets_in: 1, queued: 0 });
  t.equal(infoA.send_counter, 3, 'first packet used counter 1');
  t.match(b.tunnel.peer(1), { endpoint: { host: '127.0.0.1', port: a.port }, authenticated: true }, 'endpoint learned from the PILA');
  t.equal(a.tunnel.stats().dropped, 0, 'nothing dropped on a clean exchange');
  t.equal(b.tunnel.stats().dropped, 0);
  t.notOk(a.wire.some((w) => w.frame.subarray(0, 4).toString() === 'PILT'), 'no plaintext ever sent');
});

t.test('replayed, truncated, tampered, wrong-key and plaintext frames are dropped and counted', async (t) => {
  const { a, b } = await established(t);
  const evil = await attacker(t);
  a.tunnel.send(2, packet(1, 2, 'genuine'));
  await until(() => b.received.length === 1, 'genuine packet');
  const delivered = lastSealed(a);
  // An on-path attacker captures a fresh frame B has not seen yet (A's path briefly points at it).
  a.tunnel.setPath(2, { host: '127.0.0.1', port: evil.address().port });
  a.tunnel.send(2, packet(1, 2, 'captured in flight'));
  const fresh = lastSealed(a);
  a.tunnel.setPath(2, { host: '127.0.0.1', port: b.port });

  evil.send(delivered, b.port, '127.0.0.1'); // replay from another address
  a.ep.send(delivered, b.port, '127.0.0.1'); // replay from the genuine address
  evil.send(fresh.subarray(0, fresh.length - 1), b.port, '127.0.0.1'); // truncated by one byte
  evil.send(fresh.subarray(0, 40), b.port, '127.0.0.1'); // truncated below a minimal frame
  const tampered = Buffer.from(fresh);
  tampered[30]! ^= 0x40;
  evil.send(tampered, b.port, '127.0.0.1');
  const wrongKey = new AeadKey(randomBytes(32)).seal(Buffer.alloc(12, 9), packet(1, 2, 'forged'));
  evil.send(encodeSealed(1, 0x09090909, 0x0909090909, wrongKey.ciphertext, wrongKey.tag), b.port, '127.0.0.1');
  evil.send(Buffer.concat(encodePlain(packet(1, 2, 'plaintext'))), b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().dropped >= 7, 'seven drops');

  const s = b.tunnel.stats();
  t.equal(s.replay, 2, 'both replays');
  t.equal(s.auth_failed, 3, 'truncated, tampered, wrong key');
  t.equal(s.bad_frame, 1, 'truncated below the minimum');
  t.equal(s.plaintext_dropped, 1);
  t.equal(b.received.length, 1, 'none of them delivered');
  t.match(b.tunnel.peer(1), { endpoint: { port: a.port } }, 'a replay from elsewhere does not move the endpoint');

  // The failed forgeries did not burn the counter: the genuine captured frame is still accepted once.
  a.ep.send(fresh, b.port, '127.0.0.1');
  await until(() => b.received.length === 2, 'captured frame delivered late');
  t.equal(payloadOf(b.received[1]!.packet), 'captured in flight');
  a.tunnel.send(2, packet(1, 2, 'still works'));
  await until(() => b.received.length === 3, 'traffic after the attack');
  t.equal(payloadOf(b.received[2]!.packet), 'still works');
});

t.test('a forged frame with a huge counter does not lock out genuine traffic (v1 bug fixed)', async (t) => {
  const { a, b } = await established(t);
  const evil = await attacker(t);
  a.tunnel.send(2, packet(1, 2, 'one'));
  await until(() => b.received.length === 1, 'first');
  const forged = Buffer.from(lastSealed(a));
  forged.writeUInt32BE(0x001fffff, 12); // counter ≈ 2^53, same prefix, stale tag
  evil.send(forged, b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().auth_failed === 1, 'forgery rejected');
  for (let i = 0; i < 5; i++) a.tunnel.send(2, packet(1, 2, `after ${i}`));
  await until(() => b.received.length === 6, 'genuine traffic after the forgery');
  t.equal(b.tunnel.stats().too_old, 0);
});

t.test('PILA whose key differs from the registry, bad signature, unknown node: refused', async (t) => {
  const { reg, b } = await pair(t);
  const evil = await attacker(t);
  const est = collect(b.tunnel, 'established');
  const x = X25519KeyPair.generate();
  // An attacker claims node 1 with its own (valid) Ed25519 key.
  const impostor = Identity.generate();
  evil.send(encodeAuthKeyExchange(1, x.publicKey, impostor.publicKey, impostor.sign(authSignedMessage(1, x.publicKey))), b.port, '127.0.0.1');
  // The registry's key for node 1, but a signature it did not make.
  evil.send(encodeAuthKeyExchange(1, X25519KeyPair.generate().publicKey, reg.keys.get(1)!, randomBytes(64)), b.port, '127.0.0.1');
  // A node the registry does not know.
  evil.send(encodeAuthKeyExchange(77, x.publicKey, impostor.publicKey, impostor.sign(authSignedMessage(77, x.publicKey))), b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().dropped >= 3, 'three refusals');
  const s = b.tunnel.stats();
  t.equal(s.key_mismatch, 1);
  t.equal(s.bad_signature, 1);
  t.equal(s.lookup_failed, 1);
  t.equal(est.length, 0, 'no context built');
  t.same(b.tunnel.peers(), [], 'no peer admitted');
});

t.test('PILK is refused and answered with our PILA (as v1)', async (t) => {
  const { b } = await pair(t);
  const evil = await attacker(t);
  const got: Buffer[] = [];
  evil.on('message', (m) => got.push(m));
  evil.send(encodeAnonymousKeyExchange(1, X25519KeyPair.generate().publicKey), b.port, '127.0.0.1');
  await until(() => got.length === 1, 'PILA answer');
  t.equal(b.tunnel.stats().anonymous_refused, 1);
  const f = decodeTunnelFrame(got[0]!);
  t.match(f, { kind: 'PILA', node: 2 });
  t.same(b.tunnel.peers(), []);
});

t.test('an inner packet whose source is not the tunnel peer is dropped', async (t) => {
  const { reg, a, b } = await established(t);
  const c = await makeNode(t, reg, 3);
  c.tunnel.addPeer(2, { host: '127.0.0.1', port: b.port });
  await until(() => !!c.tunnel.peer(2)?.encrypted && !!b.tunnel.peer(3)?.encrypted, 'C established with B');
  c.tunnel.send(2, packet(1, 2, 'I am node 1, honest')); // authenticated as 3, claims 1
  c.tunnel.send(2, packet(3, 2, 'I am node 3'));
  await until(() => b.received.length === 1, 'the honest one');
  await settle();
  t.equal(b.tunnel.stats().source_mismatch, 1);
  t.equal(b.received.length, 1);
  t.equal(b.received[0]!.node, 3);
  t.equal(payloadOf(b.received[0]!.packet), 'I am node 3');
  void a;
});

t.test('our own frames reflected back to us are dropped', async (t) => {
  const { a, b } = await established(t);
  const evil = await attacker(t);
  b.tunnel.send(1, packet(2, 1, 'to a'));
  await until(() => a.received.length === 1, 'delivered');
  // Reflect B's frame to B, relabelled as coming from A (same key both directions in v1).
  const reflected = Buffer.from(lastSealed(b));
  reflected.writeUInt32BE(1, 4);
  evil.send(reflected, b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().reflected === 1, 'reflection caught');
  t.equal(b.received.length, 0);
});

t.test('key-exchange flood from one source is rate-limited before any crypto or look-up', async (t) => {
  const { reg, b } = await pair(t);
  const evil = await attacker(t);
  const impostor = Identity.generate();
  const x = X25519KeyPair.generate();
  const frame = encodeAuthKeyExchange(1, x.publicKey, impostor.publicKey, impostor.sign(authSignedMessage(1, x.publicKey)));
  const before = reg.lookups;
  for (let i = 0; i < 300; i++) evil.send(frame, b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().kx_rate_limited + b.tunnel.stats().kx_received >= 300, 'all 300 frames processed');
  await settle();
  const s = b.tunnel.stats();
  t.ok(s.kx_rate_limited >= 270, `rate-limited ${s.kx_rate_limited} of 300`);
  t.ok(s.kx_received <= 30, `only ${s.kx_received} frames reached key-exchange processing (burst 20 + refill)`);
  t.ok(reg.lookups - before <= s.kx_received, `look-ups (${reg.lookups - before}) never exceed admitted frames`);
  t.equal(s.key_mismatch + s.kx_superseded, s.kx_received, 'every admitted frame was checked (or superseded) and refused');

  // Another source address is unaffected (buckets are per address, not per port).
  const other = await attacker(t, '127.0.0.2');
  other.send(frame, b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().key_mismatch === s.key_mismatch + 1, 'other source processed');
  t.equal(b.tunnel.stats().kx_rate_limited, s.kx_rate_limited);
});

t.test('pending queue: bounded (oldest dropped, counted), never leaks plaintext, flushed encrypted', async (t) => {
  const reg = new FakeRegistry();
  const a = await makeNode(t, reg, 1);
  const d = await new RawPeer(4).start(t, reg); // sniffer that does not answer yet
  a.tunnel.addPeer(4, { host: '127.0.0.1', port: d.port });
  for (let i = 0; i < 100; i++) a.tunnel.send(4, packet(1, 4, `SECRET-${i}`));
  await settle(50);
  t.match(a.tunnel.peer(4), { queued: 64, queue_dropped: 36, encrypted: false });
  t.equal(a.tunnel.stats().queue_dropped, 36);
  t.ok(d.inbox.length >= 1 && d.inbox.length <= 3, `only paced exchange frames went out (${d.inbox.length})`);
  for (const { msg } of d.inbox) {
    t.equal(msg.subarray(0, 4).toString(), 'PILA', 'nothing but PILA on the wire');
    t.notOk(msg.includes('SECRET'), 'no payload bytes on the wire');
  }
  // Now the peer answers (it built its context from our PILA, as Go does): the queue is flushed, encrypted.
  d.sendTo(a.port, d.exchangeFrame());
  await until(() => d.frames('PILS').length === 64, '64 sealed frames');
  const payloads = d.frames('PILS').map((f) => payloadOf(d.open(f)!));
  t.same(payloads, Array.from({ length: 64 }, (_, i) => `SECRET-${i + 36}`), 'the newest 64, in order, decryptable by the peer');
  t.notOk(d.inbox.some(({ msg }) => msg.subarray(0, 4).toString() === 'PILT'), 'never a PILT copy');
  t.notOk(d.frames('PILS').some((f) => f.includes('SECRET')), 'sealed frames do not contain the plaintext');
});

t.test('relay: frames go to the beacon wrapped in 0x05, come back unwrapped from 0x06', async (t) => {
  const { a, b } = await pair(t);
  // A fake beacon: forwards 0x05 (sender, dest, inner) as 0x06 (sender, inner) to dest's socket.
  const beacon = await attacker(t);
  const where = new Map([[1, a.port], [2, b.port]]);
  let forwarded = 0;
  beacon.on('message', (msg) => {
    const r = decodeRelay(msg);
    forwarded++;
    beacon.send(encodeRelayDeliver(r.sender, r.inner), where.get(r.dest)!, '127.0.0.1');
  });
  const bport = beacon.address().port;
  a.tunnel.addPeer(2, { host: '127.0.0.1', port: b.port }, { relay: { host: '127.0.0.1', port: bport } });
  t.equal(a.tunnel.overhead(2), 45, 'PILS 36 + relay header 9');
  a.tunnel.send(2, packet(1, 2, 'via the beacon'));
  await until(() => b.received.length === 1, 'relayed packet');
  t.same(b.received[0]!.info, { endpoint: { host: '127.0.0.1', port: bport }, relayed: true, encrypted: true, authenticated: true });
  t.match(b.tunnel.peer(1), { path: 'relay', relay: { port: bport }, endpoint: null, authenticated: true }, 'no direct endpoint learned from a relayed exchange');
  b.tunnel.send(1, packet(2, 1, 'back via the beacon'));
  await until(() => a.received.length === 1, 'relayed reply');
  t.equal(a.received[0]!.info.relayed, true);
  t.ok(forwarded >= 4, `beacon forwarded ${forwarded} frames`);
  t.ok(a.wire.every((w) => w.port === bport && w.frame[0] === 0x05), 'A sent everything to the beacon, wrapped');
  t.ok(b.wire.every((w) => w.port === bport && w.frame[0] === 0x05), 'B answered through the beacon');

  // A relay-deliver whose claimed sender differs from the inner frame's sender is refused.
  const evil = await attacker(t);
  evil.send(encodeRelayDeliver(3, lastSealed(a)), b.port, '127.0.0.1');
  await until(() => b.tunnel.stats().relay_mismatch === 1, 'relay mismatch');

  // Switching A to direct: traffic goes straight to B, and B follows (authenticated roaming).
  a.tunnel.setPath(2, { host: '127.0.0.1', port: b.port });
  t.equal(a.tunnel.overhead(2), 36);
  a.tunnel.send(2, packet(1, 2, 'direct now'));
  await until(() => b.received.length === 2, 'direct packet');
  t.match(b.tunnel.peer(1), { path: 'direct', endpoint: { port: a.port } });
  t.equal(b.received[1]!.info.relayed, false);
});

t.test('roaming: after an authenticated frame from a new address, replies follow the peer', async (t) => {
  const { a, b } = await established(t);
  const paths = collect(b.tunnel, 'path');
  // A moves to a new socket (new NAT binding).
  const moved = new UdpEndpoint({ bufferBytes: 0 });
  const { port: newPort } = await moved.bind('127.0.0.1', 0);
  t.teardown(() => moved.close());
  moved.on('message', (m, r) => a.tunnel.handleDatagram(m, r));
  a.out = moved;
  const before = a.received.length;
  a.tunnel.send(2, packet(1, 2, 'from the new address'));
  await until(() => b.received.length >= 1 && b.tunnel.peer(1)!.endpoint!.port === newPort, 'endpoint updated');
  t.equal(paths.length, 1);
  b.tunnel.send(1, packet(2, 1, 'follow me'));
  await until(() => a.received.length === before + 1, 'reply reached the new socket');
  t.equal(payloadOf(a.received[before]!.packet), 'follow me');
});

t.test('a delayed genuine frame from another address is delivered but does not move the endpoint', async (t) => {
  const { a, b } = await established(t);
  const evil = await attacker(t);
  const paths = collect(b.tunnel, 'path');
  a.tunnel.setPath(2, { host: '127.0.0.1', port: evil.address().port }); // captured, held back
  a.tunnel.send(2, packet(1, 2, 'older'));
  const older = lastSealed(a);
  a.tunnel.setPath(2, { host: '127.0.0.1', port: b.port });
  a.tunnel.send(2, packet(1, 2, 'newer'));
  await until(() => b.received.length === 1, 'newer frame');
  evil.send(older, b.port, '127.0.0.1');
  await until(() => b.received.length === 2, 'older frame delivered late');
  t.equal(payloadOf(b.received[1]!.packet), 'older');
  t.match(b.tunnel.peer(1), { endpoint: { port: a.port } }, 'endpoint stays with the newest frame');
  t.equal(paths.length, 0);
});

t.test('removePeer forgets the context: later frames are refused', async (t) => {
  const { a, b } = await established(t);
  b.tunnel.removePeer(1);
  t.equal(b.tunnel.hasPeer(1), false);
  a.tunnel.send(2, packet(1, 2, 'after revoke'));
  await until(() => b.tunnel.stats().no_context >= 1, 'refused');
  t.equal(b.received.length, 0);
  t.equal(b.tunnel.stats().no_peer, 0);
  b.tunnel.send(1, packet(2, 1, 'x'));
  t.equal(b.tunnel.stats().no_peer, 1, 'sending to a removed peer is a counted drop');
});

t.test('beacon messages are handed on, PILP ignored and counted, garbage never throws', async (t) => {
  const { b } = await pair(t);
  const evil = await attacker(t);
  const beaconMsgs = collect<[Buffer]>(b.tunnel, 'beacon');
  evil.send(Buffer.from([0x02, 4, 127, 0, 0, 1, 0x1f, 0x90]), b.port, '127.0.0.1');
  evil.send(Buffer.from('PILP'), b.port, '127.0.0.1');
  for (let i = 0; i < 300; i++) {
    const g = randomBytes(1 + (i % 150));
    if (i % 2) g.write(['PILS', 'PILA', 'PILK', 'PILT'][i % 4]!, 0, 'latin1');
    if (g[0]! < 0x10) g[0]! |= 0x10; // not a beacon message…
    if (i % 3 === 0) g[0] = 0x06; // …except relay-delivers
    evil.send(g, b.port, '127.0.0.1');
  }
  await until(() => b.ep.stats().packets_received >= 302, 'all received');
  await settle(50);
  t.equal(beaconMsgs.length, 1);
  t.same(beaconMsgs[0]![0], Buffer.from([0x02, 4, 127, 0, 0, 1, 0x1f, 0x90]));
  const s = b.tunnel.stats();
  t.equal(s.punches_ignored, 1);
  t.equal(s.internal_error, 0, 'no unexpected exceptions');
  t.equal(b.received.length, 0);
  t.ok(s.bad_frame > 0);
});
