import type { Duplex } from 'node:stream';

/**
 * Bounded set of live connections for one service: refuses beyond `max` (the caller destroys the
 * connection) and destroys everything on close().
 */
export class ConnectionSet {
  private readonly live = new Set<Duplex>();
  refused = 0;
  closed = false;

  constructor(private readonly max: number) {}

  get size(): number {
    return this.live.size;
  }

  /** Track `conn`; false when full or closed (the caller must drop it). */
  add(conn: Duplex): boolean {
    if (this.closed || this.live.size >= this.max) {
      this.refused++;
      return false;
    }
    this.live.add(conn);
    conn.once('close', () => this.live.delete(conn));
    return true;
  }

  delete(conn: Duplex): void {
    this.live.delete(conn);
  }

  closeAll(): void {
    this.closed = true;
    for (const c of this.live) c.destroy();
    this.live.clear();
  }
}

/** End the writable side and make sure the stream is gone soon even if the peer never closes. */
export function finish(conn: Duplex, graceMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    if (conn.destroyed) return resolve();
    const timer = setTimeout(() => conn.destroy(), graceMs);
    timer.unref?.();
    conn.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    conn.end();
    // Drain anything the peer still sends so the close can complete.
    conn.resume();
  });
}
