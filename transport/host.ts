import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { Addr, BROADCAST_NODE, assertPort } from './address.js';
import { realClock, type Clock } from './clock.js';
import { PacketError } from './errors.js';
import { decodePacket, encodePacket, Flags, HEADER_LEN, MAX_PAYLOAD, Protocol, type Packet } from './packet.js';
import { resolveStreamConfig, type StreamConfig } from './stream/config.js';
import { Connection } from './stream/connection.js';
import { DatagramSocket } from './stream/datagram.js';
import { StreamError } from './stream/errors.js';
import { Listener } from './stream/listener.js';
import { PathMtu, type PmtuHost } from './stream/pmtu.js';
import { PerSourceLimiter, TokenBucket } from './stream/rate-limit.js';
import { Scheduler, type Timed } from './stream/scheduler.js';
import { BlockPool } from './stream/send-buffer.js';
import type { ConnectionHost, ConnectionInfo, FlushTarget } from './stream/types.js';

export type { ConnectionInfo } from './stream/types.js';
export type { StreamConfig } from './stream/config.js';
export { Connection } from './stream/connection.js';
export { Listener } from './stream/listener.js';
export { DatagramSocket } from './stream/datagram.js';

/** Default bytes the tunnel adds around a packet: PILS magic + sender id + nonce + GCM tag = 4+4+12+16. */
export const DEFAULT_TUNNEL_OVERHEAD = 36;

export interface HostOptions {
  /** Our node ID; our address is N:localNode on every network N. */
  localNode: number;
  /** Hand a fully encoded Pilot packet to the tunnel. peerNode 0xFFFFFFFF = broadcast datagram (the daemon fans out). */
  output: (peerNode: number, packet: Buffer) => void;
  clock?: Clock;
  /**
   * Admission hook run on inbound SYNs and datagrams before any state is created (SPEC §5):
   * true = allow; a string (or false) = refuse for that reason — dropped silently (no RST, no SYN-ACK),
   * counted per reason, and emitted as 'refused'.
   */
  admit?: (p: Packet) => boolean | string;
  /** Bytes the tunnel adds around a packet towards `peerNode` (default 36). */
  tunnelOverhead?: (peerNode: number) => number;
  /** Called at the relayFallbackAfter-th SYN timeout of a dial (v1: 3rd); return true if the peer now uses a relay. */
  relayFallback?: (peerNode: number) => boolean;
  /** Also run `admit` on inbound Control pings (default false: v1 answers every ping). */
  admitPings?: boolean;
  config?: Partial<StreamConfig>;
  log?: Logger;
  /** Randomness in [0,1) (default Math.random); inject for deterministic tests. */
  random?: () => number;
  /**
   * Set true if `output` is done with the packet buffer when it returns (e.g. it encrypts synchronously
   * into its own frame and copies anything it queues). Stream segments are then built in one reused
   * buffer instead of a fresh allocation each (saves allocation, GC and page faults per segment).
   */
  outputIsSynchronous?: boolean;
}

export interface ConnectOptions {
  timeoutMs?: number;
  srcPort?: number;
  noDelay?: boolean;
  allowHalfOpen?: boolean;
  signal?: AbortSignal;
}

export interface ListenOptions {
  backlog?: number;
  allowHalfOpen?: boolean;
}

export interface RefusedEvent {
  reason: string;
  protocol: number;
  src: Addr;
  srcPort: number;
  dstNet: number;
  dstPort: number;
}

export interface PathInfo {
  peer_node: number;
  /** Largest UDP payload confirmed to reach the peer and back. */
  udp_payload: number;
  /** Segment payload bytes used towards this peer. */
  mss: number;
  searching: boolean;
  probes_sent: number;
  black_holes: number;
}

export interface HostStats {
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Undecodable inbound packets, by PacketError code. */
  malformed: Record<string, number>;
  /** Inner packet whose destination is not us. */
  notForUs: number;
  /** Inner packet whose source node differs from the tunnel peer. */
  spoofedSource: number;
  unknownProtocol: number;
  /** Stream packets (non-SYN) for no known connection. */
  noConnection: number;
  /** Inbound SYNs/datagrams refused by admission, by reason. */
  refused: Record<string, number>;
  refusedTotal: number;
  synRateLimited: number;
  synRateLimitedSource: number;
  rstSent: number;
  rstNoListener: number;
  acceptQueueFull: number;
  connCapPort: number;
  connCapTotal: number;
  connectionsAccepted: number;
  connectionsDialed: number;
  connectionsActive: number;
  datagramsIn: number;
  datagramsOut: number;
  datagramsNoListener: number;
  pingsAnswered: number;
  pongsReceived: number;
  pmtuProbesSent: number;
  pmtuBlackHoles: number;
  outputErrors: number;
  internalErrors: number;
}

function newStats(): HostStats {
  return {
    packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, malformed: {}, notForUs: 0, spoofedSource: 0,
    unknownProtocol: 0, noConnection: 0, refused: {}, refusedTotal: 0, synRateLimited: 0, synRateLimitedSource: 0,
    rstSent: 0, rstNoListener: 0, acceptQueueFull: 0, connCapPort: 0, connCapTotal: 0, connectionsAccepted: 0,
    connectionsDialed: 0, connectionsActive: 0, datagramsIn: 0, datagramsOut: 0, datagramsNoListener: 0,
    pingsAnswered: 0, pongsReceived: 0, pmtuProbesSent: 0, pmtuBlackHoles: 0, outputErrors: 0, internalErrors: 0,
  };
}

const ZEROS = Buffer.alloc(MAX_PAYLOAD);
const NO_CRC = Object.freeze({ verifyChecksum: false });

/** A ping waiting for its pong. */
class PendingPing implements Timed {
  wakeAt = Infinity;
  heapIdx = -1;
  constructor(
    readonly id: number,
    readonly peerNode: number,
    readonly sentAt: number,
    readonly resolve: (rtt: number) => void,
    readonly reject: (e: Error) => void,
    private readonly onTimeout: (p: PendingPing) => void,
  ) {}
  onWake(): void {
    this.onTimeout(this);
  }
}

/** Periodic keepalive/idle sweep (v1: every 15 s), scheduled only while connections exist. */
class Sweeper implements Timed {
  wakeAt = Infinity;
  heapIdx = -1;
  constructor(private readonly run: (now: number) => void) {}
  onWake(now: number): void {
    this.run(now);
  }
}

/**
 * One per node: ports, listeners, connections, datagrams, Control ping and path MTU (SPEC §4, wire
 * reference §1.7). Packets come in through `input()` (already authenticated by the tunnel) and leave
 * through `output`. Events: 'refused' (RefusedEvent), 'datagram' (data, src, srcPort, dstPort) for
 * datagrams to ports nobody bound, 'pmtu' (peerNode, udpPayload), 'synTimeout' (peerNode, n).
 */
export class TransportHost extends EventEmitter implements ConnectionHost, PmtuHost {
  readonly localNode: number;
  readonly cfg: StreamConfig;
  readonly clock: Clock;
  readonly sched: Scheduler;
  readonly log: Logger | undefined;
  readonly blockPool = new BlockPool(256);
  readonly scratch: Buffer | null;
  private readonly output: (peerNode: number, packet: Buffer) => void;
  private readonly admitFn: ((p: Packet) => boolean | string) | undefined;
  private readonly overheadFn: (peerNode: number) => number;
  private readonly relayFallbackFn: ((peerNode: number) => boolean) | undefined;
  private readonly admitPings: boolean;
  private readonly rand: () => number;

  private readonly conns = new Map<number, Map<number, Connection>>();
  private connCount = 0;
  private readonly portCounts = new Map<number, number>();
  private readonly listeners_ = new Map<number, Listener>();
  private readonly dgrams = new Map<number, DatagramSocket>();
  private readonly paths = new Map<number, PathMtu>();
  private readonly pings = new Map<number, PendingPing | PathMtu>();
  private nextPingId = 1;
  private pendingPings = 0;
  private nextConnId = 1;
  private nextEphemeral = 49152;
  private dirtyList: FlushTarget[] = [];
  private flushScheduled = false;
  private localQueue: Buffer[] = [];
  private localScheduled = false;
  private readonly synGlobal: TokenBucket;
  private readonly synPerSource: PerSourceLimiter;
  private readonly sweeper: Sweeper;
  private readonly counters = newStats();
  private closed = false;
  private loggedOnce = new Set<string>();

  constructor(opts: HostOptions) {
    super();
    if (!Number.isInteger(opts.localNode) || opts.localNode < 0 || opts.localNode > 0xffffffff) {
      throw new StreamError('invalid_argument', `localNode out of range: ${opts.localNode}`);
    }
    this.localNode = opts.localNode;
    this.output = opts.output;
    this.clock = opts.clock ?? realClock;
    this.cfg = resolveStreamConfig(opts.config);
    this.sched = new Scheduler(this.clock);
    this.log = opts.log;
    this.admitFn = opts.admit;
    this.overheadFn = opts.tunnelOverhead ?? (() => DEFAULT_TUNNEL_OVERHEAD);
    this.relayFallbackFn = opts.relayFallback;
    this.admitPings = opts.admitPings ?? false;
    this.rand = opts.random ?? Math.random;
    this.scratch = opts.outputIsSynchronous ? Buffer.allocUnsafeSlow(HEADER_LEN + MAX_PAYLOAD) : null;
    const now = this.clock.now();
    this.synGlobal = new TokenBucket(this.cfg.synRateGlobal, this.cfg.synRateGlobal, now);
    this.synPerSource = new PerSourceLimiter(this.cfg.synRatePerSource, this.cfg.synRateSourcesMax);
    this.sweeper = new Sweeper((t) => this.sweep(t));
  }

  // ======================================================================================
  // Inbound
  // ======================================================================================

  /**
   * An inner packet from the tunnel. The host keeps views into `packet` (received data is not copied), so
   * the caller must not reuse the buffer. Bad bytes are counted and dropped; never throws.
   * `authenticated`: the packet came out of an AEAD-authenticated frame (PILS), so its CRC-32 is not
   * re-verified (integrity is already guaranteed; saves ~19 µs per 64 KiB). Plaintext (PILT) → false.
   */
  input(packet: Buffer, fromPeer: number, authenticated = false): void {
    if (this.closed) return;
    const c = this.counters;
    c.packetsIn++;
    c.bytesIn += packet.length;
    let p: Packet;
    try {
      p = decodePacket(packet, authenticated ? NO_CRC : undefined);
    } catch (e) {
      const code = e instanceof PacketError ? e.code : 'undecodable';
      c.malformed[code] = (c.malformed[code] ?? 0) + 1;
      return;
    }
    try {
      if (p.srcNode !== fromPeer) {
        c.spoofedSource++;
        return;
      }
      if (p.dstNode !== this.localNode && !(p.protocol === Protocol.DATAGRAM && p.dstNode === BROADCAST_NODE)) {
        c.notForUs++;
        return;
      }
      switch (p.protocol) {
        case Protocol.STREAM:
          this.onStream(p);
          return;
        case Protocol.DATAGRAM:
          this.onDatagram(p);
          return;
        case Protocol.CONTROL:
          this.onControl(p);
          return;
        default:
          c.unknownProtocol++;
      }
    } catch (e) {
      c.internalErrors++;
      this.logOnce('input_error', e);
    }
  }

  private onStream(p: Packet): void {
    const key = p.dstPort * 65536 + p.srcPort;
    const peer = this.conns.get(p.srcNode);
    const conn = peer?.get(key);
    const isSyn = (p.flags & (Flags.SYN | Flags.ACK | Flags.RST)) === Flags.SYN;
    if (conn) {
      // A fresh SYN on a 4-tuple that is finishing (TIME_WAIT) starts a new connection (ISN is always 0).
      if (isSyn && conn.isTimeWaitOrClosed) conn.reset('connection_reset', 'replaced by a new connection', false);
      else {
        conn.onPacket(p);
        return;
      }
    }
    if (!isSyn) {
      this.counters.noConnection++;
      return;
    }
    this.onSyn(p);
  }

  private onSyn(p: Packet): void {
    const c = this.counters;
    const now = this.clock.now();
    // Cheap checks first (SYN flood protection, v1 §1.7): silent drops.
    if (!this.synGlobal.take(now)) {
      c.synRateLimited++;
      return;
    }
    if (!this.synPerSource.take(p.srcNode, now)) {
      c.synRateLimitedSource++;
      return;
    }
    // Admission before anything reveals whether the port is open (SPEC §5).
    if (!this.admitted(p)) return;
    const l = this.listeners_.get(p.dstPort);
    if (!l || l.closed) {
      c.rstNoListener++;
      this.sendRstFor(p);
      return;
    }
    if ((this.portCounts.get(p.dstPort) ?? 0) >= this.cfg.maxConnsPerPort) {
      c.connCapPort++;
      this.sendRstFor(p);
      return;
    }
    if (this.connCount >= this.cfg.maxConnsTotal) {
      c.connCapTotal++;
      this.sendRstFor(p);
      return;
    }
    if (l.full) {
      c.acceptQueueFull++;
      this.sendRstFor(p);
      return;
    }
    const conn = new Connection(this, {
      id: this.allocConnId(),
      peerNode: p.srcNode,
      remote: new Addr(p.srcNet, p.srcNode),
      remotePort: p.srcPort,
      localPort: p.dstPort,
      initiator: false,
      allowHalfOpen: l.allowHalfOpen,
    });
    this.register(conn);
    this.ensurePath(p.srcNode);
    conn.acceptSyn(p);
    c.connectionsAccepted++;
    l.offer(conn);
  }

  private admitted(p: Packet): boolean {
    if (!this.admitFn) return true;
    let r: boolean | string;
    try {
      r = this.admitFn(p);
    } catch (e) {
      this.logOnce('admit_error', e);
      r = 'admit_error';
    }
    if (r === true) return true;
    const reason = typeof r === 'string' && r.length > 0 ? r : 'refused';
    const c = this.counters;
    c.refused[reason] = (c.refused[reason] ?? 0) + 1;
    c.refusedTotal++;
    if (this.listenerCount('refused') > 0) {
      const ev: RefusedEvent = { reason, protocol: p.protocol, src: new Addr(p.srcNet, p.srcNode), srcPort: p.srcPort, dstNet: p.dstNet, dstPort: p.dstPort };
      this.emit('refused', ev);
    }
    return false;
  }

  private onDatagram(p: Packet): void {
    if (!this.admitted(p)) return;
    const c = this.counters;
    c.datagramsIn++;
    const src = new Addr(p.srcNet, p.srcNode);
    const s = this.dgrams.get(p.dstPort);
    if (s) {
      s.emit('message', p.payload, src, p.srcPort, p.dstPort);
      return;
    }
    c.datagramsNoListener++;
    this.emit('datagram', p.payload, src, p.srcPort, p.dstPort);
  }

  private onControl(p: Packet): void {
    if (p.flags & Flags.ACK) {
      // A pong: same payload, seq = our id, ack = id + 1 (v1 §1.3).
      const id = p.seq;
      const entry = this.pings.get(id);
      if (!entry || entry.peerNode !== p.srcNode || ((p.ack - p.seq) | 0) !== 1) return;
      this.counters.pongsReceived++;
      const now = this.clock.now();
      if (entry instanceof PathMtu) {
        entry.onPong(id, now);
      } else {
        this.pings.delete(id);
        this.sched.remove(entry);
        entry.resolve(now - entry.sentAt);
      }
      return;
    }
    if (p.dstPort !== 0) return;
    if (this.admitPings && !this.admitted(p)) return;
    this.counters.pingsAnswered++;
    const pong = encodePacket(
      {
        flags: Flags.ACK, protocol: Protocol.CONTROL, srcNet: p.dstNet, srcNode: this.localNode, dstNet: p.srcNet,
        dstNode: p.srcNode, srcPort: 0, dstPort: p.srcPort, seq: p.seq, ack: (p.seq + 1) >>> 0, window: 0,
      },
      p.payload,
    );
    this.sendPacket(p.srcNode, pong);
  }

  private sendRstFor(p: Packet): void {
    const rst = encodePacket({
      flags: Flags.RST, protocol: Protocol.STREAM, srcNet: p.dstNet, srcNode: this.localNode, dstNet: p.srcNet,
      dstNode: p.srcNode, srcPort: p.dstPort, dstPort: p.srcPort, seq: 0, ack: 0, window: 0,
    });
    this.sendPacket(p.srcNode, rst);
  }

  // ======================================================================================
  // Public API
  // ======================================================================================

  listen(port: number, opts: ListenOptions = {}): Listener {
    this.assertOpen();
    assertPort(port);
    if (port === 0) throw new StreamError('invalid_argument', 'port 0 is the ping port');
    if (this.listeners_.has(port)) throw new StreamError('port_in_use', `port ${port} already bound`);
    const backlog = opts.backlog ?? this.cfg.acceptBacklog;
    const l = new Listener(port, backlog, opts.allowHalfOpen ?? false, (x) => {
      if (this.listeners_.get(x.port) === x) this.listeners_.delete(x.port);
    });
    this.listeners_.set(port, l);
    return l;
  }

  connect(dst: Addr, port: number, opts: ConnectOptions = {}): Promise<Connection> {
    if (this.closed) return Promise.reject(new StreamError('host_closed', 'host closed'));
    try {
      assertPort(port);
      if (dst.isBroadcast()) throw new StreamError('invalid_argument', 'cannot open a stream to a broadcast address');
      if (opts.srcPort !== undefined) assertPort(opts.srcPort);
    } catch (e) {
      return Promise.reject(e);
    }
    const srcPort = opts.srcPort ?? this.allocEphemeral();
    if (srcPort < 0) return Promise.reject(new StreamError('no_ephemeral_port', 'no free ephemeral port'));
    if (this.conns.get(dst.node)?.has(srcPort * 65536 + port)) {
      return Promise.reject(new StreamError('port_in_use', `a connection ${srcPort} → ${dst.toString()}:${port} already exists`));
    }
    if (opts.signal?.aborted) return Promise.reject(new StreamError('dial_aborted', 'dial aborted'));
    const conn = new Connection(this, {
      id: this.allocConnId(),
      peerNode: dst.node,
      remote: dst,
      remotePort: port,
      localPort: srcPort,
      initiator: true,
      noDelay: opts.noDelay,
      allowHalfOpen: opts.allowHalfOpen,
    });
    this.register(conn);
    this.ensurePath(dst.node);
    this.counters.connectionsDialed++;
    return new Promise<Connection>((resolve, reject) => {
      const signal = opts.signal;
      const onAbort = (): void => conn.abortDial('dial aborted');
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => signal?.removeEventListener('abort', onAbort);
      conn.startDial(
        opts.timeoutMs,
        (c) => {
          done();
          resolve(c);
        },
        (e) => {
          done();
          reject(e);
        },
      );
    });
  }

  bindDatagram(port: number): DatagramSocket {
    this.assertOpen();
    assertPort(port);
    if (port === 0) throw new StreamError('invalid_argument', 'port 0 is the ping port');
    if (this.dgrams.has(port)) throw new StreamError('port_in_use', `datagram port ${port} already bound`);
    const s = new DatagramSocket(
      port,
      (dst, dstPort, data, srcPort) => this.sendDatagram(dst, dstPort, data, srcPort),
      (x) => {
        if (this.dgrams.get(x.port) === x) this.dgrams.delete(x.port);
      },
    );
    this.dgrams.set(port, s);
    return s;
  }

  /**
   * Send one datagram (protocol 2: flags 0, seq/ack/window 0). Without `srcPort` a fresh ephemeral port is
   * used per send (v1). A broadcast destination (node 0xFFFFFFFF) is handed to `output` with peer
   * 0xFFFFFFFF: the daemon fans it out to the network's members.
   */
  sendDatagram(dst: Addr, dstPort: number, data: Uint8Array, srcPort?: number): void {
    this.assertOpen();
    assertPort(dstPort);
    if (data.length > MAX_PAYLOAD) throw new StreamError('invalid_argument', `datagram of ${data.length} bytes exceeds ${MAX_PAYLOAD}`);
    const sp = srcPort ?? this.rotateEphemeral();
    const pkt = encodePacket(
      {
        flags: 0, protocol: Protocol.DATAGRAM, srcNet: dst.network, srcNode: this.localNode, dstNet: dst.network,
        dstNode: dst.node, srcPort: sp, dstPort, seq: 0, ack: 0, window: 0,
      },
      data,
    );
    this.counters.datagramsOut++;
    this.sendPacket(dst.node, pkt);
  }

  /** Control-protocol ping (port 0); resolves with the RTT in ms. `size` = payload bytes. */
  ping(peerNode: number, size = 0): Promise<number> {
    if (this.closed) return Promise.reject(new StreamError('host_closed', 'host closed'));
    if (!Number.isInteger(size) || size < 0 || size > MAX_PAYLOAD) {
      return Promise.reject(new StreamError('invalid_argument', `ping size must be 0..${MAX_PAYLOAD}`));
    }
    if (this.pendingPings >= this.cfg.maxPendingPings) {
      return Promise.reject(new StreamError('too_many_pings', `${this.pendingPings} pings pending`));
    }
    return new Promise<number>((resolve, reject) => {
      const id = this.allocPingId();
      const now = this.clock.now();
      const done = (): void => {
        this.pendingPings--;
      };
      const pp = new PendingPing(
        id,
        peerNode,
        now,
        (rtt) => (done(), resolve(rtt)),
        (e) => (done(), reject(e)),
        (x) => {
          this.pings.delete(x.id);
          x.reject(new StreamError('ping_timeout', `no pong from node ${peerNode}`));
        },
      );
      this.pendingPings++;
      this.pings.set(id, pp);
      this.sched.schedule(pp, now + this.cfg.pingTimeoutMs);
      this.sendPing(peerNode, id, size);
    });
  }

  /** Reset every connection with that peer now (revocation, tunnel loss): apps see 'peer_closed'. */
  closePeer(peerNode: number, reason: string): void {
    const peer = this.conns.get(peerNode);
    if (peer) for (const c of [...peer.values()]) c.reset('peer_closed', `peer closed: ${reason}`, true);
    for (const [id, e] of [...this.pings]) {
      if (e instanceof PendingPing && e.peerNode === peerNode) {
        this.pings.delete(id);
        this.sched.remove(e);
        e.reject(new StreamError('peer_closed', `peer closed: ${reason}`));
      }
    }
    const path = this.paths.get(peerNode);
    if (path) {
      path.close();
      this.paths.delete(peerNode);
    }
  }

  connections(): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    for (const peer of this.conns.values()) for (const c of peer.values()) out.push(c.info());
    return out;
  }

  /** Live connection objects (for the daemon's IPC bridge and tests). */
  connectionList(): Connection[] {
    const out: Connection[] = [];
    for (const peer of this.conns.values()) for (const c of peer.values()) out.push(c);
    return out;
  }

  stats(): HostStats {
    const s = this.counters;
    return { ...s, malformed: { ...s.malformed }, refused: { ...s.refused }, connectionsActive: this.connCount };
  }

  /** Path-MTU state towards a peer (null if we never talked to it). */
  pathInfo(peerNode: number): PathInfo | null {
    const p = this.paths.get(peerNode);
    if (!p) return null;
    return {
      peer_node: peerNode, udp_payload: p.confirmed, mss: this.mssFor(peerNode), searching: p.isSearching,
      probes_sent: p.probesSent, black_holes: p.blackHoles,
    };
  }

  /** FIN every connection, close listeners and sockets, reject pending pings, free every timer. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const l of [...this.listeners_.values()]) l.close();
    for (const s of [...this.dgrams.values()]) s.close();
    for (const c of this.connectionList()) c.shutdown();
    this.closed = true;
    for (const e of this.pings.values()) if (e instanceof PendingPing) e.reject(new StreamError('host_closed', 'host closed'));
    this.pings.clear();
    for (const p of this.paths.values()) p.close();
    this.paths.clear();
    this.sched.close();
    this.dirtyList = [];
    this.localQueue = [];
  }

  // ======================================================================================
  // ConnectionHost / PmtuHost (engine-internal; not part of the public contract)
  // ======================================================================================

  /** @internal (ConnectionHost / PmtuHost) */
  sendPacket(peerNode: number, packet: Buffer): void {
    if (this.closed) return;
    const c = this.counters;
    c.packetsOut++;
    c.bytesOut += packet.length;
    if ((packet[0]! & Flags.RST) !== 0 && packet[1] === Protocol.STREAM) c.rstSent++;
    if (peerNode === this.localNode) {
      this.deliverLocally(packet);
      return;
    }
    try {
      this.output(peerNode, packet);
    } catch (e) {
      c.outputErrors++;
      this.logOnce('output_error', e);
    }
  }

  /** @internal (ConnectionHost / PmtuHost) */
  mssFor(peerNode: number): number {
    if (peerNode === this.localNode) return this.mssOf(peerNode, this.cfg.maxUdpPayload); // in-process loopback
    const p = this.paths.get(peerNode);
    return this.mssOf(peerNode, p ? p.confirmed : this.cfg.initialUdpPayload);
  }

  /** @internal (ConnectionHost / PmtuHost) */
  baseMssFor(peerNode: number): number {
    return this.mssOf(peerNode, this.cfg.initialUdpPayload);
  }

  /** @internal (ConnectionHost / PmtuHost) */
  markDirty(conn: FlushTarget): void {
    if (conn.dirty) return;
    conn.dirty = true;
    this.dirtyList.push(conn);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.defer(this.flushAll);
    }
  }

  /** @internal (ConnectionHost / PmtuHost) */
  connectionClosed(conn: object): void {
    const c = conn as Connection;
    const peer = this.conns.get(c.peerNode);
    const key = c.localPort * 65536 + c.remotePort;
    if (!peer || peer.get(key) !== c) return;
    peer.delete(key);
    if (peer.size === 0) this.conns.delete(c.peerNode);
    this.connCount--;
    const n = (this.portCounts.get(c.localPort) ?? 1) - 1;
    if (n <= 0) this.portCounts.delete(c.localPort);
    else this.portCounts.set(c.localPort, n);
  }

  /** @internal (ConnectionHost / PmtuHost) */
  suspectBlackHole(peerNode: number): void {
    const p = this.paths.get(peerNode);
    if (!p || p.confirmed <= p.base) return;
    this.counters.pmtuBlackHoles++;
    this.log?.warn({ peer: peerNode, pmtu: p.confirmed }, 'repeated loss of full-size segments: falling back to the base packet size');
    p.blackHole(this.clock.now());
  }

  /** @internal (ConnectionHost / PmtuHost) */
  synTimeout(peerNode: number, n: number): boolean {
    if (this.listenerCount('synTimeout') > 0) this.emit('synTimeout', peerNode, n);
    if (n !== this.cfg.relayFallbackAfter || !this.relayFallbackFn) return false;
    try {
      return this.relayFallbackFn(peerNode) === true;
    } catch (e) {
      this.logOnce('relay_fallback_error', e);
      return false;
    }
  }

  /** @internal (ConnectionHost / PmtuHost) */
  random(): number {
    return this.rand();
  }

  /** @internal (ConnectionHost / PmtuHost) */
  sendProbe(peerNode: number, udpSize: number, path: PathMtu): number {
    const id = this.allocPingId();
    this.pings.set(id, path);
    this.counters.pmtuProbesSent++;
    const payload = Math.max(0, Math.min(MAX_PAYLOAD, udpSize - this.overheadFn(peerNode) - HEADER_LEN));
    this.sendPing(peerNode, id, payload);
    return id;
  }

  /** @internal (ConnectionHost / PmtuHost) */
  forgetProbe(id: number): void {
    if (this.pings.get(id) instanceof PathMtu) this.pings.delete(id);
  }

  /** @internal (ConnectionHost / PmtuHost) */
  pmtuChanged(peerNode: number, udpSize: number): void {
    this.log?.debug({ peer: peerNode, pmtu: udpSize }, 'path MTU');
    const mss = this.mssFor(peerNode);
    const peer = this.conns.get(peerNode);
    if (peer) for (const c of peer.values()) c.onMssChange(mss);
    if (this.listenerCount('pmtu') > 0) this.emit('pmtu', peerNode, udpSize);
  }

  // ======================================================================================
  // Internals
  // ======================================================================================

  private mssOf(peerNode: number, udpSize: number): number {
    const m = udpSize - this.overheadFn(peerNode) - HEADER_LEN;
    return m < 64 ? 64 : m > MAX_PAYLOAD ? MAX_PAYLOAD : m;
  }

  private sendPing(peerNode: number, id: number, size: number): void {
    const pkt = encodePacket(
      {
        flags: 0, protocol: Protocol.CONTROL, srcNet: 0, srcNode: this.localNode, dstNet: 0, dstNode: peerNode,
        srcPort: 0, dstPort: 0, seq: id, ack: 0, window: 0,
      },
      ZEROS.subarray(0, size),
    );
    this.sendPacket(peerNode, pkt);
  }

  private register(conn: Connection): void {
    let peer = this.conns.get(conn.peerNode);
    if (!peer) {
      peer = new Map();
      this.conns.set(conn.peerNode, peer);
    }
    peer.set(conn.localPort * 65536 + conn.remotePort, conn);
    this.connCount++;
    this.portCounts.set(conn.localPort, (this.portCounts.get(conn.localPort) ?? 0) + 1);
    if (this.sweeper.heapIdx < 0) this.sched.schedule(this.sweeper, this.clock.now() + this.cfg.sweepIntervalMs);
  }

  private ensurePath(peerNode: number): void {
    if (this.paths.has(peerNode) || peerNode === this.localNode) return;
    if (this.paths.size >= 65536) {
      // Bounded: forget the oldest path with no connections.
      for (const [n, p] of this.paths) {
        if (!this.conns.has(n)) {
          p.close();
          this.paths.delete(n);
          break;
        }
      }
    }
    const p = new PathMtu(peerNode, this.cfg, this);
    this.paths.set(peerNode, p);
    if (this.cfg.pmtuProbing) p.start(this.clock.now());
  }

  private sweep(now: number): void {
    for (const c of this.connectionList()) c.sweep(now);
    if (this.connCount > 0) this.sched.schedule(this.sweeper, now + this.cfg.sweepIntervalMs);
  }

  private readonly flushAll = (): void => {
    this.flushScheduled = false;
    const list = this.dirtyList;
    this.dirtyList = [];
    for (const t of list) {
      try {
        t.flush();
      } catch (e) {
        this.counters.internalErrors++;
        this.logOnce('flush_error', e);
      }
    }
  };

  private deliverLocally(packet: Buffer): void {
    this.localQueue.push(packet);
    if (this.localScheduled) return;
    this.localScheduled = true;
    this.defer(() => {
      this.localScheduled = false;
      const q = this.localQueue;
      this.localQueue = [];
      for (const p of q) this.input(p, this.localNode);
    });
  }

  private defer(fn: () => void): void {
    if (this.clock.defer) this.clock.defer(fn);
    else setImmediate(fn);
  }

  private allocConnId(): number {
    const id = this.nextConnId;
    this.nextConnId = this.nextConnId >= 0xffffffff ? 1 : this.nextConnId + 1;
    return id;
  }

  private allocPingId(): number {
    for (;;) {
      const id = this.nextPingId;
      this.nextPingId = this.nextPingId >= 0xffffffff ? 1 : this.nextPingId + 1;
      if (!this.pings.has(id)) return id;
    }
  }

  /** Sequential ephemeral ports with wrap, skipping ports in use (v1 §1.2). Returns −1 if none is free. */
  private allocEphemeral(): number {
    const first = 49152;
    const span = 65536 - first;
    for (let i = 0; i < span; i++) {
      const port = this.nextEphemeral;
      this.nextEphemeral = port >= 65535 ? first : port + 1;
      if (!this.portCounts.has(port) && !this.listeners_.has(port) && !this.dgrams.has(port)) return port;
    }
    return -1;
  }

  private rotateEphemeral(): number {
    const port = this.nextEphemeral;
    this.nextEphemeral = port >= 65535 ? 49152 : port + 1;
    return port;
  }

  private assertOpen(): void {
    if (this.closed) throw new StreamError('host_closed', 'host closed');
  }

  private logOnce(key: string, e: unknown): void {
    if (this.loggedOnce.has(key)) return;
    this.loggedOnce.add(key);
    this.log?.error({ err: e }, `transport host: ${key} (logged once)`);
  }
}
