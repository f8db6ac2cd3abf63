import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { PilotError } from '../../transport/errors.js';
import { RegistryClient } from '../../registry/client.js';
import { RegistryError } from '../../registry/errors.js';
import { encodeFrame, FrameDecoder } from '../../registry/protocol/framing.js';
import { RegistryServer } from '../../registry/server.js';
import { NO_LIMITS, registerNode, waitFor } from './helpers.js';

type FrameHandler = (conn: number, msg: Record<string, unknown>, socket: Socket) => void;

/** A scripted fake registry: `handler` sees each request with the connection's ordinal. */
async function fakeRegistry(t: { teardown(fn: () => unknown): void }, handler: FrameHandler): Promise<{ port: number; connections: () => number }> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    const conn = ++count;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const d = new FrameDecoder();
    socket.on('data', (c: Buffer) => {
      for (const f of d.push(c)) handler(conn, JSON.parse(f.toString()) as Record<string, unknown>, socket);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, connections: () => count };
}

t.test('error replies carry the server code; v1 errors without a code are still errors', async (t) => {
  const fake = await fakeRegistry(t, (_c, msg, s) => {
    if (msg.type === 'lookup') s.write(encodeFrame({ type: 'error', error: 'node 5 is not registered', code: 'not_found' }));
    else s.write(encodeFrame({ type: 'error', error: 'request failed' }));
  });
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: fake.port });
  t.teardown(() => c.close());
  const e1 = await c.lookup(5).catch((e: unknown) => e);
  t.ok(e1 instanceof RegistryError && e1 instanceof PilotError, 'RegistryError extends PilotError');
  t.match(e1, { code: 'not_found', message: 'node 5 is not registered' });
  t.match(await c.listNetworks().catch((e: unknown) => e), { code: 'internal', message: 'request failed' });
});

t.test('an idempotent request in flight when the connection drops is retried once (re-signed)', async (t) => {
  const seen: Array<{ conn: number; ts: unknown }> = [];
  const fake = await fakeRegistry(t, (conn, msg, s) => {
    seen.push({ conn, ts: msg.ts });
    if (conn === 1) s.destroy();
    else s.write(encodeFrame({ type: 'heartbeat_ok', time: 1 }));
  });
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: fake.port, reconnectMinMs: 10, reconnectMaxMs: 20 });
  t.teardown(() => c.close());
  const id = Identity.generate();
  t.same(await c.heartbeat({ identity: id, nodeId: 3 }), { type: 'heartbeat_ok', time: 1 });
  t.equal(seen.length, 2);
  t.equal(seen[1]!.conn, 2, 'sent again on the new connection');
  t.not(seen[1]!.ts, seen[0]!.ts, 'with a fresh ts (a replayed signature would be refused)');
});

t.test('a non-idempotent request in flight fails with connection_lost; a retried one fails after the second loss', async (t) => {
  const fake = await fakeRegistry(t, (_c, _m, s) => s.destroy());
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: fake.port, reconnectMinMs: 10, reconnectMaxMs: 20 });
  t.teardown(() => c.close());
  const id = { identity: Identity.generate(), nodeId: 1 };
  await t.rejects(c.pollHandshakes(id), { code: 'connection_lost' });
  await t.rejects(c.lookup(1), { code: 'connection_lost' });
  t.ok(fake.connections() >= 3, 'lookup was tried twice');
});

t.test('request timeout; the connection is reopened; pending queue is bounded', async (t) => {
  const fake = await fakeRegistry(t, (conn, msg, s) => {
    if (conn === 1) return; // silent server
    s.write(encodeFrame({ type: `${String(msg.type)}_ok`, networks: [] }));
  });
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: fake.port, requestTimeoutMs: 200, maxPending: 2, reconnectMinMs: 10, reconnectMaxMs: 20 });
  t.teardown(() => c.close());
  const p1 = c.listNetworks();
  const p2 = c.listNetworks();
  await t.rejects(c.listNetworks(), { code: 'queue_full' });
  await t.rejects(p1, { code: 'timeout' });
  await p2.catch(() => {});
  await waitFor(() => fake.connections() >= 2, 3000, 'reconnect');
  t.same(await c.request(() => ({ type: 'list_networks' }), { timeoutMs: 15_000 }), { type: 'list_networks_ok', networks: [] }, 'works again on the fresh connection');
});

t.test('close() fails pending requests with closed', async (t) => {
  const fake = await fakeRegistry(t, () => {});
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: fake.port });
  const p = c.listNetworks();
  await c.close();
  await t.rejects(p, { code: 'closed' });
  await t.rejects(c.listNetworks(), { code: 'closed' });
});

t.test('connect() to nothing rejects; requests queue while reconnecting and survive a registry restart', async (t) => {
  await t.rejects(RegistryClient.connect({ host: '127.0.0.1', port: 1, connectTimeoutMs: 500 }), { code: /connection_lost|timeout/ });
  const dir = mkdtempSync(join(tmpdir(), 'pilot-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const mk = (listen: string): RegistryServer =>
    new RegistryServer({ logger: pino({ level: 'silent' }), manualMaintenance: true, config: { dataDir: dir, listen, rateLimits: NO_LIMITS } });
  let server = mk('127.0.0.1:0');
  const port = (await server.listen()).registry.port;
  const c = await RegistryClient.connect({ host: '127.0.0.1', port, reconnectMinMs: 20, reconnectMaxMs: 100 });
  t.teardown(() => c.close());
  const n = await registerNode(c);
  await server.close();
  await waitFor(() => !c.connected, 3000, 'disconnect noticed');
  const pending = c.lookup(n.nodeId);
  server = mk(`127.0.0.1:${port}`);
  await server.listen();
  t.teardown(() => server.close());
  t.equal((await pending).node_id, n.nodeId, 'queued request answered by the restarted registry');
  await c.heartbeat(n);
});
