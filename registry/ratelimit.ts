/**
 * Per-IP token buckets per operation category (SPEC §6). Tables are bounded: when full, the oldest
 * bucket is evicted (an evicted IP starts again with a full bucket), evictions are counted.
 */
export const RateCategories = ['register_new', 'register', 'heartbeat', 'read', 'write', 'handshake', 'admin', 'subscribe'] as const;
export type RateCategory = (typeof RateCategories)[number];

export interface BucketSpec {
  /** tokens added per second */
  rate: number;
  /** bucket size */
  burst: number;
}

export type RateLimitConfig = Record<RateCategory, BucketSpec | null>;

/** Defaults: v1's 10 registrations/min/IP for unknown keys; generous elsewhere (one IP may be a NAT). */
export const DEFAULT_RATE_LIMITS: RateLimitConfig = {
  register_new: { rate: 10 / 60, burst: 10 },
  register: { rate: 5, burst: 50 },
  heartbeat: { rate: 200, burst: 1000 },
  read: { rate: 1000, burst: 2000 },
  write: { rate: 100, burst: 200 },
  handshake: { rate: 20, burst: 100 },
  admin: { rate: 20, burst: 50 },
  subscribe: { rate: 10, burst: 100 },
};

interface Bucket {
  tokens: number;
  last: number;
}

export class RateLimiter {
  private readonly tables = new Map<RateCategory, Map<string, Bucket>>();
  evictions = 0;

  constructor(
    private readonly config: RateLimitConfig,
    private readonly maxKeysPerCategory = 65536,
  ) {}

  /** Take one token for `key` (an IP) in `category`; false when empty. `null` spec = unlimited. */
  take(category: RateCategory, key: string, nowMs: number): boolean {
    const spec = this.config[category];
    if (!spec) return true;
    let table = this.tables.get(category);
    if (!table) this.tables.set(category, (table = new Map()));
    let b = table.get(key);
    if (!b) {
      if (table.size >= this.maxKeysPerCategory) {
        table.delete(table.keys().next().value!);
        this.evictions++;
      }
      b = { tokens: spec.burst, last: nowMs };
      table.set(key, b);
    } else {
      b.tokens = Math.min(spec.burst, b.tokens + (Math.max(0, nowMs - b.last) / 1000) * spec.rate);
      b.last = nowMs;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drop buckets that have refilled completely (they carry no information). */
  sweep(nowMs: number): void {
    for (const [cat, table] of this.tables) {
      const spec = this.config[cat];
      if (!spec) continue;
      for (const [k, b] of table) {
        if (b.tokens + ((nowMs - b.last) / 1000) * spec.rate >= spec.burst) table.delete(k);
      }
    }
  }

  get size(): number {
    let n = 0;
    for (const t of this.tables.values()) n += t.size;
    return n;
  }
}
