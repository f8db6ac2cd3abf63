#!/usr/bin/env node
/**
 * Registry load benchmark (SPEC §6 goals): registers N nodes (default 100,000) with a real
 * `pilot-registry` process, then measures from this separate load-generator process, over several
 * pipelined connections:
 *   - signed heartbeats/s, closed loop, while a paced lookup load runs on other connections
 *   - heartbeat p50/p99 latency at a paced 5,000/s, with the same concurrent lookup load
 *   - lookups/s and resolves/s (signed), closed loop, with p50/p99
 *   - registry memory per node: RSS delta after GC (registry runs with --expose-gc) / N
 * Goals: ≥ 5,000 signed heartbeats/s with p99 < 20 ms while serving lookups; ≥ 30,000 lookups/s;
 * < 2 KiB per node. Prints a table and writes bench/results/registry.json.
 *
 * Signed requests are signed by the generator just before each phase (fresh `ts`, valid for 60 s):
 * in a deployment signing is spread over the daemons, so on a small machine shared by registry and
 * generator the generator's signing must not eat the registry's CPU. The registry does all its work:
 * freshness, replay cache, Ed25519 verification.
 *
 *   (env PILOT_BENCH_REGISTRY_NODE_ARGS="--cpu-prof --cpu-prof-dir=D" profiles the registry process;
 *    PILOT_BENCH_REGISTRY_CONFIG='{"verify_workers":1}' adds registry config keys)
 *   node dist/bench/registry-load.js [--nodes N] [--seconds S] [--connections C] [--window W]
 *                                    [--hb-rate R] [--lookup-rate R] [--store-sync full|normal]
 *                                    [--phases hb,paced,lookup,resolve] [--paced-runs N]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RegistryClient, type NodeAuth, type Signer } from '../registry/client.js';
import { challenges } from '../registry/protocol/challenges.js';
import { REGISTRY_NODE_FLAGS } from '../registry/node-flags.js';
import { procCpuSeconds, threadCpuSeconds } from './lib/proc.js';
import { median } from './lib/results.js';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = join(here, '..', 'registry', 'main.js');
const RESULTS = join(here, '..', '..', 'bench', 'results', 'registry.json');
const ADMIN = 'bench-admin-token';

/**
 * The generator's own full GC, run between phases: signing a pool leaves tens of MiB of garbage, and a
 * mark-compact of it in the middle of a paced run stalled the generator's event loop, so ~1 % of the
 * heartbeats it timed then (the ones in flight) showed its pause as registry latency.
 */
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function arg(name: string, def: number): number;
function arg(name: string, def: string): string;
function arg(name: string, def: number | string): number | string {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) return def;
  const v = process.argv[i + 1]!;
  return typeof def === 'number' ? Number(v) : v;
}

const NODES = arg('nodes', 100_000);
const SECONDS = arg('seconds', 10);
const CONNECTIONS = arg('connections', 8);
const WINDOW = arg('window', 64);
const HB_RATE = arg('hb-rate', 5000);
const LOOKUP_RATE = arg('lookup-rate', 2000);
const STORE_SYNC = arg('store-sync', 'full');
const PUBLIC_NODES = Math.min(1000, NODES);
const WATCHDOG_MIN = arg('watchdog-min', 20);
/** Paced-heartbeat runs (the reported p99 is their median, as the other benchmarks' median of 3). */
const PACED_RUNS = arg('paced-runs', 3);
/** Phases to run (comma list of hb, paced, lookup, resolve; default all): profile one at a time. */
const PHASES = new Set(arg('phases', 'hb,paced,lookup,resolve').split(','));

/**
 * A fast signer for the generator (Identity.generate imports keys via PKCS#8, ~1 ms each). Keys come out
 * of the generation job as JWK and are imported again: exporting a freshly generated KeyObject can
 * deadlock on Node 20 (a GC during the export finalises the job, which locks the same key mutex).
 */
class BenchKey implements Signer {
  readonly publicKeyB64: string;
  private readonly key: KeyObject;
  constructor(jwk: { kty?: string; crv?: string; d?: string; x?: string }) {
    this.key = createPrivateKey({ key: jwk, format: 'jwk' });
    this.publicKeyB64 = Buffer.from(jwk.x!, 'base64url').toString('base64');
  }
  static generate(): BenchKey {
    const { privateKey } = generateKeyPairSync('ed25519', { privateKeyEncoding: { format: 'jwk' }, publicKeyEncoding: { format: 'jwk' } } as never) as unknown as {
      privateKey: { kty: string; crv: string; d: string; x: string };
    };
    return new BenchKey(privateKey);
  }
  signB64(message: string): string {
    return sign(null, Buffer.from(message), this.key).toString('base64');
  }
}

class Latencies {
  private data = new Float64Array(1 << 16);
  n = 0;
  add(ms: number): void {
    if (this.n === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.n++] = ms;
  }
  pct(p: number): number {
    if (this.n === 0) return NaN;
    const sorted = this.data.slice(0, this.n).sort();
    return sorted[Math.min(this.n - 1, Math.floor((p / 100) * this.n))]!;
  }
}

async function startRegistry(dataDir: string): Promise<{ proc: ChildProcess; port: number }> {
  const cfg = join(dataDir, 'bench-config.json');
  writeFileSync(cfg, JSON.stringify({ rate_limits: false, log_level: 'warn', max_pipeline: 1024, store_sync: STORE_SYNC, ...JSON.parse(process.env.PILOT_BENCH_REGISTRY_CONFIG ?? '{}') }));
  const proc = spawn(
    process.execPath,
    ['--expose-gc', ...REGISTRY_NODE_FLAGS, ...(process.env.PILOT_BENCH_REGISTRY_NODE_ARGS ?? '').split(' ').filter(Boolean), MAIN, '--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', join(dataDir, 'data'), '--admin-token', ADMIN, '--config', cfg],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on [^\s]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`registry exited early (${code})`)));
  });
  return { proc, port };
}

/** Run `op` closed-loop with `window` outstanding per client for `ms`; returns completed count. */
async function closedLoop(clients: RegistryClient[], window: number, ms: number, op: (c: RegistryClient, i: number) => Promise<unknown>, lat: Latencies): Promise<{ done: number; errors: number; seconds: number }> {
  const end = performance.now() + ms;
  let done = 0;
  let errors = 0;
  let seq = 0;
  const t0 = performance.now();
  const lane = async (c: RegistryClient): Promise<void> => {
    while (performance.now() < end) {
      const s = performance.now();
      try {
        await op(c, seq++);
        lat.add(performance.now() - s);
        done++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(clients.flatMap((c) => Array.from({ length: window }, () => lane(c))));
  return { done, errors, seconds: (performance.now() - t0) / 1000 };
}

/** Issue `rate` ops/s spread over `clients` until `stop()`; latencies recorded. */
function paced(clients: RegistryClient[], rate: number, op: (c: RegistryClient, i: number) => Promise<unknown>, lat: Latencies): { stop: () => Promise<{ done: number; errors: number; seconds: number }> } {
  let running = true;
  let issued = 0;
  let done = 0;
  let errors = 0;
  const inflight = new Set<Promise<unknown>>();
  const t0 = performance.now();
  const tick = (): void => {
    if (!running) return;
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    while (issued < due) {
      const i = issued++;
      const s = performance.now();
      const p = op(clients[i % clients.length]!, i).then(
        () => {
          lat.add(performance.now() - s);
          done++;
        },
        () => errors++,
      );
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    }
    setTimeout(tick, 2);
  };
  tick();
  return {
    stop: async () => {
      running = false;
      const seconds = (performance.now() - t0) / 1000;
      await Promise.all(inflight);
      return { done, errors, seconds };
    },
  };
}

/** "thread µs/op" for the threads that used ≥ 3 % of the total during a phase (where the CPU goes). */
function threadBreakdown(pid: number | undefined, before: Map<string, number>, after: Map<string, number>, ops: number): string {
  const rows: Array<[string, number]> = [];
  let total = 0;
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    total += d;
    const [name, tid] = [k.slice(0, k.lastIndexOf(':')), k.slice(k.lastIndexOf(':') + 1)];
    rows.push([Number(tid) === pid ? 'main' : `${name}/${tid}`, d]);
  }
  return rows
    .filter(([, d]) => d >= total * 0.03)
    .sort((a, b) => b[1] - a[1])
    .map(([k, d]) => `${k} ${fmt((d * 1e6) / Math.max(1, ops))}`)
    .join(', ');
}

/** CPU µs per operation spent by the registry and by this generator during `fn`. */
async function withCpu<T extends { done: number }>(pid: number | undefined, fn: () => Promise<T>): Promise<T & { regUs: number; genUs: number; threads: string }> {
  const r0 = procCpuSeconds(pid);
  const t0 = threadCpuSeconds(pid);
  const g0 = process.cpuUsage();
  const res = await fn();
  const g = process.cpuUsage(g0);
  const regUs = ((procCpuSeconds(pid) - r0) * 1e6) / Math.max(1, res.done);
  return { ...res, regUs, genUs: (g.user + g.system) / Math.max(1, res.done), threads: threadBreakdown(pid, t0, threadCpuSeconds(pid), res.done) };
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-bench-registry-'));
  console.log(`registry load benchmark: ${fmt(NODES)} nodes, ${CONNECTIONS} connections × window ${WINDOW}, ${SECONDS} s phases, store sync ${STORE_SYNC}`);
  console.log(`machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} (shared machine: figures are indicative)`);
  // a stuck phase must not hang the whole benchmark run
  let child: ChildProcess | null = null;
  const watchdog = setTimeout(() => {
    console.error(`benchmark did not finish within ${WATCHDOG_MIN} min; aborting`);
    child?.kill('SIGKILL');
    process.exit(2);
  }, WATCHDOG_MIN * 60_000);
  watchdog.unref();
  const { proc, port } = await startRegistry(dir);
  child = proc;
  console.log(`registry pid ${proc.pid} on 127.0.0.1:${port}`);
  const connect = (): Promise<RegistryClient> => RegistryClient.connect({ host: '127.0.0.1', port, maxPending: 1 << 20, requestTimeoutMs: 60_000 });
  const clients = await Promise.all(Array.from({ length: CONNECTIONS }, connect));
  const side = await Promise.all(Array.from({ length: 2 }, connect));
  const admin = await connect();
  try {
    await new Promise((r) => setTimeout(r, 500));
    const base = await admin.adminStats(ADMIN, { gc: true });
    if (!base.gc_ran) throw new Error('registry did not run GC (expected --expose-gc)');

    // ---- keys + registration
    let t = performance.now();
    const keys: BenchKey[] = [];
    for (let i = 0; i < NODES; i++) keys.push(BenchKey.generate());
    console.log(`generated ${fmt(NODES)} Ed25519 keys in ${fmt((performance.now() - t) / 1000, 1)} s`);
    const nodes: NodeAuth[] = new Array(NODES);
    t = performance.now();
    let next = 0;
    const regLat = new Latencies();
    await Promise.all(
      clients.flatMap((c) =>
        Array.from({ length: WINDOW }, async () => {
          while (next < NODES) {
            const i = next++;
            const s = performance.now();
            const r = await c.register(keys[i]!, { listenAddr: `:${10000 + (i % 50000)}` });
            regLat.add(performance.now() - s);
            nodes[i] = { identity: keys[i]!, nodeId: r.node_id };
          }
        }),
      ),
    );
    const regSeconds = (performance.now() - t) / 1000;
    console.log(`registered ${fmt(NODES)} nodes in ${fmt(regSeconds, 1)} s (${fmt(NODES / regSeconds)}/s, p99 ${fmt(regLat.pct(99), 2)} ms)`);

    await new Promise((r) => setTimeout(r, 1000));
    const after = await admin.adminStats(ADMIN, { gc: true });
    const bytesPerNode = (after.memory.rss - base.memory.rss) / NODES;
    const heapPerNode = (after.memory.heap_used - base.memory.heap_used) / NODES;
    console.log(`registry memory: RSS ${fmt(base.memory.rss / 2 ** 20, 1)} → ${fmt(after.memory.rss / 2 ** 20, 1)} MiB = ${fmt(bytesPerNode)} B/node (heap ${fmt(heapPerNode)} B/node)`);

    // a public subset for resolves
    await Promise.all(nodes.slice(0, PUBLIC_NODES).map((n, i) => clients[i % clients.length]!.setVisibility(n, true)));

    const pick = (i: number): NodeAuth => nodes[(i * 7919) % NODES]!;
    const lookupOp = (c: RegistryClient, i: number): Promise<unknown> => c.lookup(pick(i).nodeId);
    // ts = wall clock at signing; a node reappears in a pool only thousands of signatures later, so
    // (challenge, ts) pairs are unique and no request is a replay
    const presign = (count: number, build: (i: number, ts: number) => Record<string, unknown>): Array<Record<string, unknown>> => {
      const t0 = performance.now();
      const out = Array.from({ length: count }, (_, i) => build(i, Date.now()));
      collectGarbage();
      console.log(`  (pre-signed ${fmt(count)} requests in ${fmt((performance.now() - t0) / 1000, 1)} s)`);
      return out;
    };
    const heartbeatReq = (i: number, t: number): Record<string, unknown> => {
      const n = pick(i);
      return { type: 'heartbeat', node_id: n.nodeId, ts: t, signature: n.identity.signB64(`${challenges.heartbeat(n.nodeId)}:${t}`) };
    };
    const resolveReq = (i: number, t: number): Record<string, unknown> => {
      const n = pick(i);
      const target = nodes[i % PUBLIC_NODES]!.nodeId;
      return { type: 'resolve', node_id: target, requester_id: n.nodeId, ts: t, signature: n.identity.signB64(`${challenges.resolve(n.nodeId, target)}:${t}`) };
    };
    /** Use pre-signed requests; sign on the fly if the pool runs out. */
    const fromPool = (pool: Array<Record<string, unknown>>, fallback: (i: number, ts: number) => Record<string, unknown>) => (c: RegistryClient, i: number): Promise<unknown> =>
      c.request(() => (i < pool.length ? pool[i]! : fallback(i, Date.now())));
    const closedPool = Math.max(20_000, Math.round(12_000 * SECONDS));
    const skipped = { done: NaN, errors: 0, seconds: 1, regUs: NaN, genUs: NaN };
    const hbMaxLat = new Latencies();
    let hbMaxRate = NaN;
    if (PHASES.has('hb')) {
    const heartbeatOp = fromPool(presign(closedPool, heartbeatReq), heartbeatReq);

    // ---- heartbeats, closed loop, with concurrent paced lookups
    const bgLat = new Latencies();
    const bg = paced(side, LOOKUP_RATE, lookupOp, bgLat);
    const hbMax = await withCpu(proc.pid, () => closedLoop(clients, WINDOW, SECONDS * 1000, heartbeatOp, hbMaxLat));
    const bg1 = await bg.stop();
    hbMaxRate = hbMax.done / hbMax.seconds;
    console.log(`heartbeats (closed loop): ${fmt(hbMaxRate)}/s, p50 ${fmt(hbMaxLat.pct(50), 2)} ms, p99 ${fmt(hbMaxLat.pct(99), 2)} ms, errors ${hbMax.errors}; concurrent lookups ${fmt(bg1.done / bg1.seconds)}/s p99 ${fmt(bgLat.pct(99), 2)} ms`);
    console.log(`  CPU per heartbeat (incl. the concurrent lookups): registry ${fmt(hbMax.regUs)} µs (${hbMax.threads}), generator ${fmt(hbMax.genUs)} µs`);
    }

    // ---- heartbeats paced at HB_RATE, with concurrent paced lookups; PACED_RUNS runs, median p99
    const pacedResults: Array<{ p50: number; p99: number; rate: number }> = [];
    for (let run = 1; PHASES.has('paced') && run <= PACED_RUNS; run++) {
      const hbLat = new Latencies();
      const bgLat = new Latencies();
      const heartbeatOp = fromPool(presign(Math.round(HB_RATE * (SECONDS + 2)), heartbeatReq), heartbeatReq);
      const bg = paced(side, LOOKUP_RATE, lookupOp, bgLat);
      await admin.adminStats(ADMIN); // resets the registry's event-loop delay histogram
      const genLoop = monitorEventLoopDelay({ resolution: 1 });
      const hbPaced = await withCpu(proc.pid, async () => {
        genLoop.enable();
        const hb = paced(clients, HB_RATE, heartbeatOp, hbLat);
        await new Promise((r) => setTimeout(r, SECONDS * 1000));
        genLoop.disable();
        const loop = (await admin.adminStats(ADMIN)).event_loop_delay;
        const res = await hb.stop();
        return { ...res, loop, lookups: await bg.stop() };
      });
      const { loop, lookups } = hbPaced;
      const rate = hbPaced.done / hbPaced.seconds;
      pacedResults.push({ p50: hbLat.pct(50), p99: hbLat.pct(99), rate });
      console.log(`heartbeats paced at ${fmt(HB_RATE)}/s (run ${run}/${PACED_RUNS}): achieved ${fmt(rate)}/s, p50 ${fmt(hbLat.pct(50), 2)} ms, p99 ${fmt(hbLat.pct(99), 2)} ms; concurrent lookups ${fmt(lookups.done / lookups.seconds)}/s p99 ${fmt(bgLat.pct(99), 2)} ms`);
      console.log(`  registry event-loop delay meanwhile: p50 ${fmt(loop?.p50_ms ?? NaN, 2)} ms, p99 ${fmt(loop?.p99_ms ?? NaN, 2)} ms, max ${fmt(loop?.max_ms ?? NaN, 2)} ms; generator's p99 ${fmt(genLoop.percentile(99) / 1e6, 2)} ms`);
      console.log(`  CPU: registry ${fmt((hbPaced.regUs * rate) / 1e4)} % of one core, per heartbeat (incl. the lookups) ${hbPaced.threads} µs; generator ${fmt(hbPaced.genUs)} µs`);
    }
    const pacedP99 = median(pacedResults.map((r) => r.p99));
    const pacedP50 = median(pacedResults.map((r) => r.p50));
    const hbPacedRate = median(pacedResults.map((r) => r.rate));
    const pacedP99s = pacedResults.map((r) => round(r.p99, 2));

    // ---- lookups, closed loop
    const luLat = new Latencies();
    const lu = PHASES.has('lookup') ? await withCpu(proc.pid, () => closedLoop(clients, WINDOW, SECONDS * 1000, lookupOp, luLat)) : skipped;
    const luRate = lu.done / lu.seconds;
    console.log(`lookups (closed loop): ${fmt(luRate)}/s, p50 ${fmt(luLat.pct(50), 2)} ms, p99 ${fmt(luLat.pct(99), 2)} ms, errors ${lu.errors}; CPU per lookup: registry ${fmt(lu.regUs, 1)} µs, generator ${fmt(lu.genUs, 1)} µs`);

    // ---- resolves (signed), closed loop
    const reLat = new Latencies();
    const re = PHASES.has('resolve') ? await withCpu(proc.pid, () => closedLoop(clients, WINDOW, SECONDS * 1000, fromPool(presign(closedPool, resolveReq), resolveReq), reLat)) : skipped;
    const reRate = re.done / re.seconds;
    console.log(`resolves (closed loop): ${fmt(reRate)}/s, p50 ${fmt(reLat.pct(50), 2)} ms, p99 ${fmt(reLat.pct(99), 2)} ms, errors ${re.errors}; CPU per resolve: registry ${fmt(re.regUs)} µs, generator ${fmt(re.genUs)} µs`);

    const end = await admin.adminStats(ADMIN, { gc: true });
    console.log(`registry RSS at the end: ${fmt(end.memory.rss / 2 ** 20, 1)} MiB (replay cache ${fmt(end.replay_cache_entries)} signatures)`);

    const rows: Array<[string, string, string, string]> = [
      ['registry.heartbeats_signed', fmt(hbMaxRate), 'ops/s', '≥ 5,000'],
      ['registry.heartbeat_p99_ms', fmt(pacedP99, 2), 'ms', `< 20 (paced ${fmt(HB_RATE)}/s, median of ${pacedResults.length}: ${pacedP99s.join(' / ')})`],
      ['registry.heartbeat_p50_ms', fmt(pacedP50, 2), 'ms', ''],
      ['registry.heartbeats_paced', fmt(hbPacedRate), 'ops/s', `offered ${fmt(HB_RATE)}/s`],
      ['registry.lookups', fmt(luRate), 'ops/s', '≥ 30,000'],
      ['registry.lookup_p99_ms', fmt(luLat.pct(99), 2), 'ms', ''],
      ['registry.resolves', fmt(reRate), 'ops/s', ''],
      ['registry.resolve_p99_ms', fmt(reLat.pct(99), 2), 'ms', ''],
      ['registry.registrations', fmt(NODES / regSeconds), 'ops/s', ''],
      ['registry.bytes_per_node', fmt(bytesPerNode), 'B', '< 2,048'],
    ];
    console.log('\n| id | value | unit | goal |\n|---|---:|---|---|');
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);

    const results = [
      { id: 'registry.heartbeats_signed', value: round(hbMaxRate), unit: 'ops/s', runs: [round(hbMaxRate)] },
      { id: 'registry.heartbeat_p99_ms', value: round(pacedP99, 2), unit: 'ms', runs: pacedP99s },
      { id: 'registry.heartbeat_p50_ms', value: round(pacedP50, 2), unit: 'ms', runs: pacedResults.map((r) => round(r.p50, 2)) },
      { id: 'registry.heartbeats_paced', value: round(hbPacedRate), unit: 'ops/s', runs: pacedResults.map((r) => round(r.rate)) },
      { id: 'registry.lookups', value: round(luRate), unit: 'ops/s', runs: [round(luRate)] },
      { id: 'registry.lookup_p99_ms', value: round(luLat.pct(99), 2), unit: 'ms', runs: [round(luLat.pct(99), 2)] },
      { id: 'registry.resolves', value: round(reRate), unit: 'ops/s', runs: [round(reRate)] },
      { id: 'registry.resolve_p99_ms', value: round(reLat.pct(99), 2), unit: 'ms', runs: [round(reLat.pct(99), 2)] },
      { id: 'registry.registrations', value: round(NODES / regSeconds), unit: 'ops/s', runs: [round(NODES / regSeconds)] },
      { id: 'registry.bytes_per_node', value: round(bytesPerNode), unit: 'B', runs: [round(bytesPerNode)] },
    ];
    mkdirSync(dirname(RESULTS), { recursive: true });
    writeFileSync(
      RESULTS,
      JSON.stringify({ runAt: new Date().toISOString(), config: { nodes: NODES, seconds: SECONDS, connections: CONNECTIONS, window: WINDOW, hbRate: HB_RATE, lookupRate: LOOKUP_RATE, storeSync: STORE_SYNC, cpus: cpus().length }, results }, null, 2) + '\n',
    );
    console.log(`\nwrote ${RESULTS}`);
  } finally {
    await Promise.all([...clients, ...side, admin].map((c) => c.close()));
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
