/**
 * Rule and proof parsers (strict, fuzz-safe), SPIFFE ID / pattern semantics, the PoP challenge,
 * group-to-network mapping and the IdP presets.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import {
  IdentityVerifier, IdentityRuleError, IdentityVerificationError, parseIdentityRule, parseJoinProof, popChallenge, networksForGroups, presets,
  parseSpiffeId, parseSpiffePattern, matchSpiffePattern, type OidcRule,
} from '../../registry/identity/index.js';
import { makeRoot, makeCrl } from './fixtures/pki.js';
import { refused, joinContext } from './fixtures/assert.js';

t.test('valid rules of every kind parse', async (t) => {
  const root = await makeRoot({ name: 'CN=r' });
  const crl = await makeCrl(root, []);
  const rules: unknown[] = [
    { kind: 'oidc', issuer: 'https://login.example.com/t/v2.0', audience: 'api://pilot', tenant: 't', email_domains: ['Example.com'], groups: { any_of: ['a'] }, roles: { all_of: ['r'] }, claims: { x: [1, 'y', true] }, algorithms: ['RS256', 'ES256'], max_token_age_s: 3600, groups_claim: 'grp', roles_claim: 'realm_access.roles', jwks_uri: 'https://login.example.com/keys' },
    { kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem }, 'b.org': { bundle_url: 'https://b.org/bundle' } }, allow: ['spiffe://a.com/agents/*', 'spiffe://b.org/**', 'spiffe://a.com/x/*/y'], jwt_audience: 'pilot' },
    { kind: 'ca', roots: root.pem, intermediates: root.pem, crls: [crl], require_crl: true, eku: ['clientAuth', '1.3.6.1.4.1.311.20.2.2'], san: { dns_suffixes: ['.corp.example.com'], email_domains: ['corp.example.com'], uri_prefixes: ['urn:x:'] }, subject: { O: 'Example', OU: 'Agents' }, external_id: 'issuer_serial' },
    { kind: 'ldap', url: 'ldaps://ldap.example.org', tls_ca: root.pem, user_dn_template: 'uid={user},ou=people,dc=example,dc=org', groups: { mode: 'member', base: 'ou=groups,dc=example,dc=org', required: ['agents'] }, timeout_ms: 2000 },
    { kind: 'ldap', url: 'ldap://ldap.example.org:389', start_tls: true, search: { base: 'dc=example,dc=org', filter: '(uid={user})', bind_dn: 'cn=svc,dc=example,dc=org', bind_password: 'p', scope: 'one' }, groups: { mode: 'memberOf', required: [] } },
    { kind: 'webhook', url: 'https://verify.example.com/pilot', secret: 's', timeout_ms: 2000 },
  ];
  for (const r of rules) {
    const parsed = parseIdentityRule(r);
    t.equal(parsed.kind, (r as { kind: string }).kind, `${parsed.kind} parses`);
    t.same(parseIdentityRule(JSON.parse(JSON.stringify(parsed))), parsed, `${parsed.kind} round-trips through JSON`);
  }
  t.same((parseIdentityRule(rules[0]) as OidcRule).email_domains, ['example.com'], 'domains lower-cased');
});

t.test('bad rules are refused with IdentityRuleError naming the problem', async (t) => {
  const root = await makeRoot({ name: 'CN=r' });
  const bad: Array<[unknown, RegExp]> = [
    [null, /JSON object/],
    [[], /JSON object/],
    [{ kind: 'saml' }, /kind must be/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', audiance: 'typo' }, /unknown field "audiance"/],
    [{ kind: 'oidc', issuer: 'ftp://x', audience: 'a' }, /https/],
    [{ kind: 'oidc', issuer: 'https://user:pw@x', audience: 'a' }, /credentials/],
    [{ kind: 'oidc', issuer: 'https://x', audience: '' }, /audience/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', algorithms: ['HS256'] }, /never HS\* or none/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', algorithms: ['none'] }, /not allowed/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', groups: {} }, /any_of or all_of/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', claims: { x: { nested: 1 } } }, /string, number or boolean/],
    [{ kind: 'oidc', issuer: 'https://x', audience: 'a', max_token_age_s: -1 }, /integer/],
    [{ kind: 'spiffe', trust_domains: {}, allow: ['spiffe://a.com/x'] }, /1\.\.64/],
    [{ kind: 'spiffe', trust_domains: { 'A.com': { bundle: root.pem } }, allow: ['spiffe://a.com/x'] }, /not a valid trust domain/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': {} }, allow: ['spiffe://a.com/x'] }, /bundle or bundle_url/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: 'not pem' } }, allow: ['spiffe://a.com/x'] }, /no certificate/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem } }, allow: ['spiffe://b.com/x'] }, /no bundle/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem } }, allow: ['spiffe://a.com/agent-*'] }, /whole segment/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem } }, allow: ['spiffe://a.com/**/x'] }, /last segment/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem } }, allow: [] }, /allow/],
    [{ kind: 'spiffe', trust_domains: { 'a.com': { bundle: { keys: 'x' } } }, allow: ['spiffe://a.com/x'] }, /keys/],
    [{ kind: 'ca', roots: '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----' }, /base64/],
    [{ kind: 'ca', roots: root.pem, crls: ['nope'] }, /no CRL/],
    [{ kind: 'ca', roots: root.pem, eku: ['anyPurpose!'] }, /EKU/],
    [{ kind: 'ca', roots: root.pem, subject: { XX: 'y' } }, /unsupported attribute/],
    [{ kind: 'ca', roots: root.pem, external_id: 'serial' }, /external_id/],
    [{ kind: 'ldap', url: 'ldap://x', user_dn_template: 'uid={user},dc=x' }, /in clear/],
    [{ kind: 'ldap', url: 'ldaps://x', start_tls: true, user_dn_template: 'uid={user},dc=x' }, /start_tls/],
    [{ kind: 'ldap', url: 'http://x', user_dn_template: 'uid={user}' }, /ldap:\/\//],
    [{ kind: 'ldap', url: 'ldaps://x/dc=x??sub', user_dn_template: 'uid={user}' }, /must not carry/],
    [{ kind: 'ldap', url: 'ldaps://x', user_dn_template: 'uid=alice' }, /exactly once/],
    [{ kind: 'ldap', url: 'ldaps://x', user_dn_template: 'uid={user},cn={user}' }, /exactly once/],
    [{ kind: 'ldap', url: 'ldaps://x' }, /exactly one of/],
    [{ kind: 'ldap', url: 'ldaps://x', user_dn_template: 'uid={user}', search: { base: 'b', filter: '(uid={user})', bind_dn: 'd', bind_password: 'p' } }, /exactly one of/],
    [{ kind: 'ldap', url: 'ldaps://x', search: { base: 'b', filter: 'uid={user}', bind_dn: 'd', bind_password: 'p' } }, /parenthesised/],
    [{ kind: 'ldap', url: 'ldaps://x', user_dn_template: 'uid={user}', groups: { mode: 'member', required: [] } }, /groups.base/],
    [{ kind: 'webhook', url: 'https://x', timeout_ms: 60_000 }, /timeout_ms/],
    [{ kind: 'webhook', url: 'https://x/#frag' }, /fragment/],
    [{ kind: 'webhook', url: 'https://x', secret: 'a\u0000b' }, /control/],
  ];
  for (const [rule, why] of bad) {
    try {
      parseIdentityRule(rule);
      t.fail(`accepted ${JSON.stringify(rule).slice(0, 100)}`);
    } catch (err) {
      t.ok(err instanceof IdentityRuleError && err.code === 'bad_identity_rule', 'IdentityRuleError');
      t.match((err as Error).message, why, (err as Error).message);
    }
  }
});

function randomJson(depth: number): unknown {
  const r = Math.random();
  if (depth > 3 || r < 0.2) {
    const leaves = [null, true, false, 0, -1, 1.5, 1e308, NaN, '', 'x', 'https://a', 'spiffe://a.com/x', '{user}', 'ldap://x', 'oidc', 'spiffe', 'ca', 'ldap', 'webhook', randomBytes(8).toString('latin1'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'];
    return leaves[Math.floor(Math.random() * leaves.length)];
  }
  if (r < 0.4) return Array.from({ length: Math.floor(Math.random() * 4) }, () => randomJson(depth + 1));
  const keys = ['kind', 'issuer', 'audience', 'jwks_uri', 'algorithms', 'trust_domains', 'allow', 'bundle', 'roots', 'crls', 'url', 'search', 'groups', 'required', 'mode', 'user_dn_template', 'claims', 'any_of', 'a.com', 'san', 'subject', '__proto__', 'constructor'];
  const o: Record<string, unknown> = {};
  for (let i = 0; i < 1 + Math.floor(Math.random() * 5); i++) o[keys[Math.floor(Math.random() * keys.length)]!] = randomJson(depth + 1);
  return o;
}

t.test('fuzz: parseIdentityRule and parseJoinProof throw only their typed errors', async (t) => {
  let ruleErrors = 0;
  let proofErrors = 0;
  const kinds = ['oidc', 'spiffe', 'ca', 'ldap', 'webhook'];
  for (let i = 0; i < 3000; i++) {
    const v = randomJson(0);
    if (i % 2 === 0 && typeof v === 'object' && v !== null && !Array.isArray(v)) (v as Record<string, unknown>).kind = kinds[i % 5];
    try {
      parseIdentityRule(v);
    } catch (err) {
      if (err instanceof IdentityRuleError) ruleErrors++;
      else t.fail(`parseIdentityRule threw ${String(err)} for ${JSON.stringify(v)}`);
    }
    try {
      parseJoinProof(v);
    } catch (err) {
      if (err instanceof IdentityVerificationError && err.code === 'bad_proof') proofErrors++;
      else t.fail(`parseJoinProof threw ${String(err)}`);
    }
  }
  t.ok(ruleErrors > 2500, `random rules refused with IdentityRuleError (${ruleErrors})`);
  t.ok(proofErrors > 0, `bad proofs refused with bad_proof (${proofErrors})`);
  t.same(parseJoinProof({ oidc_token: 'a', extra: 1, ldap_password: null }), { oidc_token: 'a' }, 'unknown fields ignored, null = absent');
  t.throws(() => parseJoinProof({ oidc_token: 5 }), { code: 'bad_proof' });
  t.throws(() => parseJoinProof({ svid_chain: 'x'.repeat(70_000) }), { code: 'bad_proof' });
});

t.test('SPIFFE IDs and patterns', async (t) => {
  for (const id of ['spiffe://a.com', 'spiffe://a.com/x', 'spiffe://a-b_c.d0/x/Y.z-_/0']) t.equal(typeof parseSpiffeId(id), 'object', `${id} valid`);
  for (const id of ['spiffe://A.com/x', 'SPIFFE://a.com/x', 'spiffe://a.com/', 'spiffe://a.com//x', 'spiffe://a.com/./x', 'spiffe://a.com/x/..', 'spiffe://a.com:443/x', 'spiffe://u@a.com/x', 'spiffe://a.com/x?q', 'spiffe://a.com/x#f', 'spiffe://a.com/x%20y', 'spiffe:///x', 'https://a.com/x', `spiffe://a.com/${'x'.repeat(2100)}`, 42]) {
    t.equal(typeof parseSpiffeId(id), 'string', `${String(id).slice(0, 40)} invalid`);
  }
  const m = (p: string, id: string): boolean => {
    const pat = parseSpiffePattern(p);
    const sid = parseSpiffeId(id);
    if (typeof pat === 'string' || typeof sid === 'string') throw new Error('bad fixture');
    return matchSpiffePattern(pat, sid);
  };
  const table: Array<[string, string, boolean]> = [
    ['spiffe://a.com/agents/x', 'spiffe://a.com/agents/x', true],
    ['spiffe://a.com/agents/x', 'spiffe://a.com/agents/xy', false],
    ['spiffe://a.com/agents/*', 'spiffe://a.com/agents/x', true],
    ['spiffe://a.com/agents/*', 'spiffe://a.com/agents', false],
    ['spiffe://a.com/agents/*', 'spiffe://a.com/agents/x/y', false],
    ['spiffe://a.com/agents/*', 'spiffe://a.com/agentsx/y', false],
    ['spiffe://a.com/agents/*', 'spiffe://b.com/agents/x', false],
    ['spiffe://a.com/*/prod', 'spiffe://a.com/ns1/prod', true],
    ['spiffe://a.com/*/prod', 'spiffe://a.com/ns1/dev', false],
    ['spiffe://a.com/agents/**', 'spiffe://a.com/agents/x', true],
    ['spiffe://a.com/agents/**', 'spiffe://a.com/agents/x/y/z', true],
    ['spiffe://a.com/agents/**', 'spiffe://a.com/agents', false],
    ['spiffe://a.com/agents/**', 'spiffe://a.com/agentsx/y', false],
    ['spiffe://a.com/**', 'spiffe://a.com/anything/at/all', true],
    ['spiffe://a.com/**', 'spiffe://a.com', false],
    ['spiffe://a.com', 'spiffe://a.com', true],
    ['spiffe://a.com', 'spiffe://a.com/x', false],
  ];
  for (const [p, id, want] of table) t.equal(m(p, id), want, `${p} ${want ? 'matches' : 'does not match'} ${id}`);
});

t.test('PoP challenge format', async (t) => {
  const key = Buffer.alloc(32, 7);
  t.equal(popChallenge({ networkId: 12, nodeId: 3456, nodePublicKey: key, ts: 1700000000123 }), `pilot-join-pop:v1\nnetwork:12\nnode:3456\nkey:${key.toString('base64')}\nts:1700000000123`);
});

t.test('networksForGroups', async (t) => {
  const map = { agents: [7, 9], ops: [9, 11], '*': [1] };
  t.same(networksForGroups(map, ['ops', 'agents']), [7, 9, 11, 1], 'union in mapping order, no duplicates, "*" for everyone');
  t.same(networksForGroups(map, []), [1]);
  t.same(networksForGroups({ 'CN=Agents,DC=x': ['prod'] }, ['cn=agents,dc=x']), [], 'exact by default');
  t.same(networksForGroups({ 'CN=Agents,DC=x': ['prod'] }, ['cn=agents,dc=x'], { caseInsensitive: true }), ['prod']);
});

t.test('presets are valid OIDC rules', async (t) => {
  const all = [
    presets.entraId('72f988bf-86f1-41af-91ab-2d7cd011db47', 'api://pilot'),
    presets.google('Example.com', 'pilot'),
    presets.okta('dev-1.okta.com', 'api://pilot'),
    presets.okta('https://dev-1.okta.com/', 'api://pilot', ''),
    presets.auth0('tenant.eu.auth0.com', 'https://pilot/api'),
    presets.kubernetes('https://oidc.eks.eu-west-1.amazonaws.com/id/ABC', 'pilot', { namespaces: ['agents'] }),
    presets.gcpWorkloadIdentity('https://pilot.example/aud', ['sa@p.iam.gserviceaccount.com']),
    presets.azureManagedIdentity('t-1', 'api://pilot', ['oid-1']),
    presets.githubActions('pilot', ['acme/agents']),
  ];
  for (const r of all) t.same(parseIdentityRule(r), r, `${r.issuer} parses unchanged`);
  t.equal(all[0]!.issuer, 'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0');
  t.equal(all[0]!.tenant, '72f988bf-86f1-41af-91ab-2d7cd011db47');
  t.equal(all[2]!.issuer, 'https://dev-1.okta.com/oauth2/default');
  t.equal(all[3]!.issuer, 'https://dev-1.okta.com');
  t.equal(all[4]!.issuer, 'https://tenant.eu.auth0.com/');
  t.same(all[1]!.email_domains, ['example.com']);
});

t.test('verifier lifecycle and misuse', async (t) => {
  const v = new IdentityVerifier();
  const ctx = joinContext(Date.now());
  await refused(t, v.verify({ kind: 'nope' } as never, {}, ctx), 'internal_error', 'rule not from parseIdentityRule');
  await refused(t, v.verify(presets.google('x.com', 'a'), {}, ctx), 'proof_missing', 'no token');
  await refused(t, v.verify(presets.google('x.com', 'a'), { oidc_token: 'a.b.c' }, { ...ctx, nodePublicKey: Buffer.alloc(3) }), 'bad_proof', 'bad node key');
  await refused(t, v.verify(presets.google('x.com', 'a'), 'garbage' as never, ctx), 'bad_proof', 'proof not an object');
  t.equal(v.stats().refused.proof_missing, 1);
  await v.close();
  await v.close();
  await refused(t, v.verify(presets.google('x.com', 'a'), { oidc_token: 'a.b.c' }, ctx), 'verifier_closed', 'after close');
});
