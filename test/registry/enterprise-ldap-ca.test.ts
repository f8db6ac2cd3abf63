/**
 * LDAP (real slapd started by the test) and enterprise-CA join rules through a real registry: admitted
 * identities become external IDs; wrong password, missing group, self-signed and expired certificates are
 * refused with their reason and change nothing.
 */
import t from 'tap';
import { ADMIN, failure, registerNode, startRegistry, type TestNode } from './helpers.js';
import { LDAPADD_BIN, SLAPD_BIN, sampleLdif, startSlapd, type SlapdHandle } from '../identity/fixtures/slapd.js';
import { chainPem, issue, makeRoot, selfSigned, signPop, type Issued } from '../identity/fixtures/pki.js';

const BASE = 'dc=example,dc=org';


t.test('LDAP bind join with group check (slapd)', { skip: !SLAPD_BIN || !LDAPADD_BIN ? 'slapd/ldapadd not installed' : false }, async (t) => {
  const slapd = (await startSlapd(t)) as SlapdHandle;
  await slapd.ldapadd(sampleLdif(BASE));
  const { client } = await startRegistry(t, { enterprise: { identity: { ldapTimeoutMs: 5000 } } });
  const owner = await registerNode(client);
  const [a, b] = [await registerNode(client), await registerNode(client)];
  const net = (
    await client.createNetwork(ADMIN, {
      name: 'ldap',
      joinRule: 'ldap',
      nodeId: owner.nodeId,
      enterprise: true,
      identityRule: { kind: 'ldap', url: slapd.url, allow_plain: true, user_dn_template: `uid={user},ou=people,${BASE}`, groups: { mode: 'member', base: `ou=groups,${BASE}`, required: ['agents'] } },
    })
  ).network_id;
  const ok = await client.joinNetwork(a, net, undefined, { ldap_user: 'alice', ldap_password: 'alice-password' });
  t.equal(ok.external_id, `ldap:uid=alice,ou=people,${BASE}`, 'LDAP DN is the external ID');
  t.match(await failure(client.joinNetwork(b, net, undefined, { ldap_user: 'alice', ldap_password: 'wrong-password-1' })), { code: 'identity_refused', message: /^\[ldap_bind_failed\]/ });
  t.match(await failure(client.joinNetwork(b, net, undefined, { ldap_user: 'carol', ldap_password: 'carol-password' })), { code: 'identity_refused', message: /^\[ldap_group_missing\]/ });
  t.equal((await client.listMembers(owner, net)).members.length, 2, 'refusals changed nothing');
});

t.test('enterprise CA join: chain to the bundle, EKU; self-signed and expired refused', async (t) => {
  const { client } = await startRegistry(t);
  const owner = await registerNode(client);
  const [a, b] = [await registerNode(client), await registerNode(client)];
  const root = await makeRoot({ name: 'CN=Corp Root,O=Corp' });
  const leaf = await issue(root, { name: 'CN=agent-7,OU=Agents,O=Corp', eku: ['1.3.6.1.5.5.7.3.2'] });
  const expired = await issue(root, { name: 'CN=old,OU=Agents,O=Corp', eku: ['1.3.6.1.5.5.7.3.2'], notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  const self = await selfSigned({ name: 'CN=agent-7,OU=Agents,O=Corp', eku: ['1.3.6.1.5.5.7.3.2'] });
  const net = (
    await client.createNetwork(ADMIN, { name: 'pki', joinRule: 'ca', nodeId: owner.nodeId, enterprise: true, identityRule: { kind: 'ca', roots: root.pem, eku: ['clientAuth'] } })
  ).network_id;
  const proof = (node: TestNode, cert: Issued, chain: string) => (ts: number) => ({
    cert_chain: chain,
    pop_signature: signPop(cert, { networkId: net, nodeId: node.nodeId, nodePublicKey: node.identity.publicKey, ts }),
  });
  const ok = await client.joinNetwork(a, net, undefined, proof(a, leaf, chainPem(leaf)));
  t.match(ok.external_id, /^x509:.*CN=agent-7/, 'certificate subject is the external ID');
  t.match(await failure(client.joinNetwork(b, net, undefined, proof(b, self, self.pem))), { code: 'identity_refused', message: /^\[(cert_self_signed|chain_untrusted)\]/ });
  t.match(await failure(client.joinNetwork(b, net, undefined, proof(b, expired, expired.pem))), { code: 'identity_refused', message: /^\[cert_expired\]/ });
  t.equal((await client.listMembers(owner, net)).members.length, 2);
});
