// Enterprise administration through the SDK against an in-process registry and two in-process daemons:
// invites with consent (events, poll, reject, accept), ownership transfer, member tags (pushed), a policy
// change closing a session that is no longer allowed, and the key-expiry warning and enforcement as events.
import t from 'tap';
import { Pilot } from '../../ctl/index.js';
import { Addr } from '../../transport/address.js';
import { ADMIN, startDaemon, startRegistry, until } from './daemon-helpers.js';

type Ev = { kind: string } & Record<string, unknown>;

t.test('invites, transfer, tags, live policy change and key expiry through the SDK', async (t) => {
  const reg = await startRegistry(t);
  const [da, db] = await Promise.all([startDaemon(t, reg.port), startDaemon(t, reg.port)]);
  const a = await Pilot.connect({ socket: da.config.socket });
  const b = await Pilot.connect({ socket: db.config.socket });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const aEv: Ev[] = [];
  const bEv: Ev[] = [];
  a.on('network', (e: Ev) => aEv.push(e));
  b.on('network', (e: Ev) => bEv.push(e));

  // ---- invites with consent --------------------------------------------------------------------------
  const inv = (await b.network.create('invited', { joinRule: 'invite', enterprise: true, adminToken: ADMIN })).network_id as number;
  t.match(await a.network.join(inv).catch((e: { code: string }) => e), { code: 'forbidden' }, 'an invite-only network refuses a direct join');
  t.match(await b.network.invite(inv, da.nodeId, { ttlS: 3600 }), { status: 'invited' }, 'the owner invites A');
  await until(() => aEv.some((e) => e.kind === 'invite' && e.network_id === inv), 5000, 'invite event at A');
  t.match(await a.network.invites(), [{ network_id: inv, network_name: 'invited', from_node_id: db.nodeId }], 'A polls the invite');
  t.match(await a.network.rejectInvite(inv), { accepted: false }, 'A rejects');
  t.same(await a.network.invites(), [], 'rejected: gone');
  await b.network.invite(inv, da.nodeId);
  t.match(await a.network.acceptInvite(inv), { accepted: true, role: 'member' }, 'accepted: a member');
  t.match(await a.network.role(inv), { role: 'member' }, 'role member');

  // ---- ownership transfer, member tags --------------------------------------------------------------
  t.match(await a.network.transfer(inv, db.nodeId).catch((e: { code: string }) => e), { code: 'forbidden' }, 'only the owner transfers');
  t.match(await b.network.transfer(inv, da.nodeId), { owner_id: da.nodeId, previous_owner_id: db.nodeId }, 'the owner hands the network to A');
  const roles = Object.fromEntries(((await b.network.members(inv)).members as Array<{ node_id: number; role: string }>).map((m) => [m.node_id, m.role]));
  t.same(roles, { [da.nodeId]: 'owner', [db.nodeId]: 'admin' }, 'A owns it, B is admin');
  await until(() => bEv.some((e) => e.kind === 'role' && e.node_id === db.nodeId && e.role === 'admin'), 5000, 'role event at B');
  t.match(await a.network.setMemberTags(inv, db.nodeId, ['db', 'eu']), { tags: ['db', 'eu'] }, 'the new owner tags B');
  await until(() => bEv.some((e) => e.kind === 'member_tags' && e.node_id === db.nodeId), 5000, 'member_tags event at B');
  t.match(((await a.network.members(inv)).members as Array<{ node_id: number; member_tags: string[] }>).find((m) => m.node_id === db.nodeId), { member_tags: ['db', 'eu'] }, 'tags in the member list');

  // ---- a policy change closes a session that is no longer allowed ------------------------------------
  const echo = await a.dial(new Addr(inv, db.nodeId).toString(), 7, { timeoutMs: 10_000 });
  echo.on('error', () => {});
  const closed = new Promise<boolean>((r) => echo.once('close', () => r(true)));
  echo.write('x');
  await new Promise((r) => echo.once('data', r));
  t.match(await a.network.setPolicy(inv, { allowedPorts: [1001] }), { allowed_ports: [1001] }, 'owner narrows allowed_ports');
  t.ok(await Promise.race([closed, new Promise<boolean>((r) => setTimeout(() => r(false), 5000).unref())]), 'the session on port 7 closes at once');
  t.match(await a.dial(new Addr(inv, db.nodeId).toString(), 7, { timeoutMs: 1500 }).catch((e: { code: string }) => e), { code: 'timeout' }, 'and new dials to port 7 are dropped');

  // ---- key expiry: warning ahead, enforcement after --------------------------------------------------
  const soon = Math.floor(Date.now() / 1000) + 3;
  t.match(await a.key.setExpiry(soon), { expires_at: soon }, 'the node shortens its own key lifetime');
  await until(() => aEv.some((e) => e.kind === 'key_expires_soon' && e.expires_at === soon), 5000, 'expiry warning at A');
  await until(() => aEv.some((e) => e.kind === 'key_expired'), 8000, 'expired event at A');
  t.match(await a.network.invites().catch((e: { code: string }) => e), { code: 'key_expired', hint: /expir/ }, 'signed ops answer key_expired');
  t.match(await a.key.setExpiry(null, { adminToken: ADMIN }), { expires_at: null }, 'the registry admin clears the expiry');
  t.same(await a.network.invites(), [], 'and the node works again');
});
