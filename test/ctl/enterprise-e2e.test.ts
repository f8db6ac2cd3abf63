/**
 * Enterprise networks end to end with real parts (issue 6): a real `pilot-registry` process with an admin
 * token, a real OIDC provider (`oidc-provider`) on loopback issuing client-credentials tokens, two real
 * daemon processes, every administrative step through `pilotctl --json`.
 *
 * - node A joins an enterprise network with an `oidc` join rule via `--oidc-token FILE` and shows up in
 *   `network members` with its external ID; a wrong-audience token is refused with the reason;
 * - `allowed_ports: [7]`: A reaches B's echo on port 7 over the network and is refused silently on another
 *   port (the dial times out, no RST; B counts and logs the refusal);
 * - promote/demote through pilotctl, with A seeing the role events; a plain network answers
 *   `enterprise_required`;
 * - B (owner) kicks A: A's open stream to B closes (within the daemon's 1 s budget; bounded generously);
 * - a CA join rule with certificates generated here (`--cert/--cert-key`; a key of another certificate is
 *   refused locally), then `key rotate` keeps the node ID and A still reaches B under the new key.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Pilot } from '../../ctl/index.js';
import { Addr } from '../../transport/address.js';
import { spawnDaemon, tempDir, until } from '../daemon/daemon-helpers.js';
import { startOidcProvider } from '../identity/fixtures/oidc.js';
import { issue, makeRoot } from '../identity/fixtures/pki.js';
import { startRegistryProcess } from '../registry/proc.js';
import { ctl } from './helpers.js';

const ADMIN = 'enterprise-e2e-admin-token-0123';
const AUD = 'api://pilot-agents';

/** Resolves with `value` after `ms` without keeping the process alive. */
function later<T>(ms: number, value: T): Promise<T> {
  return new Promise((r) => setTimeout(() => r(value), ms).unref());
}

interface Member {
  node_id: number;
  role?: string;
  external_id?: string;
}

t.test('enterprise network through pilotctl: OIDC join, port policy, roles, kick, CA join, key rotation', async (t) => {
  // The IdP, the registry and the daemons start side by side (module loading dominates on a busy machine).
  const idpP = startOidcProvider(t, {
    clients: [{ client_id: 'agent-a', client_secret: 'secret-agent-a-0123456789abcdefghij', claims: { tid: 'tenant-1', groups: ['agents'] } }],
    audiences: [AUD, 'api://somebody-else'],
    ttl: 600,
  });
  idpP.catch(() => undefined);
  const regDir = tempDir(t, 'ent-reg-');
  const reg = await startRegistryProcess(t, [
    '--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', regDir, '--admin-token', ADMIN,
    '--identity-allow-private-urls', '--identity-allow-http', '--log-level', 'warn',
  ]);
  const start = async (name: string) => {
    const dir = tempDir(t, `ent-${name}-`);
    const socket = join(dir, 'pilot.sock');
    // info level: the audit-relevant join lines are logged (and must not carry the proof)
    const proc = await spawnDaemon(t, ['--registry', `127.0.0.1:${reg.port}`, '--listen', '127.0.0.1:0', '--socket', socket, '--data-dir', dir, '--hostname', name, '--keepalive', '2s', '--log-level', 'info']);
    const pilot = await Pilot.connect({ socket });
    t.teardown(() => pilot.close());
    return { dir, socket, nodeId: proc.nodeId, pilot, stderr: proc.stderr };
  };
  const [a, b, idp] = await Promise.all([start('alpha'), start('bravo'), idpP]);
  const A = (args: string[]) => ctl(t, a.socket, args);
  const B = (args: string[]) => ctl(t, b.socket, args);
  const aEvents: Array<Record<string, unknown>> = [];
  a.pilot.on('network', (ev: Record<string, unknown>) => aEvents.push(ev));
  const work = tempDir(t, 'ent-files-');

  // ---- an enterprise network with an OIDC join rule and allowed_ports [7], owned by B ----------------
  const rulePath = join(work, 'oidc-rule.json');
  writeFileSync(rulePath, JSON.stringify({ kind: 'oidc', issuer: idp.issuer, audience: AUD, tenant: 'tenant-1', groups: { any_of: ['agents'] } }));
  const created = await B(['network', 'create', 'agents', '--enterprise', '--join-rule', 'oidc', '--identity-rule', rulePath, '--ports', '7', '--admin-token', ADMIN]);
  t.equal(created.json.status, 'ok', `create: ${created.stdout}${created.stderr}`);
  const net = (created.json.data as { network_id: number }).network_id;
  t.equal((created.json.data as { enterprise?: boolean }).enterprise, true, 'created as an enterprise network');

  // ---- refusals with the reason, then admission with the external ID ---------------------------------
  const wrongAud = join(work, 'wrong-aud.jwt');
  writeFileSync(wrongAud, await idp.token('agent-a', 'api://somebody-else'), { mode: 0o600 });
  const refused = await A(['network', 'join', String(net), '--oidc-token', wrongAud]);
  t.equal(refused.code, 1, 'refused join exits 1');
  t.equal(refused.json.code, 'identity_refused', `wrong audience → identity_refused (${refused.stdout})`);
  t.equal((refused.json as { reason?: string }).reason, 'token_audience_mismatch', 'the envelope names the reason');
  t.ok(refused.json.hint && /audience/.test(refused.json.hint), 'with a hint about the audience');
  const token = await idp.token('agent-a');
  t.notOk(refused.stdout.includes(token.slice(-20)) || refused.stderr.includes(token.slice(-20)), 'no token in the output');
  const noFile = await a.pilot.network.join(net, { oidcTokenFile: join(work, 'missing.jwt') }).catch((e: { code?: string }) => e.code);
  t.equal(noFile, 'proof_source_unreadable', 'SDK: a missing token file is named, not guessed at');

  const tokenPath = join(work, 'token.jwt');
  writeFileSync(tokenPath, token + '\n', { mode: 0o600 });
  const joined = await A(['network', 'join', 'agents', '--oidc-token', tokenPath]);
  t.equal(joined.json.status, 'ok', `join by name with the OIDC token file: ${joined.stdout}`);
  const externalId = `oidc:${idp.issuer}#agent-a`;
  t.match(joined.json.data, { network_id: net, external_id: externalId, role: 'member' }, 'admitted as member with issuer + subject');
  const members = await B(['network', 'members', String(net)]);
  const listed = (members.json.data as { members: Member[] }).members;
  t.match(listed.find((m) => m.node_id === a.nodeId), { role: 'member', external_id: externalId }, 'members shows A with its external ID');
  t.match(listed.find((m) => m.node_id === b.nodeId), { role: 'owner' }, 'and B as owner');
  t.ok(a.stderr().includes('joined network with an identity proof'), "A's daemon logged the identity join");
  t.notOk(a.stderr().includes(token.split('.')[2]!), 'but never the token');

  // ---- port policy: port 7 reachable over the network, another port silently refused -----------------
  const bOnNet = new Addr(net, b.nodeId).toString();
  const echo = await a.pilot.dial(bOnNet, 7, { timeoutMs: 10_000 });
  echo.on('error', () => {});
  const closed = new Promise<number>((resolve) => echo.once('close', () => resolve(Date.now())));
  echo.write('hello member');
  const reply = await Promise.race([new Promise<string>((r) => echo.once('data', (d: Buffer) => r(d.toString()))), later(10_000, '(no reply)')]);
  t.equal(reply, 'hello member', 'A reaches the allowed port 7 on fellow member B');

  const before = ((await b.pilot.stats()).admission as { refused: Record<string, number> }).refused.port_policy ?? 0;
  const denied = await a.pilot.dial(bOnNet, 1001, { timeoutMs: 2500 }).then(
    (c) => (c.destroy(), 'connected'),
    (err: { code?: string }) => err.code ?? 'error',
  );
  t.equal(denied, 'timeout', 'a disallowed port: the dial times out (silent drop, no RST)');
  const after = ((await b.pilot.stats()).admission as { refused: Record<string, number> }).refused.port_policy ?? 0;
  t.ok(after > before, `B counted the refusal as port_policy (${before} → ${after})`);
  const admissionLog = (): string => {
    try {
      return readFileSync(join(b.dir, 'admission.log'), 'utf8');
    } catch {
      return '';
    }
  };
  await until(() => admissionLog().includes('"dst_port":1001'), 5000, 'admission log line');
  const logLine = admissionLog().split('\n').find((l) => l.includes('"dst_port":1001'))!;
  t.match(JSON.parse(logLine), { dst_net: net, reason: 'port_policy', protocol: 'stream' }, 'B logged source, port, rule and reason');

  // ---- roles via pilotctl; A sees the role events ---------------------------------------------------
  const promoted = await B(['network', 'promote', String(net), String(a.nodeId)]);
  t.match(promoted.json, { status: 'ok', data: { node_id: a.nodeId, role: 'admin' } }, 'promote → admin');
  const asAdmin = (await b.pilot.network.members(net)).members as unknown as Member[];
  t.equal(asAdmin.find((m) => m.node_id === a.nodeId)?.role, 'admin', 'members shows the new role');
  await until(() => aEvents.some((e) => e.kind === 'role' && e.role === 'admin' && e.node_id === a.nodeId), 5000, 'role event at A');
  const demoted = await B(['network', 'demote', String(net), 'alpha']);
  t.match(demoted.json, { status: 'ok', data: { role: 'member' } }, 'demote (node given by hostname) → member');
  const notOwner = await a.pilot.network.promote(net, b.nodeId).catch((e: { code?: string }) => e.code);
  t.equal(notOwner, 'forbidden', 'SDK: a member cannot promote: forbidden');

  const plainId = (await b.pilot.network.create('plain', { adminToken: ADMIN })).network_id as number;
  t.equal((await a.pilot.network.join(plainId)).network_id, plainId, 'A joins the plain network');
  const gated = await B(['network', 'promote', String(plainId), String(a.nodeId)]);
  t.equal(gated.json.code, 'enterprise_required', `a plain network answers enterprise_required (${gated.stdout})`);
  t.ok(gated.json.hint && /enterprise/.test(gated.json.hint), 'with a hint how to turn it on');

  // ---- kick: A's open stream to B on the network closes ---------------------------------------------
  t.equal(echo.destroyed, false, 'the echo stream is still open before the kick');
  const kickStart = Date.now();
  const kicked = await B(['network', 'kick', String(net), String(a.nodeId)]);
  t.equal(kicked.json.status, 'ok', 'kick ok');
  const closedAt = await Promise.race([closed, later(5000, -1)]);
  t.not(closedAt, -1, "A's open stream to B closed after the kick");
  // The bound includes starting pilotctl; the daemon's own budget is 1 s from the registry's push.
  t.comment(`stream closed ${closedAt - kickStart} ms after running pilotctl network kick (pilotctl itself returned after ${Date.now() - kickStart} ms)`);
  t.ok(closedAt - kickStart < 4000, 'the stream closed promptly (generous bound for loaded machines)');
  await until(() => aEvents.some((e) => e.kind === 'kicked' && e.network_id === net), 5000, 'kicked event at A');
  const afterKick = (await b.pilot.network.members(net)).members as unknown as Member[];
  t.notOk(afterKick.some((m) => m.node_id === a.nodeId), 'A is no longer a member');

  // ---- CA join rule through pilotctl, then key rotation keeping the node ID --------------------------
  const root = await makeRoot({ name: 'CN=Corp Agents Root,O=Corp' });
  const leaf = await issue(root, { name: 'CN=agent-a,O=Corp', eku: ['1.3.6.1.5.5.7.3.2'] });
  const other = await issue(root, { name: 'CN=someone-else,O=Corp' });
  const certPath = join(work, 'agent-a.pem');
  const keyPath = join(work, 'agent-a.key');
  const otherKey = join(work, 'other.key');
  writeFileSync(certPath, leaf.pem);
  writeFileSync(keyPath, leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(otherKey, other.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  const caRule = join(work, 'ca-rule.json');
  writeFileSync(caRule, JSON.stringify({ kind: 'ca', roots: root.pem, eku: ['clientAuth'] }));
  const ca = await b.pilot.network.create('corp-ca', { enterprise: true, joinRule: 'ca', identityRule: JSON.parse(readFileSync(caRule, 'utf8')) as Record<string, unknown>, allowedPorts: [7], adminToken: ADMIN });
  const caNet = ca.network_id as number;
  const wrongKey = await a.pilot.network.join(caNet, { cert: { cert: certPath, key: otherKey } }).catch((e: { code?: string }) => e.code);
  t.equal(wrongKey, 'cert_key_mismatch', 'SDK: the key of another certificate is refused before anything is sent');
  const caJoin = await A(['network', 'join', String(caNet), '--cert', certPath, '--cert-key', keyPath]);
  t.equal(caJoin.json.status, 'ok', `CA join: ${caJoin.stdout}`);
  t.match(caJoin.json.data, { external_id: /^x509:.*agent-a/ }, 'admitted with the certificate subject as external ID');

  const infoBefore = (await a.pilot.key.info()) as { node_id: number; public_key: string; rotate_count: number };
  const rotated = await A(['key', 'rotate']);
  t.equal(rotated.json.status, 'ok', `key rotate: ${rotated.stdout}`);
  const infoAfter = (await A(['key', 'info'])).json.data as { node_id: number; public_key: string; rotate_count: number };
  t.equal(infoAfter.node_id, a.nodeId, 'the node ID is kept');
  t.not(infoAfter.public_key, infoBefore.public_key, 'the registry holds a new key');
  t.equal(infoAfter.rotate_count, infoBefore.rotate_count + 1, 'rotate count went up');
  const idFile = JSON.parse(readFileSync(join(a.dir, 'identity.key'), 'utf8')) as { public_key: string };
  t.equal(idFile.public_key, infoAfter.public_key, 'the identity file was replaced with the new key');
  t.equal(((await a.pilot.info()).node_id as number), a.nodeId, 'the daemon runs on as the same node');

  const echo2 = await a.pilot.dial(new Addr(caNet, b.nodeId).toString(), 7, { timeoutMs: 10_000 });
  echo2.on('error', () => {});
  echo2.write('after rotation');
  const reply2 = await Promise.race([new Promise<string>((r) => echo2.once('data', (d: Buffer) => r(d.toString()))), later(10_000, '(no reply)')]);
  t.equal(reply2, 'after rotation', 'A reaches B under its new key');
  echo2.destroy();
});
