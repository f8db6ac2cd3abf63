// pilotctl's enterprise surface without a daemon: the commands exist with help, flags become the right
// join options (passwords never from the command line), expiry parsing, and error envelopes keep the
// registry's codes with the identity refusal reason.
import t from 'tap';
import { toCliError } from '../../ctl/commands/common.js';
import { joinOptionsFromFlags, parseExpiry } from '../../ctl/commands/network.js';
import { buildProgram } from '../../ctl/commands/program.js';
import { joinFields } from '../../ctl/sdk/networks.js';
import { PilotSdkError } from '../../ctl/sdk/errors.js';

t.test('network and key commands exist, each with help', async (t) => {
  const program = buildProgram();
  const find = (path: string) => path.split(' ').reduce<ReturnType<typeof buildProgram> | undefined>((c, n) => c?.commands.find((x) => x.name() === n), program);
  for (const name of ['promote', 'demote', 'kick', 'transfer', 'invite', 'invites', 'accept', 'reject', 'tags', 'role', 'enterprise', 'join-rule', 'policy', 'preassign', 'admin-token', 'kept']) {
    const c = find(`network ${name}`);
    t.ok(c, `network ${name}`);
    t.match(c?.helpInformation() ?? '', /Usage: /);
  }
  for (const name of ['info', 'rotate', 'expire']) t.ok(find(`key ${name}`), `key ${name}`);
  const join = find('network join')!.helpInformation();
  for (const flag of ['--oidc-token', '--oidc-token-command', '--svid', '--svid-key', '--cert', '--cert-key', '--ldap-user', '--ldap-password-file', '--ldap-password-env', '--webhook-credential', '--keep']) {
    t.ok(join.includes(flag), `network join ${flag}`);
  }
  const create = find('network create')!.helpInformation();
  for (const flag of ['--enterprise', '--join-rule', '--identity-rule', '--ports', '--max-members']) t.ok(create.includes(flag), `network create ${flag}`);
  t.ok(find('network members'), 'members');
});

t.test('join flags → SDK options → IPC fields', async (t) => {
  t.same(joinFields(joinOptionsFromFlags({ oidcToken: '/tmp/tok' })), { oidc_token_file: '/tmp/tok' });
  t.same(joinOptionsFromFlags({ oidcToken: '-' }, {}, () => 'tok-from-stdin\n'), { oidcToken: 'tok-from-stdin' }, '- reads stdin');
  const rel = joinFields(joinOptionsFromFlags({ svid: 'svid.pem', svidKey: 'svid.key', keep: true }));
  t.match(rel, { svid_cert: /^\/.*svid\.pem$/, svid_key: /^\/.*svid\.key$/, keep: true }, 'relative paths made absolute for the daemon');
  t.same(joinOptionsFromFlags({ ldapUser: 'alice', ldapPasswordEnv: 'PW' }, { PW: 'pw' }), { ldap: { user: 'alice', password: 'pw' } }, 'password from the environment');
  t.throws(() => joinOptionsFromFlags({ ldapUser: 'alice' }), { code: 'invalid_argument' }, 'no password given: refused, never prompted on the command line');
  t.throws(() => joinOptionsFromFlags({ ldapUser: 'alice', ldapPasswordEnv: 'MISSING' }, {}), { code: 'invalid_argument' });
  t.throws(() => joinOptionsFromFlags({ cert: 'c.pem' }), { code: 'invalid_argument' }, '--cert needs --cert-key');
  t.same(joinFields(joinOptionsFromFlags({ webhookCredential: 'abc' })), { webhook_token: 'abc' });
});

t.test('key expiry parsing', async (t) => {
  const now = Date.UTC(2030, 0, 1);
  t.equal(parseExpiry('never', now), null);
  t.equal(parseExpiry('30d', now), now / 1000 + 30 * 86_400);
  t.equal(parseExpiry('12h', now), now / 1000 + 12 * 3600);
  t.equal(parseExpiry('2031-01-01T00:00:00Z', now), Date.UTC(2031, 0, 1) / 1000);
  t.equal(parseExpiry('1924992000', now), 1924992000);
  t.throws(() => parseExpiry('soonish', now), { code: 'invalid_argument' });
});

t.test('error envelopes keep enterprise codes and the refusal reason', async (t) => {
  const refused = toCliError(
    new PilotSdkError('identity_refused', "network_join: network join: [token_audience_mismatch] network 3 refused the identity proof: token audience does not include the network's audience", { hint: 'the token was issued for another audience' }),
  );
  t.match(refused, { code: 'identity_refused', reason: 'token_audience_mismatch', hint: /audience/ });
  for (const code of ['enterprise_required', 'forbidden', 'key_expired', 'conflict', 'limit_reached', 'cert_key_mismatch']) {
    const e = toCliError(new PilotSdkError(code, `${code} happened`));
    t.equal(e.code, code, `${code} passes through`);
    t.ok(e.hint.length > 10, `${code} has a hint`);
  }
  t.equal(toCliError(new PilotSdkError('refused', 'x')).code, 'connection_failed', 'v1 codes still map as before');
});
