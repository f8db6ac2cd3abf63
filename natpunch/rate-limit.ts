/**
 * Token buckets keyed by a string or number, bounded in size. Used to make expensive work (Ed25519
 * verification, registry look-ups, punch fan-out) cost an attacker more than it costs us.
 */
export class KeyedRateLimiter<K extends string | number> {
  private readonly buckets = new Map<K, { tokens: number; at: number }>();

  /**
   * @param ratePerSec tokens added per second
   * @param burst bucket capacity
   * @param maxKeys at most this many buckets are tracked; beyond that the oldest-inserted one is forgotten
   */
  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxKeys: number,
  ) {}

  /** Take one token for `key` at time `now` (ms). False means "over the limit". */
  take(key: K, now: number): boolean {
    let b = this.buckets.get(key);
    if (b === undefined) {
      // O(1) eviction: a full sweep per new key would let a flood of sources cost O(n) each.
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as K);
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    } else if (now > b.at) {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.ratePerSec) / 1000);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Forget buckets that are full again (they carry no information). */
  sweep(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((now - b.at) * this.ratePerSec) / 1000 >= this.burst) this.buckets.delete(k);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}
