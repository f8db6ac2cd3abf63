import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { pino, type Logger } from 'pino';
import { verifyEd25519 } from '../transport/identity.js';
import {
  BeaconType,
  RELAY_HEADER_LEN,
  decodeDiscover,
  decodeSync,
  discoverChallenge,
  encodeDiscoverReply,
  encodePunchCommand,
  encodeSyncChunks,
  PUNCH_REQUEST_LEN,
  type DiscoverMsg,
  type Endpoint,
} from './beacon-wire.js';
import { BindingTable, RemoteNodes, ReplayGuard, type Binding, type PeerRef } from './beacon-state.js';
import { BeaconError } from './errors.js';
import { ipToBytes, unmapIPv4 } from './ip.js';
import { KeyedRateLimiter } from './rate-limit.js';

/**
 * The beacon (wire reference §1.9, SPEC §7): UDP rendezvous that tells nodes their public endpoint,
 * coordinates hole punches and relays tunnel frames for nodes that cannot reach each other directly.
 *
 * Unlike v1 it binds a node ID to an endpoint only on proof of the node's key (signed discover, or the
 * registry's own record of the endpoint), discloses endpoints in punch commands only when the registry's
 * privacy rule allows, and relays only for senders bound at the packet's source endpoint.
 */

type MaybePromise<T> = T | Promise<T>;

export interface BeaconClock {
  /** Milliseconds (unix epoch: signed discovers carry unix-ms timestamps). */
  now(): number;
}

export interface BeaconLimits {
  /** Live node bindings kept; new nodes beyond this are refused (never evicting live ones). */
  maxBindings: number;
  /** A binding expires this long after its last discover / punch request / relay. */
  bindingTtlMs: number;
  /** Sends waiting in the socket's queue before relayed frames are dropped (`relay_dropped_queue_full`). */
  relayQueue: number;
  /** Signed discover timestamps must be within ±this of our clock. */
  discoverSkewMs: number;
  /** Nodes remembered by the replay guard (per-node highest accepted timestamp). */
  maxReplayEntries: number;
  /** Concurrent asynchronous key / endpoint / disclosure look-ups. */
  maxPendingChecks: number;
  /** Signature verifications (and registry look-ups) per source IPv4 address or IPv6 /64 per second; burst is 2×. */
  verifyPerSourcePerSec: number;
  /** Punch requests per requester node per second; burst is 2×. */
  punchPerNodePerSec: number;
  /** Node IDs learned from peer beacons. */
  maxRemoteNodes: number;
  /** How often we gossip our bound node IDs to peer beacons. */
  gossipIntervalMs: number;
  /** Gossiped node sets expire this long after their last sync. */
  gossipTtlMs: number;
  /** Node IDs per sync datagram (298 keeps each under 1200 bytes: no IP fragmentation). */
  syncMaxIds: number;
  /** UDP receive and send buffer size requested from the kernel. */
  socketBufferBytes: number;
  /** Period of the sweep that drops expired state. */
  sweepIntervalMs: number;
}

export const DEFAULT_BEACON_LIMITS: Readonly<BeaconLimits> = Object.freeze({
  maxBindings: 100_000,
  bindingTtlMs: 180_000,
  relayQueue: 4096,
  discoverSkewMs: 60_000,
  maxReplayEntries: 200_000,
  maxPendingChecks: 1024,
  verifyPerSourcePerSec: 50,
  punchPerNodePerSec: 20,
  maxRemoteNodes: 262_144,
  gossipIntervalMs: 10_000,
  gossipTtlMs: 60_000,
  syncMaxIds: 298,
  socketBufferBytes: 4 * 1024 * 1024,
  sweepIntervalMs: 15_000,
});

export interface BeaconOptions {
  listen: { host: string; port: number };
  /** The registry's Ed25519 public key (raw 32 bytes) for a node, or null if unknown. */
  publicKeyOf: (nodeId: number) => MaybePromise<Buffer | Uint8Array | null>;
  /**
   * May `requesterId` learn `targetId`'s endpoint (the registry's privacy rule: public, trusted, or a shared
   * network)? Absent: every bound requester may punch every bound target (v1 behaviour).
   */
  canDisclose?: (requesterId: number, targetId: number) => MaybePromise<boolean>;
  /**
   * The endpoint the registry has on record for a node (its authenticated registration). An unsigned
   * v1 discover from exactly that endpoint binds without `legacy`, so v1 daemons get punch/relay service.
   */
  registeredEndpointOf?: (nodeId: number) => MaybePromise<Endpoint | null>;
  /** `--legacy-beacon`: unsigned v1 discovers bind (but never replace a proven binding). */
  legacy?: boolean;
  /** Our ID in sync gossip; random non-zero if absent. */
  beaconId?: number;
  /** Peer beacons we gossip with and accept syncs / forwarded relays from. */
  peers?: Array<{ host: string; port: number }>;
  clock?: BeaconClock;
  log?: Logger;
  limits?: Partial<BeaconLimits>;
  /** Injected randomness (beacon ID). */
  randomBytes?: (n: number) => Buffer;
}

export const BEACON_COUNTERS = [
  'datagrams_received',
  'malformed',
  'unexpected_type',
  'discover_received',
  'discover_probe',
  'discover_ok',
  'discover_legacy_bound',
  'discover_registry_bound',
  'discover_bad_signature',
  'discover_stale',
  'discover_replayed',
  'discover_unknown_node',
  'discover_key_lookup_failed',
  'discover_rate_limited',
  'discover_busy',
  'discover_malformed',
  'discover_steal_refused',
  'unsigned_discover_ignored',
  'bindings_created',
  'bindings_moved',
  'bindings_expired',
  'bindings_full',
  'punch_received',
  'punch_ok',
  'punch_commands_sent',
  'punch_malformed',
  'punch_denied_requester_unbound',
  'punch_denied_requester_mismatch',
  'punch_denied_self',
  'punch_denied_target_unknown',
  'punch_denied_policy',
  'punch_denied_rate_limited',
  'punch_denied_busy',
  'relay_received',
  'relay_delivered',
  'relay_forwarded',
  'relay_bytes',
  'relay_dropped_malformed',
  'relay_dropped_sender_unbound',
  'relay_dropped_sender_mismatch',
  'relay_dropped_dest_unknown',
  'relay_dropped_queue_full',
  'sync_sent',
  'sync_received',
  'sync_rejected_unknown_peer',
  'sync_malformed',
  'remote_nodes_full',
  'replies_dropped_queue_full',
  'socket_errors',
  'internal_errors',
] as const;
export type BeaconCounter = (typeof BEACON_COUNTERS)[number];

export interface BeaconStats {
  bindings: number;
  remoteNodes: number;
  peers: number;
  replayEntries: number;
  pendingChecks: number;
  sendQueue: number;
  recvBufferBytes: number;
  sendBufferBytes: number;
  counters: Record<BeaconCounter, number>;
}

const systemClock: BeaconClock = { now: () => Date.now() };

/** Datagrams from peers arriving within this gap belong to one gossip round (merged, not replaced). */
const SYNC_ROUND_GAP_MS = 1000;

export class BeaconServer {
  private readonly limits: BeaconLimits;
  private readonly clock: BeaconClock;
  private readonly log: Logger;
  private readonly legacy: boolean;
  readonly beaconId: number;

  private readonly table: BindingTable;
  private readonly replay: ReplayGuard;
  private readonly remote: RemoteNodes;
  private readonly verifyLimiter: KeyedRateLimiter<string>;
  private readonly punchLimiter: KeyedRateLimiter<number>;
  private readonly counters: Record<BeaconCounter, number>;
  private readonly loggedOnce = new Set<string>();

  private socket: Socket | null = null;
  private peers = new Map<string, PeerRef>();
  private pendingChecks = 0;
  private timers: NodeJS.Timeout[] = [];
  private state: 'new' | 'listening' | 'closed' = 'new';
  private boundAddress: Endpoint | null = null;

  constructor(private readonly opts: BeaconOptions) {
    if (typeof opts.publicKeyOf !== 'function') throw new BeaconError('bad_options', 'publicKeyOf is required');
    this.limits = { ...DEFAULT_BEACON_LIMITS, ...(opts.limits ?? {}) };
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.log ?? pino({ level: 'silent' })).child({ component: 'beacon' });
    this.legacy = opts.legacy === true;
    const rnd = opts.randomBytes ?? randomBytes;
    let id = opts.beaconId ?? 0;
    while (id === 0) id = rnd(4).readUInt32BE(0);
    if (!Number.isInteger(id) || id < 1 || id > 0xffffffff) throw new BeaconError('bad_options', `beaconId out of range: ${id}`);
    this.beaconId = id;
    const L = this.limits;
    this.table = new BindingTable(L.maxBindings, L.bindingTtlMs);
    this.replay = new ReplayGuard(L.maxReplayEntries, L.discoverSkewMs);
    this.remote = new RemoteNodes(L.maxRemoteNodes, L.gossipTtlMs, SYNC_ROUND_GAP_MS);
    this.verifyLimiter = new KeyedRateLimiter(L.verifyPerSourcePerSec, 2 * L.verifyPerSourcePerSec, 65_536);
    this.punchLimiter = new KeyedRateLimiter(L.punchPerNodePerSec, 2 * L.punchPerNodePerSec, 65_536);
    this.counters = Object.fromEntries(BEACON_COUNTERS.map((k) => [k, 0])) as Record<BeaconCounter, number>;
  }

  /** Bind the UDP socket, resolve peers and start gossip / sweep timers. */
  async listen(): Promise<{ address: string; port: number }> {
    if (this.state !== 'new') throw new BeaconError('bad_state', `cannot listen: beacon is ${this.state}`);
    this.state = 'listening';
    const { host, port } = this.opts.listen;
    let socket: Socket | null = null;
    try {
      const family = isIP(host) || (await resolveHost(host, 0)).family;
      socket = createSocket({
        type: family === 6 ? 'udp6' : 'udp4',
        recvBufferSize: this.limits.socketBufferBytes,
        sendBufferSize: this.limits.socketBufferBytes,
        // Synchronous lookup for IP literals: dgram otherwise defers every send by a tick through dns.lookup.
        lookup: fastLookup,
      });
      const s = socket;
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind({ address: host, port, exclusive: true }, () => {
          s.off('error', reject);
          resolve();
        });
      });
      s.on('error', (err) => {
        this.counters.socket_errors++;
        this.warnOnce('socket_error', { err: err.message }, 'beacon socket error');
      });
      if (this.state !== 'listening') throw new BeaconError('bad_state', 'beacon closed while starting');
      this.socket = s;
      s.on('message', this.onMessage);
      await this.setPeers(this.opts.peers ?? []);
      if (this.state !== 'listening') throw new BeaconError('bad_state', 'beacon closed while starting');
    } catch (err) {
      this.state = 'closed';
      this.socket = null;
      if (socket) {
        const s = socket;
        await new Promise<void>((resolve) => {
          try {
            s.close(() => resolve());
          } catch {
            resolve(); // never bound or already closed
          }
        });
      }
      if (err instanceof BeaconError) throw err;
      throw new BeaconError('listen_failed', `beacon cannot listen on ${host}:${port}: ${(err as Error).message}`, { cause: err });
    }
    const addr = this.socket.address();
    this.boundAddress = { address: addr.address, port: addr.port };
    this.timers.push(setInterval(() => this.syncNow(), this.limits.gossipIntervalMs).unref());
    this.timers.push(setInterval(() => this.sweep(), this.limits.sweepIntervalMs).unref());
    this.log.info({ address: addr.address, port: addr.port, beaconId: this.beaconId, legacy: this.legacy, peers: this.peers.size }, 'beacon listening');
    return { ...this.boundAddress };
  }

  /** Stop timers and close the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const s = this.socket;
    this.socket = null;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** The bound socket address (after listen). */
  address(): Endpoint | null {
    return this.boundAddress ? { ...this.boundAddress } : null;
  }

  /** For a `/healthz` endpoint in the embedding process. */
  healthy(): boolean {
    return this.state === 'listening' && this.socket !== null;
  }

  /** Number of live node bindings (expired ones are swept first). */
  bindings(): number {
    this.sweepBindings(this.clock.now());
    return this.table.size;
  }

  /** The endpoint a node is bound at, if any. */
  bindingOf(nodeId: number): { address: string; port: number; proven: boolean } | null {
    const b = this.table.get(nodeId, this.clock.now());
    return b ? { address: unmapIPv4(b.address), port: b.port, proven: b.proven } : null;
  }

  stats(): BeaconStats {
    const s = this.socket;
    const safe = (f: () => number): number => {
      try {
        return f();
      } catch {
        return 0;
      }
    };
    return {
      bindings: this.table.size,
      remoteNodes: this.remote.size,
      peers: this.peers.size,
      replayEntries: this.replay.size,
      pendingChecks: this.pendingChecks,
      sendQueue: s ? safe(() => s.getSendQueueCount()) : 0,
      recvBufferBytes: s ? safe(() => s.getRecvBufferSize()) : 0,
      sendBufferBytes: s ? safe(() => s.getSendBufferSize()) : 0,
      counters: { ...this.counters },
    };
  }

  /**
   * Replace the peer-beacon set (e.g. from the registry's `beacon_list`). Hostnames are resolved now;
   * node sets learned from dropped peers are forgotten.
   */
  async setPeers(peers: ReadonlyArray<{ host: string; port: number }>): Promise<void> {
    const own = this.socket?.address();
    const v6 = own?.family === 'IPv6';
    const next = new Map<string, PeerRef>();
    for (const p of peers) {
      if (!Number.isInteger(p.port) || p.port < 1 || p.port > 0xffff) throw new BeaconError('bad_options', `bad peer port: ${p.port}`);
      let r: { address: string; family: number };
      try {
        r = await resolveHost(p.host, v6 ? 0 : 4);
      } catch (err) {
        this.log.warn({ host: p.host, err: (err as Error).message }, 'cannot resolve peer beacon; skipped');
        continue;
      }
      const key = `${unmapIPv4(r.address)}:${p.port}`;
      const sendAddress = v6 && r.family === 4 ? `::ffff:${r.address}` : r.address;
      next.set(key, { key, address: sendAddress, port: p.port });
    }
    this.peers = next;
    this.remote.retainPeers(new Set(next.keys()));
  }

  /** One gossip round now: our live bound node IDs to every peer (§1.9 Sync). Also run by the timer. */
  syncNow(): void {
    const s = this.socket;
    if (!s || this.peers.size === 0) return;
    const ids = this.table.liveIds(this.clock.now());
    const chunks = encodeSyncChunks(this.beaconId, ids, this.limits.syncMaxIds);
    for (const peer of this.peers.values()) {
      for (const c of chunks) {
        if (this.sendControl(c, peer.port, peer.address)) this.counters.sync_sent++;
      }
    }
  }

  /** Drop expired bindings, gossip sets, replay entries and idle rate-limit buckets. Also run by the timer. */
  sweep(): void {
    const now = this.clock.now();
    this.sweepBindings(now);
    this.remote.sweep(now);
    this.replay.sweep(now);
    this.verifyLimiter.sweep(now);
    this.punchLimiter.sweep(now);
  }

  // ------------------------------------------------------------------ datagram dispatch

  private readonly onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (this.socket === null) return; // closing
    this.counters.datagrams_received++;
    try {
      switch (msg.length === 0 ? -1 : msg[0]) {
        case BeaconType.RELAY:
          this.onRelay(msg, rinfo);
          return;
        case BeaconType.DISCOVER:
          this.onDiscover(msg, rinfo);
          return;
        case BeaconType.PUNCH_REQUEST:
          this.onPunchRequest(msg, rinfo);
          return;
        case BeaconType.SYNC:
          this.onSync(msg, rinfo);
          return;
        case -1:
          this.counters.malformed++;
          return;
        default:
          this.counters.unexpected_type++;
          return;
      }
    } catch (err) {
      this.counters.internal_errors++;
      this.warnOnce('internal_error', { err: (err as Error).message }, 'beacon: unexpected error handling a datagram');
    }
  };

  // ------------------------------------------------------------------ relay (hot path)

  /**
   * 0x05 Relay → 0x06 RelayDeliver to the destination's endpoint, rewriting the datagram in place: the
   * 9-byte relay header becomes a 5-byte deliver header at offset 4 and the inner frame is never copied.
   */
  private onRelay(msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    c.relay_received++;
    if (msg.length < RELAY_HEADER_LEN) {
      c.relay_dropped_malformed++;
      return;
    }
    const sender = msg.readUInt32BE(1);
    const dest = msg.readUInt32BE(5);
    const now = this.clock.now();
    let fromPeer = false;
    const sb = this.table.get(sender, now);
    if (sb !== undefined && sb.address === rinfo.address && sb.port === rinfo.port) {
      this.table.refresh(sb, now);
    } else if (this.peers.size > 0 && this.peers.has(peerKey(rinfo))) {
      fromPeer = true; // the peer beacon checked the sender's binding (cross-beacon forwarding)
    } else {
      if (sb === undefined) c.relay_dropped_sender_unbound++;
      else c.relay_dropped_sender_mismatch++;
      return;
    }
    const s = this.socket!;
    const db = this.table.get(dest, now);
    if (db !== undefined) {
      if (s.getSendQueueCount() >= this.limits.relayQueue) {
        this.dropQueueFull();
        return;
      }
      msg[4] = BeaconType.RELAY_DELIVER;
      msg.writeUInt32BE(sender, 5);
      s.send(msg.subarray(4), db.port, db.address);
      c.relay_delivered++;
      c.relay_bytes += msg.length - RELAY_HEADER_LEN;
      return;
    }
    // Forward at most one hop: a frame a peer forwarded to us is never forwarded again (no loops).
    const peer = fromPeer ? undefined : this.remote.lookup(dest, now);
    if (peer === undefined) {
      c.relay_dropped_dest_unknown++;
      return;
    }
    if (s.getSendQueueCount() >= this.limits.relayQueue) {
      this.dropQueueFull();
      return;
    }
    s.send(msg, peer.port, peer.address);
    c.relay_forwarded++;
    c.relay_bytes += msg.length - RELAY_HEADER_LEN;
  }

  private dropQueueFull(): void {
    this.counters.relay_dropped_queue_full++;
    this.warnOnce('relay_queue_full', { limit: this.limits.relayQueue }, 'beacon relay queue full: dropping relayed frames');
  }

  // ------------------------------------------------------------------ discover

  private onDiscover(msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    c.discover_received++;
    let d: DiscoverMsg;
    try {
      d = decodeDiscover(msg);
    } catch {
      c.discover_malformed++;
      return;
    }
    // Always tell the sender its observed endpoint: it only reveals the sender's own address to itself.
    this.sendControl(encodeDiscoverReply({ address: rinfo.address, port: rinfo.port }), rinfo.port, rinfo.address);
    if (d.nodeId === 0) {
      c.discover_probe++; // daemon startup probe (§1.9): binds nothing
      return;
    }
    if (d.signed) this.onSignedDiscover(d.nodeId, d.signed.ts, d.signed.signature, rinfo);
    else this.onUnsignedDiscover(d.nodeId, rinfo);
  }

  private onSignedDiscover(nodeId: number, ts: number, signature: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    const now = this.clock.now();
    if (Math.abs(now - ts) > this.limits.discoverSkewMs) {
      c.discover_stale++;
      return;
    }
    if (!this.replay.isFresh(nodeId, ts)) {
      c.discover_replayed++;
      return;
    }
    // Cheap checks first; signature work and registry look-ups are rate-limited per source IP.
    if (!this.verifyLimiter.take(sourceKey(rinfo.address), now)) {
      c.discover_rate_limited++;
      return;
    }
    const sig = Buffer.from(signature); // the datagram buffer is not ours to keep across an await
    this.check(
      () => this.opts.publicKeyOf(nodeId),
      (key) => {
        const now2 = this.clock.now();
        if (key === null || key === undefined) {
          c.discover_unknown_node++;
          return;
        }
        if (!verifyEd25519(key, discoverChallenge(nodeId, ts), sig)) {
          c.discover_bad_signature++;
          return;
        }
        if (!this.replay.accept(nodeId, ts, now2)) {
          c.discover_replayed++;
          return;
        }
        if (this.bind(nodeId, rinfo, true, now2)) c.discover_ok++;
      },
      () => c.discover_busy++,
      (err) => {
        c.discover_key_lookup_failed++;
        this.warnOnce('key_lookup_failed', { err: err.message }, 'beacon: public key look-up failed');
      },
    );
  }

  private onUnsignedDiscover(nodeId: number, rinfo: RemoteInfo): void {
    const c = this.counters;
    const now = this.clock.now();
    if (this.legacy) {
      if (this.bind(nodeId, rinfo, false, now)) c.discover_legacy_bound++;
      return;
    }
    const registered = this.opts.registeredEndpointOf;
    if (registered === undefined) {
      c.unsigned_discover_ignored++;
      return;
    }
    if (!this.verifyLimiter.take(sourceKey(rinfo.address), now)) {
      c.discover_rate_limited++;
      return;
    }
    this.check(
      () => registered(nodeId),
      (ep) => {
        if (ep && sameEndpoint(ep, rinfo)) {
          if (this.bind(nodeId, rinfo, true, this.clock.now())) c.discover_registry_bound++;
        } else {
          c.unsigned_discover_ignored++;
        }
      },
      () => c.discover_busy++,
      (err) => {
        c.discover_key_lookup_failed++;
        this.warnOnce('endpoint_lookup_failed', { err: err.message }, 'beacon: registered endpoint look-up failed');
      },
    );
  }

  private bind(nodeId: number, rinfo: RemoteInfo, proven: boolean, now: number): boolean {
    if (this.state !== 'listening') return false;
    const r = this.table.bind(nodeId, rinfo.address, rinfo.port, proven, now);
    switch (r) {
      case 'bound':
        this.counters.bindings_created++;
        return true;
      case 'moved':
        this.counters.bindings_moved++;
        return true;
      case 'refreshed':
        return true;
      case 'steal_refused':
        this.counters.discover_steal_refused++;
        return false;
      case 'full':
        this.counters.bindings_full++;
        this.warnOnce('bindings_full', { max: this.limits.maxBindings }, 'beacon binding table full: refusing new nodes');
        return false;
    }
  }

  // ------------------------------------------------------------------ punch

  private onPunchRequest(msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    c.punch_received++;
    if (msg.length !== PUNCH_REQUEST_LEN) {
      c.punch_malformed++;
      return;
    }
    const requester = msg.readUInt32BE(1);
    const target = msg.readUInt32BE(5);
    const now = this.clock.now();
    // The requester must be bound at this packet's source: nobody can trigger punches in another's name.
    const rb = this.table.get(requester, now);
    if (rb === undefined) {
      c.punch_denied_requester_unbound++;
      return;
    }
    if (rb.address !== rinfo.address || rb.port !== rinfo.port) {
      c.punch_denied_requester_mismatch++;
      return;
    }
    this.table.refresh(rb, now);
    if (requester === target) {
      c.punch_denied_self++;
      return;
    }
    if (this.table.get(target, now) === undefined) {
      c.punch_denied_target_unknown++;
      return;
    }
    if (!this.punchLimiter.take(requester, now)) {
      c.punch_denied_rate_limited++;
      return;
    }
    const canDisclose = this.opts.canDisclose;
    const send = (allowed: boolean): void => {
      if (!allowed) {
        c.punch_denied_policy++;
        return;
      }
      // Re-read both bindings: an asynchronous policy check may have taken a while.
      const now2 = this.clock.now();
      const a = this.table.get(requester, now2);
      const b = this.table.get(target, now2);
      if (a === undefined || b === undefined) {
        c.punch_denied_target_unknown++;
        return;
      }
      // Each side learns the other's endpoint (symmetric once the requester asked).
      let sent = 0;
      if (this.sendControl(encodePunchCommand(endpointOf(b)), a.port, a.address)) sent++;
      if (this.sendControl(encodePunchCommand(endpointOf(a)), b.port, b.address)) sent++;
      c.punch_commands_sent += sent;
      c.punch_ok++;
    };
    if (canDisclose === undefined) {
      send(true);
      return;
    }
    this.check(
      () => canDisclose(requester, target),
      (allowed) => send(allowed === true),
      () => c.punch_denied_busy++,
      (err) => {
        c.punch_denied_policy++;
        this.warnOnce('disclosure_check_failed', { err: err.message }, 'beacon: disclosure check failed (denying)');
      },
    );
  }

  // ------------------------------------------------------------------ gossip

  private onSync(msg: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters;
    const peer = this.peers.get(peerKey(rinfo));
    if (peer === undefined) {
      c.sync_rejected_unknown_peer++;
      return;
    }
    let ids: number[];
    let beaconId: number;
    try {
      const s = decodeSync(msg);
      ids = s.nodeIds;
      beaconId = s.beaconId;
    } catch {
      c.sync_malformed++;
      return;
    }
    c.sync_received++;
    const refused = this.remote.apply(peer, beaconId, ids, this.clock.now());
    if (refused > 0) {
      c.remote_nodes_full += refused;
      this.warnOnce('remote_nodes_full', { max: this.limits.maxRemoteNodes }, 'beacon gossip table full: ignoring node IDs');
    }
  }

  // ------------------------------------------------------------------ helpers

  /**
   * Run a possibly asynchronous look-up with a bound on how many are in flight. Synchronous answers are
   * handled synchronously (no promise per packet); nothing is done after close.
   */
  private check<T>(run: () => MaybePromise<T>, done: (v: T) => void, busy: () => void, failed: (err: Error) => void): void {
    let v: MaybePromise<T>;
    try {
      v = run();
    } catch (err) {
      failed(asError(err));
      return;
    }
    if (!isPromiseLike(v)) {
      done(v);
      return;
    }
    if (this.pendingChecks >= this.limits.maxPendingChecks) {
      busy();
      v.then(undefined, () => undefined); // swallow: we no longer care about the result
      return;
    }
    this.pendingChecks++;
    v.then(
      (r) => {
        this.pendingChecks--;
        if (this.state !== 'listening') return;
        try {
          done(r);
        } catch (err) {
          this.counters.internal_errors++;
          this.warnOnce('internal_error', { err: (err as Error).message }, 'beacon: unexpected error after a look-up');
        }
      },
      (err: unknown) => {
        this.pendingChecks--;
        if (this.state === 'listening') failed(asError(err));
      },
    );
  }

  /** Send a small control datagram unless the socket's queue is over the limit. */
  private sendControl(buf: Buffer, port: number, address: string): boolean {
    const s = this.socket;
    if (s === null) return false;
    if (s.getSendQueueCount() >= this.limits.relayQueue) {
      this.counters.replies_dropped_queue_full++;
      return false;
    }
    s.send(buf, port, address);
    return true;
  }

  private sweepBindings(now: number): void {
    const n = this.table.sweep(now);
    this.counters.bindings_expired += n;
  }

  private warnOnce(key: string, obj: Record<string, unknown>, msg: string): void {
    if (this.loggedOnce.has(key)) return;
    this.loggedOnce.add(key);
    this.log.warn(obj, msg);
  }
}

/** Rate-limit key for a source: the IPv4 address, or the /64 of an IPv6 one (one host usually owns a /64). */
function sourceKey(address: string): string {
  const a = unmapIPv4(address);
  if (!a.includes(':')) return a;
  const b = ipToBytes(a);
  return b === null ? a : b.subarray(0, 8).toString('hex');
}

function peerKey(rinfo: RemoteInfo): string {
  return `${unmapIPv4(rinfo.address)}:${rinfo.port}`;
}

function endpointOf(b: Binding): Endpoint {
  return { address: b.address, port: b.port };
}

function sameEndpoint(ep: Endpoint, rinfo: RemoteInfo): boolean {
  if (ep.port !== rinfo.port) return false;
  const a = ipToBytes(ep.address);
  const b = ipToBytes(rinfo.address);
  return a !== null && b !== null && a.equals(b);
}

function isPromiseLike<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function resolveHost(host: string, family: 0 | 4 | 6): Promise<{ address: string; family: number }> {
  return new Promise((resolve, reject) => {
    dnsLookup(host, { family }, (err, address, fam) => (err ? reject(err) : resolve({ address, family: fam })));
  });
}

/** dgram `lookup` that answers IP literals synchronously and defers only real names to DNS. */
function fastLookup(
  hostname: string,
  options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const fam = isIP(hostname);
  if (fam !== 0) {
    callback(null, hostname, fam);
    return;
  }
  const family = typeof options === 'number' ? options : ((options as { family?: number } | null)?.family ?? 0);
  dnsLookup(hostname, { family: family as 0 | 4 | 6 }, callback);
}
