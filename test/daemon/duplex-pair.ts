import { Duplex } from 'node:stream';

/**
 * Two connected in-memory Duplex ends (Node 20 has no stream.duplexPair). Writes on one end are read on
 * the other with real back-pressure: a write's callback waits until the other end's reader pulls.
 * end() on one side is EOF on the other; destroy() on one side destroys the other (like a reset).
 */
export function duplexPair(opts: { highWaterMark?: number } = {}): [Duplex, Duplex] {
  const a = new End(opts.highWaterMark);
  const b = new End(opts.highWaterMark);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

class End extends Duplex {
  peer!: End;
  private waiting: (() => void) | null = null;

  constructor(highWaterMark?: number) {
    super(highWaterMark === undefined ? { allowHalfOpen: true } : { allowHalfOpen: true, highWaterMark });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peer.destroyed) return cb(new Error('peer closed'));
    if (this.peer.push(chunk)) cb();
    else this.peer.waiting = () => cb();
  }

  override _read(): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
    if (!this.peer.destroyed) setImmediate(() => this.peer.destroy());
    cb(err);
  }
}

/** Collect everything readable until EOF/close. */
export function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    const done = () => resolve(Buffer.concat(parts));
    s.once('end', done);
    s.once('close', done);
    s.on('error', () => {});
  });
}

/** Resolve once `cond()` is true (polled; file I/O may be involved). Rejects after `limitMs`. */
export async function until(cond: () => boolean | Promise<boolean>, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  for (let i = 0; ; i++) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((r) => (i < 50 ? setImmediate(r) : setTimeout(r, 2)));
  }
}

/** Wait for a stream's 'close'. */
export function closed(s: Duplex): Promise<void> {
  return new Promise((resolve) => (s.destroyed && s.closed ? resolve() : s.once('close', () => resolve())));
}
