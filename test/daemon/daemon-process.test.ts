// Real processes: pilot-registry (durable) + two pilot-daemon processes. Graceful SIGTERM deregisters;
// restart keeps node ID and trust; registry kill -9 + restart → daemons re-register, new connections work.
import { join } from 'node:path';
import t from 'tap';

type Tap = { equal: typeof t.equal };
import { RegistryClient } from '../../registry/client.js';
import { startRegistryProcess } from '../registry/proc.js';
import { RawIpc, sleep, spawnDaemon, tempDir, until } from './daemon-helpers.js';

t.test('daemon processes: restart, deregister, registry restart', async (t) => {
  const regDir = tempDir(t, 'pilotreg-');
  let reg = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', regDir, '--log-level', 'warn']);
  const regPort = reg.port;
  const dirA = tempDir(t);
  const dirB = tempDir(t);
  const args = (dir: string, extra: string[] = []): string[] => [
    '--registry', `127.0.0.1:${regPort}`, '--listen', '127.0.0.1:0', '--socket', join(dir, 's.sock'), '--data-dir', dir, '--keepalive', '1s', ...extra,
  ];
  const pa = await spawnDaemon(t, args(dirA));
  let pb = await spawnDaemon(t, args(dirB, ['--hostname', 'bravo']));
  const ia = await RawIpc.connect(t, pa.socket);
  let ib = await RawIpc.connect(t, pb.socket);

  // Trust (relayed: both private) and a first echo.
  await ia.ok('handshake_send', { node: pb.nodeId });
  await until(async () => ((await ib.ok('handshake_pending', {})).pending as unknown[]).length === 1, 5000, 'pending');
  await ib.ok('handshake_approve', { node: pa.nodeId });
  await until(async () => ((await ia.ok('handshake_trusted', {})).trusted as unknown[]).length === 1, 10_000, 'A trusts B');
  await echo(t, ia, 'bravo', 'first');

  // Graceful shutdown: exit 0, deregistered at the registry.
  const client = new RegistryClient({ host: '127.0.0.1', port: regPort, reconnectMinMs: 100, reconnectMaxMs: 300 });
  t.teardown(() => client.close());
  t.equal((await client.lookup(pb.nodeId)).hostname, 'bravo', 'registered with its hostname');
  pb.proc.kill('SIGTERM');
  const exit = await pb.exited;
  t.equal(exit.code, 0, 'SIGTERM → exit 0');
  const gone = await client.lookup(pb.nodeId).then((r) => r.hostname ?? null, () => null);
  t.equal(gone, null, 'deregistered: hostname released');

  // Restart with the same data dir: same node ID, trust kept.
  const oldId = pb.nodeId;
  pb = await spawnDaemon(t, args(dirB, ['--hostname', 'bravo']));
  t.equal(pb.nodeId, oldId, 'node ID kept across restarts');
  ib = await RawIpc.connect(t, pb.socket);
  const trusted = (await ib.ok('handshake_trusted', {})).trusted as Array<{ node_id: number }>;
  t.same(trusted.map((x) => x.node_id), [pa.nodeId], 'trust store kept across restarts');
  await echo(t, ia, 'bravo', 'after restart');

  // Registry dies hard and stays away past 3 heartbeats, then comes back on the same port.
  reg.proc.kill('SIGKILL');
  await reg.exited;
  await sleep(4000);
  reg = await startRegistryProcess(t, ['--listen', `127.0.0.1:${regPort}`, '--no-beacon', '--data-dir', regDir, '--log-level', 'warn']);
  await until(async () => {
    const s = (await ia.ok('stats', {})).registry as { reregistrations: number; heartbeats: number };
    return s.reregistrations >= 1;
  }, 15_000, 'A re-registered');
  await until(async () => {
    const s = (await ib.ok('stats', {})).registry as { reregistrations: number };
    return s.reregistrations >= 1;
  }, 15_000, 'B re-registered');
  t.equal((await client.lookup(oldId)).hostname, 'bravo', 'B is back with its hostname');
  await echo(t, ia, 'bravo', 'after registry restart');
});

async function echo(t: Tap, c: RawIpc, addr: string, text: string): Promise<void> {
  const r = await c.call('dial', { addr, port: 7, timeout_ms: 10_000 });
  t.equal(r.ok, true, `dial ${addr}:7 ${text} (${r.code ?? ''} ${r.message ?? ''})`);
  if (!r.ok) return;
  const conn = r.conn as number;
  await c.ok('send', { conn, data: Buffer.from(text) });
  t.equal((await c.readBytes(conn, Buffer.byteLength(text))).toString(), text, `echo ${text}`);
  await c.ok('close', { conn });
}
