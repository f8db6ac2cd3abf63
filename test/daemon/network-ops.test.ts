// NetworkOps (daemon/ipc/network-ops.ts) against a stub registry: kept memberships (token renewal from a
// command, persistence without secrets, re-join, drop on kick), error codes with hints, key warnings.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { NetworkOps, type NetworkOpsHost } from '../../daemon/ipc/network-ops.js';
import type { RegistryClient } from '../../registry/client.js';
import { RegistryError } from '../../registry/errors.js';
import { Identity } from '../../transport/identity.js';
import { tempDir, until } from './daemon-helpers.js';

function jwt(exp: number, n: number): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256' })}.${b({ sub: 'agent', exp, n })}.c2ln`;
}

interface Harness {
  ops: NetworkOps;
  events: Array<{ kind: string } & Record<string, unknown>>;
  proofs: Array<Record<string, string> | undefined>;
  joined: number[];
  dir: string;
  joinError: { err: Error | null };
}

function harness(t: { teardown(fn: () => unknown): void }, dir = tempDir(t, 'netops-')): Harness {
  const identity = Identity.generate();
  const events: Harness['events'] = [];
  const proofs: Harness['proofs'] = [];
  const joined: number[] = [];
  const joinError: Harness['joinError'] = { err: null };
  const registry = {
    async joinNetwork(_auth: unknown, net: number, _token: unknown, build?: (ts: number) => Record<string, string>) {
      if (joinError.err) throw joinError.err;
      proofs.push(build?.(Date.now()));
      return { type: 'join_network_ok', network_id: net, node_id: 4, address: `${net}:0000.0000.0004`, external_id: 'oidc:https://idp#agent', role: 'member' };
    },
  } as unknown as RegistryClient;
  const host: NetworkOpsHost = {
    registry,
    auth: () => ({ identity, nodeId: 4 }),
    identity: () => identity,
    resolveNode: async (s) => Number(s),
    keptJoinsPath: join(dir, 'identity-joins.json'),
    identityPath: join(dir, 'identity.key'),
    emit: (kind, data) => events.push({ kind, ...data }),
    joined: async (n) => void joined.push(n),
    left: () => undefined,
    rotated: () => undefined,
    log: pino({ level: 'silent' }),
  };
  const ops = new NetworkOps(host);
  t.teardown(() => ops.close());
  return { ops, events, proofs, joined, dir, joinError };
}

t.test('kept OIDC membership: token from a command, renewed before expiry, persisted without the token', async (t) => {
  const h = harness(t);
  const tokenFile = join(h.dir, 'current.jwt');
  // expires in 61 s: renewal is due after 1 s (60 s before expiry)
  const first = jwt(Math.floor(Date.now() / 1000) + 61, 1);
  writeFileSync(tokenFile, first);
  const r = await h.ops.network('join', { network_id: 7, oidc_token_command: `cat ${tokenFile}`, keep: true });
  t.equal(r.external_id, 'oidc:https://idp#agent');
  t.same(h.proofs[0], { oidc_token: first }, "the command's output is the proof");
  t.same(h.joined, [7], 'membership noted');
  const saved = readFileSync(join(h.dir, 'identity-joins.json'), 'utf8');
  t.match(JSON.parse(saved), { kept: [{ network_id: 7, proof: { oidc_token_command: `cat ${tokenFile}` } }] }, 'the source is kept');
  t.notOk(saved.includes(first), 'the token is not written to disk');

  const second = jwt(Math.floor(Date.now() / 1000) + 3600, 2);
  writeFileSync(tokenFile, second);
  await until(() => h.events.some((e) => e.kind === 'token_renewed'), 5000, 'token renewal');
  t.equal(h.ops.stats.tokenRenewals, 1, 'renewed once');
  t.match((await h.ops.network('identities', {})).kept, [{ network_id: 7, kind: 'oidc', source: 'command' }], 'listed without secrets');

  // re-join (registry lost us): a fresh token from the kept source
  const again = harness(t, h.dir);
  await again.ops.loadKept();
  await again.ops.rejoinMissing(new Set());
  t.same(again.proofs[0], { oidc_token: second }, 're-joined with the renewed token');
  t.match(again.events, [{ kind: 'rejoined', network_id: 7 }]);
  await again.ops.rejoinMissing(new Set([7]));
  t.equal(again.proofs.length, 1, 'no re-join while a member');

  // a kick of this node drops the kept membership for good
  again.ops.onPush({ type: 'push', event: 'network_membership', network_id: 7, node_id: 4, action: 'kick', timestamp: 0 }, 4);
  t.match(again.events.at(-1), { kind: 'kicked', network_id: 7 });
  await until(() => !readFileSync(join(h.dir, 'identity-joins.json'), 'utf8').includes('"network_id": 7'), 2000, 'kept entry removed');
  await again.ops.rejoinMissing(new Set());
  t.equal(again.proofs.length, 1, 'not re-joined after a kick');
});

t.test('a kept membership whose identity is refused is dropped', async (t) => {
  const h = harness(t);
  writeFileSync(join(h.dir, 'pw'), 'password\n');
  await h.ops.network('join', { network_id: 3, ldap_user: 'alice', ldap_password_file: join(h.dir, 'pw'), keep: true });
  t.same(h.proofs[0], { ldap_user: 'alice', ldap_password: 'password' });
  t.notOk(readFileSync(join(h.dir, 'identity-joins.json'), 'utf8').includes('"password"'), 'the password is not written');
  h.joinError.err = new RegistryError('identity_refused', '[ldap_bind_failed] network 3 refused the identity proof: invalid credentials');
  await h.ops.rejoinMissing(new Set());
  t.match(h.events.at(-1), { kind: 'rejoin_failed', network_id: 3, code: 'identity_refused' });
  t.same((await h.ops.network('identities', {})).kept, [], 'dropped');
});

t.test('errors: registry codes kept, hints added; argument checks', async (t) => {
  const h = harness(t);
  h.joinError.err = new RegistryError('identity_refused', '[token_expired] network 5 refused the identity proof: token expired');
  const e = await h.ops.network('join', { network_id: 5, oidc_token: 'x.y.z' }).catch((err: { code: string; hint?: string; message: string }) => err);
  t.match(e, { code: 'identity_refused', hint: /fresh/ }, 'identity_refused with a hint for the reason');
  t.notOk((e as { message: string }).message.includes('x.y.z'), 'the token is not in the message');
  h.joinError.err = new RegistryError('timeout', 'registry did not answer in time');
  t.match(await h.ops.network('join', { network_id: 5 }).catch((err: unknown) => err), { code: 'unavailable' }, 'client-side failures: unavailable');
  t.match(await h.ops.network('join', { network_id: 5, oidc_token: 'a', keep: true }).catch((err: unknown) => err), { code: 'bad_request' }, 'keep needs a re-fetchable source');
  t.match(await h.ops.network('join', { network_id: 0 }).catch((err: unknown) => err), { code: 'bad_request' }, 'network 0 refused');
  t.match(await h.ops.network('join', { network_id: 5, cert: '/nonexistent.pem', cert_key: '/nonexistent.key' }).catch((err: unknown) => err), { code: 'proof_source_unreadable', hint: /absolute/ });
  t.match(await h.ops.network('bogus', {}).catch((err: unknown) => err), { code: 'unknown_op' });
});

t.test('key warnings: expiring soon once per expiry time, expired once until it clears', async (t) => {
  const h = harness(t);
  const at = Math.floor(Date.now() / 1000) + 3600;
  h.ops.onHeartbeat({ type: 'heartbeat_ok', time: 0, key_expires_soon: true, key_expires_at: at });
  h.ops.onHeartbeat({ type: 'heartbeat_ok', time: 0, key_expires_soon: true, key_expires_at: at });
  t.same(h.events, [{ kind: 'key_expires_soon', expires_at: at }], 'one warning');
  t.equal(h.ops.onRegistryError(new RegistryError('key_expired', 'expired')), true);
  t.equal(h.ops.onRegistryError(new RegistryError('key_expired', 'expired')), true);
  t.equal(h.ops.onRegistryError(new RegistryError('timeout', 'slow')), false, 'other errors are not ours');
  t.equal(h.events.filter((e) => e.kind === 'key_expired').length, 1, 'expired reported once');
  t.same(
    (() => {
      h.ops.onPush({ type: 'push', event: 'network_invite', network_id: 9, node_id: 4, from_node_id: 2, expires_at: 5, timestamp: 0 }, 4);
      h.ops.onPush({ type: 'push', event: 'network_invite', network_id: 9, node_id: 8, from_node_id: 2, expires_at: 5, timestamp: 0 }, 4);
      return h.events.filter((e) => e.kind === 'invite').length;
    })(),
    1,
    'only invites for this node are surfaced',
  );
});
