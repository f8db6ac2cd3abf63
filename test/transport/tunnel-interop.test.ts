/**
 * Interop with v1 (Go) behaviour over real UDP (wire reference §1.5–1.6, §6): a hand-driven peer that
 * restarts its counter at 1 with a new prefix after every exchange it processes, uses one key for both
 * directions, and re-sends identical exchange frames.
 */
import t from 'tap';
import {
  decodeTunnelFrame,
  type EstablishedInfo,
  type SealedFrame,
} from '../../transport/tunnel/index.js';
import { collect, FakeRegistry, makeNode, packet, payloadOf, RawPeer, settle, until } from './tunnel-helpers.js';

function sealedFrom(g: RawPeer): SealedFrame[] {
  return g.frames('PILS').map((f) => decodeTunnelFrame(f) as SealedFrame);
}

t.test('Go-style peer: double exchange, counter restart with a new prefix, same key both ways', async (t) => {
  const reg = new FakeRegistry();
  const b = await makeNode(t, reg, 2);
  const g = await new RawPeer(5).start(t, reg);
  const est = collect<[number, EstablishedInfo]>(b.tunnel, 'established');

  // Go initiates with its PILA; we reply with ours (we had no context), Go builds its context from it.
  g.sendTo(b.port, g.exchangeFrame());
  await until(() => g.contextsBuilt === 1, 'Go built its context from our reply');
  t.same(est, [[5, { authenticated: true, rekeyed: false }]]);
  t.match(b.tunnel.peer(5), { endpoint: { host: '127.0.0.1', port: g.port }, authenticated: true });

  const p1 = g.prefix;
  const first = [1, 2, 3].map((i) => g.seal(packet(5, 2, `p1-${i}`)));
  for (const f of first) g.sendTo(b.port, f);
  await until(() => b.received.length === 3, 'three packets under the first prefix');

  // Go re-sends its (byte-identical) exchange frame: no crypto redone, no reply, context kept.
  const pilaBefore = g.frames('PILA').length;
  g.sendTo(b.port, g.exchangeFrame());
  await settle(50);
  t.equal(b.tunnel.stats().kx_duplicate, 1);
  t.equal(g.frames('PILA').length, pilaBefore, 'no reply to an unchanged exchange');

  // Go processes another exchange frame: fresh context, new prefix, counter back to 1.
  g.buildContext(b.tunnel.publicKey);
  t.not(g.prefix, p1);
  t.equal(g.counter, 0);
  g.sendTo(b.port, g.seal(packet(5, 2, 'p2-1')));
  g.sendTo(b.port, g.seal(packet(5, 2, 'p2-2')));
  await until(() => b.received.length === 5, 'accepted after the counter restart');
  t.same(b.received.slice(3).map((r) => payloadOf(r.packet)), ['p2-1', 'p2-2']);
  t.equal(b.tunnel.peer(5)!.peer_prefixes, 2);

  // Replays under the old prefix are refused; a late frame under it (never seen) is still accepted.
  g.sendTo(b.port, first[1]!);
  g.sendTo(b.port, g.seal(packet(5, 2, 'p1-straggler'), 4, p1));
  await until(() => b.tunnel.stats().replay === 1 && b.received.length === 6, 'replay refused, straggler accepted');
  t.equal(payloadOf(b.received[5]!.packet), 'p1-straggler');

  // Same key both directions: Go opens our frames; our prefix is ours, not Go's.
  b.tunnel.send(5, packet(2, 5, 'to go'));
  await until(() => g.frames('PILS').length === 1, 'our frame at Go');
  t.equal(payloadOf(g.open(g.frames('PILS')[0]!)!), 'to go');
  t.not(sealedFrom(g)[0]!.prefix, g.prefix);
  t.equal(b.tunnel.stats().dropped, 1, 'only the replay was dropped');
});

t.test('Go restarts (new X25519 key): we re-key, reply, keep our counter monotonic; its old exchange is stale', async (t) => {
  const reg = new FakeRegistry();
  const b = await makeNode(t, reg, 2);
  const g = await new RawPeer(5).start(t, reg);
  const est = collect<[number, EstablishedInfo]>(b.tunnel, 'established');
  g.sendTo(b.port, g.exchangeFrame());
  await until(() => g.contextsBuilt === 1, 'established');
  for (let i = 0; i < 3; i++) b.tunnel.send(5, packet(2, 5, `before ${i}`));
  await until(() => g.frames('PILS').length === 3, 'three frames at Go');
  const oldExchange = g.exchangeFrame();

  // The Go daemon restarts: same node and identity, new X25519 key pair, new socket.
  const g2 = await new RawPeer(5, g.identity).start(t);
  g2.sendTo(b.port, g2.exchangeFrame());
  await until(() => g2.contextsBuilt === 1, 'we replied to the new key');
  t.same(est[1], [5, { authenticated: true, rekeyed: true }]);
  t.match(b.tunnel.peer(5), { endpoint: { port: g2.port } }, 'endpoint from the new authenticated exchange');
  for (let i = 0; i < 3; i++) b.tunnel.send(5, packet(2, 5, `after ${i}`));
  await until(() => g2.frames('PILS').length === 3, 'three frames at the restarted Go');
  t.same(g2.frames('PILS').map((f) => payloadOf(g2.open(f)!)), ['after 0', 'after 1', 'after 2']);
  const before = sealedFrom(g).map((f) => f.counter);
  const after = sealedFrom(g2).map((f) => f.counter);
  t.same(before, [1, 2, 3], 'first packet uses counter 1');
  t.same(after, [4, 5, 6], 'send counter kept across the re-exchange');
  t.not(sealedFrom(g2)[0]!.prefix, sealedFrom(g)[0]!.prefix, 'a new prefix for the new context');

  // Someone replays the dead process's exchange: it must not roll the peer back to the old key.
  g.sendTo(b.port, oldExchange);
  await until(() => b.tunnel.stats().stale_exchange === 1, 'stale exchange refused');
  b.tunnel.send(5, packet(2, 5, 'still the new key'));
  await until(() => g2.frames('PILS').length === 4, 'traffic continues under the new key');
  t.equal(payloadOf(g2.open(g2.frames('PILS')[3]!)!), 'still the new key');
});

t.test('a sealed frame with no context is answered with our exchange, so a Go peer re-keys', async (t) => {
  const reg = new FakeRegistry();
  const b = await makeNode(t, reg, 2);
  const g = await new RawPeer(5).start(t, reg);
  // Go still holds a context for a previous incarnation of node 2.
  g.buildContext(Buffer.from(b.tunnel.publicKey.map((x) => x ^ 0x55)));
  g.sendTo(b.port, g.seal(packet(5, 2, 'old context')));
  await until(() => g.frames('PILA').length === 1, 'our PILA offered');
  t.equal(b.tunnel.stats().no_context, 1);
  t.match(decodeTunnelFrame(g.frames('PILA')[0]!), { kind: 'PILA', node: 2 });
  // Go processes it (key changed: rebuild) and answers with its own; we establish.
  g.sendTo(b.port, g.exchangeFrame());
  await until(() => !!b.tunnel.peer(5)?.authenticated, 'established');
  g.sendTo(b.port, g.seal(packet(5, 2, 'new context')));
  await until(() => b.received.length === 1, 'delivered');
  t.equal(payloadOf(b.received[0]!.packet), 'new context');
});

t.test('sealed frames arriving while the exchange is being verified are held, then delivered', async (t) => {
  const reg = new FakeRegistry();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const b = await makeNode(t, reg, 2, {
    lookupPublicKey: async (n) => {
      await gate; // a slow registry
      return reg.keys.get(n) ?? null;
    },
  });
  const g = await new RawPeer(5).start(t, reg);
  b.tunnel.addPeer(5, { host: '127.0.0.1', port: g.port });
  await until(() => g.contextsBuilt === 1, 'Go has our key');
  g.sendTo(b.port, g.exchangeFrame());
  g.sendTo(b.port, g.seal(packet(5, 2, 'early 1')));
  g.sendTo(b.port, g.seal(packet(5, 2, 'early 2')));
  await settle(50);
  t.equal(b.received.length, 0, 'nothing before the exchange is verified');
  t.equal(b.tunnel.stats().no_context, 0, 'held, not dropped');
  release();
  await until(() => b.received.length === 2, 'held frames delivered');
  t.same(b.received.map((r) => payloadOf(r.packet)), ['early 1', 'early 2']);
});

t.test('a peer that draws our nonce prefix (shared key both ways) makes us switch prefix at once', async (t) => {
  const reg = new FakeRegistry();
  const b = await makeNode(t, reg, 2);
  const g = await new RawPeer(5).start(t, reg);
  g.sendTo(b.port, g.exchangeFrame());
  await until(() => g.contextsBuilt === 1, 'established');
  b.tunnel.send(5, packet(2, 5, 'first'));
  await until(() => g.frames('PILS').length === 1, 'our frame at Go');
  const ours = sealedFrom(g)[0]!.prefix;
  // Go's next context happens to draw our prefix.
  g.prefix = ours;
  g.counter = 0;
  g.sendTo(b.port, g.seal(packet(5, 2, 'colliding prefix')));
  await until(() => b.received.length === 1, 'delivered (it is genuine)');
  t.equal(b.tunnel.stats().prefix_collisions, 1);
  t.equal(b.tunnel.stats().reflected, 0);
  b.tunnel.send(5, packet(2, 5, 'second'));
  await until(() => g.frames('PILS').length === 2, 'our next frame');
  const next = sealedFrom(g)[1]!;
  t.not(next.prefix, ours, 'we moved to a fresh prefix');
  t.equal(next.counter, 2, 'counter continues');
  t.equal(payloadOf(g.open(g.frames('PILS')[1]!)!), 'second');
});
