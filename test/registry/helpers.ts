import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { Identity } from '../../transport/identity.js';
import { RegistryClient, type NodeAuth } from '../../registry/client.js';
import type { RegistryConfig } from '../../registry/config.js';
import { encodeFrame, FrameDecoder } from '../../registry/protocol/framing.js';
import { RateCategories, type RateLimitConfig } from '../../registry/ratelimit.js';
import { RegistryServer, type RegistryServerOptions } from '../../registry/server.js';
import type { StateDump } from '../../registry/state.js';

export const ADMIN = 'test-admin-token';

export const NO_LIMITS = Object.fromEntries(RateCategories.map((c) => [c, null])) as RateLimitConfig;

/** Adjustable clock (unix ms). */
export class TestClock {
  constructor(public t = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Harness {
  server: RegistryServer;
  port: number;
  client: RegistryClient;
  clock: TestClock | undefined;
  dump(): StateDump;
}

/** In-memory registry on 127.0.0.1:<random> with a connected client; closed at teardown. */
export async function startRegistry(
  t: Tap,
  opts: { config?: Partial<RegistryConfig>; clock?: TestClock; manual?: boolean } & Omit<RegistryServerOptions, 'config' | 'clock'> = {},
): Promise<Harness> {
  const server = new RegistryServer({
    logger: pino({ level: 'silent' }),
    manualMaintenance: opts.manual ?? true,
    ...opts,
    clock: opts.clock,
    config: { dataDir: null, listen: '127.0.0.1:0', adminToken: ADMIN, rateLimits: NO_LIMITS, ...opts.config },
  });
  const info = await server.listen();
  const client = await RegistryClient.connect({ host: '127.0.0.1', port: info.registry.port, clock: opts.clock, requestTimeoutMs: 15_000 });
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  return { server, port: info.registry.port, client, clock: opts.clock, dump: () => server.registryState.dump() };
}

export interface TestNode extends NodeAuth {
  identity: Identity;
  nodeId: number;
}

export async function registerNode(client: RegistryClient, opts: { hostname?: string; listenAddr?: string; owner?: string } = {}): Promise<TestNode> {
  const identity = Identity.generate();
  const reply = await client.register(identity, { listenAddr: opts.listenAddr ?? '0.0.0.0:4000', ...opts });
  return { identity, nodeId: reply.node_id };
}

/** A bare framed connection for protocol-level tests. */
export class RawConn {
  private readonly decoder = new FrameDecoder(16 * 1024 * 1024);
  private readonly frames: Array<Record<string, unknown>> = [];
  private waiters: Array<(f: Record<string, unknown> | null) => void> = [];
  closed = false;
  readonly closedP: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      for (const f of this.decoder.push(c)) this.deliver(JSON.parse(f.toString('utf8')) as Record<string, unknown>);
    });
    socket.on('error', () => {});
    this.closedP = new Promise((r) =>
      socket.on('close', () => {
        this.closed = true;
        for (const w of this.waiters.splice(0)) w(null);
        r();
      }),
    );
  }

  static open(port: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port }, () => resolve(new RawConn(s)));
      s.once('error', reject);
    });
  }

  private deliver(f: Record<string, unknown>): void {
    const w = this.waiters.shift();
    if (w) w(f);
    else this.frames.push(f);
  }

  send(obj: unknown): void {
    this.socket.write(encodeFrame(obj));
  }

  sendBytes(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** Send a raw body with a correct length prefix. */
  sendBody(body: Buffer | string): void {
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    const h = Buffer.alloc(4);
    h.writeUInt32BE(b.length);
    this.socket.write(Buffer.concat([h, b]));
  }

  /** Next frame, or null if the connection closed first. */
  next(timeoutMs = 15_000): Promise<Record<string, unknown> | null> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timeout waiting for a frame')), timeoutMs);
      this.waiters.push((v) => {
        clearTimeout(timer);
        resolve(v);
      });
    });
  }

  async request(obj: unknown): Promise<Record<string, unknown>> {
    this.send(obj);
    const r = await this.next();
    if (!r) throw new Error('connection closed');
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Sign `<challenge>:<ts>` the way clients do. */
export function sign(identity: Identity, challenge: string, ts: number): { ts: number; signature: string } {
  return { ts, signature: identity.signB64(`${challenge}:${ts}`) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `cond` until true (for asynchronous effects such as pushes), failing after `ms`. */
export async function waitFor(cond: () => boolean, ms = 15_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** What a promise settles with: `ok`, or the rejection's code (its text if it has none) and message. */
export async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
    return { code: 'ok', message: '' };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return { code: e.code ?? String(err), message: e.message ?? String(err) };
  }
}

/** The code a promise rejects with, or `ok`. */
export async function code(p: Promise<unknown>): Promise<string> {
  return (await failure(p)).code;
}
