import { hashJoinToken } from '../auth.js';
import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type {
  InviteToNetworkOk,
  ListMembersOk,
  MemberEntry,
  MemberRoleOk,
  PollInvitesOk,
  RespondInviteOk,
  SetJoinRuleOk,
  SetMemberTagsOk,
  SetNetworkAdminTokenOk,
  SetNetworkEnterpriseOk,
  SetRolePreassignmentOk,
  TransferOwnershipOk,
} from '../protocol/messages.js';
import { optInt, reqBool, reqNetworkId, reqNodeId, reqString, reqStringArray, signedFields, type JsonObject } from '../protocol/validate.js';
import { normaliseTags } from '../rules.js';
import type { NetworkEntry } from '../state.js';
import type { Mutation, Role } from '../store/types.js';
import { addressOf, type Handler, type HandlerContext } from './context.js';
import { atLeast, audit, authorizeActor, backboneRefusal, publishAll, roleOf } from './enterprise-auth.js';
import { MAX_INVITE_TTL_S } from './enterprise-state.js';
import { applyJoinRule, parseJoinRuleSpec } from './enterprise-join.js';
import { keyHandlers } from './enterprise-keys.js';

/**
 * Enterprise network operations (issue 6; registry/ENTERPRISE.md): enterprise toggle, join rules, RBAC
 * (promote, demote, transfer, roles, per-network admin token, pre-assignment by external ID), member tags,
 * member listing with external IDs, invites with consent. kick_member lives in networks.ts (it has a v1
 * admin-token form) and uses the same authorisation.
 */

const MAX_EXTERNAL_ID = 512;
/** pre-assignments per network (bounded like everything else) */
export const MAX_PREASSIGN = 10_000;

function enterpriseOn(ctx: HandlerContext, net: NetworkEntry, actorId: number | null): Mutation[] {
  const out = ctx.enterprise.putExt(net.id, { enterprise: true });
  // Give roles to members that lack one: the owner (creator, else the acting node, else the first member) becomes owner.
  let owner = net.ownerId !== null && net.members.has(net.ownerId) ? net.ownerId : null;
  if (owner === null && actorId !== null && net.members.has(actorId)) owner = actorId;
  if (owner === null && net.members.size > 0) owner = Math.min(...net.members);
  if (owner !== net.ownerId && owner !== null) {
    net.ownerId = owner;
    out.push({ kind: 'network', row: net.toRow() });
  }
  for (const id of net.members) {
    const cur = ctx.enterprise.member(net.id, id);
    const role: Role = id === owner ? 'owner' : cur?.role === 'admin' ? 'admin' : 'member';
    if (!cur || cur.role !== role) out.push(...ctx.enterprise.setRole(net.id, id, role));
  }
  return out;
}

const setNetworkEnterprise: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<SetNetworkEnterpriseOk> {
    const on = reqBool(m, 'enterprise');
    const { net, actor } = await authorizeActor(ctx, m, 'set_network_enterprise', 'owner');
    const ext = ctx.enterprise.ext(net.id);
    if ((ext?.enterprise ?? false) === on) return { type: 'set_network_enterprise_ok', network_id: net.id, enterprise: on };
    let mutations: Mutation[];
    if (on) mutations = enterpriseOn(ctx, net, actor.id);
    else {
      if (ext?.rule) throw new RegistryError('conflict', `network ${net.id} has an identity join rule (${net.joinRule}); set another join rule before turning enterprise off`);
      mutations = [...ctx.enterprise.putExt(net.id, { enterprise: false }), ...ctx.enterprise.clearRoles(net.id)];
      for (const inv of [...ctx.enterprise.invites.keys()]) mutations.push(...ctx.enterprise.dropInvite(inv, net.id));
    }
    await ctx.commit(mutations);
    const ts = ctx.nowSec();
    for (const id of net.members) ctx.publish(id, { type: 'push', event: 'network_role', network_id: net.id, node_id: id, role: on ? (roleOf(ctx, net, id) ?? null) : null, timestamp: ts });
    audit(ctx, on ? 'enterprise_on' : 'enterprise_off', { actor: actor.id, via: actor.via, network_id: net.id });
    return { type: 'set_network_enterprise_ok', network_id: net.id, enterprise: on };
  },
};

const setJoinRule: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<SetJoinRuleOk> {
    const spec = parseJoinRuleSpec(ctx, m);
    const { net, actor } = await authorizeActor(ctx, m, 'set_join_rule', 'admin');
    ctx.enterprise.requireEnterprise(net, 'set_join_rule');
    const mutations = applyJoinRule(ctx, net, spec, actor.id === null ? null : actor);
    await ctx.commit(mutations);
    audit(ctx, 'set_join_rule', { actor: actor.id, via: actor.via, network_id: net.id, join_rule: spec.joinRule });
    return { type: 'set_join_rule_ok', network_id: net.id, join_rule: spec.joinRule };
  },
};

/** promote_member / demote_member (owner only). */
function roleChange(op: 'promote_member' | 'demote_member'): Handler {
  return {
    category: 'admin',
    async handle(ctx, m): Promise<MemberRoleOk> {
      const target = reqNodeId(m);
      const { net, actor } = await authorizeActor(ctx, m, op, 'owner', target);
      ctx.enterprise.requireEnterprise(net, op);
      const cur = roleOf(ctx, net, target);
      if (!cur) throw new RegistryError('not_found', `node ${target} is not a member of network ${net.id}`);
      if (cur === 'owner') throw new RegistryError('conflict', `node ${target} is the owner of network ${net.id}: ${op === 'promote_member' ? 'it cannot be promoted' : 'transfer ownership instead of demoting'}`);
      const want: Role = op === 'promote_member' ? 'admin' : 'member';
      if (cur === want) throw new RegistryError('conflict', `node ${target} is already ${want === 'admin' ? 'an admin' : 'a member'} of network ${net.id}`);
      await ctx.commit(ctx.enterprise.setRole(net.id, target, want));
      publishAll(ctx, [...net.members], { type: 'push', event: 'network_role', network_id: net.id, node_id: target, role: want, timestamp: ctx.nowSec() });
      audit(ctx, op === 'promote_member' ? 'promote' : 'demote', { actor: actor.id, via: actor.via, network_id: net.id, node_id: target, external_id: ctx.enterprise.member(net.id, target)?.externalId ?? null });
      return { type: `${op}_ok`, network_id: net.id, node_id: target, role: want };
    },
  };
}

const transferOwnership: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<TransferOwnershipOk> {
    const newOwner = reqNodeId(m, 'new_owner_id');
    const { net, actor } = await authorizeActor(ctx, m, 'transfer_ownership', 'owner', newOwner);
    ctx.enterprise.requireEnterprise(net, 'transfer_ownership');
    const old = net.ownerId;
    if (!net.members.has(newOwner)) throw new RegistryError('not_found', `node ${newOwner} is not a member of network ${net.id}`);
    if (old === newOwner) throw new RegistryError('conflict', `node ${newOwner} already owns network ${net.id}`);
    ctx.state.requireNode(newOwner, 'new_owner_id');
    // One commit = one SQLite transaction: the network row and both role rows change together or not at all.
    const mutations: Mutation[] = [];
    if (old !== null && net.members.has(old)) mutations.push(...ctx.enterprise.setRole(net.id, old, 'admin'));
    mutations.push(...ctx.enterprise.setRole(net.id, newOwner, 'owner'));
    net.ownerId = newOwner;
    mutations.push({ kind: 'network', row: net.toRow() });
    await ctx.commit(mutations);
    const ts = ctx.nowSec();
    publishAll(ctx, [...net.members], { type: 'push', event: 'network_role', network_id: net.id, node_id: newOwner, role: 'owner', timestamp: ts });
    if (old !== null && net.members.has(old)) publishAll(ctx, [...net.members], { type: 'push', event: 'network_role', network_id: net.id, node_id: old, role: 'admin', timestamp: ts });
    audit(ctx, 'transfer_ownership', { actor: actor.id, via: actor.via, network_id: net.id, node_id: newOwner, previous_owner: old, external_id: ctx.enterprise.member(net.id, newOwner)?.externalId ?? null });
    return { type: 'transfer_ownership_ok', network_id: net.id, owner_id: newOwner, previous_owner_id: old ?? 0 };
  },
};

const getMemberRole: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<MemberRoleOk> {
    const target = reqNodeId(m);
    const { net } = await authorizeActor(ctx, m, 'get_member_role', 'member', target);
    ctx.enterprise.requireEnterprise(net, 'get_member_role');
    const role = roleOf(ctx, net, target);
    if (!role) throw new RegistryError('not_found', `node ${target} is not a member of network ${net.id}`);
    return { type: 'get_member_role_ok', network_id: net.id, node_id: target, role };
  },
};

const setNetworkAdminToken: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<SetNetworkAdminTokenOk> {
    const token = reqString(m, 'token', 256, 0);
    if (token !== '' && token.length < 16) throw new RegistryError('bad_request', 'token must be at least 16 characters ("" clears it)');
    const { net, actor } = await authorizeActor(ctx, m, 'set_network_admin_token', 'owner');
    ctx.enterprise.requireEnterprise(net, 'set_network_admin_token');
    await ctx.commit(ctx.enterprise.putExt(net.id, { adminTokenHash: token === '' ? null : hashJoinToken(token) }));
    audit(ctx, 'set_network_admin_token', { actor: actor.id, via: actor.via, network_id: net.id, enabled: token !== '' });
    return { type: 'set_network_admin_token_ok', network_id: net.id, enabled: token !== '' };
  },
};

const setRolePreassignment: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<SetRolePreassignmentOk> {
    const externalId = reqString(m, 'external_id', MAX_EXTERNAL_ID);
    const r = m.role;
    if (r !== null && r !== 'admin' && r !== 'member') throw new RegistryError('bad_request', 'role must be "admin", "member" or null (remove)');
    const role = r as 'admin' | 'member' | null;
    const { net, actor } = await authorizeActor(ctx, m, 'set_role_preassignment', role === 'admin' ? 'owner' : 'admin', externalId.toLowerCase());
    ctx.enterprise.requireEnterprise(net, 'set_role_preassignment');
    if (role !== null && ctx.enterprise.preassignCount(net.id) >= MAX_PREASSIGN && ctx.enterprise.preassigned(net.id, externalId) === undefined) {
      throw new RegistryError('limit_reached', `network ${net.id} has ${MAX_PREASSIGN} role pre-assignments; remove some first`);
    }
    await ctx.commit(ctx.enterprise.setPreassign(net.id, externalId, role));
    audit(ctx, 'set_role_preassignment', { actor: actor.id, via: actor.via, network_id: net.id, external_id: externalId, role });
    return { type: 'set_role_preassignment_ok', network_id: net.id, external_id: externalId.toLowerCase(), role };
  },
};

const setMemberTags: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<SetMemberTagsOk> {
    const target = reqNodeId(m);
    const tags = normaliseTags(reqStringArray(m, 'tags', 10, 33));
    const { net, actor } = await authorizeActor(ctx, m, 'set_member_tags', 'admin', target);
    ctx.enterprise.requireEnterprise(net, 'set_member_tags');
    const role = roleOf(ctx, net, target);
    if (!role) throw new RegistryError('not_found', `node ${target} is not a member of network ${net.id}`);
    const cur = ctx.enterprise.member(net.id, target) ?? { networkId: net.id, nodeId: target, role, externalId: null, tags: [] };
    await ctx.commit(ctx.enterprise.putMember({ ...cur, tags }));
    publishAll(ctx, [...net.members], { type: 'push', event: 'member_tags', network_id: net.id, node_id: target, tags, timestamp: ctx.nowSec() });
    audit(ctx, 'set_member_tags', { actor: actor.id, via: actor.via, network_id: net.id, node_id: target, external_id: cur.externalId, tags });
    return { type: 'set_member_tags_ok', network_id: net.id, node_id: target, tags };
  },
};

/** Every member with role, external ID, member tags and online state (members or admins; for the daemon's admission). */
const listMembers: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<ListMembersOk> {
    const { net } = await authorizeActor(ctx, m, 'list_members', 'member');
    const enterprise = ctx.enterprise.isEnterprise(net.id);
    const members: MemberEntry[] = [];
    for (const id of [...net.members].sort((a, b) => a - b)) {
      const n = ctx.state.node(id);
      const ext = ctx.enterprise.member(net.id, id);
      const e: MemberEntry = { node_id: id, address: addressOf(net.id, id), online: n?.online ?? false, member_tags: ext?.tags ?? [] };
      if (enterprise) e.role = roleOf(ctx, net, id)!;
      if (ext?.externalId) e.external_id = ext.externalId;
      if (n?.hostname) e.hostname = n.hostname;
      members.push(e);
    }
    return { type: 'list_members_ok', network_id: net.id, enterprise, members };
  },
};

// ---------------------------------------------------------------- invites

const inviteToNetwork: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<InviteToNetworkOk> {
    const target = reqNodeId(m);
    const ttl = optInt(m, 'ttl_s', 60, MAX_INVITE_TTL_S) ?? ctx.enterprise.inviteTtlS;
    const { net, actor } = await authorizeActor(ctx, m, 'invite_to_network', 'admin', target);
    ctx.enterprise.requireEnterprise(net, 'invite_to_network');
    if (actor.id === target) throw new RegistryError('bad_request', 'a node cannot invite itself');
    ctx.state.requireNode(target);
    if (net.members.has(target)) throw new RegistryError('conflict', `node ${target} is already a member of network ${net.id}`);
    const now = ctx.nowSec();
    const existing = ctx.enterprise.invite(target, net.id);
    if (existing && existing.expiresAt > now) {
      return { type: 'invite_to_network_ok', network_id: net.id, node_id: target, status: 'already_invited', expires_at: existing.expiresAt };
    }
    if (!existing && ctx.enterprise.inboxSize(target) >= ctx.enterprise.inviteInboxCap) {
      throw new RegistryError('limit_reached', `invite inbox of node ${target} is full (${ctx.enterprise.inviteInboxCap} pending invites)`);
    }
    const row = { toId: target, networkId: net.id, fromId: actor.id ?? 0, createdAt: now, expiresAt: now + ttl };
    await ctx.commit(ctx.enterprise.addInvite(row));
    ctx.publish(target, { type: 'push', event: 'network_invite', network_id: net.id, node_id: target, from_node_id: row.fromId, expires_at: row.expiresAt, timestamp: now });
    audit(ctx, 'invite', { actor: actor.id, via: actor.via, network_id: net.id, node_id: target, expires_at: row.expiresAt });
    return { type: 'invite_to_network_ok', network_id: net.id, node_id: target, status: 'invited', expires_at: row.expiresAt };
  },
};

/** Drop the node's expired invites (memory + mutations), auditing each. */
function expireInvites(ctx: HandlerContext, nodeId: number): Mutation[] {
  const now = ctx.nowSec();
  const out: Mutation[] = [];
  for (const inv of ctx.enterprise.invitesOf(nodeId)) {
    if (inv.expiresAt <= now) {
      out.push(...ctx.enterprise.dropInvite(nodeId, inv.networkId));
      audit(ctx, 'invite_expired', { network_id: inv.networkId, node_id: nodeId, inviter: inv.fromId });
    }
  }
  return out;
}

const pollInvites: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<PollInvitesOk> {
    const id = reqNodeId(m);
    await ctx.verifyNode(id, challenges.pollInvites(id), signedFields(m));
    const expired = expireInvites(ctx, id);
    if (expired.length) await ctx.commit(expired);
    const invites = ctx.enterprise.invitesOf(id).map((inv) => ({
      network_id: inv.networkId,
      network_name: ctx.state.network(inv.networkId)?.name ?? '',
      from_node_id: inv.fromId,
      created_at: inv.createdAt,
      expires_at: inv.expiresAt,
    }));
    return { type: 'poll_invites_ok', node_id: id, invites };
  },
};

const respondInvite: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<RespondInviteOk> {
    const id = reqNodeId(m);
    const netId = reqNetworkId(m);
    if (netId === 0) throw backboneRefusal('joined');
    const accept = reqBool(m, 'accept');
    const node = await ctx.verifyNode(id, challenges.respondInvite(id, netId), signedFields(m));
    const inv = ctx.enterprise.invite(id, netId);
    if (!inv) throw new RegistryError('not_found', `node ${id} has no invite to network ${netId}`);
    if (inv.expiresAt <= ctx.nowSec()) {
      await ctx.commit(ctx.enterprise.dropInvite(id, netId));
      audit(ctx, 'invite_expired', { network_id: netId, node_id: id, inviter: inv.fromId });
      throw new RegistryError('not_found', `the invite of node ${id} to network ${netId} expired at ${new Date(inv.expiresAt * 1000).toISOString()}; ask for a new one`);
    }
    const net = ctx.state.requireNetwork(netId);
    if (!accept) {
      await ctx.commit(ctx.enterprise.dropInvite(id, netId));
      audit(ctx, 'invite_rejected', { actor: id, network_id: netId, node_id: id, inviter: inv.fromId });
      return { type: 'respond_invite_ok', network_id: netId, node_id: id, accepted: false };
    }
    if (net.members.has(id)) {
      await ctx.commit(ctx.enterprise.dropInvite(id, netId));
      throw new RegistryError('conflict', `node ${id} is already a member of network ${netId}`);
    }
    if (net.maxMembers > 0 && net.members.size >= net.maxMembers) {
      throw new RegistryError('limit_reached', `membership limit reached: network ${netId} allows ${net.maxMembers} members`);
    }
    const mutations = [...ctx.enterprise.dropInvite(id, netId), ...ctx.state.addMember(net, node, ctx.nowSec())];
    let role: Role | undefined;
    if (ctx.enterprise.isEnterprise(netId)) {
      role = 'member';
      mutations.push(...ctx.enterprise.putMember({ networkId: netId, nodeId: id, role, externalId: null, tags: [] }));
    }
    await ctx.commit(mutations);
    publishAll(ctx, [...net.members], { type: 'push', event: 'network_membership', network_id: netId, node_id: id, action: 'join', timestamp: ctx.nowSec() });
    audit(ctx, 'invite_accepted', { actor: id, network_id: netId, node_id: id, inviter: inv.fromId, role });
    const reply: RespondInviteOk = { type: 'respond_invite_ok', network_id: netId, node_id: id, accepted: true, address: addressOf(netId, id) };
    if (role) reply.role = role;
    return reply;
  },
};

export { atLeast };

export const enterpriseHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['set_network_enterprise', setNetworkEnterprise],
  ['set_join_rule', setJoinRule],
  ['promote_member', roleChange('promote_member')],
  ['demote_member', roleChange('demote_member')],
  ['transfer_ownership', transferOwnership],
  ['get_member_role', getMemberRole],
  ['set_network_admin_token', setNetworkAdminToken],
  ['set_role_preassignment', setRolePreassignment],
  ['set_member_tags', setMemberTags],
  ['list_members', listMembers],
  ['invite_to_network', inviteToNetwork],
  ['poll_invites', pollInvites],
  ['respond_invite', respondInvite],
  ...keyHandlers,
];

export type { JsonObject };
