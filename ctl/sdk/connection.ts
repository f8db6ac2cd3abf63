/**
 * A Pilot stream connection as a Node `Duplex` (SPEC §8 flow control):
 * - writes go out as ≤ IPC_MAX_DATA_CHUNK Data frames (or `send` requests to a daemon without them),
 *   gathered from the written buffers without copying; at most `sendWindow` bytes are unacknowledged, so
 *   `write()` returns false / the write callback waits while the remote is slow (back-pressure);
 * - received `data` events consume receive credit; credit is granted back as the consumer reads (when the
 *   readable buffer drains), so a slow consumer stops the daemon reading, which closes the transport window.
 */
import { Duplex } from 'node:stream';
import { IPC_MAX_DATA_CHUNK, SendWindow, type IpcEventBody } from '../../daemon/ipc/protocol.js';
import { PilotSdkError } from './errors.js';
import type { IpcClient } from './ipc-client.js';

export interface ConnectionInfo {
  conn: number;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
}

export class PilotConnection extends Duplex {
  readonly id: number;
  readonly localPort: number;
  readonly remoteAddr: string;
  readonly remotePort: number;
  private readonly window: SendWindow;
  private windowWaiters: Array<() => void> = [];
  private sendError: Error | null = null;
  /** Bytes received but not yet granted back to the daemon. */
  private ungranted = 0;
  private readonly grantThreshold: number;
  private remoteClosed = false;
  private localCloseSent = false;

  constructor(
    private readonly ipc: IpcClient,
    info: ConnectionInfo,
    opts: { sendWindow: number; recvCredit: number },
  ) {
    // As net.Socket: once the peer ended and our 'end' handlers ran (they may still write a reply), our
    // side ends too, so a connection never lingers half-open because one program forgot to end it.
    super({ allowHalfOpen: false, readableHighWaterMark: Math.max(64 * 1024, opts.recvCredit), writableHighWaterMark: IPC_MAX_DATA_CHUNK });
    this.id = info.conn;
    this.localPort = info.localPort;
    this.remoteAddr = info.remoteAddr;
    this.remotePort = info.remotePort;
    this.window = new SendWindow(opts.sendWindow);
    this.grantThreshold = Math.max(1, Math.floor(opts.recvCredit / 4));
    ipc.onConn(this.id, (ev) => this.onEvent(ev));
  }

  /** Remote address and port as `N:NNNN.HHHH.LLLL:port`. */
  get remote(): string {
    return `${this.remoteAddr}:${this.remotePort}`;
  }

  private onEvent(ev: IpcEventBody): void {
    switch (ev.event) {
      case 'data': {
        const data = ev.data;
        if (!(data instanceof Uint8Array)) return;
        const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        this.ungranted += buf.length;
        if (this.push(buf)) this.maybeGrant(false);
        return;
      }
      case 'sent':
        if (typeof ev.bytes === 'number') this.release(ev.bytes);
        return;
      case 'eof':
        this.push(null);
        return;
      case 'closed': {
        this.remoteClosed = true;
        this.ipc.onConn(this.id, null);
        const code = typeof ev.code === 'string' ? ev.code : undefined;
        if (code && !(this.readableEnded && this.writableFinished)) {
          const reason = typeof ev.reason === 'string' ? ev.reason : code;
          this.failWaiters(new PilotSdkError(code, `connection ${this.id} closed: ${reason}`));
          this.destroy(new PilotSdkError(code, `connection ${this.id} to ${this.remote} closed: ${reason}`));
        } else {
          // Clean close: keep buffered data readable (destroying now would drop it); finish our side.
          this.push(null);
          if (this.windowWaiters.length > 0) this.failWaiters(new PilotSdkError('conn_closed', `connection ${this.id} is closed`));
          if (!this.writableEnded) this.end();
        }
        return;
      }
      case 'error': {
        const code = typeof ev.code === 'string' ? ev.code : 'internal';
        const message = typeof ev.message === 'string' ? ev.message : code;
        this.destroy(new PilotSdkError(code, `connection ${this.id}: ${message}`));
        return;
      }
    }
  }

  private maybeGrant(force: boolean): void {
    if (this.remoteClosed || this.ungranted === 0) return;
    if (!force && this.ungranted < this.grantThreshold) return;
    const n = this.ungranted;
    this.ungranted = 0;
    this.ipc.notify('credit', { conn: this.id, bytes: n });
  }

  override _read(): void {
    this.maybeGrant(true);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.sendAll([chunk]).then(() => cb(), cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.sendAll(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  /** Send `bufs` as frames of ≤ IPC_MAX_DATA_CHUNK bytes (slices, no copy); resolves once every frame is admitted. */
  private async sendAll(bufs: Buffer[]): Promise<void> {
    let frame: Buffer[] = [];
    let length = 0;
    for (const buf of bufs) {
      for (let off = 0; off < buf.length; ) {
        const k = Math.min(buf.length - off, IPC_MAX_DATA_CHUNK - length);
        frame.push(k === buf.length ? buf : buf.subarray(off, off + k));
        length += k;
        off += k;
        if (length === IPC_MAX_DATA_CHUNK) {
          await this.sendFrame(frame, length);
          frame = [];
          length = 0;
        }
      }
    }
    if (length > 0) await this.sendFrame(frame, length);
  }

  /** Wait for window space, then send one frame's worth of bytes. */
  private async sendFrame(pieces: Buffer[], length: number): Promise<void> {
    while (!this.window.canSend(length)) {
      if (this.sendError) throw this.sendError;
      await new Promise<void>((r) => this.windowWaiters.push(r));
    }
    if (this.sendError) throw this.sendError;
    this.window.admit(length);
    if (this.ipc.dataFrames) {
      this.ipc.sendData(this.id, pieces, length); // acknowledged by a `sent` event
      return;
    }
    const data = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, length);
    this.ipc.request('send', { conn: this.id, data }).then(
      () => this.release(length),
      (err: Error) => {
        this.sendError ??= err;
        this.release(length);
      },
    );
  }

  private release(n: number): void {
    this.window.release(n);
    const w = this.windowWaiters;
    this.windowWaiters = [];
    for (const r of w) r();
  }

  private failWaiters(err: Error): void {
    this.sendError ??= err;
    const w = this.windowWaiters;
    this.windowWaiters = [];
    for (const r of w) r();
  }

  /** Wait until every send is answered. */
  private async drained(): Promise<void> {
    while (this.window.inFlight > 0) {
      if (this.sendError) throw this.sendError;
      await new Promise<void>((r) => this.windowWaiters.push(r));
    }
    if (this.sendError) throw this.sendError;
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.drained()
      .catch((err: unknown) => {
        if (!this.remoteClosed) throw err;
      })
      .then(() => (this.remoteClosed ? undefined : this.ipc.request('end', { conn: this.id })))
      .then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.failWaiters(err ?? new PilotSdkError('conn_closed', `connection ${this.id} is closed`));
    if (!this.remoteClosed && !this.localCloseSent && !this.ipc.closed) {
      this.localCloseSent = true;
      // Clean close after both directions finished; abort (RST) when destroyed early or with an error.
      const abort = err !== null || !this.writableFinished;
      this.ipc.request('close', { conn: this.id, abort }).catch(() => undefined);
    }
    cb(err);
  }
}
