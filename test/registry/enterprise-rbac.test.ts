/**
 * Enterprise networks over a real registry (TCP, in-memory SQLite) with the typed client: enterprise
 * gating, RBAC (promote/demote/kick/transfer, per-network admin token), signed actors (forged, stale,
 * replayed), invites with consent (poll, accept, reject, expiry, inbox cap), max_members, member tags,
 * list_members, kick push.
 */
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import type { RegistryClient, NodeAuth } from '../../registry/client.js';
import { challenges } from '../../registry/protocol/challenges.js';
import type { PushEvent } from '../../registry/protocol/messages.js';
import { ADMIN, code, RawConn, registerNode, startRegistry, TestClock, type TestNode } from './helpers.js';


async function enterpriseNet(client: RegistryClient, owner: TestNode, name: string, extra: Record<string, unknown> = {}): Promise<number> {
  const r = await client.createNetwork(ADMIN, { name, joinRule: 'open', nodeId: owner.nodeId, enterprise: true, ...extra });
  t.equal(r.enterprise, true);
  return r.network_id;
}

t.test('enterprise gating: role ops on a plain network say enterprise_required; plain networks behave as before', async (t) => {
  const { client } = await startRegistry(t);
  const [a, b] = [await registerNode(client), await registerNode(client)];
  const plain = (await client.createNetwork(ADMIN, { name: 'plain', joinRule: 'open', nodeId: a.nodeId })).network_id;
  await client.joinNetwork(b, plain);
  for (const [what, p] of [
    ['promote', client.promoteMember(a, plain, b.nodeId)],
    ['kick (signed)', client.kickMember(a, plain, b.nodeId)],
    ['invite', client.inviteToNetwork(a, plain, b.nodeId)],
    ['transfer', client.transferOwnership(a, plain, b.nodeId)],
    ['member tags', client.setMemberTags(a, plain, b.nodeId, ['x'])],
  ] as const) {
    const err = await (p as Promise<unknown>).then(
      () => null,
      (e: Error & { code: string }) => e,
    );
    t.equal(err?.code, 'enterprise_required', `${what} on a plain network`);
    t.match(err?.message, /enterprise feature/);
  }
  const joined = await client.joinNetwork(await registerNode(client), plain);
  t.equal(joined.role, undefined, 'no roles on plain networks');
  t.equal((await client.kickMember(ADMIN, plain, b.nodeId)).node_id, b.nodeId, 'admin-token kick still works');
  t.equal(await code(client.createNetwork(ADMIN, { name: 'idp', joinRule: 'oidc', enterprise: false, identityRule: { kind: 'oidc', issuer: 'https://idp.example', audience: 'x' } })), 'enterprise_required');

  // toggling on assigns roles: the creator is owner, others members
  await client.joinNetwork(b, plain);
  t.equal((await client.setNetworkEnterprise(a, plain, true)).enterprise, true, 'the owner turns enterprise on (signed)');
  t.equal((await client.getMemberRole(b, plain, a.nodeId)).role, 'owner');
  t.equal((await client.getMemberRole(b, plain, b.nodeId)).role, 'member');
  t.equal(await code(client.setNetworkEnterprise(b, plain, false)), 'forbidden', 'a member cannot turn it off');
  await client.setNetworkEnterprise({ adminToken: ADMIN }, plain, false);
  t.equal(await code(client.getMemberRole(b, plain, a.nodeId)), 'enterprise_required', 'off erases roles');
});

t.test('RBAC: promote, demote, kick, transfer, with every refusal', async (t) => {
  const { client } = await startRegistry(t);
  const [owner, admin, member, outsider] = [await registerNode(client), await registerNode(client), await registerNode(client), await registerNode(client)];
  const net = await enterpriseNet(client, owner, 'corp');
  t.equal((await client.joinNetwork(admin, net)).role, 'member', 'joiners are members');
  await client.joinNetwork(member, net);

  t.equal((await client.promoteMember(owner, net, admin.nodeId)).role, 'admin');
  t.equal(await code(client.promoteMember(owner, net, admin.nodeId)), 'conflict', 'promote an admin');
  t.equal(await code(client.promoteMember(owner, net, owner.nodeId)), 'conflict', 'promote the owner');
  t.equal(await code(client.demoteMember(owner, net, member.nodeId)), 'conflict', 'demote a member');
  t.equal(await code(client.demoteMember(owner, net, owner.nodeId)), 'conflict', 'demote the owner');
  t.equal(await code(client.promoteMember(admin, net, member.nodeId)), 'forbidden', 'admins cannot promote');
  t.equal(await code(client.promoteMember(outsider, net, member.nodeId)), 'forbidden', 'non-members cannot');
  t.equal(await code(client.promoteMember(owner, net, outsider.nodeId)), 'not_found', 'target must be a member');

  t.equal(await code(client.kickMember(admin, net, owner.nodeId)), 'forbidden', 'admins cannot kick the owner');
  t.equal(await code(client.kickMember(member, net, admin.nodeId)), 'forbidden', 'members cannot kick');

  // kick produces a push the kicked daemon can act on
  const events: PushEvent[] = [];
  let subscribed!: () => void;
  const ready = new Promise<void>((r) => (subscribed = r));
  const sub = client.subscribe(member, (e) => events.push(e), { onSubscribed: () => subscribed() });
  t.teardown(() => sub.close());
  await ready;
  t.equal((await client.kickMember(admin, net, member.nodeId)).node_id, member.nodeId, 'an admin kicks a member');
  for (let i = 0; i < 100 && !events.some((e) => e.event === 'network_membership'); i++) await new Promise((r) => setTimeout(r, 10));
  t.match(events.find((e) => e.event === 'network_membership'), { network_id: net, node_id: member.nodeId, action: 'kick' }, 'kicked node gets the kick push');
  t.notOk((await client.listNodes(net, owner)).nodes.some((n) => n.node_id === member.nodeId), 'gone from the member list');

  // transfer
  t.equal(await code(client.transferOwnership(admin, net, admin.nodeId)), 'forbidden', 'only the owner transfers');
  t.equal(await code(client.transferOwnership(owner, net, owner.nodeId)), 'conflict', 'self-transfer');
  t.equal(await code(client.transferOwnership(owner, net, outsider.nodeId)), 'not_found', 'to a non-member');
  const tr = await client.transferOwnership(owner, net, admin.nodeId);
  t.same([tr.owner_id, tr.previous_owner_id], [admin.nodeId, owner.nodeId]);
  t.equal((await client.getMemberRole(owner, net, owner.nodeId)).role, 'admin', 'old owner is admin');
  t.equal((await client.getMemberRole(owner, net, admin.nodeId)).role, 'owner', 'new owner is owner');
  const members = await client.listMembers(owner, net);
  t.same(
    members.members.map((m) => [m.node_id, m.role]),
    [
      [owner.nodeId, 'admin'],
      [admin.nodeId, 'owner'],
    ],
    'exactly one owner',
  );
  // chain A→B→C
  await client.joinNetwork(outsider, net);
  await client.transferOwnership(admin, net, outsider.nodeId);
  t.equal((await client.getMemberRole(owner, net, outsider.nodeId)).role, 'owner', 'second transfer in a chain');
  t.equal(await code(client.leaveNetwork(outsider, net)), 'conflict', 'the owner cannot leave before transferring');
});

t.test('signed actors: forged actor, stale and replayed signatures are refused', async (t) => {
  const clock = new TestClock(Date.now());
  const { client, port } = await startRegistry(t, { clock });
  const [owner, member] = [await registerNode(client), await registerNode(client)];
  const net = await enterpriseNet(client, owner, 'signed');
  await client.joinNetwork(member, net);

  // member's key claiming to be the owner
  const forged: NodeAuth = { identity: member.identity, nodeId: owner.nodeId };
  t.equal(await code(client.promoteMember(forged, net, member.nodeId)), 'bad_signature', 'forged actor_id');
  const stranger: NodeAuth = { identity: Identity.generate(), nodeId: owner.nodeId };
  t.equal(await code(client.kickMember(stranger, net, member.nodeId)), 'bad_signature', 'unregistered key naming the owner');

  const raw = await RawConn.open(port);
  t.teardown(() => raw.socket.destroy());
  const ts = clock.now();
  const frame = {
    type: 'promote_member',
    network_id: net,
    node_id: member.nodeId,
    actor_id: owner.nodeId,
    ts,
    signature: owner.identity.signB64(`${challenges.networkOp('promote_member', owner.nodeId, net, member.nodeId)}:${ts}`),
  };
  raw.send(frame);
  t.match(await raw.next(), { type: 'promote_member_ok', role: 'admin' });
  await client.demoteMember(owner, net, member.nodeId);
  raw.send(frame);
  t.match(await raw.next(), { type: 'error', code: 'replayed_signature' }, 'the same signed promote cannot be replayed');
  // a signature for another target is not accepted for this one
  const ts2 = clock.now() + 1;
  const forTarget = owner.identity.signB64(`${challenges.networkOp('promote_member', owner.nodeId, net, member.nodeId)}:${ts2}`);
  raw.send({ ...frame, node_id: owner.nodeId, ts: ts2, signature: forTarget });
  t.match(await raw.next(), { type: 'error', code: 'bad_signature' }, 'signature bound to the target');
  const old = clock.now() - 120_000;
  raw.send({ ...frame, ts: old, signature: owner.identity.signB64(`${challenges.networkOp('promote_member', owner.nodeId, net, member.nodeId)}:${old}`) });
  t.match(await raw.next(), { type: 'error', code: 'stale_signature' }, 'stale signature');
  t.equal((await client.getMemberRole(owner, net, member.nodeId)).role, 'member', 'nothing changed');
});

t.test('per-network admin token authorises that network only', async (t) => {
  const { client } = await startRegistry(t);
  const [owner, m1] = [await registerNode(client), await registerNode(client)];
  const a = await enterpriseNet(client, owner, 'net-a', { networkAdminToken: 'network-a-token-0123456789' });
  const b = await enterpriseNet(client, owner, 'net-b');
  await client.joinNetwork(m1, a);
  await client.joinNetwork(m1, b);
  const tok = { networkAdminToken: 'network-a-token-0123456789' };
  t.equal((await client.setMemberTags(tok, a, m1.nodeId, ['#GPU', 'eu'])).tags.join(), 'gpu,eu');
  t.equal(await code(client.setMemberTags(tok, b, m1.nodeId, ['gpu'])), 'unauthorized', 'not on another network');
  t.equal(await code(client.setMemberTags({ networkAdminToken: 'wrong-token-wrong-token' }, a, m1.nodeId, ['x'])), 'unauthorized');
  t.equal(await code(client.transferOwnership(tok, a, m1.nodeId)), 'forbidden', 'the network token acts as admin, not owner');
  const listed = await client.listNodes(a, m1);
  t.same(listed.nodes.find((n) => n.node_id === m1.nodeId)?.member_tags, ['gpu', 'eu'], 'member tags in list_nodes');
  t.equal((await client.listMembers(m1, a)).members.find((m) => m.node_id === m1.nodeId)?.role, 'member');
  await client.setNetworkAdminToken(owner, a, '');
  t.equal(await code(client.setMemberTags(tok, a, m1.nodeId, [])), 'unauthorized', 'cleared token no longer works');
  // policy by an admin role, readable by members for the daemon's admission
  await client.promoteMember(owner, a, m1.nodeId);
  await client.setNetworkPolicy(m1, a, { allowedPorts: [80, 443, 80] });
  t.same((await client.getNetworkPolicy(a, m1)).allowed_ports, [80, 443]);
});

t.test('invites: consent, expiry, inbox cap, max_members', async (t) => {
  const clock = new TestClock(Date.now());
  const { client } = await startRegistry(t, { clock, enterprise: { inviteInboxCap: 2 } });
  const [owner, guest, other] = [await registerNode(client), await registerNode(client), await registerNode(client)];
  const inv = (await client.createNetwork(ADMIN, { name: 'vip', joinRule: 'invite', nodeId: owner.nodeId, enterprise: true, maxMembers: 2 })).network_id;
  t.equal(await code(client.joinNetwork(guest, inv)), 'forbidden', 'direct join refused');
  t.equal(await code(client.inviteToNetwork(guest, inv, other.nodeId)), 'forbidden', 'non-members cannot invite');
  t.equal(await code(client.inviteToNetwork(owner, inv, owner.nodeId)), 'bad_request', 'self-invite');
  const sent = await client.inviteToNetwork(owner, inv, guest.nodeId, { ttlS: 3600 });
  t.equal(sent.status, 'invited');
  t.equal((await client.inviteToNetwork(owner, inv, guest.nodeId)).status, 'already_invited');
  const polled = await client.pollInvites(guest);
  t.match(polled.invites, [{ network_id: inv, network_name: 'vip', from_node_id: owner.nodeId }]);
  t.equal(await code(client.respondInvite(other, inv, true)), 'not_found', 'cannot accept an invite meant for another node');
  const acc = await client.respondInvite(guest, inv, true);
  t.match(acc, { accepted: true, role: 'member' });
  t.same((await client.pollInvites(guest)).invites, [], 'accepted invite is consumed');

  // max_members applies to accepts
  await client.inviteToNetwork(owner, inv, other.nodeId);
  t.equal(await code(client.respondInvite(other, inv, true)), 'limit_reached', 'accept at the cap');
  t.equal((await client.respondInvite(other, inv, false)).accepted, false, 'reject removes the invite');
  t.same((await client.pollInvites(other)).invites, []);

  // expiry
  const second = (await client.createNetwork(ADMIN, { name: 'vip2', joinRule: 'invite', nodeId: owner.nodeId, enterprise: true })).network_id;
  await client.inviteToNetwork(owner, second, other.nodeId, { ttlS: 60 });
  clock.advance(61_000);
  t.equal(await code(client.respondInvite(other, second, true)), 'not_found', 'expired invite cannot be accepted');
  t.same((await client.pollInvites(other)).invites, [], 'expired invites are gone');

  // inbox cap (2 here)
  const nets: number[] = [];
  for (const name of ['c1', 'c2', 'c3']) nets.push((await client.createNetwork(ADMIN, { name, joinRule: 'invite', nodeId: owner.nodeId, enterprise: true })).network_id);
  await client.inviteToNetwork(owner, nets[0]!, other.nodeId);
  await client.inviteToNetwork(owner, nets[1]!, other.nodeId);
  t.equal(await code(client.inviteToNetwork(owner, nets[2]!, other.nodeId)), 'limit_reached', 'inbox cap');

  // max_members at direct join
  const small = await enterpriseNet(client, owner, 'small', { maxMembers: 1 });
  t.equal(await code(client.joinNetwork(guest, small)), 'limit_reached', 'join at the cap');
});
