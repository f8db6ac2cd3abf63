import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { challenges } from '../../registry/protocol/challenges.js';
import { ADMIN, RawConn, registerNode, sign, startRegistry, TestClock } from './helpers.js';

t.test('register assigns sequential IDs and v1 reply fields; re-registration keeps the ID', async (t) => {
  const h = await startRegistry(t);
  const a = Identity.generate();
  const r1 = await h.client.register(a, { listenAddr: '10.0.0.5:4000', hostname: 'alpha' });
  t.match(r1, { type: 'register_ok', node_id: 1, network_id: 0, address: '0:0000.0000.0001', public_key: a.publicKeyB64, hostname: 'alpha' });
  const b = await registerNode(h.client);
  t.equal(b.nodeId, 2);
  const again = await h.client.register(a, { listenAddr: '10.0.0.5:5000' });
  t.equal(again.node_id, 1, 'same key → same node ID');
  t.equal(again.hostname, 'alpha', 'hostname kept');
  t.equal(h.dump().nodes[0]!.realAddr, '127.0.0.1:5000', 'endpoint host is the TCP peer, port from listen_addr');
});

t.test('register: bad hostname is reported, node still registered (v1 contract)', async (t) => {
  const h = await startRegistry(t);
  const r = await h.client.register(Identity.generate(), { hostname: 'Bad_Name' });
  t.equal(r.node_id, 1);
  t.match(r.hostname_error, /invalid hostname/);
  t.notOk(r.hostname);
  await h.client.register(Identity.generate(), { hostname: 'taken' });
  const r3 = await h.client.register(Identity.generate(), { hostname: 'taken' });
  t.match(r3.hostname_error, /taken/);
});

t.test('register failures change nothing', async (t) => {
  const h = await startRegistry(t);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const before = h.dump();
  for (const [req, code] of [
    [{ type: 'register' }, 'bad_request'],
    [{ type: 'register', public_key: 'AAAA' }, 'bad_request'],
    [{ type: 'register', public_key: 5 }, 'bad_request'],
    [{ type: 'register', public_key: Identity.generate().publicKeyB64, listen_addr: 'nope' }, 'bad_request'],
    [{ type: 'register', public_key: Identity.generate().publicKeyB64, listen_addr: 'x:70000' }, 'bad_request'],
    [{ type: 'register', public_key: Identity.generate().publicKeyB64, owner: 12 }, 'bad_request'],
  ] as const) {
    const r = await raw.request(req);
    t.equal(r.type, 'error');
    t.equal(r.code, code, JSON.stringify(req));
    t.type(r.error, 'string');
  }
  t.same(h.dump(), before, 'state unchanged');
});

t.test('re-registering a known key must be signed by that key', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const before = h.dump();
  const unsigned = await raw.request({ type: 'register', public_key: n.identity.publicKeyB64, listen_addr: '6.6.6.6:6666' });
  t.equal(unsigned.code, 'bad_signature', 'an unsigned re-registration cannot move the endpoint');
  const forged = await raw.request({
    type: 'register',
    public_key: n.identity.publicKeyB64,
    listen_addr: '6.6.6.6:6666',
    ...sign(Identity.generate(), challenges.register(n.identity.publicKeyB64), Date.now()),
  });
  t.equal(forged.code, 'bad_signature');
  t.same(h.dump(), before);
  const ok = await raw.request({ type: 'register', public_key: n.identity.publicKeyB64, listen_addr: '1.1.1.1:7000', ...sign(n.identity, challenges.register(n.identity.publicKeyB64), Date.now()) });
  t.equal(ok.node_id, n.nodeId);
});

t.test('owner reclaim: only when the holder is offline or deregistered, and keeps the ID', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock });
  const first = Identity.generate();
  const r = await h.client.register(first, { owner: 'ops@example.com' });
  const thief = Identity.generate();
  await t.rejects(h.client.register(thief, { owner: 'ops@example.com' }), { code: 'conflict' }, 'holder online → refused');
  await h.client.deregister({ identity: first, nodeId: r.node_id });
  const reclaimed = await h.client.register(thief, { owner: 'ops@example.com' });
  t.equal(reclaimed.node_id, r.node_id, 'owner gets the old ID with the new key');
  t.equal((await h.client.lookup(r.node_id)).public_key, thief.publicKeyB64);
  await t.rejects(h.client.heartbeat({ identity: first, nodeId: r.node_id }), { code: 'bad_signature' }, 'old key no longer valid');
});

t.test('lookup: v1 fields, networks, never real_addr for private nodes', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client, { hostname: 'box' });
  const l = await h.client.lookup(n.nodeId);
  t.match(l, { type: 'lookup_ok', node_id: n.nodeId, address: '0:0000.0000.0001', networks: [0], public_key: n.identity.publicKeyB64, public: false, polo_score: 0, hostname: 'box' });
  t.notOk('real_addr' in l, 'private: no real_addr');
  await h.client.setVisibility(n, true);
  t.equal((await h.client.lookup(n.nodeId)).real_addr, '127.0.0.1:4000');
  await t.rejects(h.client.lookup(99), { code: 'not_found' });
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  for (const bad of [0, -1, 1.5, '1', 2 ** 32, null]) t.equal((await raw.request({ type: 'lookup', node_id: bad })).code, 'bad_request', `node_id ${JSON.stringify(bad)}`);
});

t.test('heartbeat: signed, returns time, revives an offline node, refuses deregistered', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock });
  const n = await registerNode(h.client);
  const hb = await h.client.heartbeat(n);
  t.equal(hb.time, Math.floor(clock.now() / 1000));
  clock.advance(181_000);
  t.equal(h.server.reapStale(), 1, 'stale after 3 min');
  await t.rejects(h.client.lookup(n.nodeId), { code: 'not_found' }, 'offline nodes are not looked up');
  await h.client.heartbeat(n);
  t.equal((await h.client.lookup(n.nodeId)).node_id, n.nodeId, 'heartbeat brings it back');
  await h.client.deregister(n);
  await t.rejects(h.client.heartbeat(n), { code: 'not_found' });
  await t.rejects(h.client.heartbeat({ identity: Identity.generate(), nodeId: 77 }), { code: 'not_found' });
});

t.test('deregister: signed; frees hostname; keeps ID reclaimable by key', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client, { hostname: 'gone' });
  const other = await registerNode(h.client);
  await t.rejects(h.client.deregister({ identity: other.identity, nodeId: n.nodeId }), { code: 'bad_signature' }, 'another node cannot deregister it');
  t.equal((await h.client.deregister(n)).type, 'deregister_ok');
  await t.rejects(h.client.lookup(n.nodeId), { code: 'not_found' });
  await t.rejects(h.client.resolveHostname('gone'), { code: 'not_found' });
  await h.client.setHostname(other, 'gone');
  const back = await h.client.register(n.identity);
  t.equal(back.node_id, n.nodeId, 're-registration of a deregistered key keeps the ID');
  t.equal(h.server.registryState.counters.total, 2);
});

t.test('set_visibility / set_hostname / set_tags / set_task_exec', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  const o = await registerNode(h.client);
  t.same(await h.client.setVisibility(n, true), { type: 'set_visibility_ok', node_id: n.nodeId, visibility: 'public' });
  t.same(await h.client.setHostname(n, 'worker-1'), { type: 'set_hostname_ok', node_id: n.nodeId, hostname: 'worker-1' });
  t.same((await h.client.resolveHostname('worker-1')).node_id, n.nodeId);
  await t.rejects(h.client.setHostname(o, 'worker-1'), { code: 'conflict' });
  await t.rejects(h.client.setHostname(o, 'localhost'), { code: 'bad_request' });
  await t.rejects(h.client.setHostname(o, '-bad'), { code: 'bad_request' });
  t.same((await h.client.setHostname(n, '')).hostname, '', 'empty clears');
  await t.rejects(h.client.resolveHostname('worker-1'), { code: 'not_found' });
  t.same((await h.client.setTags(n, ['#GPU', 'ml', 'ml'])).tags, ['gpu', 'ml'], 'normalised and deduped');
  t.same((await h.client.lookup(n.nodeId)).tags, ['gpu', 'ml']);
  await t.rejects(h.client.setTags(n, ['bad tag']), { code: 'bad_request' });
  await t.rejects(h.client.setTags(n, Array.from({ length: 11 }, (_, i) => `t${i}`)), { code: 'bad_request' });
  t.same((await h.client.lookup(n.nodeId)).tags, ['gpu', 'ml'], 'failed set_tags changed nothing');
  t.same(await h.client.setTaskExec(n, true), { type: 'set_task_exec_ok', node_id: n.nodeId, task_exec: true });
  t.equal((await h.client.lookup(n.nodeId)).task_exec, true);
  await h.client.setTags(n, []);
  t.notOk('tags' in (await h.client.lookup(n.nodeId)), 'empty list clears');
  for (const op of [
    (): Promise<unknown> => h.client.setVisibility({ identity: o.identity, nodeId: n.nodeId }, false),
    (): Promise<unknown> => h.client.setTags({ identity: o.identity, nodeId: n.nodeId }, ['x']),
    (): Promise<unknown> => h.client.setTaskExec({ identity: o.identity, nodeId: n.nodeId }, false),
  ]) {
    await t.rejects(op(), { code: 'bad_signature' }, 'another node cannot change it');
  }
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const before = h.dump();
  const ts = Date.now();
  t.equal((await raw.request({ type: 'set_visibility', node_id: n.nodeId, public: 'yes', ...sign(n.identity, challenges.setVisibility(n.nodeId), ts) })).code, 'bad_request');
  t.equal((await raw.request({ type: 'set_task_exec', node_id: n.nodeId, ...sign(n.identity, challenges.setTaskExec(n.nodeId), ts) })).code, 'bad_request');
  t.equal((await raw.request({ type: 'set_tags', node_id: n.nodeId, tags: 'gpu', ...sign(n.identity, challenges.setTags(n.nodeId), ts) })).code, 'bad_request');
  t.same(h.dump(), before);
});

t.test('rotate_key: signed with the current key; new key must be unused', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  const o = await registerNode(h.client);
  const next = Identity.generate();
  await t.rejects(h.client.rotateKey({ identity: next, nodeId: n.nodeId }, next.publicKeyB64), { code: 'bad_signature' }, 'new key cannot sign');
  await t.rejects(h.client.rotateKey(n, o.identity.publicKeyB64), { code: 'conflict' });
  await t.rejects(h.client.rotateKey(n, n.identity.publicKeyB64), { code: 'conflict' });
  const r = await h.client.rotateKey(n, next.publicKeyB64);
  t.match(r, { type: 'rotate_key_ok', node_id: n.nodeId, public_key: next.publicKeyB64 });
  await h.client.heartbeat({ identity: next, nodeId: n.nodeId });
  await t.rejects(h.client.heartbeat(n), { code: 'bad_signature' });
  t.equal((await h.client.register(next)).node_id, n.nodeId, 'new key maps to the node');
  t.equal((await h.client.register(n.identity)).node_id, 3, 'old key is a stranger now');
});

t.test('polo score: get open, set needs admin, update signed by the node, ranges enforced', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  const o = await registerNode(h.client);
  t.match(await h.client.getPoloScore(n.nodeId), { type: 'get_polo_score_ok', polo_score: 0, address: '0:0000.0000.0001' });
  await t.rejects(h.client.setPoloScore('wrong', n.nodeId, 50), { code: 'unauthorized' });
  t.equal((await h.client.setPoloScore(ADMIN, n.nodeId, 50)).polo_score, 50);
  t.equal((await h.client.updatePoloScore(n, -3)).polo_score, 47);
  await t.rejects(h.client.updatePoloScore({ identity: o.identity, nodeId: n.nodeId }, 100), { code: 'bad_signature' });
  await t.rejects(h.client.updatePoloScore(n, 1.5), { code: 'bad_request' });
  await t.rejects(h.client.updatePoloScore(n, 10_000_000), { code: 'bad_request' }, 'no silent clamp of huge deltas');
  await t.rejects(h.client.setPoloScore(ADMIN, n.nodeId, 2 ** 60), { code: 'bad_request' });
  t.equal((await h.client.setPoloScore(ADMIN, n.nodeId, -(2 ** 52))).polo_score, -(2 ** 52), 'extreme but safe values work');
  await t.rejects(h.client.getPoloScore(42), { code: 'not_found' });
});

t.test('set_polo_score refused when no admin token is configured', async (t) => {
  const h = await startRegistry(t, { config: { adminToken: undefined } });
  const n = await registerNode(h.client);
  await t.rejects(h.client.setPoloScore('anything', n.nodeId, 5), { code: 'unauthorized', message: /none configured/ });
});

t.test('beacon_register / beacon_list with TTL', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock });
  t.same(await h.client.beaconRegister(7, '10.0.0.1:9001'), { type: 'beacon_register_ok', beacon_id: 7 });
  await h.client.beaconRegister(8, '10.0.0.2:9001');
  t.same((await h.client.beaconList()).beacons, [
    { id: 7, addr: '10.0.0.1:9001' },
    { id: 8, addr: '10.0.0.2:9001' },
  ]);
  clock.advance(61_000);
  await h.client.beaconRegister(8, '10.0.0.2:9001');
  t.same((await h.client.beaconList()).beacons, [{ id: 8, addr: '10.0.0.2:9001' }], 'entries expire after 60 s');
  await t.rejects(h.client.beaconRegister(0, '10.0.0.1:9001'), { code: 'bad_request' });
  await t.rejects(h.client.beaconRegister(9, 'garbage'), { code: 'bad_request' });
});

t.test('admin_stats needs the admin token', async (t) => {
  const h = await startRegistry(t);
  await registerNode(h.client);
  const s = await h.client.adminStats(ADMIN);
  t.match(s, { type: 'admin_stats_ok', nodes_total: 1, nodes_online: 1, trust_links: 0, networks: 0 });
  t.ok(s.memory.rss > 0);
  await t.rejects(h.client.adminStats('nope'), { code: 'unauthorized' });
});
