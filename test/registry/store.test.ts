import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RegistryClient } from '../../registry/client.js';
import { RegistryServer } from '../../registry/server.js';
import { WalCheckpointer } from '../../registry/store/checkpointer.js';
import { migrations } from '../../registry/store/migrations.js';
import { importSnapshot, snapshotToMutations } from '../../registry/store/snapshot.js';
import { SqliteStore } from '../../registry/store/sqlite.js';
import type { Mutation, RegistryStore, StoreSnapshot } from '../../registry/store/types.js';
import { ADMIN, NO_LIMITS, registerNode, startRegistry, TestClock } from './helpers.js';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-reg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function boot(dataDir: string, clock?: TestClock): Promise<{ server: RegistryServer; client: RegistryClient }> {
  const server = new RegistryServer({
    logger: pino({ level: 'silent' }),
    manualMaintenance: true,
    clock,
    config: { dataDir, listen: '127.0.0.1:0', adminToken: ADMIN, rateLimits: NO_LIMITS },
  });
  const info = await server.listen();
  const client = await RegistryClient.connect({ host: '127.0.0.1', port: info.registry.port, clock });
  return { server, client };
}

t.test('migrations are versioned and applied once', async (t) => {
  const dir = tempDir(t);
  const store = new SqliteStore({ path: join(dir, 'r.db') });
  await store.open();
  await store.close();
  const again = new SqliteStore({ path: join(dir, 'r.db') });
  await again.open();
  await again.close();
  const db = new Database(join(dir, 'r.db'), { readonly: true });
  t.equal((db.prepare('SELECT version FROM schema_version').get() as { version: number }).version, migrations[migrations.length - 1]!.version);
  t.equal((db.prepare('SELECT count(*) AS n FROM schema_version').get() as { n: number }).n, 1);
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
});

function nodeRow(id: number): Mutation {
  return {
    kind: 'node',
    row: { id, publicKey: Buffer.alloc(32, id).toString('base64'), owner: null, realAddr: '127.0.0.1:4000', isPublic: false, hostname: null, tags: ['t'.repeat(2000)], taskExec: false, poloScore: 0, lastSeen: 1, deregistered: false, createdAt: 1 },
  };
}

/**
 * A store on a fresh file, then 3 commits of 2,000 rows of ≈ 2 KiB: > 12 MiB of WAL, three times SQLite's
 * automatic checkpoint threshold. `before`: the database file's size before the commits.
 */
async function storeWithManyPages(t: { teardown(fn: () => unknown): void }, checkpointIntervalMs: number): Promise<{ store: SqliteStore; path: string; before: number }> {
  const path = join(tempDir(t), 'r.db');
  const store = new SqliteStore({ path, checkpointIntervalMs });
  await store.open();
  t.teardown(() => store.close());
  const before = statSync(path).size;
  for (let i = 0; i < 3; i++) await store.commit(Array.from({ length: 2000 }, (_, j) => nodeRow(i * 2000 + j + 1)));
  return { store, path, before };
}

t.test('commits never checkpoint the WAL themselves (the checkpoint worker does)', async (t) => {
  const { path, before } = await storeWithManyPages(t, 3_600_000);
  t.equal(statSync(path).size, before, 'the database file is untouched: the rows are only in the WAL');
  t.ok(statSync(`${path}-wal`).size > 12_000_000, 'WAL holds them');
});

t.test('the checkpoint worker copies the WAL into the database file', async (t) => {
  const { store, path, before } = await storeWithManyPages(t, 20);
  const cp = store.checkpointer!;
  for (let i = 0; i < 500 && !(cp.progress.log > 0 && cp.progress.checkpointed === cp.progress.log); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(cp.progress.passes > 0 && cp.progress.log > 0, `the worker checkpointed (${JSON.stringify(cp.progress)})`);
  t.equal(cp.progress.checkpointed, cp.progress.log, 'every WAL frame reached the database file');
  t.ok(statSync(path).size > before + 12_000_000, 'the rows are in the database file itself');
  await store.flushLastSeen([[6000, 9], [1, 9], [3000, 9]]);
  const db = new Database(path, { readonly: true });
  t.same(db.prepare('SELECT id, last_seen FROM nodes WHERE last_seen = 9 ORDER BY id').all(), [{ id: 1, last_seen: 9 }, { id: 3000, last_seen: 9 }, { id: 6000, last_seen: 9 }], 'last-seen flush, entries in any order');
  db.close();
});

t.test('a failed checkpoint worker hands checkpoints back to SQLite', async (t) => {
  const failed = await new Promise<Error>((resolve) => new WalCheckpointer(join(tmpdir(), 'no-such-dir-' + process.pid, 'r.db'), 10, resolve));
  t.match(failed.message, /unable to open|directory|exited/i, `onFailure called: ${failed.message}`);
});

t.test('a newer schema than the build is refused', async (t) => {
  const dir = tempDir(t);
  const db = new Database(join(dir, 'r.db'));
  db.exec('CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (999);');
  db.close();
  await t.rejects(new SqliteStore({ path: join(dir, 'r.db') }).open(), /newer than this build/);
});

t.test('everything acknowledged survives a restart (nodes, hostnames, tags, trust, networks, inbox, counters)', async (t) => {
  const dir = tempDir(t);
  const clock = new TestClock();
  let { server, client } = await boot(dir, clock);
  const a = await registerNode(client, { hostname: 'alpha', owner: 'me' });
  const b = await registerNode(client);
  await client.setTags(a, ['gpu']);
  await client.setVisibility(a, true);
  await client.setTaskExec(b, true);
  await client.setPoloScore(ADMIN, a.nodeId, 12);
  await client.reportTrust(a, b.nodeId);
  await client.reportTrust(b, a.nodeId);
  await client.requestHandshake(b, a.nodeId, 'pending one');
  const { network_id } = await client.createNetwork(ADMIN, { name: 'lab', joinRule: 'token', token: 'tk', allowedPorts: [80], maxMembers: 5 });
  await client.joinNetwork(a, network_id, 'tk');
  const c = await registerNode(client);
  await client.deregister(c);
  const before = server.registryState.dump();
  await client.close();
  await server.close();

  ({ server, client } = await boot(dir, clock));
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  t.same(server.registryState.dump(), before, 'identical state after restart');
  t.equal((await registerNode(client)).nodeId, 4, 'ID counter continues');
  t.equal((await client.register(c.identity)).node_id, c.nodeId, 'deregistered key reclaims its ID');
  await client.joinNetwork(b, network_id, 'tk');
  t.equal((await client.createNetwork(ADMIN, { name: 'lab2', joinRule: 'open' })).network_id, 2);
});

t.test('heartbeat last-seen is flushed in batches and restored; stale nodes load as offline', async (t) => {
  const dir = tempDir(t);
  const clock = new TestClock();
  let { server, client } = await boot(dir, clock);
  const a = await registerNode(client);
  const b = await registerNode(client);
  clock.advance(100_000);
  await client.heartbeat(a);
  await server.flushLastSeen();
  clock.advance(100_000); // a: 100 s since heartbeat, b: 200 s since registration
  await client.close();
  await server.close();
  ({ server, client } = await boot(dir, clock));
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  t.equal((await client.lookup(a.nodeId)).node_id, a.nodeId, 'a is online (its heartbeat was persisted)');
  await t.rejects(client.lookup(b.nodeId), { code: 'not_found', message: /offline/ }, 'b loads as offline');
  await client.heartbeat(b);
  t.equal((await client.lookup(b.nodeId)).node_id, b.nodeId);
});

t.test('reaping marks offline but keeps the record; re-registration keeps the node ID', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock });
  const a = await registerNode(h.client, { hostname: 'keep' });
  const b = await registerNode(h.client);
  clock.advance(120_000);
  await h.client.heartbeat(b);
  clock.advance(61_000);
  t.equal(h.server.reapStale(), 1, 'only a is stale');
  t.equal(h.server.registryState.counters.online, 1);
  t.equal(h.server.registryState.counters.total, 2, 'record kept');
  await t.rejects(h.client.lookup(a.nodeId), { code: 'not_found' });
  const again = await h.client.register(a.identity, { listenAddr: ':4100' });
  t.equal(again.node_id, a.nodeId, 'same ID after reaping');
  t.equal(again.hostname, 'keep');
  t.equal(h.server.registryState.counters.online, 2);
});

class FailingStore implements RegistryStore {
  readonly description = 'failing';
  fail = false;
  constructor(private readonly inner: SqliteStore) {}
  open(): Promise<void> {
    return this.inner.open();
  }
  load(): Promise<StoreSnapshot> {
    return this.inner.load();
  }
  commit(m: readonly Mutation[]): Promise<void> {
    return this.fail ? Promise.reject(new Error('disk full')) : this.inner.commit(m);
  }
  flushLastSeen(e: ReadonlyArray<readonly [number, number]>): Promise<void> {
    return this.inner.flushLastSeen(e);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

t.test('store failure is fail-stop: the write is not acknowledged and every later request gets unavailable', async (t) => {
  const store = new FailingStore(new SqliteStore({ path: ':memory:' }));
  const h = await startRegistry(t, { store });
  const a = await registerNode(h.client);
  let fatal: Error | null = null;
  h.server.on('fatal', (e: Error) => (fatal = e));
  store.fail = true;
  await t.rejects(h.client.setHostname(a, 'x'), { code: 'unavailable' });
  t.match(fatal, { message: 'disk full' });
  await t.rejects(h.client.lookup(a.nodeId), { code: 'unavailable' });
});

t.test('v1 snapshot import keeps IDs, keys, owners, hostnames, trust, networks, inboxes and next_node', async (t) => {
  const k = (): string => Identity.generate().publicKeyB64;
  const ids = [Identity.generate(), Identity.generate(), Identity.generate()];
  const reaped = Identity.generate();
  const snapshot = {
    next_node: 40,
    next_net: 3,
    nodes: {
      '7': { id: 7, owner: 'alice@example.com', public_key: ids[0]!.publicKeyB64, real_addr: '203.0.113.5:4000', networks: [0, 2], public: true, last_seen: '2026-01-01T00:00:00.123456789Z', hostname: 'alice', tags: ['gpu'], polo_score: 9, task_exec: true },
      '12': { id: 12, public_key: ids[1]!.publicKeyB64, real_addr: '198.51.100.7:4000', networks: [0], last_seen: '2026-01-01T00:00:00Z' },
      '30': { id: 30, public_key: ids[2]!.publicKeyB64, networks: [0] },
    },
    networks: {
      '0': { id: 0, name: 'backbone', join_rule: 'open', members: [7, 12, 30], created: '2025-12-01T00:00:00Z' },
      '2': { id: 2, name: 'research', join_rule: 'token', token: 'rtok', members: [7], created: '2025-12-02T10:00:00Z' },
    },
    trust_pairs: ['7:12'],
    pub_key_idx: { [ids[0]!.publicKeyB64]: 7, [ids[1]!.publicKeyB64]: 12, [ids[2]!.publicKeyB64]: 30, [reaped.publicKeyB64]: 21 },
    handshake_inbox: { '12': [{ from_node_id: 30, justification: 'hello', timestamp: '2026-01-01T00:00:00.5Z' }] },
    handshake_responses: { '30': [{ from_node_id: 7, accept: false, timestamp: '2026-01-01T00:00:01Z' }] },
  };
  const dir = tempDir(t);
  const store = new SqliteStore({ path: join(dir, 'registry.db') });
  await store.open();
  const clock = new TestClock(Date.parse('2026-01-01T00:01:00Z'));
  const summary = await importSnapshot(store, snapshot, clock.now());
  t.match(summary, { nodes: 3, reclaimableKeys: 1, networks: 1, memberships: 1, trustPairs: 1, handshakeRequests: 1, handshakeResponses: 1, nextNodeId: 40, nextNetworkId: 3 });
  await t.rejects(importSnapshot(store, snapshot), { code: 'store_not_empty' });
  await store.close();

  const { server, client } = await boot(dir, clock);
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  t.match(await client.lookup(7), { node_id: 7, public_key: ids[0]!.publicKeyB64, hostname: 'alice', tags: ['gpu'], polo_score: 9, task_exec: true, public: true, real_addr: '203.0.113.5:4000', networks: [0, 2] });
  t.equal((await client.register(ids[1]!)).node_id, 12, 'key → same ID');
  t.equal((await client.register(reaped)).node_id, 21, 'a reaped key from pub_key_idx reclaims its ID');
  t.equal((await client.register(Identity.generate())).node_id, 40, 'next_node kept');
  t.ok(server.canResolve(12, 7) && server.registryState.trusted(7, 12), 'trust pair imported as mutual');
  t.match((await client.pollHandshakes({ identity: ids[1]!, nodeId: 12 })).requests, [{ from_node_id: 30, justification: 'hello' }]);
  t.match((await client.pollHandshakes({ identity: ids[2]!, nodeId: 30 })).responses, [{ from_node_id: 7, accept: false }]);
  await client.joinNetwork({ identity: ids[1]!, nodeId: 12 }, 2, 'rtok');
  t.equal((await client.createNetwork(ADMIN, { name: 'new', joinRule: 'open' })).network_id, 3, 'next_net kept');
  await client.register(Identity.generate(), { owner: 'alice@example.com' }).then(
    () => t.fail('owner held by an online node'),
    (e: { code: string }) => t.equal(e.code, 'conflict', 'owner imported'),
  );
  void k;
});

t.test('snapshot import is strict and names the bad entry', async (t) => {
  const good = Identity.generate().publicKeyB64;
  const cases: Array<[unknown, RegExp]> = [
    [[], /snapshot: must be an object/],
    [{ nodes: { '1': { id: 2, public_key: good } } }, /nodes\.1\.id: 2 does not match/],
    [{ nodes: { '1': { id: 1, public_key: 'short' } } }, /nodes\.1\.public_key/],
    [{ nodes: { '1': { id: 1, public_key: good, hostname: 'Bad Name' } } }, /nodes\.1\.hostname/],
    [{ nodes: { '1': { id: 1, public_key: good, last_seen: 'yesterday' } } }, /nodes\.1\.last_seen/],
    [{ nodes: {}, networks: { '1': { id: 1, name: 'x', join_rule: 'token' } } }, /networks\.1\.token/],
    [{ trust_pairs: ['1-2'] }, /trust_pairs\[0\]/],
    [{ next_node: -1 }, /next_node/],
  ];
  for (const [snap, msg] of cases) t.throws(() => snapshotToMutations(snap, Date.now()), { code: 'bad_snapshot', message: msg });
  const store = new SqliteStore({ path: ':memory:' });
  await store.open();
  await t.rejects(importSnapshot(store, { nodes: { '1': { id: 1, public_key: good } }, trust_pairs: 5 }), { code: 'bad_snapshot' });
  t.same((await store.load()).nodes, [], 'nothing written on failure');
  await store.close();
});
