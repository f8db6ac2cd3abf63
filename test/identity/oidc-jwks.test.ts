/**
 * OIDC verification against hand-crafted tokens and a local JWKS/discovery server: algorithm confusion,
 * alg none, missing exp, unknown kid (no hammering), JWKS cap, cache TTL, discovery checks, claim rules.
 */
import t from 'tap';
import { generateKeyPairSync, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { SignJWT, exportJWK, type JWTPayload } from 'jose';
import { IdentityVerifier, parseIdentityRule, type OidcRule } from '../../registry/identity/index.js';
import { startHttpServer, json, TestClock, type TestHttpServer } from './fixtures/http.js';
import { refused, joinContext } from './fixtures/assert.js';
import type { Teardown } from './fixtures/oidc.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = generateKeyPairSync('ed25519');

async function pub(k: KeyObject, kid: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return { ...(await exportJWK(createPublicKey(k))), kid, use: 'sig', ...extra };
}

interface Idp {
  srv: TestHttpServer;
  issuer: string;
  setJwks(keys: Array<Record<string, unknown>>): void;
}

async function idp(tt: Teardown, path = ''): Promise<Idp> {
  const srv = await startHttpServer(tt);
  const issuer = `${srv.url}${path}`;
  srv.routes.set(`${path}/.well-known/openid-configuration`, json({ issuer, jwks_uri: `${issuer}/jwks` }));
  const setJwks = (keys: Array<Record<string, unknown>>): void => void srv.routes.set(`${path}/jwks`, json({ keys }));
  setJwks([await pub(rsa.privateKey, 'rsa1'), await pub(ec.privateKey, 'ec1'), await pub(ed.privateKey, 'ed1')]);
  return { srv, issuer, setJwks };
}

function sign(payload: JWTPayload, opts: { alg?: string; kid?: string; key?: KeyObject | Uint8Array; iss?: string; exp?: number | null; now: number }): Promise<string> {
  const alg = opts.alg ?? 'RS256';
  const key = opts.key ?? (alg.startsWith('ES') ? ec.privateKey : alg === 'EdDSA' ? ed.privateKey : rsa.privateKey);
  let j = new SignJWT({ sub: 'agent-7', aud: 'pilot-net', ...payload }).setProtectedHeader({ alg, ...(opts.kid !== undefined ? { kid: opts.kid } : { kid: alg.startsWith('ES') ? 'ec1' : alg === 'EdDSA' ? 'ed1' : 'rsa1' }) }).setIssuedAt(Math.floor(opts.now / 1000));
  if (opts.iss !== undefined) j = j.setIssuer(opts.iss);
  if (opts.exp !== null) j = j.setExpirationTime(opts.exp ?? Math.floor(opts.now / 1000) + 600);
  return j.sign(key);
}

function rule(issuer: string, extra: Partial<OidcRule> = {}): OidcRule {
  return parseIdentityRule({ kind: 'oidc', issuer, audience: 'pilot-net', ...extra }) as OidcRule;
}

function verifier(clock: TestClock, extra = {}): IdentityVerifier {
  return new IdentityVerifier({ clock: clock.now, allowPrivateUrls: true, allowHttp: true, ...extra });
}

t.test('RS256, ES256 and EdDSA tokens from the JWKS are admitted; the cache serves repeats', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  for (const alg of ['RS256', 'ES256', 'EdDSA']) {
    const id = await v.verify(rule(p.issuer), { oidc_token: await sign({ groups: ['a'] }, { alg, iss: p.issuer, now: clock.now() }) }, ctx);
    t.equal(id.externalId, `oidc:${p.issuer}#agent-7`, `${alg}: external id is issuer + subject`);
    t.same(id.groups, ['a']);
    t.equal(id.kind, 'oidc');
    t.ok(id.expiresAt! > clock.now());
  }
  t.equal(p.srv.hitCount('/.well-known/openid-configuration'), 1, 'discovery fetched once');
  t.equal(p.srv.hitCount('/jwks'), 1, 'JWKS fetched once for three verifications');
  clock.advance(5 * 60_000 + 1);
  await v.verify(rule(p.issuer), { oidc_token: await sign({}, { iss: p.issuer, now: clock.now() }) }, ctx);
  t.equal(p.srv.hitCount('/jwks'), 2, 'after the 5 min TTL the JWKS is fetched again');
});

t.test('algorithm confusion, alg none and missing exp are refused before signature checks', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  p.setJwks([
    await pub(rsa.privateKey, 'rsa1'),
    await pub(rsa.privateKey, 'rsa-ps', { alg: 'PS256' }),
    { kty: 'oct', kid: 'oct1', k: Buffer.from('secret-secret-secret-secret-1234').toString('base64url'), use: 'sig' },
    await pub(ec.privateKey, 'ec1'),
  ]);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const now = clock.now();
  const r = rule(p.issuer);

  const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: p.issuer, sub: 'x', aud: 'pilot-net', exp: Math.floor(now / 1000) + 60 })).toString('base64url')}.`;
  await refused(t, v.verify(r, { oidc_token: none }, ctx), 'token_alg_not_allowed', 'alg none');

  const rsaPem = rsa.publicKey.export({ format: 'pem', type: 'spki' }) as string;
  const hs = await sign({}, { alg: 'HS256', kid: 'rsa1', key: new TextEncoder().encode(rsaPem), iss: p.issuer, now });
  await refused(t, v.verify(r, { oidc_token: hs }, ctx), 'token_alg_not_allowed', 'HS256 signed with the RSA public key as HMAC secret');

  const hsOct = await sign({}, { alg: 'HS256', kid: 'oct1', key: Buffer.from('secret-secret-secret-secret-1234'), iss: p.issuer, now });
  await refused(t, v.verify(r, { oidc_token: hsOct }, ctx), 'token_alg_not_allowed', 'HS256 with an oct key in the JWKS');

  // RS256 header naming the oct key: refused as a key/alg mismatch (never HMAC-verified).
  const rsWithOct = await sign({}, { alg: 'RS256', kid: 'oct1', iss: p.issuer, now });
  await refused(t, v.verify(r, { oidc_token: rsWithOct }, ctx), 'token_alg_key_mismatch', 'RS256 header with an oct key');

  const rsWithPsKey = await sign({}, { alg: 'RS256', kid: 'rsa-ps', iss: p.issuer, now });
  await refused(t, v.verify(r, { oidc_token: rsWithPsKey }, ctx), 'token_alg_key_mismatch', 'JWKS alg PS256 disagrees with header RS256');

  const esWithRsa = await sign({}, { alg: 'ES256', kid: 'rsa1', iss: p.issuer, now });
  await refused(t, v.verify(r, { oidc_token: esWithRsa }, ctx), 'token_alg_key_mismatch', 'ES256 header with an RSA key');

  await refused(t, v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, exp: null, now }) }, ctx), 'token_missing_exp', 'token without exp');
  await refused(t, v.verify(rule(p.issuer, { algorithms: ['ES256'] }), { oidc_token: await sign({}, { iss: p.issuer, now }) }, ctx), 'token_alg_not_allowed', 'RS256 outside a rule allowlist of ES256');

  const good = await sign({}, { iss: p.issuer, now });
  const [h, pl] = good.split('.');
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(pl!, 'base64url').toString()), sub: 'admin' })).toString('base64url')}.${good.split('.')[2]}`;
  await refused(t, v.verify(r, { oidc_token: tampered }, ctx), 'token_signature_invalid', 'tampered payload');
  const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await refused(t, v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, key: otherRsa.privateKey, now }) }, ctx), 'token_signature_invalid', 'signed by a key the IdP never published');
});

t.test('time claims: exp, nbf with 60 s skew, max token age', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const now = clock.now();
  const s = Math.floor(now / 1000);
  const r = rule(p.issuer);
  await refused(t, v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, exp: s - 61, now }) }, ctx), 'token_expired', 'expired 61 s ago');
  t.ok(await v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, exp: s - 30, now }) }, ctx), 'expired 30 s ago is inside the skew');
  await refused(t, v.verify(r, { oidc_token: await sign({ nbf: s + 120 }, { iss: p.issuer, now }) }, ctx), 'token_not_yet_valid', 'nbf 2 min ahead');
  t.ok(await v.verify(r, { oidc_token: await sign({ nbf: s + 30 }, { iss: p.issuer, now }) }, ctx), 'nbf 30 s ahead is inside the skew');
  const old = await sign({}, { iss: p.issuer, now: now - 600_000, exp: s + 600 });
  await refused(t, v.verify(rule(p.issuer, { max_token_age_s: 300 }), { oidc_token: old }, ctx), 'token_too_old', 'issued 10 min ago with max age 5 min');
  t.ok(await v.verify(rule(p.issuer), { oidc_token: old }, ctx), 'same token without max age is fine');
});

t.test('issuer and audience', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const now = clock.now();
  await refused(t, v.verify(rule(p.issuer), { oidc_token: await sign({}, { iss: 'https://evil.example', now }) }, ctx), 'token_issuer_mismatch', 'foreign issuer');
  t.equal(p.srv.hitCount('/jwks') + p.srv.hitCount('/.well-known/openid-configuration'), 0, 'a foreign token costs no fetch');
  await refused(t, v.verify(rule(p.issuer), { oidc_token: await sign({ aud: 'other-net' }, { iss: p.issuer, now }) }, ctx), 'token_audience_mismatch', 'other audience');
  t.ok(await v.verify(rule(p.issuer), { oidc_token: await sign({ aud: ['x', 'pilot-net'] }, { iss: p.issuer, now }) }, ctx), 'aud array containing the audience');
  await refused(t, v.verify(rule(p.issuer), { oidc_token: await sign({ aud: ['x', 'y'] }, { iss: p.issuer, now }) }, ctx), 'token_audience_mismatch', 'aud array without it');
});

t.test('unknown kid: one throttled refetch, a flood of random kids does not hammer the IdP', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const r = rule(p.issuer);
  t.ok(await v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, now: clock.now() }) }, ctx));
  t.equal(p.srv.hitCount('/jwks'), 1);
  const tokens = await Promise.all(Array.from({ length: 50 }, () => sign({}, { iss: p.issuer, kid: randomBytes(8).toString('hex'), now: clock.now() })));
  for (const tok of tokens) await refused(t, v.verify(r, { oidc_token: tok }, ctx), 'token_kid_unknown', 'random kid');
  t.equal(p.srv.hitCount('/jwks'), 1, '50 random kids within the cooldown: no refetch');
  clock.advance(11_000);
  await Promise.all(tokens.slice(0, 10).map((tok) => refused(t, v.verify(r, { oidc_token: tok }, ctx), 'token_kid_unknown', 'random kid after cooldown')));
  t.equal(p.srv.hitCount('/jwks'), 2, 'after the cooldown: exactly one refetch for ten concurrent misses');

  // Rotation: the IdP publishes a new key; the first token with it triggers one refetch and is admitted.
  const rsa2 = generateKeyPairSync('rsa', { modulusLength: 2048 });
  p.setJwks([await pub(rsa2.privateKey, 'rsa2'), await pub(rsa.privateKey, 'rsa1')]);
  clock.advance(11_000);
  t.ok(await v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, kid: 'rsa2', key: rsa2.privateKey, now: clock.now() }) }, ctx), 'rotated key admitted after one refetch');
  t.equal(p.srv.hitCount('/jwks'), 3);
  t.ok(await v.verify(r, { oidc_token: await sign({}, { iss: p.issuer, kid: 'rsa2', key: rsa2.privateKey, now: clock.now() }) }, ctx));
  t.equal(p.srv.hitCount('/jwks'), 3, 'then served from cache');
});

t.test('JWKS and discovery fetch limits', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const big = [await pub(rsa.privateKey, 'rsa1')];
  for (let i = 0; i < 200; i++) big.push({ ...(await pub(rsa.privateKey, `pad-${i}`)) });
  t.ok(JSON.stringify({ keys: big }).length > 64 * 1024, 'padded JWKS is over 64 KiB');
  p.setJwks(big);
  const tok = await sign({}, { iss: p.issuer, now: clock.now() });
  await refused(t, v.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'fetch_too_large', 'JWKS over the 64 KiB cap (content-length)');
  // Same without a content-length header (chunked): the cap holds while streaming.
  p.srv.routes.set('/jwks', (_req, _b, res) => {
    res.setHeader('content-type', 'application/json');
    const body = JSON.stringify({ keys: big });
    for (let i = 0; i < body.length; i += 8192) res.write(body.slice(i, i + 8192));
    res.end();
  });
  const v2 = verifier(clock);
  t.teardown(() => v2.close());
  await refused(t, v2.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'fetch_too_large', 'chunked JWKS over the cap');

  p.srv.routes.set('/jwks', json({ error: 'down' }, 500));
  const v3 = verifier(clock);
  t.teardown(() => v3.close());
  await refused(t, v3.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'fetch_http_status', 'JWKS answers 500');
  const before = p.srv.hitCount('/jwks');
  await refused(t, v3.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'fetch_http_status', 'failure remembered');
  t.equal(p.srv.hitCount('/jwks'), before, 'a failed fetch is not retried within the cooldown');

  p.srv.routes.set('/jwks', (_req, _b, res) => res.end('<html>not json'));
  const v4 = verifier(clock);
  t.teardown(() => v4.close());
  await refused(t, v4.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'fetch_invalid_json', 'JWKS is not JSON');

  p.srv.routes.set('/.well-known/openid-configuration', json({ issuer: 'https://evil.example', jwks_uri: `${p.issuer}/jwks` }));
  const v5 = verifier(clock);
  t.teardown(() => v5.close());
  await refused(t, v5.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'discovery_issuer_mismatch', 'discovery names another issuer');

  p.srv.routes.set('/keys-here', json({ keys: [await pub(rsa.privateKey, 'rsa1')] }));
  t.ok(await v5.verify(rule(p.issuer, { jwks_uri: `${p.issuer}/keys-here` }), { oidc_token: tok }, ctx), 'configured jwks_uri skips discovery');

  p.srv.routes.set('/slow', () => undefined);
  const v6 = verifier(clock, { fetchTimeoutMs: 300 });
  t.teardown(() => v6.close());
  await refused(t, v6.verify(rule(p.issuer, { jwks_uri: `${p.issuer}/slow` }), { oidc_token: tok }, ctx), 'fetch_timeout', 'JWKS endpoint never answers');
});

t.test('stale JWKS is served while the IdP is down, and many issuers are cached side by side', async (t) => {
  const clock = new TestClock();
  const a = await idp(t, '/tenant-a');
  const b = await idp(t, '/tenant-b');
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  t.ok(await v.verify(rule(a.issuer), { oidc_token: await sign({}, { iss: a.issuer, now: clock.now() }) }, ctx));
  t.ok(await v.verify(rule(b.issuer), { oidc_token: await sign({}, { iss: b.issuer, now: clock.now() }) }, ctx));
  t.equal(v.stats().cachedDocuments, 4, 'two discovery documents + two JWKS cached at once');
  await refused(t, v.verify(rule(a.issuer), { oidc_token: await sign({}, { iss: b.issuer, now: clock.now() }) }, ctx), 'token_issuer_mismatch', "tenant b's token on tenant a's rule");
  a.srv.routes.set('/tenant-a/jwks', json({}, 503));
  clock.advance(6 * 60_000);
  t.ok(await v.verify(rule(a.issuer), { oidc_token: await sign({}, { iss: a.issuer, now: clock.now() }) }, ctx), 'IdP down after TTL: the stale key set still verifies');
});

t.test('claim rules: tenant, email domain, groups, roles, exact claims', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const now = clock.now();
  const tok = (claims: JWTPayload): Promise<string> => sign(claims, { iss: p.issuer, now });
  const tenant = rule(p.issuer, { tenant: 'T1' });
  t.ok(await v.verify(tenant, { oidc_token: await tok({ tid: 'T1' }) }, ctx));
  await refused(t, v.verify(tenant, { oidc_token: await tok({ tid: 'T2' }) }, ctx), 'tenant_mismatch', 'other tenant');
  await refused(t, v.verify(tenant, { oidc_token: await tok({}) }, ctx), 'tenant_mismatch', 'no tid');

  const dom = rule(p.issuer, { email_domains: ['Example.com'] });
  t.ok(await v.verify(dom, { oidc_token: await tok({ hd: 'example.com' }) }, ctx), 'hd');
  t.ok(await v.verify(dom, { oidc_token: await tok({ email: 'a@EXAMPLE.com', email_verified: true }) }, ctx), 'verified email domain');
  await refused(t, v.verify(dom, { oidc_token: await tok({ email: 'a@example.com', email_verified: false }) }, ctx), 'email_domain_mismatch', 'unverified email');
  await refused(t, v.verify(dom, { oidc_token: await tok({ email: 'a@example.com.evil.io' }) }, ctx), 'email_domain_mismatch', 'look-alike domain');

  const groups = rule(p.issuer, { groups: { any_of: ['agents', 'ops'], all_of: ['prod'] } });
  const id = await v.verify(groups, { oidc_token: await tok({ groups: ['prod', 'ops'] }) }, ctx);
  t.same(id.groups, ['prod', 'ops']);
  await refused(t, v.verify(groups, { oidc_token: await tok({ groups: ['ops'] }) }, ctx), 'group_missing', 'lacks all_of prod');
  await refused(t, v.verify(groups, { oidc_token: await tok({ groups: ['prod'] }) }, ctx), 'group_missing', 'lacks any_of');
  await refused(t, v.verify(groups, { oidc_token: await tok({}) }, ctx), 'group_missing', 'no groups claim');

  const ns = rule(p.issuer, { groups: { any_of: ['agents'] }, groups_claim: 'https://pilot.example/groups', roles: { all_of: ['Join'] }, roles_claim: 'realm_access.roles' });
  t.ok(await v.verify(ns, { oidc_token: await tok({ 'https://pilot.example/groups': ['agents'], realm_access: { roles: ['Join'] } }) }, ctx), 'namespaced groups claim + nested roles');
  await refused(t, v.verify(ns, { oidc_token: await tok({ 'https://pilot.example/groups': ['agents'], realm_access: { roles: [] } }) }, ctx), 'role_missing', 'nested roles missing');

  const exact = rule(p.issuer, { claims: { 'kubernetes.io.namespace': ['agents', 'batch'], email_verified: true } });
  t.ok(await v.verify(exact, { oidc_token: await tok({ 'kubernetes.io': { namespace: 'batch' }, email_verified: true }) }, ctx), 'dotted path into a dotted key');
  await refused(t, v.verify(exact, { oidc_token: await tok({ 'kubernetes.io': { namespace: 'default' }, email_verified: true }) }, ctx), 'claim_mismatch', 'other namespace');
  await refused(t, v.verify(exact, { oidc_token: await tok({ 'kubernetes.io': { namespace: 'batch' }, email_verified: 'true' }) }, ctx), 'claim_mismatch', 'string "true" is not boolean true');
});

t.test('URL policy: private and plain-http IdPs are refused by default, before any request', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const ctx = joinContext(clock.now());
  const tok = await sign({}, { iss: p.issuer, now: clock.now() });
  const strict = new IdentityVerifier({ clock: clock.now, allowHttp: true });
  t.teardown(() => strict.close());
  await refused(t, strict.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'url_not_allowed', 'loopback IdP without allowPrivateUrls');
  const noHttp = new IdentityVerifier({ clock: clock.now, allowPrivateUrls: true });
  t.teardown(() => noHttp.close());
  await refused(t, noHttp.verify(rule(p.issuer), { oidc_token: tok }, ctx), 'url_not_allowed', 'http:// without allowHttp');
  t.equal(p.srv.hits.size, 0, 'no request reached the server');
});

t.test('garbage tokens are refused with typed errors only', async (t) => {
  const clock = new TestClock();
  const p = await idp(t);
  const v = verifier(clock);
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const r = rule(p.issuer);
  const samples: unknown[] = ['', 'a', 'a.b', 'a.b.c', '..', '...', 'x'.repeat(20_000), `${'eyJhbGciOiJSUzI1NiJ9'}.${'e30'}.`, 'eyJ9.e30.e30', 42, null, {}, ['a'], '\u0000.\u0000.\u0000'];
  for (let i = 0; i < 200; i++) {
    const parts = Array.from({ length: 1 + (i % 4) }, () => randomBytes(1 + (i % 40)).toString(i % 2 ? 'base64url' : 'latin1'));
    samples.push(parts.join('.'));
  }
  let typed = 0;
  for (const s of samples) {
    try {
      await v.verify(r, { oidc_token: s as string }, ctx);
      t.fail('garbage admitted');
    } catch (err) {
      if ((err as { code?: string }).code && (err as Error).name === 'IdentityVerificationError') typed++;
      else t.fail(`untyped error ${String(err)}`);
    }
  }
  t.equal(typed, samples.length, 'every garbage token refused with IdentityVerificationError');
  t.equal(v.stats().refused.internal_error ?? 0, 0, 'no internal errors');
});
