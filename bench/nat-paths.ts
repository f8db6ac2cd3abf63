// NAT paths benchmark (issue 5): throughput and RTT of one stream between two NatTraversal peers
//   - direct: both peers on loopback in the public "infra" namespace (the baseline of the same run),
//   - punched: both peers behind cone NATs (rig scenario 1),
//   - relayed: both peers behind symmetric NATs, through the beacon (rig scenario 3),
// plus the beacon process's CPU while it relays. Goal: relay ≥ 0.5× direct, beacon < 1 core.
// Needs root (network namespaces); real NATs are nftables in namespaces, so all paths share this machine.
// `--daemons`: the same three paths with the shipped binaries instead of the test peers: `pilot-registry`
// (registry + beacon) and `pilot-daemon`s, driven through the SDK over their IPC sockets (so the figures
// include the IPC hop a user's program pays); results as natpunch.daemon_path_*.
//
//   npx tsc -p . && node dist/bench/nat-paths.js [--daemons] [--mib 64] [--pings 50] [--udp-payload 1472 (test peers only)] [--no-write]
import { fileURLToPath } from 'node:url';
import { rigAvailable, type Host } from '../test/rigs/netns.js';
import { natWorld, PeerProc } from '../test/natpunch/rig-helpers.js';
import { DaemonWorld, trust, transfer, type DaemonProc } from '../test/natpunch/rig-daemon-helpers.js';
import { procCpuSeconds } from './lib/proc.js';
import { fmt, median, printTable, writeResults, type BenchResult } from './lib/results.js';

const argv = process.argv;
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(name);
  return i > 0 ? Number(argv[i + 1]) : dflt;
};
const MIB = opt('--mib', 64);
const PINGS = opt('--pings', 50);
/** Cap UDP payloads (e.g. 1472: no IP fragmentation); 0 = the engine's default (large datagrams). */
const UDP_PAYLOAD = opt('--udp-payload', 0);
const PEER_ARGS = UDP_PAYLOAD ? ['--udp-payload', String(UDP_PAYLOAD)] : [];
const MiB = 1 << 20;

interface PathFigures {
  mbps: number;
  rttMs: number;
  path: string;
  ok: boolean;
  beaconCpuPct?: number;
}

interface InfraStats {
  cpuMs: number;
  wallMs: number;
  beacon: { counters: Record<string, number> };
}

async function measure(a: PeerProc, b: PeerProc, infra: { call(): Promise<InfraStats> } | null): Promise<PathFigures> {
  await a.call({ cmd: 'connect', peer: b.id }, 'connected');
  // Warm-up: the path is chosen (punch or relay fallback) and the stream engine has its window.
  await run(a, b, 2 * MiB);
  await infra?.call();
  const t0 = performance.now();
  const r = await run(a, b, MIB * MiB);
  const secs = (performance.now() - t0) / 1000;
  const cpu = await infra?.call();
  if (cpu) {
    const c = cpu.beacon.counters;
    console.log(`  beacon: relayed ${c.relay_delivered} frames, dropped: queue ${c.relay_dropped_queue_full}, unbound ${c.relay_dropped_sender_unbound}, mismatch ${c.relay_dropped_sender_mismatch}, dest ${c.relay_dropped_dest_unknown}`);
  }
  const conn = (await a.call({ cmd: 'stats' }, 'stats')).connection as { retransmits: number; mss: number; srtt_ms: number } | null;
  if (conn) console.log(`  sender stream: mss ${conn.mss}, retransmits ${conn.retransmits}, srtt ${conn.srtt_ms} ms`);
  const pinged = await a.call({ cmd: 'ping', peer: b.id, count: PINGS }, 'pinged', 60_000);
  const path = (await a.pathTo(b.id))?.path ?? '?';
  return {
    mbps: (MIB * MiB) / 1e6 / secs,
    rttMs: median(pinged.rtts as number[]),
    path,
    ok: r,
    beaconCpuPct: cpu ? (100 * cpu.cpuMs) / cpu.wallMs : undefined,
  };
}

async function run(a: PeerProc, b: PeerProc, bytes: number): Promise<boolean> {
  await b.call({ cmd: 'expect', bytes }, 'expecting');
  const received = b.proc.waitForLine((l) => l.includes('"event":"received"'), 300_000, 'received');
  const sent = await a.call({ cmd: 'send', peer: b.id, bytes }, 'sent', 300_000);
  const r = JSON.parse(await received) as { sha256: string };
  return r.sha256 === sent.sha256;
}

async function main(): Promise<void> {
  const avail = await rigAvailable();
  if (!avail.ok) {
    console.log(`nat-paths: skipped, NAT rig unavailable: ${avail.reason}`);
    return;
  }
  const w = await natWorld('nbench');
  try {
    const infraStats = {
      call: async (): Promise<InfraStats> => {
        const waiting = w.infraProc.waitForLine((l) => l.includes('"event":"stats"'), 10_000, 'infra stats');
        w.infraProc.writeLine(JSON.stringify({ cmd: 'stats' }));
        return JSON.parse(await waiting) as InfraStats;
      },
    };
    const loopPeer = (h: Host): Promise<PeerProc> => PeerProc.start(h, ['--registry', '127.0.0.1:9000', '--beacon', '127.0.0.1:9001', '--bind', '127.0.0.1', ...PEER_ARGS]);
    const [d1, d2] = [await loopPeer(w.infra), await loopPeer(w.infra)];
    const direct = await measure(d1, d2, null);
    const [c1, c2] = await Promise.all([w.natted('cone', 'cone1'), w.natted('cone', 'cone2')]);
    const [p1, p2] = await Promise.all([PeerProc.start(c1, PEER_ARGS), PeerProc.start(c2, PEER_ARGS)]);
    const punched = await measure(p1, p2, null);
    const [s1, s2] = await Promise.all([w.natted('symmetric', 'sym1'), w.natted('symmetric', 'sym2')]);
    const [r1, r2] = await Promise.all([PeerProc.start(s1, PEER_ARGS), PeerProc.start(s2, PEER_ARGS)]);
    const relayed = await measure(r1, r2, infraStats);

    printTable(`nat-paths: one stream, ${MIB} MiB, hash-verified; RTT = median of ${PINGS} authenticated pings`, [
      ['direct loopback', `${fmt(direct.mbps)} MB/s`, `rtt ${fmt(direct.rttMs, 2)} ms  path=${direct.path} ok=${direct.ok}`],
      ['punched (cone NATs)', `${fmt(punched.mbps)} MB/s`, `rtt ${fmt(punched.rttMs, 2)} ms  path=${punched.path} ok=${punched.ok}  ${fmt(punched.mbps / direct.mbps, 2)}× direct`],
      ['relayed (symmetric)', `${fmt(relayed.mbps)} MB/s`, `rtt ${fmt(relayed.rttMs, 2)} ms  path=${relayed.path} ok=${relayed.ok}  ${fmt(relayed.mbps / direct.mbps, 2)}× direct`],
      ['beacon CPU (relaying)', `${fmt(relayed.beaconCpuPct ?? NaN)} %`, 'of one core (registry + beacon process; goal < 100 %)'],
    ]);
    const sfx = UDP_PAYLOAD ? `_${UDP_PAYLOAD}` : '';
    const results: BenchResult[] = [
      { id: `natpunch.path_direct${sfx}`, value: direct.mbps, unit: 'MB/s' },
      { id: `natpunch.path_punched${sfx}`, value: punched.mbps, unit: 'MB/s' },
      { id: `natpunch.path_relayed${sfx}`, value: relayed.mbps, unit: 'MB/s' },
      { id: `natpunch.path_relayed_ratio${sfx}`, value: relayed.mbps / direct.mbps, unit: 'x', note: 'goal ≥ 0.5' },
      { id: `natpunch.path_direct_rtt${sfx}`, value: direct.rttMs, unit: 'ms' },
      { id: `natpunch.path_punched_rtt${sfx}`, value: punched.rttMs, unit: 'ms' },
      { id: `natpunch.path_relayed_rtt${sfx}`, value: relayed.rttMs, unit: 'ms' },
      { id: `natpunch.beacon_cpu_relaying${sfx}`, value: relayed.beaconCpuPct ?? NaN, unit: '%', note: 'goal < 100' },
    ];
    if (!argv.includes('--no-write')) console.log(`\nwrote ${await writeResults(results)}`);
    if (!direct.ok || !punched.ok || !relayed.ok || relayed.path !== 'relayed' || punched.path === 'relayed') process.exitCode = 1;
  } finally {
    await w.rig.close();
  }
}

async function measureDaemons(a: DaemonProc, b: DaemonProc, registryPid: number | null): Promise<PathFigures> {
  await trust(a, b);
  await transfer(a, b, 2 * MiB); // warm-up: path chosen, stream window open
  const cpu0 = registryPid ? procCpuSeconds(registryPid) * 1000 : 0;
  const t0 = performance.now();
  const r = await transfer(a, b, MIB * MiB);
  const wallMs = performance.now() - t0;
  const cpuMs = registryPid ? procCpuSeconds(registryPid) * 1000 - cpu0 : 0;
  const rtts: number[] = [];
  for (let i = 0; i < PINGS; i++) rtts.push(await a.pilot.ping(b.id));
  const row = await a.peer(b.id);
  return {
    mbps: (MIB * MiB) / 1e6 / (wallMs / 1000),
    rttMs: median(rtts),
    path: row?.path ?? '?',
    ok: r.received.sha256 === r.sent && r.received.bytes === MIB * MiB,
    beaconCpuPct: registryPid ? (100 * cpuMs) / wallMs : undefined,
  };
}

async function mainDaemons(): Promise<void> {
  const w = await DaemonWorld.create('nbenchd');
  try {
    const args: string[] = []; // the daemon has no --udp-payload knob: the transport picks its datagram size
    const [d1, d2] = [await w.daemon(w.infra, 'direct1', args), await w.daemon(w.infra, 'direct2', args)];
    const direct = await measureDaemons(d1, d2, null);
    await Promise.all([d1.stop(), d2.stop()]);
    const [c1, c2] = [await w.natted('cone', 'cone1'), await w.natted('cone', 'cone2')];
    const [p1, p2] = await Promise.all([w.daemon(c1, 'cone1', args), w.daemon(c2, 'cone2', args)]);
    const punched = await measureDaemons(p1, p2, null);
    await Promise.all([p1.stop(), p2.stop()]);
    const [s1, s2] = [await w.natted('symmetric', 'sym1'), await w.natted('symmetric', 'sym2')];
    const [r1, r2] = await Promise.all([w.daemon(s1, 'sym1', args), w.daemon(s2, 'sym2', args)]);
    const relayed = await measureDaemons(r1, r2, w.registry.child.pid ?? null);

    printTable(`nat-paths (pilot-daemon + SDK): one stream, ${MIB} MiB, hash-verified; RTT = median of ${PINGS} pings through IPC`, [
      ['direct (same host)', `${fmt(direct.mbps)} MB/s`, `rtt ${fmt(direct.rttMs, 2)} ms  path=${direct.path} ok=${direct.ok}`],
      ['punched (cone NATs)', `${fmt(punched.mbps)} MB/s`, `rtt ${fmt(punched.rttMs, 2)} ms  path=${punched.path} ok=${punched.ok}  ${fmt(punched.mbps / direct.mbps, 2)}× direct`],
      ['relayed (symmetric)', `${fmt(relayed.mbps)} MB/s`, `rtt ${fmt(relayed.rttMs, 2)} ms  path=${relayed.path} ok=${relayed.ok}  ${fmt(relayed.mbps / direct.mbps, 2)}× direct`],
      ['beacon CPU (relaying)', `${fmt(relayed.beaconCpuPct ?? NaN)} %`, 'of one core (pilot-registry process: registry + beacon; goal < 100 %)'],
    ]);
    const results: BenchResult[] = [
      { id: 'natpunch.daemon_path_direct', value: direct.mbps, unit: 'MB/s' },
      { id: 'natpunch.daemon_path_punched', value: punched.mbps, unit: 'MB/s' },
      { id: 'natpunch.daemon_path_relayed', value: relayed.mbps, unit: 'MB/s' },
      { id: 'natpunch.daemon_path_relayed_ratio', value: relayed.mbps / direct.mbps, unit: 'x', note: 'goal ≥ 0.5' },
      { id: 'natpunch.daemon_path_direct_rtt', value: direct.rttMs, unit: 'ms' },
      { id: 'natpunch.daemon_path_punched_rtt', value: punched.rttMs, unit: 'ms' },
      { id: 'natpunch.daemon_path_relayed_rtt', value: relayed.rttMs, unit: 'ms' },
      { id: 'natpunch.daemon_beacon_cpu_relaying', value: relayed.beaconCpuPct ?? NaN, unit: '%', note: 'goal < 100' },
    ];
    if (!argv.includes('--no-write')) console.log(`\nwrote ${await writeResults(results)}`);
    if (!direct.ok || !punched.ok || !relayed.ok || relayed.path !== 'relayed' || punched.path === 'relayed') process.exitCode = 1;
  } finally {
    await w.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (!argv.includes('--daemons')) await main();
  else {
    const avail = await rigAvailable();
    if (avail.ok) await mainDaemons();
    else console.log(`nat-paths --daemons: skipped, NAT rig unavailable: ${avail.reason}`);
  }
}
