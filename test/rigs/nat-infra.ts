// The "public internet" side of the NAT rigs: an in-memory registry (TCP :9000) and a beacon (UDP :9001)
// in one process. Prints `{"event":"ready",...}`; stdin JSON lines: {"cmd":"stats"} → beacon stats and
// this process's CPU time since the previous stats call.
// Usage: node nat-infra.js [--host 0.0.0.0] [--registry-port 9000] [--beacon-port 9001]
import { createInterface } from 'node:readline';
import pino from 'pino';
import { BeaconServer } from '../../natpunch/beacon-server.js';
import { RegistryClient } from '../../registry/client.js';
import { RegistryServer } from '../../registry/server.js';
import { decodeB64Strict } from '../../transport/identity.js';
import { NO_LIMITS } from '../registry/helpers.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

const host = arg('--host', '0.0.0.0');
const log = pino({ level: 'silent' });
const server = new RegistryServer({
  logger: log,
  config: { dataDir: null, listen: `${host}:${arg('--registry-port', '9000')}`, adminToken: 'rig-admin', rateLimits: NO_LIMITS },
});
const info = await server.listen();
const lookup = await RegistryClient.connect({ host: '127.0.0.1', port: info.registry.port });
const beacon = new BeaconServer({
  listen: { host, port: Number(arg('--beacon-port', '9001')) },
  publicKeyOf: async (n) => {
    try {
      return decodeB64Strict((await lookup.lookup(n)).public_key, 'public_key');
    } catch {
      return null;
    }
  },
  // Rig peers are public registry nodes: every bound node may learn every other's endpoint.
  canDisclose: () => true,
  log,
});
const b = await beacon.listen();
const out = (o: object): void => void process.stdout.write(JSON.stringify(o) + '\n');
out({ event: 'ready', registry: info.registry.port, beacon: b.port });

let cpu = process.cpuUsage();
let at = performance.now();
createInterface({ input: process.stdin }).on('line', (line) => {
  let m: { cmd?: string };
  try {
    m = JSON.parse(line) as { cmd?: string };
  } catch {
    return;
  }
  if (m.cmd === 'stats') {
    const d = process.cpuUsage(cpu);
    const now = performance.now();
    out({ event: 'stats', beacon: beacon.stats(), cpuMs: (d.user + d.system) / 1000, wallMs: now - at });
    cpu = process.cpuUsage();
    at = now;
  }
});

const stop = async (): Promise<void> => {
  await beacon.close();
  await lookup.close();
  await server.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.stdin.on('end', () => void stop());
