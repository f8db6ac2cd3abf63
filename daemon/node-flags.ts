/**
 * V8 flags pilot-daemon runs with (the `pilot-daemon` shebang carries the same list; everything that
 * spawns the daemon passes these).
 *
 * Why: the daemon's live heap is small (≈ 9 MiB) while it moves hundreds of MB/s through buffers. With
 * V8's defaults the old-generation limit sits so close to the live size that the headroom stays below the
 * young generation's capacity, and V8 then starts an incremental mark-compact after nearly every
 * scavenge: ≈ 25 mark-compacts per 256 MiB streamed, a third of the daemon's CPU. A 48 MiB floor for the
 * old generation removes them (0–1 per 256 MiB); a 4 MiB semi-space keeps the young generation, and so
 * RSS, small. Measured in `npm run bench -- daemon` (README).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=48', '--max-semi-space-size=4'];
