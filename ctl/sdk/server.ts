/**
 * A stream listener on a virtual port: `net.Server`-like (`'connection'` events) and async-iterable
 * (`for await (const conn of server)`). Connections not taken by either are kept in a bounded backlog.
 */
import { EventEmitter } from 'node:events';
import type { IpcEventBody } from '../../daemon/ipc/protocol.js';
import { PilotConnection } from './connection.js';
import type { IpcClient } from './ipc-client.js';

const ITER_BACKLOG = 128;

export class PilotServer extends EventEmitter {
  private closed = false;
  private readonly queue: PilotConnection[] = [];
  private waiters: Array<(r: IteratorResult<PilotConnection>) => void> = [];
  private iterating = 0;

  constructor(
    private readonly ipc: IpcClient,
    readonly port: number,
    private readonly opts: { sendWindow: number; recvCredit: number },
  ) {
    super();
    ipc.onListen(port, (ev) => this.onAccept(ev));
    ipc.once('close', () => this.finish());
  }

  private onAccept(ev: IpcEventBody): void {
    if (typeof ev.conn !== 'number') return;
    const conn = new PilotConnection(
      this.ipc,
      { conn: ev.conn, localPort: this.port, remoteAddr: String(ev.remote_addr ?? ''), remotePort: typeof ev.remote_port === 'number' ? ev.remote_port : 0 },
      this.opts,
    );
    const w = this.waiters.shift();
    if (w) {
      w({ value: conn, done: false });
    } else if (this.iterating > 0 || this.listenerCount('connection') === 0) {
      if (this.queue.length >= ITER_BACKLOG) {
        conn.destroy();
        return;
      }
      this.queue.push(conn);
    }
    if (this.listenerCount('connection') > 0) this.emit('connection', conn);
  }

  /** Stop listening; open connections stay open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.ipc.onListen(this.port, null);
    this.finish();
    if (!this.ipc.closed) await this.ipc.request('unlisten', { port: this.port }).catch(() => undefined);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) w({ value: undefined, done: true });
    this.waiters = [];
    for (const c of this.queue.splice(0)) c.destroy();
    this.emit('close');
  }

  [Symbol.asyncIterator](): AsyncIterator<PilotConnection> {
    this.iterating++;
    return {
      next: () => {
        const c = this.queue.shift();
        if (c) return Promise.resolve({ value: c, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => this.waiters.push(r));
      },
      return: async () => {
        this.iterating--;
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }
}
