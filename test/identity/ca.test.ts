/**
 * Enterprise-PKI join rule with a real root → intermediate → leaf hierarchy and real CRLs.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import * as px from '@peculiar/x509';
import { IdentityVerifier, IdentityVerificationError, parseIdentityRule, type CaRule, type SpiffeRule } from '../../registry/identity/index.js';
import { makeRoot, issue, selfSigned, chainPem, signPop, makeCrl, type CertOptions } from './fixtures/pki.js';
import { TestClock } from './fixtures/http.js';
import { refused, joinContext } from './fixtures/assert.js';

const DAY = 86_400_000;
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

t.test('enterprise CA: admitted, constrained, expired, revoked, self-signed', async (t) => {
  const clock = new TestClock();
  const root = await makeRoot({ name: 'CN=Example Root CA,O=Example Corp', alg: 'rsa' });
  const inter = await issue(root, { name: 'CN=Example Agents CA,O=Example Corp', ca: true, pathLen: 0, alg: 'p256' });
  const leafOpts = (over: Partial<CertOptions> = {}): CertOptions => ({
    name: 'CN=agent-1,OU=Agents,O=Example Corp',
    eku: [CLIENT_AUTH],
    san: [{ type: 'dns', value: 'agent-1.agents.corp.example.com' }, { type: 'email', value: 'agent-1@corp.example.com' }],
    ...over,
  });
  const leaf = await issue(inter, leafOpts());
  const baseRule = {
    kind: 'ca',
    roots: root.pem,
    eku: ['clientAuth'],
    san: { dns_suffixes: ['corp.example.com'], email_domains: ['corp.example.com'] },
    subject: { O: 'Example Corp', OU: 'Agents' },
  };
  const rule = parseIdentityRule(baseRule) as CaRule;
  const v = new IdentityVerifier({ clock: clock.now });
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const proof = (l = leaf, chain = chainPem(l, inter)) => ({ cert_chain: chain, pop_signature: signPop(l, ctx) });

  const id = await v.verify(rule, proof(), ctx);
  t.equal(id.externalId, `x509:${leaf.cert.subject}`, 'external id = x509:<subject DN>');
  t.equal(id.externalId, 'x509:CN=agent-1, OU=Agents, O=Example Corp');
  t.equal(id.issuer, inter.cert.subject);
  t.same(id.groups, ['Agents'], 'groups = subject OUs');
  t.equal(id.expiresAt, leaf.cert.notAfter.getTime());
  const bySerial = parseIdentityRule({ ...baseRule, external_id: 'issuer_serial' }) as CaRule;
  t.equal((await v.verify(bySerial, proof(), ctx)).externalId, `x509:${inter.cert.subject}/${leaf.serial.toLowerCase()}`, 'issuer_serial form');
  const withInter = parseIdentityRule({ ...baseRule, intermediates: inter.pem }) as CaRule;
  t.ok(await v.verify(withInter, proof(leaf, leaf.pem), ctx), 'intermediate supplied by the rule, leaf alone presented');
  await refused(t, v.verify(rule, proof(leaf, leaf.pem), ctx), 'chain_untrusted', 'leaf alone without the intermediate');

  // Templates: EKU, SAN, subject.
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ eku: [SERVER_AUTH] }))), ctx), 'eku_missing', 'serverAuth only');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ eku: null }))), ctx), 'eku_missing', 'no EKU extension');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ san: [{ type: 'dns', value: 'agent.evilcorp.example.com' }, { type: 'email', value: 'a@corp.example.com' }] }))), ctx), 'san_mismatch', 'look-alike DNS suffix');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ san: [{ type: 'dns', value: 'a.corp.example.com' }, { type: 'dns', value: 'evil.io' }, { type: 'email', value: 'a@corp.example.com' }] }))), ctx), 'san_mismatch', 'one DNS SAN outside the suffix');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ san: [{ type: 'dns', value: 'a.corp.example.com' }, { type: 'email', value: 'a@gmail.com' }] }))), ctx), 'san_mismatch', 'email in another domain');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ san: [{ type: 'dns', value: 'a.corp.example.com' }] }))), ctx), 'san_mismatch', 'no email SAN');
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ name: 'CN=agent-1,OU=Interns,O=Example Corp' }))), ctx), 'subject_mismatch', 'other OU');
  const uriRule = parseIdentityRule({ kind: 'ca', roots: root.pem, san: { uri_prefixes: ['urn:example:agents:'] } }) as CaRule;
  t.ok(await v.verify(uriRule, proof(await issue(inter, leafOpts({ san: [{ type: 'url', value: 'urn:example:agents:42' }] }))), ctx), 'URI prefix matches');
  await refused(t, v.verify(uriRule, proof(), ctx), 'san_mismatch', 'no URI SAN');

  // Validity.
  await refused(t, v.verify(rule, proof(await issue(inter, leafOpts({ notBefore: new Date(clock.now() - 3 * DAY), notAfter: new Date(clock.now() - DAY) }))), ctx), 'cert_expired', 'expired leaf');
  const oldInter = await issue(root, { name: 'CN=Old Agents CA,O=Example Corp', ca: true, notBefore: new Date(clock.now() - 3 * DAY), notAfter: new Date(clock.now() - DAY) });
  const underOld = await issue(oldInter, leafOpts());
  await refused(t, v.verify(rule, { cert_chain: chainPem(underOld, oldInter), pop_signature: signPop(underOld, ctx) }, ctx), 'cert_expired', 'expired intermediate');

  // Self-signed, tampered, unsupported critical extension, wrong key.
  const self = await selfSigned(leafOpts());
  await refused(t, v.verify(rule, { cert_chain: self.pem, pop_signature: signPop(self, ctx) }, ctx), 'cert_self_signed', 'self-signed certificate');
  const der = Buffer.from(leaf.cert.rawData);
  der[der.length - 5] ^= 0xff;
  const tampered = `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----`;
  await refused(t, v.verify(rule, { cert_chain: `${tampered}\n${inter.pem}`, pop_signature: signPop(leaf, ctx) }, ctx), 'cert_signature_invalid', 'tampered signature');
  const crit = await issue(inter, leafOpts());
  const critLeaf = await px.X509CertificateGenerator.create({
    serialNumber: '0badc0de',
    subject: 'CN=agent-1,OU=Agents,O=Example Corp',
    issuer: inter.cert.subject,
    notBefore: new Date(clock.now() - DAY),
    notAfter: new Date(clock.now() + DAY),
    publicKey: crit.keys.publicKey as never,
    signingKey: inter.keys.privateKey as never,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
    extensions: [
      new px.KeyUsagesExtension(px.KeyUsageFlags.digitalSignature, true),
      new px.ExtendedKeyUsageExtension([CLIENT_AUTH]),
      new px.SubjectAlternativeNameExtension([{ type: 'dns', value: 'a.corp.example.com' }, { type: 'email', value: 'a@corp.example.com' }]),
      new px.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00])),
    ],
  });
  await refused(t, v.verify(rule, { cert_chain: `${critLeaf.toString('pem')}\n${inter.pem}`, pop_signature: signPop(crit, ctx) }, ctx), 'critical_extension_unsupported', 'unknown critical extension');
  const other = await issue(inter, leafOpts());
  await refused(t, v.verify(rule, { cert_chain: chainPem(leaf, inter), pop_signature: signPop(other, ctx) }, ctx), 'pop_invalid', 'PoP by another key');
});

t.test('CRLs: signature by the issuing CA, validity window, serial lookup', async (t) => {
  const clock = new TestClock();
  const root = await makeRoot({ name: 'CN=Root,O=Example Corp' });
  const inter = await issue(root, { name: 'CN=Issuing CA,O=Example Corp', ca: true });
  const leaf = await issue(inter, { name: 'CN=agent-2,O=Example Corp', eku: [CLIENT_AUTH] });
  const sibling = await issue(inter, { name: 'CN=agent-3,O=Example Corp', eku: [CLIENT_AUTH] });
  const v = new IdentityVerifier({ clock: clock.now });
  t.teardown(() => v.close());
  const ctx = joinContext(clock.now());
  const proof = { cert_chain: chainPem(leaf, inter), pop_signature: signPop(leaf, ctx) };
  const withCrls = (crls: string[], extra: Record<string, unknown> = {}) => parseIdentityRule({ kind: 'ca', roots: root.pem, crls, eku: ['clientAuth'], ...extra }) as CaRule;

  t.ok(await v.verify(withCrls([await makeCrl(inter, [sibling.serial])]), proof, ctx), 'CRL revoking another serial: admitted');
  await refused(t, v.verify(withCrls([await makeCrl(inter, [sibling.serial, leaf.serial])]), proof, ctx), 'cert_revoked', 'leaf serial on the issuing CA CRL');
  await refused(t, v.verify(withCrls([await makeCrl(root, [inter.serial])]), proof, ctx), 'cert_revoked', 'intermediate revoked by the root');
  const imposter = await makeRoot({ name: 'CN=Issuing CA,O=Example Corp' });
  await refused(t, v.verify(withCrls([await makeCrl(inter, [], { signWith: imposter })]), proof, ctx), 'crl_invalid', 'CRL with the CA name but signed by another key');
  await refused(t, v.verify(withCrls([await makeCrl(inter, [], { thisUpdate: new Date(clock.now() - 10 * DAY), nextUpdate: new Date(clock.now() - DAY) })]), proof, ctx), 'crl_stale', 'CRL past nextUpdate');
  await refused(t, v.verify(withCrls([await makeCrl(inter, [], { thisUpdate: new Date(clock.now() + DAY), nextUpdate: new Date(clock.now() + 2 * DAY) })]), proof, ctx), 'crl_invalid', 'CRL from the future');
  await refused(t, v.verify(withCrls([], { require_crl: true }), proof, ctx), 'crl_missing', 'require_crl with no CRL');
  await refused(t, v.verify(withCrls([await makeCrl(inter, [])], { require_crl: true }), proof, ctx), 'crl_missing', 'require_crl: the root has no CRL for the intermediate');
  t.ok(await v.verify(withCrls([await makeCrl(inter, []), await makeCrl(root, [])], { require_crl: true }), proof, ctx), 'require_crl with CRLs for every issuer: admitted');
});

t.test('fuzz: garbage, truncated and bit-flipped chains are refused with typed errors only', async (t) => {
  const root = await makeRoot({ name: 'CN=Fuzz Root' });
  const leaf = await issue(root, { name: 'CN=fuzz', eku: [CLIENT_AUTH] });
  const rule = parseIdentityRule({ kind: 'ca', roots: root.pem }) as CaRule;
  const spiffe = parseIdentityRule({ kind: 'spiffe', trust_domains: { 'a.com': { bundle: root.pem } }, allow: ['spiffe://a.com/**'] }) as SpiffeRule;
  const v = new IdentityVerifier();
  t.teardown(() => v.close());
  const ctx = joinContext(Date.now());
  const der = Buffer.from(leaf.cert.rawData);
  const wrap = (b: Buffer) => `-----BEGIN CERTIFICATE-----\n${b.toString('base64')}\n-----END CERTIFICATE-----`;
  const samples: string[] = ['', 'garbage', '-----BEGIN CERTIFICATE-----', wrap(Buffer.alloc(0)), `${wrap(der)}\n${'-----BEGIN CERTIFICATE-----\nAAAA'}`];
  for (let i = 0; i < 150; i++) {
    const b = Buffer.from(der);
    if (i % 3 === 0) samples.push(wrap(b.subarray(0, Math.floor(Math.random() * b.length))));
    else if (i % 3 === 1) {
      for (let k = 0; k < 1 + (i % 4); k++) b[Math.floor(Math.random() * b.length)] ^= 1 << (i % 8);
      samples.push(wrap(b));
    } else samples.push(wrap(randomBytes(1 + Math.floor(Math.random() * 600))));
  }
  let typed = 0;
  for (const s of samples) {
    for (const [r, proof] of [[rule, { cert_chain: s, pop_signature: signPop(leaf, ctx) }], [spiffe, { svid_chain: s, pop_signature: signPop(leaf, ctx) }]] as const) {
      try {
        await v.verify(r, proof, ctx);
        // A flip inside an unsigned region can leave a valid certificate; that is fine only if it still verifies.
      } catch (err) {
        if (err instanceof IdentityVerificationError && err.code !== 'internal_error') typed++;
        else t.fail(`untyped or internal error: ${String(err)} ${(err as { cause?: unknown }).cause}`);
      }
    }
  }
  t.ok(typed > samples.length, `garbage refused with typed codes (${typed})`);
  t.equal(v.stats().refused.internal_error ?? 0, 0, 'no internal errors');
});
