/**
 * LDAP join rule against a real slapd (started here on a free loopback port with a temp mdb database).
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { IdentityVerifier, parseIdentityRule, escapeDnValue, escapeFilterValue, type LdapRule } from '../../registry/identity/index.js';
import { startSlapd, sampleLdif, SLAPD_BIN, LDAPADD_BIN, type SlapdHandle } from './fixtures/slapd.js';
import { refused, joinContext } from './fixtures/assert.js';
import { makeRoot, issue } from './fixtures/pki.js';

const skip = SLAPD_BIN && LDAPADD_BIN ? false : 'slapd / ldapadd not installed (Debian: apt-get install slapd ldap-utils)';
const BASE = 'dc=example,dc=org';

t.test('RFC 4514 / 4515 escaping', async (t) => {
  t.equal(escapeDnValue('alice,ou=admins'), 'alice\\,ou\\=admins');
  t.equal(escapeDnValue(' #x+y;"<>\\ '), '\\ #x\\+y\\;\\"\\<\\>\\\\\\ ');
  t.equal(escapeDnValue('a\0b'), 'a\\00b');
  t.equal(escapeDnValue('#x'), '\\#x');
  t.equal(escapeFilterValue('*)(uid=*'), '\\2a\\29\\28uid=\\2a');
  t.equal(escapeFilterValue('a\\b\0'), 'a\\5cb\\00');
});

t.test('slapd', { skip }, async (t) => {
  const slapd = (await startSlapd(t)) as SlapdHandle;
  await slapd.ldapadd(sampleLdif(BASE));
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
  const v = new IdentityVerifier({ log, ldapTimeoutMs: 3000 });
  t.teardown(() => v.close());
  const ctx = joinContext(Date.now());
  const template = (required: string[] = ['agents']): LdapRule =>
    parseIdentityRule({ kind: 'ldap', url: slapd.url, allow_plain: true, user_dn_template: `uid={user},ou=people,${BASE}`, groups: { mode: 'member', base: `ou=groups,${BASE}`, required } }) as LdapRule;
  const search = (required: string[] = [`cn=agents,ou=groups,${BASE}`], password = 'svc-password'): LdapRule =>
    parseIdentityRule({
      kind: 'ldap',
      url: slapd.url,
      allow_plain: true,
      search: { base: `ou=people,${BASE}`, filter: '(&(objectClass=inetOrgPerson)(uid={user}))', bind_dn: `cn=pilot-svc,${BASE}`, bind_password: password },
      groups: { mode: 'memberOf', required },
    }) as LdapRule;
  const login = (rule: LdapRule, user: string, password: string) => v.verify(rule, { ldap_user: user, ldap_password: password }, ctx);

  t.test('direct bind + groupOfNames', async (t) => {
    const id = await login(template(), 'alice', 'alice-password');
    t.equal(id.externalId, `ldap:uid=alice,ou=people,${BASE}`);
    t.equal(id.kind, 'ldap');
    t.same(id.groups, [`cn=agents,ou=groups,${BASE}`], 'groups = group DNs');
    t.ok(await login(template(['ops']), 'bob', 'bob-password'), 'groupOfUniqueNames membership by cn');
    t.ok(await login(template([`CN=Ops, OU=Groups, ${BASE.toUpperCase()}`]), 'bob', 'bob-password'), 'group DN compared case- and space-insensitively');
    t.ok(await login(template([]), 'carol', 'carol-password'), 'no group required');
    t.ok(await login(template(), 'd*ve', 'dave-password'), 'a literal * in a user name works when escaped');
    await refused(t, login(template(), 'alice', 'wrong-password-1'), 'ldap_bind_failed', 'wrong password');
    await refused(t, login(template(), 'mallory', 'whatever-password'), 'ldap_bind_failed', 'unknown user');
    await refused(t, login(template(), 'alice', ''), 'ldap_empty_password', 'empty password (anonymous-bind trap)');
    await refused(t, v.verify(template(), { ldap_user: 'alice' }, ctx), 'ldap_empty_password', 'missing password');
    await refused(t, login(template(), 'carol', 'carol-password'), 'ldap_group_missing', 'not in agents');
    await refused(t, login(template(), 'bob', 'bob-password'), 'ldap_group_missing', 'bob is only in ops');
  });

  t.test('search-then-bind + memberOf', async (t) => {
    const id = await login(search(), 'alice', 'alice-password');
    t.equal(id.subject, `uid=alice,ou=people,${BASE}`);
    t.same(id.groups, [`cn=agents,ou=groups,${BASE}`], 'memberOf values');
    t.ok(await login(search(['agents']), 'd*ve', 'dave-password'), 'filter-escaped literal *');
    await refused(t, login(search(), 'alice', 'bad-password-2'), 'ldap_bind_failed', 'wrong password');
    await refused(t, login(search(), 'nobody', 'bad-password-3'), 'ldap_bind_failed', 'unknown user (same code as wrong password)');
    await refused(t, login(search(), 'carol', 'carol-password'), 'ldap_group_missing', 'carol has no memberOf agents');
    await refused(t, login(search(undefined, 'not-the-svc-password'), 'alice', 'alice-password'), 'ldap_unavailable', 'service account refused');
  });

  t.test('injection attempts in the user name', async (t) => {
    for (const user of ['*', 'al*', 'alice)(uid=*', '*)(|(uid=*', 'alice)(|(objectClass=*', '*)(uid=*))(|(uid=*']) {
      await refused(t, login(search([]), user, 'alice-password'), 'ldap_bind_failed', `filter injection ${JSON.stringify(user)}`);
    }
    for (const user of [`alice,ou=people,${BASE}`, 'alice,ou=groups', 'x,cn=admin', 'alice+cn=Alice', '#616c696365']) {
      await refused(t, login(template([]), user, 'alice-password'), 'ldap_bind_failed', `DN injection ${JSON.stringify(user)}`);
    }
    await refused(t, login(template([]), 'admin', slapd.adminPassword), 'ldap_bind_failed', 'rootdn password under the people template');
    await refused(t, login(template([]), 'alice\0', 'alice-password'), 'ldap_user_invalid', 'NUL in the user name');
    await refused(t, login(template([]), ' alice', 'alice-password'), 'ldap_user_invalid', 'leading space');
    await refused(t, login(template([]), 'a'.repeat(300), 'alice-password'), 'bad_proof', 'oversize user name');
  });

  t.test('passwords never reach logs or errors', async (t) => {
    lines.length = 0;
    const err = await refused(t, login(template(), 'alice', 'Sup3r-Secret-Pw!'), 'ldap_bind_failed', 'wrong password');
    const text = `${lines.join('\n')}\n${err?.message}\n${JSON.stringify(err)}\n${String((err as { cause?: unknown })?.cause)}`;
    t.ok(lines.length > 0, 'the refusal was logged');
    t.notOk(text.includes('Sup3r-Secret-Pw!'), 'password absent from logs and error');
    t.notOk(text.includes('svc-password'), 'service password absent too');
  });

  t.test('an unreachable directory is ldap_unavailable', async (t) => {
    const port = slapd.port;
    const dead = parseIdentityRule({ kind: 'ldap', url: `ldap://127.0.0.1:${port === 1 ? 2 : 1}`, allow_plain: true, user_dn_template: `uid={user},${BASE}`, timeout_ms: 500 }) as LdapRule;
    await refused(t, login(dead, 'alice', 'alice-password'), 'ldap_unavailable', 'connection refused');
  });
});

t.test('slapd over TLS: ldaps:// and StartTLS with the directory CA pinned in the rule', { skip }, async (t) => {
  const ca = await makeRoot({ name: 'CN=Directory CA', alg: 'rsa' });
  const server = await issue(ca, { name: 'CN=127.0.0.1', alg: 'rsa', san: [{ type: 'ip', value: '127.0.0.1' }], eku: ['1.3.6.1.5.5.7.3.1'], keyUsage: 0x01 | 0x04 });
  const keyPem = server.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  const slapd = (await startSlapd(t, { tls: { certPem: server.pem, keyPem } })) as SlapdHandle;
  await slapd.ldapadd(sampleLdif(BASE));
  const v = new IdentityVerifier({ ldapTimeoutMs: 3000 });
  t.teardown(() => v.close());
  const ctx = joinContext(Date.now());
  const dnTemplate = `uid={user},ou=people,${BASE}`;
  const ldaps = parseIdentityRule({ kind: 'ldap', url: slapd.ldapsUrl!, tls_ca: ca.pem, user_dn_template: dnTemplate }) as LdapRule;
  t.equal((await v.verify(ldaps, { ldap_user: 'alice', ldap_password: 'alice-password' }, ctx)).subject, `uid=alice,ou=people,${BASE}`, 'ldaps:// bind');
  const startTls = parseIdentityRule({ kind: 'ldap', url: slapd.url, start_tls: true, tls_ca: ca.pem, user_dn_template: dnTemplate }) as LdapRule;
  t.ok(await v.verify(startTls, { ldap_user: 'alice', ldap_password: 'alice-password' }, ctx), 'StartTLS bind');
  await refused(t, v.verify(startTls, { ldap_user: 'alice', ldap_password: 'nope-password' }, ctx), 'ldap_bind_failed', 'wrong password over StartTLS');
  const otherCa = await makeRoot({ name: 'CN=Other CA' });
  const untrusted = parseIdentityRule({ kind: 'ldap', url: slapd.ldapsUrl!, tls_ca: otherCa.pem, user_dn_template: dnTemplate }) as LdapRule;
  await refused(t, v.verify(untrusted, { ldap_user: 'alice', ldap_password: 'alice-password' }, ctx), 'ldap_unavailable', 'directory certificate from an unpinned CA');
});
