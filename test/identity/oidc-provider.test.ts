/**
 * OIDC join rule against a real OpenID provider process (oidc-provider on loopback) issuing
 * client-credentials JWT access tokens with tid / groups claims.
 */
import t from 'tap';
import { decodeProtectedHeader } from 'jose';
import { IdentityVerifier, parseIdentityRule, networksForGroups, type OidcRule } from '../../registry/identity/index.js';
import { startOidcProvider } from './fixtures/oidc.js';
import { TestClock } from './fixtures/http.js';
import { refused, joinContext } from './fixtures/assert.js';

const AUD = 'urn:pilot:network:7';

t.test('tokens from a real IdP admit; wrong audience, issuer, tenant, group and expiry are refused', async (t) => {
  const clients = [
    { client_id: 'agent-good', client_secret: 'secret-good-0123456789abcdefghijkl', claims: { tid: 'tenant-a', groups: ['agents', 'prod'] } },
    { client_id: 'agent-other-tenant', client_secret: 'secret-tenant-0123456789abcdefghij', claims: { tid: 'tenant-b', groups: ['agents'] } },
    { client_id: 'agent-no-group', client_secret: 'secret-nogroup-0123456789abcdefghi', claims: { tid: 'tenant-a', groups: ['interns'] } },
  ];
  const [idp, other] = await Promise.all([
    startOidcProvider(t, { clients, audiences: [AUD, 'urn:pilot:network:8'], ttl: 600 }),
    startOidcProvider(t, { clients: clients.slice(0, 1), audiences: [AUD] }),
  ]);
  const clock = new TestClock();
  const v = new IdentityVerifier({ clock: clock.now, allowPrivateUrls: true, allowHttp: true });
  t.teardown(() => v.close());
  const rule = parseIdentityRule({ kind: 'oidc', issuer: idp.issuer, audience: AUD, tenant: 'tenant-a', groups: { any_of: ['agents'] } }) as OidcRule;
  const ctx = joinContext(clock.now());

  const good = await idp.token('agent-good');
  const id = await v.verify(rule, { oidc_token: good }, ctx);
  t.equal(id.externalId, `oidc:${idp.issuer}#agent-good`, 'external id = issuer + sub');
  t.equal(id.subject, 'agent-good');
  t.equal(id.issuer, idp.issuer);
  t.same(id.groups, ['agents', 'prod']);
  t.equal(id.claims?.tid, 'tenant-a');
  t.ok(id.expiresAt! > clock.now() && id.expiresAt! <= clock.now() + 700_000, 'expiresAt from the token exp');
  t.same(networksForGroups({ agents: [7], prod: [9, 7], interns: [3] }, id.groups), [7, 9], 'groups map to networks');
  const fetches = v.stats().documentFetches;
  t.equal(fetches, 2, 'discovery + JWKS fetched once');
  await v.verify(rule, { oidc_token: await idp.token('agent-good') }, ctx);
  t.equal(v.stats().documentFetches, fetches, 'second token verified from cache');

  await refused(t, v.verify(rule, { oidc_token: await idp.token('agent-good', 'urn:pilot:network:8') }, ctx), 'token_audience_mismatch', 'token for another network');
  await refused(t, v.verify(rule, { oidc_token: await other.token('agent-good') }, ctx), 'token_issuer_mismatch', 'token from another IdP');
  await refused(t, v.verify(rule, { oidc_token: await idp.token('agent-other-tenant') }, ctx), 'tenant_mismatch', 'other tenant');
  await refused(t, v.verify(rule, { oidc_token: await idp.token('agent-no-group') }, ctx), 'group_missing', 'not in agents');
  await refused(t, v.verify(rule, {}, ctx), 'proof_missing', 'no token');

  const later = new TestClock();
  later.t = clock.now() + 600_000 + 61_000;
  const v2 = new IdentityVerifier({ clock: later.now, allowPrivateUrls: true, allowHttp: true });
  t.teardown(() => v2.close());
  await refused(t, v2.verify(rule, { oidc_token: good }, joinContext(later.now())), 'token_expired', 'token past exp + skew');
});

t.test('key rotation at the IdP: one refetch, then success; unknown kids do not hammer it', async (t) => {
  const idp = await startOidcProvider(t, { clients: [{ client_id: 'agent', client_secret: 'secret-rotate-0123456789abcdefghij', claims: { tid: 't' } }], audiences: [AUD] });
  const clock = new TestClock();
  const v = new IdentityVerifier({ clock: clock.now, allowPrivateUrls: true, allowHttp: true });
  t.teardown(() => v.close());
  const rule = parseIdentityRule({ kind: 'oidc', issuer: idp.issuer, audience: AUD }) as OidcRule;
  const ctx = joinContext(clock.now());
  const first = await idp.token('agent');
  t.ok(await v.verify(rule, { oidc_token: first }, ctx));
  t.equal(v.stats().documentFetches, 2);

  const kid = await idp.rotateKeys();
  const rotated = await idp.token('agent');
  t.equal(decodeProtectedHeader(rotated).kid, kid, 'the IdP now signs with the new key');
  // Within the refetch cooldown of the first fetch, an unknown kid is refused without asking the IdP.
  await refused(t, v.verify(rule, { oidc_token: rotated }, ctx), 'token_kid_unknown', 'new kid inside the cooldown');
  t.equal(v.stats().documentFetches, 2, 'no refetch inside the cooldown');
  clock.advance(11_000);
  const id = await v.verify(rule, { oidc_token: rotated }, ctx);
  t.equal(id.subject, 'agent', 'new kid admitted after one refetch');
  t.equal(v.stats().documentFetches, 3, 'exactly one JWKS refetch');
  t.ok(await v.verify(rule, { oidc_token: first }, ctx), 'tokens signed with the old, still published key keep working');
  t.equal(v.stats().documentFetches, 3);
});
