import type { AckEvent, CcParams, CongestionController } from './cc.js';
import { WindowedMaxFilter } from './windowed-filter.js';

/**
 * A BBR(v1)-like controller: model the path as (bottleneck bandwidth, min RTT), pace at gain × bandwidth
 * and keep cwnd ≈ 2 × BDP (+ ACK-aggregation allowance). Loss only triggers packet conservation for one
 * round, never a multiplicative decrease: isolated random loss does not shrink the sending rate, which
 * is what keeps goodput up on lossy paths (SPEC §4, benchmark goal at 1 % loss).
 */

const enum Mode {
  Startup,
  Drain,
  ProbeBw,
  ProbeRtt,
}

const HIGH_GAIN = 2 / Math.LN2; // 2.885: doubles the sending rate each round in STARTUP
const DRAIN_GAIN = 1 / HIGH_GAIN;
const CWND_GAIN = 2;
const PACING_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
const BW_WINDOW_ROUNDS = 10;
const MIN_RTT_WINDOW_MS = 10_000;
const PROBE_RTT_MS = 200;
const FULL_BW_THRESH = 1.25;
const FULL_BW_ROUNDS = 3;
const MIN_CWND_SEGS = 4;
/** ACK-aggregation allowance is measured over this many rounds. */
const EXTRA_ACKED_ROUNDS = 5;

export class BbrController implements CongestionController {
  readonly name = 'bbr';
  cwnd: number;
  pacingRate = Infinity;
  private mss: number;
  private readonly initialCwnd: number;
  private readonly maxCwnd: number;
  private readonly random: () => number;
  private readonly minRttFloor: number;

  private mode = Mode.Startup;
  private pacingGain = HIGH_GAIN;
  private cwndGain = HIGH_GAIN;
  private readonly maxBw = new WindowedMaxFilter(BW_WINDOW_ROUNDS);
  private minRtt = Infinity;
  private minRttStamp = 0;
  private roundCount = 0;
  private nextRoundDelivered = 0;
  private roundStart = false;
  private fullBw = 0;
  private fullBwCount = 0;
  private filledPipe = false;
  private cycleIdx = 0;
  private cycleStamp = 0;
  private probeRttDoneStamp = 0;
  private probeRttRoundDone = false;
  private priorCwnd = 0;
  private packetConservation = false;
  private recovering = false;
  private initRtt = 0;
  // ACK aggregation (extra_acked)
  private readonly extraAcked = new WindowedMaxFilter(EXTRA_ACKED_ROUNDS);
  private ackEpochStart = 0;
  private ackEpochAcked = 0;

  constructor(p: CcParams) {
    this.mss = p.mss;
    this.initialCwnd = Math.max(p.initialCwnd, 10 * p.mss);
    this.maxCwnd = p.maxCwnd;
    this.random = p.random;
    this.minRttFloor = p.minRttFloor ?? 0;
    this.cwnd = Math.min(this.initialCwnd, this.maxCwnd);
  }

  get ssthresh(): number {
    return Math.round(this.targetCwnd());
  }

  get inRecovery(): boolean {
    return this.recovering;
  }

  /** Bottleneck bandwidth estimate (bytes/ms). */
  get bandwidth(): number {
    return this.maxBw.value;
  }

  get modeName(): string {
    return ['startup', 'drain', 'probe_bw', 'probe_rtt'][this.mode]!;
  }

  setMss(mss: number): void {
    this.mss = mss;
    this.cwnd = Math.max(this.cwnd, MIN_CWND_SEGS * mss);
  }

  onInitialRtt(rtt: number): void {
    if (rtt > 0 && this.initRtt === 0) {
      this.initRtt = rtt;
      if (this.maxBw.value === 0) this.pacingRate = (HIGH_GAIN * this.initialCwnd) / Math.max(rtt, 0.05);
    }
  }

  onAck(ev: AckEvent): void {
    const rs = ev.rs;
    const now = ev.now;
    // Round-trip counting: a round ends when a segment sent after the previous round's end is delivered.
    this.roundStart = false;
    if (rs && rs.priorDelivered >= this.nextRoundDelivered) {
      this.nextRoundDelivered = ev.delivered;
      this.roundCount++;
      this.roundStart = true;
      this.packetConservation = false;
    }
    // Bandwidth: app-limited samples only count when they raise the estimate.
    if (rs && rs.deliveryRate > 0 && (!rs.isAppLimited || rs.deliveryRate >= this.maxBw.value)) {
      this.maxBw.update(this.roundCount, rs.deliveryRate);
    }
    this.updateAckAggregation(now, ev.ackedBytes);
    this.checkFullPipe(rs !== null && rs.isAppLimited);
    this.checkDrain(now, ev.inflight);
    if (this.mode === Mode.ProbeBw) this.advanceCycle(now, ev.inflight, ev.lostBytes);
    this.updateMinRtt(now, rs ? rs.rtt : -1, ev.inflight, ev.delivered);
    this.setPacingRate();
    this.setCwnd(ev.ackedBytes, ev.lostBytes, ev.inflight, ev.delivered);
  }

  onEnterRecovery(_now: number, inflight: number, delivered: number): void {
    if (this.recovering) return;
    this.recovering = true;
    this.priorCwnd = this.saveCwnd();
    this.cwnd = Math.max(inflight + this.mss, MIN_CWND_SEGS * this.mss);
    this.packetConservation = true;
    // Conservation lasts one round: until data sent from now on is delivered.
    this.nextRoundDelivered = delivered;
  }

  onExitRecovery(_now: number): void {
    if (!this.recovering) return;
    this.recovering = false;
    this.packetConservation = false;
    this.cwnd = Math.min(this.maxCwnd, Math.max(this.cwnd, this.priorCwnd));
  }

  onRto(_now: number): void {
    if (!this.recovering) this.priorCwnd = this.saveCwnd();
    this.recovering = true;
    this.packetConservation = true;
    this.cwnd = this.mss;
  }

  private saveCwnd(): number {
    if (!this.recovering && this.mode !== Mode.ProbeRtt) return this.cwnd;
    return Math.max(this.priorCwnd, this.cwnd);
  }

  private bdp(gain: number): number {
    const bw = this.maxBw.value;
    if (this.minRtt === Infinity || bw === 0) return this.initialCwnd;
    return gain * bw * Math.max(this.minRtt, this.minRttFloor);
  }

  private targetCwnd(): number {
    // BDP × gain, plus room for ACK aggregation and three segments of quantisation budget.
    let t = this.bdp(this.cwndGain) + this.extraAcked.value + 3 * this.mss;
    if (this.mode === Mode.ProbeBw && this.cycleIdx === 0) t += 2 * this.mss;
    return t;
  }

  private updateAckAggregation(now: number, acked: number): void {
    const bw = this.maxBw.value;
    if (acked <= 0 || bw === 0) return;
    let expected = bw * (now - this.ackEpochStart);
    if (this.ackEpochAcked <= expected || this.ackEpochAcked + acked > 16 * 1024 * 1024) {
      this.ackEpochAcked = 0;
      this.ackEpochStart = now;
      expected = 0;
    }
    this.ackEpochAcked += acked;
    const extra = Math.min(this.ackEpochAcked - expected, this.cwnd);
    this.extraAcked.update(this.roundCount, extra);
  }

  private checkFullPipe(appLimited: boolean): void {
    if (this.filledPipe || !this.roundStart || appLimited) return;
    const bw = this.maxBw.value;
    if (bw >= this.fullBw * FULL_BW_THRESH) {
      this.fullBw = bw;
      this.fullBwCount = 0;
      return;
    }
    if (++this.fullBwCount >= FULL_BW_ROUNDS) this.filledPipe = true;
  }

  private checkDrain(now: number, inflight: number): void {
    if (this.mode === Mode.Startup && this.filledPipe) {
      this.mode = Mode.Drain;
      this.pacingGain = DRAIN_GAIN;
      this.cwndGain = HIGH_GAIN;
    }
    if (this.mode === Mode.Drain && inflight <= this.bdp(1)) this.enterProbeBw(now);
  }

  private enterProbeBw(now: number): void {
    this.mode = Mode.ProbeBw;
    this.cwndGain = CWND_GAIN;
    // Start at a random phase other than the 0.75 drain phase.
    let idx = Math.floor(this.random() * (PACING_GAINS.length - 1));
    if (idx >= 1) idx++;
    this.cycleIdx = idx % PACING_GAINS.length;
    this.pacingGain = PACING_GAINS[this.cycleIdx]!;
    this.cycleStamp = now;
  }

  private advanceCycle(now: number, inflight: number, lost: number): void {
    const elapsed = now - this.cycleStamp > this.minRtt;
    const gain = this.pacingGain;
    let next = elapsed;
    if (gain > 1) next = elapsed && (lost > 0 || inflight >= this.bdp(gain));
    else if (gain < 1) next = elapsed || inflight <= this.bdp(1);
    if (!next) return;
    this.cycleIdx = (this.cycleIdx + 1) % PACING_GAINS.length;
    this.cycleStamp = now;
    this.pacingGain = PACING_GAINS[this.cycleIdx]!;
  }

  private updateMinRtt(now: number, rtt: number, inflight: number, delivered: number): void {
    const expired = now > this.minRttStamp + MIN_RTT_WINDOW_MS;
    if (rtt >= 0 && (rtt < this.minRtt || expired)) {
      this.minRtt = rtt;
      this.minRttStamp = now;
    }
    if (expired && this.mode !== Mode.ProbeRtt && this.minRtt !== Infinity) {
      this.mode = Mode.ProbeRtt;
      this.pacingGain = 1;
      this.cwndGain = 1;
      this.priorCwnd = this.saveCwnd();
      this.probeRttDoneStamp = 0;
    }
    if (this.mode === Mode.ProbeRtt) {
      if (this.probeRttDoneStamp === 0 && inflight <= MIN_CWND_SEGS * this.mss) {
        this.probeRttDoneStamp = now + Math.max(PROBE_RTT_MS, this.minRtt);
        this.probeRttRoundDone = false;
        this.nextRoundDelivered = delivered;
      } else if (this.probeRttDoneStamp !== 0) {
        if (this.roundStart) this.probeRttRoundDone = true;
        if (this.probeRttRoundDone && now >= this.probeRttDoneStamp) {
          this.minRttStamp = now;
          this.cwnd = Math.max(this.cwnd, this.priorCwnd);
          if (this.filledPipe) this.enterProbeBw(now);
          else {
            this.mode = Mode.Startup;
            this.pacingGain = HIGH_GAIN;
            this.cwndGain = HIGH_GAIN;
          }
        }
      }
    }
  }

  private setPacingRate(): void {
    const bw = this.maxBw.value;
    if (bw === 0) return;
    const rate = this.pacingGain * bw;
    // In STARTUP only ever raise the rate (a low early sample must not throttle the ramp).
    if (this.filledPipe || rate > this.pacingRate || this.pacingRate === Infinity) this.pacingRate = rate;
  }

  private setCwnd(acked: number, lost: number, inflight: number, delivered: number): void {
    const minCwnd = MIN_CWND_SEGS * this.mss;
    if (this.recovering && lost > 0) this.cwnd = Math.max(this.cwnd - lost, this.mss);
    if (this.recovering && this.packetConservation) {
      this.cwnd = Math.max(this.cwnd, inflight + acked);
    } else {
      const target = this.targetCwnd();
      if (this.filledPipe) this.cwnd = Math.min(this.cwnd + acked, target);
      else if (this.cwnd < target || delivered < this.initialCwnd) this.cwnd += acked;
      this.cwnd = Math.max(this.cwnd, minCwnd);
    }
    if (this.mode === Mode.ProbeRtt) this.cwnd = Math.min(this.cwnd, minCwnd);
    if (this.cwnd > this.maxCwnd) this.cwnd = this.maxCwnd;
  }
}
