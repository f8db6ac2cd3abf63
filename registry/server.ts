import { EventEmitter } from 'node:events';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import pino, { type Logger } from 'pino';
import { ReplayGuard, SignatureVerifier } from './auth.js';
import { DEFAULT_CONFIG, splitHostPort, type RegistryConfig } from './config.js';
import { Connection, encodeError, type ConnectionHost } from './connection.js';
import { RegistryError } from './errors.js';
import { HandlerContext, type BeaconInfo, type Clock, type Handler, type HandlerTable, type Reply } from './handlers/context.js';
import { buildHandlerTable, UNSUPPORTED_TYPES } from './handlers/index.js';
import { RegistryMetrics } from './metrics.js';
import { encodeFrame, parseFrameObject } from './protocol/framing.js';
import { PushHub, type PushSink } from './push.js';
import { RateLimiter } from './ratelimit.js';
import { clip } from './rules.js';
import { RegistryState } from './state.js';
import { SqliteStore } from './store/sqlite.js';
import type { RegistryStore } from './store/types.js';
import { loadTlsMaterial, type TlsMaterial } from './tls.js';
import type { BeaconServer } from '../natpunch/beacon-server.js';
import { VerifyPool, type Verifier } from './verify-pool.js';
import { EnterpriseState, type EnterpriseOptions } from './handlers/enterprise-state.js';

export interface RegistryServerOptions {
  /** Overrides over DEFAULT_CONFIG (`dataDir: null` = in-memory SQLite). */
  config?: Partial<RegistryConfig>;
  /** Store to use instead of SQLite in `config.dataDir`. */
  store?: RegistryStore;
  clock?: Clock;
  logger?: Logger;
  /** Extra message handlers (extensions such as the enterprise layer). */
  handlers?: ReadonlyArray<readonly [string, Handler]>;
  /** Don't start the periodic timers (tests drive `reapStale()`/`flushLastSeen()` themselves). */
  manualMaintenance?: boolean;
  /** Enterprise layer options (identity verifier, invite TTL, key warning). */
  enterprise?: EnterpriseOptions;
}

export interface ListeningInfo {
  registry: AddressInfo;
  http: AddressInfo | null;
  tlsFingerprint: string | null;
}

export const DB_FILE = 'registry.db';
const LOOP_DELAY_RESOLUTION_MS = 5;

/**
 * The registry server (SPEC §6): length-prefixed JSON over TCP or TLS, the v1 message catalogue plus
 * networks, push subscriptions and an admin API; state in memory, every acknowledged mutation durable
 * in the store before the reply. No globals: several can run in one process.
 *
 * Events: 'fatal' (Error) when the store fails; the server then refuses every request with
 * `unavailable` until restarted (fail-stop keeps memory and disk from diverging).
 */
export class RegistryServer extends EventEmitter implements ConnectionHost {
  readonly config: RegistryConfig;
  readonly log: Logger;
  readonly metrics: RegistryMetrics;
  readonly clock: Clock;
  private readonly store: RegistryStore;
  private state = new RegistryState();
  private ctx!: HandlerContext;
  private enterprise: EnterpriseState | null = null;
  private readonly enterpriseOpts: EnterpriseOptions;
  private readonly handlers: HandlerTable;
  private readonly push: PushHub;
  private readonly replay: ReplayGuard;
  private readonly limiter: RateLimiter;
  private readonly beacons = new Map<number, BeaconInfo>();
  private tcp: NetServer | null = null;
  private http: HttpServer | null = null;
  private tlsMaterial: TlsMaterial | null = null;
  private verifier: Verifier | null = null;
  private readonly connections = new Set<Connection>();
  private readonly perIp = new Map<string, number>();
  private timers: NodeJS.Timeout[] = [];
  private nextConnId = 1;
  private startedAt = 0;
  private flushing: Promise<void> | null = null;
  private state_: 'new' | 'listening' | 'closing' | 'closed' = 'new';
  private failed: Error | null = null;
  private loopDelay: IntervalHistogram | null = null;
  private beacon: { server: BeaconServer; timer: NodeJS.Timeout } | null = null;

  readonly maxPipeline: number;
  readonly maxFrameBytes: number;
  readonly idleTimeoutMs: number;

  constructor(opts: RegistryServerOptions = {}) {
    super();
    this.config = { ...DEFAULT_CONFIG, ...opts.config };
    this.clock = opts.clock ?? { now: () => Date.now() };
    this.log = (opts.logger ?? pino({ level: this.config.logLevel }, pino.destination(2))).child({ component: 'registry' });
    this.store =
      opts.store ??
      new SqliteStore({
        path: this.config.dataDir === null ? ':memory:' : join(this.config.dataDir, DB_FILE),
        sync: this.config.storeSync,
        onCheckpointFailure: (err) => this.log.error({ err: err.message }, 'WAL checkpoint worker failed; SQLite checkpoints inline from now on'),
      });
    this.handlers = buildHandlerTable(opts.handlers);
    this.enterpriseOpts = opts.enterprise ?? {};
    this.push = new PushHub(this.config.maxSubscriptionsPerNode, () => this.metrics.dropped.labels('push_subscriber').inc());
    this.replay = new ReplayGuard(this.config.signatureWindowMs, this.config.replayCacheMax);
    this.limiter = new RateLimiter(this.config.rateLimits);
    this.maxPipeline = this.config.maxPipeline;
    this.maxFrameBytes = 1024 * 1024;
    this.idleTimeoutMs = this.config.idleTimeoutMs;
    this.metrics = new RegistryMetrics({
      nodesOnline: () => this.state.counters.online,
      nodesTotal: () => this.state.counters.total,
      trustLinks: () => this.state.counters.mutualLinks,
      taskExecutors: () => this.state.counters.taskExecutors,
      networks: () => this.state.networks.size,
      connections: () => this.connections.size,
      subscriptions: () => this.push.size,
      replayCacheEntries: () => this.replay.size,
      uptimeSeconds: () => (this.startedAt ? Math.floor((this.clock.now() - this.startedAt) / 1000) : 0),
    });
    this.manual = opts.manualMaintenance ?? false;
  }
  private readonly manual: boolean;

  /** Open the store, load state, start listening. */
  async listen(): Promise<ListeningInfo> {
    if (this.state_ !== 'new') throw new Error('RegistryServer.listen() may be called once');
    this.state_ = 'listening';
    await this.store.open();
    const snap = await this.store.load();
    this.state = RegistryState.fromSnapshot(snap, Math.floor(this.clock.now() / 1000), this.config.staleAfterMs / 1000);
    const enterprise = new EnterpriseState(snap.enterprise, { log: this.log, ...this.enterpriseOpts });
    this.enterprise = enterprise;
    this.verifier =
      this.config.verifyWorkers > 0
        ? new VerifyPool({
            workers: this.config.verifyWorkers,
            onError: (err) => this.log.error({ err: err.message }, 'signature worker failed; replaced'),
          })
        : new SignatureVerifier({ async: this.config.verifyAsync, keyCacheSize: this.config.keyCacheSize });
    this.ctx = new HandlerContext({
      state: this.state,
      store: this.store,
      clock: this.clock,
      settings: {
        adminToken: this.config.adminToken,
        legacySignatures: this.config.legacySignatures,
        keepaliveMs: this.config.keepaliveMs,
        beaconTtlMs: this.config.beaconTtlMs,
      },
      log: this.log,
      metrics: this.metrics,
      push: this.push,
      verifier: this.verifier,
      replay: this.replay,
      limiter: this.limiter,
      beacons: this.beacons,
      onStoreFailure: (err) => this.onStoreFailure(err),
      stats: () => this.stats(),
      enterprise,
    });
    this.startedAt = this.clock.now();
    this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    this.loopDelay.enable();

    if (this.config.tls) {
      this.tlsMaterial = await loadTlsMaterial({ dataDir: this.config.dataDir, certFile: this.config.tlsCert, keyFile: this.config.tlsKey });
      this.tcp = createTlsServer({ cert: this.tlsMaterial.cert, key: this.tlsMaterial.key, handshakeTimeout: 10_000, minVersion: 'TLSv1.2' }, (s) =>
        this.accept(s, true),
      );
      this.tcp.on('tlsClientError', (err) => this.log.debug({ err: err.message }, 'TLS handshake failed'));
    } else {
      this.tcp = createTcpServer((s) => this.accept(s, false));
    }
    this.tcp.maxConnections = this.config.maxConnections + 16; // hard cap; the soft cap answers with an error
    const { host, port } = splitHostPort(this.config.listen, 'listen');
    await listenOn(this.tcp, host, port);
    const registry = this.tcp.address() as AddressInfo;

    let http: AddressInfo | null = null;
    if (this.config.http !== null) {
      const h = splitHostPort(this.config.http, 'http');
      this.http = createHttpServer((req, res) => this.serveHttp(req.url ?? '/', res));
      await listenOn(this.http, h.host, h.port);
      http = this.http.address() as AddressInfo;
    }
    if (!this.manual) this.startTimers();
    this.log.info(
      {
        addr: `${registry.address}:${registry.port}`,
        http: http ? `${http.address}:${http.port}` : null,
        tls: this.tlsMaterial !== null,
        tls_fingerprint: this.tlsMaterial?.fingerprint ?? null,
        store: this.store.description,
        nodes: this.state.counters.total,
        networks: this.state.networks.size,
      },
      'registry listening',
    );
    return { registry, http, tlsFingerprint: this.tlsMaterial?.fingerprint ?? null };
  }

  private startTimers(): void {
    const every = (ms: number, fn: () => void): void => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.config.reapIntervalMs, () => this.reapStale());
    every(this.config.heartbeatFlushMs, () => void this.flushLastSeen());
    every(this.config.keepaliveMs, () => this.push.keepalive(this.clock.now()));
    every(60_000, () => this.limiter.sweep(this.clock.now()));
  }

  /** Counters for admin_stats; the event-loop delay histogram covers the time since the last call. */
  private stats(): Record<string, unknown> {
    const h = this.loopDelay;
    // samples are timer intervals: subtract the sampling resolution to get the delay
    const ms = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_DELAY_RESOLUTION_MS);
    const eventLoop = h && h.count > 0 ? { p50_ms: ms(h.percentile(50)), p99_ms: ms(h.percentile(99)), max_ms: ms(h.max) } : null;
    h?.reset();
    return {
      connections: this.connections.size,
      subscriptions: this.push.size,
      uptime_s: Math.floor((this.clock.now() - this.startedAt) / 1000),
      event_loop: eventLoop,
    };
  }

  /** Mark nodes without a heartbeat for `staleAfterMs` offline (records kept). Returns how many. */
  reapStale(): number {
    const n = this.state.markStale(Math.floor(this.clock.now() / 1000), this.config.staleAfterMs / 1000);
    if (n > 0) this.log.info({ count: n }, 'stale nodes marked offline');
    return n;
  }

  /** Persist batched heartbeat last-seen values (see README "Heartbeats"). */
  flushLastSeen(): Promise<void> {
    if (this.flushing) return this.flushing;
    const entries = this.state.takeDirtySeen();
    if (entries.length === 0 || this.failed) return Promise.resolve();
    this.flushing = this.store
      .flushLastSeen(entries)
      .catch((err: Error) => this.log.error({ err: err.message }, 'last-seen flush failed'))
      .finally(() => {
        this.flushing = null;
      });
    return this.flushing;
  }

  /** The beacon binds node IDs to endpoints only with proof of this key (SPEC §7). */
  publicKeyOf(nodeId: number): Buffer | null {
    const n = this.state.node(nodeId);
    return n && !n.deregistered ? Buffer.from(n.publicKey, 'base64') : null;
  }

  /**
   * The endpoint this registry recorded for a node at its (signed) registration: the beacon binds an
   * unsigned v1 discover that comes from exactly there (SPEC §7 "the registry's authenticated record").
   */
  registeredEndpointOf(nodeId: number): { address: string; port: number } | null {
    const n = this.state.node(nodeId);
    if (!n || n.deregistered) return null;
    const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(n.realAddr);
    return m ? { address: m[1]!, port: Number(m[2]) } : null;
  }

  /**
   * Attach the in-process beacon (main.ts starts it): its health joins `/healthz`, its counters
   * `/metrics`, and it lists itself in `beacon_list` under `advertise` (refreshed within the beacon TTL)
   * so daemons and peer beacons find it. The registry does not close it.
   */
  attachBeacon(beacon: BeaconServer, advertise: string): void {
    if (this.beacon) throw new Error('a beacon is already attached');
    const refresh = (): void => {
      this.beacons.delete(beacon.beaconId); // insertion order = recency (admin.ts)
      this.beacons.set(beacon.beaconId, { addr: advertise, seenMs: this.clock.now() });
    };
    refresh();
    const timer = setInterval(refresh, Math.max(1000, Math.floor(this.config.beaconTtlMs / 3)));
    timer.unref();
    this.beacon = { server: beacon, timer };
    this.metrics.addBeaconSource(() => {
      const b = this.beacon?.server;
      if (!b) return null;
      const st = b.stats();
      return { healthy: b.healthy(), bindings: st.bindings, sendQueue: st.sendQueue, counters: st.counters };
    });
  }

  /** Live entries of `beacon_list` (the in-process beacon included). */
  listBeacons(): Array<{ id: number; addr: string }> {
    const now = this.clock.now();
    const out: Array<{ id: number; addr: string }> = [];
    for (const [id, b] of this.beacons) if (now - b.seenMs <= this.config.beaconTtlMs) out.push({ id, addr: b.addr });
    return out;
  }

  /** Forget the attached beacon (before closing it). */
  detachBeacon(): void {
    if (!this.beacon) return;
    clearInterval(this.beacon.timer);
    this.beacons.delete(this.beacon.server.beaconId);
    this.beacon = null;
  }

  /** The privacy rule, for the beacon's punch/relay decisions (SPEC §6). */
  canResolve(requesterId: number, targetId: number): boolean {
    return this.state.canResolve(requesterId, targetId);
  }

  get tlsFingerprint(): string | null {
    return this.tlsMaterial?.fingerprint ?? null;
  }

  /** Read-only view for tests and embedding (do not mutate). */
  get registryState(): RegistryState {
    return this.state;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  get subscriptionCount(): number {
    return this.push.size;
  }

  // ------------------------------------------------------------------ connections

  private accept(socket: Socket | TLSSocket, tls: boolean): void {
    const ip = normaliseIp(socket.remoteAddress ?? '');
    if (this.state_ !== 'listening') {
      socket.destroy();
      return;
    }
    const fromIp = this.perIp.get(ip) ?? 0;
    if (this.connections.size >= this.config.maxConnections || fromIp >= this.config.maxConnectionsPerIp) {
      const what = this.connections.size >= this.config.maxConnections ? 'total' : 'per-IP';
      this.metrics.dropped.labels(`connection_${what === 'total' ? 'total' : 'per_ip'}`).inc();
      this.log.warn({ ip }, `connection refused: ${what} connection limit reached`);
      socket.on('error', () => {});
      socket.end(encodeError(new RegistryError('limit_reached', `too many connections (${what} limit)`)));
      return;
    }
    this.perIp.set(ip, fromIp + 1);
    const conn = new Connection(this, socket, this.nextConnId++, ip, socket.remotePort ?? 0, tls);
    this.connections.add(conn);
  }

  connectionClosed(conn: Connection): void {
    if (!this.connections.delete(conn)) return;
    const left = (this.perIp.get(conn.ip) ?? 1) - 1;
    if (left <= 0) this.perIp.delete(conn.ip);
    else this.perIp.set(conn.ip, left);
  }

  addSubscription(nodeId: number, sink: PushSink): void {
    this.push.add(nodeId, sink);
  }

  removeSubscription(nodeId: number, sink: PushSink): void {
    this.push.remove(nodeId, sink);
  }

  /** One request frame → one reply frame. Never throws. */
  dispatch(body: Buffer, conn: Connection): Buffer | Promise<Buffer> {
    const t0 = performance.now();
    let type = 'invalid';
    try {
      if (this.failed) throw new RegistryError('unavailable', 'registry store has failed; restart the registry');
      const m = parseFrameObject(body);
      const t = m.type;
      if (typeof t !== 'string') throw new RegistryError('bad_request', t === undefined ? 'missing field "type"' : 'type must be a string');
      const handler = this.handlers.get(t);
      if (!handler) {
        type = 'unknown';
        throw new RegistryError('unknown_type', UNSUPPORTED_TYPES.get(t) ?? `unknown request type "${clip(t)}"`);
      }
      type = t;
      if (handler.category) this.ctx.limit(conn, handler.category);
      const result = handler.handle(this.ctx, m, conn);
      if (isPromise(result)) return result.then((r) => this.reply(type, r, t0), (err: unknown) => this.errorReply(type, err, t0));
      return this.reply(type, result, t0);
    } catch (err) {
      return this.errorReply(type, err, t0);
    }
  }

  private reply(type: string, reply: Reply, t0: number): Buffer {
    this.metrics.request(type, (performance.now() - t0) / 1000);
    return encodeFrame(reply);
  }

  private errorReply(type: string, err: unknown, t0: number): Buffer {
    let e: RegistryError;
    if (err instanceof RegistryError) e = err;
    else {
      this.log.error({ type, err: err instanceof Error ? err.stack : String(err) }, 'handler failed');
      e = new RegistryError('internal', 'internal error (see registry log)');
    }
    this.metrics.request(type, (performance.now() - t0) / 1000);
    this.metrics.error(type, e.code);
    return encodeError(e);
  }

  private onStoreFailure(err: Error): void {
    this.failed = err;
    this.log.fatal({ err: err.message }, 'store commit failed: refusing all requests until restart');
    this.emit('fatal', err);
  }

  // ------------------------------------------------------------------ HTTP

  private serveHttp(url: string, res: import('node:http').ServerResponse): void {
    const path = url.split('?')[0];
    if (path === '/metrics') {
      this.metrics.text().then(
        (text) => {
          res.writeHead(200, { 'content-type': this.metrics.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${err.message}\n`);
        },
      );
      return;
    }
    if (path === '/healthz') {
      const beacon = this.beacon?.server;
      const beaconOk = !beacon || beacon.healthy();
      const ok = this.failed === null && this.state_ === 'listening' && beaconOk;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          status: ok ? 'ok' : 'unhealthy',
          nodes_online: this.state.counters.online,
          beacon: beacon ? { status: beaconOk ? 'ok' : 'down', bindings: beacon.stats().bindings } : { status: 'off' },
          ...(this.failed ? { error: 'store failed' } : {}),
        }),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /metrics or /healthz\n');
  }

  // ------------------------------------------------------------------ shutdown

  /** Stop accepting, finish in-flight replies (≤ 2 s), flush last-seen, close the store. */
  async close(): Promise<void> {
    if (this.state_ === 'closed' || this.state_ === 'closing') return;
    const wasListening = this.state_ === 'listening';
    this.state_ = 'closing';
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.detachBeacon();
    const tcpClosed = this.tcp ? new Promise<void>((r) => this.tcp!.close(() => r())) : Promise.resolve();
    const httpClosed = this.http ? new Promise<void>((r) => this.http!.close(() => r())) : Promise.resolve();
    this.http?.closeAllConnections();
    this.push.closeAll('registry shutting down');
    for (const c of this.connections) c.end();
    const deadline = Date.now() + 2000;
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.connections) c.destroy();
    await Promise.all([tcpClosed, httpClosed]);
    if (wasListening) {
      if (this.flushing) await this.flushing;
      if (!this.failed) await this.flushLastSeen();
    }
    this.loopDelay?.disable();
    await this.verifier?.close();
    await this.enterprise?.close();
    await this.store.close();
    this.state_ = 'closed';
    this.log.info('registry closed');
  }
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown }).then === 'function';
}

function normaliseIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function listenOn(server: NetServer | HttpServer, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
