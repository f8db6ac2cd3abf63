/** Token bucket: `rate` tokens per second, at most `burst` stored. Time in ms from the injected clock. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly rate: number, private readonly burst: number, now: number) {
    this.tokens = burst;
    this.last = now;
  }

  take(now: number): boolean {
    const dt = now - this.last;
    if (dt > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (dt * this.rate) / 1000);
      this.last = now;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }
}

/** One token bucket per source node, at most `maxSources` tracked (oldest evicted: bounded, SPEC habits). */
export class PerSourceLimiter {
  private readonly buckets = new Map<number, TokenBucket>();

  constructor(private readonly rate: number, private readonly maxSources: number) {}

  take(source: number, now: number): boolean {
    let b = this.buckets.get(source);
    if (!b) {
      if (this.buckets.size >= this.maxSources) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      b = new TokenBucket(this.rate, this.rate, now);
      this.buckets.set(source, b);
    }
    return b.take(now);
  }

  get size(): number {
    return this.buckets.size;
  }
}
