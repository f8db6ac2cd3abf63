import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import type { Identity } from '../transport/identity.js';
import type { TransportNode } from '../transport/node.js';
import { encodePunch } from '../transport/tunnel/frames.js';
import { realTunnelClock, type Endpoint, type PeerInfo, type RemoteInfoLike, type TunnelClock } from '../transport/tunnel/tunnel.js';
import {
  BeaconType,
  decodeDiscoverReply,
  decodePunchCommand,
  encodeDiscover,
  encodePunchRequest,
  encodeSignedDiscover,
} from './beacon-wire.js';
import { NatError } from './errors.js';
import { isStunMessage, stunDiscover, type StunTransport } from './stun.js';

/**
 * The daemon side of NAT traversal (SPEC §7, wire reference §1.8–1.9): reflexive-address discovery
 * (beacon signed discover, STUN), NAT binding keepalive, beacon-coordinated hole punching, relay
 * fallback through the beacon and the upgrade of relayed peers to a direct path.
 *
 * It only steers: the tunnel keeps one authenticated context per peer whatever the path, so switching
 * between relay and direct never touches open streams. A path is trusted only after an authenticated
 * frame crossed it (a key exchange for a new peer, an authenticated ping for an existing one); PILP
 * probes (4 unauthenticated bytes) only say "try this endpoint".
 *
 * Daemon wiring (see test/natpunch/client-harness.ts for a working composition):
 *   let nat: NatTraversal | null = null;
 *   const node = new TransportNode({ ..., relayFallback: (peer) => nat?.relayFallback(peer) ?? false });
 *   await node.bind(listenHost, listenPort);
 *   nat = new NatTraversal({ node, identity, beacon, stunServers, endpointOverride });
 *   const reflexive = await nat.discover();            // register this (127.0.0.1:<port> if null/unspecified)
 *   const { node_id } = await registry.register(identity, { listenAddr: `${host}:${port}` });
 *   node.start(node_id); nat.start(node_id);
 *   on every resolve before a dial: nat.addPeer(peer, endpointFromResolve)   (instead of node.addPeer)
 *   nat.on('reflexive', ep => re-register);  pilotctl peers/info: nat.paths();  shutdown: nat.close() before node.close()
 */

/**
 * direct: a UDP path to the peer's endpoint that worked without a punch; punched: a UDP path selected after
 * PILP probes from that endpoint arrived, or after the peer had been relayed (an upgrade); relayed: via the beacon.
 */
export type NatPathKind = 'direct' | 'punched' | 'relayed';

/** What `pilotctl peers` / `info` show per peer. */
export interface PeerPath {
  node: number;
  path: NatPathKind;
  /** The peer's UDP endpoint (direct/punched) or the beacon (relayed); null while unknown. */
  endpoint: Endpoint | null;
  /** Last authenticated round trip (Control ping) in ms; null before the first one. */
  rtt: number | null;
  /** Wall-clock ms of the last change of path or endpoint. */
  changedAt: number;
  /** The tunnel has an authenticated key exchange with the peer. */
  established: boolean;
}

export interface NatTraversalOptions {
  /** The daemon's transport (bound; `start(nodeId)` is called on it before `NatTraversal.start`). */
  node: TransportNode;
  /** Signs the beacon discover (proof of key, SPEC §7). */
  identity: Pick<Identity, 'sign'>;
  /** The beacon (IP literal + port); null/absent: no punching, no relay. */
  beacon?: Endpoint | null;
  /** STUN servers (`host:port` or endpoints) for reflexive discovery (RFC 8489). */
  stunServers?: Array<Endpoint | string>;
  /** `--endpoint host:port`: our public endpoint is known; discovery is skipped. */
  endpointOverride?: Endpoint | null;
  /** Beacon discover + per-peer PILP/ping keepalive interval (default 20 s; NAT UDP timeouts are ≥ 30 s). */
  keepaliveMs?: number;
  /** How often a relayed peer is re-punched at first (default 5 s); doubles per failed attempt up to the max. */
  probeIntervalMs?: number;
  /** Cap of the re-punch backoff (default 60 s). */
  maxProbeIntervalMs?: number;
  /** A peer that never completes a key exchange (direct or relayed) is no longer punched after this (default 60 s). */
  giveUpMs?: number;
  /** A new peer without an authenticated exchange after this goes to the relay (default 4 s). */
  directTimeoutMs?: number;
  /** Authenticated ping timeout when confirming / checking a path (default 2 s). */
  pingTimeoutMs?: number;
  /** Consecutive failed keepalive pings on a direct path before falling back to the relay (default 2). */
  deadAfterFailures?: number;
  /** PILP probes per punch burst and their spacing (default 5 × 100 ms; v1 sends 3). */
  punchBurst?: number;
  punchSpacingMs?: number;
  /** Beacon discover reply wait per attempt and attempts (default 1500 ms × 3). */
  discoverTimeoutMs?: number;
  discoverAttempts?: number;
  /** Peers tracked (default 4096, as the tunnel); beyond, new peers are not steered. */
  maxPeers?: number;
  /** Punch bursts running at once (default 256); further punch commands are dropped and counted. */
  maxBursts?: number;
  /** Maintenance tick (default 500 ms). */
  tickMs?: number;
  clock?: TunnelClock;
  /** Wall clock (unix ms) for the signed discover timestamp and `changedAt`. */
  wallClock?: () => number;
  random?: (n: number) => Buffer;
  log?: Logger;
}

export interface NatTraversalEvents {
  /** Our reflexive endpoint was learned or changed (the daemon re-registers it). */
  reflexive: [endpoint: Endpoint];
  /** A peer's path kind or endpoint changed. */
  path: [info: PeerPath];
}

export interface NatStats {
  discovers_sent: number;
  discover_replies: number;
  stun_ok: number;
  stun_failed: number;
  punch_requests: number;
  punch_commands: number;
  probes_sent: number;
  probes_received: number;
  upgrades: number;
  upgrade_failures: number;
  relay_fallbacks: number;
  keepalive_failures: number;
  repunches: number;
  bursts_dropped: number;
  peers_untracked: number;
  peers_given_up: number;
  pings_failed: number;
}

interface PeerState {
  node: number;
  /** Endpoints worth probing (registry resolve, punch commands, roaming); most recent last, bounded. */
  candidates: Endpoint[];
  /** Endpoint keys a PILP arrived from (evidence a punch happened). */
  punchedFrom: Set<string>;
  /** Was relayed at some point: a later direct path is an upgrade, i.e. punched (by us or by the peer). */
  wasRelayed: boolean;
  kind: NatPathKind;
  endpoint: Endpoint | null;
  rtt: number | null;
  changedAt: number;
  established: boolean;
  addedAt: number;
  /** When the current direct attempt of a not yet established peer began (relay fallback after directTimeoutMs). */
  directSince: number;
  lastPunch: number;
  /** Current re-punch interval for a relayed peer (backs off while punches fail). */
  probeEvery: number;
  lastKeepalive: number;
  failures: number;
  /** An upgrade / check ping is in flight. */
  busy: boolean;
}

const MAX_CANDIDATES = 4;
const COMMAND_MATCH_MS = 3000;
const MAX_PENDING_REQUESTS = 64;

export class NatTraversal extends EventEmitter<NatTraversalEvents> {
  private readonly node: TransportNode;
  private readonly clock: TunnelClock;
  private readonly wall: () => number;
  private readonly random: (n: number) => Buffer;
  private readonly log: Logger;
  private readonly beacon: Endpoint | null;
  private readonly cfg: {
    keepaliveMs: number; probeIntervalMs: number; maxProbeIntervalMs: number; giveUpMs: number; directTimeoutMs: number; pingTimeoutMs: number; deadAfterFailures: number;
    punchBurst: number; punchSpacingMs: number; discoverTimeoutMs: number; discoverAttempts: number; maxPeers: number;
    maxBursts: number; tickMs: number;
  };
  private readonly peers = new Map<number, PeerState>();
  private readonly bursts = new Set<object>();
  private readonly pendingRequests: Array<{ target: number; at: number }> = [];
  private readonly discoverWaiters = new Set<(ep: Endpoint | null) => void>();
  private readonly pingTimers = new Set<object>();
  private readonly stunListeners = new Set<(msg: Buffer, from: { address: string; port: number }) => void>();
  private readonly counters: NatStats = {
    discovers_sent: 0, discover_replies: 0, stun_ok: 0, stun_failed: 0, punch_requests: 0, punch_commands: 0, probes_sent: 0,
    probes_received: 0, upgrades: 0, upgrade_failures: 0, relay_fallbacks: 0, keepalive_failures: 0, repunches: 0,
    bursts_dropped: 0, peers_untracked: 0, peers_given_up: 0, pings_failed: 0,
  };
  private readonly loggedOnce = new Set<string>();
  private nodeId: number | null = null;
  private reflexiveEp: Endpoint | null;
  private tickTimer: object | null = null;
  private lastBeaconKeepalive = -Infinity;
  private closed = false;
  private readonly detach: Array<() => void> = [];

  constructor(private readonly opts: NatTraversalOptions) {
    super();
    this.node = opts.node;
    this.clock = opts.clock ?? realTunnelClock;
    this.wall = opts.wallClock ?? Date.now;
    this.random = opts.random ?? randomBytes;
    this.log = opts.log ?? pino({ level: 'silent' });
    this.beacon = opts.beacon ? { host: opts.beacon.host, port: opts.beacon.port } : null;
    this.reflexiveEp = opts.endpointOverride ? { ...opts.endpointOverride } : null;
    this.cfg = {
      keepaliveMs: positive(opts.keepaliveMs, 20_000, 'keepaliveMs'),
      probeIntervalMs: positive(opts.probeIntervalMs, 5_000, 'probeIntervalMs'),
      maxProbeIntervalMs: Math.max(positive(opts.maxProbeIntervalMs, 60_000, 'maxProbeIntervalMs'), opts.probeIntervalMs ?? 5_000),
      giveUpMs: positive(opts.giveUpMs, 60_000, 'giveUpMs'),
      directTimeoutMs: positive(opts.directTimeoutMs, 4_000, 'directTimeoutMs'),
      pingTimeoutMs: positive(opts.pingTimeoutMs, 2_000, 'pingTimeoutMs'),
      deadAfterFailures: positive(opts.deadAfterFailures, 2, 'deadAfterFailures'),
      punchBurst: positive(opts.punchBurst, 5, 'punchBurst'),
      punchSpacingMs: positive(opts.punchSpacingMs, 100, 'punchSpacingMs'),
      discoverTimeoutMs: positive(opts.discoverTimeoutMs, 1500, 'discoverTimeoutMs'),
      discoverAttempts: positive(opts.discoverAttempts, 3, 'discoverAttempts'),
      maxPeers: positive(opts.maxPeers, 4096, 'maxPeers'),
      maxBursts: positive(opts.maxBursts, 256, 'maxBursts'),
      tickMs: positive(opts.tickMs, 500, 'tickMs'),
    };
    const onBeacon = (msg: Buffer, rinfo: RemoteInfoLike): void => this.onBeaconDatagram(msg, rinfo);
    const onPunch = (rinfo: RemoteInfoLike): void => this.onProbe(rinfo);
    const onPath = (node: number, info: PeerInfo): void => this.onTunnelPath(node, info);
    const onEstablished = (node: number): void => this.onEstablished(node);
    const onEvicted = (node: number): void => void this.peers.delete(node);
    this.node.on('beacon', onBeacon);
    this.node.tunnel.on('punch', onPunch);
    this.node.tunnel.on('path', onPath);
    this.node.tunnel.on('established', onEstablished);
    this.node.tunnel.on('evicted', onEvicted);
    this.detach.push(
      () => this.node.off('beacon', onBeacon),
      () => this.node.tunnel.off('punch', onPunch),
      () => this.node.tunnel.off('path', onPath),
      () => this.node.tunnel.off('established', onEstablished),
      () => this.node.tunnel.off('evicted', onEvicted),
    );
  }

  // ------------------------------------------------------------------------------------ discovery

  /** Our public endpoint as last learned (or the override); null before discovery. */
  reflexive(): Endpoint | null {
    return this.reflexiveEp && { ...this.reflexiveEp };
  }

  /**
   * Learn our reflexive endpoint from the tunnel socket: the override if set, else the beacon (signed
   * discover once we have a node ID, the v1 node-0 probe before), else the STUN servers in order.
   * Resolves null when nothing answered. Never rejects for network reasons.
   */
  async discover(): Promise<Endpoint | null> {
    this.assertOpen();
    if (this.opts.endpointOverride) return this.reflexive();
    if (this.beacon) {
      for (let i = 0; i < this.cfg.discoverAttempts && !this.closed; i++) {
        const ep = await this.beaconDiscover();
        if (ep) return ep;
      }
    }
    for (const server of this.opts.stunServers ?? []) {
      if (this.closed) break;
      try {
        const r = await stunDiscover(this.stunTransport(), server, { timeoutMs: this.cfg.discoverTimeoutMs * 2, randomBytes: this.random });
        this.counters.stun_ok++;
        this.noteReflexive({ host: r.address, port: r.port });
        return this.reflexive();
      } catch (err) {
        this.counters.stun_failed++;
        this.log.debug({ err: (err as Error).message }, 'nat: STUN discover failed');
      }
    }
    return null;
  }

  private beaconDiscover(): Promise<Endpoint | null> {
    return new Promise((resolve) => {
      let timer: object | null = null;
      const done = (ep: Endpoint | null): void => {
        this.discoverWaiters.delete(waiter);
        if (timer) this.clock.clearTimer(timer);
        resolve(ep);
      };
      const waiter = (ep: Endpoint | null): void => done(ep);
      this.discoverWaiters.add(waiter);
      timer = this.clock.setTimer(() => done(null), this.cfg.discoverTimeoutMs);
      this.sendDiscover();
    });
  }

  private sendDiscover(): void {
    if (!this.beacon) return;
    const msg = this.nodeId === null ? encodeDiscover(0) : encodeSignedDiscover(this.opts.identity, this.nodeId, this.wall());
    this.counters.discovers_sent++;
    this.sendRaw(msg, this.beacon);
  }

  /** STUN over the tunnel socket: replies arrive as 'beacon' datagrams (first byte < 0x10). */
  private stunTransport(): StunTransport {
    return {
      send: (msg, port, address) => this.node.udp.send(msg, port, address),
      subscribe: (listener) => {
        const l = (msg: Buffer, from: { address: string; port: number }): void => listener(msg, from);
        this.stunListeners.add(l);
        return () => void this.stunListeners.delete(l);
      },
    };
  }

  private noteReflexive(ep: Endpoint): void {
    const prev = this.reflexiveEp;
    if (this.opts.endpointOverride) return;
    if (prev && prev.host === ep.host && prev.port === ep.port) return;
    this.reflexiveEp = { host: ep.host, port: ep.port };
    // Our mapping moved (NAT rebooted / reconfigured): what failed before may work now.
    for (const st of this.peers.values()) st.probeEvery = this.cfg.probeIntervalMs;
    this.log.info({ endpoint: `${ep.host}:${ep.port}` }, 'nat: reflexive endpoint');
    this.emit('reflexive', { ...this.reflexiveEp });
  }

  // ------------------------------------------------------------------------------------ life cycle

  /** Begin as `nodeId` (after registration and `node.start(nodeId)`): bind at the beacon, keepalive, steering. */
  start(nodeId: number): void {
    this.assertOpen();
    if (this.nodeId !== null && this.nodeId !== nodeId) throw new NatError('node_changed', 'NatTraversal already started under another node ID');
    if (this.nodeId !== null) return;
    this.nodeId = nodeId;
    this.lastBeaconKeepalive = this.clock.now();
    this.sendDiscover(); // signed: binds us at the beacon (relay + punch service) and opens our NAT towards it
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    this.tickTimer = this.clock.setTimer(() => {
      this.tickTimer = null;
      try {
        this.tick();
      } catch (err) {
        this.logOnce('tick_error', err);
      }
      this.schedule();
    }, this.cfg.tickMs);
  }

  /** Stop every timer and listener; the transport stays the caller's. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.tickTimer) this.clock.clearTimer(this.tickTimer);
    this.tickTimer = null;
    for (const b of this.bursts) this.clock.clearTimer(b);
    this.bursts.clear();
    for (const w of [...this.discoverWaiters]) w(null);
    for (const p of this.pingTimers) this.clock.clearTimer(p);
    this.pingTimers.clear();
    this.discoverWaiters.clear();
    this.stunListeners.clear();
    for (const d of this.detach.splice(0)) d();
    this.peers.clear();
  }

  // ------------------------------------------------------------------------------------ peers

  /**
   * A peer was resolved (registry `resolve`): add it to the tunnel on its direct endpoint and start a
   * coordinated punch (beacon punch request + our PILPs). Call instead of `node.addPeer`; repeated calls
   * (every dial) are cheap. A peer already relayed stays relayed until a punch upgrades it.
   */
  addPeer(node: number, endpoint: Endpoint): void {
    this.assertOpen();
    const st = this.track(node);
    const info = this.node.tunnel.peer(node);
    if (st) addCandidate(st, endpoint);
    if (!info || !info.encrypted) {
      if (info?.path === 'relay' && this.beacon) this.node.tunnel.addPeer(node, endpoint, { relay: this.beacon });
      else this.node.tunnel.addPeer(node, endpoint);
    }
    if (st && (!info || this.clock.now() - st.lastPunch >= this.cfg.punchSpacingMs * this.cfg.punchBurst)) this.punch(st);
  }

  /**
   * TransportHost's `relayFallback` hook (v1: 3rd SYN timeout): move the peer to the beacon relay.
   * Returns true when the peer now uses the relay.
   */
  relayFallback(node: number): boolean {
    if (this.closed || !this.beacon || !this.node.tunnel.hasPeer(node)) return false;
    const st = this.track(node);
    if (this.node.tunnel.peer(node)?.path === 'relay') return true;
    return st ? this.toRelay(st, 'syn timeouts') : false;
  }

  /** Per-peer path state for `pilotctl peers` / `info`. */
  paths(): PeerPath[] {
    const out: PeerPath[] = [];
    for (const st of this.peers.values()) out.push(this.view(st));
    return out;
  }

  path(node: number): PeerPath | null {
    const st = this.peers.get(node);
    return st ? this.view(st) : null;
  }

  stats(): NatStats & { peers: number; bursts: number } {
    return { ...this.counters, peers: this.peers.size, bursts: this.bursts.size };
  }

  private track(node: number): PeerState | null {
    let st = this.peers.get(node);
    if (st) return st;
    if (this.peers.size >= this.cfg.maxPeers) {
      this.counters.peers_untracked++;
      this.logOnce('peers_full', new Error(`more than ${this.cfg.maxPeers} peers: not steering new ones`));
      return null;
    }
    const now = this.clock.now();
    st = {
      node, candidates: [], punchedFrom: new Set(), wasRelayed: false, kind: 'direct', endpoint: null, rtt: null, changedAt: this.wall(),
      established: false, addedAt: now, directSince: now, lastPunch: -Infinity, probeEvery: this.cfg.probeIntervalMs, lastKeepalive: now, failures: 0, busy: false,
    };
    this.peers.set(node, st);
    return st;
  }

  private view(st: PeerState): PeerPath {
    return { node: st.node, path: st.kind, endpoint: st.endpoint && { ...st.endpoint }, rtt: st.rtt, changedAt: st.changedAt, established: st.established };
  }

  /** Recompute kind/endpoint from the tunnel; emit when they changed. */
  private refresh(st: PeerState): void {
    const info = this.node.tunnel.peer(st.node);
    if (!info) return;
    const relayed = info.path === 'relay';
    const ep = relayed ? info.relay : info.endpoint;
    if (relayed) st.wasRelayed = true;
    const kind: NatPathKind = relayed ? 'relayed' : ep && (st.wasRelayed || st.punchedFrom.has(key(ep))) ? 'punched' : 'direct';
    const established = info.encrypted;
    if (kind === st.kind && sameEp(ep, st.endpoint) && established === st.established) return;
    const moved = kind !== st.kind || !sameEp(ep, st.endpoint);
    if (kind !== 'relayed') st.probeEvery = this.cfg.probeIntervalMs;
    st.kind = kind;
    st.endpoint = ep && { ...ep };
    st.established = established;
    if (moved) st.changedAt = this.wall();
    this.log.debug({ node: st.node, path: kind, endpoint: ep && `${ep.host}:${ep.port}` }, 'nat: peer path');
    this.emit('path', this.view(st));
  }

  // ------------------------------------------------------------------------------------ punching

  /** Coordinated punch: ask the beacon to command both sides, and probe every candidate ourselves. */
  private punch(st: PeerState): void {
    st.lastPunch = this.clock.now();
    if (this.beacon && this.nodeId !== null) {
      this.counters.punch_requests++;
      this.pendingRequests.push({ target: st.node, at: st.lastPunch });
      if (this.pendingRequests.length > MAX_PENDING_REQUESTS) this.pendingRequests.shift();
      this.sendRaw(encodePunchRequest(this.nodeId, st.node), this.beacon);
    }
    for (const c of st.candidates) this.burst(c);
  }

  /** Send `punchBurst` PILPs to `ep`, spaced (NATs need our outbound packet before theirs arrives). */
  private burst(ep: Endpoint): void {
    if (this.bursts.size >= this.cfg.maxBursts) {
      this.counters.bursts_dropped++;
      this.logOnce('bursts_full', new Error('too many punch bursts at once; dropping'));
      return;
    }
    let left = this.cfg.punchBurst;
    const handle: { t: object | null } = { t: null };
    const fire = (): void => {
      if (handle.t) this.bursts.delete(handle.t);
      if (this.closed) return;
      this.sendProbe(ep);
      if (--left > 0) {
        handle.t = this.clock.setTimer(fire, this.cfg.punchSpacingMs);
        this.bursts.add(handle.t);
      }
    };
    fire();
  }

  private sendProbe(ep: Endpoint): void {
    this.counters.probes_sent++;
    this.sendRaw(encodePunch(), ep);
  }

  private onBeaconDatagram(msg: Buffer, rinfo: RemoteInfoLike): void {
    if (this.closed) return;
    if (isStunMessage(msg)) {
      for (const l of this.stunListeners) l(msg, { address: rinfo.address, port: rinfo.port });
      return;
    }
    // Only our beacon may steer us (a forged punch command would make us spray probes).
    if (!this.beacon || rinfo.port !== this.beacon.port || rinfo.address !== this.beacon.host) return;
    try {
      if (msg[0] === BeaconType.DISCOVER_REPLY) {
        const ep = decodeDiscoverReply(msg);
        this.counters.discover_replies++;
        const e = { host: ep.address, port: ep.port };
        this.noteReflexive(e);
        for (const w of [...this.discoverWaiters]) w(e);
      } else if (msg[0] === BeaconType.PUNCH_COMMAND) {
        const ep = decodePunchCommand(msg);
        this.counters.punch_commands++;
        const e = { host: ep.address, port: ep.port };
        this.matchCommand(e);
        this.burst(e);
      }
    } catch (err) {
      this.logOnce('bad_beacon_message', err);
    }
  }

  /**
   * A punch command names an endpoint but not a node: the beacon answers our request at once, so the
   * oldest recent request of ours is the likely target. A wrong guess only costs probes and a failed
   * authenticated check, never a wrong path.
   */
  private matchCommand(ep: Endpoint): void {
    const now = this.clock.now();
    while (this.pendingRequests.length > 0) {
      const r = this.pendingRequests.shift()!;
      if (now - r.at > COMMAND_MATCH_MS) continue;
      const st = this.peers.get(r.target);
      if (st) addCandidate(st, ep);
      return;
    }
  }

  /** A PILP arrived: the path from `rinfo` works one way. Try it (authenticated) if it belongs to a peer. */
  private onProbe(rinfo: RemoteInfoLike): void {
    if (this.closed) return;
    this.counters.probes_received++;
    const ep = { host: rinfo.address, port: rinfo.port };
    const k = key(ep);
    const st = this.peerAt(k) ?? this.relayedPeerOnHost(ep.host);
    if (!st) return;
    if (st.punchedFrom.size >= MAX_CANDIDATES * 2) st.punchedFrom.clear();
    st.punchedFrom.add(k);
    addCandidate(st, ep);
    const info = this.node.tunnel.peer(st.node);
    if (!info) return;
    if (!info.encrypted) {
      // New peer: move it here; the key exchange this sends is what selects the path.
      if (info.path === 'relay' || !sameEp(info.endpoint, ep)) {
        this.burst(ep);
        st.directSince = this.clock.now();
        this.node.tunnel.addPeer(st.node, ep);
      }
      return this.refresh(st);
    }
    if (info.path === 'relay') return void this.tryUpgrade(st, ep);
    if (sameEp(info.endpoint, ep)) {
      st.failures = 0;
      this.refresh(st);
    }
  }

  /**
   * A PILP from an unknown port of an address where exactly one relayed peer has a candidate: that peer's
   * NAT maps per destination (symmetric), so the port it uses towards us is not the one the beacon or the
   * registry saw, and no candidate can name it. Taking the observed source is the only way to reach such a
   * peer directly (its packets pass our NAT once we have sent to its address). Safe: tryUpgrade uses the
   * path only after an authenticated ping crosses it, and reverts otherwise.
   */
  private relayedPeerOnHost(host: string): PeerState | null {
    let found: PeerState | null = null;
    for (const st of this.peers.values()) {
      if (!st.candidates.some((c) => c.host === host)) continue;
      const info = this.node.tunnel.peer(st.node);
      if (!info?.encrypted || info.path !== 'relay') continue;
      if (found) return null; // two relayed peers behind one address: ambiguous
      found = st;
    }
    return found;
  }

  private peerAt(k: string): PeerState | null {
    for (const st of this.peers.values()) {
      if (st.candidates.some((c) => key(c) === k)) return st;
      const info = this.node.tunnel.peer(st.node);
      if (info?.endpoint && key(info.endpoint) === k) return st;
    }
    return null;
  }

  /** Relayed → direct: switch, then prove the path with an authenticated ping; revert if it fails. */
  private async tryUpgrade(st: PeerState, ep: Endpoint): Promise<void> {
    if (st.busy || !this.node.started) return;
    st.busy = true;
    this.burst(ep); // the peer learns our side works too and switches itself
    try {
      this.node.tunnel.setPath(st.node, ep);
      const rtt = await this.ping(st.node);
      if (this.closed) return;
      const now = this.node.tunnel.peer(st.node);
      if (rtt !== null && now && now.path === 'direct') {
        st.rtt = rtt;
        st.failures = 0;
        st.lastKeepalive = this.clock.now();
        this.counters.upgrades++;
        this.log.info({ node: st.node, endpoint: `${ep.host}:${ep.port}` }, 'nat: relayed peer upgraded to a direct path');
      } else if (now && now.path === 'direct' && sameEp(now.endpoint, ep) && this.beacon) {
        this.counters.upgrade_failures++;
        this.node.tunnel.setPath(st.node, { relay: this.beacon });
      }
    } catch (err) {
      this.logOnce('upgrade_error', err);
    } finally {
      st.busy = false;
      st.lastPunch = this.clock.now();
      if (!this.closed) this.refresh(st);
    }
  }

  // ------------------------------------------------------------------------------------ relay

  private toRelay(st: PeerState, why: string): boolean {
    if (!this.beacon) return false;
    const info = this.node.tunnel.peer(st.node);
    if (!info) return false;
    if (info.path !== 'relay') {
      if (info.encrypted) this.node.tunnel.setPath(st.node, { relay: this.beacon });
      else {
        const ep = info.endpoint ?? st.candidates[st.candidates.length - 1];
        // addPeer re-sends our exchange on the new path; without an endpoint setPath keeps the queue waiting.
        if (ep) this.node.tunnel.addPeer(st.node, ep, { relay: this.beacon });
        else this.node.tunnel.setPath(st.node, { relay: this.beacon });
      }
      this.counters.relay_fallbacks++;
      this.log.info({ node: st.node, why }, 'nat: peer falls back to the beacon relay');
    }
    st.lastPunch = this.clock.now(); // keep probing from here on, every probeIntervalMs
    st.failures = 0;
    this.refresh(st);
    return true;
  }

  // ------------------------------------------------------------------------------------ tunnel events

  private onEstablished(node: number): void {
    if (this.closed) return;
    const st = this.track(node);
    if (!st) return;
    const info = this.node.tunnel.peer(node);
    if (info?.endpoint) addCandidate(st, info.endpoint);
    st.lastKeepalive = this.clock.now();
    this.refresh(st);
  }

  private onTunnelPath(node: number, info: PeerInfo): void {
    if (this.closed) return;
    const st = this.peers.get(node);
    if (!st) return;
    if (info.path === 'direct' && info.endpoint) addCandidate(st, info.endpoint);
    this.refresh(st);
  }

  // ------------------------------------------------------------------------------------ maintenance

  private tick(): void {
    if (this.closed || this.nodeId === null) return;
    const now = this.clock.now();
    if (this.beacon && now - this.lastBeaconKeepalive >= this.cfg.keepaliveMs) {
      // Signed discover: refreshes our beacon binding and NAT mapping, and tells us if our mapping moved.
      this.lastBeaconKeepalive = now;
      this.sendDiscover();
    } else if (!this.beacon && this.opts.stunServers?.length && !this.opts.endpointOverride && now - this.lastBeaconKeepalive >= this.cfg.keepaliveMs) {
      this.lastBeaconKeepalive = now;
      void this.discover();
    }
    for (const st of this.peers.values()) {
      const info = this.node.tunnel.peer(st.node);
      if (!info) {
        this.peers.delete(st.node);
        continue;
      }
      if (st.busy) continue;
      if (!info.encrypted) {
        if (now - st.addedAt >= this.cfg.giveUpMs) {
          this.peers.delete(st.node); // unreachable: stop spending probes (re-tracked if it ever answers)
          this.counters.peers_given_up++;
        } else if (info.path !== 'relay' && now - st.directSince >= this.cfg.directTimeoutMs && this.beacon) this.toRelay(st, 'no key exchange on the direct path');
        else if (now - st.lastPunch >= this.cfg.probeIntervalMs) this.punch(st);
        continue;
      }
      if (info.path === 'relay') {
        if (now - st.lastPunch >= st.probeEvery) {
          this.punch(st);
          st.probeEvery = Math.min(this.cfg.maxProbeIntervalMs, st.probeEvery * 2);
        }
        if (now - st.lastKeepalive >= this.cfg.keepaliveMs) void this.check(st, false);
      } else if (now - st.lastKeepalive >= this.cfg.keepaliveMs) {
        if (info.endpoint) this.sendProbe(info.endpoint); // keeps our NAT mapping towards the peer open
        void this.check(st, true);
      }
    }
  }

  /** Keepalive ping: RTT, and on a direct path liveness (re-punch, then relay). */
  private async check(st: PeerState, direct: boolean): Promise<void> {
    st.busy = true;
    st.lastKeepalive = this.clock.now();
    try {
      const rtt = await this.ping(st.node);
      if (this.closed) return;
      if (rtt !== null) {
        st.rtt = rtt;
        st.failures = 0;
        return;
      }
      if (!direct) return;
      st.failures++;
      this.counters.keepalive_failures++;
      if (st.failures >= this.cfg.deadAfterFailures && this.beacon) this.toRelay(st, 'direct path stopped answering');
      else {
        // Mapping lost? Re-punch at once and check again soon.
        this.counters.repunches++;
        this.punch(st);
        st.lastKeepalive = this.clock.now() - this.cfg.keepaliveMs + this.cfg.pingTimeoutMs;
      }
    } finally {
      st.busy = false;
      if (!this.closed) this.refresh(st);
    }
  }

  /** Authenticated round trip over the current path (Control ping), or null on timeout / error. */
  private ping(node: number): Promise<number | null> {
    if (!this.node.started) return Promise.resolve(null);
    return new Promise((resolve) => {
      let settled = false;
      const timer = this.clock.setTimer(() => finish(null), this.cfg.pingTimeoutMs);
      this.pingTimers.add(timer);
      const finish = (v: number | null): void => {
        if (settled) return;
        settled = true;
        this.clock.clearTimer(timer);
        this.pingTimers.delete(timer);
        if (v === null) this.counters.pings_failed++;
        resolve(v);
      };
      this.node.host.ping(node).then((rtt) => finish(rtt), () => finish(null));
    });
  }

  // ------------------------------------------------------------------------------------ helpers

  private sendRaw(msg: Buffer, to: Endpoint): void {
    try {
      this.node.udp.send(msg, to.port, to.host);
    } catch (err) {
      this.logOnce('send_failed', err);
    }
  }

  private logOnce(what: string, err: unknown): void {
    if (this.loggedOnce.has(what)) return;
    this.loggedOnce.add(what);
    this.log.warn({ what, err: err instanceof Error ? err.message : String(err) }, 'nat: (first of its kind)');
  }

  private assertOpen(): void {
    if (this.closed) throw new NatError('closed', 'NatTraversal is closed');
  }
}

function key(ep: Endpoint): string {
  return `${ep.host}|${ep.port}`;
}

function sameEp(a: Endpoint | null | undefined, b: Endpoint | null | undefined): boolean {
  return !!a && !!b && a.host === b.host && a.port === b.port;
}

function addCandidate(st: PeerState, ep: Endpoint): void {
  const i = st.candidates.findIndex((c) => sameEp(c, ep));
  if (i >= 0) st.candidates.splice(i, 1);
  st.candidates.push({ host: ep.host, port: ep.port });
  if (st.candidates.length > MAX_CANDIDATES) st.candidates.shift();
}

function positive(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v <= 0) throw new NatError('bad_option', `${name} must be a positive number`);
  return v;
}

/** Parse `host:port` (IPv6 in brackets) into an endpoint; throws NatError('bad_endpoint'). */
export function parseEndpoint(text: string): Endpoint {
  const i = text.lastIndexOf(':');
  const host = i > 0 ? text.slice(0, i).replace(/^\[(.*)\]$/, '$1') : '';
  const port = Number(text.slice(i + 1));
  if (!host || !Number.isInteger(port) || port < 1 || port > 0xffff) throw new NatError('bad_endpoint', `bad endpoint ${JSON.stringify(text)} (want host:port)`);
  return { host, port };
}
