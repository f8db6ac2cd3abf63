/**
 * SPIFFE join rule with real X.509: two federated trust domains, X.509-SVIDs with proof of possession
 * (P-256, P-384, RSA, Ed25519), JWT-SVIDs, and every refusal the brief names.
 */
import t from 'tap';
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { SignJWT, exportJWK } from 'jose';
import * as px from '@peculiar/x509';
import { IdentityVerifier, parseIdentityRule, type SpiffeRule } from '../../registry/identity/index.js';
import { makeRoot, issue, selfSigned, chainPem, signPop, spiffeBundle, type Issued } from './fixtures/pki.js';
import { TestClock, startHttpServer, json } from './fixtures/http.js';
import { refused, joinContext } from './fixtures/assert.js';

const DAY = 86_400_000;
const svidOpts = (id: string, extra: Record<string, unknown> = {}) => ({ name: 'O=SPIRE', san: [{ type: 'url' as const, value: id }], ...extra });

t.test('X.509-SVIDs from two federated trust domains', async (t) => {
  const clock = new TestClock();
  const rootA = await makeRoot({ name: 'CN=a.com root,O=A' });
  const interA = await issue(rootA, { name: 'CN=a.com intermediate', ca: true, pathLen: 0 });
  const rootB = await makeRoot({ name: 'CN=b.com root,O=B', alg: 'p384' });
  const rootC = await makeRoot({ name: 'CN=c.com root' });
  const jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const bundleB = await spiffeBundle([rootB], [{ ...(await exportJWK(createPublicKey(jwtKey.privateKey))), kid: 'jwt-b-1', use: 'jwt-svid' }]);
  const rule = parseIdentityRule({
    kind: 'spiffe',
    trust_domains: { 'a.com': { bundle: rootA.pem }, 'b.com': { bundle: bundleB } },
    allow: ['spiffe://a.com/agents/*', 'spiffe://b.com/**'],
    jwt_audience: 'pilot://network/7',
  }) as SpiffeRule;
  const v = new IdentityVerifier({ clock: clock.now });
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());

  const leafA = await issue(interA, svidOpts('spiffe://a.com/agents/planner', { alg: 'p256' }));
  const idA = await v.verify(rule, { svid_chain: chainPem(leafA, interA), pop_signature: signPop(leafA, ctx) }, ctx);
  t.equal(idA.externalId, 'spiffe://a.com/agents/planner');
  t.equal(idA.issuer, 'spiffe://a.com');
  t.same(idA.groups, ['spiffe://a.com/agents/*'], 'groups = the patterns that admitted it');
  t.equal(idA.expiresAt, leafA.cert.notAfter.getTime());

  for (const alg of ['p384', 'rsa', 'ed25519'] as const) {
    const leafB = await issue(rootB, svidOpts(`spiffe://b.com/ns/prod/sa/${alg}`, { alg }));
    const idB = await v.verify(rule, { svid_chain: leafB.pem, pop_signature: signPop(leafB, ctx) }, ctx);
    t.equal(idB.subject, `spiffe://b.com/ns/prod/sa/${alg}`, `b.com SVID with a ${alg} key admitted`);
  }

  // Refusals.
  const wrongDomain = await issue(rootC, svidOpts('spiffe://c.com/agents/x'));
  await refused(t, v.verify(rule, { svid_chain: wrongDomain.pem, pop_signature: signPop(wrongDomain, ctx) }, ctx), 'spiffe_trust_domain_unknown', 'SVID of a non-federated trust domain');
  const crossSigned = await issue(rootB, svidOpts('spiffe://a.com/agents/x'));
  await refused(t, v.verify(rule, { svid_chain: crossSigned.pem, pop_signature: signPop(crossSigned, ctx) }, ctx), 'spiffe_trust_domain_mismatch', "b.com's CA minting an a.com ID");
  const unknownRoot = await makeRoot({ name: 'CN=a.com root,O=A' }); // same name, different key
  const forged = await issue(unknownRoot, svidOpts('spiffe://a.com/agents/x'));
  await refused(t, v.verify(rule, { svid_chain: forged.pem, pop_signature: signPop(forged, ctx) }, ctx), 'chain_untrusted', 'SVID from an unknown root with the real root name');
  const strangerRoot = await makeRoot({ name: 'CN=stranger' });
  const stranger = await issue(strangerRoot, svidOpts('spiffe://a.com/agents/x'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(stranger, strangerRoot), pop_signature: signPop(stranger, ctx) }, ctx), 'chain_untrusted', 'chain ending at an unknown self-signed root');
  await refused(t, v.verify(rule, { svid_chain: stranger.pem, pop_signature: signPop(stranger, ctx) }, ctx), 'chain_untrusted', 'unknown issuer');

  const expired = await issue(interA, svidOpts('spiffe://a.com/agents/old', { notBefore: new Date(clock.now() - 2 * DAY), notAfter: new Date(clock.now() - DAY) }));
  await refused(t, v.verify(rule, { svid_chain: chainPem(expired, interA), pop_signature: signPop(expired, ctx) }, ctx), 'cert_expired', 'expired SVID');
  const future = await issue(interA, svidOpts('spiffe://a.com/agents/new', { notBefore: new Date(clock.now() + DAY), notAfter: new Date(clock.now() + 2 * DAY) }));
  await refused(t, v.verify(rule, { svid_chain: chainPem(future, interA), pop_signature: signPop(future, ctx) }, ctx), 'cert_not_yet_valid', 'not-yet-valid SVID');

  const otherKey = await issue(interA, svidOpts('spiffe://a.com/agents/thief'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA), pop_signature: signPop(otherKey, ctx) }, ctx), 'pop_invalid', 'PoP signed by another key (stolen certificate)');
  const otherCtx = { ...ctx, nodeId: ctx.nodeId + 1 };
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA), pop_signature: signPop(leafA, otherCtx) }, ctx), 'pop_invalid', 'PoP for another node replayed');
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA), pop_signature: signPop(leafA, { ...ctx, networkId: 8 }) }, ctx), 'pop_invalid', 'PoP for another network replayed');
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA) }, ctx), 'pop_missing', 'no PoP');
  const staleCtx = { ...ctx, ts: clock.now() - 10 * 60_000 };
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA), pop_signature: signPop(leafA, staleCtx) }, staleCtx), 'pop_stale', 'join ts 10 min old');

  const notAllowed = await issue(interA, svidOpts('spiffe://a.com/agents/planner/sub'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(notAllowed, interA), pop_signature: signPop(notAllowed, ctx) }, ctx), 'spiffe_id_not_allowed', '"*" matches one segment only');
  const twoUris = await issue(interA, { name: 'O=x', san: [{ type: 'url', value: 'spiffe://a.com/agents/a' }, { type: 'url', value: 'spiffe://a.com/agents/b' }] });
  await refused(t, v.verify(rule, { svid_chain: chainPem(twoUris, interA), pop_signature: signPop(twoUris, ctx) }, ctx), 'spiffe_id_invalid', 'two URI SANs');
  const badId = await issue(interA, svidOpts('spiffe://a.com/agents/../admin'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(badId, interA), pop_signature: signPop(badId, ctx) }, ctx), 'spiffe_id_invalid', 'dot segments in the ID');
  const caLeaf = await issue(interA, { ...svidOpts('spiffe://a.com/agents/ca'), ca: true });
  await refused(t, v.verify(rule, { svid_chain: chainPem(caLeaf, interA), pop_signature: signPop(caLeaf, ctx) }, ctx), 'leaf_is_ca', 'leaf is a CA');
  const noKu = await issue(interA, { ...svidOpts('spiffe://a.com/agents/noku'), keyUsage: null });
  await refused(t, v.verify(rule, { svid_chain: chainPem(noKu, interA), pop_signature: signPop(noKu, ctx) }, ctx), 'key_usage_missing', 'SVID without keyUsage');
  const deep = await issue(interA, { name: 'CN=too deep', ca: true });
  const deepLeaf = await issue(deep, svidOpts('spiffe://a.com/agents/deep'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(deepLeaf, deep, interA), pop_signature: signPop(deepLeaf, ctx) }, ctx), 'path_len_exceeded', 'intermediate under a pathLen 0 CA');
  const notCa = await issue(rootA, { name: 'CN=not a ca', ca: false, keyUsage: px.KeyUsageFlags.keyCertSign | px.KeyUsageFlags.digitalSignature });
  const underNotCa = await issue(notCa, svidOpts('spiffe://a.com/agents/x'));
  await refused(t, v.verify(rule, { svid_chain: chainPem(underNotCa, notCa), pop_signature: signPop(underNotCa, ctx) }, ctx), 'cert_not_ca', 'issuer without basicConstraints cA');
  const self = await selfSigned(svidOpts('spiffe://a.com/agents/self'));
  await refused(t, v.verify(rule, { svid_chain: self.pem, pop_signature: signPop(self, ctx) }, ctx), 'cert_self_signed', 'self-signed SVID');
  await refused(t, v.verify(rule, { svid_chain: rootA.pem, pop_signature: signPop(rootA, ctx) }, ctx), 'leaf_is_ca', 'the root itself');
  await refused(t, v.verify(rule, { svid_chain: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', pop_signature: 'AAAA' }, ctx), 'cert_malformed', 'garbage certificate');
  await refused(t, v.verify(rule, { svid_chain: chainPem(leafA, interA, interA, interA, interA, interA, interA, interA, interA), pop_signature: 'AAAA' }, ctx), 'chain_too_long', '9 certificates');
});

t.test('JWT-SVIDs', async (t) => {
  const clock = new TestClock();
  const rootA = await makeRoot({ name: 'CN=a.com root' });
  const keyA = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyB = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const bundleA = await spiffeBundle([rootA], [{ ...(await exportJWK(createPublicKey(keyA.privateKey))), kid: 'a1', use: 'jwt-svid' }]);
  const bundleB = { keys: [{ ...(await exportJWK(createPublicKey(keyB.privateKey))), kid: 'b1', use: 'jwt-svid' }] };
  const rule = parseIdentityRule({
    kind: 'spiffe',
    trust_domains: { 'a.com': { bundle: bundleA }, 'b.com': { bundle: bundleB } },
    allow: ['spiffe://a.com/agents/**', 'spiffe://b.com/agents/*'],
    jwt_audience: 'pilot://network/7',
  }) as SpiffeRule;
  const v = new IdentityVerifier({ clock: clock.now });
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const now = Math.floor(clock.now() / 1000);
  const svid = (sub: string, opts: { key?: 'a' | 'b'; kid?: string; aud?: string | string[]; exp?: number | null; alg?: string } = {}): Promise<string> => {
    const key = (opts.key ?? 'a') === 'a' ? keyA.privateKey : keyB.privateKey;
    const alg = opts.alg ?? ((opts.key ?? 'a') === 'a' ? 'ES256' : 'RS256');
    let j = new SignJWT({ sub, aud: opts.aud ?? 'pilot://network/7' }).setProtectedHeader({ alg, kid: opts.kid ?? ((opts.key ?? 'a') === 'a' ? 'a1' : 'b1'), typ: 'JWT' }).setIssuedAt(now);
    if (opts.exp !== null) j = j.setExpirationTime(opts.exp ?? now + 300);
    return j.sign(key);
  };
  const id = await v.verify(rule, { jwt_svid: await svid('spiffe://a.com/agents/x/y') }, ctx);
  t.equal(id.externalId, 'spiffe://a.com/agents/x/y', 'JWT-SVID admitted; external id = sub');
  t.equal(id.claims?.svid, 'jwt');
  t.ok(await v.verify(rule, { jwt_svid: await svid('spiffe://b.com/agents/z', { key: 'b' }) }, ctx), 'federated b.com JWT-SVID');

  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://b.com/agents/z', { key: 'a', kid: 'a1' }) }, ctx), 'token_kid_unknown', "a.com's key used for a b.com ID");
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://a.com/agents/x', { key: 'b', kid: 'a1', alg: 'RS256' }) }, ctx), 'token_alg_key_mismatch', 'RS256 header naming the EC key');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://a.com/agents/x', { aud: 'pilot://network/8' }) }, ctx), 'token_audience_mismatch', 'other audience');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://a.com/agents/x', { exp: null }) }, ctx), 'token_missing_exp', 'no exp');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://a.com/agents/x', { exp: now - 120 }) }, ctx), 'token_expired', 'expired');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://c.com/agents/x') }, ctx), 'spiffe_trust_domain_unknown', 'unknown trust domain');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://a.com') }, ctx), 'spiffe_id_invalid', 'trust-domain ID as sub');
  await refused(t, v.verify(rule, { jwt_svid: await svid('not-a-spiffe-id') }, ctx), 'spiffe_id_invalid', 'sub not a SPIFFE ID');
  await refused(t, v.verify(rule, { jwt_svid: await svid('spiffe://b.com/agents/z/deeper', { key: 'b' }) }, ctx), 'spiffe_id_not_allowed', 'outside the allow patterns');
  // x509-svid keys in a bundle are never JWT keys.
  const x509Only = parseIdentityRule({ kind: 'spiffe', trust_domains: { 'a.com': { bundle: await spiffeBundle([rootA]) } }, allow: ['spiffe://a.com/**'], jwt_audience: 'pilot://network/7' }) as SpiffeRule;
  await refused(t, v.verify(x509Only, { jwt_svid: await svid('spiffe://a.com/agents/x') }, ctx), 'token_kid_unknown', 'bundle without jwt-svid keys');
  const noJwt = parseIdentityRule({ kind: 'spiffe', trust_domains: { 'a.com': { bundle: bundleA } }, allow: ['spiffe://a.com/**'] }) as SpiffeRule;
  await refused(t, v.verify(noJwt, { jwt_svid: await svid('spiffe://a.com/agents/x') }, ctx), 'jwt_svid_not_accepted', 'rule without jwt_audience');

  // X.509-SVID against a JWKS-form bundle.
  const leaf: Issued = await issue(rootA, svidOpts('spiffe://a.com/agents/x509'));
  t.ok(await v.verify(rule, { svid_chain: leaf.pem, pop_signature: signPop(leaf, ctx) }, ctx), 'x509-svid authority from a JWKS bundle');
});

t.test('bundle endpoint: a SPIFFE bundle fetched over HTTP, refetched on an unknown kid', async (t) => {
  const clock = new TestClock();
  const srv = await startHttpServer(t);
  const root = await makeRoot({ name: 'CN=remote.org root' });
  const k1 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const k2 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = async (k: typeof k1, kid: string) => ({ ...(await exportJWK(createPublicKey(k.privateKey))), kid, use: 'jwt-svid' });
  srv.routes.set('/bundle', json(await spiffeBundle([root], [await jwk(k1, 'r1')])));
  const rule = parseIdentityRule({ kind: 'spiffe', trust_domains: { 'remote.org': { bundle_url: `${srv.url}/bundle` } }, allow: ['spiffe://remote.org/**'], jwt_audience: 'aud' }) as SpiffeRule;
  const v = new IdentityVerifier({ clock: clock.now, allowHttp: true, allowPrivateUrls: true });
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const leaf = await issue(root, svidOpts('spiffe://remote.org/w'));
  t.ok(await v.verify(rule, { svid_chain: leaf.pem, pop_signature: signPop(leaf, ctx) }, ctx), 'X.509-SVID against the fetched bundle');
  const tok = (k: typeof k1, kid: string) => new SignJWT({ sub: 'spiffe://remote.org/w', aud: 'aud' }).setProtectedHeader({ alg: 'ES256', kid }).setExpirationTime(Math.floor(clock.now() / 1000) + 60).sign(k.privateKey);
  t.ok(await v.verify(rule, { jwt_svid: await tok(k1, 'r1') }, ctx));
  t.equal(srv.hitCount('/bundle'), 1, 'bundle fetched once');
  srv.routes.set('/bundle', json(await spiffeBundle([root], [await jwk(k1, 'r1'), await jwk(k2, 'r2')])));
  clock.advance(11_000);
  t.ok(await v.verify(rule, { jwt_svid: await tok(k2, 'r2') }, ctx), 'new jwt-svid key picked up by one refetch');
  t.equal(srv.hitCount('/bundle'), 2);
});
