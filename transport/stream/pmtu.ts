import type { StreamConfig } from './config.js';
import type { Scheduler, Timed } from './scheduler.js';

/** What the PMTU prober needs from the host. */
export interface PmtuHost {
  readonly sched: Scheduler;
  /** Send a Control ping whose tunnel datagram is `udpSize` bytes; returns its id (pong routed to onPong). */
  sendProbe(peerNode: number, udpSize: number, path: PathMtu): number;
  /** Forget a probe id (answered or given up). */
  forgetProbe(id: number): void;
  /** The confirmed size changed (log / stats). */
  pmtuChanged(peerNode: number, udpSize: number): void;
}

interface Probe {
  id: number;
  size: number;
  attempt: number;
  deadline: number;
  sentAt: number;
}

/**
 * Datagram PLPMTUD (RFC 8899 style) for one peer, with Control-protocol pings as probes: a v1 peer
 * answers a ping with the same payload, so a pong proves the size in both directions. Probes are not
 * congestion signals and never carry data.
 *
 * Search: the largest confirmed size (`confirmed`, starting at initialUdpPayload) and the smallest size
 * known to fail (`high`) bracket the answer; each round probes up to three sizes at once (the top of
 * the range first, so loopback settles at ~64 KiB in one round trip) and shrinks the bracket until it is
 * within `pmtuSearchTolerance`. A probe size fails after `pmtuMaxProbes` unanswered attempts.
 */
export class PathMtu implements Timed {
  wakeAt = Infinity;
  heapIdx = -1;
  /** Largest UDP payload size known to work. */
  confirmed: number;
  readonly base: number;
  private high: number;
  private probes: Probe[] = [];
  private searching = false;
  private raiseAt = Infinity;
  private pingRtt = 0;
  probesSent = 0;
  searchesDone = 0;
  blackHoles = 0;
  closed = false;

  constructor(
    readonly peerNode: number,
    private readonly cfg: StreamConfig,
    private readonly host: PmtuHost,
  ) {
    this.base = cfg.initialUdpPayload;
    this.confirmed = cfg.initialUdpPayload;
    this.high = cfg.maxUdpPayload + 1;
  }

  get isSearching(): boolean {
    return this.searching;
  }

  /** Begin (or restart) a search upward from the confirmed size. */
  start(now: number, high = this.cfg.maxUdpPayload + 1): void {
    if (this.closed || !this.cfg.pmtuProbing) return;
    this.cancelProbes();
    this.high = Math.max(this.confirmed + 1, Math.min(high, this.cfg.maxUdpPayload + 1));
    this.searching = true;
    this.raiseAt = Infinity;
    this.round(now);
  }

  /** A pong for one of our probes arrived. */
  onPong(id: number, now: number): void {
    const i = this.probes.findIndex((p) => p.id === id);
    if (i < 0) return;
    const p = this.probes[i]!;
    this.probes.splice(i, 1);
    this.host.forgetProbe(id);
    const rtt = now - p.sentAt;
    const first = this.pingRtt === 0;
    this.pingRtt = first ? Math.max(rtt, 0.001) : 0.75 * this.pingRtt + 0.25 * rtt;
    if (first) {
      // Now that the RTT is known, probes still waiting need not wait the initial (conservative) timeout.
      for (const q of this.probes) q.deadline = Math.min(q.deadline, q.sentAt + this.timeout());
    }
    if (p.size > this.confirmed) {
      this.confirmed = p.size;
      this.host.pmtuChanged(this.peerNode, this.confirmed);
    }
    // Smaller probes still outstanding are moot now (the reference ping at the confirmed size included).
    this.dropProbes((q) => q.size <= this.confirmed);
    if (this.probes.length === 0) this.round(now);
  }

  /** Repeated loss of large segments: fall back to the base size and search again later (RFC 8899 §4.3). */
  blackHole(now: number): void {
    if (this.closed || this.confirmed <= this.base) return;
    this.blackHoles++;
    const was = this.confirmed;
    this.cancelProbes();
    this.searching = false;
    this.confirmed = this.base;
    this.high = was; // do not go straight back to the size that just failed
    this.host.pmtuChanged(this.peerNode, this.confirmed);
    this.raiseAt = now + this.cfg.pmtuBlackHoleReprobeMs;
    this.reschedule();
  }

  onWake(now: number): void {
    if (this.closed) return;
    if (this.raiseAt <= now) {
      const high = this.high;
      this.raiseAt = Infinity;
      // After a black hole re-search below the failed size; on the periodic raise, up to the maximum.
      this.start(now, this.blackHoles > 0 && !this.searching && high > this.confirmed ? high : this.cfg.maxUdpPayload + 1);
      return;
    }
    let changed = false;
    for (const p of [...this.probes]) {
      if (p.deadline > now) continue;
      if (p.attempt < this.cfg.pmtuMaxProbes) {
        p.attempt++;
        this.host.forgetProbe(p.id);
        p.id = this.host.sendProbe(this.peerNode, p.size, this);
        this.probesSent++;
        p.sentAt = now;
        p.deadline = now + this.timeout();
      } else {
        // This size does not get through: everything at or above it is out.
        this.high = Math.min(this.high, p.size);
        this.dropProbes((q) => q.size >= this.high);
        changed = true;
      }
    }
    if (changed && this.probes.length === 0) this.round(now);
    else this.reschedule();
  }

  close(): void {
    this.closed = true;
    this.cancelProbes();
    this.host.sched.remove(this);
  }

  private round(now: number): void {
    const lo = this.confirmed;
    const hi = this.high - 1; // largest size not yet known to fail
    const tol = Math.max(8, Math.floor(lo * this.cfg.pmtuSearchTolerance));
    if (hi <= lo || hi - lo <= tol) {
      this.searching = false;
      this.searchesDone++;
      this.raiseAt = this.confirmed < this.cfg.maxUdpPayload ? now + this.cfg.pmtuRaiseIntervalMs : Infinity;
      this.reschedule();
      return;
    }
    const sizes = new Set<number>([hi, Math.floor((lo + hi) / 2), Math.floor(lo + (hi - lo) / 4)]);
    // Until a pong has measured the RTT, also ping at the confirmed size: its answer sets the probe timeout.
    if (this.pingRtt === 0) sizes.add(lo);
    for (const size of sizes) {
      if (size < lo || (size === lo && this.pingRtt > 0)) continue;
      const id = this.host.sendProbe(this.peerNode, size, this);
      this.probesSent++;
      this.probes.push({ id, size, attempt: 1, sentAt: now, deadline: now + this.timeout() });
    }
    this.reschedule();
  }

  /** Initial timeout until the RTT is known, then a few RTTs (RFC 8899 leaves PROBE_TIMER to the PL). */
  private timeout(): number {
    if (this.pingRtt === 0) return this.cfg.pmtuProbeTimeoutMs;
    return Math.max(this.cfg.pmtuProbeMinTimeoutMs, 4 * this.pingRtt);
  }

  private dropProbes(pred: (p: Probe) => boolean): void {
    const keep: Probe[] = [];
    for (const p of this.probes) {
      if (pred(p)) this.host.forgetProbe(p.id);
      else keep.push(p);
    }
    this.probes = keep;
  }

  private cancelProbes(): void {
    for (const p of this.probes) this.host.forgetProbe(p.id);
    this.probes = [];
  }

  private reschedule(): void {
    let t = this.raiseAt;
    for (const p of this.probes) if (p.deadline < t) t = p.deadline;
    this.host.sched.schedule(this, t);
  }
}
