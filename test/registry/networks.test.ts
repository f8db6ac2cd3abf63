import t from 'tap';
import { hashJoinToken, joinTokenMatches } from '../../registry/auth.js';
import { challenges } from '../../registry/protocol/challenges.js';
import type { PushEvent } from '../../registry/protocol/messages.js';
import { ADMIN, RawConn, registerNode, sign, startRegistry, waitFor } from './helpers.js';

t.test('create_network: admin token, name rules, uniqueness, join rules', async (t) => {
  const h = await startRegistry(t);
  const ok = await h.client.createNetwork(ADMIN, { name: 'research', joinRule: 'open' });
  t.same(ok, { type: 'create_network_ok', network_id: 1, name: 'research', join_rule: 'open' });
  const before = h.dump();
  const bad: Array<[Parameters<typeof h.client.createNetwork>[1], string, RegExp?]> = [
    [{ name: 'research', joinRule: 'open' }, 'conflict', /taken/],
    [{ name: 'backbone', joinRule: 'open' }, 'bad_request', /reserved/],
    [{ name: 'Upper', joinRule: 'open' }, 'bad_request'],
    [{ name: '-x', joinRule: 'open' }, 'bad_request'],
    [{ name: 'x-', joinRule: 'open' }, 'bad_request'],
    [{ name: 'a'.repeat(64), joinRule: 'open' }, 'bad_request'],
    [{ name: '', joinRule: 'open' }, 'bad_request'],
    [{ name: 'ok', joinRule: 'secret' as 'open' }, 'bad_request', /join_rule/],
    [{ name: 'ok', joinRule: 'token' }, 'bad_request', /needs a non-empty token/],
    [{ name: 'ok', joinRule: 'open', token: 'x' }, 'bad_request', /only used/],
    [{ name: 'ok', joinRule: 'open', allowedPorts: [0] }, 'bad_request'],
    [{ name: 'ok', joinRule: 'open', maxMembers: 10001 }, 'bad_request'],
    [{ name: 'ok', joinRule: 'open', nodeId: 99 }, 'not_found'],
  ];
  for (const [p, code, msg] of bad) await t.rejects(h.client.createNetwork(ADMIN, p), { code, ...(msg ? { message: msg } : {}) }, JSON.stringify(p));
  await t.rejects(h.client.createNetwork('wrong', { name: 'ok', joinRule: 'open' }), { code: 'unauthorized' });
  t.same(h.dump(), before, 'failed creates changed nothing');
  t.equal((await h.client.createNetwork(ADMIN, { name: 'a'.repeat(63), joinRule: 'open' })).network_id, 2, '63 characters is fine');
  t.equal((await h.client.createNetwork(ADMIN, { name: '9lives', joinRule: 'invite' })).network_id, 3);
});

t.test('create_network refused when no admin token is configured', async (t) => {
  const h = await startRegistry(t, { config: { adminToken: undefined } });
  await t.rejects(h.client.createNetwork('', { name: 'x', joinRule: 'open' }), { code: 'unauthorized', message: /none configured/ });
});

t.test('join rules: open, token (constant-time path), invite', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const open = await h.client.createNetwork(ADMIN, { name: 'open-net', joinRule: 'open' });
  const tok = await h.client.createNetwork(ADMIN, { name: 'tok-net', joinRule: 'token', token: 's3cret' });
  const inv = await h.client.createNetwork(ADMIN, { name: 'inv-net', joinRule: 'invite' });
  t.same(await h.client.joinNetwork(a, open.network_id), { type: 'join_network_ok', network_id: 1, node_id: a.nodeId, address: '1:0001.0000.0001' });
  await t.rejects(h.client.joinNetwork(a, open.network_id), { code: 'conflict', message: /already a member/ });
  await t.rejects(h.client.joinNetwork(a, tok.network_id), { code: 'forbidden', message: /needs a join token/ });
  await t.rejects(h.client.joinNetwork(a, tok.network_id, 's3cre'), { code: 'forbidden', message: /wrong/ });
  await t.rejects(h.client.joinNetwork(a, tok.network_id, 's3cret-longer'), { code: 'forbidden', message: /wrong/ });
  await h.client.joinNetwork(a, tok.network_id, 's3cret');
  await t.rejects(h.client.joinNetwork(a, inv.network_id), { code: 'forbidden', message: /invite-only.*invite_to_network/ });
  await t.rejects(h.client.joinNetwork(a, 99), { code: 'not_found' });
  t.same((await h.client.lookup(a.nodeId)).networks, [0, 1, 2], 'lookup lists memberships');
  const other = await registerNode(h.client);
  await t.rejects(h.client.joinNetwork({ identity: other.identity, nodeId: a.nodeId }, inv.network_id), { code: 'bad_signature' }, 'join is node-signed');
});

t.test('join tokens are stored salted and hashed, compared in constant time', async (t) => {
  // Not hex, so the check cannot be fooled by the token's letters turning up in the hex digest.
  const token = 'join-me-xyz';
  const stored = hashJoinToken(token);
  t.notMatch(stored, token);
  t.match(stored, /^[0-9a-f]{32}:[0-9a-f]{64}$/);
  t.ok(joinTokenMatches(stored, token));
  t.notOk(joinTokenMatches(stored, 'join-me-xyw'));
  t.notOk(joinTokenMatches(stored, ''));
  t.notOk(joinTokenMatches('garbage', token));
  t.not(hashJoinToken(token), stored, 'fresh salt each time');
  const h = await startRegistry(t);
  await h.client.createNetwork(ADMIN, { name: 'n', joinRule: 'token', token: 'tok-123' });
  t.notMatch(JSON.stringify(h.dump()), /tok-123/, 'the token is not kept in plain text');
});

t.test('backbone (network 0) cannot be joined, left, deleted, renamed, listed or given a policy', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const before = h.dump();
  await t.rejects(h.client.joinNetwork(a, 0), { code: 'forbidden', message: /backbone/ });
  await t.rejects(h.client.leaveNetwork(a, 0), { code: 'forbidden', message: /backbone/ });
  await t.rejects(h.client.deleteNetwork(ADMIN, 0), { code: 'forbidden' });
  await t.rejects(h.client.renameNetwork(ADMIN, 0, 'x'), { code: 'forbidden' });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, 0, { maxMembers: 5 }), { code: 'forbidden' });
  await t.rejects(h.client.getNetworkPolicy(0, { adminToken: ADMIN }), { code: 'forbidden' });
  await t.rejects(h.client.kickMember(ADMIN, 0, a.nodeId), { code: 'forbidden' });
  t.same(h.dump(), before);
  t.same((await h.client.listNetworks()).networks, [{ id: 0, name: 'backbone', members: 1, join_rule: 'open' }]);
});

t.test('leave, kick, rename, delete', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const { network_id: id } = await h.client.createNetwork(ADMIN, { name: 'ops', joinRule: 'open' });
  await h.client.joinNetwork(a, id);
  await h.client.joinNetwork(b, id);
  t.same((await h.client.listNetworks()).networks[1], { id, name: 'ops', members: 2, join_rule: 'open' });
  t.same(await h.client.leaveNetwork(a, id), { type: 'leave_network_ok', network_id: id, node_id: a.nodeId });
  await t.rejects(h.client.leaveNetwork(a, id), { code: 'not_found' });
  await t.rejects(h.client.kickMember('nope', id, b.nodeId), { code: 'unauthorized' });
  t.same(await h.client.kickMember(ADMIN, id, b.nodeId), { type: 'kick_member_ok', network_id: id, node_id: b.nodeId });
  await t.rejects(h.client.kickMember(ADMIN, id, b.nodeId), { code: 'not_found' });
  await h.client.createNetwork(ADMIN, { name: 'other', joinRule: 'open' });
  await t.rejects(h.client.renameNetwork(ADMIN, id, 'other'), { code: 'conflict' });
  await t.rejects(h.client.renameNetwork(ADMIN, id, 'Bad'), { code: 'bad_request' });
  await t.rejects(h.client.renameNetwork(ADMIN, 77, 'fine'), { code: 'not_found' });
  t.same(await h.client.renameNetwork(ADMIN, id, 'ops-2'), { type: 'rename_network_ok', network_id: id, name: 'ops-2' });
  await h.client.joinNetwork(a, id);
  await t.rejects(h.client.deleteNetwork('nope', id), { code: 'unauthorized' });
  t.same(await h.client.deleteNetwork(ADMIN, id), { type: 'delete_network_ok', network_id: id });
  t.same((await h.client.lookup(a.nodeId)).networks, [0], 'membership gone with the network');
  await t.rejects(h.client.deleteNetwork(ADMIN, id), { code: 'not_found' });
  t.equal((await h.client.createNetwork(ADMIN, { name: 'ops', joinRule: 'open' })).name, 'ops', 'name free again');
});

t.test('policy: allowed_ports and max_members (limits, dedupe, cap enforcement)', async (t) => {
  const h = await startRegistry(t);
  const nodes = await Promise.all([1, 2, 3].map(() => registerNode(h.client)));
  const { network_id: id } = await h.client.createNetwork(ADMIN, { name: 'capped', joinRule: 'open' });
  t.same(await h.client.getNetworkPolicy(id, { adminToken: ADMIN }), { type: 'get_network_policy_ok', network_id: id, allowed_ports: [], max_members: 0 });
  t.same(await h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: [443, 80, 80, 7], maxMembers: 2 }), {
    type: 'set_network_policy_ok',
    network_id: id,
    allowed_ports: [7, 80, 443],
    max_members: 2,
  });
  await h.client.joinNetwork(nodes[0]!, id);
  await h.client.joinNetwork(nodes[1]!, id);
  await t.rejects(h.client.joinNetwork(nodes[2]!, id), { code: 'limit_reached', message: /membership limit reached/ });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, { maxMembers: 1 }), { code: 'conflict', message: /below the current member count/ });
  const before = h.dump();
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: Array.from({ length: 101 }, (_, i) => i + 1) }), { code: 'bad_request' });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: [65536] }), { code: 'bad_request' });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: [1.5] }), { code: 'bad_request' });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, { maxMembers: -1 }), { code: 'bad_request' });
  await t.rejects(h.client.setNetworkPolicy(ADMIN, id, {}), { code: 'bad_request' });
  await t.rejects(h.client.setNetworkPolicy('x', id, { maxMembers: 5 }), { code: 'unauthorized' });
  t.same(h.dump(), before, 'failed policy changes changed nothing');
  t.same((await h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: Array.from({ length: 100 }, (_, i) => i + 1) })).allowed_ports.length, 100);
  t.same((await h.client.getNetworkPolicy(id, nodes[0]!)).max_members, 2, 'members may read the policy');
  await t.rejects(h.client.getNetworkPolicy(id, nodes[2]!), { code: 'forbidden' });
  await h.client.setNetworkPolicy(ADMIN, id, { maxMembers: 0 });
  await h.client.joinNetwork(nodes[2]!, id);
});

t.test('membership and policy changes are pushed to members', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const { network_id: id } = await h.client.createNetwork(ADMIN, { name: 'pushy', joinRule: 'open' });
  await h.client.joinNetwork(a, id);
  const events: PushEvent[] = [];
  const sub = h.client.subscribe(a, (e) => events.push(e));
  await sub.ready();
  await h.client.joinNetwork(b, id);
  await h.client.setNetworkPolicy(ADMIN, id, { allowedPorts: [80] });
  await h.client.kickMember(ADMIN, id, b.nodeId);
  await h.client.deleteNetwork(ADMIN, id);
  await waitFor(() => events.length >= 4, 15_000, '4 events');
  t.match(events, [
    { event: 'network_membership', network_id: id, node_id: b.nodeId, action: 'join' },
    { event: 'network_policy', network_id: id, allowed_ports: [80], max_members: 0 },
    { event: 'network_membership', network_id: id, node_id: b.nodeId, action: 'kick' },
    { event: 'network_membership', network_id: id, node_id: a.nodeId, action: 'delete' },
  ]);
});

t.test('network requests with wrong field types change nothing', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  await h.client.createNetwork(ADMIN, { name: 'n1', joinRule: 'token', token: 't' });
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const before = h.dump();
  const ts = Date.now();
  for (const req of [
    { type: 'join_network', node_id: a.nodeId, network_id: '1', ...sign(a.identity, challenges.joinNetwork(a.nodeId, 1), ts) },
    { type: 'join_network', node_id: a.nodeId, network_id: 70000, ...sign(a.identity, challenges.joinNetwork(a.nodeId, 1), ts + 1) },
    { type: 'join_network', node_id: a.nodeId, network_id: 1, token: 5, ...sign(a.identity, challenges.joinNetwork(a.nodeId, 1), ts + 2) },
    { type: 'create_network', admin_token: ADMIN, name: 'n2', join_rule: 'open', max_members: '5' },
    { type: 'set_network_policy', admin_token: ADMIN, network_id: 1, allowed_ports: '80' },
    { type: 'delete_network', admin_token: 7, network_id: 1 },
  ]) {
    t.equal((await raw.request(req)).code, 'bad_request', JSON.stringify(req));
  }
  t.same(h.dump(), before);
});
