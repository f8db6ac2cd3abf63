/**
 * One IPC socket to the daemon, speaking the request-id extension (SPEC §8, daemon/ipc/protocol.ts):
 * requests are matched to responses by id (no head-of-line blocking), events are routed to per-connection,
 * per-listener and per-datagram-port handlers.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import {
  decodeIpcMessage,
  encodeIpcMessage,
  IpcFrameDecoder,
  writeDataFrame,
  type IpcDataFrame,
  type IpcEventBody,
  type IpcMap,
  type IpcOkResponseBody,
  type IpcResponseBody,
} from '../../daemon/ipc/protocol.js';
import { PilotSdkError } from './errors.js';

interface Pending {
  resolve: (r: IpcOkResponseBody) => void;
  reject: (e: Error) => void;
  op: string;
}

export type EventHandler = (ev: IpcEventBody) => void;

/** Most requests a client keeps outstanding (bounded: beyond that callers wait). */
const MAX_PENDING = 65_536;

export class IpcClient extends EventEmitter {
  private readonly decoder = new IpcFrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly connHandlers = new Map<number, EventHandler>();
  private readonly listenHandlers = new Map<number, EventHandler>();
  private readonly dgramHandlers = new Map<number, EventHandler>();
  /** Events for connections whose handler is not registered yet (bounded per connection). */
  private readonly early = new Map<number, IpcEventBody[]>();
  private nextId = 1;
  private closedErr: PilotSdkError | null = null;
  /** The daemon agreed (in `hello`) to move stream data as 0x23 Data frames. */
  dataFrames = false;

  private constructor(private readonly sock: Socket) {
    super();
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err) => this.fail(new PilotSdkError('ipc_closed', `IPC socket error: ${err.message}`, { cause: err })));
    sock.on('close', () => this.fail(new PilotSdkError('ipc_closed', 'IPC socket closed by the daemon', { hint: 'is the daemon still running? (pilotctl daemon status)' })));
  }

  static connect(path: string, timeoutMs = 5000): Promise<IpcClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new PilotSdkError('timeout', `IPC socket ${path} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new PilotSdkError('not_running', `cannot connect to the daemon at ${path}: ${err.code ?? err.message}`, {
            cause: err,
            hint: 'start it with `pilotctl daemon start` or pass --socket / PILOT_SOCKET',
          }),
        );
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new IpcClient(sock));
      });
    });
  }

  get closed(): boolean {
    return this.closedErr !== null;
  }

  /** Send a request and wait for its response; an error response rejects with PilotSdkError(code). */
  request(op: string, args: IpcMap = {}): Promise<IpcOkResponseBody> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new PilotSdkError('busy', `more than ${MAX_PENDING} outstanding IPC requests`));
    const id = this.allocId();
    return new Promise<IpcOkResponseBody>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, op });
      try {
        this.sock.write(encodeIpcMessage({ type: 'request', id, body: { ...args, op } }));
      } catch (err) {
        this.pending.delete(id);
        reject(new PilotSdkError('invalid_argument', `cannot encode ${op} request: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  /** Fire-and-forget request (id 0): failures come back as `error` events. */
  notify(op: string, args: IpcMap = {}): void {
    if (this.closedErr) return;
    this.sock.write(encodeIpcMessage({ type: 'request', id: 0, body: { ...args, op } }));
  }

  /** Send stream bytes as one Data frame. */
  sendData(conn: number, pieces: Buffer[], length: number): void {
    if (!this.closedErr) writeDataFrame(this.sock, conn, pieces, length);
  }

  onConn(conn: number, h: EventHandler | null): void {
    if (h === null) {
      this.connHandlers.delete(conn);
      this.early.delete(conn);
      return;
    }
    this.connHandlers.set(conn, h);
    const queued = this.early.get(conn);
    if (queued) {
      this.early.delete(conn);
      for (const ev of queued) h(ev);
    }
  }

  onListen(port: number, h: EventHandler | null): void {
    if (h) this.listenHandlers.set(port, h);
    else this.listenHandlers.delete(port);
  }

  onDatagram(port: number, h: EventHandler | null): void {
    if (h) this.dgramHandlers.set(port, h);
    else this.dgramHandlers.delete(port);
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
    this.fail(new PilotSdkError('closed', 'the Pilot client was closed'));
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private onData(chunk: Buffer): void {
    let frames: Array<Buffer | IpcDataFrame>;
    try {
      frames = this.decoder.pushSplittingData(chunk);
    } catch (err) {
      this.protocolError(err);
      return;
    }
    for (const f of frames) {
      if (!Buffer.isBuffer(f)) {
        // A Data frame is a `data` event whose payload arrives as slices of our read buffers.
        for (const data of f.pieces) this.onEvent({ event: 'data', conn: f.conn, data });
        continue;
      }
      let m;
      try {
        m = decodeIpcMessage(f);
      } catch (err) {
        this.protocolError(err);
        return;
      }
      if (m.type === 'response') this.onResponse(m.id, m.body);
      else if (m.type === 'event') this.onEvent(m.body);
      // v1 messages are not ours (we never send v1 commands); ignore.
    }
  }

  private onResponse(id: number, body: IpcResponseBody): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (body.ok) p.resolve(body);
    else p.reject(new PilotSdkError(body.code, `${p.op}: ${body.message}`, { hint: body.hint }));
  }

  private onEvent(ev: IpcEventBody): void {
    switch (ev.event) {
      case 'accept': {
        const h = typeof ev.port === 'number' ? this.listenHandlers.get(ev.port) : undefined;
        if (h) h(ev);
        else if (typeof ev.conn === 'number') this.notify('close', { conn: ev.conn, abort: true });
        return;
      }
      case 'data':
      case 'sent':
      case 'eof':
      case 'closed': {
        if (typeof ev.conn !== 'number') return;
        const h = this.connHandlers.get(ev.conn);
        if (h) h(ev);
        else {
          // Events racing ahead of handler registration; bounded (drop beyond, never grow without limit).
          const q = this.early.get(ev.conn);
          if (q) {
            if (q.length < 1024) q.push(ev);
          } else if (this.early.size < 256) this.early.set(ev.conn, [ev]);
        }
        return;
      }
      case 'datagram': {
        const h = typeof ev.port === 'number' ? this.dgramHandlers.get(ev.port) : undefined;
        if (h) h(ev);
        return;
      }
      case 'error': {
        if (typeof ev.conn === 'number') {
          const h = this.connHandlers.get(ev.conn);
          if (h) h(ev);
        }
        this.emit('notifyError', ev);
        return;
      }
      default:
        this.emit('event', ev);
    }
  }

  private protocolError(err: unknown): void {
    this.fail(new PilotSdkError('protocol', `bad IPC message from the daemon: ${(err as Error).message}`, { cause: err }));
    this.sock.destroy();
  }

  private fail(err: PilotSdkError): void {
    if (this.closedErr) return;
    this.closedErr = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    const closedEv: IpcEventBody = { event: 'closed', conn: 0, code: err.code, reason: err.message };
    for (const [conn, h] of [...this.connHandlers]) h({ ...closedEv, conn });
    this.connHandlers.clear();
    this.early.clear();
    this.emit('close', err);
  }
}
