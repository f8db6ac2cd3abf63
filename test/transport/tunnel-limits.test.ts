/**
 * Tunnel behaviour that depends on time and bounds, in memory with a virtual clock: exchange pacing,
 * peer-table eviction, look-up bounds, late node IDs, and the legacy opt-ins (plaintext, anonymous).
 */
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import {
  authSignedMessage,
  decodeTunnelFrame,
  encodeAnonymousKeyExchange,
  encodeAuthKeyExchange,
  encodePlain,
  Tunnel,
  X25519KeyPair,
  type EstablishedInfo,
  type TunnelClock,
  type TunnelOptions,
} from '../../transport/tunnel/index.js';
import { collect, packet, payloadOf } from './tunnel-helpers.js';

class FakeClock implements TunnelClock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void }> = [];
  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, ms: number): object {
    const h = { at: this.t + ms, fn };
    this.timers.push(h);
    return h;
  }
  clearTimer(h: object): void {
    this.timers = this.timers.filter((x) => x !== h);
  }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

interface Wire {
  from: string;
  to: string;
  frame: Buffer;
}

/** An in-memory network: addresses "host:port" → tunnels; every frame logged; delivery asynchronous. */
class MemNet {
  readonly log: Wire[] = [];
  readonly nodes = new Map<string, Tunnel>();
  readonly keys = new Map<number, Buffer>();
  lookups = 0;
  lookupDelay: Promise<void> | null = null;
  readonly lookup = async (node: number): Promise<Buffer | null> => {
    this.lookups++;
    if (this.lookupDelay) await this.lookupDelay;
    return this.keys.get(node) ?? null;
  };

  sender(from: string): TunnelOptions['send'] {
    return (frame, port, host) => {
      const buf = Array.isArray(frame) ? Buffer.concat(frame) : Buffer.from(frame);
      const to = `${host}:${port}`;
      this.log.push({ from, to, frame: buf });
      const [fh, fp] = from.split(':');
      setImmediate(() => this.nodes.get(to)?.handleDatagram(buf, { address: fh!, port: Number(fp) }));
    };
  }

  inject(from: string, to: string, frame: Buffer): void {
    const [fh, fp] = from.split(':');
    this.nodes.get(to)!.handleDatagram(frame, { address: fh!, port: Number(fp) });
  }

  framesTo(to: string, magic?: string): Buffer[] {
    return this.log.filter((w) => w.to === to && (!magic || w.frame.subarray(0, 4).toString() === magic)).map((w) => w.frame);
  }

  add(node: number | undefined, addr: string, clock: FakeClock, opts: Partial<TunnelOptions> = {}): { tunnel: Tunnel; identity: Identity } {
    const identity = Identity.generate();
    if (node !== undefined) this.keys.set(node, identity.publicKey);
    const tunnel = new Tunnel({ identity, localNode: node, send: this.sender(addr), lookupPublicKey: this.lookup, clock, ...opts });
    this.nodes.set(addr, tunnel);
    return { tunnel, identity };
  }
}

function ep(addr: string): { host: string; port: number } {
  const [host, port] = addr.split(':');
  return { host: host!, port: Number(port) };
}

t.test('exchange pacing: once on add, then with backoff only while packets wait (not per packet)', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a } = net.add(1, '10.0.0.1:1', clock, { limits: { kxRetryMs: 1000, kxRetryMaxMs: 4000 } });
  a.addPeer(9, ep('10.0.0.9:9')); // nobody there
  t.equal(net.framesTo('10.0.0.9:9', 'PILA').length, 1, 'sent when added');
  for (let i = 0; i < 5; i++) a.addPeer(9, ep('10.0.0.9:9')); // every dial re-adds
  t.equal(net.framesTo('10.0.0.9:9', 'PILA').length, 1, 'repeated adds do not each send an exchange');
  await clock.advance(5000);
  t.equal(net.framesTo('10.0.0.9:9', 'PILA').length, 1, 'no retries while nothing waits');

  for (let i = 0; i < 50; i++) a.send(9, packet(1, 9, `p${i}`));
  t.equal(net.framesTo('10.0.0.9:9', 'PILA').length, 2, 'one exchange for 50 queued packets');
  const times: number[] = [];
  const base = net.framesTo('10.0.0.9:9', 'PILA').length;
  for (let s = 0; s < 20; s++) {
    await clock.advance(500);
    const n = net.framesTo('10.0.0.9:9', 'PILA').length;
    if (n > base + times.length) times.push(clock.t);
  }
  t.same(times.map((x, i) => (i === 0 ? x - 5000 : x - times[i - 1]!)), [2000, 4000, 4000], 'backoff 2 s, 4 s, capped at 4 s');
  t.equal(net.framesTo('10.0.0.9:9', 'PILT').length + net.framesTo('10.0.0.9:9', 'PILS').length, 0, 'no packet left');
  a.close();
});

t.test('our node ID may come later: exchanges wait for it; exchanges before it are refused', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a, identity } = net.add(undefined, '10.0.0.1:1', clock);
  const { tunnel: b } = net.add(2, '10.0.0.2:2', clock);
  a.addPeer(2, ep('10.0.0.2:2'));
  a.send(2, packet(1, 2, 'waiting for registration'));
  await flush();
  t.equal(net.log.length, 0, 'nothing sent without a node ID');
  b.addPeer(1, ep('10.0.0.1:1'));
  await flush();
  t.equal(a.stats().no_local_node, 1, 'exchange before our ID is known is refused');
  net.keys.set(1, identity.publicKey);
  a.setLocalNode(1);
  const got: string[] = [];
  b.on('packet', (_n, p) => got.push(payloadOf(p)));
  await flush();
  t.same(got, ['waiting for registration']);
  t.throws(() => a.addPeer(1, ep('10.0.0.1:1')), { code: 'self_peer' });
  t.throws(() => a.addPeer(0xffffffff, ep('10.0.0.1:1')), { code: 'bad_node' });
  t.throws(() => a.addPeer(3, { host: '', port: 1 }), { code: 'bad_endpoint' });
  t.throws(() => a.setPath(42, ep('10.0.0.1:1')), { code: 'unknown_peer' });
  a.close();
  b.close();
  t.throws(() => a.addPeer(3, ep('10.0.0.3:3')), { code: 'closed' });
});

t.test('peer table: LRU eviction for our own peers; unsolicited peers only displace idle ones', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a } = net.add(1, '10.0.0.1:1', clock, { limits: { maxPeers: 2, idleEvictMs: 10_000 } });
  const evicted = collect<[number]>(a, 'evicted');
  const { tunnel: b } = net.add(2, '10.0.0.2:2', clock);
  const { tunnel: c } = net.add(3, '10.0.0.3:3', clock);
  const { tunnel: d } = net.add(4, '10.0.0.4:4', clock);
  a.addPeer(2, ep('10.0.0.2:2'));
  await clock.advance(1);
  a.addPeer(3, ep('10.0.0.3:3'));
  await clock.advance(1);
  t.equal(a.peers().length, 2);
  // An unsolicited peer (D dials A) while both are recently active: refused.
  d.addPeer(1, ep('10.0.0.1:1'));
  await flush();
  t.equal(a.stats().peer_limit, 1);
  t.notOk(a.hasPeer(4));
  // Our own decision wins: adding node 5 evicts the least recently active (2).
  a.addPeer(5, ep('10.0.0.5:5'));
  t.same(evicted, [[2]]);
  t.same(a.peers().map((p) => p.node_id).sort(), [3, 5]);
  // After the idle period an unsolicited peer may displace an idle one.
  await clock.advance(10_001);
  d.addPeer(1, ep('10.0.0.1:1')); // re-sends its exchange
  await flush();
  t.ok(a.hasPeer(4), 'idle peer displaced');
  t.equal(a.stats().peers_evicted, 2);
  for (const x of [a, b, c, d]) x.close();
});

t.test('look-ups in flight are bounded; a revoked peer is not resurrected by a late look-up', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  let release!: () => void;
  net.lookupDelay = new Promise((r) => (release = r));
  const { tunnel: a } = net.add(1, '10.0.0.1:1', clock, { limits: { maxPendingLookups: 1 } });
  const ids = [2, 3].map((n) => {
    const id = Identity.generate();
    net.keys.set(n, id.publicKey);
    const x = X25519KeyPair.generate();
    return encodeAuthKeyExchange(n, x.publicKey, id.publicKey, id.sign(authSignedMessage(n, x.publicKey)));
  });
  net.inject('10.0.0.2:2', '10.0.0.1:1', ids[0]!);
  net.inject('10.0.0.3:3', '10.0.0.1:1', ids[1]!);
  t.equal(a.stats().kx_busy, 1, 'second concurrent look-up refused');
  a.removePeer(2); // trust revoked while its exchange was being verified
  release();
  await flush();
  t.equal(a.stats().revoked, 1);
  t.notOk(a.hasPeer(2));
  a.close();
});

t.test('exchange edge cases: our own ID, low-order X25519 key', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a, identity } = net.add(1, '10.0.0.1:1', clock);
  const x = X25519KeyPair.generate();
  net.inject('10.0.0.7:7', '10.0.0.1:1', encodeAuthKeyExchange(1, x.publicKey, identity.publicKey, identity.sign(authSignedMessage(1, x.publicKey))));
  t.equal(a.stats().self, 1);
  const id2 = Identity.generate();
  net.keys.set(2, id2.publicKey);
  const zero = Buffer.alloc(32);
  net.inject('10.0.0.2:2', '10.0.0.1:1', encodeAuthKeyExchange(2, zero, id2.publicKey, id2.sign(authSignedMessage(2, zero))));
  await flush();
  t.equal(a.stats().weak_key, 1, 'a correctly signed low-order key is still refused');
  t.notOk(a.peer(2)?.encrypted);
  a.close();
});

t.test('allowAnonymous: PILK accepted only for nodes without a registry key, never as a downgrade', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a } = net.add(1, '10.0.0.1:1', clock, { allowAnonymous: true });
  const est = collect<[number, EstablishedInfo]>(a, 'established');
  const anon = X25519KeyPair.generate();
  net.inject('10.0.0.8:8', '10.0.0.1:1', encodeAnonymousKeyExchange(8, anon.publicKey));
  await flush();
  t.same(est, [[8, { authenticated: false, rekeyed: false }]]);
  t.match(a.peer(8), { encrypted: true, authenticated: false });

  // A registered node may not fall back to PILK: refused and answered with our PILA.
  net.keys.set(2, Identity.generate().publicKey);
  net.inject('10.0.0.2:2', '10.0.0.1:1', encodeAnonymousKeyExchange(2, X25519KeyPair.generate().publicKey));
  await flush();
  t.equal(a.stats().anonymous_refused, 1);
  t.equal(net.framesTo('10.0.0.2:2', 'PILA').length, 1, 'answered with our PILA');
  t.notOk(a.hasPeer(2));
  // And an authenticated peer cannot be downgraded by an anonymous exchange.
  const { tunnel: c } = net.add(3, '10.0.0.3:3', clock);
  c.addPeer(1, ep('10.0.0.1:1'));
  await flush();
  t.ok(a.peer(3)?.authenticated);
  net.inject('10.0.0.3:3', '10.0.0.1:1', encodeAnonymousKeyExchange(3, X25519KeyPair.generate().publicKey));
  await flush();
  t.equal(a.stats().anonymous_refused, 2);
  t.ok(a.peer(3)?.authenticated, 'still authenticated');
  c.close();
  a.close();

  // Default: PILK refused without even a look-up.
  const net2 = new MemNet();
  const { tunnel: strict } = net2.add(1, '10.0.0.1:1', clock);
  net2.inject('10.0.0.8:8', '10.0.0.1:1', encodeAnonymousKeyExchange(8, anon.publicKey));
  await flush();
  t.equal(strict.stats().anonymous_refused, 1);
  t.equal(net2.lookups, 0);
  strict.close();
});

t.test('allowPlaintext: PILT accepted (marked), refused from authenticated peers; plaintext only to peers that never answer', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a } = net.add(1, '10.0.0.1:1', clock, { allowPlaintext: true, limits: { kxRetryMs: 1000, kxRetryMaxMs: 1000 } });
  const got: Array<[number, string, boolean]> = [];
  a.on('packet', (n, p, info) => got.push([n, payloadOf(p), info.encrypted]));
  // A v1 daemon with encryption off at 10.0.0.9: it ignores our PILA and speaks PILT.
  a.addPeer(9, ep('10.0.0.9:9'));
  a.send(9, packet(1, 9, 'queued'));
  net.inject('10.0.0.9:9', '10.0.0.1:1', Buffer.concat(encodePlain(packet(9, 1, 'legacy hello'))));
  t.same(got, [[9, 'legacy hello', false]]);
  t.equal(net.framesTo('10.0.0.9:9', 'PILT').length, 0, 'no plaintext while the peer might still answer');
  await clock.advance(3000);
  const plain = net.framesTo('10.0.0.9:9', 'PILT');
  t.equal(plain.length, 1, 'after 3 unanswered exchanges the queue goes out as PILT');
  t.equal(payloadOf(plain[0]!.subarray(4)), 'queued');
  a.send(9, packet(1, 9, 'direct plaintext'));
  t.equal(net.framesTo('10.0.0.9:9', 'PILT').length, 2);

  // An authenticated peer's plaintext is refused (no downgrade).
  const { tunnel: b } = net.add(2, '10.0.0.2:2', clock);
  b.addPeer(1, ep('10.0.0.1:1'));
  await flush();
  t.ok(a.peer(2)?.authenticated);
  net.inject('10.0.0.2:2', '10.0.0.1:1', Buffer.concat(encodePlain(packet(2, 1, 'downgrade'))));
  t.equal(a.stats().plaintext_dropped, 1);
  t.notOk(got.some(([, p]) => p === 'downgrade'));
  a.close();
  b.close();
});

t.test('changing our node ID re-keys every peer under the new ID', async (t) => {
  const clock = new FakeClock();
  const net = new MemNet();
  const { tunnel: a, identity } = net.add(1, '10.0.0.1:1', clock);
  const { tunnel: b } = net.add(2, '10.0.0.2:2', clock);
  a.addPeer(2, ep('10.0.0.2:2'));
  await flush();
  t.ok(a.peer(2)?.encrypted);
  net.keys.set(11, identity.publicKey);
  a.setLocalNode(11);
  t.notOk(a.peer(2)?.encrypted, 'old context dropped');
  await flush();
  t.ok(a.peer(2)?.encrypted && b.peer(11)?.encrypted, 're-established as node 11');
  const got: number[] = [];
  b.on('packet', (n) => got.push(n));
  a.send(2, packet(11, 2, 'x'));
  await flush();
  t.same(got, [11]);
  const f = decodeTunnelFrame(net.framesTo('10.0.0.2:2', 'PILS').at(-1)!);
  t.match(f, { kind: 'PILS', node: 11 });
  a.close();
  b.close();
});
