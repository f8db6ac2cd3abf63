import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import { verifyEd25519, type Identity } from '../identity.js';
import { AeadKey, authSignedMessage, X25519KeyPair } from './crypto.js';
import { FrameError, TunnelCryptoError, TunnelError } from './errors.js';
import {
  BEACON_RELAY,
  BEACON_RELAY_DELIVER,
  BEACON_TYPE_LIMIT,
  decodeRelayDeliver,
  decodeTunnelFrame,
  encodeAuthKeyExchange,
  encodePlain,
  encodeRelayHeader,
  MAX_COUNTER,
  PILS_OVERHEAD,
  PILS_PREFIX_LEN,
  RELAY_HEADER_LEN,
  writeSealedPrefix,
  type AnonymousKeyExchangeFrame,
  type AuthKeyExchangeFrame,
  type PlainFrame,
  type SealedFrame,
} from './frames.js';
import { KeyedTokenBuckets, sourceKey, TokenBucket } from './rate-limit.js';
import { ReplayGuard } from './replay.js';

/**
 * The per-peer tunnel state machine (wire reference §1.4–1.6, §1.8) with this project's hardening
 * (SPEC §3). It carries opaque encoded Pilot packets: `send(node, packet)` seals one towards a peer,
 * `handleDatagram` takes everything the UDP socket receives and emits `'packet'` for each decrypted,
 * authenticated packet whose source node is the peer's.
 */

export interface Endpoint {
  host: string;
  port: number;
}

export type PathKind = 'direct' | 'relay';

/** The subset of the engine clock (transport/clock.ts) the tunnel uses. Milliseconds, monotonic. */
export interface TunnelClock {
  now(): number;
  setTimer(fn: () => void, ms: number): object;
  clearTimer(handle: object): void;
}

export const realTunnelClock: TunnelClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface TunnelLimits {
  /** Peers kept (each holds a context, replay state and a queue). */
  maxPeers: number;
  /** Packets queued per peer while its key exchange is pending (oldest dropped beyond). */
  queuePerPeer: number;
  /** Replay window per (peer, nonce prefix), in counters (power of two, ≥ 4096 by SPEC). */
  replayWindow: number;
  /** Nonce prefixes with a live window per peer key. */
  maxActivePrefixes: number;
  /** Retired prefixes remembered per peer key (see replay.ts for what happens at the bound). */
  maxRetiredPrefixes: number;
  /** Key-exchange frames per source (IPv4 address / IPv6 /64; per relayed node) per second; burst below. */
  kxPerSourcePerSec: number;
  kxBurstPerSource: number;
  /** Key-exchange frames per second over all sources (bounds total X25519/Ed25519/look-up work). */
  kxGlobalPerSec: number;
  kxGlobalBurst: number;
  /** Sources tracked by the per-source buckets. */
  kxSources: number;
  /** Registry key look-ups in flight at once. */
  maxPendingLookups: number;
  /** Sealed frames held per node while its key exchange is being verified (retried afterwards). */
  framesPerPendingLookup: number;
  /** First re-send interval of our exchange frame while packets wait; doubles up to the max. */
  kxRetryMs: number;
  kxRetryMaxMs: number;
  /** An unsolicited inbound peer may evict the least recently active peer only if idle this long. */
  idleEvictMs: number;
  /** X25519 keys per peer remembered as superseded (a replayed old PILA cannot roll a peer back). */
  supersededKeys: number;
}

export const DEFAULT_TUNNEL_LIMITS: Readonly<TunnelLimits> = Object.freeze({
  maxPeers: 4096,
  queuePerPeer: 64,
  replayWindow: 4096,
  maxActivePrefixes: 4,
  maxRetiredPrefixes: 1024,
  kxPerSourcePerSec: 10,
  kxBurstPerSource: 20,
  kxGlobalPerSec: 1000,
  kxGlobalBurst: 2000,
  kxSources: 4096,
  maxPendingLookups: 256,
  framesPerPendingLookup: 16,
  kxRetryMs: 1000,
  kxRetryMaxMs: 8000,
  idleEvictMs: 60_000,
  supersededKeys: 4,
});

export interface TunnelOptions {
  identity: Identity;
  /** Our node ID; may be set later with setLocalNode() (after registration). */
  localNode?: number;
  /** Put a datagram on the wire (normally UdpEndpoint.send). Must not throw; buffers are not reused by us. */
  send: (frame: Buffer | Buffer[], port: number, host: string) => void;
  /** The registry's Ed25519 public key for a node (the caller caches), or null if unknown. */
  lookupPublicKey: (node: number) => Promise<Uint8Array | null>;
  /** Accept inbound PILT, and speak PILT to peers that never answer our exchange (legacy, off by default). */
  allowPlaintext?: boolean;
  /** Accept PILK from nodes the registry has no key for (legacy, off by default). */
  allowAnonymous?: boolean;
  /** Follow a peer to a new source address / path after an authenticated frame from it (default true). */
  roaming?: boolean;
  /** Our X25519 key pair (default: generated; one per Tunnel instance, as v1 per process). */
  x25519?: X25519KeyPair;
  clock?: TunnelClock;
  random?: (n: number) => Buffer;
  log?: Logger;
  limits?: Partial<TunnelLimits>;
}

export type DropReason =
  | 'plaintext_dropped'
  | 'anonymous_refused'
  | 'replay'
  | 'too_old'
  | 'stale_prefix'
  | 'prefix_limit'
  | 'auth_failed'
  | 'bad_frame'
  | 'bad_packet'
  | 'no_context'
  | 'no_peer'
  | 'no_endpoint'
  | 'no_local_node'
  | 'key_mismatch'
  | 'lookup_failed'
  | 'bad_signature'
  | 'weak_key'
  | 'stale_exchange'
  | 'source_mismatch'
  | 'relay_mismatch'
  | 'reflected'
  | 'self'
  | 'kx_rate_limited'
  | 'kx_busy'
  | 'kx_superseded'
  | 'peer_limit'
  | 'revoked'
  | 'queue_dropped'
  | 'counter_exhausted'
  | 'send_failed'
  | 'internal_error';

const DROP_REASONS: readonly DropReason[] = [
  'plaintext_dropped', 'anonymous_refused', 'replay', 'too_old', 'stale_prefix', 'prefix_limit', 'auth_failed',
  'bad_frame', 'bad_packet', 'no_context', 'no_peer', 'no_endpoint', 'no_local_node', 'key_mismatch',
  'lookup_failed', 'bad_signature', 'weak_key', 'stale_exchange', 'source_mismatch', 'relay_mismatch',
  'reflected', 'self', 'kx_rate_limited', 'kx_busy', 'kx_superseded', 'peer_limit', 'revoked', 'queue_dropped',
  'counter_exhausted', 'send_failed', 'internal_error',
];

export type TunnelStats = Record<DropReason, number> & {
  packets_in: number;
  bytes_in: number;
  packets_out: number;
  bytes_out: number;
  /** Packets sent as PILT (only with allowPlaintext, to peers that never answered an exchange). */
  plaintext_out: number;
  plaintext_in: number;
  kx_received: number;
  kx_sent: number;
  /** Exchange frames byte-identical to the one that built the current context (no crypto redone). */
  kx_duplicate: number;
  established: number;
  rekeyed: number;
  peers: number;
  peers_evicted: number;
  path_changes: number;
  beacon_messages: number;
  punches_ignored: number;
  queued: number;
  /** Times the peer used our nonce prefix and we moved to a fresh one. */
  prefix_collisions: number;
  /** Every drop, all reasons together. */
  dropped: number;
};

export interface PeerInfo {
  node_id: number;
  /** Direct UDP endpoint (learned from the registry, an authenticated exchange or roaming). */
  endpoint: Endpoint | null;
  /** Beacon used when path is 'relay'. */
  relay: Endpoint | null;
  path: PathKind;
  encrypted: boolean;
  authenticated: boolean;
  /** Clock milliseconds of the last authenticated packet in / packet out, or null. */
  last_rx: number | null;
  last_tx: number | null;
  packets_in: number;
  packets_out: number;
  bytes_in: number;
  bytes_out: number;
  queued: number;
  queue_dropped: number;
  kx_sent: number;
  /** Our last used send counter (monotonic over the peer's lifetime in this tunnel). */
  send_counter: number;
  /** Peer nonce prefixes with a live replay window. */
  peer_prefixes: number;
}

/** Passed with every 'packet' event. Shared per peer and path: do not mutate. */
export interface PacketInfo {
  readonly endpoint: Endpoint;
  readonly relayed: boolean;
  readonly encrypted: boolean;
  readonly authenticated: boolean;
}

export interface EstablishedInfo {
  authenticated: boolean;
  /** True when this replaced an existing context (the peer's X25519 key changed). */
  rekeyed: boolean;
}

export interface TunnelEvents {
  packet: [node: number, packet: Buffer, info: PacketInfo];
  established: [node: number, info: EstablishedInfo];
  beacon: [msg: Buffer, rinfo: RemoteInfoLike];
  dropped: [reason: DropReason, node: number | undefined];
  /** The peer's path or endpoint changed because of an authenticated frame (roaming / relay switch). */
  path: [node: number, info: PeerInfo];
  evicted: [node: number];
  /** A PILP NAT punch probe arrived (evidence the path from rinfo works). */
  punch: [rinfo: RemoteInfoLike];
}

export interface RemoteInfoLike {
  address: string;
  port: number;
}

interface PeerContext {
  aead: AeadKey;
  peerX25519: Buffer;
  authenticated: boolean;
  /** Our random nonce prefix for this context (SPEC §3: one per local context). */
  sendPrefix: number;
  replay: ReplayGuard;
  /** The exchange frame that built (or last confirmed) this context; identical repeats skip all crypto. */
  exchangeFrame: Buffer | null;
}

interface Peer {
  node: number;
  endpoint: Endpoint | null;
  relay: Endpoint | null;
  path: PathKind;
  ctx: PeerContext | null;
  /** Monotonic over the peer's lifetime, across re-exchanges: a nonce never repeats under a key. */
  sendCounter: number;
  queue: Buffer[];
  queueDropped: number;
  kxTimer: object | null;
  kxBackoff: number;
  lastKxSent: number;
  kxSent: number;
  /** Exchange frames sent since the last context was built (plaintext fallback needs ≥ 3). */
  kxUnanswered: number;
  superseded: Buffer[];
  sentPlaintext: boolean;
  created: number;
  lastRx: number;
  lastTx: number;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  info: PacketInfo | null;
}

interface PendingExchange {
  frame: Buffer;
  decoded: AuthKeyExchangeFrame | AnonymousKeyExchangeFrame;
  rinfo: RemoteInfoLike;
  relayedBy: number | null;
}

interface PendingLookup {
  latest: PendingExchange;
  /** Sealed frames that arrived while the look-up ran (may be under the key being established). */
  held: Array<{ msg: Buffer; rinfo: RemoteInfoLike; relayedBy: number | null }>;
  cancelled: boolean;
}

/** Exchange frames a peer may send us before we fall back to plaintext (allowPlaintext only). */
const PLAINTEXT_FALLBACK_AFTER = 3;
const MIN_PACKET_LEN = 34;
const SRC_NODE_OFFSET = 6;

export class Tunnel extends EventEmitter<TunnelEvents> {
  private opts: TunnelOptions;
  private readonly limits: TunnelLimits;
  private readonly clock: TunnelClock;
  private readonly random: (n: number) => Buffer;
  private readonly log: Logger;
  private x25519: X25519KeyPair;
  private readonly peerMap = new Map<number, Peer>();
  private readonly pending = new Map<number, PendingLookup>();
  private readonly kxPerSource: KeyedTokenBuckets;
  private readonly kxGlobal: TokenBucket;
  private readonly counters: TunnelStats;
  private readonly loggedReasons = new Set<string>();
  private localNode: number | undefined;
  /** Our PILA frame, precomputed once per local node ID (the signature is deterministic). */
  private ourExchange: Buffer | null = null;
  private closed = false;

  constructor(opts: TunnelOptions) {
    super();
    this.opts = opts;
    this.limits = { ...DEFAULT_TUNNEL_LIMITS, ...opts.limits };
    this.clock = opts.clock ?? realTunnelClock;
    this.random = opts.random ?? randomBytes;
    this.log = opts.log ?? pino({ level: 'silent' });
    this.x25519 = opts.x25519 ?? X25519KeyPair.generate();
    this.kxPerSource = new KeyedTokenBuckets(this.limits.kxPerSourcePerSec, this.limits.kxBurstPerSource, this.limits.kxSources);
    this.kxGlobal = new TokenBucket(this.limits.kxGlobalPerSec, this.limits.kxGlobalBurst, this.clock.now());
    // Validate replay limits once, up front.
    new ReplayGuard(this.replayLimits());
    const c: Record<string, number> = {};
    for (const r of DROP_REASONS) c[r] = 0;
    for (const k of ['packets_in', 'bytes_in', 'packets_out', 'bytes_out', 'plaintext_out', 'plaintext_in', 'kx_received', 'kx_sent',
      'kx_duplicate', 'established', 'rekeyed', 'peers', 'peers_evicted', 'path_changes', 'beacon_messages', 'punches_ignored',
      'queued', 'prefix_collisions', 'dropped']) c[k] = 0;
    this.counters = c as TunnelStats;
    if (opts.localNode !== undefined) this.setLocalNode(opts.localNode);
  }

  /** Our X25519 public key (as sent in exchanges). */
  get publicKey(): Buffer {
    return this.x25519.publicKey;
  }

  get node(): number | undefined {
    return this.localNode;
  }

  /**
   * Set (or change) our node ID. Our exchange frame is signed for it; exchanges waiting for it are sent.
   * Changing an existing ID drops every context (peers key them by our ID) and re-exchanges.
   */
  setLocalNode(node: number): void {
    assertNode(node);
    if (node === this.localNode) return;
    const changed = this.localNode !== undefined;
    this.localNode = node;
    const x = this.x25519.publicKey;
    this.ourExchange = encodeAuthKeyExchange(node, x, this.opts.identity.publicKey, this.opts.identity.sign(authSignedMessage(node, x)));
    for (const peer of this.peerMap.values()) {
      if (changed) peer.ctx = null;
      if (!peer.ctx) this.sendExchange(peer);
    }
  }

  /**
   * Our Ed25519 identity changed (key rotation; the node ID stays). Sign a fresh exchange over a new
   * X25519 key and re-key every peer: the new X25519 key makes peers build a new context and answer
   * (an exchange with the old X25519 key would be kept as a duplicate), and contexts authenticated
   * under the old identity end. Packets sent meanwhile wait in the per-peer queue as in any exchange.
   */
  setIdentity(identity: Identity, x25519: X25519KeyPair = X25519KeyPair.generate()): void {
    this.assertOpen();
    this.opts = { ...this.opts, identity };
    this.x25519 = x25519;
    if (this.localNode === undefined) return;
    const node = this.localNode;
    this.ourExchange = encodeAuthKeyExchange(node, x25519.publicKey, identity.publicKey, identity.sign(authSignedMessage(node, x25519.publicKey)));
    for (const peer of this.peerMap.values()) {
      peer.ctx = null;
      peer.info = null;
      this.sendExchange(peer);
    }
  }

  /** Add (or update) a peer and start the authenticated key exchange. With `opts.relay` the peer is reached through that beacon. */
  addPeer(node: number, endpoint: Endpoint, opts?: { relay?: Endpoint }): void {
    this.assertOpen();
    assertNode(node);
    assertEndpoint(endpoint);
    if (opts?.relay) assertEndpoint(opts.relay);
    if (node === this.localNode) throw new TunnelError('self_peer', 'cannot add our own node as a peer');
    let peer = this.peerMap.get(node);
    const isNew = !peer;
    if (!peer) peer = this.admitPeer(node, true)!;
    const before = `${peer.path} ${peer.endpoint?.host}:${peer.endpoint?.port} ${peer.relay?.host}:${peer.relay?.port}`;
    peer.endpoint = { host: endpoint.host, port: endpoint.port };
    if (opts?.relay) {
      peer.relay = { host: opts.relay.host, port: opts.relay.port };
      peer.path = 'relay';
    } else peer.path = 'direct';
    peer.info = null;
    const moved = before !== `${peer.path} ${peer.endpoint.host}:${peer.endpoint.port} ${peer.relay?.host}:${peer.relay?.port}`;
    // Repeated adds (every dial) do not each send an exchange: only a new peer or path, or a stale one.
    if (!peer.ctx && (isNew || moved || this.clock.now() - peer.lastKxSent >= this.limits.kxRetryMs)) this.sendExchange(peer);
  }

  /** Switch a peer between a direct endpoint and a relay (beacon). */
  setPath(node: number, target: Endpoint | { relay: Endpoint }): void {
    this.assertOpen();
    const peer = this.peerMap.get(node);
    if (!peer) throw new TunnelError('unknown_peer', `node ${node} is not a tunnel peer`);
    if ('relay' in target) {
      assertEndpoint(target.relay);
      peer.relay = { host: target.relay.host, port: target.relay.port };
      peer.path = 'relay';
    } else {
      assertEndpoint(target);
      peer.endpoint = { host: target.host, port: target.port };
      peer.path = 'direct';
    }
    peer.info = null;
  }

  /** Forget a peer: context, endpoint, queue and any exchange being verified (trust revoked). */
  removePeer(node: number): void {
    const peer = this.peerMap.get(node);
    if (peer) this.forget(peer);
    const p = this.pending.get(node);
    if (p) p.cancelled = true;
  }

  /**
   * Bytes the tunnel adds around a packet towards `node`: 36 for PILS (prefix 20 + tag 16), plus the
   * 9-byte relay header on a relayed path (for the stream engine's segment sizing).
   */
  overhead(node: number): number {
    return PILS_OVERHEAD + (this.peerMap.get(node)?.path === 'relay' ? RELAY_HEADER_LEN : 0);
  }

  hasPeer(node: number): boolean {
    return this.peerMap.has(node);
  }

  /**
   * Seal `packet` (a complete encoded Pilot packet) towards `node`. Synchronous: the buffer is not
   * retained (queued packets are copied), so callers may reuse it. While the exchange is pending the
   * packet waits in a bounded queue — never sent in plaintext (except the allowPlaintext fallback).
   */
  send(node: number, packet: Buffer): void {
    if (this.closed) return;
    const peer = this.peerMap.get(node);
    if (!peer) return this.drop('no_peer', node);
    if (peer.ctx) return this.sendSealed(peer, packet);
    if (this.plaintextFallback(peer)) return this.sendPlain(peer, packet);
    if (peer.queue.length >= this.limits.queuePerPeer) {
      peer.queue.shift();
      peer.queueDropped++;
      this.drop('queue_dropped', node);
    }
    peer.queue.push(Buffer.from(packet));
    this.counters.queued++;
    this.paceExchange(peer);
  }

  /** Feed every datagram the UDP socket receives. Never throws. */
  handleDatagram(msg: Buffer, rinfo: RemoteInfoLike): void {
    if (this.closed) return;
    if (msg.length === 0) return this.drop('bad_frame', undefined);
    if (msg[0]! < BEACON_TYPE_LIMIT && msg[0] !== BEACON_RELAY_DELIVER) {
      this.counters.beacon_messages++;
      this.emit('beacon', msg, rinfo);
      return;
    }
    this.guarded(msg, rinfo, null);
  }

  /** Decode and dispatch one datagram (or a held inner frame); outside bytes never throw past here. */
  private guarded(buf: Buffer, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    try {
      if (relayedBy === null && buf[0] === BEACON_RELAY_DELIVER) {
        const d = decodeRelayDeliver(buf);
        return this.handleFrame(d.inner, rinfo, d.sender);
      }
      this.handleFrame(buf, rinfo, relayedBy);
    } catch (err) {
      if (err instanceof FrameError) return this.drop('bad_frame', relayedBy ?? undefined);
      this.log.error({ err }, 'tunnel: unexpected error handling a datagram');
      this.drop('internal_error', undefined);
    }
  }

  peers(): PeerInfo[] {
    return [...this.peerMap.values()].map((p) => this.peerInfo(p));
  }

  peer(node: number): PeerInfo | undefined {
    const p = this.peerMap.get(node);
    return p && this.peerInfo(p);
  }

  stats(): TunnelStats {
    return { ...this.counters, peers: this.peerMap.size };
  }

  /** Stop: clear timers, forget every peer and pending exchange. The socket is the caller's. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.peerMap.values()) if (p.kxTimer) this.clock.clearTimer(p.kxTimer);
    this.peerMap.clear();
    for (const p of this.pending.values()) p.cancelled = true;
    this.pending.clear();
  }

  // ------------------------------------------------------------------------------------------ receive

  private handleFrame(buf: Buffer, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    const f = decodeTunnelFrame(buf);
    switch (f.kind) {
      case 'PILS':
        return this.onSealed(buf, f, rinfo, relayedBy);
      case 'PILA':
      case 'PILK':
        return this.onExchange(buf, f, rinfo, relayedBy);
      case 'PILT':
        return this.onPlain(f, rinfo, relayedBy);
      case 'PILP':
        this.counters.punches_ignored++;
        this.emit('punch', rinfo);
        return;
    }
  }

  private onSealed(msg: Buffer, f: SealedFrame, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    const node = f.node;
    if (relayedBy !== null && node !== relayedBy) return this.drop('relay_mismatch', node);
    const peer = this.peerMap.get(node);
    const ctx = peer?.ctx;
    if (!peer || !ctx) {
      if (this.hold(node, msg, rinfo, relayedBy)) return;
      this.drop('no_context', node);
      return this.nudge(node, rinfo, relayedBy);
    }
    const verdict = ctx.replay.check(f.prefix, f.counter);
    if (verdict !== 'ok') return this.drop(verdict, node);
    const packet = ctx.aead.open(f.nonce, f.ciphertext, f.tag);
    if (packet === null) {
      // A re-exchange being verified may have produced this frame under the coming key.
      if (this.hold(node, msg, rinfo, relayedBy)) return;
      return this.drop('auth_failed', node);
    }
    if (packet.length < MIN_PACKET_LEN) return this.drop('bad_packet', node);
    const fromPeer = packet.readUInt32BE(SRC_NODE_OFFSET) === node;
    if (f.prefix === ctx.sendPrefix) {
      // Both directions share one key (v1). Under our own prefix this is either our frame reflected
      // back (its inner source is us), or the peer drew our prefix (2^-32): then nonces could repeat
      // under the key, so we move to a fresh prefix at once.
      if (!fromPeer) return this.drop('reflected', node);
      ctx.sendPrefix = this.freshPrefix(ctx);
      this.counters.prefix_collisions++;
      this.log.warn({ node }, 'tunnel: peer uses our nonce prefix; switched to a fresh one');
    }
    const newest = ctx.replay.commit(f.prefix, f.counter); // only now: forged frames never move the window
    if (!fromPeer) return this.drop('source_mismatch', node);
    if (newest) this.notePath(peer, rinfo, relayedBy !== null);
    const now = this.clock.now();
    peer.lastRx = now;
    peer.packetsIn++;
    peer.bytesIn += packet.length;
    this.counters.packets_in++;
    this.counters.bytes_in += packet.length;
    this.emit('packet', node, packet, peer.info ?? this.buildInfo(peer));
  }

  private onPlain(f: PlainFrame, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    if (!this.opts.allowPlaintext) return this.drop('plaintext_dropped', undefined);
    const packet = f.packet;
    const src = packet.readUInt32BE(SRC_NODE_OFFSET);
    if (relayedBy !== null && src !== relayedBy) return this.drop('relay_mismatch', src);
    const peer = this.peerMap.get(src);
    // No downgrade: once a peer proved its key, its plaintext is refused even in legacy mode.
    if (peer?.ctx?.authenticated) return this.drop('plaintext_dropped', src);
    this.counters.plaintext_in++;
    this.counters.packets_in++;
    this.counters.bytes_in += packet.length;
    if (peer) {
      peer.lastRx = this.clock.now();
      peer.packetsIn++;
      peer.bytesIn += packet.length;
      peer.sentPlaintext = true;
      if (this.plaintextFallback(peer)) this.flushPlain(peer);
    }
    this.emit('packet', src, packet, {
      endpoint: { host: rinfo.address, port: rinfo.port },
      relayed: relayedBy !== null,
      encrypted: false,
      authenticated: false,
    });
  }

  private onExchange(frame: Buffer, f: AuthKeyExchangeFrame | AnonymousKeyExchangeFrame, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    const node = f.node;
    if (relayedBy !== null && node !== relayedBy) return this.drop('relay_mismatch', node);
    // Rate limit on the raw frame, before any look-up, X25519 or Ed25519 work.
    const now = this.clock.now();
    const key = relayedBy === null ? sourceKey(rinfo.address) : `${sourceKey(rinfo.address)}#${relayedBy}`;
    if (!this.kxPerSource.take(key, now) || !this.kxGlobal.take(now)) return this.drop('kx_rate_limited', node);
    this.counters.kx_received++;
    if (this.localNode === undefined) return this.drop('no_local_node', node);
    if (node === this.localNode) return this.drop('self', node);
    if (f.kind === 'PILK' && !this.opts.allowAnonymous) {
      this.drop('anonymous_refused', node);
      return this.answer(node, rinfo, relayedBy); // as v1: refuse and offer our PILA instead
    }
    const peer = this.peerMap.get(node);
    if (peer?.ctx?.exchangeFrame && peer.ctx.exchangeFrame.equals(frame)) {
      // Go's double exchange and retransmits: nothing new, no crypto, no reply, no endpoint change
      // (a replayed exchange is no proof the peer is at this address).
      this.counters.kx_duplicate++;
      return;
    }
    if (peer && peer.superseded.some((k) => k.equals(f.x25519))) return this.drop('stale_exchange', node);
    const latest: PendingExchange = { frame, decoded: f, rinfo, relayedBy };
    const running = this.pending.get(node);
    if (running) {
      // The newest exchange wins and is verified against the same look-up; the older one is dropped.
      running.latest = latest;
      return this.drop('kx_superseded', node);
    }
    if (this.pending.size >= this.limits.maxPendingLookups) return this.drop('kx_busy', node);
    const p: PendingLookup = { latest, held: [], cancelled: false };
    this.pending.set(node, p);
    void this.verifyExchange(node, p);
  }

  private async verifyExchange(node: number, p: PendingLookup): Promise<void> {
    let registryKey: Uint8Array | null = null;
    try {
      registryKey = await this.opts.lookupPublicKey(node);
    } catch (err) {
      this.log.debug({ node, err: (err as Error).message }, 'tunnel: public key look-up failed');
      registryKey = null;
    }
    if (this.pending.get(node) === p) this.pending.delete(node);
    if (this.closed) return;
    if (p.cancelled) {
      this.drop('revoked', node);
      for (let i = 0; i < p.held.length; i++) this.drop('no_context', node);
      return;
    }
    try {
      this.completeExchange(p.latest, registryKey);
    } catch (err) {
      this.log.error({ err, node }, 'tunnel: unexpected error completing an exchange');
      this.drop('internal_error', node);
    }
    for (const h of p.held) this.guarded(h.msg, h.rinfo, h.relayedBy);
  }

  private completeExchange(ex: PendingExchange, registryKey: Uint8Array | null): void {
    const { decoded: f, rinfo, relayedBy } = ex;
    const node = f.node;
    let authenticated: boolean;
    if (f.kind === 'PILA') {
      if (registryKey === null) return this.drop('lookup_failed', node);
      if (!Buffer.from(registryKey.buffer, registryKey.byteOffset, registryKey.byteLength).equals(f.ed25519)) {
        return this.drop('key_mismatch', node);
      }
      if (!verifyEd25519(f.ed25519, authSignedMessage(node, f.x25519), f.signature)) return this.drop('bad_signature', node);
      authenticated = true;
    } else {
      // PILK with allowAnonymous: v1 refuses it when the registry knows a key for the node.
      if (registryKey !== null) {
        this.drop('anonymous_refused', node);
        return this.answer(node, rinfo, relayedBy);
      }
      authenticated = false;
    }
    let peer = this.peerMap.get(node);
    if (peer?.ctx?.authenticated && !authenticated) {
      this.drop('anonymous_refused', node); // never downgrade an authenticated peer
      return this.answer(node, rinfo, relayedBy);
    }
    if (peer && peer.superseded.some((k) => k.equals(f.x25519))) return this.drop('stale_exchange', node);
    if (!peer) {
      const admitted = this.admitPeer(node, false);
      if (!admitted) return this.drop('peer_limit', node);
      peer = admitted;
    }
    const old = peer.ctx;
    if (old && old.peerX25519.equals(f.x25519)) {
      // Same keys, so the same AEAD key: keep the context (and our counter), just note what changed.
      old.exchangeFrame = Buffer.from(ex.frame);
      if (authenticated && !old.authenticated) {
        old.authenticated = true;
        peer.info = null;
        this.emit('established', node, { authenticated: true, rekeyed: false });
      }
      this.counters.kx_duplicate++;
      return;
    }
    let aead: AeadKey;
    try {
      aead = AeadKey.fromSharedSecret(this.x25519.sharedSecret(f.x25519));
    } catch (err) {
      if (err instanceof TunnelCryptoError) return this.drop('weak_key', node);
      throw err;
    }
    if (old) {
      peer.superseded.push(old.peerX25519);
      if (peer.superseded.length > this.limits.supersededKeys) peer.superseded.shift();
    }
    peer.ctx = {
      aead,
      peerX25519: Buffer.from(f.x25519),
      authenticated,
      sendPrefix: this.freshPrefix(),
      replay: new ReplayGuard(this.replayLimits()),
      exchangeFrame: Buffer.from(ex.frame),
    };
    peer.kxUnanswered = 0;
    if (peer.kxTimer) {
      this.clock.clearTimer(peer.kxTimer);
      peer.kxTimer = null;
    }
    peer.kxBackoff = this.limits.kxRetryMs;
    // Endpoint from the authenticated exchange; a relayed one only switches the path to that relay.
    this.notePath(peer, rinfo, relayedBy !== null, true);
    peer.info = null;
    this.counters.established++;
    if (old) this.counters.rekeyed++;
    // v1 replies when it had no context or the key changed, so Go peers converge. Reply first, then
    // the queued packets, then tell listeners (whose sends thus follow the queue).
    this.sendExchange(peer);
    const queued = peer.queue;
    peer.queue = [];
    for (const pkt of queued) this.sendSealed(peer, pkt);
    this.emit('established', node, { authenticated, rekeyed: old !== null });
  }

  /** Keep a sealed frame while an exchange for its node is being verified (bounded). */
  private hold(node: number, msg: Buffer, rinfo: RemoteInfoLike, relayedBy: number | null): boolean {
    const p = this.pending.get(node);
    if (!p || p.held.length >= this.limits.framesPerPendingLookup) return false;
    p.held.push({ msg, rinfo, relayedBy });
    return true;
  }

  /**
   * A sealed frame from a node we have no context for (typically: we restarted, the peer did not).
   * Offer our exchange so it re-keys — rate-limited per source like any exchange work.
   */
  private nudge(node: number, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    if (this.localNode === undefined || node === this.localNode) return;
    const now = this.clock.now();
    const key = relayedBy === null ? sourceKey(rinfo.address) : `${sourceKey(rinfo.address)}#${relayedBy}`;
    if (!this.kxPerSource.take(key, now)) return;
    this.answer(node, rinfo, relayedBy);
  }

  /** Send our PILA to where a frame came from (through the relay if it was relayed). */
  private answer(node: number, rinfo: RemoteInfoLike, relayedBy: number | null): void {
    if (!this.ourExchange || this.localNode === undefined) return;
    const frame = relayedBy === null ? this.ourExchange : [encodeRelayHeader(this.localNode, node), this.ourExchange];
    this.counters.kx_sent++;
    this.emitFrame(frame, rinfo.port, rinfo.address, node);
  }

  /** Roaming: follow the peer to where its authenticated frames come from. */
  private notePath(peer: Peer, rinfo: RemoteInfoLike, relayed: boolean, fromExchange = false): void {
    if (!fromExchange && this.opts.roaming === false) return;
    if (relayed) {
      if (peer.path === 'relay' && peer.relay && peer.relay.port === rinfo.port && peer.relay.host === rinfo.address) return;
      peer.relay = { host: rinfo.address, port: rinfo.port };
      peer.path = 'relay';
    } else {
      if (peer.path === 'direct' && peer.endpoint && peer.endpoint.port === rinfo.port && peer.endpoint.host === rinfo.address) return;
      peer.endpoint = { host: rinfo.address, port: rinfo.port };
      peer.path = 'direct';
    }
    peer.info = null;
    this.counters.path_changes++;
    this.emit('path', peer.node, this.peerInfo(peer));
  }

  // --------------------------------------------------------------------------------------------- send

  private sendSealed(peer: Peer, packet: Buffer): void {
    const ctx = peer.ctx!;
    const relayed = peer.path === 'relay';
    const target = relayed ? peer.relay : peer.endpoint;
    if (!target) return this.drop('no_endpoint', peer.node);
    if (peer.sendCounter >= MAX_COUNTER) return this.drop('counter_exhausted', peer.node);
    const counter = ++peer.sendCounter;
    const off = relayed ? RELAY_HEADER_LEN : 0;
    // One small buffer holds the relay header (if any) and the 20-byte PILS prefix; ciphertext and
    // tag follow as separate buffers in a gather send: the packet is never copied around.
    const head = Buffer.allocUnsafe(off + PILS_PREFIX_LEN);
    if (relayed) {
      head[0] = BEACON_RELAY;
      head.writeUInt32BE(this.localNode!, 1);
      head.writeUInt32BE(peer.node, 5);
    }
    writeSealedPrefix(head, off, this.localNode!, ctx.sendPrefix, counter);
    const { ciphertext, tag } = ctx.aead.seal(head.subarray(off + 8, off + 20), packet);
    peer.lastTx = this.clock.now();
    peer.packetsOut++;
    peer.bytesOut += packet.length;
    this.counters.packets_out++;
    this.counters.bytes_out += packet.length;
    this.emitFrame([head, ciphertext, tag], target.port, target.host, peer.node);
  }

  private sendPlain(peer: Peer, packet: Buffer): void {
    const target = peer.path === 'relay' ? peer.relay : peer.endpoint;
    if (!target) return this.drop('no_endpoint', peer.node);
    // The caller may reuse `packet` and dgram sends later: copy.
    const parts = encodePlain(Buffer.from(packet));
    const frame = peer.path === 'relay' ? [encodeRelayHeader(this.localNode ?? 0, peer.node), ...parts] : parts;
    peer.lastTx = this.clock.now();
    peer.packetsOut++;
    peer.bytesOut += packet.length;
    this.counters.packets_out++;
    this.counters.plaintext_out++;
    this.counters.bytes_out += packet.length;
    this.emitFrame(frame, target.port, target.host, peer.node);
  }

  private flushPlain(peer: Peer): void {
    const queued = peer.queue;
    peer.queue = [];
    for (const pkt of queued) this.sendPlain(peer, pkt);
  }

  /**
   * Legacy only: a peer that speaks PILT and has ignored several of our exchange frames is a v1 daemon
   * with encryption off. An encrypting peer answers the first exchange, so it never gets plaintext.
   */
  private plaintextFallback(peer: Peer): boolean {
    return this.opts.allowPlaintext === true && peer.ctx === null && peer.sentPlaintext && peer.kxUnanswered >= PLAINTEXT_FALLBACK_AFTER;
  }

  private sendExchange(peer: Peer): void {
    if (!this.ourExchange || this.localNode === undefined) return; // sent by setLocalNode
    const relayed = peer.path === 'relay';
    const target = relayed ? peer.relay : peer.endpoint;
    if (!target) return;
    peer.lastKxSent = this.clock.now();
    peer.kxSent++;
    if (!peer.ctx) peer.kxUnanswered++;
    this.counters.kx_sent++;
    const frame = relayed ? [encodeRelayHeader(this.localNode, peer.node), this.ourExchange] : this.ourExchange;
    this.emitFrame(frame, target.port, target.host, peer.node);
  }

  /** While packets wait for a context, re-send our exchange with backoff (not once per packet, as v1 did). */
  private paceExchange(peer: Peer): void {
    if (peer.ctx || peer.kxTimer || this.closed) return;
    const now = this.clock.now();
    if (now - peer.lastKxSent >= peer.kxBackoff) {
      this.sendExchange(peer);
      peer.kxBackoff = Math.min(this.limits.kxRetryMaxMs, peer.kxBackoff * 2);
    }
    const wait = Math.max(1, peer.lastKxSent + peer.kxBackoff - now);
    peer.kxTimer = this.clock.setTimer(() => {
      peer.kxTimer = null;
      if (this.closed || peer.ctx || this.peerMap.get(peer.node) !== peer) return;
      if (this.plaintextFallback(peer)) return this.flushPlain(peer);
      if (peer.queue.length > 0) this.paceExchange(peer);
    }, wait);
  }

  private emitFrame(frame: Buffer | Buffer[], port: number, host: string, node: number): void {
    try {
      this.opts.send(frame, port, host);
    } catch (err) {
      this.log.debug({ node, err: (err as Error).message }, 'tunnel: send failed');
      this.drop('send_failed', node);
    }
  }

  // -------------------------------------------------------------------------------------------- peers

  /** Create a peer, evicting the least recently active one if the table is full. */
  private admitPeer(node: number, local: boolean): Peer | null {
    if (this.peerMap.size >= this.limits.maxPeers) {
      let lru: Peer | null = null;
      let lruAt = Infinity;
      for (const p of this.peerMap.values()) {
        const at = Math.max(p.created, p.lastRx, p.lastTx);
        if (at < lruAt) {
          lru = p;
          lruAt = at;
        }
      }
      if (!lru) return null;
      // Our own decision to talk to a peer wins; an unsolicited one may only displace an idle peer.
      if (!local && this.clock.now() - lruAt < this.limits.idleEvictMs) return null;
      this.forget(lru);
      this.counters.peers_evicted++;
      this.log.info({ node: lru.node }, 'tunnel: peer table full, evicted least recently active peer');
      this.emit('evicted', lru.node);
    }
    const now = this.clock.now();
    const peer: Peer = {
      node,
      endpoint: null,
      relay: null,
      path: 'direct',
      ctx: null,
      sendCounter: 0,
      queue: [],
      queueDropped: 0,
      kxTimer: null,
      kxBackoff: this.limits.kxRetryMs,
      lastKxSent: -Infinity,
      kxSent: 0,
      kxUnanswered: 0,
      superseded: [],
      sentPlaintext: false,
      created: now,
      lastRx: -Infinity,
      lastTx: -Infinity,
      packetsIn: 0,
      packetsOut: 0,
      bytesIn: 0,
      bytesOut: 0,
      info: null,
    };
    this.peerMap.set(node, peer);
    return peer;
  }

  private forget(peer: Peer): void {
    if (peer.kxTimer) this.clock.clearTimer(peer.kxTimer);
    peer.kxTimer = null;
    peer.ctx = null;
    peer.queue = [];
    this.peerMap.delete(peer.node);
  }

  private buildInfo(peer: Peer): PacketInfo {
    const relayed = peer.path === 'relay';
    const ep = (relayed ? peer.relay : peer.endpoint) ?? { host: '', port: 0 };
    const info: PacketInfo = Object.freeze({
      endpoint: Object.freeze({ host: ep.host, port: ep.port }),
      relayed,
      encrypted: true,
      authenticated: peer.ctx?.authenticated ?? false,
    });
    peer.info = info;
    return info;
  }

  private peerInfo(p: Peer): PeerInfo {
    return {
      node_id: p.node,
      endpoint: p.endpoint && { ...p.endpoint },
      relay: p.relay && { ...p.relay },
      path: p.path,
      encrypted: p.ctx !== null,
      authenticated: p.ctx?.authenticated ?? false,
      last_rx: Number.isFinite(p.lastRx) ? p.lastRx : null,
      last_tx: Number.isFinite(p.lastTx) ? p.lastTx : null,
      packets_in: p.packetsIn,
      packets_out: p.packetsOut,
      bytes_in: p.bytesIn,
      bytes_out: p.bytesOut,
      queued: p.queue.length,
      queue_dropped: p.queueDropped,
      kx_sent: p.kxSent,
      send_counter: p.sendCounter,
      peer_prefixes: p.ctx?.replay.activePrefixes.length ?? 0,
    };
  }

  // ------------------------------------------------------------------------------------------ helpers

  /** A random nonce prefix, never one the peer is using under this key (its prefixes share our key). */
  private freshPrefix(ctx?: PeerContext): number {
    const taken = ctx ? [ctx.sendPrefix, ...ctx.replay.activePrefixes] : [];
    for (;;) {
      const p = this.random(4).readUInt32BE(0);
      if (!taken.includes(p)) return p;
    }
  }

  private replayLimits() {
    return {
      windowSize: this.limits.replayWindow,
      maxActivePrefixes: this.limits.maxActivePrefixes,
      maxRetiredPrefixes: this.limits.maxRetiredPrefixes,
    };
  }

  private drop(reason: DropReason, node: number | undefined): void {
    this.counters[reason]++;
    this.counters.dropped++;
    if (!this.loggedReasons.has(reason)) {
      this.loggedReasons.add(reason);
      this.log.warn({ reason, node }, 'tunnel: dropped (first of its kind; see stats() for counts)');
    }
    this.emit('dropped', reason, node);
  }

  private assertOpen(): void {
    if (this.closed) throw new TunnelError('closed', 'tunnel is closed');
  }
}

function assertNode(node: number): void {
  if (!Number.isInteger(node) || node < 0 || node >= 0xffffffff) {
    throw new TunnelError('bad_node', `node id ${node} must be an integer in 0..0xFFFFFFFE`);
  }
}

function assertEndpoint(ep: Endpoint): void {
  if (!ep || typeof ep.host !== 'string' || ep.host === '' || !Number.isInteger(ep.port) || ep.port < 1 || ep.port > 0xffff) {
    throw new TunnelError('bad_endpoint', `bad endpoint ${JSON.stringify(ep)}`);
  }
}
