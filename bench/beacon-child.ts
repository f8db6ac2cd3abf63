// Child process for bench/beacon-relay.ts: one beacon on loopback, driven over the IPC channel.
// Env BEACON_KEYS = JSON {"<nodeId>": "<raw Ed25519 public key hex>"}.
import { BeaconServer } from '../natpunch/index.js';

const keys = new Map<number, Buffer>(
  Object.entries(JSON.parse(process.env.BEACON_KEYS ?? '{}') as Record<string, string>).map(([id, hex]) => [Number(id), Buffer.from(hex, 'hex')]),
);
const beacon = new BeaconServer({
  listen: { host: '127.0.0.1', port: 0 },
  publicKeyOf: (id) => keys.get(id) ?? null,
});
const { port } = await beacon.listen();

process.on('message', (m: { type: string }) => {
  if (m.type === 'stats') {
    process.send!({ type: 'stats', stats: beacon.stats(), cpu: process.cpuUsage() });
  } else if (m.type === 'close') {
    void beacon.close().then(() => process.exit(0));
  }
});
process.on('disconnect', () => void beacon.close().then(() => process.exit(0)));
process.send!({ type: 'ready', port });
