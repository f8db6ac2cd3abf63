import t from 'tap';
import { mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrustStore, parseTrustFile, rfc3339, unixSeconds } from '../../daemon/trust/store.js';

async function tmp(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'pilot-trust-'));
}

t.test('round trip: trusted, pending, approve, reject, revoke, outgoing survive a reopen', async (t) => {
  const dir = await tmp();
  const path = join(dir, 'trust.json');
  let now = Date.UTC(2024, 2, 3, 4, 5, 6, 789);
  const s = await TrustStore.open(path, { now: () => now });
  t.same(s.listTrusted(), [], 'missing file = empty store');
  await s.trust({ node_id: 10, public_key: 'a2V5MTA=', mutual: true });
  t.ok(await s.addPending({ node_id: 11, public_key: 'a2V5MTE=', justification: 'hi' }));
  t.ok(await s.addPending({ node_id: 12 }));
  t.ok(await s.addPending({ node_id: 13, justification: 'x' }));
  await s.markOutgoing(20);
  now += 1000;
  const ap = await s.approve(11);
  t.same(ap, { node_id: 11, public_key: 'a2V5MTE=', approved_at: '2024-03-03T04:05:07Z', mutual: false });
  t.same(await s.reject(12), { node_id: 12, received_at: '2024-03-03T04:05:06Z' });
  t.equal(await s.approve(99), null, 'approve without pending → null');
  t.equal(await s.revoke(99), null);
  t.equal(await s.addPending({ node_id: 10 }), false, 'already trusted → not pending');
  t.equal((await stat(path)).mode & 0o777, 0o600, 'file mode 0600');

  const r = await TrustStore.open(path, { now: () => now });
  t.same(r.listTrusted().map((p) => p.node_id).sort(), [10, 11]);
  t.same(r.listPending(), [{ node_id: 13, justification: 'x', received_at: '2024-03-03T04:05:06Z' }]);
  t.ok(r.hasOutgoing(20));
  t.equal(r.getTrusted(10)?.mutual, true);
  t.same(await r.revoke(10), { node_id: 10, public_key: 'a2V5MTA=', approved_at: '2024-03-03T04:05:06Z', mutual: true });
  t.notOk(r.isTrusted(10));
  const onDisk = JSON.parse(await readFile(path, 'utf8'));
  t.same(Object.keys(onDisk).sort(), ['outgoing', 'pending', 'trusted']);
  t.same(onDisk.trusted, [{ node_id: 11, public_key: 'a2V5MTE=', approved_at: '2024-03-03T04:05:07Z', mutual: false }]);
  // trusting clears pending and outgoing
  await r.trust({ node_id: 20, public_key: '', mutual: true });
  t.notOk(r.hasOutgoing(20));
  await r.trust({ node_id: 13, public_key: '', mutual: false });
  t.same(r.listPending(), []);
});

t.test('loads a v1 (Go) trust.json: nanosecond/offset times, network, missing keys, junk tolerated', async (t) => {
  const dir = await tmp();
  const path = join(dir, 'trust.json');
  const v1 = {
    trusted: [
      { node_id: 5, public_key: 'cHViNQ==', approved_at: '2025-01-02T15:04:05.123456789+02:00', mutual: true, network: 0 },
      { node_id: 6, public_key: '', approved_at: '2025-01-02T13:00:00Z', mutual: false },
      { node_id: 'junk' },
      null,
    ],
    pending: [
      { node_id: 7, public_key: 'cHViNw==', justification: 'need data', received_at: '2025-01-03T00:00:00.5Z' },
      { node_id: 8, received_at: '2025-01-03T00:00:01Z' },
      { node_id: 5, received_at: '2025-01-03T00:00:01Z' }, // already trusted → dropped
    ],
    some_future_field: { x: 1 },
  };
  await writeFile(path, JSON.stringify(v1, null, '\t'));
  const s = await TrustStore.open(path);
  t.equal(s.stats.skippedOnLoad, 3);
  t.same(s.getTrusted(5), { node_id: 5, public_key: 'cHViNQ==', approved_at: '2025-01-02T15:04:05.123456789+02:00', mutual: true, network: 0 });
  t.equal(unixSeconds(s.getTrusted(5)!.approved_at), Date.UTC(2025, 0, 2, 13, 4, 5) / 1000, 'offset honoured');
  t.equal(s.getTrusted(6)?.public_key, '');
  t.same(s.listPending().map((p) => p.node_id), [7, 8]);
  t.equal(s.getPending(8)?.public_key, undefined);
  // Saving keeps the v1 field names and values it did not change.
  await s.addPending({ node_id: 9 });
  const doc = JSON.parse(await readFile(path, 'utf8'));
  t.same(doc.trusted[0], v1.trusted[0]);
  t.same(doc.pending[0], v1.pending[0]);
  t.same(parseTrustFile({}).trusted, [], 'empty object is an empty store');
  t.throws(() => parseTrustFile([]), { code: 'bad_trust_file' });
  await writeFile(path, '{"trusted": [');
  await t.rejects(TrustStore.open(path), { code: 'bad_trust_file' });
  await writeFile(path, '');
  t.same((await TrustStore.open(path)).listTrusted(), [], 'empty file = empty store');
});

t.test('pending list is bounded: new requests refused when full, existing ones refreshed', async (t) => {
  const dir = await tmp();
  const s = await TrustStore.open(join(dir, 'trust.json'), { maxPending: 3 });
  for (const n of [1, 2, 3]) t.ok(await s.addPending({ node_id: n }));
  t.notOk(await s.addPending({ node_id: 4 }), 'full: refused');
  t.equal(s.stats.pendingRefused, 1);
  t.ok(await s.addPending({ node_id: 2, justification: 'again' }), 'same node refreshes');
  t.equal(s.getPending(2)?.justification, 'again');
  t.same(s.listPending().map((p) => p.node_id), [1, 2, 3], 'flood did not evict earlier requests');
  t.ok(await s.addPending({ node_id: 5, justification: 'x'.repeat(10000) }) === false);
  await s.reject(1);
  t.ok(await s.addPending({ node_id: 5, justification: 'x'.repeat(10000) }));
  t.equal(s.getPending(5)?.justification?.length, 4096, 'justification bounded');
});

t.test('outgoing requests expire and are bounded', async (t) => {
  const dir = await tmp();
  let now = 1_700_000_000_000;
  const s = await TrustStore.open(join(dir, 'trust.json'), { now: () => now, maxOutgoing: 2, outgoingTtlMs: 60_000 });
  await s.markOutgoing(1);
  await s.markOutgoing(2);
  await s.markOutgoing(3);
  t.notOk(s.hasOutgoing(1), 'oldest forgotten beyond the cap');
  t.ok(s.hasOutgoing(3));
  now += 60_000;
  t.notOk(s.hasOutgoing(3), 'expired');
  t.same(s.toJSON().outgoing, [], 'expired entries are not persisted');
});

t.test('atomic writes: concurrent mutations all land, readers never see a torn file, no temp files left', async (t) => {
  const dir = await tmp();
  const path = join(dir, 'trust.json');
  const s = await TrustStore.open(path, { maxPending: 10_000 });
  let reads = 0;
  let torn = 0;
  let stop = false;
  const reader = (async () => {
    while (!stop) {
      try {
        const text = await readFile(path, 'utf8');
        JSON.parse(text);
        reads++;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') torn++;
      }
    }
  })();
  const ops: Promise<unknown>[] = [];
  for (let i = 1; i <= 150; i++) ops.push(i % 3 === 0 ? s.trust({ node_id: i, public_key: '', mutual: false }) : s.addPending({ node_id: i, justification: `n${i}` }));
  await Promise.all(ops);
  stop = true;
  await reader;
  t.equal(torn, 0, `reader saw only complete JSON (${reads} reads)`);
  const reopened = await TrustStore.open(path);
  t.equal(reopened.listTrusted().length, 50);
  t.equal(reopened.listPending().length, 100);
  t.same((await readdir(dir)).sort(), ['trust.json'], 'no temp files left behind');
  t.equal(s.stats.saves, 150);
});

t.test('rfc3339 helpers', async (t) => {
  t.equal(rfc3339(Date.UTC(2024, 0, 1, 0, 0, 0, 999)), '2024-01-01T00:00:00Z');
  t.equal(unixSeconds('2024-01-01T00:00:00Z'), 1704067200);
  t.equal(unixSeconds('nonsense'), 0);
});
