import type { AckEvent, CcParams, CongestionController } from './cc.js';

/**
 * NewReno-style AIMD (slow start with ABC, additive increase, halve on a loss episode, 1 MSS after RTO),
 * unpaced. Not the default: it exists so the controller interface is exercised by two implementations
 * and to compare goodput under random loss.
 */
export class RenoController implements CongestionController {
  readonly name = 'reno';
  cwnd: number;
  ssthresh: number;
  readonly pacingRate = Infinity;
  private mss: number;
  private readonly maxCwnd: number;
  private recovering = false;

  constructor(p: CcParams) {
    this.mss = p.mss;
    this.maxCwnd = p.maxCwnd;
    this.cwnd = Math.min(Math.max(p.initialCwnd, 10 * p.mss), p.maxCwnd);
    this.ssthresh = p.maxCwnd;
  }

  get inRecovery(): boolean {
    return this.recovering;
  }

  setMss(mss: number): void {
    this.mss = mss;
    this.cwnd = Math.max(this.cwnd, 2 * mss);
  }

  onInitialRtt(_rtt: number): void {}

  onAck(ev: AckEvent): void {
    if (this.recovering || ev.ackedBytes <= 0) return;
    if (this.cwnd < this.ssthresh) this.cwnd += Math.min(ev.ackedBytes, 2 * this.mss);
    else this.cwnd += Math.max(1, (this.mss * ev.ackedBytes) / this.cwnd);
    if (this.cwnd > this.maxCwnd) this.cwnd = this.maxCwnd;
  }

  onEnterRecovery(_now: number, _inflight: number, _delivered: number): void {
    if (this.recovering) return;
    this.recovering = true;
    this.ssthresh = Math.max(this.cwnd / 2, 2 * this.mss);
    this.cwnd = this.ssthresh;
  }

  onExitRecovery(_now: number): void {
    this.recovering = false;
  }

  onRto(_now: number): void {
    this.ssthresh = Math.max(this.cwnd / 2, 2 * this.mss);
    this.cwnd = this.mss;
    this.recovering = false;
  }
}
