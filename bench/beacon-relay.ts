// Beacon relay throughput: two UDP clients bound at a beacon (signed discover) relay frames through it
// as fast as it sustains, next to the same clients sending directly to each other (the baseline).
// The beacon runs in a child process so its CPU use is measured on its own.
//
//   npx tsc -p . && node dist/bench/beacon-relay.js [--duration 3000] [--window 256]
//
// Reports relayed MB/s (payload bytes), packets/s, drops and the beacon's CPU% per frame size, and the
// ratio relay/direct. Result ids: natpunch.relay (1200-byte frames), natpunch.relay_8k, and friends.
// Profile the beacon with BEACON_CHILD_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
import { fork, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { Identity } from '../transport/identity.js';
import { encodeRelay, encodeSignedDiscover, type BeaconStats } from '../natpunch/index.js';

export interface BenchResult {
  id: string;
  value: number;
  unit: 'MB/s' | 'ops/s' | 'ms' | 'MiB' | '%' | 'x';
  runs: number[];
}

interface Phase {
  mbps: number;
  pps: number;
  sent: number;
  received: number;
  lost: number;
  beaconCpuPct?: number;
  beaconDrops?: number;
}

interface ChildStats {
  stats: BeaconStats;
  cpu: NodeJS.CpuUsage;
}

const here = dirname(fileURLToPath(import.meta.url));

class BeaconChild {
  private pending: Array<(s: ChildStats) => void> = [];
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.on('message', (m: { type: string } & ChildStats) => {
      if (m.type === 'stats') this.pending.shift()?.({ stats: m.stats, cpu: m.cpu });
    });
  }

  static start(keys: Record<number, string>): Promise<BeaconChild> {
    const child = fork(join(here, 'beacon-child.js'), [], { execArgv: process.env.BEACON_CHILD_ARGS ? process.env.BEACON_CHILD_ARGS.split(' ') : [], env: { ...process.env, BEACON_KEYS: JSON.stringify(keys) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`beacon child exited with ${code}`)));
      child.once('message', (m: { type: string; port: number }) => {
        if (m.type === 'ready') resolve(new BeaconChild(child, m.port));
      });
    });
  }

  stats(): Promise<ChildStats> {
    return new Promise((resolve) => {
      this.pending.push(resolve);
      this.child.send({ type: 'stats' });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.removeAllListeners('exit'); // the start-up rejection handler
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.send({ type: 'close' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
}

async function udp(): Promise<Socket> {
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

/**
 * Windowed blast: keep at most `window` frames in flight (sent − received − presumed lost); a 10 ms
 * stall without progress writes the in-flight frames off as lost, so loss never deadlocks the sender.
 */
async function blast(from: Socket, to: Socket, frame: Buffer, dest: { port: number; address: string }, payloadBytes: number, ms: number, window: number): Promise<Phase> {
  let sent = 0;
  let received = 0;
  let lost = 0;
  let running = true;
  const pump = (): void => {
    while (running && sent - received - lost < window) {
      from.send(frame, dest.port, dest.address);
      sent++;
    }
  };
  const onMsg = (): void => {
    received++;
    if ((received & 15) === 0) pump();
  };
  to.on('message', onMsg);
  let lastRecv = -1;
  const stall = setInterval(() => {
    if (received === lastRecv) lost = sent - received;
    lastRecv = received;
    pump();
  }, 10);
  const t0 = process.hrtime.bigint();
  pump();
  await new Promise((r) => setTimeout(r, ms));
  running = false;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const recvAtEnd = received;
  clearInterval(stall);
  await new Promise((r) => setTimeout(r, 100)); // let stragglers arrive before counting losses
  to.off('message', onMsg);
  return {
    mbps: (recvAtEnd * payloadBytes) / elapsed / 1e6,
    pps: recvAtEnd / elapsed,
    sent,
    received,
    lost: sent - received,
  };
}

export async function runBeaconRelayBench(o: { durationMs?: number; window?: number; sizes?: number[] } = {}): Promise<{ results: BenchResult[]; table: string }> {
  const ms = o.durationMs ?? 3000;
  const window = o.window ?? 256;
  const sizes = o.sizes ?? [1200, 8192];
  const ida = Identity.generate();
  const idb = Identity.generate();
  const beacon = await BeaconChild.start({ 1: ida.publicKey.toString('hex'), 2: idb.publicKey.toString('hex') });
  const a = await udp();
  const b = await udp();
  const ep = { address: '127.0.0.1', port: beacon.port };
  try {
    for (const [s, id, n] of [[a, ida, 1], [b, idb, 2]] as const) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no discover reply')), 3000);
        s.once('message', () => {
          clearTimeout(timer);
          resolve();
        });
        s.send(encodeSignedDiscover(id, n, Date.now()), ep.port, ep.address);
      });
    }
    const rows: string[] = [];
    const results: BenchResult[] = [];
    rows.push('frame    mode     MB/s      pkts/s    lost   beacon drops  beacon CPU%');
    for (const size of sizes) {
      const payload = Buffer.alloc(size, 0xab);
      const relayFrame = encodeRelay(1, 2, payload);
      // Warm up both paths briefly (JIT, socket buffers), then measure.
      await blast(a, b, payload, { port: b.address().port, address: '127.0.0.1' }, size, 300, window);
      const direct = await blast(a, b, payload, { port: b.address().port, address: '127.0.0.1' }, size, ms, window);
      await blast(a, b, relayFrame, ep, size, 300, window);
      const s0 = await beacon.stats();
      const t0 = process.hrtime.bigint();
      const relay = await blast(a, b, relayFrame, ep, size, ms, window);
      const s1 = await beacon.stats();
      const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
      const cpuUs = s1.cpu.user + s1.cpu.system - (s0.cpu.user + s0.cpu.system);
      relay.beaconCpuPct = (100 * cpuUs) / wallUs;
      const drops = (st: BeaconStats): number =>
        Object.entries(st.counters)
          .filter(([k]) => k.startsWith('relay_dropped_'))
          .reduce((n, [, v]) => n + v, 0);
      relay.beaconDrops = drops(s1.stats) - drops(s0.stats);
      const label = size >= 1024 && size % 1024 === 0 ? `${size / 1024}k` : String(size);
      rows.push(fmtRow(label, 'direct', direct));
      rows.push(fmtRow(label, 'relay', relay));
      rows.push(`${label.padEnd(8)} ratio    ${(relay.mbps / direct.mbps).toFixed(2)}x relay/direct`);
      const suffix = size === 1200 ? '' : `_${label}`;
      results.push({ id: `natpunch.relay${suffix}`, value: round(relay.mbps), unit: 'MB/s', runs: [round(relay.mbps)] });
      results.push({ id: `natpunch.relay_pps${suffix}`, value: Math.round(relay.pps), unit: 'ops/s', runs: [Math.round(relay.pps)] });
      results.push({ id: `natpunch.relay_cpu_pct${suffix}`, value: round(relay.beaconCpuPct), unit: '%', runs: [round(relay.beaconCpuPct)] });
      results.push({ id: `natpunch.relay_ratio${suffix}`, value: round(relay.mbps / direct.mbps), unit: 'x', runs: [round(relay.mbps / direct.mbps)] });
      results.push({ id: `baseline.udp_direct${suffix === '' ? '_1200' : suffix}`, value: round(direct.mbps), unit: 'MB/s', runs: [round(direct.mbps)] });
    }
    return { results, table: rows.join('\n') };
  } finally {
    a.close();
    b.close();
    await beacon.close();
  }
}

function fmtRow(label: string, mode: string, p: Phase): string {
  const cpu = p.beaconCpuPct === undefined ? '-' : p.beaconCpuPct.toFixed(0);
  const drops = p.beaconDrops === undefined ? '-' : String(p.beaconDrops);
  return `${label.padEnd(8)} ${mode.padEnd(8)} ${p.mbps.toFixed(1).padStart(7)}  ${Math.round(p.pps).toString().padStart(8)}  ${String(p.lost).padStart(5)}  ${drops.padStart(12)}  ${cpu.padStart(11)}`;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const { results, table } = await runBeaconRelayBench({ durationMs: arg('--duration'), window: arg('--window') });
  console.log(table);
  console.log(JSON.stringify({ runAt: new Date().toISOString(), results }, null, 2));
}
