/**
 * Micro-benchmark of the stream engine alone: two TransportHosts wired back to back in one process
 * (no sockets, no crypto), packets handed over in per-turn batches like UDP reads. Reports goodput and
 * CPU time per segment for both sides together, so per-segment engine cost can be tracked.
 *
 *   npx tsc -p . && node dist/bench/stream-engine.js [--mb 256] [--only pmtu|1200|sync] [--json]
 */
import { Addr } from '../transport/address.js';
import { TransportHost, type Connection } from '../transport/host.js';
import type { StreamConfig } from '../transport/stream/config.js';

interface Result {
  id: string;
  segment: number;
  mbPerSec: number;
  usPerSegment: number;
  segments: number;
  acksPerSegment: number;
  retransmits: number;
  /** Of which tail-loss probes (a probe fires when an ACK is late, e.g. during a GC pause: not a loss). */
  tailLossProbes: number;
}

/**
 * `sync`: emulate a tunnel that encrypts synchronously in `output` (it copies each packet into its own
 * new frame, as AES-GCM output is a new buffer anyway) so the host may build packets in one reused buffer.
 */
async function run(id: string, totalBytes: number, config: Partial<StreamConfig>, sync = false): Promise<Result> {
  let toA: Buffer[] = [];
  let toB: Buffer[] = [];
  let headA = 0;
  let headB = 0;
  let scheduled = false;
  let packetsToA = 0;
  // Like a UDP socket read loop: at most BATCH datagrams per direction per event-loop turn (libuv reads
  // up to 32 per poll), delivered as authenticated (the tunnel's AEAD already checked integrity).
  const BATCH = 32;
  const deliver = (): void => {
    scheduled = false;
    const nb = Math.min(BATCH, toB.length - headB);
    const na = Math.min(BATCH, toA.length - headA);
    for (let i = 0; i < nb; i++) b.input(toB[headB++]!, 1, true);
    for (let i = 0; i < na; i++) a.input(toA[headA++]!, 2, true);
    if (headB === toB.length) (toB = []), (headB = 0);
    else if (headB > 4096) (toB = toB.slice(headB)), (headB = 0);
    if (headA === toA.length) (toA = []), (headA = 0);
    else if (headA > 4096) (toA = toA.slice(headA)), (headA = 0);
    if (toA.length > headA || toB.length > headB) schedule();
  };
  const schedule = (): void => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(deliver);
    }
  };
  const take = (pkt: Buffer): Buffer => (sync ? Buffer.from(pkt) : pkt);
  const a: TransportHost = new TransportHost({ localNode: 1, config, outputIsSynchronous: sync, output: (_peer, pkt) => (toB.push(take(pkt)), schedule()) });
  const b: TransportHost = new TransportHost({ localNode: 2, config, outputIsSynchronous: sync, output: (_peer, pkt) => (toA.push(take(pkt)), packetsToA++, schedule()) });
  const l = b.listen(1000);
  let received = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((r) => (done = r));
  l.on('connection', (c: Connection) => {
    c.on('data', (d: Buffer) => {
      received += d.length;
    });
    c.on('end', () => done());
  });
  const conn = await a.connect(new Addr(0, 2), 1000, { noDelay: true });
  // Let PMTU probing settle first (one round trip in-process).
  while (a.pathInfo(2)?.searching) await new Promise((r) => setImmediate(r));
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  let sent = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const pump = (): void => {
    while (sent < totalBytes) {
      sent += chunk.length;
      if (!conn.write(chunk)) {
        conn.once('drain', pump);
        return;
      }
    }
    conn.end();
  };
  pump();
  await finished;
  const dt = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const info = conn.info();
  const res: Result = {
    id,
    segment: info.mss,
    mbPerSec: received / 1e6 / (dt / 1000),
    usPerSegment: ((cpu.user + cpu.system) / info.segs_sent),
    segments: info.segs_sent,
    acksPerSegment: packetsToA / info.segs_sent,
    retransmits: info.retransmits,
    tailLossProbes: info.tail_loss_probes,
  };
  await a.close();
  await b.close();
  return res;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const mbIdx = args.indexOf('--mb');
  const mb = mbIdx >= 0 ? Number(args[mbIdx + 1]) : 256;
  const json = args.includes('--json');
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
  const results: Result[] = [];
  if (!only || only === 'pmtu') results.push(await run('engine.pmtu', mb * 1e6, {}));
  if (!only || only === '1200') results.push(await run('engine.1200', Math.max(16, mb / 4) * 1e6, { pmtuProbing: false }));
  if (!only || only === 'sync') {
    results.push(await run('engine.pmtu.sync', mb * 1e6, {}, true));
    results.push(await run('engine.1200.sync', Math.max(16, mb / 4) * 1e6, { pmtuProbing: false }, true));
  }
  if (json) {
    console.log(JSON.stringify({ runAt: new Date().toISOString(), results }, null, 2));
    return;
  }
  console.log('id                 segment   MB/s   µs/segment (both sides, CPU)   segments   ACKs/segment   retransmits (TLP)');
  for (const r of results) {
    console.log(
      `${r.id.padEnd(18)} ${String(r.segment).padStart(7)} ${r.mbPerSec.toFixed(0).padStart(6)}   ${r.usPerSegment.toFixed(2).padStart(10)}                     ${String(r.segments).padStart(8)}   ${r.acksPerSegment.toFixed(3).padStart(12)}   ${r.retransmits} (${r.tailLossProbes})`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
