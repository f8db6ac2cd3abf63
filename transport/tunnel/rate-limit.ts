/**
 * Token buckets that gate key-exchange work (SPEC §3: "cheap to attack, expensive to verify").
 * Checked on the raw frame before any X25519/Ed25519 or registry look-up.
 */

/** One token bucket. `take(now)` spends a token if one is available. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  take(now: number): boolean {
    if (now > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.ratePerSec) / 1000);
      this.at = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** True when the bucket has refilled completely (it carries no information any more). */
  full(now: number): boolean {
    return this.tokens + ((now - this.at) * this.ratePerSec) / 1000 >= this.burst;
  }
}

/**
 * Buckets per key (source address), at most `maxKeys` of them. When the table is full, refilled
 * buckets are swept first; if none is, the oldest-inserted one is forgotten (O(1), so a flood of
 * sources cannot make each insertion expensive). The global bucket in front bounds total work.
 */
export class KeyedTokenBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxKeys: number,
  ) {}

  take(key: string, now: number): boolean {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys) {
        this.sweep(now);
        if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      }
      b = new TokenBucket(this.ratePerSec, this.burst, now);
      this.buckets.set(key, b);
    }
    return b.take(now);
  }

  sweep(now: number): void {
    for (const [k, b] of this.buckets) if (b.full(now)) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}

/**
 * The rate-limit key for a source address: IPv4 as is, IPv6 by its /64 (one host usually owns a whole
 * /64, so per-address buckets would be free to multiply). IPv4-mapped IPv6 counts as IPv4.
 */
export function sourceKey(address: string): string {
  if (!address.includes(':')) return address;
  const lower = address.toLowerCase().replace(/%.*$/, '');
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7);
  const [head = '', tail] = lower.split('::');
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...new Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':') + '::/64';
}
