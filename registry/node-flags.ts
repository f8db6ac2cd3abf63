/**
 * V8 flags pilot-registry runs with (the `pilot-registry` shebang carries the same list; the demo, the
 * benchmarks and the registry test helper pass these).
 *
 * Why: under signed load the registry's request objects (frames, parsed JSON, promises waiting for a verify
 * worker) live a few milliseconds, but with V8's default 16 MiB semi-space a scavenge runs every ≈ 0.3 s
 * and catches enough of them in flight, and enough allocation sites get pretenured after a burst, that the
 * old generation grows by several MiB/s and a mark-compact (10–45 ms of main-thread pauses plus
 * concurrent marking threads competing for the two cores) follows every few seconds. A 64 MiB semi-space
 * cut the major GCs of three paced 5,000 heartbeats/s runs from 13 to 2–5 and the p99 from 20–32 ms to
 * 5–9 ms in alternating runs; it costs ≈ 250 B of RSS per registered node (602 → 847 B at 100,000).
 * Measured in `npm run bench -- registry` (README).
 */
export const REGISTRY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];
