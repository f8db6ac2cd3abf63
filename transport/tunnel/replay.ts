/**
 * Receive-side replay protection (SPEC §3, wire reference §1.5 and §6).
 *
 * Nonces are prefix(4) ‖ counter(8). A peer's counter is only monotonic per prefix: Go restarts it at 1
 * with a fresh random prefix after every key-exchange frame it processes. So we keep one sliding window
 * per (peer key, prefix):
 *
 * - a new prefix starts a new window;
 * - a prefix seen before is checked against its own window, also after the peer has moved on, so
 *   frames recorded under an old prefix can never be replayed under the same key;
 * - at most `maxActivePrefixes` windows are kept; when another prefix arrives the least recently used
 *   window is *retired*: its prefix is remembered (4 bytes) and every later frame under it is refused
 *   (`stale_prefix`), which costs only stragglers of a prefix the peer no longer uses;
 * - at most `maxRetiredPrefixes` prefixes are remembered. At that bound we refuse any *new* prefix under
 *   this key (`prefix_limit`) instead of forgetting an old one: forgetting would re-open replay of its
 *   frames. Honest peers reach the bound only after that many re-exchanges under one key; a new key
 *   (peer restart, new X25519 key) starts a fresh guard.
 *
 * `check` is side-effect free; `commit` is called only after the frame authenticated (v1 updated the
 * window before authentication, so one forged frame with a huge counter made all genuine traffic
 * "too old").
 */

export type ReplayVerdict = 'ok' | 'replay' | 'too_old' | 'stale_prefix' | 'prefix_limit';

export interface ReplayLimits {
  /** Window size in counters; power of two, ≥ 64 (SPEC: ≥ 4096). */
  windowSize: number;
  maxActivePrefixes: number;
  maxRetiredPrefixes: number;
}

export const DEFAULT_REPLAY_LIMITS: Readonly<ReplayLimits> = Object.freeze({
  windowSize: 4096,
  maxActivePrefixes: 4,
  maxRetiredPrefixes: 1024,
});

/** A sliding window of `size` counters below the highest accepted one (ring bitmap, WireGuard-style). */
export class CounterWindow {
  private max = -1;
  private readonly bits: Uint32Array;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 64 || (size & (size - 1)) !== 0) {
      throw new RangeError(`replay window size must be a power of two ≥ 64, got ${size}`);
    }
    this.bits = new Uint32Array(size >>> 5);
  }

  get highest(): number {
    return this.max;
  }

  check(counter: number): 'ok' | 'replay' | 'too_old' {
    if (counter > this.max) return 'ok';
    if (this.max - counter >= this.size) return 'too_old';
    const bit = counter % this.size;
    return this.bits[bit >>> 5]! & (1 << (bit & 31)) ? 'replay' : 'ok';
  }

  /**
   * Record an authenticated counter. Callers check first; committing a stale counter is a no-op.
   * Returns true when the counter is the newest so far (the window advanced).
   */
  commit(counter: number): boolean {
    if (counter > this.max) {
      const gap = this.max < 0 ? this.size : counter - this.max;
      if (gap >= this.size) this.bits.fill(0);
      else {
        // Clear the slots the window slides over (they belong to counters `size` below the new ones).
        for (let c = this.max + 1; c <= counter; ) {
          const bit = c % this.size;
          if ((bit & 31) === 0 && counter - c >= 31) {
            this.bits[bit >>> 5] = 0;
            c += 32;
          } else {
            this.bits[bit >>> 5]! &= ~(1 << (bit & 31));
            c++;
          }
        }
      }
      this.max = counter;
      const bit = counter % this.size;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
      return true;
    }
    if (this.max - counter < this.size) {
      const bit = counter % this.size;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    return false;
  }
}

interface PrefixWindow {
  prefix: number;
  window: CounterWindow;
  lastUse: number;
}

/** Replay state for one peer key: windows per nonce prefix plus the bounded retired-prefix history. */
export class ReplayGuard {
  private readonly active: PrefixWindow[] = [];
  private retired = new Uint32Array(0);
  private retiredCount = 0;
  private uses = 0;
  private readonly limits: ReplayLimits;

  constructor(limits: Partial<ReplayLimits> = {}) {
    this.limits = { ...DEFAULT_REPLAY_LIMITS, ...limits };
    if (this.limits.maxActivePrefixes < 1) throw new RangeError('maxActivePrefixes must be ≥ 1');
    new CounterWindow(this.limits.windowSize); // validate early
  }

  /** Would this (prefix, counter) be accepted? No state changes. */
  check(prefix: number, counter: number): ReplayVerdict {
    const w = this.find(prefix);
    if (w) return w.window.check(counter);
    if (this.isRetired(prefix)) return 'stale_prefix';
    if (this.active.length >= this.limits.maxActivePrefixes && this.retiredCount >= this.limits.maxRetiredPrefixes) {
      return 'prefix_limit';
    }
    return 'ok';
  }

  /**
   * Record an authenticated frame. Call only after `check` returned 'ok' and the tag verified.
   * Returns true if it is the newest frame of its prefix (the tunnel roams only on those, so a
   * delayed or reordered frame from an old address does not pull the endpoint back).
   */
  commit(prefix: number, counter: number): boolean {
    let w = this.find(prefix);
    if (!w) {
      if (this.isRetired(prefix)) return false;
      if (this.active.length >= this.limits.maxActivePrefixes) {
        if (this.retiredCount >= this.limits.maxRetiredPrefixes) return false;
        this.retire();
      }
      w = { prefix, window: new CounterWindow(this.limits.windowSize), lastUse: 0 };
      this.active.push(w);
    }
    w.lastUse = ++this.uses;
    return w.window.commit(counter);
  }

  /** Prefixes with a live window (most recently created last). */
  get activePrefixes(): number[] {
    return this.active.map((w) => w.prefix);
  }

  get retiredPrefixes(): number {
    return this.retiredCount;
  }

  private find(prefix: number): PrefixWindow | undefined {
    // At most a handful of entries; the newest (most likely) is last.
    for (let i = this.active.length - 1; i >= 0; i--) if (this.active[i]!.prefix === prefix) return this.active[i];
    return undefined;
  }

  private isRetired(prefix: number): boolean {
    const r = this.retired;
    for (let i = 0; i < this.retiredCount; i++) if (r[i] === prefix) return true;
    return false;
  }

  private retire(): void {
    let lru = 0;
    for (let i = 1; i < this.active.length; i++) if (this.active[i]!.lastUse < this.active[lru]!.lastUse) lru = i;
    const [gone] = this.active.splice(lru, 1);
    if (this.retiredCount === this.retired.length) {
      const grown = new Uint32Array(Math.min(this.limits.maxRetiredPrefixes, Math.max(8, this.retired.length * 2)));
      grown.set(this.retired);
      this.retired = grown;
    }
    this.retired[this.retiredCount++] = gone!.prefix;
  }
}
