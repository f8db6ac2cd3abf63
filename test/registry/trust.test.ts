import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RegistryClient } from '../../registry/client.js';
import { challenges } from '../../registry/protocol/challenges.js';
import type { PushEvent } from '../../registry/protocol/messages.js';
import { RawConn, registerNode, sign, startRegistry, waitFor } from './helpers.js';

t.test('report_trust records one side; the link is mutual once both consent; revoke removes it', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  t.same(await h.client.reportTrust(a, b.nodeId), { type: 'report_trust_ok', node_id: a.nodeId, peer_id: b.nodeId, mutual: false });
  t.equal(h.server.registryState.counters.mutualLinks, 0);
  t.same((await h.client.reportTrust(b, a.nodeId)).mutual, true);
  t.equal(h.server.registryState.counters.mutualLinks, 1);
  t.same((await h.client.reportTrust(a, b.nodeId)).mutual, true, 'idempotent');
  await t.rejects(h.client.reportTrust(a, a.nodeId), { code: 'bad_request' });
  await t.rejects(h.client.reportTrust(a, 99), { code: 'not_found' });
  await t.rejects(h.client.reportTrust({ identity: b.identity, nodeId: a.nodeId }, b.nodeId), { code: 'bad_signature' }, 'cannot consent for another node');
  t.same(await h.client.revokeTrust(b, a.nodeId), { type: 'revoke_trust_ok', node_id: b.nodeId, peer_id: a.nodeId });
  t.equal(h.server.registryState.counters.mutualLinks, 0);
  await t.rejects(h.client.revokeTrust(b, a.nodeId), { code: 'not_found' });
  t.same(h.dump().trust, []);
});

t.test('relayed handshake: request → inbox → poll clears → respond accept → mutual trust + response', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  t.same(await h.client.requestHandshake(a, b.nodeId, 'please'), { type: 'request_handshake_ok', status: 'delivered' });
  await t.rejects(h.client.requestHandshake(a, b.nodeId, 'again'), { code: 'conflict' }, 'one pending request per sender');
  await t.rejects(h.client.requestHandshake(a, a.nodeId), { code: 'bad_request' });
  await t.rejects(h.client.requestHandshake(a, 50), { code: 'not_found' });
  await t.rejects(h.client.pollHandshakes({ identity: a.identity, nodeId: b.nodeId }), { code: 'bad_signature' }, 'only B reads its inbox');
  const poll = await h.client.pollHandshakes(b);
  t.equal(poll.requests.length, 1);
  t.match(poll.requests[0], { from_node_id: a.nodeId, justification: 'please' });
  t.type(poll.requests[0]!.timestamp, 'number');
  t.same((await h.client.pollHandshakes(b)).requests, [], 'inbox cleared by the poll');
  const before = h.dump();
  await t.rejects(h.client.respondHandshake(b, b.nodeId, true), { code: 'bad_request' });
  await t.rejects(h.client.respondHandshake(b, 99, true), { code: 'not_found' });
  await t.rejects(h.client.respondHandshake({ identity: a.identity, nodeId: b.nodeId }, a.nodeId, true), { code: 'bad_signature' }, 'A cannot accept on B\'s behalf');
  await t.rejects(h.client.request(() => ({ type: 'respond_handshake', node_id: b.nodeId, peer_id: a.nodeId, accept: 'yes', ts: Date.now(), signature: 'x' })), { code: 'bad_request' });
  t.same(h.dump(), before, 'failed responses changed nothing');
  t.same(await h.client.respondHandshake(b, a.nodeId, true), { type: 'respond_handshake_ok', accept: true, peer_id: a.nodeId });
  t.ok(h.server.registryState.trusted(a.nodeId, b.nodeId), 'A requested + B accepted → mutual');
  const ar = await h.client.pollHandshakes(a);
  t.match(ar.responses, [{ from_node_id: b.nodeId, accept: true }]);
});

t.test('reject removes consent and queues a negative response', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  await h.client.requestHandshake(a, b.nodeId, 'hi');
  await h.client.respondHandshake(b, a.nodeId, false);
  t.same(h.dump().trust, [], 'no link left');
  t.same(h.dump().inbox.find((x) => x.node === b.nodeId), undefined, 'responding removed the pending request from B\'s inbox');
  t.match((await h.client.pollHandshakes(a)).responses, [{ from_node_id: b.nodeId, accept: false }]);
  await h.client.requestHandshake(a, b.nodeId, 'second try is allowed');
});

t.test('handshake inbox is capped at 100 pending requests', async (t) => {
  const h = await startRegistry(t);
  const target = await registerNode(h.client);
  for (let i = 0; i < 100; i++) {
    const n = await registerNode(h.client);
    await h.client.requestHandshake(n, target.nodeId);
  }
  const late = await registerNode(h.client);
  const before = h.dump();
  await t.rejects(h.client.requestHandshake(late, target.nodeId), { code: 'limit_reached' });
  t.same(h.dump(), before, 'refused request changed nothing (no consent recorded)');
});

t.test('push subscription: handshake request to a private node arrives immediately; poll still works', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const events: PushEvent[] = [];
  const sub = h.client.subscribe(b, (e) => events.push(e));
  const ok = await sub.ready();
  t.match(ok, { type: 'subscribe_ok', node_id: b.nodeId, pending: { requests: 0, responses: 0 } });
  t.equal(h.server.subscriptionCount, 1);
  await h.client.requestHandshake(a, b.nodeId, 'let me in');
  await waitFor(() => events.length > 0, 15_000, 'push');
  t.match(events[0], { type: 'push', event: 'handshake_request', node_id: b.nodeId, from_node_id: a.nodeId, justification: 'let me in' });
  const poll = await h.client.pollHandshakes(b);
  t.equal(poll.requests.length, 1, 'the inbox still holds the request after the push');

  const aEvents: PushEvent[] = [];
  const aSub = h.client.subscribe(a.identity, a.nodeId, (e) => aEvents.push(e)); // the (identity, nodeId, onEvent) form
  await aSub.ready();
  await h.client.respondHandshake(b, a.nodeId, true);
  await waitFor(() => aEvents.length > 0, 15_000, 'response push');
  t.match(aEvents[0], { event: 'handshake_response', node_id: a.nodeId, from_node_id: b.nodeId, accept: true });

  await h.client.revokeTrust(a, b.nodeId);
  await waitFor(() => events.some((e) => e.event === 'trust_revoked'), 15_000, 'revoke push');
  t.match(events.find((e) => e.event === 'trust_revoked'), { node_id: b.nodeId, from_node_id: a.nodeId });
  await sub.close();
  await aSub.close();
  await waitFor(() => h.server.subscriptionCount === 0, 15_000, 'subscriptions gone');
});

t.test('subscribe: reports pending inbox, needs a valid fresh signature, connection is push-only', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  await h.client.requestHandshake(a, b.nodeId);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  t.match(await raw.request({ type: 'subscribe', node_id: b.nodeId, ...sign(a.identity, challenges.subscribe(b.nodeId), Date.now()) }), { code: 'bad_signature' });
  t.equal(h.server.subscriptionCount, 0, 'no subscription for a forged request');
  const ok = await raw.request({ type: 'subscribe', node_id: b.nodeId, ...sign(b.identity, challenges.subscribe(b.nodeId), Date.now()) });
  t.match(ok, { type: 'subscribe_ok', pending: { requests: 1, responses: 0 }, keepalive_ms: 15000 });
  t.match(await raw.request({ type: 'lookup', node_id: 1 }), { code: 'bad_request', error: /push subscription/ });
  const c = await registerNode(h.client);
  await h.client.requestHandshake(c, b.nodeId, 'x');
  t.match(await raw.next(), { type: 'push', event: 'handshake_request', from_node_id: c.nodeId });
});

t.test('subscription resubscribes after the registry connection drops; pending events reach it via poll', async (t) => {
  const h = await startRegistry(t);
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  const client = new RegistryClient({ host: '127.0.0.1', port: h.port, reconnectMinMs: 20, reconnectMaxMs: 50 });
  t.teardown(() => client.close());
  let subscribed = 0;
  const events: PushEvent[] = [];
  const sub = client.subscribe(b, (e) => events.push(e), { onSubscribed: () => subscribed++ });
  await sub.ready();
  // kill the server side of the subscription
  for (const conn of (h.server as unknown as { connections: Set<{ isSubscription: boolean; destroy(): void }> }).connections) if (conn.isSubscription) conn.destroy();
  await h.client.requestHandshake(a, b.nodeId, 'while you were away');
  await waitFor(() => subscribed >= 2, 15_000, 'resubscription');
  t.equal(sub.subscriptions, 2);
  const poll = await client.pollHandshakes(b);
  t.match(poll.requests, [{ from_node_id: a.nodeId, justification: 'while you were away' }], 'nothing lost');
  const c = await registerNode(h.client);
  await h.client.requestHandshake(c, b.nodeId);
  await waitFor(() => events.some((e) => e.event === 'handshake_request' && e.from_node_id === c.nodeId), 15_000, 'push after resubscribe');
});

t.test('at most 4 subscriptions per node: the oldest is closed', async (t) => {
  const h = await startRegistry(t);
  const b = await registerNode(h.client);
  const conns = await Promise.all(Array.from({ length: 5 }, () => RawConn.open(h.port)));
  t.teardown(() => conns.forEach((c) => c.close()));
  let ts = Date.now();
  for (const c of conns) t.equal((await c.request({ type: 'subscribe', node_id: b.nodeId, ...sign(b.identity, challenges.subscribe(b.nodeId), ts++) })).type, 'subscribe_ok');
  t.match(await conns[0]!.next(), { type: 'error', error: /superseded/ });
  await conns[0]!.closedP;
  t.equal(h.server.subscriptionCount, 4);
  void Identity;
});
