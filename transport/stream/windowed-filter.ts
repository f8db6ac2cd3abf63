/**
 * Windowed maximum over a sliding window of "time" (rounds or ms), kept with three samples
 * (Kathleen Nichols' algorithm, as used by BBR for its bandwidth filter).
 */
export class WindowedMaxFilter {
  private t0 = 0;
  private v0 = 0;
  private t1 = 0;
  private v1 = 0;
  private t2 = 0;
  private v2 = 0;

  constructor(private readonly window: number) {}

  get value(): number {
    return this.v0;
  }

  reset(t: number, v: number): number {
    this.t0 = this.t1 = this.t2 = t;
    this.v0 = this.v1 = this.v2 = v;
    return v;
  }

  update(t: number, v: number): number {
    if (v >= this.v0 || t - this.t2 > this.window) return this.reset(t, v);
    if (v >= this.v1) {
      this.t1 = this.t2 = t;
      this.v1 = this.v2 = v;
    } else if (v >= this.v2) {
      this.t2 = t;
      this.v2 = v;
    }
    const dt = t - this.t0;
    if (dt > this.window) {
      this.t0 = this.t1;
      this.v0 = this.v1;
      this.t1 = this.t2;
      this.v1 = this.v2;
      this.t2 = t;
      this.v2 = v;
      if (t - this.t0 > this.window) {
        this.t0 = this.t1;
        this.v0 = this.v1;
        this.t1 = this.t2;
        this.v1 = this.v2;
        this.t2 = t;
        this.v2 = v;
      }
    } else if (this.t1 === this.t0 && dt > this.window / 4) {
      this.t1 = this.t2 = t;
      this.v1 = this.v2 = v;
    } else if (this.t2 === this.t1 && dt > this.window / 2) {
      this.t2 = t;
      this.v2 = v;
    }
    return this.v0;
  }
}
