/**
 * `Pilot`: the Node SDK over the daemon's IPC socket (SPEC §1, §8).
 *
 *   const pilot = await Pilot.connect();              // $PILOT_SOCKET or <tmpdir>/pilot.sock
 *   const conn = await pilot.dial('bravo', 1000);     // Duplex with back-pressure
 *   const server = await pilot.listen(1000);          // 'connection' events / for await
 *   const dg = await pilot.datagram(5000);            // send / 'message' / for await
 *
 * Peers may be given as hostnames, addresses (`N:NNNN.HHHH.LLLL`) or bare node IDs.
 */
import { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IPC_DEFAULT_RECV_CREDIT,
  IPC_DEFAULT_SEND_WINDOW,
  IPC_MAX_RECV_CREDIT,
  IPC_PROTOCOL_VERSION,
  type IpcEventBody,
  type IpcMap,
  type IpcValue,
} from '../../daemon/ipc/protocol.js';
import { PilotConnection } from './connection.js';
import { PilotDatagramSocket } from './datagram.js';
import { PilotKeys, PilotNetworks } from './networks.js';
import { PilotSdkError } from './errors.js';
import { IpcClient } from './ipc-client.js';
import { PilotServer } from './server.js';
import { PilotTasks } from './tasks.js';

export interface PilotConnectOptions {
  /** IPC socket path (default `$PILOT_SOCKET`, else `pilot.sock` in the system temp directory). */
  socket?: string;
  /** How long to wait for the socket to answer (default 5 s). */
  timeoutMs?: number;
  /** Receive credit per connection in bytes (default 1 MiB): bytes the daemon may push before we read. */
  recvCredit?: number;
  /** Client name reported in `hello`. */
  client?: string;
}

export interface DialOptions {
  timeoutMs?: number;
  recvCredit?: number;
}

/** A peer as users write it: hostname, address text or node ID. */
export type PeerRef = string | number;

export type Result = { [key: string]: IpcValue | undefined };

export interface TrustEvent {
  kind: string;
  node: number;
  justification?: string;
  reason?: string;
}

/** Default IPC socket path: `$PILOT_SOCKET`, else `pilot.sock` in the temp directory (daemon/config.ts). */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PILOT_SOCKET || join(tmpdir(), 'pilot.sock');
}

function strip(r: Result): Result {
  const { ok: _ok, ...rest } = r;
  return rest;
}

function peerArg(p: PeerRef): string {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p <= 0 || p > 0xffffffff) throw new PilotSdkError('invalid_argument', `bad node ID ${p}`);
    return String(p);
  }
  const s = p.trim();
  if (s === '') throw new PilotSdkError('invalid_argument', 'empty peer', { hint: 'give a hostname, an address N:NNNN.HHHH.LLLL or a node ID' });
  return s;
}

function portArg(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) throw new PilotSdkError('invalid_argument', `bad port ${port}`, { hint: 'ports are 1-65535' });
  return port;
}

export class Pilot extends EventEmitter {
  private sendWindow = IPC_DEFAULT_SEND_WINDOW;
  private readonly recvCredit: number;
  /** Version string of the daemon (from `hello`). */
  daemonVersion = '';

  private constructor(
    private readonly ipc: IpcClient,
    opts: PilotConnectOptions,
  ) {
    super();
    this.recvCredit = opts.recvCredit ?? IPC_DEFAULT_RECV_CREDIT;
    if (!Number.isInteger(this.recvCredit) || this.recvCredit < 1 || this.recvCredit > IPC_MAX_RECV_CREDIT) {
      throw new PilotSdkError('invalid_argument', `recvCredit must be 1..${IPC_MAX_RECV_CREDIT}`);
    }
    ipc.on('event', (ev: IpcEventBody) => {
      if (ev.event === 'trust') this.emit('trust', ev as unknown as TrustEvent);
      else if (ev.event === 'network') this.emit('network', ev);
      else this.emit('event', ev);
    });
    ipc.on('close', (err: PilotSdkError) => this.emit('close', err.code === 'closed' ? undefined : err));
    // 'error' would throw without a listener; notification failures are per-connection anyway.
    ipc.on('notifyError', (ev: IpcEventBody) => this.emit('warning', ev));
  }

  /** Connect to the daemon's IPC socket and negotiate the extension protocol. */
  static async connect(opts: PilotConnectOptions = {}): Promise<Pilot> {
    const ipc = await IpcClient.connect(opts.socket ?? defaultSocketPath(), opts.timeoutMs ?? 5000);
    let pilot: Pilot;
    try {
      pilot = new Pilot(ipc, opts);
      const hello = await withTimeout(ipc.request('hello', { version: IPC_PROTOCOL_VERSION, client: opts.client ?? 'pilot-node-sdk', data_frames: true }), opts.timeoutMs ?? 5000, 'hello');
      ipc.dataFrames = hello.data_frames === true;
      if (typeof hello.send_window === 'number' && hello.send_window > 0) pilot.sendWindow = hello.send_window;
      pilot.daemonVersion = typeof hello.daemon === 'string' ? hello.daemon : '';
    } catch (err) {
      ipc.close();
      throw err;
    }
    return pilot;
  }

  get closed(): boolean {
    return this.ipc.closed;
  }

  /** Raw extension request (for ops the SDK has no method for). Rejects with PilotSdkError(code). */
  async request(op: string, args: IpcMap = {}): Promise<Result> {
    return strip(await this.ipc.request(op, args));
  }

  // ----- streams ---------------------------------------------------------------------------------

  /** Open a stream to `peer:port`; resolves when established. */
  async dial(peer: PeerRef, port: number, opts: DialOptions = {}): Promise<PilotConnection> {
    const recvCredit = opts.recvCredit ?? this.recvCredit;
    const r = await this.ipc.request('dial', {
      addr: peerArg(peer),
      port: portArg(port),
      recv_credit: recvCredit,
      ...(opts.timeoutMs ? { timeout_ms: Math.max(1, Math.round(opts.timeoutMs)) } : {}),
    });
    return new PilotConnection(
      this.ipc,
      { conn: Number(r.conn), localPort: Number(r.local_port), remoteAddr: String(r.remote_addr), remotePort: Number(r.remote_port) },
      { sendWindow: this.sendWindow, recvCredit },
    );
  }

  /** Listen for streams on a virtual port. */
  async listen(port: number, opts: { backlog?: number; recvCredit?: number } = {}): Promise<PilotServer> {
    const recvCredit = opts.recvCredit ?? this.recvCredit;
    await this.ipc.request('listen', { port: portArg(port), recv_credit: recvCredit, ...(opts.backlog ? { backlog: opts.backlog } : {}) });
    return new PilotServer(this.ipc, port, { sendWindow: this.sendWindow, recvCredit });
  }

  /** Bind a datagram socket on a virtual port. */
  async datagram(port: number): Promise<PilotDatagramSocket> {
    await this.ipc.request('datagram_bind', { port: portArg(port) });
    return new PilotDatagramSocket(this.ipc, port);
  }

  /** Send one datagram without binding (source port chosen by the daemon). */
  async sendDatagram(peer: PeerRef, port: number, data: Uint8Array | string): Promise<void> {
    await this.ipc.request('datagram_send', { addr: peerArg(peer), port: portArg(port), data: typeof data === 'string' ? Buffer.from(data) : data });
  }

  // ----- node ------------------------------------------------------------------------------------

  info(): Promise<Result> {
    return this.request('info');
  }

  async peers(search?: string): Promise<Result[]> {
    const r = await this.ipc.request('peers', search === undefined ? {} : { search });
    return (r.peers as Result[] | undefined) ?? [];
  }

  async connections(): Promise<Result[]> {
    const r = await this.ipc.request('connections');
    return (r.connections as Result[] | undefined) ?? [];
  }

  async disconnect(id: number): Promise<void> {
    await this.ipc.request('disconnect', { id });
  }

  /** Resolve a hostname / address / node ID to `{address, node_id}`. */
  async resolve(peer: PeerRef): Promise<{ address: string; node_id: number }> {
    const r = await this.ipc.request('resolve', { addr: peerArg(peer) });
    return { address: String(r.address), node_id: Number(r.node_id) };
  }

  /** Round-trip time to a peer in milliseconds. */
  async ping(peer: PeerRef, size = 0): Promise<number> {
    const r = await this.ipc.request('ping', { addr: peerArg(peer), size });
    return Number(r.rtt_ms);
  }

  stats(): Promise<Result> {
    return this.request('stats');
  }

  findHostname(hostname: string): Promise<Result> {
    return this.request('resolve_hostname', { hostname });
  }
  setHostname(hostname: string): Promise<Result> {
    return this.request('set_hostname', { hostname });
  }
  setVisibility(isPublic: boolean): Promise<Result> {
    return this.request('set_visibility', { public: isPublic });
  }
  setTags(tags: string[]): Promise<Result> {
    return this.request('set_tags', { tags });
  }
  setTaskExec(enabled: boolean): Promise<Result> {
    return this.request('set_task_exec', { enabled });
  }
  setWebhook(url: string): Promise<Result> {
    return this.request('set_webhook', { url });
  }
  deregister(): Promise<Result> {
    return this.request('deregister');
  }

  // ----- trust -----------------------------------------------------------------------------------

  handshake(peer: PeerRef, justification = ''): Promise<Result> {
    return this.request('handshake_send', { node: nodeRef(peer), justification });
  }
  approve(peer: PeerRef): Promise<Result> {
    return this.request('handshake_approve', { node: nodeRef(peer) });
  }
  reject(peer: PeerRef, reason = ''): Promise<Result> {
    return this.request('handshake_reject', { node: nodeRef(peer), reason });
  }
  untrust(peer: PeerRef): Promise<Result> {
    return this.request('handshake_revoke', { node: nodeRef(peer) });
  }
  async pending(): Promise<Result[]> {
    return ((await this.ipc.request('handshake_pending')).pending as Result[] | undefined) ?? [];
  }
  async trusted(): Promise<Result[]> {
    return ((await this.ipc.request('handshake_trusted')).trusted as Result[] | undefined) ?? [];
  }

  // ----- networks --------------------------------------------------------------------------------

  /** Networks, enterprise administration and identity joins (ctl/sdk/networks.ts). */
  readonly network: PilotNetworks = new PilotNetworks((op, a) => this.request(op, a));
  /** The node's key lifecycle: info, rotate, setExpiry. */
  readonly key: PilotKeys = new PilotKeys((op, a) => this.request(op, a));

  // ----- tasks (port 1003) -----------------------------------------------------------------------

  /** Task submission through the daemon: submit, list, queue, accept, decline, execute, sendResults. */
  readonly tasks = new PilotTasks((op, args) => this.request(op, args));

  /** Close the IPC connection: the daemon closes every connection, listener and port opened through it. */
  async close(): Promise<void> {
    this.ipc.close();
  }
}

/** Trust ops take a node ID (number) or text the daemon resolves (address, hostname, "123"). */
function nodeRef(peer: PeerRef): number | string {
  if (typeof peer === 'number') return Number(peerArg(peer));
  const s = peerArg(peer);
  return /^\d+$/.test(s) ? Number(s) : s;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PilotSdkError('timeout', `${what} not answered within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
