import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Identity } from '../../transport/identity.js';
import {
  HANDSHAKE_MAX_BYTES,
  HandshakeError,
  HandshakeVerifier,
  createHandshakeMessage,
  encodeHandshakeMessage,
  parseHandshakeMessage,
  type HandshakeMessage,
} from '../../daemon/trust/handshake.js';
import { HandshakeLogic, type HandshakeEffects } from '../../daemon/trust/logic.js';
import { TrustStore } from '../../daemon/trust/store.js';
import { duplexPair } from './duplex-pair.js';

const NOW = Date.UTC(2025, 3, 1, 10, 0, 0);
const alice = Identity.fromSeed(Buffer.alloc(32, 1)); // node 100
const bob = Identity.fromSeed(Buffer.alloc(32, 2)); // node 200
const mallory = Identity.fromSeed(Buffer.alloc(32, 3)); // node 300

function verifierFor(self: number, keys: Record<number, Identity>, now = () => NOW, size?: number) {
  return new HandshakeVerifier({
    selfNode: () => self,
    publicKeyOf: async (n) => keys[n]?.publicKey ?? null,
    now,
    ...(size ? { replayCacheSize: size } : {}),
  });
}

t.test('message codec: v1 field order and all fields present; parse is strict about shapes', async (t) => {
  const m = createHandshakeMessage(alice, 'handshake_request', 100, 200, { justification: 'hello', nowMs: NOW });
  const json = encodeHandshakeMessage(m).toString();
  t.match(json, /^\{"type":"handshake_request","node_id":100,"public_key":"[^"]+","justification":"hello","signature":"[^"]+","reason":"","timestamp":1743501600\}$/);
  t.same(parseHandshakeMessage(Buffer.from(json)), m);
  t.ok(alice.publicKey.length === 32 && Buffer.from(m.signature, 'base64').length === 64);
  t.throws(() => encodeHandshakeMessage({ ...m, justification: 'x'.repeat(5000) }), { code: 'too_large' });
  const bad: Array<[string, string]> = [
    ['not json', 'bad_json'],
    ['[1]', 'bad_json'],
    ['{"type":"hello","node_id":1,"timestamp":1,"signature":"x"}', 'bad_field'],
    ['{"type":"handshake_accept","node_id":-1,"timestamp":1,"signature":"x"}', 'bad_field'],
    ['{"type":"handshake_accept","node_id":1,"timestamp":1.5,"signature":"x"}', 'bad_field'],
    ['{"type":"handshake_accept","node_id":1,"timestamp":1}', 'bad_field'],
    ['{"type":"handshake_accept","node_id":1,"timestamp":1,"signature":"x","reason":5}', 'bad_field'],
  ];
  for (const [text, code] of bad) t.throws(() => parseHandshakeMessage(Buffer.from(text)), { code }, text);
  // Go omits nothing, but tolerate null/missing optional strings.
  t.equal(parseHandshakeMessage(Buffer.from('{"type":"handshake_accept","node_id":1,"timestamp":1,"signature":"x","reason":null}')).reason, '');
});

t.test('verification: good, key from the registry not the message, time window, replay, size, sender', async (t) => {
  const keys = { 100: alice, 200: bob, 300: mallory };
  let now = NOW;
  const v = verifierFor(200, keys, () => now);
  const good = createHandshakeMessage(alice, 'handshake_request', 100, 200, { nowMs: NOW });
  t.same(await v.verify(encodeHandshakeMessage(good), 100), good, 'good message accepted');

  // Mallory claims to be Alice, carrying and signing with her own key (v1 would accept this).
  const forged = createHandshakeMessage(mallory, 'handshake_request', 100, 200, { nowMs: NOW });
  await t.rejects(v.verify(encodeHandshakeMessage(forged)), { code: 'key_mismatch' }, 'carried key differs from the registry key');
  await t.rejects(v.verify(encodeHandshakeMessage({ ...forged, public_key: '' })), { code: 'bad_signature' }, 'without a carried key the registry key still decides');
  await t.rejects(v.verify(encodeHandshakeMessage({ ...forged, public_key: alice.publicKeyB64 })), { code: 'bad_signature' }, 'claiming the right key does not help');
  // Signed for another receiver.
  const toOther = createHandshakeMessage(alice, 'handshake_request', 100, 999, { nowMs: NOW + 1000 });
  await t.rejects(v.verify(encodeHandshakeMessage(toOther)), { code: 'bad_signature' });
  // Came through a tunnel from another node.
  const fresh = createHandshakeMessage(alice, 'handshake_accept', 100, 200, { nowMs: NOW });
  await t.rejects(v.verify(encodeHandshakeMessage(fresh), 300), { code: 'wrong_sender' });
  // Unknown or unreachable registry.
  const unknown = createHandshakeMessage(alice, 'handshake_accept', 555, 200, { nowMs: NOW });
  await t.rejects(v.verify(encodeHandshakeMessage(unknown)), { code: 'unknown_sender' });
  const broken = new HandshakeVerifier({ selfNode: () => 200, publicKeyOf: async () => Promise.reject(new Error('registry down')), now: () => NOW });
  await t.rejects(broken.verify(encodeHandshakeMessage(fresh)), { code: 'unknown_sender' });

  // Time window −5 min / +30 s, inclusive.
  const at = (offsetS: number, reason: string) =>
    encodeHandshakeMessage(createHandshakeMessage(alice, 'handshake_reject', 100, 200, { nowMs: NOW + offsetS * 1000, reason }));
  t.ok(await v.verify(at(-300, 'edge-old')), 'exactly 5 min old is fine');
  t.ok(await v.verify(at(30, 'edge-new')), 'exactly 30 s ahead is fine');
  await t.rejects(v.verify(at(-301, 'stale')), { code: 'stale' });
  await t.rejects(v.verify(at(31, 'future')), { code: 'future' });

  // Replay: the same message again, even re-serialised with different whitespace.
  const raw = encodeHandshakeMessage(fresh);
  t.ok(await v.verify(raw, 100));
  await t.rejects(v.verify(raw, 100), { code: 'replay' });
  await t.rejects(v.verify(Buffer.from(JSON.stringify(JSON.parse(raw.toString()), null, 2)), 100), { code: 'replay' });
  // Oversize, before any parsing.
  const big = Buffer.concat([raw.subarray(0, raw.length - 1), Buffer.from(`,"x":"${'a'.repeat(HANDSHAKE_MAX_BYTES)}"}`)]);
  await t.rejects(v.verify(big), { code: 'too_large' });
  t.ok(v.stats.rejected >= 10);
});

t.test('replay cache is bounded and remembers messages for their whole validity window', async (t) => {
  let now = NOW;
  const v = verifierFor(200, { 100: alice }, () => now, 2);
  const msgs = [1, 2, 3].map((i) => encodeHandshakeMessage(createHandshakeMessage(alice, 'handshake_request', 100, 200, { nowMs: NOW, justification: `m${i}` })));
  for (const m of msgs) await v.verify(m);
  t.equal(v.stats.replayEvicted, 1, 'oldest entry evicted at the cap');
  await t.rejects(v.verify(msgs[2]!), { code: 'replay' });
  now += 4 * 60_000;
  await t.rejects(v.verify(msgs[1]!), { code: 'replay' }, 'still remembered within the window');
});

t.test('fuzz: verify rejects garbage only with HandshakeError', async (t) => {
  const v = verifierFor(200, { 100: alice });
  const base = encodeHandshakeMessage(createHandshakeMessage(alice, 'handshake_request', 100, 200, { nowMs: NOW }));
  let other = 0;
  for (let i = 0; i < 3000; i++) {
    const b = i % 2 ? randomBytes(1 + (i % 300)) : Buffer.from(base);
    if (i % 2 === 0) b[i % b.length] = (i * 7) & 0xff;
    try {
      await v.verify(b);
    } catch (err) {
      if (!(err instanceof HandshakeError)) other++;
    }
  }
  t.equal(other, 0);
});

// ---------------------------------------------------------------------------------------------------
// HandshakeLogic with fake side effects

interface Peer {
  id: number;
  identity: Identity;
  store: TrustStore;
  logic: HandshakeLogic;
  events: Array<[string, Record<string, unknown>]>;
  calls: string[];
  torn: number[];
  reachable: boolean;
  networks: Map<number, number>;
}

async function world(t: { teardown(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'pilot-hs-'));
  const peers = new Map<number, Peer>();
  const keys: Record<number, Identity> = {};
  // The registry relay: inboxes of requests and responses per node.
  const inbox = new Map<number, Array<{ from_node_id: number; justification: string }>>();
  const responses = new Map<number, Array<{ from_node_id: number; accept: boolean }>>();
  let registryUp = true;
  const make = async (id: number, identity: Identity): Promise<Peer> => {
    keys[id] = identity;
    const store = await TrustStore.open(join(dir, `${id}`, 'trust.json'), { now: () => NOW });
    const p = { id, identity, store, events: [], calls: [], torn: [], reachable: true, networks: new Map() } as unknown as Peer;
    const effects: HandshakeEffects = {
      sendDirect: async (peer, msg) => {
        p.calls.push(`direct ${msg.type} → ${peer}`);
        const target = peers.get(peer);
        if (!target || !target.reachable) throw new Error('dial timeout');
        const [c, s] = duplexPair();
        const done = target.logic.handle(s, { remote: `0:0000.0000.${id.toString(16)}`, remoteNode: id });
        c.end(encodeHandshakeMessage(msg));
        await done;
      },
      requestHandshake: async (peer, justification) => {
        p.calls.push(`request_handshake → ${peer}`);
        if (!registryUp) throw new Error('registry: request failed');
        (inbox.get(peer) ?? inbox.set(peer, []).get(peer)!).push({ from_node_id: id, justification });
      },
      respondHandshake: async (peer, accept) => {
        p.calls.push(`respond_handshake ${accept} → ${peer}`);
        (responses.get(peer) ?? responses.set(peer, []).get(peer)!).push({ from_node_id: id, accept });
      },
      reportTrust: async (peer) => void p.calls.push(`report_trust ${peer}`),
      revokeTrust: async (peer) => void p.calls.push(`revoke_trust ${peer}`),
      lookupPublicKey: async (peer) => keys[peer]?.publicKeyB64 ?? null,
      tearDownPeer: (peer) => void p.torn.push(peer),
      emit: (e, d) => void p.events.push([e, d]),
      sharedNetwork: (peer) => p.networks.get(peer) ?? null,
    };
    p.logic = new HandshakeLogic({
      selfNode: () => id,
      signer: identity,
      store,
      verifier: verifierFor(id, keys),
      effects,
      now: () => NOW,
    });
    t.teardown(() => p.logic.close());
    peers.set(id, p);
    return p;
  };
  /** What a heartbeat-driven poll_handshakes does. */
  const poll = async (p: Peer) => {
    for (const r of inbox.get(p.id)?.splice(0) ?? []) await p.logic.onRelayedRequest(r);
    for (const r of responses.get(p.id)?.splice(0) ?? []) await p.logic.onRelayedResponse(r);
  };
  const settle = async () => {
    for (let i = 0; i < 3; i++) for (const p of peers.values()) await p.logic.idle();
  };
  return { make, poll, settle, setRegistry: (up: boolean) => (registryUp = up) };
}

const names = (p: Peer) => p.events.map((e) => e[0]);

t.test('request → pending → approve: both sides end up trusted, registry told', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  t.same(await a.logic.request(200, 'let me in'), { status: 'sent', node_id: 200 });
  t.same(b.logic.pending().map((p) => [p.node_id, p.justification, p.public_key]), [[100, 'let me in', alice.publicKeyB64]]);
  t.same(names(b), ['handshake.received', 'handshake.pending']);
  t.same(await b.logic.approve(100), { status: 'approved', node_id: 100 });
  await w.settle();
  t.ok(b.store.isTrusted(100));
  t.equal(b.store.getTrusted(100)?.mutual, false, 'approver side: not mutual');
  t.ok(a.store.isTrusted(200), 'requester trusted after the direct accept');
  t.equal(a.store.getTrusted(200)?.mutual, true);
  t.equal(a.store.getTrusted(200)?.public_key, bob.publicKeyB64);
  t.ok(b.calls.includes('report_trust 100') && b.calls.includes('respond_handshake true → 100'));
  t.ok(names(a).includes('handshake.approved'));
  // The relayed copy of the accept arrives later: harmless.
  await w.poll(a);
  t.ok(a.store.isTrusted(200));
  const [entry] = b.logic.trusted();
  t.same(entry, { node_id: 100, public_key: alice.publicKeyB64, approved_at: NOW / 1000, mutual: false, network: 0 }, 'IPC shape with unix seconds');
});

t.test('mutual requests auto-approve (one relayed because the peer is private)', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  b.reachable = false; // private, not resolvable yet → A's request goes through the registry
  await a.logic.request(200, 'A→B');
  t.ok(a.calls.includes('request_handshake → 200'));
  b.reachable = true;
  await b.logic.request(100, 'B→A'); // direct; A has an outgoing request to B
  await w.settle();
  t.ok(a.store.isTrusted(200) && a.store.getTrusted(200)?.mutual, 'A auto-approved');
  t.ok(names(a).includes('handshake.auto_approved'));
  t.ok(b.store.isTrusted(100) && b.store.getTrusted(100)?.mutual, 'B trusted after A\'s accept');
  t.ok(a.calls.includes('report_trust 200'));
  await w.poll(b); // relayed request from A arrives now: already trusted → respond accept
  t.ok(b.calls.includes('respond_handshake true → 100'));
  t.same(b.logic.pending(), []);
});

t.test('relayed request and relayed accept (both sides private)', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  a.reachable = false;
  b.reachable = false;
  await a.logic.request(200, 'via registry');
  await w.poll(b);
  t.same(b.logic.pending().map((p) => [p.node_id, p.public_key]), [[100, '']], 'pending without a key (relay carries none)');
  await b.logic.approve(100);
  await w.settle();
  t.equal(b.store.getTrusted(100)?.public_key, alice.publicKeyB64, 'key backfilled by lookup');
  t.notOk(a.store.isTrusted(200), 'direct accept could not reach A');
  await w.poll(a);
  await w.settle();
  t.ok(a.store.isTrusted(200), 'relayed accept makes A trust B');
  t.equal(a.store.getTrusted(200)?.public_key, bob.publicKeyB64, 'key backfilled');
});

t.test('reject and revoke, in both directions', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  await a.logic.request(200, 'hi');
  t.same(await b.logic.reject(100, 'not now'), { status: 'rejected', node_id: 100 });
  await w.settle();
  t.same(b.logic.pending(), []);
  t.notOk(a.store.hasOutgoing(200), 'requester forgets its request');
  const rej = a.events.find((e) => e[0] === 'handshake.rejected');
  t.equal(rej?.[1].reason, 'not now');
  await t.rejects(b.logic.reject(100, 'again'), { code: 'not_found' });

  await a.logic.request(200, 'please');
  await b.logic.approve(100);
  await w.settle();
  t.ok(a.store.isTrusted(200) && b.store.isTrusted(100));
  t.same(await a.logic.revoke(200), { status: 'revoked', node_id: 200 });
  await w.settle();
  t.same(a.torn, [200], 'revoker tears down the peer');
  t.ok(a.calls.includes('revoke_trust 200'));
  t.notOk(b.store.isTrusted(100), 'peer drops trust on the revoke message');
  t.same(b.torn, [100]);
  t.ok(b.calls.includes('revoke_trust 100'));
  t.ok(names(b).includes('trust.revoked_by_peer') && names(a).includes('trust.revoked'));
  await t.rejects(a.logic.revoke(200), { code: 'not_found' });
});

t.test('unsolicited accepts, spoofed senders and bad input change nothing', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const m = await w.make(300, mallory);
  await m.logic.onMessage(createHandshakeMessage(alice, 'handshake_accept', 100, 300, { nowMs: NOW }));
  t.notOk(m.store.isTrusted(100), 'accept without our request is ignored');
  await m.logic.onRelayedResponse({ from_node_id: 100, accept: true });
  t.notOk(m.store.isTrusted(100), 'relayed one too');
  // Mallory's connection carries a message claiming to be node 200 (signed by Mallory).
  const [c, s] = duplexPair();
  const done = a.logic.handle(s, { remote: '0:0000.0000.012C', remoteNode: 300 });
  c.end(encodeHandshakeMessage(createHandshakeMessage(mallory, 'handshake_request', 200, 100, { nowMs: NOW })));
  await done;
  t.same(a.logic.pending(), [], 'nothing stored');
  t.equal(a.logic.stats.rejectedMessages, 1);
  t.ok(names(a).includes('security.handshake_rejected'));
  // Garbage and oversize on port 444.
  for (const payload of [Buffer.from('{"type":'), randomBytes(5000)]) {
    const [c2, s2] = duplexPair();
    c2.on('error', () => {});
    const d2 = a.logic.handle(s2, { remote: 'x', remoteNode: 300 });
    c2.end(payload);
    await d2;
  }
  t.equal(a.logic.stats.rejectedMessages, 3);
  await t.rejects(a.logic.approve(300), { code: 'not_found' });
  await t.rejects(a.logic.request(100, 'me'), { code: 'invalid' });
});

t.test('request fails loudly only when neither direct nor relay works; trusted peers are a no-op', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  b.reachable = false;
  w.setRegistry(false);
  await t.rejects(a.logic.request(200, 'x'), { code: 'unreachable' });
  w.setRegistry(true);
  b.reachable = true;
  await a.store.trust({ node_id: 200, public_key: bob.publicKeyB64, mutual: true });
  const before = a.calls.length;
  t.same(await a.logic.request(200, 'x'), { status: 'sent', node_id: 200 });
  t.equal(a.calls.length, before, 'nothing sent for an already trusted peer');
});

t.test('shared non-backbone network auto-approves a request', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  const b = await w.make(200, bob);
  b.networks.set(100, 7);
  await a.logic.request(200, 'same network');
  await w.settle();
  t.same(b.store.getTrusted(100), { node_id: 100, public_key: alice.publicKeyB64, approved_at: b.store.getTrusted(100)!.approved_at, mutual: false, network: 7 });
  t.ok(a.store.isTrusted(200), 'requester gets the accept');
  const auto = b.events.find((e) => e[0] === 'handshake.auto_approved');
  t.equal(auto?.[1].network, 7);
});

t.test('handshake message over a real duplex with v1 timing: first segment parsed, rest ignored', async (t) => {
  const w = await world(t);
  const a = await w.make(100, alice);
  await w.make(200, bob);
  const msg: HandshakeMessage = createHandshakeMessage(bob, 'handshake_request', 200, 100, { nowMs: NOW, justification: 'split' });
  const raw = encodeHandshakeMessage(msg);
  const [c, s] = duplexPair();
  const done = a.logic.handle(s, { remote: '0:0000.0000.00C8', remoteNode: 200 });
  c.write(raw.subarray(0, 10)); // arrives in two pieces; we wait for a whole JSON object
  setImmediate(() => c.write(raw.subarray(10)));
  await done;
  t.same(a.logic.pending().map((p) => p.justification), ['split']);
});
