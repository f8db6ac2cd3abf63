// Helpers for daemon tests: an in-process registry, in-process or spawned daemons, a raw IPC client.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { loadDaemonConfig, type DaemonConfig } from '../../daemon/config.js';
import { Daemon, type DaemonOptions } from '../../daemon/daemon.js';
import { DAEMON_NODE_FLAGS } from '../../daemon/node-flags.js';
import {
  decodeIpcMessage,
  encodeIpcMessage,
  IpcFrameDecoder,
  request,
  type IpcMap,
  type IpcMessage,
  type IpcOpName,
  type IpcOps,
} from '../../daemon/ipc/protocol.js';
import { RegistryServer } from '../../registry/server.js';
import { RateCategories, type RateLimitConfig } from '../../registry/ratelimit.js';

export const ADMIN = 'test-admin-token';
const NO_LIMITS = Object.fromEntries(RateCategories.map((c) => [c, null])) as RateLimitConfig;
export const DAEMON_MAIN = fileURLToPath(new URL('../../daemon/main.js', import.meta.url));

interface Tap {
  teardown(fn: () => unknown): void;
}

export function tempDir(t: Tap, prefix = 'pilotd-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export interface RegistryHandle {
  server: RegistryServer;
  port: number;
  close(): Promise<void>;
}

/** In-process registry on 127.0.0.1 (port 0 = any); durable when `dataDir` is given. */
export async function startRegistry(t: Tap, opts: { port?: number; dataDir?: string | null; tls?: boolean } = {}): Promise<RegistryHandle & { fingerprint: string }> {
  const server = new RegistryServer({
    logger: pino({ level: 'silent' }),
    config: {
      dataDir: opts.dataDir ?? null,
      listen: `127.0.0.1:${opts.port ?? 0}`,
      adminToken: ADMIN,
      rateLimits: NO_LIMITS,
      ...(opts.tls ? { tls: true } : {}),
    } as never,
  });
  const info = await server.listen();
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await server.close();
  };
  t.teardown(close);
  return { server, port: info.registry.port, close, fingerprint: info.tlsFingerprint ?? '' };
}

export async function daemonConfig(dir: string, registryPort: number, extra: string[] = []): Promise<DaemonConfig> {
  const cl = await loadDaemonConfig(
    ['--registry', `127.0.0.1:${registryPort}`, '--listen', '127.0.0.1:0', '--socket', join(dir, 'pilot.sock'), '--data-dir', dir, ...(extra.includes('--keepalive') ? [] : ['--keepalive', '1s']), ...extra],
    { env: {} },
  );
  if (cl.kind !== 'run') throw new Error('help?');
  return cl.config;
}

/** In-process daemon; closed at teardown. */
export async function startDaemon(
  t: Tap,
  registryPort: number,
  opts: { dir?: string; extra?: string[]; options?: Partial<DaemonOptions> } = {},
): Promise<Daemon> {
  const dir = opts.dir ?? tempDir(t);
  const config = await daemonConfig(dir, registryPort, opts.extra);
  const d = new Daemon({ config, reconnectMinMs: 100, reconnectMaxMs: 500, ...opts.options });
  t.teardown(() => d.close());
  await d.start();
  return d;
}

export interface DaemonProcess {
  proc: ChildProcess;
  nodeId: number;
  socket: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn `pilot-daemon` and wait for its readiness line. Killed at teardown. */
export async function spawnDaemon(t: Tap, args: string[]): Promise<DaemonProcess> {
  const proc = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PILOT_LOG_LEVEL: 'warn' } });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  const ready = await new Promise<{ node_id: number; socket: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start: ${err.slice(-2000)}`)), 15_000);
    const check = (): void => {
      const line = out.split('\n').find((l) => l.startsWith('{"ready"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { node_id: number; socket: string });
      }
    };
    proc.stdout!.on('data', check);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (${code}) before ready: ${err.slice(-2000)}`));
    });
  });
  return { proc, nodeId: ready.node_id, socket: ready.socket, stderr: () => err, exited };
}

/** A raw IPC client: frames in, decoded messages out. */
export class RawIpc {
  readonly messages: IpcMessage[] = [];
  private readonly decoder = new IpcFrameDecoder();
  private waiters: Array<{ pred: (m: IpcMessage) => boolean; resolve: (m: IpcMessage) => void }> = [];
  private nextId = 1;
  closed = false;
  readonly closedP: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      for (const f of this.decoder.push(c)) this.deliver(decodeIpcMessage(f));
    });
    socket.on('error', () => {});
    this.closedP = new Promise((r) => socket.on('close', () => ((this.closed = true), r())));
  }

  static async connect(t: Tap, path: string): Promise<RawIpc> {
    const s = connect(path);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    const c = new RawIpc(s);
    t.teardown(() => c.socket.destroy());
    return c;
  }

  private deliver(m: IpcMessage): void {
    const i = this.waiters.findIndex((w) => w.pred(m));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w!.resolve(m);
      return;
    }
    this.messages.push(m);
  }

  /** Wait for (or take an already received) message matching `pred`. */
  next(pred: (m: IpcMessage) => boolean, timeoutMs = 10_000): Promise<IpcMessage> {
    const i = this.messages.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.messages.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (m: IpcMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`timeout waiting for an IPC message; have: ${JSON.stringify(this.messages.map((m) => m.type))}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  send(m: IpcMessage): void {
    this.socket.write(encodeIpcMessage(m));
  }

  raw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Extension request → response body (ok or error). */
  async call<K extends IpcOpName>(op: K, args: IpcOps[K]['args'], timeoutMs = 15_000): Promise<IpcMap & { ok: boolean; code?: string; message?: string }> {
    const id = this.nextId++;
    this.send(request(id, op, args));
    const m = await this.next((x) => x.type === 'response' && x.id === id, timeoutMs);
    return (m as Extract<IpcMessage, { type: 'response' }>).body as IpcMap & { ok: boolean };
  }

  async ok<K extends IpcOpName>(op: K, args: IpcOps[K]['args'], timeoutMs?: number): Promise<IpcMap> {
    const r = await this.call(op, args, timeoutMs);
    if (!r.ok) throw new Error(`${op} failed: ${r.code} ${r.message}`);
    return r;
  }

  event(name: string, pred: (b: IpcMap) => boolean = () => true, timeoutMs = 10_000): Promise<IpcMap> {
    return this.next((m) => m.type === 'event' && m.body.event === name && pred(m.body), timeoutMs).then((m) => (m as Extract<IpcMessage, { type: 'event' }>).body);
  }

  /** Collect `data` events of a connection until `n` bytes (granting credit as we go). */
  async readBytes(conn: number, n: number, timeoutMs = 10_000): Promise<Buffer> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const e = await this.event('data', (b) => b.conn === conn, timeoutMs);
      const d = Buffer.from(e.data as Uint8Array);
      parts.push(d);
      got += d.length;
      this.send(request(0, 'credit', { conn, bytes: d.length }));
    }
    return Buffer.concat(parts);
  }

  close(): void {
    this.socket.destroy();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` until it returns truthy. */
export async function until<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Make two daemons trust each other through their IPC sockets (handshake + approve). */
export async function trustPair(ia: RawIpc, ib: RawIpc, aNode: number, bNode: number): Promise<void> {
  await ia.ok('handshake_send', { node: bNode, justification: 'test' });
  await until(async () => ((await ib.ok('handshake_pending', {})).pending as unknown[]).length > 0, 10_000, 'pending');
  await ib.ok('handshake_approve', { node: aNode });
  await until(async () => ((await ia.ok('handshake_trusted', {})).trusted as Array<{ node_id: number }>).some((x) => x.node_id === bNode), 10_000, 'trusted');
}

/** Length-prefixed raw frame. */
export function frame(body: Uint8Array): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length, 0);
  return Buffer.concat([h, body]);
}
