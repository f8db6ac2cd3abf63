/**
 * Retransmission timeout per RFC 6298 (wire reference §3.2 clamps): SRTT α = 1/8, RTTVAR β = 1/4,
 * RTO = SRTT + max(G, 4·RTTVAR) clamped to [min, max], initial RTO until the first sample, exponential
 * backoff on timeouts. Karn's rule is the caller's job: only feed samples from segments sent once.
 */
export class RttEstimator {
  srtt = 0;
  rttvar = 0;
  /** Smallest sample seen (used by RACK's reordering window). */
  minRtt = Infinity;
  latest = 0;
  hasSample = false;
  private backoff = 1;

  constructor(
    private readonly initialRto: number,
    private readonly minRto: number,
    private readonly maxRto: number,
    private readonly granularity: number,
  ) {}

  sample(rtt: number): void {
    if (!(rtt >= 0)) return;
    this.latest = rtt;
    if (rtt < this.minRtt) this.minRtt = rtt;
    if (!this.hasSample) {
      this.srtt = rtt;
      this.rttvar = rtt / 2;
      this.hasSample = true;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt);
      this.srtt = 0.875 * this.srtt + 0.125 * rtt;
    }
    // A fresh measurement ends the backoff (RFC 6298 §5: the timer is recomputed from new samples).
    this.backoff = 1;
  }

  /** Current RTO in ms, including backoff. */
  get rto(): number {
    const base = this.hasSample ? this.srtt + Math.max(this.granularity, 4 * this.rttvar) : this.initialRto;
    return Math.min(this.maxRto, Math.max(this.minRto, base) * this.backoff);
  }

  /** Double the RTO after a timeout (capped by maxRto through `rto`). */
  backOff(): void {
    if (this.backoff < 1 << 16) this.backoff *= 2;
  }

  resetBackoff(): void {
    this.backoff = 1;
  }

  get backoffFactor(): number {
    return this.backoff;
  }
}
