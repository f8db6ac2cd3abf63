/**
 * Identity join rules through a real registry (TCP + typed client): a real OIDC provider process issuing
 * client-credentials tokens (admitted with external ID, RBAC pre-assignment and group-to-network mapping;
 * wrong audience, wrong tenant, missing proof and expired tokens refused with clear reasons and no change),
 * SPIFFE X.509-SVID joins with proof of possession (wrong trust domain / wrong key refused), and a slow
 * webhook verifier that does not hold up other requests.
 */
import t from 'tap';
import type { ServerResponse } from 'node:http';
import { RegistryClient } from '../../registry/client.js';
import { ADMIN, failure, registerNode, startRegistry, TestClock } from './helpers.js';
import { startOidcProvider } from '../identity/fixtures/oidc.js';
import { startHttpServer } from '../identity/fixtures/http.js';
import { chainPem, issue, makeRoot, signPop } from '../identity/fixtures/pki.js';


const AUD = 'urn:pilot:network:corp';

t.test('OIDC join rule with a real IdP: admission, external ID, pre-assignment, group mapping, refusals', async (t) => {
  const clients = [
    { client_id: 'agent-good', client_secret: 'secret-good-0123456789abcdefghijkl', claims: { tid: 'tenant-a', groups: ['agents', 'prod'] } },
    { client_id: 'agent-plain', client_secret: 'secret-plain-0123456789abcdefghijk', claims: { tid: 'tenant-a', groups: ['agents'] } },
    { client_id: 'agent-other-tenant', client_secret: 'secret-tenant-0123456789abcdefghij', claims: { tid: 'tenant-b', groups: ['agents'] } },
  ];
  const idp = await startOidcProvider(t, { clients, audiences: [AUD, 'urn:pilot:network:other'], ttl: 600 });
  const clock = new TestClock(Date.now());
  const { client } = await startRegistry(t, { clock, enterprise: { identity: { clock: () => clock.now(), allowHttp: true, allowPrivateUrls: true } } });
  const owner = await registerNode(client);
  const [a, b, c] = [await registerNode(client), await registerNode(client), await registerNode(client)];

  const prod = (await client.createNetwork(ADMIN, { name: 'prod', joinRule: 'invite', nodeId: owner.nodeId, enterprise: true })).network_id;
  const rule = { kind: 'oidc', issuer: idp.issuer, audience: AUD, tenant: 'tenant-a', groups: { any_of: ['agents'] } };
  const corp = (
    await client.createNetwork(ADMIN, { name: 'corp', joinRule: 'oidc', nodeId: owner.nodeId, enterprise: true, identityRule: rule, groupNetworks: { prod: [prod] } })
  ).network_id;
  t.match((await client.listNetworks()).networks.find((n) => n.id === corp), { join_rule: 'oidc' });
  const goodId = `oidc:${idp.issuer}#agent-good`;
  await client.setRolePreassignment(owner, corp, goodId.toUpperCase(), 'admin');

  // admission
  const joined = await client.joinNetwork(a, corp, undefined, { oidc_token: await idp.token('agent-good') });
  t.equal(joined.external_id, goodId, 'external ID = issuer + subject');
  t.equal(joined.role, 'admin', 'pre-assigned role by external ID (case-insensitive)');
  t.same(joined.auto_joined, [prod], "the token's groups joined the mapped network");
  const members = await client.listMembers(owner, corp);
  t.match(members.members.find((m) => m.node_id === a.nodeId), { external_id: goodId, role: 'admin' }, 'external ID in the member list');
  t.match((await client.listNodes(prod, owner)).nodes.find((n) => n.node_id === a.nodeId), { external_id: goodId, role: 'member' }, 'and on the mapped network');
  const plainJoin = await client.joinNetwork(b, corp, undefined, { oidc_token: await idp.token('agent-plain') });
  t.equal(plainJoin.role, 'member');
  t.equal(plainJoin.auto_joined, undefined, 'no prod group, no auto-join');
  t.same((await client.lookup(a.nodeId, b)).external_ids, { [corp]: goodId }, 'lookup by a fellow member shows the external ID');
  t.equal((await client.lookup(a.nodeId)).external_ids, undefined, 'anonymous lookup does not');

  // refusals: clear reason, nothing changes
  const before = (await client.listMembers(owner, corp)).members.length;
  const wrongAud = await failure(client.joinNetwork(c, corp, undefined, { oidc_token: await idp.token('agent-good', 'urn:pilot:network:other') }));
  t.equal(wrongAud.code, 'identity_refused');
  t.match(wrongAud.message, /^\[token_audience_mismatch\]/, 'wrong audience named');
  const tenant = await failure(client.joinNetwork(c, corp, undefined, { oidc_token: await idp.token('agent-other-tenant') }));
  t.match(tenant.message, /^\[tenant_mismatch\]/, 'wrong tenant named');
  t.match((await failure(client.joinNetwork(c, corp))).message, /^\[proof_missing\]/, 'no token');
  t.match((await failure(client.joinNetwork(c, corp, undefined, { oidc_token: 'not-a-jwt' }))).message, /^\[token_malformed\]/);
  const stale = await idp.token('agent-good');
  clock.advance(900_000); // past exp (600 s after issue, which was a little after the clock's start) + 60 s skew
  const expired = await failure(client.joinNetwork(c, corp, undefined, { oidc_token: stale }));
  t.match(expired, { code: 'identity_refused', message: /^\[token_expired\]/ }, 'expired token');
  t.equal((await client.listMembers(owner, corp)).members.length, before, 'refused joins changed nothing');
  t.equal((await failure(client.joinNetwork(c, prod))).code, 'forbidden', 'the mapped invite-only network is still closed to direct joins');
});

t.test('SPIFFE X.509-SVID join with proof of possession', async (t) => {
  const clock = new TestClock(Date.now());
  const { client } = await startRegistry(t, { clock, enterprise: { identity: { clock: () => clock.now() } } });
  const owner = await registerNode(client);
  const [a, b] = [await registerNode(client), await registerNode(client)];
  const rootA = await makeRoot({ name: 'CN=a.com root', alg: 'p256' });
  const rootB = await makeRoot({ name: 'CN=b.com root', alg: 'p256' });
  const inter = await issue(rootA, { name: 'CN=a.com intermediate', ca: true, pathLen: 0 });
  const svid = (id: string) => ({ name: 'O=SPIRE', san: [{ type: 'url' as const, value: id }] });
  const leaf = await issue(inter, svid('spiffe://a.com/agents/planner'));
  const other = await issue(rootB, svid('spiffe://b.com/agents/x'));
  const net = (
    await client.createNetwork(ADMIN, {
      name: 'mesh',
      joinRule: 'spiffe',
      nodeId: owner.nodeId,
      enterprise: true,
      identityRule: { kind: 'spiffe', trust_domains: { 'a.com': { bundle: rootA.pem } }, allow: ['spiffe://a.com/agents/*'] },
    })
  ).network_id;

  const proofFor = (node: typeof a, cert: typeof leaf, chain: string) => (ts: number) => ({
    svid_chain: chain,
    pop_signature: signPop(cert, { networkId: net, nodeId: node.nodeId, nodePublicKey: node.identity.publicKey, ts }),
  });
  const ok = await client.joinNetwork(a, net, undefined, proofFor(a, leaf, chainPem(leaf, inter)));
  t.equal(ok.external_id, 'spiffe://a.com/agents/planner', 'SPIFFE ID is the external ID');
  t.equal(ok.role, 'member');

  const wrongDomain = await failure(client.joinNetwork(b, net, undefined, proofFor(b, other, other.pem)));
  t.match(wrongDomain, { code: 'identity_refused', message: /^\[spiffe_trust_domain_unknown\]/ });
  // a's SVID presented by b with a PoP bound to a: the binding to node and Pilot key fails
  const stolen = await failure(
    client.joinNetwork(b, net, undefined, (ts) => ({ svid_chain: chainPem(leaf, inter), pop_signature: signPop(leaf, { networkId: net, nodeId: a.nodeId, nodePublicKey: a.identity.publicKey, ts }) })),
  );
  t.match(stolen, { code: 'identity_refused', message: /^\[pop_invalid\]/ }, 'a replayed PoP for another node is refused');
  t.equal((await client.listMembers(owner, net)).members.length, 2);
});

t.test('a slow identity webhook does not hold up other requests', async (t) => {
  const http = await startHttpServer(t);
  const held: ServerResponse[] = [];
  let hit!: () => void;
  const asked = new Promise<void>((r) => (hit = r));
  http.routes.set('/verify', (_req, _body, res) => {
    held.push(res);
    hit();
  });
  const { client, port } = await startRegistry(t, { enterprise: { identity: { allowHttp: true, allowPrivateUrls: true } } });
  const owner = await registerNode(client);
  const a = await registerNode(client);
  // replies on one connection come back in request order, so "others" are on another connection
  const other = await RegistryClient.connect({ host: '127.0.0.1', port });
  t.teardown(() => other.close());
  const net = (
    await client.createNetwork(ADMIN, { name: 'hook', joinRule: 'webhook', nodeId: owner.nodeId, enterprise: true, identityRule: { kind: 'webhook', url: `${http.url}/verify` } })
  ).network_id;
  const pending = client.joinNetwork(a, net, undefined, { webhook_token: 'opaque' });
  let settled = false;
  void pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  await asked;
  t.equal(held.length, 1, 'the registry asked the webhook');
  // while the verification waits, the registry answers others
  t.equal((await other.lookup(owner.nodeId)).node_id, owner.nodeId, 'lookup answered during a pending identity check');
  t.ok((await other.heartbeat(owner)).time, 'heartbeat answered too');
  t.notOk(settled, 'while the join is still waiting for the verifier');
  held[0]!.setHeader('content-type', 'application/json');
  held[0]!.end(JSON.stringify({ verified: true, external_id: 'emp-42', groups: ['x'] }));
  t.match(await pending, { external_id: 'webhook:emp-42' }, 'then the join completes');
});
