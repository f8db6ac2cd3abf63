import type { Clock, TimerHandle } from '../clock.js';

/** Something with one wake-up deadline, kept in the host's scheduler (an indexed min-heap). */
export interface Timed {
  /** Deadline currently in the heap (Infinity when not scheduled). Owned by the scheduler. */
  wakeAt: number;
  /** Index in the heap (-1 when not scheduled). Owned by the scheduler. */
  heapIdx: number;
  onWake(now: number): void;
}

/**
 * One scheduler per host (WireGuard habit): every connection, probe and ping keeps a single deadline
 * here and a single clock timer is armed for the earliest. Moving a deadline later is free: callers just
 * leave the earlier entry, wake up early once and re-arm, so per-packet work needs no heap operations.
 */
export class Scheduler {
  private readonly heap: Timed[] = [];
  private handle: TimerHandle | null = null;
  private armedAt = Infinity;
  private readonly resolution: number;
  private running = false;
  private closed = false;

  constructor(private readonly clock: Clock) {
    this.resolution = clock.resolution ?? 0;
  }

  get size(): number {
    return this.heap.length;
  }

  /** Set `item`'s deadline to `at` (Infinity removes it). */
  schedule(item: Timed, at: number): void {
    if (this.closed) return;
    if (at === Infinity) {
      this.remove(item);
      return;
    }
    if (item.heapIdx < 0) {
      item.wakeAt = at;
      item.heapIdx = this.heap.length;
      this.heap.push(item);
      this.up(item.heapIdx);
    } else {
      const old = item.wakeAt;
      item.wakeAt = at;
      if (at < old) this.up(item.heapIdx);
      else this.down(item.heapIdx);
    }
    if (!this.running) this.arm();
  }

  /** Only ever moves the deadline earlier (the lazy pattern described above). */
  scheduleEarlier(item: Timed, at: number): void {
    if (at < item.wakeAt) this.schedule(item, at);
  }

  remove(item: Timed): void {
    const i = item.heapIdx;
    if (i < 0) return;
    const last = this.heap.pop()!;
    if (last !== item) {
      this.heap[i] = last;
      last.heapIdx = i;
      this.down(i);
      this.up(last.heapIdx);
    }
    item.heapIdx = -1;
    item.wakeAt = Infinity;
  }

  close(): void {
    this.closed = true;
    if (this.handle) this.clock.clearTimer(this.handle);
    this.handle = null;
    for (const it of this.heap) {
      it.heapIdx = -1;
      it.wakeAt = Infinity;
    }
    this.heap.length = 0;
  }

  /** Run everything due (also used by tests with a virtual clock). */
  runDue(): void {
    if (this.closed) return;
    this.running = true;
    try {
      const now = this.clock.now();
      const limit = now + this.resolution;
      // Bound the work per call so a pathological re-arm loop cannot spin forever.
      for (let n = 0; n < 100_000 && this.heap.length > 0 && this.heap[0]!.wakeAt <= limit; n++) {
        const it = this.heap[0]!;
        this.remove(it);
        it.onWake(now);
      }
    } finally {
      this.running = false;
    }
    this.arm();
  }

  private readonly fire = (): void => {
    this.handle = null;
    this.armedAt = Infinity;
    this.runDue();
  };

  private arm(): void {
    if (this.closed) return;
    const next = this.heap.length > 0 ? this.heap[0]!.wakeAt : Infinity;
    if (next === Infinity) {
      if (this.handle) {
        this.clock.clearTimer(this.handle);
        this.handle = null;
        this.armedAt = Infinity;
      }
      return;
    }
    // An armed timer that fires no later than needed (within resolution) is kept.
    if (this.handle && this.armedAt <= next + this.resolution) return;
    if (this.handle) this.clock.clearTimer(this.handle);
    const delay = Math.max(0, next - this.clock.now());
    this.armedAt = next;
    this.handle = this.clock.setTimer(this.fire, delay);
  }

  private up(i: number): void {
    const h = this.heap;
    const it = h[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p]!;
      if (parent.wakeAt <= it.wakeAt) break;
      h[i] = parent;
      parent.heapIdx = i;
      i = p;
    }
    h[i] = it;
    it.heapIdx = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = h.length;
    const it = h[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && h[r]!.wakeAt < h[l]!.wakeAt ? r : l;
      const child = h[c]!;
      if (child.wakeAt >= it.wakeAt) break;
      h[i] = child;
      child.heapIdx = i;
      i = c;
    }
    h[i] = it;
    it.heapIdx = i;
  }
}
