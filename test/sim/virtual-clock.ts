import type { Clock, TimerHandle } from '../../transport/clock.js';

interface VTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A deterministic clock for engine tests: time moves only when `run`/`advance` jump to the next timer,
 * and only once nothing else is pending (deferred engine work, Node stream callbacks, promises).
 * 20 ms RTT and multi-second timeouts therefore cost no wall time.
 */
export class VirtualClock implements Clock {
  readonly resolution = 0;
  private t = 0;
  private seqNo = 0;
  private heap: VTimer[] = [];
  private deferred: (() => void)[] = [];
  /** Timers run so far (for diagnostics). */
  steps = 0;

  constructor(start = 1000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const tm: VTimer = { at: this.t + Math.max(0, ms), seq: this.seqNo++, fn, cancelled: false };
    this.push(tm);
    return tm;
  }

  clearTimer(h: TimerHandle): void {
    (h as VTimer).cancelled = true;
  }

  defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  /** Time of the next live timer (Infinity if none). */
  nextTimerAt(): number {
    this.dropCancelled();
    return this.heap.length > 0 ? this.heap[0]!.at : Infinity;
  }

  /** Run deferred work; returns true if there was any. */
  runDeferred(): boolean {
    let any = false;
    for (let guard = 0; this.deferred.length > 0 && guard < 10_000; guard++) {
      const q = this.deferred;
      this.deferred = [];
      for (const fn of q) fn();
      any = true;
    }
    return any;
  }

  /** Jump to the next timer time and run every timer due then. Returns false if there is none. */
  step(limit = Infinity): boolean {
    const next = this.nextTimerAt();
    if (next === Infinity || next > limit) return false;
    if (next > this.t) this.t = next;
    for (let guard = 0; guard < 100_000; guard++) {
      this.dropCancelled();
      const top = this.heap[0];
      if (!top || top.at > this.t) break;
      this.pop();
      this.steps++;
      top.fn();
    }
    return true;
  }

  /**
   * Advance virtual time until `until()` holds. Between steps the real event loop gets a turn so stream
   * callbacks and promises settle. Rejects if virtual time passes `maxMs` from now or timers run out.
   */
  async run(until: () => boolean, maxMs = 600_000): Promise<void> {
    const deadline = this.t + maxMs;
    for (;;) {
      await settle();
      if (this.runDeferred()) continue;
      if (until()) return;
      if (!this.step(deadline)) {
        await settle();
        if (this.runDeferred()) continue;
        if (until()) return;
        throw new Error(`virtual clock: condition not reached by t=${this.t} (deadline ${deadline}, next timer ${this.nextTimerAt()})`);
      }
    }
  }

  /** Let `ms` of virtual time pass, running everything due. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      await settle();
      if (this.runDeferred()) continue;
      if (!this.step(target)) break;
    }
    if (this.t < target) this.t = target;
    await settle();
    this.runDeferred();
    await settle();
  }

  /** Resolve after `ms` of virtual time (for test code that wants to wait, e.g. a paused reader). */
  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.setTimer(r, ms));
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && this.heap[0]!.cancelled) this.pop();
  }

  private push(tm: VTimer): void {
    const h = this.heap;
    h.push(tm);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, tm)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = tm;
  }

  private pop(): VTimer {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && less(h[r]!, h[l]!) ? r : l;
        if (less(last, h[c]!)) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

function less(a: VTimer, b: VTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

export function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
