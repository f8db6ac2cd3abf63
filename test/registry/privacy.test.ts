import t from 'tap';
import { ADMIN, registerNode, startRegistry } from './helpers.js';

t.test('resolve: private refused; public allowed; mutual trust allows; revoke removes access', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client, { listenAddr: ':4001' });
  const b = await registerNode(h.client, { listenAddr: ':4002' });
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden', message: /private/ });
  t.notOk(h.server.canResolve(a.nodeId, b.nodeId));

  // one-sided consent is not enough (v1 let A alone create the pair)
  await h.client.reportTrust(a, b.nodeId);
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden' }, 'A reporting trust in B does not expose B');
  await h.client.reportTrust(b, a.nodeId);
  t.same(await h.client.resolve(a, b.nodeId), { type: 'resolve_ok', node_id: b.nodeId, real_addr: '127.0.0.1:4002' });
  t.same((await h.client.resolve(b, a.nodeId)).real_addr, '127.0.0.1:4001');
  t.ok(h.server.canResolve(a.nodeId, b.nodeId));

  await h.client.revokeTrust(a, b.nodeId);
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden' });
  await t.rejects(h.client.resolve(b, a.nodeId), { code: 'forbidden' });

  await h.client.setVisibility(b, true);
  t.same((await h.client.resolve(a, b.nodeId)).real_addr, '127.0.0.1:4002', 'public nodes resolve for anyone registered');
  t.same((await h.client.resolve(b, b.nodeId)).real_addr, '127.0.0.1:4002', 'self');
});

t.test('resolve needs a signature by the requester it names', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const c = await registerNode(h.client);
  await h.client.reportTrust(a, b.nodeId);
  await h.client.reportTrust(b, a.nodeId);
  await t.rejects(h.client.resolve({ identity: c.identity, nodeId: a.nodeId }, b.nodeId), { code: 'bad_signature' }, 'C cannot borrow A\'s trust');
  await t.rejects(h.client.resolve({ identity: c.identity, nodeId: 77 }, b.nodeId), { code: 'not_found' });
});

t.test('relayed handshake gives a private pair mutual access (request = consent, accept = consent)', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  await h.client.requestHandshake(a, b.nodeId, 'hi');
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden' }, 'pending request: nothing disclosed to A');
  await t.rejects(h.client.resolve(b, a.nodeId), { code: 'forbidden' }, 'nor to B before it answers');
  await h.client.respondHandshake(b, a.nodeId, true);
  await h.client.resolve(a, b.nodeId);
  await h.client.resolve(b, a.nodeId);
});

t.test('shared non-backbone network allows resolve; leaving removes it', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const { network_id } = await h.client.createNetwork(ADMIN, { name: 'lab', joinRule: 'open' });
  await h.client.joinNetwork(a, network_id);
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden' });
  await h.client.joinNetwork(b, network_id);
  await h.client.resolve(a, b.nodeId);
  await h.client.leaveNetwork(b, network_id);
  await t.rejects(h.client.resolve(a, b.nodeId), { code: 'forbidden' });
});

t.test('punch follows the same rule (v1 leaked private endpoints)', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client, { listenAddr: ':4001' });
  const b = await registerNode(h.client, { listenAddr: ':4002' });
  const c = await registerNode(h.client);
  await t.rejects(h.client.punch(a, a.nodeId, b.nodeId), { code: 'forbidden', message: /private/ });
  await t.rejects(h.client.punch(c, a.nodeId, b.nodeId), { code: 'forbidden', message: /node_a or node_b/ }, 'bystanders cannot punch');
  await t.rejects(h.client.punch({ identity: c.identity, nodeId: a.nodeId }, a.nodeId, b.nodeId), { code: 'bad_signature' });
  await h.client.reportTrust(a, b.nodeId);
  await h.client.reportTrust(b, a.nodeId);
  t.same(await h.client.punch(a, a.nodeId, b.nodeId), {
    type: 'punch_ok',
    node_a: a.nodeId,
    node_a_addr: '127.0.0.1:4001',
    node_b: b.nodeId,
    node_b_addr: '127.0.0.1:4002',
  });
  await h.client.revokeTrust(b, a.nodeId);
  await t.rejects(h.client.punch(b, a.nodeId, b.nodeId), { code: 'forbidden' });
});

t.test('resolve_hostname: private nodes are indistinguishable from missing ones unless the signed requester may resolve them', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client, { hostname: 'alice' });
  const b = await registerNode(h.client, { hostname: 'bob' });
  const c = await registerNode(h.client);
  const hidden = await h.client.resolveHostname('bob').catch((e: Error) => e);
  const missing = await h.client.resolveHostname('nobody').catch((e: Error) => e);
  t.match(hidden, { code: 'not_found' });
  t.equal((hidden as Error).message, 'hostname "bob" not found');
  t.equal((missing as Error).message, 'hostname "nobody" not found', 'same wording: existence not disclosed');
  await t.rejects(h.client.resolveHostname('bob', c), { code: 'not_found' }, 'signed stranger: still not found');
  await h.client.reportTrust(a, b.nodeId);
  await h.client.reportTrust(b, a.nodeId);
  t.same(await h.client.resolveHostname('bob', a), { type: 'resolve_hostname_ok', node_id: b.nodeId, address: '0:0000.0000.0002', public: false, hostname: 'bob' });
  await t.rejects(h.client.resolveHostname('bob', { identity: c.identity, nodeId: a.nodeId }), { code: 'bad_signature' });
  await h.client.setVisibility(a, true);
  t.equal((await h.client.resolveHostname('alice')).node_id, a.nodeId, 'public hostnames resolve for anyone');
});

t.test('list_nodes: backbone blocked, members only (signed), real_addr only for public members', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client, { hostname: 'a1', listenAddr: ':4001' });
  const b = await registerNode(h.client, { listenAddr: ':4002' });
  const c = await registerNode(h.client);
  const { network_id } = await h.client.createNetwork(ADMIN, { name: 'team', joinRule: 'open' });
  await h.client.joinNetwork(a, network_id);
  await h.client.joinNetwork(b, network_id);
  await h.client.setVisibility(b, true);
  await t.rejects(h.client.listNodes(0, a), { code: 'forbidden', message: /backbone/ });
  await t.rejects(h.client.listNodes(0, { adminToken: ADMIN }), { code: 'forbidden' }, 'not even for admins');
  await t.rejects(h.client.listNodes(network_id, c), { code: 'forbidden', message: /not a member/ });
  await t.rejects(h.client.listNodes(network_id, { identity: c.identity, nodeId: a.nodeId }), { code: 'bad_signature' });
  await t.rejects(h.client.request(() => ({ type: 'list_nodes', network_id })), { code: 'forbidden' }, 'anonymous');
  const list = await h.client.listNodes(network_id, a);
  t.same(list, {
    type: 'list_nodes_ok',
    network_id,
    nodes: [
      { node_id: a.nodeId, address: `${network_id}:000${network_id}.0000.0001`, hostname: 'a1' },
      { node_id: b.nodeId, address: `${network_id}:000${network_id}.0000.0002`, real_addr: '127.0.0.1:4002' },
    ],
  });
  t.same((await h.client.listNodes(network_id, { adminToken: ADMIN })).nodes.length, 2, 'admin may list');
});
