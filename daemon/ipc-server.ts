/**
 * The daemon's IPC server (SPEC §8, wire reference §1.13): a Unix stream socket (mode 0600) speaking the
 * v1 commands 0x01–0x1E byte for byte plus the request-id extension 0x20/0x21/0x22 (daemon/ipc/protocol.ts).
 *
 * Per client:
 * - v1 commands run one after another (v1 clients match replies by FIFO order, so they must), but on
 *   their own chain: a blocked v1 Dial never delays an extension request.
 * - Extension requests run concurrently and are answered by id in any order; sends on one connection are
 *   applied in request order (per-connection chain), bounded by the client's send window.
 * - Data towards the client is credit-based (extension) or socket-drain based (v1), so a slow client
 *   back-pressures only its own connections; a client whose socket stops draining past a hard cap is
 *   dropped.
 * - Bad input: a framing violation drops the client; an undecodable v1 message gets a v1 Error; an
 *   undecodable extension request gets a typed error Response (if its id is readable); no input can
 *   throw past a client's handler, so the daemon survives anything.
 * - On disconnect every connection dialed/accepted through the client is closed and its ports unbound.
 */
import { chmod, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { Addr } from '../transport/address.js';
import { PilotError } from '../transport/errors.js';
import type { Connection, Listener, DatagramSocket } from '../transport/host.js';
import {
  decodeIpcMessage,
  encodeIpcMessage,
  errorResponse,
  event,
  okResponse,
  arg,
  IpcError,
  IpcFrameDecoder,
  RecvCredit,
  SendWindow,
  IPC_DEFAULT_RECV_CREDIT,
  IPC_DEFAULT_SEND_WINDOW,
  IPC_MAX_DATA_CHUNK,
  IPC_MAX_MESSAGE,
  IPC_MAX_RECV_CREDIT,
  IPC_PROTOCOL_VERSION,
  IPC_V1_ERROR_CODE,
  type HandshakeCommand,
  type HandshakeResult,
  type IpcDataFrame,
  type IpcMap,
  type IpcMessage,
  type IpcValue,
  type JsonObject,
  writeDataFrame,
} from './ipc/protocol.js';
import { ByteQueue } from './ipc/bytequeue.js';
import { NetworkOpError } from './ipc/network-ops.js';
import { taskOp, TASK_OP_PREFIX, type TaskOpsDaemon } from './ipc/task-ops.js';

/** What the IPC server needs from the daemon (`services` feeds the task_* ops, daemon/ipc/task-ops.ts). */
export interface IpcDaemonApi extends TaskOpsDaemon {
  readonly version: string;
  /** Resolve text (address, bare node ID or hostname) to an address. */
  resolveTarget(text: string): Promise<Addr>;
  dial(addr: Addr, port: number, timeoutMs?: number): Promise<Connection>;
  listen(port: number, backlog?: number): Listener;
  bindDatagram(port: number): DatagramSocket;
  sendDatagram(addr: Addr, port: number, data: Buffer, srcPort?: number): Promise<void>;
  info(): JsonObject;
  peerList(search?: string): IpcMap[];
  connections(): IpcMap[];
  disconnect(id: number): boolean;
  handshake(cmd: HandshakeCommand): Promise<HandshakeResult>;
  /** v1 registry passthroughs (0x11–0x1E): the registry's reply JSON. */
  registryCommand(op: 'resolve_hostname' | 'set_hostname' | 'set_visibility' | 'deregister' | 'set_tags' | 'set_task_exec', arg: unknown): Promise<JsonObject>;
  setWebhook(url: string): JsonObject;
  network(op: string, args: IpcMap): Promise<IpcMap>;
  /** `key_*` ops (info, rotate, expiry); optional so minimal daemons/test doubles need not implement it. */
  key?(op: string, args: IpcMap): Promise<IpcMap>;
  ping(addr: Addr, size: number): Promise<number>;
  stats(): IpcMap;
}

export interface IpcServerOptions {
  path: string;
  daemon: IpcDaemonApi;
  log?: Logger;
  /** Drop a client whose unsent bytes exceed this (default 64 MiB). */
  maxClientBacklog?: number;
  /** At most this many clients (default 256). */
  maxClients?: number;
}

const V1_CHUNK = 64 * 1024;
/** Queued v1 commands (each ≤ 1 MiB) before we stop reading the client. */
const MAX_PENDING_V1 = 32;
/** Concurrent extension requests before we stop reading the client (sends are bounded by the window). */
const MAX_PENDING_EXT = 1024;
/** v1 clients have no credit: stop reading a connection while the client's socket holds this much. */
const V1_SOCKET_HIGH_WATER = 4 * 1024 * 1024;

export class IpcServer {
  private server: Server | null = null;
  private readonly clients = new Set<IpcClient>();
  readonly stats = { clients: 0, accepted: 0, dropped: 0, protocolErrors: 0, refusedClients: 0 };

  constructor(private readonly opts: IpcServerOptions) {}

  get path(): string {
    return this.opts.path;
  }

  async listen(): Promise<void> {
    await unlink(this.opts.path).catch(() => undefined); // stale socket file (v1)
    const server = createServer((s) => this.onSocket(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Create the socket with no group/other bits from the start, then chmod for good measure.
      const old = process.umask(0o177);
      try {
        server.listen(this.opts.path, () => {
          server.removeListener('error', reject);
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
    await chmod(this.opts.path, 0o600);
    server.on('error', (err) => this.opts.log?.error({ err: err.message }, 'ipc server error'));
  }

  private onSocket(s: Socket): void {
    if (this.clients.size >= (this.opts.maxClients ?? 256)) {
      this.stats.refusedClients++;
      s.destroy();
      return;
    }
    this.stats.accepted++;
    const c = new IpcClient(s, this.opts, this.stats, () => this.clients.delete(c));
    this.clients.add(c);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Send an event to every connected client that spoke the extension protocol (e.g. trust changes). */
  broadcast(m: IpcMessage): void {
    for (const c of this.clients) if (c.extension) c.send(m);
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const c of [...this.clients]) c.destroy('daemon shutting down');
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await unlink(this.opts.path).catch(() => undefined);
  }
}

/** One IPC connection ↔ one stream connection. */
class Bridge {
  readonly credit: RecvCredit | null;
  readonly window: SendWindow;
  /** Received stream bytes not yet passed to the client. */
  readonly held = new ByteQueue();
  eofSeen = false;
  eofSent = false;
  closedSent = false;
  localClosed = false;
  /** Set when the stream closed; 'closed' goes out once held data reached the client. */
  closeInfo: { code?: string; reason?: string } | null = null;
  pumpScheduled = false;
  sendChain: Promise<void> = Promise.resolve();

  constructor(
    readonly conn: Connection,
    readonly v1: boolean,
    recvCredit: number,
    sendWindow: number,
  ) {
    this.credit = v1 ? null : new RecvCredit(recvCredit);
    this.window = new SendWindow(sendWindow);
  }
}

class IpcClient {
  private readonly decoder = new IpcFrameDecoder(IPC_MAX_MESSAGE);
  private v1Chain: Promise<void> = Promise.resolve();
  private readonly bridges = new Map<number, Bridge>();
  private readonly listeners = new Map<number, { l: Listener; v1: boolean; recvCredit: number }>();
  private readonly dgrams = new Map<number, { s: DatagramSocket; v1: boolean }>();
  private sendWindow = IPC_DEFAULT_SEND_WINDOW;
  private dead = false;
  /** Has sent at least one extension request (v1 clients must not see 0x22 events). */
  extension = false;
  /** Negotiated in `hello`: stream data moves as 0x23 Data frames both ways. */
  private dataFrames = false;
  /** Commands accepted but not finished; past a bound we stop reading the socket (memory stays bounded). */
  private pendingV1 = 0;
  private pendingExt = 0;
  private readPaused = false;
  private readonly maxBacklog: number;
  private readonly d: IpcDaemonApi;
  private readonly log: Logger | undefined;

  constructor(
    private readonly s: Socket,
    opts: IpcServerOptions,
    private readonly stats: IpcServer['stats'],
    private readonly onGone: () => void,
  ) {
    this.d = opts.daemon;
    this.log = opts.log;
    this.maxBacklog = opts.maxClientBacklog ?? 64 * 1024 * 1024;
    stats.clients++;
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('error', () => {});
    s.on('close', () => this.cleanup());
    s.on('drain', () => this.onDrain());
  }

  // ----- input ------------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    let frames: Array<Buffer | IpcDataFrame>;
    try {
      frames = this.decoder.pushSplittingData(chunk);
    } catch (err) {
      this.stats.protocolErrors++;
      this.log?.warn({ err: (err as Error).message }, 'ipc: framing violation, dropping client');
      this.destroy('framing violation');
      return;
    }
    for (const f of frames) {
      if (this.dead) return;
      if (Buffer.isBuffer(f)) this.onFrame(f);
      else this.onDataFrame(f);
    }
  }

  private onFrame(f: Buffer): void {
    let m: IpcMessage;
    try {
      m = decodeIpcMessage(f);
    } catch (err) {
      this.stats.protocolErrors++;
      const e = err as IpcError;
      if (f[0] === 0x20 && f.length >= 5) {
        this.write(errorResponse(f.readUInt32BE(1), 'bad_request', e.message));
      } else if (f[0] === 0x20 || f[0] === 0x21 || f[0] === 0x22) {
        this.write(event('error', { op: 'unknown', code: 'bad_request', message: e.message }));
      } else {
        // v1: errors answer in order like any reply, so queue behind earlier v1 commands.
        const msg = e.code === 'unknown_command' ? `unknown command: 0x${f[0]!.toString(16).padStart(2, '0')}` : e.message;
        this.v1Chain = this.v1Chain.then(() => this.v1Error(msg));
      }
      return;
    }
    if (m.type === 'request') {
      this.extension = true;
      this.pendingExt++;
      this.flowControl();
      void this.onRequest(m.id, m.body.op, m.body).finally(() => {
        this.pendingExt--;
        this.flowControl();
      });
      return;
    }
    // v1 commands: strictly in order on their own chain (no effect on extension requests).
    this.pendingV1++;
    this.flowControl();
    this.v1Chain = this.v1Chain
      .then(() => this.onV1(m))
      .catch((err: unknown) => this.v1Error(errMessage(err)))
      .finally(() => {
        this.pendingV1--;
        this.flowControl();
      });
  }

  /** Stop reading a client that queues work faster than it completes (a blocked Send/Dial). */
  private flowControl(): void {
    if (this.dead) return;
    const busy = this.pendingV1 > MAX_PENDING_V1 || this.pendingExt > MAX_PENDING_EXT;
    if (busy && !this.readPaused) {
      this.readPaused = true;
      this.s.pause();
    } else if (!busy && this.readPaused && this.pendingV1 <= MAX_PENDING_V1 / 2 && this.pendingExt <= MAX_PENDING_EXT / 2) {
      this.readPaused = false;
      this.s.resume();
    }
  }

  /** A client Data frame: a `send` without request id, acknowledged by a `sent` event. */
  private onDataFrame(f: IpcDataFrame): void {
    this.extension = true;
    const b = this.bridges.get(f.conn);
    if (!b || b.v1) {
      this.write(event('error', { op: 'data', code: 'not_found', message: `connection ${f.conn} not found`, conn: f.conn }));
      return;
    }
    this.pendingExt++;
    this.flowControl();
    this.queueSend(b, f.pieces, f.length)
      .then(
        () => this.write(event('sent', { conn: f.conn, bytes: f.length })),
        (err: unknown) => this.write(event('error', { op: 'data', ...toIpcError(err), conn: f.conn })),
      )
      .finally(() => {
        this.pendingExt--;
        this.flowControl();
      });
  }

  /** Hand bytes to a connection in arrival order; resolves once its send buffer took them (below its high-water mark). */
  private async queueSend(b: Bridge, pieces: Buffer[], length: number): Promise<void> {
    b.window.admit(length);
    const done = b.sendChain.then(async () => {
      if (b.localClosed || b.conn.destroyed || b.conn.writableEnded) throw new PilotError('conn_closed', `connection ${b.conn.id} is closed`);
      let ok = true;
      for (const p of pieces) ok = b.conn.write(p);
      if (!ok) await waitDrain(b.conn);
    });
    b.sendChain = done.catch(() => undefined);
    try {
      await done;
    } finally {
      b.window.release(length);
    }
  }

  // ----- v1 ---------------------------------------------------------------------------------------

  private v1Error(message: string): void {
    this.write({ type: 'error', code: IPC_V1_ERROR_CODE, message: message.slice(0, 4000) });
  }

  private async onV1(m: IpcMessage): Promise<void> {
    switch (m.type) {
      case 'bind': {
        if (this.listeners.has(m.port)) throw new Error(`port ${m.port} already bound`);
        const l = this.d.listen(m.port);
        this.attachListener(m.port, l, true, IPC_DEFAULT_RECV_CREDIT);
        // v1 Bind also receives datagrams on the port.
        if (!this.dgrams.has(m.port)) {
          try {
            this.attachDatagram(m.port, this.d.bindDatagram(m.port), true);
          } catch {
            /* datagram port held elsewhere: streams still work */
          }
        }
        this.write({ type: 'bind_ok', port: m.port });
        return;
      }
      case 'dial': {
        const conn = await this.d.dial(m.addr, m.port);
        this.attachConn(conn, true, IPC_DEFAULT_RECV_CREDIT);
        this.write({ type: 'dial_ok', connId: conn.id });
        this.startFlow(conn.id);
        return;
      }
      case 'send': {
        const b = this.bridges.get(m.connId);
        if (!b || b.localClosed) throw new Error(`connection ${m.connId} not found`);
        if (!b.conn.write(m.data)) await waitDrain(b.conn);
        return;
      }
      case 'close': {
        const b = this.bridges.get(m.connId);
        if (b) this.localClose(b, false);
        this.write({ type: 'close_ok', connId: m.connId });
        return;
      }
      case 'send_to': {
        if (m.addr.isBroadcast()) throw new Error('broadcast not available');
        await this.d.sendDatagram(m.addr, m.port, m.data);
        return;
      }
      case 'info':
        this.write({ type: 'info_ok', info: this.d.info() as JsonObject & { node_id: number; address: string } });
        return;
      case 'handshake':
        this.write({ type: 'handshake_ok', result: await this.d.handshake(m.command) });
        return;
      case 'resolve_hostname':
        this.write({ type: 'resolve_hostname_ok', result: await this.d.registryCommand('resolve_hostname', m.hostname) });
        return;
      case 'set_hostname':
        this.write({ type: 'set_hostname_ok', result: await this.d.registryCommand('set_hostname', m.hostname) });
        return;
      case 'set_visibility':
        this.write({ type: 'set_visibility_ok', result: await this.d.registryCommand('set_visibility', m.public) });
        return;
      case 'deregister':
        this.write({ type: 'deregister_ok', result: await this.d.registryCommand('deregister', null) });
        return;
      case 'set_tags':
        this.write({ type: 'set_tags_ok', result: await this.d.registryCommand('set_tags', m.tags) });
        return;
      case 'set_webhook':
        this.write({ type: 'set_webhook_ok', result: this.d.setWebhook(m.url) });
        return;
      case 'set_task_exec':
        this.write({ type: 'set_task_exec_ok', result: await this.d.registryCommand('set_task_exec', m.enabled) });
        return;
      default:
        // Daemon→client message types sent by a client (e.g. 0x02 BindOK).
        throw new Error(`unexpected command from client: ${m.type}`);
    }
  }

  // ----- extension --------------------------------------------------------------------------------

  private async onRequest(id: number, op: unknown, body: IpcMap): Promise<void> {
    try {
      if (typeof op !== 'string') throw new IpcError('bad_envelope', 'request has no op');
      const result = await this.dispatch(op, body);
      if (id !== 0) this.write(okResponse(id, result));
    } catch (err) {
      const { code, message, hint } = toIpcError(err);
      if (id !== 0) this.write(errorResponse(id, code, message, hint));
      else if (op === 'credit' && code === 'not_found') {
        // Credit racing a close is benign: the connection is gone, nothing to report.
      } else {
        const conn = typeof body.conn === 'number' ? { conn: body.conn } : {};
        this.write(event('error', { op: typeof op === 'string' ? op : 'unknown', code, message, ...conn }));
      }
    }
  }

  private async dispatch(op: string, a: IpcMap): Promise<IpcMap> {
    switch (op) {
      case 'hello': {
        arg.int(a, 'version', 0, 0xffff);
        if (a.send_window !== undefined) this.sendWindow = arg.int(a, 'send_window', IPC_MAX_DATA_CHUNK, 64 * 1024 * 1024);
        this.dataFrames = a.data_frames === true;
        return {
          version: IPC_PROTOCOL_VERSION,
          daemon: this.d.version,
          max_message: IPC_MAX_MESSAGE,
          max_data_chunk: IPC_MAX_DATA_CHUNK,
          send_window: this.sendWindow,
          recv_credit: IPC_DEFAULT_RECV_CREDIT,
          data_frames: this.dataFrames,
        };
      }
      case 'dial': {
        const target = arg.string(a, 'addr', 300);
        const port = arg.int(a, 'port', 1, 0xffff);
        const timeout = a.timeout_ms === undefined ? undefined : arg.int(a, 'timeout_ms', 1, 600_000);
        const credit = arg.int(a, 'recv_credit', 0, IPC_MAX_RECV_CREDIT, IPC_DEFAULT_RECV_CREDIT);
        const addr = await this.d.resolveTarget(target);
        const conn = await this.d.dial(addr, port, timeout);
        if (this.dead) {
          conn.destroy();
          throw new IpcError('bad_value', 'client gone');
        }
        this.attachConn(conn, false, credit);
        queueMicrotask(() => this.startFlow(conn.id));
        return { conn: conn.id, local_port: conn.localPort, remote_addr: conn.remote.toString(), remote_port: conn.remotePort };
      }
      case 'listen': {
        const port = arg.int(a, 'port', 1, 0xffff);
        const backlog = a.backlog === undefined ? undefined : arg.int(a, 'backlog', 1, 65535);
        const credit = arg.int(a, 'recv_credit', 0, IPC_MAX_RECV_CREDIT, IPC_DEFAULT_RECV_CREDIT);
        if (this.listeners.has(port)) throw new PilotError('port_in_use', `port ${port} already bound`);
        this.attachListener(port, this.d.listen(port, backlog), false, credit);
        return { port };
      }
      case 'unlisten': {
        const port = arg.int(a, 'port', 1, 0xffff);
        const l = this.listeners.get(port);
        if (!l) throw new PilotError('not_found', `port ${port} is not bound by this client`);
        this.listeners.delete(port);
        l.l.close();
        return {};
      }
      case 'send': {
        const b = this.bridgeOf(a);
        const data = arg.bytes(a, 'data', IPC_MAX_DATA_CHUNK);
        await this.queueSend(b, [data], data.length);
        return { accepted: data.length };
      }
      case 'credit': {
        const b = this.bridgeOf(a);
        const n = b.credit!.grant(arg.int(a, 'bytes', 1, IPC_MAX_RECV_CREDIT));
        this.pump(b);
        return { credit: n };
      }
      case 'end': {
        const b = this.bridgeOf(a);
        const done = b.sendChain.then(() => void b.conn.end());
        b.sendChain = done.catch(() => undefined);
        await done;
        return {};
      }
      case 'close': {
        const id = arg.int(a, 'conn', 0, 0xffffffff);
        const b = this.bridges.get(id);
        if (!b) throw new PilotError('not_found', `connection ${id} not found`);
        this.localClose(b, arg.bool(a, 'abort', false));
        return {};
      }
      case 'datagram_bind': {
        const port = arg.int(a, 'port', 1, 0xffff);
        if (this.dgrams.has(port)) throw new PilotError('port_in_use', `datagram port ${port} already bound`);
        this.attachDatagram(port, this.d.bindDatagram(port), false);
        return { port };
      }
      case 'datagram_unbind': {
        const port = arg.int(a, 'port', 1, 0xffff);
        const g = this.dgrams.get(port);
        if (!g) throw new PilotError('not_found', `datagram port ${port} is not bound by this client`);
        this.dgrams.delete(port);
        g.s.close();
        return {};
      }
      case 'datagram_send': {
        const addr = await this.d.resolveTarget(arg.string(a, 'addr', 300));
        const port = arg.int(a, 'port', 1, 0xffff);
        const data = arg.bytes(a, 'data', 65535 - 34);
        const src = a.src_port === undefined ? undefined : arg.int(a, 'src_port', 1, 0xffff);
        await this.d.sendDatagram(addr, port, data, src);
        return {};
      }
      case 'info':
        return this.d.info() as IpcMap;
      case 'peers':
        return { peers: this.d.peerList(a.search === undefined ? undefined : arg.string(a, 'search', 300)) };
      case 'connections':
        return { connections: this.d.connections() };
      case 'disconnect': {
        const id = arg.int(a, 'id', 0, 0xffffffff);
        if (!this.d.disconnect(id)) throw new PilotError('not_found', `connection ${id} not found`);
        return {};
      }
      case 'handshake_send':
        return (await this.d.handshake({ sub: 'send', nodeId: await this.nodeArg(a), justification: arg.string(a, 'justification', 1024, '') })) as IpcMap;
      case 'handshake_approve':
        return (await this.d.handshake({ sub: 'approve', nodeId: await this.nodeArg(a) })) as IpcMap;
      case 'handshake_reject':
        return (await this.d.handshake({ sub: 'reject', nodeId: await this.nodeArg(a), reason: arg.string(a, 'reason', 1024, '') })) as IpcMap;
      case 'handshake_revoke':
        return (await this.d.handshake({ sub: 'revoke', nodeId: await this.nodeArg(a) })) as IpcMap;
      case 'handshake_pending':
        return (await this.d.handshake({ sub: 'pending' })) as unknown as IpcMap;
      case 'handshake_trusted':
        return (await this.d.handshake({ sub: 'trusted' })) as unknown as IpcMap;
      case 'resolve_hostname':
        return stripType(await this.d.registryCommand('resolve_hostname', arg.string(a, 'hostname', 300)));
      case 'set_hostname':
        return stripType(await this.d.registryCommand('set_hostname', arg.string(a, 'hostname', 300)));
      case 'set_visibility':
        return stripType(await this.d.registryCommand('set_visibility', arg.bool(a, 'public')));
      case 'set_tags': {
        const tags = a.tags;
        if (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string')) throw new IpcError('bad_value', 'tags must be an array of strings');
        return stripType(await this.d.registryCommand('set_tags', tags));
      }
      case 'set_task_exec':
        return stripType(await this.d.registryCommand('set_task_exec', arg.bool(a, 'enabled')));
      case 'deregister':
        return stripType(await this.d.registryCommand('deregister', null));
      case 'set_webhook':
        return this.d.setWebhook(arg.string(a, 'url', 2048)) as IpcMap;
      case 'ping': {
        const addr = await this.d.resolveTarget(arg.string(a, 'addr', 300));
        return { rtt_ms: await this.d.ping(addr, arg.int(a, 'size', 0, 65000, 0)) };
      }
      case 'resolve': {
        const addr = await this.d.resolveTarget(arg.string(a, 'addr', 300));
        return { address: addr.toString(), node_id: addr.node };
      }
      case 'stats':
        return this.d.stats();
      default:
        if (op.startsWith('network_')) return this.d.network(op.slice('network_'.length), a);
        if (op.startsWith('key_') && this.d.key) return this.d.key(op.slice('key_'.length), a);
        if (op.startsWith(TASK_OP_PREFIX)) return taskOp(this.d, op, a);
        throw new PilotError('unknown_op', `unknown op "${op.slice(0, 64)}"`);
    }
  }

  private async nodeArg(a: IpcMap): Promise<number> {
    const v = a.node;
    if (typeof v === 'number') return arg.int(a, 'node', 1, 0xffffffff);
    if (typeof v === 'string') return (await this.d.resolveTarget(v)).node;
    throw new IpcError('bad_value', 'node must be a node ID, address or hostname');
  }

  private bridgeOf(a: IpcMap): Bridge {
    const id = arg.int(a, 'conn', 0, 0xffffffff);
    const b = this.bridges.get(id);
    if (!b || b.v1) throw new PilotError('not_found', `connection ${id} not found`);
    return b;
  }

  // ----- connections ------------------------------------------------------------------------------

  private attachListener(port: number, l: Listener, v1: boolean, recvCredit: number): void {
    this.listeners.set(port, { l, v1, recvCredit });
    l.on('connection', (conn: Connection) => {
      if (this.dead) {
        conn.destroy();
        return;
      }
      this.attachConn(conn, v1, recvCredit);
      if (v1) this.write({ type: 'accept', localPort: port, connId: conn.id, remoteAddr: conn.remote, remotePort: conn.remotePort });
      else this.write(event('accept', { port, conn: conn.id, remote_addr: conn.remote.toString(), remote_port: conn.remotePort }));
      this.startFlow(conn.id);
    });
  }

  private attachDatagram(port: number, s: DatagramSocket, v1: boolean): void {
    this.dgrams.set(port, { s, v1 });
    s.on('message', (data: Buffer, src: Addr, srcPort: number, dstPort: number) => {
      // Unreliable: a client that is not draining loses datagrams rather than stalling the daemon.
      if (this.s.writableLength > V1_SOCKET_HIGH_WATER) return;
      if (v1) this.write({ type: 'recv_from', srcAddr: src, srcPort, dstPort, data });
      else this.write(event('datagram', { port: dstPort, src_addr: src.toString(), src_port: srcPort, data }));
    });
  }

  private attachConn(conn: Connection, v1: boolean, recvCredit: number): void {
    const b = new Bridge(conn, v1, recvCredit, this.sendWindow);
    this.bridges.set(conn.id, b);
    conn.pause();
    conn.on('error', () => {});
    conn.on('data', (chunk: Buffer) => {
      if (b.localClosed) return;
      b.held.push(chunk);
      // Coalesce the segments of one receive burst into fewer, larger messages (one pump per tick),
      // unless a full chunk is already waiting.
      if (b.held.length >= IPC_MAX_DATA_CHUNK) this.pump(b);
      else if (!b.pumpScheduled) {
        b.pumpScheduled = true;
        setImmediate(() => {
          b.pumpScheduled = false;
          this.pump(b);
        });
      }
    });
    conn.on('end', () => {
      b.eofSeen = true;
      this.pump(b);
    });
    conn.on('close', () => {
      b.eofSeen = true;
      const e = conn.errored;
      b.closeInfo = e ? { code: errCode(e), reason: e.message } : {};
      this.pump(b);
    });
  }

  /** Start delivering a connection's data once the client knows its id. */
  private startFlow(id: number): void {
    const b = this.bridges.get(id);
    if (b && !b.localClosed) {
      b.conn.resume();
      this.pump(b);
    }
  }

  /** Move held bytes to the client as far as credit (extension) or the socket (v1) allows. */
  private pump(b: Bridge): void {
    if (this.dead) return;
    if (b.localClosed) {
      // After a local close only the final 'closed' event (extension) is still owed.
      if (b.closeInfo) this.finishBridge(b, b.closeInfo.code, b.closeInfo.reason);
      return;
    }
    while (b.held.length > 0) {
      let n: number;
      if (b.credit) {
        n = b.credit.nextChunk(b.held.length);
        if (n === 0) break;
      } else {
        if (this.s.writableLength > V1_SOCKET_HIGH_WATER) break;
        n = Math.min(b.held.length, V1_CHUNK);
      }
      if (!b.credit) this.write({ type: 'recv', connId: b.conn.id, data: b.held.take(n) });
      else {
        b.credit.consume(n);
        if (this.dataFrames) this.writeData(b.conn.id, b.held.takeSlices(n), n);
        else this.write(event('data', { conn: b.conn.id, data: b.held.take(n) }));
      }
    }
    // Back-pressure: stop reading the stream while bytes wait for credit/drain (its window closes).
    if (b.held.length > 0) b.conn.pause();
    else if (!b.localClosed && b.conn.isPaused()) b.conn.resume();
    if (b.held.length === 0 && b.eofSeen && !b.eofSent) {
      b.eofSent = true;
      if (!b.v1) this.write(event('eof', { conn: b.conn.id }));
      else {
        // v1: unsolicited CloseOK is the EOF signal.
        b.closedSent = true;
        this.write({ type: 'close_ok', connId: b.conn.id });
      }
    }
    if (b.held.length === 0 && b.closeInfo) this.finishBridge(b, b.closeInfo.code, b.closeInfo.reason);
  }

  private finishBridge(b: Bridge, code?: string, reason?: string): void {
    if (this.bridges.get(b.conn.id) === b) this.bridges.delete(b.conn.id);
    if (b.closedSent) return;
    b.closedSent = true;
    if (b.v1) this.write({ type: 'close_ok', connId: b.conn.id });
    else {
      const f: { conn: number; code?: string; reason?: string } = { conn: b.conn.id };
      if (code) f.code = code;
      if (reason) f.reason = reason;
      this.write(event('closed', f));
    }
  }

  private localClose(b: Bridge, abort: boolean): void {
    b.localClosed = true;
    b.held.clear();
    if (abort) b.conn.destroy();
    else {
      b.conn.end();
      b.conn.resume(); // drain (and drop) whatever still arrives until the peer's FIN
    }
    if (b.v1) {
      // v1 answered the Close with CloseOK already; do not send another.
      b.closedSent = true;
      this.bridges.delete(b.conn.id);
    }
  }

  // ----- output -----------------------------------------------------------------------------------

  send(m: IpcMessage): void {
    this.write(m);
  }

  private write(m: IpcMessage): void {
    if (this.dead) return;
    let buf: Buffer;
    try {
      buf = encodeIpcMessage(m);
    } catch (err) {
      this.log?.error({ err: (err as Error).message, type: m.type }, 'ipc: cannot encode a reply');
      if (m.type === 'response') this.write(errorResponse(m.id, 'internal', 'reply could not be encoded'));
      return;
    }
    this.s.write(buf);
    this.checkBacklog();
  }

  private writeData(conn: number, pieces: Buffer[], length: number): void {
    if (this.dead) return;
    writeDataFrame(this.s, conn, pieces, length);
    this.checkBacklog();
  }

  private checkBacklog(): void {
    if (this.s.writableLength > this.maxBacklog) {
      this.stats.dropped++;
      this.log?.warn({ backlog: this.s.writableLength }, 'ipc: client not draining, dropping it');
      this.destroy('client not draining');
    }
  }

  private onDrain(): void {
    for (const b of this.bridges.values()) {
      if (b.v1 && b.held.length > 0) this.pump(b);
    }
  }

  destroy(reason: string): void {
    if (this.dead) return;
    this.log?.debug({ reason }, 'ipc client closed');
    this.s.destroy();
    this.cleanup();
  }

  private cleanup(): void {
    if (this.dead) return;
    this.dead = true;
    this.stats.clients--;
    for (const { l } of this.listeners.values()) l.close();
    this.listeners.clear();
    for (const { s } of this.dgrams.values()) s.close();
    this.dgrams.clear();
    for (const b of this.bridges.values()) {
      b.localClosed = true;
      b.conn.end();
      b.conn.resume();
    }
    this.bridges.clear();
    this.onGone();
  }
}

// ---------------------------------------------------------------------------------------------------

function waitDrain(conn: Connection): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      conn.off('drain', done);
      conn.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      conn.off('drain', done);
      reject(new PilotError('conn_closed', `connection ${conn.id} closed`));
    };
    conn.on('drain', done);
    conn.once('close', onClose);
  });
}

/** Registry replies carry their message `type`; extension results do not. */
function stripType(r: JsonObject): IpcMap {
  const { type: _type, ...rest } = r;
  return rest as IpcMap;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function errCode(err: Error): string {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' ? c : 'error';
}

/** Map any error to a stable IPC error code (IpcErrorCodes) with a hint where one helps. */
export function toIpcError(err: unknown): { code: string; message: string; hint?: string } {
  const r = ipcErrorOf(err);
  const own = (err as { hint?: unknown } | null)?.hint; // an error that knows the fix keeps its hint
  return typeof own === 'string' && own !== '' ? { ...r, hint: own } : r;
}

function ipcErrorOf(err: unknown): { code: string; message: string; hint?: string } {
  const message = errMessage(err);
  const raw = (err as { code?: unknown })?.code;
  const c = typeof raw === 'string' ? raw : '';
  // Network/key ops already carry the registry's stable code (daemon/ipc/network-ops.ts); toIpcError adds the hint.
  if (err instanceof NetworkOpError) return { code: c, message };
  switch (c) {
    case 'bad_value':
    case 'bad_address':
    case 'bad_envelope':
    case 'invalid_argument':
    case 'invalid':
    case 'bad_credit':
      return { code: c === 'bad_credit' ? 'bad_credit' : 'bad_request', message };
    case 'unknown_op':
      return { code: 'unknown_op', message, hint: 'update the daemon or the client so their IPC versions match' };
    case 'dial_timeout':
    case 'timeout':
    case 'ping_timeout':
      return { code: 'timeout', message, hint: 'is the peer running, and does it trust you? (pilotctl handshake <peer>)' };
    case 'connection_refused':
    case 'connection_reset':
      return { code: 'refused', message, hint: 'nothing listens on that port, or the peer refused the connection' };
    case 'unreachable':
      return { code: 'unreachable', message, hint: 'private nodes are reachable only after a handshake (pilotctl handshake <peer>)' };
    case 'not_found':
      return { code: 'not_found', message };
    case 'port_in_use':
      return { code: 'port_in_use', message, hint: 'pick another port or stop the program bound to it' };
    case 'send_window_exceeded':
      return { code: 'send_window_exceeded', message, hint: 'wait for send replies before sending more' };
    case 'conn_closed':
    case 'connection_closed':
    case 'peer_closed':
    case 'host_closed':
      return { code: 'conn_closed', message };
    case 'not_allowed':
    case 'forbidden':
    case 'unauthorized':
      return { code: 'not_allowed', message };
    case 'already_exists':
      return { code: 'already_exists', message };
    case 'unavailable':
    case 'not_registered':
      return { code: 'unavailable', message, hint: 'the daemon is not registered with the registry yet' };
    default:
      if (err instanceof PilotError && err.name === 'RegistryError') return { code: 'registry_error', message };
      if (err instanceof PilotError && c) return { code: c, message };
      return { code: 'internal', message };
  }
}

export type { IpcValue };
