// Real binaries behind real NATs (issue 5): `pilot-registry` (registry + beacon) on a public rig host,
// `pilot-daemon`s on hosts behind NAT routers, driven through their IPC sockets with the SDK (the socket
// lives on the shared filesystem, so the SDK runs in the test process while the daemon runs in its
// namespace). Used by rig-daemon.test.ts and bench/nat-paths.ts.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pilot, type PilotConnection } from '../../ctl/sdk/index.js';
import { NetRig, type Host, type NatType, type NodeProcess } from '../rigs/netns.js';

const dist = (rel: string): string => fileURLToPath(new URL(`../../${rel}`, import.meta.url));

export const INFRA_IP = '203.0.113.10';
export const REGISTRY = `${INFRA_IP}:9000`;
export const BEACON = `${INFRA_IP}:9001`;
/** Short NAT traversal timers so the rigs run in seconds (defaults: 20 s keepalive, 5 s re-punch, 4 s direct timeout). */
export const FAST_DAEMON_ARGS = ['--nat-keepalive', '1s', '--nat-probe', '700ms', '--nat-probe-max', '3s', '--nat-direct-timeout', '1500ms', '--nat-ping-timeout', '800ms'];
/** A test stream port on every daemon (outside the built-in services). */
export const SINK_PORT = 5100;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One row of `pilotctl peers` (IPC `peers`) as far as the rigs read it. */
export interface PeerRow {
  node_id: number;
  path: 'direct' | 'punched' | 'relayed';
  endpoint: string;
  rtt_ms: number | null;
  path_changed_at: string | null;
  encrypted: boolean;
  /** The tunnel sends through the beacon (v1 field; `endpoint` is then the peer's last known one). */
  relay: boolean;
  trusted: boolean;
}

/** Received-side result of one hashed stream. */
export interface Received {
  bytes: number;
  sha256: string;
}

/** A running `pilot-daemon` in a rig namespace plus an SDK client on its IPC socket. */
export class DaemonProc {
  /** Streams accepted on SINK_PORT, in arrival order, each resolving with what it carried. */
  private readonly arrivals: Array<Promise<Received>> = [];
  private readonly arrivalWaiters: Array<(p: Promise<Received>) => void> = [];

  private constructor(
    readonly name: string,
    readonly host: Host,
    readonly proc: NodeProcess,
    readonly pilot: Pilot,
    readonly id: number,
    readonly socket: string,
  ) {}

  static async start(world: DaemonWorld, host: Host, name: string, args: string[] = []): Promise<DaemonProc> {
    const socket = join(world.dir, `${name}.sock`);
    const proc = host.node(dist('daemon/main.js'), [
      '--registry', REGISTRY, '--beacon', BEACON, '--listen', '0.0.0.0:0', '--socket', socket, '--data-dir', join(world.dir, name),
      '--log-level', world.logDir ? 'debug' : 'warn', ...FAST_DAEMON_ARGS, ...args,
    ]);
    world.keepLog(name, proc);
    const ready = await proc.waitForLine((l) => l.startsWith('{"ready"'), 20_000, `${name} ready`).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${proc.stderr.recent().join('\n')}`);
    });
    const { node_id } = JSON.parse(ready) as { node_id: number };
    const pilot = await Pilot.connect({ socket, client: `rig-${name}` });
    pilot.on('warning', () => {});
    const d = new DaemonProc(name, host, proc, pilot, node_id, socket);
    const sink = await pilot.listen(SINK_PORT);
    sink.on('connection', (c: PilotConnection) => {
      const p = hashIncoming(c);
      p.catch(() => {});
      const w = d.arrivalWaiters.shift();
      if (w) w(p);
      else d.arrivals.push(p);
    });
    world.daemons.add(d);
    return d;
  }

  /** The next stream that arrives on SINK_PORT (already arrived ones first). */
  nextArrival(timeoutMs = 30_000): Promise<Received> {
    const queued = this.arrivals.shift();
    if (queued) return queued;
    return new Promise<Received>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no stream arrived within ${timeoutMs} ms`)), timeoutMs);
      this.arrivalWaiters.push((p) => {
        clearTimeout(timer);
        p.then(resolve, reject);
      });
    });
  }

  async peers(): Promise<PeerRow[]> {
    return (await this.pilot.peers()) as unknown as PeerRow[];
  }

  async peer(node: number): Promise<PeerRow | undefined> {
    return (await this.peers()).find((p) => p.node_id === node);
  }

  /** Poll `pilotctl peers` until the row for `node` satisfies `pred`. */
  async waitPeer(node: number, pred: (p: PeerRow) => boolean, what: string, ms = 15_000): Promise<PeerRow> {
    const end = Date.now() + ms;
    let last: PeerRow | undefined;
    while (Date.now() < end) {
      last = await this.peer(node);
      if (last && pred(last)) return last;
      await sleep(150);
    }
    const nat = await this.natStats().catch(() => ({}));
    throw new Error(`${this.name}: timed out waiting for ${what}; last row ${JSON.stringify(last)}; nat ${JSON.stringify(nat)}`);
  }

  /** NAT traversal counters and our reflexive endpoint (IPC `stats` → `nat`). */
  async natStats(): Promise<Record<string, number | string>> {
    return ((await this.pilot.stats()).nat ?? {}) as Record<string, number | string>;
  }

  /** `pilotctl --json <args>` run inside the daemon's namespace against its socket; the envelope's `data`. */
  async pilotctl(...args: string[]): Promise<Record<string, unknown>> {
    const { stdout } = await this.host.exec(process.execPath, [dist('ctl/pilotctl.js'), '--socket', this.socket, '--json', ...args], { timeoutMs: 20_000 });
    const env = JSON.parse(stdout) as { status: string; data?: Record<string, unknown>; message?: string };
    if (env.status !== 'ok') throw new Error(`${this.name}: pilotctl ${args.join(' ')}: ${env.message ?? stdout}`);
    return env.data ?? {};
  }

  async stop(): Promise<void> {
    await this.pilot.close().catch(() => undefined);
    await this.proc.kill(3000);
  }
}

/** Mutual trust through the registry (the only way between private nodes): a asks b by node ID, b approves. */
export async function trust(a: DaemonProc, b: DaemonProc, timeoutMs = 15_000): Promise<void> {
  await a.pilot.handshake(b.id, `rig: ${a.name} → ${b.name}`);
  const end = Date.now() + timeoutMs;
  while (!(await b.pilot.pending()).some((p) => p.node_id === a.id)) {
    if (Date.now() > end) throw new Error(`${b.name} never saw ${a.name}'s handshake request`);
    await sleep(100);
  }
  await b.pilot.approve(a.id);
  while (!(await a.pilot.trusted()).some((p) => p.node_id === b.id)) {
    if (Date.now() > end) throw new Error(`${a.name} never learned that ${b.name} approved`);
    await sleep(100);
  }
}

/**
 * `from` opens a stream to `to`'s SINK_PORT and writes `bytes` random bytes in 64 KiB writes (with
 * `gapMs` pauses if given, to make one stream last), then ends it. Resolves with both hashes.
 */
export async function transfer(from: DaemonProc, to: DaemonProc, bytes: number, opts: { gapMs?: number; onProgress?: (sent: number) => void } = {}): Promise<{ sent: string; received: Received }> {
  const arrival = to.nextArrival(60_000);
  arrival.catch(() => {});
  const conn = await from.pilot.dial(to.id, SINK_PORT, { timeoutMs: 20_000 });
  conn.on('error', () => {});
  const h = createHash('sha256');
  const CHUNK = 64 * 1024;
  for (let off = 0; off < bytes; off += CHUNK) {
    const chunk = randomBytes(Math.min(CHUNK, bytes - off));
    h.update(chunk);
    if (!conn.write(chunk)) await waitDrain(conn);
    opts.onProgress?.(off + chunk.length);
    if (opts.gapMs) await sleep(opts.gapMs);
  }
  conn.end();
  const received = await arrival;
  conn.destroy();
  return { sent: h.digest('hex'), received };
}

function waitDrain(conn: PilotConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => (conn.off('close', onClose), resolve());
    const onClose = (): void => (conn.off('drain', onDrain), reject(new Error('stream closed while writing')));
    conn.once('drain', onDrain);
    conn.once('close', onClose);
  });
}

function hashIncoming(conn: PilotConnection): Promise<Received> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let n = 0;
    conn.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
    });
    conn.once('end', () => resolve({ bytes: n, sha256: h.digest('hex') }));
    conn.once('error', reject);
  });
}

/** The rig: an "internet" with the registry + beacon on INFRA_IP; NATs and daemons added per scenario. */
export class DaemonWorld {
  readonly daemons = new Set<DaemonProc>();
  private natNo = 0;
  private readonly logs: WriteStream[] = [];

  private constructor(
    readonly rig: NetRig,
    readonly infra: Host,
    readonly registry: NodeProcess,
    readonly dir: string,
    /** `RIG_DAEMON_LOGS=dir`: every process's stderr (daemons at debug level) is written there. */
    readonly logDir: string | undefined,
  ) {}

  static async create(prefix: string): Promise<DaemonWorld> {
    const dir = mkdtempSync(join(tmpdir(), 'pilot-rigd-'));
    const rig = await NetRig.create({ prefix });
    try {
      const infra = await rig.addPublicHost('infra', INFRA_IP);
      const registry = infra.node(dist('registry/main.js'), [
        '--listen', '0.0.0.0:9000', '--beacon', '0.0.0.0:9001', '--data-dir', join(dir, 'registry'), '--store-sync', 'normal', '--log-level', 'warn',
      ]);
      const w = new DaemonWorld(rig, infra, registry, dir, process.env.RIG_DAEMON_LOGS || undefined);
      w.keepLog('registry', registry);
      await registry.waitForLine(/^pilot-registry listening on/, 20_000, 'registry listening');
      return w;
    } catch (err) {
      await rig.close();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A new NAT router of `type` (198.51.100.n, LAN 10.n.0.0/24) with one private host behind it. */
  async natted(type: NatType, name: string): Promise<Host> {
    const n = ++this.natNo;
    const nat = await this.rig.addNat(`nat${n}`, { publicIp: `198.51.100.${n}`, lan: `10.${n}.0.0/24`, type });
    return this.rig.addPrivateHost(name, nat);
  }

  daemon(host: Host, name: string, args: string[] = []): Promise<DaemonProc> {
    return DaemonProc.start(this, host, name, args);
  }

  /** @internal */
  keepLog(name: string, proc: NodeProcess): void {
    if (!this.logDir) return;
    const out = createWriteStream(join(this.logDir, `${name}.log`));
    this.logs.push(out);
    proc.child.stderr?.on('data', (d: string | Buffer) => out.write(d));
  }

  /** Stop every daemon (SDK first), the registry, delete the namespaces and the temp dir. */
  async close(): Promise<void> {
    await Promise.all([...this.daemons].map((d) => d.stop().catch(() => undefined)));
    this.daemons.clear();
    await this.rig.close();
    for (const l of this.logs) l.end();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
