import { Duplex } from 'node:stream';
import { Addr } from '../address.js';
import { Flags, HEADER_LEN, Protocol, type Packet } from '../packet.js';
import { toWire, unwrapSeq } from '../seq.js';
import { BbrController } from './bbr.js';
import type { AckEvent, CongestionController, RateSample } from './cc.js';
import { StreamError } from './errors.js';
import { Reassembly, InsertResult } from './reassembly.js';
import { RenoController } from './reno.js';
import { RttEstimator } from './rtt.js';
import { sackBlockCount, sackLeft, sackRight, sackSafeLength, SACK_MAGIC_0, SACK_MAX_BLOCKS, SACK_HEADER_LEN, SACK_BLOCK_LEN } from './sack.js';
import { Scoreboard, Seg, SegState } from './scoreboard.js';
import type { Timed } from './scheduler.js';
import { SendBuffer } from './send-buffer.js';
import type { ConnectionHost, ConnectionInfo, FlushTarget } from './types.js';
import { HeaderTemplate, seal } from './wire.js';

/** Window field unit (wire reference §1.3: the window counts 4096-byte slots). */
export const WINDOW_UNIT = 4096;
/** How far beyond the advertised window the receiver still buffers (probe bytes, v1 senders that ignore window 0). */
const RECV_SLACK = 128 * 1024;
/** Highest ACK-reported ranges per ACK train (4 blocks per SACK packet). */
const MAX_SACK_PACKETS = 4;
/** Received in-order payloads averaging at most this many bytes are joined into one push per turn. */
const JOIN_BELOW = 2048;
const DUP_THRESH = 3;
/** Pacing: send while the pacing clock is at most this far ahead of now; catch up at most this much after idling. */
const PACING_QUANTUM_MS = 1;
const PACING_CREDIT_MS = 2;

export interface ConnectionOptions {
  id: number;
  peerNode: number;
  remote: Addr;
  remotePort: number;
  localPort: number;
  initiator: boolean;
  noDelay?: boolean;
  allowHalfOpen?: boolean;
}

/**
 * One reliable, ordered byte stream (wire reference §1.7, SPEC §4), exposed as a Node Duplex.
 *
 * Send side: bytes are copied into a SendBuffer and cut into segments at transmit time; a Scoreboard
 * tracks what is in flight for SACK/RACK loss recovery, RTO (RFC 6298) and delivery-rate samples for the
 * congestion controller (BBR-like by default), which also sets the pacing rate.
 * Receive side: in-order data is pushed to the Readable at once (a view into the received packet); the
 * advertised window is what is left of recvBuffer after what the application has not read yet, so a
 * reader that stops reading closes the window of this connection only.
 * All timers are deadlines on this object, driven by the host's single scheduler.
 */
export class Connection extends Duplex implements Timed, FlushTarget {
  readonly id: number;
  readonly remote: Addr;
  readonly remotePort: number;
  readonly localPort: number;
  /** @internal */ readonly peerNode: number;
  /** @internal */ readonly initiator: boolean;

  // --- scheduler / host plumbing ---
  wakeAt = Infinity;
  heapIdx = -1;
  dirty = false;
  private readonly host: ConnectionHost;
  private readonly tpl: HeaderTemplate;
  private readonly cfg: ConnectionHost['cfg'];
  private readonly res: number;

  // --- lifecycle ---
  private established = false;
  private dialing = false;
  /** Removed from the host: no more packets in or out. */
  gone = false;
  private timeWait = false;
  private dialResolve: ((c: Connection) => void) | null = null;
  private dialReject: ((e: Error) => void) | null = null;
  private noDelay: boolean;

  // --- send state (absolute sequence numbers; SYN is seq isn (0 in v1), data starts at isn + 1) ---
  private readonly isn: number;
  private sndUna = 0;
  private sndNxt = 0;
  private readonly sendBuf: SendBuffer;
  private readonly sb = new Scoreboard();
  private peerWnd = 0;
  private wl1 = -1;
  private wl2 = -1;
  private finQueued = false;
  private finSent = false;
  private finAcked = false;
  private finSeq = -1;
  private finTxTime = 0;
  private finalCb: ((err?: Error | null) => void) | null = null;
  private pendingChunk: Uint8Array | null = null;
  private pendingOff = 0;
  private pendingCb: ((err?: Error | null) => void) | null = null;
  private pendingChunks: Uint8Array[] | null = null;

  // congestion control, RTT, loss recovery
  private readonly cc: CongestionController;
  private readonly rtt: RttEstimator;
  private inRecovery = false;
  private recoveryPoint = 0;
  private dupAcks = 0;
  private consecutiveRtos = 0;
  private tlpOutstanding = false;
  private lastTxTime = 0;
  private lastAckTime = 0;
  // RACK
  private rackXmitTs = -1;
  private rackEndSeq = 0;
  private rackRtt = 0;
  private rackFack = 0;
  private reorderSeen = false;
  private reoWndMult = 1;
  // delivery-rate estimation (per connection)
  private delivered = 0;
  private deliveredTime = 0;
  private firstSentTime = 0;
  private appLimitedUntil = 0;
  // per-ACK scratch for the rate sample
  private rsPriorDelivered = -1;
  private rsPriorTime = 0;
  private rsSendElapsed = 0;
  private rsAckElapsed = 0;
  private rsAppLimited = false;
  private rsRtt = -1;
  private rsNewest: Seg | null = null;
  private ackDelivered = 0;
  private readonly rateSample: RateSample = { delivered: 0, interval: 0, deliveryRate: 0, rtt: -1, priorDelivered: 0, isAppLimited: false };
  private readonly ackEvent: AckEvent = { now: 0, ackedBytes: 0, lostBytes: 0, inflight: 0, delivered: 0, rs: null };
  // pacing
  private nextSendTime = 0;
  // zero window
  private persistInterval: number;
  private zeroWindowProbes = 0;

  // --- receive state ---
  private rcvNxt = 0;
  private readonly reasm: Reassembly;
  private peerFinSeen = false;
  private peerFinSeq = 0;
  private eofDelivered = false;
  private ackSegs = 0;
  private ackBytes = 0;
  private ackNow = false;
  private lastSegSmall = false;
  private lastAdvWnd = 0;
  private readonly sackScratch: number[] = [];
  private lastRecv = 0;
  private nagleForce = false;

  // --- timers (absolute deadlines, Infinity = off) ---
  private rtoAt = Infinity;
  private tlpAt = Infinity;
  private rackAt = Infinity;
  private paceAt = Infinity;
  private nagleAt = Infinity;
  private persistAt = Infinity;
  private delackAt = Infinity;
  private synAt = Infinity;
  private dialDeadline = Infinity;
  private finWaitAt = Infinity;
  private timeWaitAt = Infinity;
  private synTimeouts = 0;
  private synBackoff = 0;
  private synTxTime = 0;
  private synRetransmitted = false;

  // --- stats ---
  private bytesSent = 0;
  private bytesRecv = 0;
  /**
   * In-order payloads received this event-loop turn, pushed to the Readable at the end of the turn
   * (flush): one push per UDP datagram schedules a nextTick and a tick-queue run per datagram callback,
   * which cost more than the stream work itself at 1200-byte payloads.
   */
  private received: Buffer[] = [];
  private receivedBytes = 0;
  private segsSent = 0;
  private segsRecv = 0;
  private retransmits = 0;
  private fastRetx = 0;
  private sackRecv = 0;
  private sackSent = 0;
  private dupAckCount = 0;
  private tlpCount = 0;
  private rtoCount = 0;
  private dupSegsRecv = 0;

  private readonly onSegDelivered: (s: Seg) => void;
  /** `now` of the packet being processed (saves clock reads per delivered segment). */
  private curNow = 0;

  constructor(host: ConnectionHost, o: ConnectionOptions) {
    const cfg = host.cfg;
    super({
      allowHalfOpen: o.allowHalfOpen ?? false,
      readableHighWaterMark: cfg.recvBuffer,
      writableHighWaterMark: Math.min(cfg.sendBuffer, 256 * 1024),
      decodeStrings: true,
      autoDestroy: true,
      emitClose: true,
    });
    this.host = host;
    this.cfg = cfg;
    this.res = host.clock.resolution ?? 0;
    this.id = o.id;
    this.peerNode = o.peerNode;
    this.remote = o.remote;
    this.remotePort = o.remotePort;
    this.localPort = o.localPort;
    this.initiator = o.initiator;
    this.noDelay = o.noDelay ?? !cfg.nagle;
    this.tpl = new HeaderTemplate(Protocol.STREAM, o.remote.network, host.localNode, o.remote.network, o.remote.node, o.localPort, o.remotePort, host.scratch);
    this.isn = cfg.initialSequence >>> 0;
    this.sndUna = this.sndNxt = this.isn;
    this.sendBuf = new SendBuffer(this.isn + 1, host.blockPool);
    this.reasm = new Reassembly(cfg.oooMaxSegments);
    this.rtt = new RttEstimator(cfg.rtoInitialMs, cfg.rtoMinMs, cfg.rtoMaxMs, cfg.rtoGranularityMs);
    const ccParams = { mss: host.mssFor(o.peerNode), initialCwnd: cfg.initialCwnd, maxCwnd: cfg.maxCwnd, random: () => host.random(), minRttFloor: cfg.bbrMinRttFloorMs };
    this.cc = cfg.congestionControl === 'reno' ? new RenoController(ccParams) : new BbrController(ccParams);
    this.persistInterval = cfg.zeroWindowProbeMs;
    this.onSegDelivered = (s: Seg) => this.segDelivered(s);
    this.lastRecv = host.clock.now();
  }

  // ======================================================================================
  // Public API
  // ======================================================================================

  /** Disable (true) or enable (false) Nagle's algorithm for this connection. */
  setNoDelay(on = true): this {
    this.noDelay = on;
    if (on && this.established) this.host.markDirty(this);
    return this;
  }

  info(): ConnectionInfo {
    const rate = this.cc.pacingRate;
    return {
      id: this.id,
      local_port: this.localPort,
      remote_addr: this.remote.toString(),
      remote_port: this.remotePort,
      state: this.stateName(),
      cong_win: Math.round(this.cc.cwnd),
      ssthresh: Math.round(this.cc.ssthresh),
      in_flight: this.sb.inflight,
      srtt_ms: round3(this.rtt.srtt),
      rttvar_ms: round3(this.rtt.rttvar),
      unacked: this.sb.count,
      ooo_buf: this.reasm.count,
      peer_recv_win: this.peerWnd,
      recv_win: this.advWindowUnits() * WINDOW_UNIT,
      in_recovery: this.inRecovery,
      bytes_sent: this.bytesSent,
      bytes_recv: this.bytesRecv,
      segs_sent: this.segsSent,
      segs_recv: this.segsRecv,
      retransmits: this.retransmits,
      fast_retx: this.fastRetx,
      sack_recv: this.sackRecv,
      sack_sent: this.sackSent,
      dup_acks: this.dupAckCount,
      mss: this.host.mssFor(this.peerNode),
      rto_ms: round3(this.rtt.rto),
      min_rtt_ms: this.rtt.minRtt === Infinity ? 0 : round3(this.rtt.minRtt),
      pacing_rate: rate === Infinity ? 0 : Math.round(rate * 1000),
      cc: this.cc.name,
      zero_window_probes: this.zeroWindowProbes,
      tail_loss_probes: this.tlpCount,
      rto_timeouts: this.rtoCount,
      dup_segs_recv: this.dupSegsRecv,
      send_queue: Math.max(0, this.sendBuf.end - Math.max(this.sndUna, this.sendBuf.start)),
      recv_queue: this.unreadBytes,
    };
  }

  stateName(): string {
    if (this.gone) return this.timeWait ? 'TIME_WAIT' : 'CLOSED';
    if (this.timeWait) return 'TIME_WAIT';
    if (this.dialing) return 'SYN_SENT';
    if (!this.established) return 'SYN_RECV';
    if (this.finSent) return 'FIN_WAIT';
    if (this.peerFinSeen) return 'CLOSE_WAIT';
    return 'ESTABLISHED';
  }

  /** @internal true once both directions are finished or the connection was removed. */
  get isTimeWaitOrClosed(): boolean {
    return this.timeWait || this.gone;
  }

  // ======================================================================================
  // Setup (called by the host)
  // ======================================================================================

  /** @internal Start an active open: send SYN, retransmit with backoff, resolve on SYN-ACK. */
  startDial(timeoutMs: number | undefined, resolve: (c: Connection) => void, reject: (e: Error) => void): void {
    this.dialing = true;
    this.dialResolve = resolve;
    this.dialReject = reject;
    const now = this.host.clock.now();
    this.synBackoff = this.cfg.synRetryInitialMs;
    this.sendSyn(now);
    this.synAt = now + this.synBackoff;
    if (timeoutMs !== undefined && timeoutMs > 0) this.dialDeadline = now + timeoutMs;
    this.reschedule();
  }

  /** @internal Passive open: answer the SYN with SYN-ACK and consider ourselves established (v1). */
  acceptSyn(p: Packet): void {
    const now = this.host.clock.now();
    this.rcvNxt = p.seq + 1;
    this.sndUna = this.sndNxt = this.isn + 1;
    this.peerWnd = p.window * WINDOW_UNIT;
    this.wl1 = this.rcvNxt - 1;
    this.wl2 = 1;
    this.established = true;
    this.lastRecv = now;
    this.sendSynAck();
  }

  /** @internal The path MTU towards the peer changed. */
  onMssChange(mss: number): void {
    this.cc.setMss(mss);
    if (this.established && !this.gone) this.host.markDirty(this);
  }

  /** @internal Abort a dial (AbortSignal). */
  abortDial(reason: string): void {
    if (!this.dialing) return;
    this.fail(new StreamError('dial_aborted', reason), true);
  }

  // ======================================================================================
  // Inbound packets
  // ======================================================================================

  /** @internal One decoded stream packet for this 4-tuple. */
  onPacket(p: Packet): void {
    if (this.gone && !this.timeWait) return;
    const now = this.host.clock.now();
    this.lastRecv = now;
    const f = p.flags;
    if (f & Flags.RST) {
      this.onRst();
      return;
    }
    if (this.timeWait) {
      // Both directions are done: only re-ACK a retransmitted FIN (never with a FIN of our own).
      if (f & Flags.FIN) this.sendAck(now);
      return;
    }
    if (this.dialing) {
      if (!this.onPacketSynSent(p, now)) return;
    } else if (f & Flags.SYN) {
      if (f & Flags.ACK) this.sendAck(now); // our ACK of their SYN-ACK was lost
      else if (!this.initiator) this.sendSynAck(); // duplicate SYN: the SYN-ACK was lost (v1)
      return;
    }
    this.segsRecv++;
    const payload = p.payload;
    let dataLen = payload.length;
    let sackN = 0;
    if (dataLen > 0 && f & Flags.ACK) {
      // v1 in-band rule: an ACK-flag payload that parses as SACK is SACK, not data.
      sackN = sackBlockCount(payload);
      if (sackN > 0) dataLen = 0;
    }
    if (f & Flags.ACK) this.processAck(p, sackN, now);
    if (this.gone) return;
    if (dataLen > 0) this.processData(p.seq, payload, now);
    if (f & Flags.FIN) this.processFin(unwrapSeq(p.seq, this.rcvNxt) + dataLen, now);
    this.host.markDirty(this);
  }

  /** Returns true if the packet should be processed further as an established-connection packet. */
  private onPacketSynSent(p: Packet, now: number): boolean {
    const f = p.flags;
    if (!(f & Flags.ACK)) return false;
    const ack = unwrapSeq(p.ack, this.isn);
    if (ack < this.isn + 1) return false;
    this.dialing = false;
    this.established = true;
    this.synAt = Infinity;
    this.dialDeadline = Infinity;
    this.sndUna = this.sndNxt = this.isn + 1;
    this.peerWnd = p.window * WINDOW_UNIT;
    if (!this.synRetransmitted) {
      const r = now - this.synTxTime;
      this.rtt.sample(r);
      this.cc.onInitialRtt(r);
    }
    if (f & Flags.SYN) {
      this.rcvNxt = p.seq + 1;
      this.wl1 = this.rcvNxt - 1;
      this.wl2 = ack;
      this.sendAck(now);
    } else {
      // Data (or an ACK) before the SYN-ACK: the SYN-ACK was lost or reordered; ISN is 0 (v1), data starts at 1.
      this.rcvNxt = this.isn + 1;
    }
    const resolve = this.dialResolve;
    this.dialResolve = this.dialReject = null;
    resolve?.(this);
    this.reschedule();
    return !(f & Flags.SYN);
  }

  private onRst(): void {
    if (this.dialing) {
      this.fail(new StreamError('connection_refused', `connection refused by ${this.remote.toString()}:${this.remotePort}`), false);
      return;
    }
    if (this.timeWait) {
      this.closeNow();
      return;
    }
    this.fail(new StreamError('connection_reset', `connection reset by ${this.remote.toString()}:${this.remotePort}`), false);
  }

  private processAck(p: Packet, sackN: number, now: number): void {
    const sndMax = this.finSent ? this.finSeq + 1 : this.sndNxt;
    const ack = unwrapSeq(p.ack, this.sndUna);
    if (ack > sndMax) return; // acknowledges data never sent: ignore
    // Window update (RFC 793 SND.WL1/WL2 rule) — v1 updates on every ACK-flag packet; ordering protects us from stale reordered ones.
    this.curNow = now;
    const pseq = unwrapSeq(p.seq, this.rcvNxt);
    const oldWnd = this.peerWnd;
    if (pseq > this.wl1 || (pseq === this.wl1 && ack >= this.wl2)) {
      this.peerWnd = p.window * WINDOW_UNIT;
      this.wl1 = pseq;
      this.wl2 = ack;
      if (this.peerWnd > 0 && oldWnd === 0) {
        this.persistAt = Infinity;
        this.persistInterval = this.cfg.zeroWindowProbeMs;
      }
    }
    this.ackDelivered = 0;
    this.rsPriorDelivered = -1;
    this.rsRtt = -1;
    this.rsNewest = null;
    const prevFack = this.rackFack;
    let progress = false;
    if (ack > this.sndUna) {
      const dataAck = Math.min(ack, this.sendBuf.end);
      this.sb.ackTo(dataAck, this.onSegDelivered);
      this.sndUna = ack;
      this.sendBuf.trimTo(dataAck);
      progress = true;
      this.dupAcks = 0;
      this.consecutiveRtos = 0;
      this.tlpOutstanding = false;
      this.rtt.resetBackoff();
      this.lastAckTime = now;
      if (this.finSent && !this.finAcked && ack >= this.finSeq + 1) this.onFinAcked();
    }
    if (sackN > 0) {
      this.sackRecv++;
      const payload = p.payload;
      for (let i = 0; i < sackN; i++) {
        const l = unwrapSeq(sackLeft(payload, i), this.sndUna);
        const r = unwrapSeq(sackRight(payload, i), this.sndUna);
        if (r <= l || r <= this.sndUna || r > this.sndNxt) continue;
        this.sb.sack(l < this.sndUna ? this.sndUna : l, r, this.onSegDelivered);
      }
      if (this.ackDelivered > 0) this.lastAckTime = now;
    }
    // Duplicate ACKs (RFC 6675 counts SACK-carrying ACKs too; v1 counts pure ones with an unchanged window).
    if (!progress && this.sb.count > 0 && ack === this.sndUna && (sackN > 0 || (p.payload.length === 0 && this.peerWnd === oldWnd))) {
      this.dupAcks++;
      this.dupAckCount++;
    }
    // Reordering: a segment delivered below the highest one already delivered, never retransmitted.
    let lost = this.detectLosses(now, prevFack);
    if (this.dupAcks >= DUP_THRESH && !this.inRecovery) {
      const first = this.sb.first();
      if (first && first.state === SegState.InFlight) {
        this.sb.markLost(first);
        lost += first.len;
        this.fastRetx++;
      }
    }
    if (lost > 0 && !this.inRecovery) this.enterRecovery(now);
    if (this.inRecovery && this.sndUna >= this.recoveryPoint && this.sb.lostBytes === 0) {
      this.inRecovery = false;
      this.cc.onExitRecovery(now);
    }
    if (this.ackDelivered > 0 || lost > 0) {
      if (this.rsRtt >= 0) this.rtt.sample(this.rsRtt);
      if (this.appLimitedUntil > 0 && this.delivered > this.appLimitedUntil) this.appLimitedUntil = 0;
      const ev = this.ackEvent;
      ev.now = now;
      ev.ackedBytes = this.ackDelivered;
      ev.lostBytes = lost;
      ev.inflight = this.sb.inflight;
      ev.delivered = this.delivered;
      ev.rs = this.buildRateSample();
      this.cc.onAck(ev);
    }
    if (progress || sackN > 0) this.feedPendingWrite();
  }

  /** Per newly delivered segment (cumulative ACK or SACK): delivery-rate and RACK bookkeeping. */
  private segDelivered(s: Seg): void {
    const now = this.curNow;
    const len = s.len;
    this.delivered += len;
    this.deliveredTime = now;
    this.ackDelivered += len;
    if (s.delivered >= this.rsPriorDelivered) {
      this.rsPriorDelivered = s.delivered;
      this.rsPriorTime = s.deliveredTime;
      this.rsSendElapsed = s.txTime - s.firstSentTime;
      this.rsAckElapsed = now - s.deliveredTime;
      this.rsAppLimited = s.appLimited;
      this.firstSentTime = s.txTime;
      this.rsNewest = s;
    }
    const rtt = now - s.txTime;
    if (s.retrans === 0) {
      if (this.rsRtt < 0 || rtt < this.rsRtt) this.rsRtt = rtt;
      if (s.end < this.rackFack) this.noteReordering();
      if (s.state === SegState.Lost) this.noteReordering(); // declared lost, arrived anyway
    } else if (rtt < this.rtt.minRtt) {
      // Delivered faster than any RTT we know: the original made it, not the retransmission (RFC 8985 §6.2).
      return;
    }
    if (s.txTime > this.rackXmitTs || (s.txTime === this.rackXmitTs && s.end > this.rackEndSeq)) {
      this.rackXmitTs = s.txTime;
      this.rackEndSeq = s.end;
      this.rackRtt = rtt;
    }
    if (s.end > this.rackFack) this.rackFack = s.end;
  }

  private noteReordering(): void {
    if (!this.reorderSeen) this.reorderSeen = true;
    else if (this.reoWndMult < 8) this.reoWndMult++;
  }

  private buildRateSample(): RateSample | null {
    if (this.rsPriorDelivered < 0) return null;
    const rs = this.rateSample;
    rs.delivered = this.delivered - this.rsPriorDelivered;
    rs.interval = Math.max(this.rsSendElapsed, this.rsAckElapsed);
    rs.priorDelivered = this.rsPriorDelivered;
    rs.isAppLimited = this.rsAppLimited;
    rs.rtt = this.rsRtt;
    const minRtt = this.rtt.minRtt;
    // Intervals shorter than the min RTT come from ACK compression; they overstate the rate.
    if (rs.interval <= 0 || (minRtt !== Infinity && rs.interval < minRtt)) rs.deliveryRate = 0;
    else rs.deliveryRate = rs.delivered / rs.interval;
    return rs;
  }

  /** RACK (RFC 8985): segments sent sufficiently before the most recently delivered one are lost. */
  private detectLosses(now: number, _prevFack: number): number {
    if (this.rackXmitTs < 0) return 0;
    const minRtt = this.rtt.minRtt === Infinity ? 0 : this.rtt.minRtt;
    let reoWnd: number;
    if (this.reorderSeen) reoWnd = Math.min((this.reoWndMult * minRtt) / 4, this.rtt.srtt);
    else reoWnd = this.inRecovery ? 0 : minRtt / 4;
    let lost = 0;
    this.rackAt = Infinity;
    let s = this.sb.oldestInFlight();
    while (s) {
      const next = s.next;
      if (s.txTime > this.rackXmitTs || (s.txTime === this.rackXmitTs && s.end >= this.rackEndSeq)) break;
      const remaining = s.txTime + this.rackRtt + reoWnd - now;
      if (remaining <= 0) {
        this.sb.markLost(s);
        lost += s.len;
      } else {
        this.rackAt = now + remaining;
        break;
      }
      s = next;
    }
    return lost;
  }

  private enterRecovery(now: number): void {
    this.inRecovery = true;
    this.recoveryPoint = this.sndNxt;
    this.cc.onEnterRecovery(now, this.sb.inflight, this.delivered);
  }

  private processData(wireSeq: number, payload: Buffer, now: number): void {
    const seq = unwrapSeq(wireSeq, this.rcvNxt);
    const len = payload.length;
    const end = seq + len;
    if (this.eofDelivered || (this.peerFinSeen && seq >= this.peerFinSeq)) return;
    if (end <= this.rcvNxt) {
      // Already delivered: the sender retransmitted needlessly or our ACK was lost — ACK at once.
      this.dupSegsRecv++;
      this.ackNow = true;
      return;
    }
    const hadOoo = !this.reasm.empty;
    const held = this.unreadBytes + this.reasm.bytes;
    if (seq <= this.rcvNxt) {
      const data = seq < this.rcvNxt ? payload.subarray(this.rcvNxt - seq) : payload;
      if (held + data.length > this.cfg.recvBuffer + RECV_SLACK) {
        this.ackNow = true; // beyond anything we advertised: drop, tell the sender our window
        return;
      }
      this.rcvNxt = end;
      this.deliver(data);
      if (hadOoo) {
        for (;;) {
          const d = this.reasm.shift(this.rcvNxt);
          if (!d) break;
          this.rcvNxt += d.length;
          this.deliver(d);
        }
        if (!this.reasm.empty) this.reasm.trimRanges(this.rcvNxt);
        this.ackNow = true; // a hole was filled (or is still open): ACK immediately with fresh SACK
      }
      this.ackSegs++;
      this.ackBytes += len;
      this.lastSegSmall = len < this.host.mssFor(this.peerNode);
      if (this.peerFinSeen && this.rcvNxt >= this.peerFinSeq) this.deliverEof();
      const every = this.cfg.ackEveryBytes > 0 ? this.cfg.ackEveryBytes : this.cfg.recvBuffer >> 3;
      if (this.ackBytes >= every) this.sendAck(now);
    } else {
      if (end - this.rcvNxt > this.cfg.recvBuffer + RECV_SLACK || held + len > this.cfg.recvBuffer + RECV_SLACK) {
        this.ackNow = true;
        return;
      }
      const r = this.reasm.insert(seq, payload);
      if (r === InsertResult.Duplicate) this.dupSegsRecv++;
      this.ackNow = true;
    }
  }

  private deliver(data: Buffer): void {
    this.bytesRecv += data.length;
    if (this.destroyed) return;
    this.received.push(data);
    this.receivedBytes += data.length;
  }

  /** In-order bytes the application has not read yet: in the Readable or still held for this turn's push. */
  private get unreadBytes(): number {
    return this.readableLength + this.receivedBytes;
  }

  /** Hand this turn's in-order payloads to the Readable (before EOF, teardown or the end-of-turn flush). */
  private releaseReceived(): void {
    if (this.receivedBytes === 0) return;
    const list = this.received;
    const bytes = this.receivedBytes;
    this.received = [];
    this.receivedBytes = 0;
    if (this.destroyed) return;
    // Small segments are joined (a copy of ~1 KiB costs less than a push); large ones go as they are.
    if (list.length > 1 && bytes <= list.length * JOIN_BELOW) this.push(Buffer.concat(list, bytes));
    else for (let i = 0; i < list.length; i++) this.push(list[i]);
  }

  private processFin(finSeq: number, now: number): void {
    if (!this.peerFinSeen) {
      this.peerFinSeen = true;
      this.peerFinSeq = finSeq;
    }
    // ACK every FIN with a plain ACK — never with FIN|ACK (no FIN storms, SPEC §4).
    this.ackNow = true;
    if (!this.eofDelivered) {
      if (this.rcvNxt >= this.peerFinSeq) this.deliverEof();
      else if (this.finWaitAt === Infinity) {
        this.finWaitAt = now + this.cfg.finDataWaitMs;
        this.reschedule();
      }
    }
  }

  private deliverEof(): void {
    if (this.eofDelivered) return;
    this.eofDelivered = true;
    this.finWaitAt = Infinity;
    this.rcvNxt = this.peerFinSeq + 1;
    this.reasm.clear();
    this.releaseReceived();
    if (!this.destroyed) this.push(null);
    this.maybeTimeWait();
  }

  private onFinAcked(): void {
    this.finAcked = true;
    const cb = this.finalCb;
    this.finalCb = null;
    cb?.();
    this.maybeTimeWait();
  }

  private maybeTimeWait(): void {
    if (this.timeWait || !this.finAcked || !this.peerFinSeen) return;
    this.timeWait = true;
    this.clearSendTimers();
    this.timeWaitAt = this.host.clock.now() + this.cfg.timeWaitMs;
    this.reschedule();
  }

  // ======================================================================================
  // Outbound
  // ======================================================================================

  /** @internal End-of-turn work: send what windows allow, then the ACK the receive side owes. */
  flush(): void {
    this.dirty = false;
    this.releaseReceived();
    if (this.gone || this.dialing) return;
    const now = this.host.clock.now();
    if (!this.timeWait) this.trySend(now);
    if (this.ackNow || this.ackSegs >= this.cfg.ackEverySegments || (this.ackSegs > 0 && this.lastSegSmall)) {
      this.sendAck(now);
    } else if (this.ackSegs > 0 && this.delackAt === Infinity) {
      this.delackAt = now + this.cfg.delayedAckMs;
    }
    this.armTimers(now);
  }

  private trySend(now: number): void {
    if (!this.established || this.gone || this.timeWait) return;
    const mss = this.host.mssFor(this.peerNode);
    const rate = this.cc.pacingRate;
    const paced = rate !== Infinity;
    if (paced && this.nextSendTime < now - PACING_CREDIT_MS) this.nextSendTime = now - PACING_CREDIT_MS;

    // 1. Retransmit segments declared lost (in order), within cwnd.
    for (let s = this.sb.peekLost(); s; s = this.sb.peekLost()) {
      if (this.sb.inflight > 0 && this.sb.inflight + Math.min(s.len, mss) > this.cc.cwnd) break;
      if (paced && this.nextSendTime > now + PACING_QUANTUM_MS) {
        this.paceAt = this.nextSendTime;
        return;
      }
      if (s.len > mss) this.sb.split(s, mss);
      const safe = this.safeLength(s.start, s.len);
      if (safe < s.len) this.sb.split(s, safe);
      this.retransmit(s, now);
    }

    // 2. New data, within the peer's window, cwnd, Nagle and pacing.
    let windowBlocked = false;
    while (this.sndNxt < this.sendBuf.end) {
      const room = this.sndUna + this.peerWnd - this.sndNxt;
      if (room <= 0) {
        windowBlocked = true;
        break;
      }
      const avail = this.sendBuf.end - this.sndNxt;
      let len = avail < mss ? avail : mss;
      if (len > room) len = room;
      if (len < mss && len === avail && !this.noDelay && !this.finQueued && !this.nagleForce && this.sndNxt > this.sndUna) {
        // Nagle: hold a short tail while data is unacknowledged (bounded by nagleDelayMs, as v1).
        if (this.nagleAt === Infinity) this.nagleAt = now + this.cfg.nagleDelayMs;
        break;
      }
      if (this.sb.inflight > 0 && this.sb.inflight + len > this.cc.cwnd) break;
      if (paced && this.nextSendTime > now + PACING_QUANTUM_MS) {
        this.paceAt = this.nextSendTime;
        break;
      }
      len = this.safeLength(this.sndNxt, len);
      this.sendNew(len, now);
    }
    if (this.sndNxt >= this.sendBuf.end) {
      this.nagleForce = false;
      this.nagleAt = Infinity;
      // Application-limited: the pipe is not full because there is nothing to send.
      if (this.sb.inflight < this.cc.cwnd) this.appLimitedUntil = Math.max(this.delivered + this.sb.inflight, 1);
    }

    // 3. Zero window: probe with backoff while nothing is in flight (SPEC §4: window 0 is a real zero window).
    if (windowBlocked && this.sb.inflight === 0 && this.sb.lostBytes === 0) {
      if (this.persistAt === Infinity) this.persistAt = now + this.persistInterval;
    } else if (!windowBlocked) {
      this.persistAt = Infinity;
    }

    // 4. FIN once every byte has been acknowledged (a v1 receiver drops data that trails a FIN).
    if (this.finQueued && !this.finSent && this.sndUna >= this.sendBuf.end && this.sndNxt >= this.sendBuf.end) this.sendFin(now);
  }

  /** Shorten `len` so the segment at `seq` cannot be mistaken for a SACK option by a v1 receiver. */
  private safeLength(seq: number, len: number): number {
    if (len < SACK_HEADER_LEN + SACK_BLOCK_LEN || this.sendBuf.byteAt(seq) !== SACK_MAGIC_0) return len;
    const b = this.sendBuf;
    return sackSafeLength(b.byteAt(seq), b.byteAt(seq + 1), b.byteAt(seq + 2), b.byteAt(seq + 3), b.byteAt(seq + 4), len);
  }

  private sendNew(len: number, now: number): void {
    const seq = this.sndNxt;
    if (this.sb.inflight === 0) {
      // Nothing in flight: restart the delivery-rate clocks (rate estimation draft §3.2).
      this.firstSentTime = now;
      this.deliveredTime = now;
    }
    const s = this.sb.push(seq, seq + len, now);
    s.delivered = this.delivered;
    s.deliveredTime = this.deliveredTime;
    s.firstSentTime = this.firstSentTime;
    s.appLimited = this.appLimitedUntil > 0;
    this.sndNxt = seq + len;
    this.transmit(seq, len, now);
  }

  private retransmit(s: Seg, now: number): void {
    if (this.sb.inflight === 0) {
      this.firstSentTime = now;
      this.deliveredTime = now;
    }
    s.delivered = this.delivered;
    s.deliveredTime = this.deliveredTime;
    s.firstSentTime = this.firstSentTime;
    s.appLimited = this.appLimitedUntil > 0;
    this.sb.retransmitted(s, now);
    this.retransmits++;
    this.transmit(s.start, s.len, now);
  }

  private transmit(seq: number, len: number, now: number): void {
    const wnd = this.advWindowUnits();
    const pkt = this.tpl.alloc(Flags.ACK, len, toWire(seq), toWire(this.rcvNxt), wnd);
    this.sendBuf.copyOut(seq, len, pkt, HEADER_LEN);
    this.host.sendPacket(this.peerNode, seal(pkt));
    this.segsSent++;
    this.bytesSent += len;
    this.lastTxTime = now;
    this.lastAdvWnd = wnd;
    // The data segment carries our ACK: cancel the delayed ACK (unless SACK information is owed).
    this.ackSegs = 0;
    this.ackBytes = 0;
    this.delackAt = Infinity;
    if (this.reasm.empty) this.ackNow = false;
    const rate = this.cc.pacingRate;
    if (rate !== Infinity && rate > 0) {
      const base = this.nextSendTime > now - PACING_CREDIT_MS ? this.nextSendTime : now - PACING_CREDIT_MS;
      this.nextSendTime = base + len / rate;
    }
  }

  private sendSyn(now: number): void {
    this.synTxTime = now;
    const pkt = this.tpl.alloc(Flags.SYN, 0, toWire(this.isn), 0, this.advWindowUnits());
    this.host.sendPacket(this.peerNode, seal(pkt));
    this.segsSent++;
  }

  private sendSynAck(): void {
    const wnd = this.advWindowUnits();
    const pkt = this.tpl.alloc(Flags.SYN | Flags.ACK, 0, toWire(this.isn), toWire(this.rcvNxt), wnd);
    this.host.sendPacket(this.peerNode, seal(pkt));
    this.segsSent++;
    this.lastAdvWnd = wnd;
  }

  private sendFin(now: number): void {
    this.finSent = true;
    this.finSeq = this.sendBuf.end;
    this.finTxTime = now;
    this.sendFinPacket();
  }

  private sendFinPacket(): void {
    // FIN|ACK carrying our ACK; the seq is the FIN's own sequence number (one past the last data byte).
    const wnd = this.advWindowUnits();
    const pkt = this.tpl.alloc(Flags.FIN | Flags.ACK, 0, toWire(this.finSeq), toWire(this.rcvNxt), wnd);
    this.host.sendPacket(this.peerNode, seal(pkt));
    this.segsSent++;
    this.lastAdvWnd = wnd;
  }

  /** Pure ACK (preceded by a pure duplicate ACK for v1 senders) plus SACK packets when out-of-order data is held. */
  private sendAck(now: number): void {
    if (this.gone && !this.timeWait) return;
    const wnd = this.advWindowUnits();
    const seq = toWire(this.finSent ? this.finSeq + 1 : this.sndNxt);
    const ack = toWire(this.rcvNxt);
    if (this.reasm.empty || this.eofDelivered) {
      this.host.sendPacket(this.peerNode, seal(this.tpl.alloc(Flags.ACK, 0, seq, ack, wnd)));
    } else {
      if (this.cfg.legacyDupAcks) this.host.sendPacket(this.peerNode, seal(this.tpl.alloc(Flags.ACK, 0, seq, ack, wnd)));
      const blocks = this.sackScratch;
      const touched = Math.max(1, this.reasm.touchedRanges());
      const packets = Math.min(MAX_SACK_PACKETS, Math.ceil(touched / SACK_MAX_BLOCKS));
      const n = this.reasm.sackBlocks(blocks, packets * SACK_MAX_BLOCKS);
      for (let i = 0; i < n; i += SACK_MAX_BLOCKS) {
        const k = Math.min(SACK_MAX_BLOCKS, n - i);
        const plen = SACK_HEADER_LEN + k * SACK_BLOCK_LEN;
        const pkt = this.tpl.alloc(Flags.ACK, plen, seq, ack, wnd);
        pkt[HEADER_LEN] = 0x53;
        pkt[HEADER_LEN + 1] = 0x41;
        pkt[HEADER_LEN + 2] = 0x43;
        pkt[HEADER_LEN + 3] = 0x4b;
        pkt[HEADER_LEN + 4] = k;
        for (let j = 0; j < k; j++) {
          pkt.writeUInt32BE(toWire(blocks[2 * (i + j)]!), HEADER_LEN + SACK_HEADER_LEN + j * SACK_BLOCK_LEN);
          pkt.writeUInt32BE(toWire(blocks[2 * (i + j) + 1]!), HEADER_LEN + SACK_HEADER_LEN + j * SACK_BLOCK_LEN + 4);
        }
        this.host.sendPacket(this.peerNode, seal(pkt));
        this.sackSent++;
      }
    }
    this.ackSegs = 0;
    this.ackBytes = 0;
    this.ackNow = false;
    this.delackAt = Infinity;
    this.lastAdvWnd = wnd;
    void now;
  }

  private sendRst(): void {
    const pkt = this.tpl.alloc(Flags.RST, 0, toWire(this.sndNxt), toWire(this.rcvNxt), 0);
    this.host.sendPacket(this.peerNode, seal(pkt));
  }

  /** Free receive window in 4096-byte units: what the application has not read counts against it. */
  private advWindowUnits(): number {
    const free = this.cfg.recvBuffer - this.unreadBytes - this.reasm.bytes;
    if (free <= 0) return 0;
    const u = Math.floor(free / WINDOW_UNIT);
    return u > 0xffff ? 0xffff : u;
  }

  // ======================================================================================
  // Timers
  // ======================================================================================

  private armTimers(now: number): void {
    if (this.gone) return;
    if (!this.timeWait && this.established) {
      const oldest = this.sb.oldestInFlight();
      const rto = this.rtt.rto;
      if (oldest) this.rtoAt = oldest.txTime + rto;
      else if (this.sb.lostBytes > 0) this.rtoAt = Math.min(this.rtoAt, now + rto);
      else if (this.finSent && !this.finAcked) this.rtoAt = this.finTxTime + rto;
      else this.rtoAt = Infinity;
      if (this.cfg.tailLossProbe && oldest && !this.tlpOutstanding && !this.inRecovery && this.rtt.hasSample) {
        let pto = 2 * this.rtt.srtt;
        if (this.sb.inflight <= this.host.mssFor(this.peerNode)) pto += this.cfg.delayedAckMs;
        if (pto < 10) pto = 10;
        const t = Math.max(this.lastTxTime, this.lastAckTime) + pto;
        this.tlpAt = t < this.rtoAt ? t : Infinity;
      } else this.tlpAt = Infinity;
    }
    this.reschedule();
  }

  private reschedule(): void {
    if (this.gone && !this.timeWait) return;
    let t = this.rtoAt;
    if (this.tlpAt < t) t = this.tlpAt;
    if (this.rackAt < t) t = this.rackAt;
    if (this.paceAt < t) t = this.paceAt;
    if (this.nagleAt < t) t = this.nagleAt;
    if (this.persistAt < t) t = this.persistAt;
    if (this.delackAt < t) t = this.delackAt;
    if (this.synAt < t) t = this.synAt;
    if (this.dialDeadline < t) t = this.dialDeadline;
    if (this.finWaitAt < t) t = this.finWaitAt;
    if (this.timeWaitAt < t) t = this.timeWaitAt;
    if (t !== Infinity) this.host.sched.scheduleEarlier(this, t);
  }

  /** @internal Scheduler callback. */
  onWake(now: number): void {
    const due = now + this.res;
    if (this.timeWaitAt <= due) {
      this.timeWaitAt = Infinity;
      this.closeNow();
      return;
    }
    if (this.gone) return;
    if (this.dialing) {
      if (this.dialDeadline <= due) {
        this.fail(new StreamError('dial_timeout', `dial ${this.remote.toString()}:${this.remotePort} timed out`), true);
        return;
      }
      if (this.synAt <= due) this.onSynTimeout(now);
      this.reschedule();
      return;
    }
    let send = false;
    if (this.rtoAt <= due) {
      this.rtoAt = Infinity;
      this.onRto(now);
      if (this.gone) return;
      send = true;
    }
    if (this.tlpAt <= due) {
      this.tlpAt = Infinity;
      this.onTlp(now);
    }
    if (this.rackAt <= due) {
      this.rackAt = Infinity;
      const lost = this.detectLosses(now, this.rackFack);
      if (lost > 0) {
        if (!this.inRecovery) this.enterRecovery(now);
        send = true;
      }
    }
    if (this.paceAt <= due) {
      this.paceAt = Infinity;
      send = true;
    }
    if (this.nagleAt <= due) {
      this.nagleAt = Infinity;
      this.nagleForce = true;
      send = true;
    }
    if (this.persistAt <= due) {
      this.persistAt = Infinity;
      this.onPersist(now);
    }
    if (this.finWaitAt <= due) {
      this.finWaitAt = Infinity;
      if (!this.eofDelivered) {
        this.fail(new StreamError('stream_truncated', 'peer closed before all data arrived'), true);
        return;
      }
    }
    if (send) this.trySend(now);
    if (this.delackAt <= due) {
      this.delackAt = Infinity;
      if (this.ackSegs > 0 || this.ackNow) this.sendAck(now);
    }
    this.armTimers(now);
  }

  private onSynTimeout(now: number): void {
    this.synTimeouts++;
    if (this.synTimeouts >= this.cfg.synMaxTimeouts) {
      this.fail(new StreamError('dial_timeout', `dial ${this.remote.toString()}:${this.remotePort} timed out`), true);
      return;
    }
    if (this.synTimeouts === this.cfg.relayFallbackAfter && this.host.synTimeout(this.peerNode, this.synTimeouts)) {
      this.synBackoff = this.cfg.synRetryInitialMs;
    } else {
      if (this.synTimeouts !== this.cfg.relayFallbackAfter) this.host.synTimeout(this.peerNode, this.synTimeouts);
      this.synBackoff = Math.min(this.synBackoff * 2, this.cfg.synRetryMaxMs);
    }
    this.synRetransmitted = true;
    this.sendSyn(now);
    this.synAt = now + this.synBackoff;
  }

  private onRto(now: number): void {
    if (this.sb.empty && !(this.finSent && !this.finAcked)) return;
    this.rtoCount++;
    this.consecutiveRtos++;
    if (this.consecutiveRtos > this.cfg.maxRetransmits) {
      this.fail(new StreamError('max_retransmits', `no acknowledgement from ${this.remote.toString()}:${this.remotePort} after ${this.cfg.maxRetransmits} retransmissions`), true);
      return;
    }
    this.rtt.backOff();
    this.tlpOutstanding = false;
    if (!this.sb.empty) {
      // Everything outstanding is presumed lost; after repeated timeouts also distrust earlier SACKs (reneging).
      this.sb.markAllLost(this.consecutiveRtos >= 2);
      this.cc.onRto(now);
      this.inRecovery = true;
      this.recoveryPoint = this.sndNxt;
      const first = this.sb.first();
      const base = this.host.baseMssFor(this.peerNode);
      if (first && first.len > base && this.consecutiveRtos >= this.cfg.pmtuBlackHoleRtos) this.host.suspectBlackHole(this.peerNode);
    } else if (this.finSent && !this.finAcked) {
      this.finTxTime = now;
      this.sendFinPacket();
      this.retransmits++;
    }
  }

  /** Tail-loss probe (RACK-TLP): new data if allowed, else the last segment again, to elicit a SACK. */
  private onTlp(now: number): void {
    if (this.sb.inflight === 0 || this.inRecovery) return;
    this.tlpOutstanding = true;
    this.tlpCount++;
    const mss = this.host.mssFor(this.peerNode);
    if (this.sndNxt < this.sendBuf.end && this.sndUna + this.peerWnd > this.sndNxt) {
      const len = this.safeLength(this.sndNxt, Math.min(mss, this.sendBuf.end - this.sndNxt, this.sndUna + this.peerWnd - this.sndNxt));
      this.sendNew(len, now);
      return;
    }
    const last = this.sb.newestInFlight();
    if (!last) return;
    last.probe = true;
    this.retransmit(last, now);
  }

  /** Zero-window probe: one new byte beyond the window, so any v1 receiver answers with its window. */
  private onPersist(now: number): void {
    if (this.peerWnd > 0 || this.sb.inflight > 0) return;
    if (this.sndNxt < this.sendBuf.end) {
      this.zeroWindowProbes++;
      this.sendNew(1, now);
    } else if (this.sb.count > 0) {
      return;
    }
    this.persistInterval = Math.min(this.persistInterval * 2, this.cfg.zeroWindowProbeMaxMs);
    this.persistAt = now + this.persistInterval;
  }

  /** @internal Host sweep: keepalive probes and idle timeout (v1 §1.12). */
  sweep(now: number): void {
    if (this.gone || this.timeWait || !this.established) return;
    const idle = now - this.lastRecv;
    if (idle >= this.cfg.idleTimeoutMs) {
      if (!this.finSent) {
        this.finSeq = this.sndNxt;
        this.finSent = true;
        this.sendFinPacket();
      }
      this.fail(new StreamError('idle_timeout', `nothing heard from ${this.remote.toString()}:${this.remotePort} for ${Math.round(idle / 1000)} s`), false);
      return;
    }
    if (idle >= this.cfg.keepaliveMs) this.sendKeepalive();
  }

  /**
   * Keepalive probe: one already-acknowledged byte (seq = next − 1). Any receiver treats it as a duplicate,
   * and ours answers a duplicate with an immediate ACK, so both ends hear each other even when only one
   * side's sweep finds the connection idle (a bare empty ACK, as v1 sends, elicits nothing).
   */
  private sendKeepalive(): void {
    const next = this.finSent ? this.finSeq + 1 : this.sndNxt;
    const wnd = this.advWindowUnits();
    const pkt = this.tpl.alloc(Flags.ACK, 1, toWire(next - 1), toWire(this.rcvNxt), wnd);
    pkt[HEADER_LEN] = 0;
    this.host.sendPacket(this.peerNode, seal(pkt));
    this.lastAdvWnd = wnd;
  }

  private clearSendTimers(): void {
    this.rtoAt = this.tlpAt = this.rackAt = this.paceAt = this.nagleAt = this.persistAt = Infinity;
  }

  // ======================================================================================
  // Teardown
  // ======================================================================================

  /** Abort with an error: optionally send RST, remove from the host, surface the error. */
  private fail(err: StreamError, sendRst: boolean): void {
    if (this.gone) return;
    if (sendRst && (this.established || this.dialing)) this.sendRst();
    const dialReject = this.dialReject;
    this.dialResolve = this.dialReject = null;
    this.dialing = false;
    this.closeNow();
    if (dialReject) {
      dialReject(err);
      if (!this.destroyed) this.destroy();
      return;
    }
    const finalCb = this.finalCb;
    this.finalCb = null;
    const pendingCb = this.pendingCb;
    this.pendingCb = null;
    if (!this.destroyed) this.destroy(err);
    finalCb?.(err);
    pendingCb?.(err);
  }

  /** @internal Reset by the host (closePeer, host close). */
  reset(code: string, message: string, sendRst: boolean): void {
    if (this.timeWait) {
      this.closeNow();
      return;
    }
    if (this.gone) return;
    this.fail(new StreamError(code, message), sendRst);
  }

  /** @internal Host shutdown: FIN what we can, then drop the connection quietly. */
  shutdown(): void {
    if (this.timeWait) {
      this.closeNow();
      return;
    }
    if (this.gone) return;
    if (this.established && !this.timeWait && !this.finSent) {
      this.finSeq = this.sndNxt;
      this.finSent = true;
      this.sendFinPacket();
    }
    // Quiet close: the application sees EOF/'close', not an 'error' it may not be listening for.
    const dialReject = this.dialReject;
    this.dialResolve = this.dialReject = null;
    this.dialing = false;
    this.closeNow();
    if (dialReject) dialReject(new StreamError('host_closed', 'host closed'));
    if (!this.eofDelivered && !this.destroyed) {
      this.eofDelivered = true;
      this.push(null);
    }
    const finalCb = this.finalCb;
    this.finalCb = null;
    const pendingCb = this.pendingCb;
    this.pendingCb = null;
    if (!this.destroyed) this.destroy();
    finalCb?.(new StreamError('host_closed', 'host closed'));
    pendingCb?.(new StreamError('host_closed', 'host closed'));
  }

  private closeNow(): void {
    if (this.gone && !this.timeWait) return;
    this.releaseReceived();
    this.gone = true;
    this.timeWait = false;
    this.rtoAt = this.tlpAt = this.rackAt = this.paceAt = this.nagleAt = this.persistAt = Infinity;
    this.delackAt = this.synAt = this.dialDeadline = this.finWaitAt = this.timeWaitAt = Infinity;
    this.host.sched.remove(this);
    this.sb.clear();
    this.reasm.clear();
    this.sendBuf.release();
    this.host.connectionClosed(this);
  }

  // ======================================================================================
  // Duplex plumbing
  // ======================================================================================

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.gone || this.finQueued) {
      cb(new StreamError('connection_closed', 'write after the connection closed'));
      return;
    }
    this.pendingChunk = chunk;
    this.pendingOff = 0;
    this.pendingCb = cb;
    this.feedPendingWrite();
    if (this.established) this.host.markDirty(this);
  }

  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    if (this.gone || this.finQueued) {
      cb(new StreamError('connection_closed', 'write after the connection closed'));
      return;
    }
    const list: Uint8Array[] = [];
    for (const c of chunks) list.push(c.chunk);
    this.pendingChunks = list;
    this.pendingChunk = list.shift() ?? null;
    this.pendingOff = 0;
    this.pendingCb = cb;
    this.feedPendingWrite();
    if (this.established) this.host.markDirty(this);
  }

  /** Copy as much of the pending write as the send buffer has room for; complete it when all is in. */
  private feedPendingWrite(): void {
    while (this.pendingChunk) {
      const queued = this.sendBuf.end - this.sndUna;
      const room = this.cfg.sendBuffer - queued;
      if (room <= 0) return;
      const chunk = this.pendingChunk;
      const left = chunk.length - this.pendingOff;
      const k = left < room ? left : room;
      this.sendBuf.append(chunk, this.pendingOff, k);
      this.pendingOff += k;
      if (this.pendingOff < chunk.length) return;
      this.pendingChunk = this.pendingChunks && this.pendingChunks.length > 0 ? this.pendingChunks.shift()! : null;
      this.pendingOff = 0;
    }
    this.pendingChunks = null;
    const cb = this.pendingCb;
    if (cb) {
      this.pendingCb = null;
      cb();
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.gone) {
      cb(this.timeWait ? null : new StreamError('connection_closed', 'connection closed before end()'));
      return;
    }
    this.finQueued = true;
    this.finalCb = cb;
    if (this.established) this.host.markDirty(this);
  }

  override _read(): void {
    this.windowUpdate();
  }

  /**
   * Also on every consumed chunk: Node stops calling _read() after one that pushed nothing (data arrives
   * asynchronously), so a reader draining a full buffer would otherwise never reopen the window and the
   * sender would wait for a zero-window probe.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Readable.read's own signature
  override read(size?: number): any {
    const chunk: unknown = super.read(size);
    if (chunk !== null) this.windowUpdate();
    return chunk;
  }

  /** The application consumed data: tell a sender that may be window-blocked once the window is useful again. */
  private windowUpdate(): void {
    if (!this.established || this.gone || this.eofDelivered) return;
    const w = this.advWindowUnits();
    const last = this.lastAdvWnd;
    if (w <= last) return;
    const useful = Math.max(2, Math.min(this.cfg.recvBuffer >> 2, 256 * 1024) / WINDOW_UNIT);
    if ((last < useful && w >= useful) || (w - last) * WINDOW_UNIT >= this.cfg.recvBuffer >> 1) {
      this.ackNow = true;
      this.host.markDirty(this);
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.gone && !this.timeWait) {
      if (this.dialing) {
        const rej = this.dialReject;
        this.dialResolve = this.dialReject = null;
        this.dialing = false;
        this.sendRst();
        this.closeNow();
        rej?.(new StreamError('dial_aborted', 'connection destroyed while dialing'));
      } else if (this.finAcked && this.peerFinSeen) {
        // Both directions already finished: TIME_WAIT carries on without the Duplex.
      } else if (this.established && this.eofDelivered && !this.pendingChunk && this.sndUna >= this.sendBuf.end) {
        // Nothing unread and nothing unacknowledged (e.g. a `for await` loop that ran to the end): close
        // gracefully with a FIN, as a kernel does on close() — a RST here would lose nothing but alarm the peer.
        this.finQueued = true;
        this.host.markDirty(this);
      } else {
        // Abortive close (destroy() with data in flight or unread): RST, like a TCP abort.
        if (this.established) this.sendRst();
        this.closeNow();
      }
    }
    const finalCb = this.finalCb;
    this.finalCb = null;
    finalCb?.(err ?? new StreamError('connection_closed', 'connection destroyed'));
    cb(err);
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
