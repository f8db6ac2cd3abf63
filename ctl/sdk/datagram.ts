/**
 * A datagram socket bound on a virtual port: `send(addr, port, data)`, `'message'` events
 * `(data, {addr, port})` and an async iterator of `{data, addr, port}`. Unreliable (SPEC §4): a consumer
 * that does not keep up loses datagrams (bounded queue, counted in `dropped`).
 */
import { EventEmitter } from 'node:events';
import type { IpcEventBody } from '../../daemon/ipc/protocol.js';
import { PilotSdkError } from './errors.js';
import type { IpcClient } from './ipc-client.js';

export interface PilotDatagram {
  data: Buffer;
  addr: string;
  port: number;
}

const QUEUE_MAX = 1024;

export class PilotDatagramSocket extends EventEmitter {
  private closed = false;
  private readonly queue: PilotDatagram[] = [];
  private waiters: Array<(r: IteratorResult<PilotDatagram>) => void> = [];
  private iterating = 0;
  /** Datagrams dropped because the iterator consumer fell behind. */
  dropped = 0;

  constructor(
    private readonly ipc: IpcClient,
    readonly port: number,
  ) {
    super();
    ipc.onDatagram(port, (ev) => this.onDatagram(ev));
    ipc.once('close', () => this.finish());
  }

  /** Send one datagram from this socket's port. `addr` may be an address, node ID or hostname. */
  async send(addr: string | number, port: number, data: Uint8Array | string): Promise<void> {
    if (this.closed) throw new PilotSdkError('closed', `datagram socket on port ${this.port} is closed`);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    await this.ipc.request('datagram_send', { addr: String(addr), port, data: bytes, src_port: this.port });
  }

  private onDatagram(ev: IpcEventBody): void {
    if (!(ev.data instanceof Uint8Array)) return;
    const d: PilotDatagram = {
      data: Buffer.isBuffer(ev.data) ? ev.data : Buffer.from(ev.data),
      addr: String(ev.src_addr ?? ''),
      port: typeof ev.src_port === 'number' ? ev.src_port : 0,
    };
    this.emit('message', d.data, { addr: d.addr, port: d.port });
    const w = this.waiters.shift();
    if (w) w({ value: d, done: false });
    else if (this.iterating > 0) {
      if (this.queue.length >= QUEUE_MAX) this.dropped++;
      else this.queue.push(d);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.ipc.onDatagram(this.port, null);
    this.finish();
    if (!this.ipc.closed) await this.ipc.request('datagram_unbind', { port: this.port }).catch(() => undefined);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) w({ value: undefined, done: true });
    this.waiters = [];
    this.emit('close');
  }

  [Symbol.asyncIterator](): AsyncIterator<PilotDatagram> {
    this.iterating++;
    return {
      next: () => {
        const d = this.queue.shift();
        if (d) return Promise.resolve({ value: d, done: false });
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
