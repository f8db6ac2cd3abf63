/**
 * One injectable clock for every engine timer (DESIGN.md: injected clock, no globals).
 * Times are milliseconds on a monotonic scale; fractions are allowed (pacing needs sub-ms precision).
 */
export type TimerHandle = object;

export interface Clock {
  /** Monotonic milliseconds (may be fractional). */
  now(): number;
  /** Run `fn` once after `ms` milliseconds. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  clearTimer(h: TimerHandle): void;
  /**
   * Run `fn` soon, after the I/O work of the current event-loop turn (`setImmediate` on the real clock).
   * The engine uses it to batch ACKs and sends per turn. Optional: without it `setImmediate` is used.
   */
  defer?(fn: () => void): void;
  /** Timer granularity in ms: deadlines within this much of "now" are treated as due (real timers: 1 ms). */
  readonly resolution?: number;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  defer: (fn) => {
    setImmediate(fn);
  },
  resolution: 1,
};
