// A NAT-traversing peer for the rigs and bench/nat-paths.ts: TransportNode + registry registration +
// NatTraversal (the daemon will replace this script). Output and input are JSON lines.
// Usage: node nat-peer.js --registry H:P [--beacon H:P] [--stun H:P] [--endpoint H:P] [--bind 0.0.0.0]
//          [--udp-payload N] [--keepalive ms] [--probe ms] [--probe-max ms] [--direct-timeout ms] [--ping-timeout ms]
// Prints {"event":"ready","id":N,"registered":"h:p"} then {"event":"path",...} on every path change.
// Commands: {"cmd":"connect","peer":N} → connected; {"cmd":"expect","bytes":N} → expecting, later received
//   {bytes,sha256}; {"cmd":"send","peer":N,"bytes":N,"gapMs":n} → sent {sha256,ms}; {"cmd":"paths"} →
//   paths {paths,stats}; {"cmd":"ping","peer":N,"count":n} → pinged {rtts}.
import { createInterface } from 'node:readline';
import { parseEndpoint } from '../../natpunch/index.js';
import type { Connection } from '../../transport/stream/index.js';
import { sendHashed, serveHash, startPeer } from '../natpunch/client-harness.js';

/** The last occurrence wins (callers append overrides to default flags). */
function arg(name: string): string | undefined {
  const i = process.argv.lastIndexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
function num(name: string): number | undefined {
  const v = arg(name);
  return v === undefined ? undefined : Number(v);
}

const out = (o: object): void => void process.stdout.write(JSON.stringify(o) + '\n');
const registry = parseEndpoint(arg('--registry') ?? '203.0.113.10:9000');
const beacon = arg('--beacon');
const stun = arg('--stun');
const endpoint = arg('--endpoint');
const nat = Object.fromEntries(
  Object.entries({
    keepaliveMs: num('--keepalive'),
    probeIntervalMs: num('--probe'),
    maxProbeIntervalMs: num('--probe-max'),
    directTimeoutMs: num('--direct-timeout'),
    pingTimeoutMs: num('--ping-timeout'),
    tickMs: 100,
  }).filter(([, v]) => v !== undefined),
);

const peer = await startPeer({
  registry,
  beacon: beacon ? parseEndpoint(beacon) : null,
  stunServers: stun ? [stun] : undefined,
  endpointOverride: endpoint ? parseEndpoint(endpoint) : null,
  bind: arg('--bind') ?? '0.0.0.0',
  udpPayload: num('--udp-payload'),
  nat,
});
const sink = serveHash(peer);
let lastConn: Connection | null = null;
peer.nat.on('path', (p) => out({ event: 'path', ...p }));
out({ event: 'ready', id: peer.id, registered: `${peer.registered.host}:${peer.registered.port}` });

async function handle(m: Record<string, unknown>): Promise<void> {
  const peerId = Number(m.peer);
  switch (m.cmd) {
    case 'connect': {
      const ep = await peer.connectTo(peerId);
      out({ event: 'connected', peer: peerId, endpoint: `${ep.host}:${ep.port}` });
      break;
    }
    case 'expect': {
      const p = sink.expect(Number(m.bytes));
      out({ event: 'expecting' });
      const r = await p;
      out({ event: 'received', ...r });
      break;
    }
    case 'send': {
      const t0 = performance.now();
      const r = await sendHashed(peer, peerId, Number(m.bytes), { gapMs: m.gapMs ? Number(m.gapMs) : undefined });
      lastConn = r.conn;
      out({ event: 'sent', sha256: r.sha256, ms: performance.now() - t0 });
      r.conn.end();
      break;
    }
    case 'stats':
      out({ event: 'stats', node: peer.node.stats(), nat: peer.nat.stats(), connection: lastConn?.info() ?? null });
      break;
    case 'paths':
      out({ event: 'paths', paths: peer.nat.paths(), stats: peer.nat.stats() });
      break;
    case 'ping': {
      const rtts: number[] = [];
      for (let i = 0; i < Number(m.count ?? 10); i++) rtts.push(await peer.node.host.ping(peerId));
      out({ event: 'pinged', rtts });
      break;
    }
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  handle(m).catch((err: Error) => out({ event: 'error', cmd: m.cmd, message: err.message }));
});

const stop = async (): Promise<void> => {
  await peer.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.stdin.on('end', () => void stop());
