import { EventEmitter } from 'node:events';
import type { Connection } from './connection.js';

/**
 * A bound stream port. New connections are emitted as 'connection' when someone listens for that
 * event; otherwise they wait in the accept queue (bounded by `backlog`, v1: 64; a SYN that finds it full
 * is answered with RST) for the async iterator:
 *   for await (const conn of listener) { ... }
 */
export class Listener extends EventEmitter implements AsyncIterable<Connection> {
  readonly port: number;
  readonly backlog: number;
  readonly allowHalfOpen: boolean;
  private readonly queue: Connection[] = [];
  private waiters: { resolve: (r: IteratorResult<Connection>) => void }[] = [];
  private _closed = false;

  /** @internal */
  constructor(port: number, backlog: number, allowHalfOpen: boolean, private readonly onClose: (l: Listener) => void) {
    super();
    this.port = port;
    this.backlog = backlog;
    this.allowHalfOpen = allowHalfOpen;
  }

  get closed(): boolean {
    return this._closed;
  }

  /** Connections established but not yet accepted. */
  get pending(): number {
    return this.queue.length;
  }

  /** @internal Would one more connection overflow the accept queue? */
  get full(): boolean {
    return this.listenerCount('connection') === 0 && this.waiters.length === 0 && this.queue.length >= this.backlog;
  }

  /** @internal Hand over a new established connection. */
  offer(conn: Connection): void {
    const w = this.waiters.shift();
    if (w) {
      w.resolve({ value: conn, done: false });
      return;
    }
    if (this.listenerCount('connection') > 0) {
      this.emit('connection', conn);
      return;
    }
    this.queue.push(conn);
    // A queued connection that dies before being accepted leaves the queue.
    conn.once('close', () => {
      const i = this.queue.indexOf(conn);
      if (i >= 0) this.queue.splice(i, 1);
    });
  }

  /** Wait for the next connection (resolves null once the listener is closed). */
  async accept(): Promise<Connection | null> {
    const r = await this.next();
    return r.done ? null : r.value;
  }

  override on(event: string | symbol, fn: (...args: any[]) => void): this {
    super.on(event, fn);
    // Someone started listening for 'connection': hand over what queued up meanwhile.
    if (event === 'connection') this.drainQueue();
    return this;
  }

  override addListener(event: string | symbol, fn: (...args: any[]) => void): this {
    return this.on(event, fn);
  }

  /** Stop accepting: pending (never accepted) connections are reset; established ones are unaffected. */
  close(): void {
    if (this._closed) return;
    this._closed = true;
    this.onClose(this);
    // The application never saw these: reset them without an 'error' nobody listens for.
    for (const c of this.queue.splice(0)) c.destroy();
    for (const w of this.waiters.splice(0)) w.resolve({ value: undefined as never, done: true });
    this.emit('close');
  }

  [Symbol.asyncIterator](): AsyncIterator<Connection> {
    return { next: () => this.next(), return: async () => ({ value: undefined as never, done: true }) };
  }

  private next(): Promise<IteratorResult<Connection>> {
    const c = this.queue.shift();
    if (c) return Promise.resolve({ value: c, done: false });
    if (this._closed) return Promise.resolve({ value: undefined as never, done: true });
    return new Promise((resolve) => this.waiters.push({ resolve }));
  }

  private drainQueue(): void {
    queueMicrotask(() => {
      while (this.queue.length > 0 && this.listenerCount('connection') > 0) this.emit('connection', this.queue.shift()!);
    });
  }
}
