import { hashJoinToken, joinTokenMatches } from '../auth.js';
import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type {
  CreateNetworkOk,
  DeleteNetworkOk,
  JoinNetworkOk,
  JoinRule,
  KickMemberOk,
  LeaveNetworkOk,
  ListNetworksOk,
  ListNodesOk,
  NetworkPolicyOk,
  NodeListing,
  PushEvent,
  RenameNetworkOk,
} from '../protocol/messages.js';
import { optBool, optInt, optIntArray, optNodeIdField, optString, reqNetworkId, reqNodeId, reqString, signedFields, type JsonObject } from '../protocol/validate.js';
import { MAX_ALLOWED_PORTS, MAX_MEMBERS_LIMIT, networkNameProblem, normalisePorts } from '../rules.js';
import type { NetworkEntry } from '../state.js';
import type { Mutation } from '../store/types.js';
import { addressOf, type Handler, type HandlerContext } from './context.js';
import { audit, authorizeActor, roleOf, type Actor } from './enterprise-auth.js';
import { admit, applyJoinRule, identityJoin, isIdentityRule, parseJoinRuleSpec } from './enterprise-join.js';

/**
 * Networks (v1 had them disabled; SPEC §6 and enterprise reference A). Membership operations are
 * signed by the member; administrative ones need the admin token. The enterprise layer adds roles
 * (owner/admin/member), invites and identity join rules on top: it plugs in through
 * `adminNetwork` (role-signed callers) and the join-rule switch in `join_network`.
 *
 * Network 0 is the backbone: every registered node is on it; it cannot be joined, left, deleted,
 * renamed, listed or given a policy.
 */

const MAX_TOKEN = 256;

function backboneRefusal(what: string): RegistryError {
  return new RegistryError('forbidden', `network 0 is the backbone: it cannot be ${what}`);
}

/** Non-backbone network that exists. */
function requireNetwork(ctx: HandlerContext, m: JsonObject, what: string): NetworkEntry {
  const id = reqNetworkId(m);
  if (id === 0) throw backboneRefusal(what);
  return ctx.state.requireNetwork(id);
}

/**
 * Who may administer a network (delete, rename, policy, kick): the registry admin token on any network
 * (v1); on enterprise networks also the network's admin token or a node signing as owner/admin
 * (enterprise-auth.ts). A signed caller on a non-enterprise network gets `enterprise_required`.
 * Authorisation comes before the existence check for token callers so unauthorised callers learn nothing.
 */
async function adminNetwork(
  ctx: HandlerContext,
  m: JsonObject,
  op: string,
  what: string,
  need: 'owner' | 'admin' = 'admin',
  target: number = 0,
): Promise<{ net: NetworkEntry; actor: Actor }> {
  const id = reqNetworkId(m);
  if (id === 0) throw backboneRefusal(what);
  if (m.actor_id === undefined && (m.network_admin_token === undefined || m.network_admin_token === null)) {
    ctx.requireAdmin(m, op);
    return { net: ctx.state.requireNetwork(id), actor: { id: null, via: 'admin_token', role: 'owner' } };
  }
  const r = await authorizeActor(ctx, m, op, need, target);
  if (r.actor.via !== 'admin_token') ctx.enterprise.requireEnterprise(r.net, op);
  return r;
}

/**
 * Member-or-admin read access (list_nodes, get_network_policy): an admin token, or a signature by a
 * member over `<challenge>:<ts>`.
 */
async function authorizeMemberRead(
  ctx: HandlerContext,
  m: JsonObject,
  net: NetworkEntry,
  challenge: (nodeId: number, networkId: number) => string,
  what: string,
): Promise<void> {
  if (ctx.hasAdmin(m)) return;
  if (m.node_id === undefined) throw new RegistryError('forbidden', `${what}: only members of network ${net.id} (signed node_id) or an admin may do this`);
  const id = reqNodeId(m);
  await ctx.verifyNode(id, challenge(id, net.id), signedFields(m));
  if (!ctx.state.network(net.id)?.members.has(id)) throw new RegistryError('forbidden', `${what}: node ${id} is not a member of network ${net.id}`);
}

function publishToMembers(ctx: HandlerContext, members: Iterable<number>, event: PushEvent): void {
  for (const id of members) ctx.publish(id, event);
}

function policyOf(net: NetworkEntry): { network_id: number; allowed_ports: number[]; max_members: number } {
  return { network_id: net.id, allowed_ports: net.allowedPorts, max_members: net.maxMembers };
}

function parsePolicy(m: JsonObject): { allowedPorts?: number[]; maxMembers?: number } {
  const ports = optIntArray(m, 'allowed_ports', MAX_ALLOWED_PORTS, 1, 65535);
  const maxMembers = optInt(m, 'max_members', 0, MAX_MEMBERS_LIMIT);
  const out: { allowedPorts?: number[]; maxMembers?: number } = {};
  if (ports !== undefined) out.allowedPorts = normalisePorts(ports);
  if (maxMembers !== undefined) out.maxMembers = maxMembers;
  return out;
}

function reqNetworkName(m: JsonObject): string {
  const name = reqString(m, 'name', 63);
  const problem = networkNameProblem(name);
  if (problem) throw new RegistryError('bad_request', problem);
  return name;
}

const createNetwork: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<CreateNetworkOk> {
    ctx.requireAdmin(m, 'create_network');
    const name = reqNetworkName(m);
    const spec = parseJoinRuleSpec(ctx, m);
    const enterprise = optBool(m, 'enterprise') ?? false;
    if (spec.rule && !enterprise) throw new RegistryError('enterprise_required', `join_rule "${spec.joinRule}" (identity) is an enterprise feature: create the network with enterprise: true`);
    const adminToken = optString(m, 'network_admin_token', 256);
    if (adminToken !== undefined && (!enterprise || adminToken.length < 16)) {
      throw new RegistryError(enterprise ? 'bad_request' : 'enterprise_required', enterprise ? 'network_admin_token must be at least 16 characters' : 'network_admin_token is an enterprise feature: create the network with enterprise: true');
    }
    const policy = parsePolicy(m);
    const creatorId = optNodeIdField(m, 'node_id');
    const creator = creatorId === undefined ? undefined : ctx.state.requireNode(creatorId, 'node');
    if (ctx.state.networkByName.has(name)) throw new RegistryError('conflict', `network name "${name}" is taken`);
    for (const id of new Set(Object.values(spec.groupNetworks ?? {}).flat())) {
      if (!ctx.state.network(id)) throw new RegistryError('not_found', `group_networks: network ${id} does not exist`);
    }
    const nowSec = ctx.nowSec();
    const { network, mutations } = ctx.state.createNetwork({
      name,
      joinRule: 'open', // set below by applyJoinRule, after the enterprise flag
      tokenHash: null,
      allowedPorts: policy.allowedPorts ?? [],
      maxMembers: policy.maxMembers ?? 0,
      ownerId: creator?.id ?? null,
      createdAt: nowSec,
    });
    if (enterprise) {
      mutations.push(...ctx.enterprise.putExt(network.id, { enterprise: true, adminTokenHash: adminToken ? hashJoinToken(adminToken) : null }));
    }
    mutations.push(...applyJoinRule(ctx, network, spec, null));
    if (creator) mutations.push(...admit(ctx, network, creator, null).mutations);
    await ctx.commit(mutations);
    audit(ctx, 'create_network', { via: 'admin_token', network_id: network.id, name, join_rule: spec.joinRule, enterprise, owner: creator?.id ?? null });
    const reply: CreateNetworkOk = { type: 'create_network_ok', network_id: network.id, name, join_rule: spec.joinRule };
    if (enterprise) reply.enterprise = true;
    return reply;
  },
};

const joinNetwork: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<JoinNetworkOk> {
    const id = reqNodeId(m);
    const netId = reqNetworkId(m);
    if (netId === 0) throw backboneRefusal('joined (every registered node is already on it)');
    const token = optString(m, 'token', MAX_TOKEN);
    const signed = signedFields(m);
    await ctx.verifyNode(id, challenges.joinNetwork(id, netId), signed);
    const node = ctx.state.requireNode(id);
    const net = ctx.state.requireNetwork(netId);
    if (net.members.has(id)) throw new RegistryError('conflict', `node ${id} is already a member of network ${netId}`);
    if (isIdentityRule(net.joinRule)) return identityJoin(ctx, m, node, net, signed.ts);
    switch (net.joinRule) {
      case 'open':
        break;
      case 'token':
        if (!token) throw new RegistryError('forbidden', `network ${netId} needs a join token`);
        if (!joinTokenMatches(net.tokenHash ?? '', token)) {
          audit(ctx, 'join_refused', { actor: id, network_id: netId, node_id: id, reason: 'wrong join token' });
          throw new RegistryError('forbidden', `join token for network ${netId} is wrong`);
        }
        break;
      case 'invite':
        throw new RegistryError('forbidden', `network ${netId} is invite-only: direct joins are refused; an owner or admin must invite the node (invite flow: invite_to_network, then respond_invite)`);
    }
    if (net.maxMembers > 0 && net.members.size >= net.maxMembers) {
      throw new RegistryError('limit_reached', `membership limit reached: network ${netId} allows ${net.maxMembers} members`);
    }
    const { mutations, role } = admit(ctx, net, node, null);
    await ctx.commit(mutations);
    publishToMembers(ctx, net.members, { type: 'push', event: 'network_membership', network_id: netId, node_id: id, action: 'join', timestamp: ctx.nowSec() });
    audit(ctx, 'join', { actor: id, network_id: netId, node_id: id, role });
    const reply: JoinNetworkOk = { type: 'join_network_ok', network_id: netId, node_id: id, address: addressOf(netId, id) };
    if (role) reply.role = role;
    return reply;
  },
};

const leaveNetwork: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<LeaveNetworkOk> {
    const id = reqNodeId(m);
    const netId = reqNetworkId(m);
    if (netId === 0) throw backboneRefusal('left');
    await ctx.verifyNode(id, challenges.leaveNetwork(id, netId), signedFields(m));
    const net = ctx.state.requireNetwork(netId);
    if (!net.members.has(id)) throw new RegistryError('not_found', `node ${id} is not a member of network ${netId}`);
    if (ctx.enterprise.isEnterprise(netId) && roleOf(ctx, net, id) === 'owner' && net.members.size > 1) {
      throw new RegistryError('conflict', `node ${id} owns enterprise network ${netId}: transfer ownership before leaving`);
    }
    const externalId = ctx.enterprise.member(netId, id)?.externalId ?? null;
    await ctx.commit([...ctx.state.removeMember(net, id), ...ctx.enterprise.dropMember(netId, id)]);
    const event: PushEvent = { type: 'push', event: 'network_membership', network_id: netId, node_id: id, action: 'leave', timestamp: ctx.nowSec() };
    publishToMembers(ctx, [...net.members, id], event);
    audit(ctx, 'leave', { actor: id, network_id: netId, node_id: id, external_id: externalId });
    return { type: 'leave_network_ok', network_id: netId, node_id: id };
  },
};

/**
 * kick_member: admin token (v1), or on enterprise networks an owner/admin (signed `actor_id`, or the
 * network admin token). The owner cannot be kicked; the target's pending invite and the invites it sent
 * for the network are dropped. Every member and the target get a `network_membership` push with action
 * "kick" (the daemon closes the target's sessions on that network when it sees it).
 */
const kickMember: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<KickMemberOk> {
    const target = reqNodeId(m);
    const { net, actor } = await adminNetwork(ctx, m, 'kick_member', 'kicked from', 'admin', target);
    if (!net.members.has(target)) throw new RegistryError('not_found', `node ${target} is not a member of network ${net.id}`);
    if (actor.via !== 'admin_token' && roleOf(ctx, net, target) === 'owner') throw new RegistryError('forbidden', `node ${target} owns network ${net.id}: the owner cannot be kicked`);
    const externalId = ctx.enterprise.member(net.id, target)?.externalId ?? null;
    const mutations: Mutation[] = [...ctx.state.removeMember(net, target), ...ctx.enterprise.dropMember(net.id, target), ...ctx.enterprise.dropInvitesFrom(target, net.id)];
    if (net.ownerId === target) {
      net.ownerId = null; // admin-token kick of the owner: the network is left without an owner
      mutations.push({ kind: 'network', row: net.toRow() });
    }
    await ctx.commit(mutations);
    const event: PushEvent = { type: 'push', event: 'network_membership', network_id: net.id, node_id: target, action: 'kick', timestamp: ctx.nowSec() };
    publishToMembers(ctx, [...net.members, target], event);
    audit(ctx, 'kick', { actor: actor.id, via: actor.via, network_id: net.id, node_id: target, external_id: externalId });
    return { type: 'kick_member_ok', network_id: net.id, node_id: target };
  },
};

const deleteNetwork: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<DeleteNetworkOk> {
    const { net, actor } = await adminNetwork(ctx, m, 'delete_network', 'deleted', 'owner');
    const { members, mutations } = ctx.state.deleteNetwork(net);
    mutations.push(...ctx.enterprise.dropNetwork(net.id));
    await ctx.commit(mutations);
    for (const id of members) {
      ctx.publish(id, { type: 'push', event: 'network_membership', network_id: net.id, node_id: id, action: 'delete', timestamp: ctx.nowSec() });
    }
    audit(ctx, 'delete_network', { actor: actor.id, via: actor.via, network_id: net.id });
    return { type: 'delete_network_ok', network_id: net.id };
  },
};

const renameNetwork: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<RenameNetworkOk> {
    const { net } = await adminNetwork(ctx, m, 'rename_network', 'renamed', 'admin');
    const name = reqNetworkName(m);
    const holder = ctx.state.networkByName.get(name);
    if (holder !== undefined && holder !== net.id) throw new RegistryError('conflict', `network name "${name}" is taken`);
    if (net.name !== name) await ctx.commit(ctx.state.renameNetwork(net, name));
    return { type: 'rename_network_ok', network_id: net.id, name };
  },
};

const listNetworks: Handler = {
  category: 'read',
  handle(ctx): ListNetworksOk {
    const networks = [{ id: 0, name: 'backbone', members: ctx.state.counters.total, join_rule: 'open' as JoinRule }];
    for (const net of ctx.state.networks.values()) networks.push({ id: net.id, name: net.name, members: net.members.size, join_rule: net.joinRule });
    return { type: 'list_networks_ok', networks };
  },
};

const listNodes: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<ListNodesOk> {
    const netId = reqNetworkId(m);
    if (netId === 0) throw new RegistryError('forbidden', 'listing network 0 (the backbone) is blocked: it would enumerate every node');
    const net = ctx.state.requireNetwork(netId);
    await authorizeMemberRead(ctx, m, net, challenges.listNodes, 'list_nodes');
    const nodes: NodeListing[] = [];
    for (const id of ctx.state.network(netId)?.members ?? []) {
      const n = ctx.state.node(id);
      if (!n || !n.online) continue;
      const entry: NodeListing = { node_id: id, address: addressOf(netId, id) };
      if (n.hostname !== null) entry.hostname = n.hostname;
      if (n.taskExec) entry.task_exec = true;
      if (n.isPublic) entry.real_addr = n.realAddr;
      const ext = ctx.enterprise.member(netId, id);
      if (ctx.enterprise.isEnterprise(netId)) entry.role = roleOf(ctx, net, id)!;
      if (ext?.externalId) entry.external_id = ext.externalId;
      if (ext?.tags.length) entry.member_tags = ext.tags;
      nodes.push(entry);
    }
    return { type: 'list_nodes_ok', network_id: netId, nodes };
  },
};

const getNetworkPolicy: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<NetworkPolicyOk> {
    const net = requireNetwork(ctx, m, 'given a policy');
    await authorizeMemberRead(ctx, m, net, challenges.getNetworkPolicy, 'get_network_policy');
    return { type: 'get_network_policy_ok', ...policyOf(ctx.state.requireNetwork(net.id)) };
  },
};

const setNetworkPolicy: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<NetworkPolicyOk> {
    const { net, actor } = await adminNetwork(ctx, m, 'set_network_policy', 'given a policy', 'admin');
    const policy = parsePolicy(m);
    if (policy.allowedPorts === undefined && policy.maxMembers === undefined) {
      throw new RegistryError('bad_request', 'set_network_policy needs allowed_ports and/or max_members');
    }
    if (policy.maxMembers !== undefined && policy.maxMembers > 0 && policy.maxMembers < net.members.size) {
      throw new RegistryError('conflict', `max_members ${policy.maxMembers} is below the current member count (${net.members.size})`);
    }
    await ctx.commit(ctx.state.setNetworkPolicy(net, policy));
    publishToMembers(ctx, net.members, { type: 'push', event: 'network_policy', ...policyOf(net), timestamp: ctx.nowSec() });
    audit(ctx, 'set_network_policy', { actor: actor.id, via: actor.via, network_id: net.id, allowed_ports: net.allowedPorts, max_members: net.maxMembers });
    return { type: 'set_network_policy_ok', ...policyOf(net) };
  },
};

export const networkHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['create_network', createNetwork],
  ['join_network', joinNetwork],
  ['leave_network', leaveNetwork],
  ['delete_network', deleteNetwork],
  ['rename_network', renameNetwork],
  ['kick_member', kickMember],
  ['list_networks', listNetworks],
  ['list_nodes', listNodes],
  ['get_network_policy', getNetworkPolicy],
  ['set_network_policy', setNetworkPolicy],
];
