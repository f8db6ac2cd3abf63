// Transport benchmark (issue "Foundation and the encrypted transport"): our encrypted stream and its
// baselines, two processes on 127.0.0.1, median of N runs, all in one run so ratios are meaningful.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULT_TUNNEL_OVERHEAD, HEADER_LEN } from '../transport/index.js';
import { BenchChild } from './lib/child.js';
import { procCpuSeconds } from './lib/proc.js';
import { fmt, median, printTable, writeResults, type BenchResult } from './lib/results.js';

const here = dirname(fileURLToPath(import.meta.url));
const MiB = 1 << 20;
/** Stream payload per 1200-byte datagram, as the host computes its MSS: sealed-frame overhead and packet header off. */
const SEGMENT_1200 = 1200 - DEFAULT_TUNNEL_OVERHEAD - HEADER_LEN;

export interface TransportBenchOptions {
  bytes: number;
  runs: number;
  only?: string[] | undefined;
}

export interface Impairment {
  loss: number;
  delayMs: number;
}

export interface StreamRun {
  mbps: number;
  /** SHA-256 of what was sent and what arrived (only with `hash`). */
  sentSha256?: string;
  recvSha256?: string;
  bytes: number;
  /** CPU seconds the sender and receiver processes used during the transfer (only with `cpu`). */
  cpuSeconds?: { send: number; recv: number };
}

/**
 * Time one bulk transfer between a sender and a receiver peer process of the same kind, optionally
 * through the impairment proxy (a third process) and with SHA-256 over the bytes on both ends.
 */
export async function runStream(peer: string, bytes: number, o: { args?: string[]; impair?: Impairment; hash?: boolean; cpu?: boolean } = {}): Promise<StreamRun> {
  const args = o.args ?? [];
  const recv = new BenchChild(join(here, 'peers', `${peer}.js`), ['recv', ...args]);
  const send = new BenchChild(join(here, 'peers', `${peer}.js`), ['send', ...args]);
  const proxy = o.impair ? new BenchChild(join(here, 'impair-proxy.js')) : null;
  try {
    const r = await recv.request({ type: 'setup' }, 'ready');
    const s = await send.request({ type: 'setup' }, 'ready');
    let viaForSend: number | undefined;
    let viaForRecv: number | undefined;
    if (proxy && o.impair) {
      const p = await proxy.request({ type: 'setup', port: r.port, loss: o.impair.loss, delayMs: o.impair.delayMs }, 'ready');
      viaForSend = p.portA as number;
      viaForRecv = p.portB as number;
    }
    await Promise.all([
      recv.request({ ...s, type: 'connect', via: viaForRecv }, 'connected'),
      send.request({ ...r, type: 'connect', via: viaForSend }, 'connected'),
    ]);
    await recv.request({ type: 'expect', bytes, hash: o.hash === true }, 'expecting');
    const done = recv.next('done', 600_000);
    const sent = send.next('sent', 600_000);
    const cpu0 = [procCpuSeconds(send.pid), procCpuSeconds(recv.pid)] as const;
    const start = process.hrtime.bigint();
    send.send({ type: 'run', bytes, hash: o.hash === true });
    const result = await done;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpuSeconds = { send: procCpuSeconds(send.pid) - cpu0[0], recv: procCpuSeconds(recv.pid) - cpu0[1] };
    const sentMsg = await sent;
    if ((result.bytes as number) < bytes) throw new Error(`${peer}: received ${String(result.bytes)} of ${bytes} bytes`);
    return {
      mbps: bytes / MiB / seconds,
      bytes: result.bytes as number,
      ...(o.hash ? { sentSha256: sentMsg.sha256 as string, recvSha256: result.sha256 as string } : {}),
      ...(o.cpu ? { cpuSeconds } : {}),
    };
  } finally {
    await Promise.all([recv.close(), send.close(), proxy?.close()]);
  }
}

export async function measureStream(peer: string, bytes: number, args: string[] = [], impair?: Impairment): Promise<number> {
  return (await runStream(peer, bytes, { args, ...(impair ? { impair } : {}) })).mbps;
}

export interface RawRun {
  /** Goodput of the sending loop. */
  mbps: number;
  /** CPU per datagram of the sender (seal + send), and of the receiver (receive, and with `open` decrypt). */
  sendUsPerPacket: number;
  recvUsPerPacket: number;
  sent: number;
  /** Datagrams that reached the receiver (the rest were dropped by the kernel: the receiver fell behind). */
  received: number;
}

/**
 * One-way AEAD seal + send loop, no reliability: the ceiling for 1200-byte datagrams. With `open` the
 * receiver also decrypts every datagram, pricing the receive side of an encrypted transport.
 */
export async function measureRaw(bytes: number, o: { udpSize?: number; open?: boolean } = {}): Promise<RawRun> {
  const recv = new BenchChild(join(here, 'peers', 'raw-udp.js'), ['recv']);
  const send = new BenchChild(join(here, 'peers', 'raw-udp.js'), ['send']);
  const key = randomBytes(32).toString('base64');
  try {
    const r = await recv.request({ type: 'setup', ...(o.open ? { openKey: key } : {}) }, 'ready');
    await send.request({ type: 'setup' }, 'ready');
    const res = await send.request({ type: 'run', port: r.port, bytes, udpSize: o.udpSize ?? 1200, key }, 'sent', 600_000);
    await new Promise((resolve) => setTimeout(resolve, 200)); // let the receiver drain its socket buffer
    const counted = await recv.request({ type: 'count' }, 'counted');
    const received = counted.packets as number;
    if (o.open && counted.opened !== received) throw new Error(`raw receiver opened ${String(counted.opened)} of ${received} datagrams`);
    return {
      mbps: (res.appBytes as number) / MiB / ((res.elapsedMs as number) / 1000),
      sendUsPerPacket: (res.cpuUs as number) / (res.packets as number),
      recvUsPerPacket: (counted.cpuUs as number) / Math.max(1, received),
      sent: res.packets as number,
      received,
    };
  } finally {
    await Promise.all([recv.close(), send.close()]);
  }
}

async function runs<T>(n: number, f: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

export async function transportBench(o: TransportBenchOptions): Promise<BenchResult[]> {
  const want = (id: string): boolean => !o.only || o.only.some((p) => id.includes(p));
  const results: BenchResult[] = [];
  const add = (id: string, values: number[], note?: string): void => {
    results.push({ id, value: median(values), unit: 'MB/s', runs: values, ...(note ? { note } : {}) });
  };
  if (want('baseline.tcp')) add('baseline.tcp', await runs(o.runs, () => measureStream('tcp', o.bytes)));
  if (want('baseline.udx_secretstream')) add('baseline.udx_secretstream', await runs(o.runs, () => measureStream('udx', o.bytes)));
  const perPacket = (id: string, values: number[], note: string): void => {
    results.push({ id, value: median(values), unit: 'µs', runs: values, note });
  };
  if (want('transport.raw_ceiling_1200')) {
    const r = await runs(o.runs, () => measureRaw(o.bytes));
    add('transport.raw_ceiling_1200', r.map((x) => x.mbps));
    perPacket('transport.cpu_per_packet.raw_send_1200', r.map((x) => x.sendUsPerPacket), 'raw ceiling sender: AES-GCM seal + send');
  }
  if (want('transport.raw_open_1200')) {
    const r = await runs(o.runs, () => measureRaw(o.bytes, { open: true }));
    const share = median(r.map((x) => x.received / x.sent));
    perPacket('transport.cpu_per_packet.raw_recv_open_1200', r.map((x) => x.recvUsPerPacket), `a receiver that only receives and AES-GCM-opens each datagram (it got ${fmt(share * 100)} % of them)`);
  }
  if (want('transport.stream')) add('transport.stream', await runs(o.runs, () => measureStream('pilot', o.bytes)), 'PMTU probing');
  if (want('transport.stream_1200')) {
    const r = await runs(o.runs, () => runStream('pilot', o.bytes, { args: ['--udp-payload', '1200'], cpu: true }));
    const segments = Math.ceil(o.bytes / SEGMENT_1200);
    add('transport.stream_1200', r.map((x) => x.mbps));
    perPacket('transport.cpu_per_packet.stream_1200_send', r.map((x) => (x.cpuSeconds!.send * 1e6) / segments), 'our sender process per data segment');
    perPacket('transport.cpu_per_packet.stream_1200_recv', r.map((x) => (x.cpuSeconds!.recv * 1e6) / segments), 'our receiver process per data segment');
  }
  // Impaired runs move less data: at 20 ms RTT a 256 MiB transfer would mostly measure the ramp-up tail.
  const lossBytes = Math.min(o.bytes, 64 * MiB);
  if (want('transport.loss0_rtt20')) add('transport.loss0_rtt20', await runs(o.runs, () => measureStream('pilot', lossBytes, [], { loss: 0, delayMs: 10 })));
  if (want('transport.loss1_rtt20')) add('transport.loss1_rtt20', await runs(o.runs, () => measureStream('pilot', lossBytes, [], { loss: 0.01, delayMs: 10 })));
  return results;
}

export function ratioRows(results: BenchResult[]): Array<[string, string, string]> {
  const v = (id: string): number | undefined => results.find((r) => r.id === id)?.value;
  const rows: Array<[string, string, string]> = results.map((r) => [r.id, fmt(r.value), r.unit]);
  const ratio = (name: string, a: string, b: string, goal: string): void => {
    const x = v(a);
    const y = v(b);
    if (x !== undefined && y !== undefined) rows.push([name, fmt(x / y, 2), `x (goal ${goal})`]);
  };
  ratio('stream / udx+secretstream', 'transport.stream', 'baseline.udx_secretstream', '>= 1.5');
  ratio('stream_1200 / raw_ceiling_1200', 'transport.stream_1200', 'transport.raw_ceiling_1200', '>= 0.7');
  // At 0.7x of the raw ceiling each end of the stream has this much time per packet, CPU included.
  const raw = v('transport.raw_ceiling_1200');
  if (raw !== undefined) rows.push(['time per packet at 0.7x raw_ceiling_1200', fmt((SEGMENT_1200 / (0.7 * raw * MiB)) * 1e6), 'µs']);
  ratio('loss1_rtt20 / loss0_rtt20', 'transport.loss1_rtt20', 'transport.loss0_rtt20', '>= 0.5');
  ratio('stream / tcp', 'transport.stream', 'baseline.tcp', 'info');
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const mb = Number(process.env.BENCH_MB ?? 256);
  const results = await transportBench({ bytes: mb * MiB, runs: Number(process.env.BENCH_RUNS ?? 3), only: process.argv.length > 2 ? process.argv.slice(2) : undefined });
  printTable(`transport (${mb} MiB, median of runs)`, ratioRows(results));
  console.log(`\nwrote ${await writeResults(results)}`);
}
