import { hashJoinToken } from '../auth.js';
import { RegistryError } from '../errors.js';
import { IdentityRuleError, IdentityVerificationError, networksForGroups, parseIdentityRule, parseJoinProof, type IdentityRule, type JoinProof, type VerifiedIdentity } from '../identity/index.js';
import type { JoinNetworkOk, JoinRule, PushEvent, Role } from '../protocol/messages.js';
import { optString, type JsonObject } from '../protocol/validate.js';
import type { NetworkEntry, NodeEntry } from '../state.js';
import { IDENTITY_RULE_KINDS, type IdentityRuleKind, type Mutation } from '../store/types.js';
import { addressOf, type HandlerContext } from './context.js';
import { atLeast, audit, roleOf, type Actor } from './enterprise-auth.js';

/**
 * Join rules (issue 6): open | token | invite | an identity rule (oidc, spiffe, ca, ldap, webhook) verified
 * by registry/identity. An identity join verifies the proof off the request path (async I/O, other
 * requests keep flowing), re-checks the network after the await, records the admitted external ID on the
 * membership, applies RBAC pre-assignment and auto-joins the networks the identity's groups map to, all in
 * one commit. Refusals carry `[<identity code>] reason` and change nothing.
 */

export const JOIN_RULES: readonly JoinRule[] = ['open', 'token', 'invite', ...IDENTITY_RULE_KINDS];
const MAX_TOKEN = 256;
const MAX_RULE_JSON = 64 * 1024;
const MAX_GROUPS = 64;
const MAX_GROUP_NETWORKS = 64;

export interface JoinRuleSpec {
  joinRule: JoinRule;
  token: string | null;
  /** parsed rule + its canonical JSON (identity kinds) */
  rule: IdentityRule | null;
  ruleJson: string | null;
  groupNetworks: Record<string, number[]> | null;
}

export function isIdentityRule(rule: JoinRule): rule is IdentityRuleKind {
  return (IDENTITY_RULE_KINDS as readonly string[]).includes(rule);
}

/** Validate `join_rule`, `token`, `identity_rule`, `group_networks` of a request. */
export function parseJoinRuleSpec(_ctx: HandlerContext, m: JsonObject): JoinRuleSpec {
  const joinRule = m.join_rule as JoinRule;
  if (typeof joinRule !== 'string' || !JOIN_RULES.includes(joinRule)) {
    throw new RegistryError('bad_request', `join_rule must be one of ${JOIN_RULES.map((r) => `"${r}"`).join(', ')}`);
  }
  const token = optString(m, 'token', MAX_TOKEN) || null;
  if (joinRule === 'token' && !token) throw new RegistryError('bad_request', 'join_rule "token" needs a non-empty token');
  if (joinRule !== 'token' && token) throw new RegistryError('bad_request', 'token is only used with join_rule "token"');
  let rule: IdentityRule | null = null;
  let ruleJson: string | null = null;
  if (isIdentityRule(joinRule)) {
    if (m.identity_rule === undefined || m.identity_rule === null) throw new RegistryError('bad_request', `join_rule "${joinRule}" needs identity_rule (see registry/identity/README.md)`);
    ruleJson = JSON.stringify(m.identity_rule);
    if (ruleJson.length > MAX_RULE_JSON) throw new RegistryError('bad_request', `identity_rule is larger than ${MAX_RULE_JSON} bytes`);
    try {
      rule = parseIdentityRule(m.identity_rule);
    } catch (err) {
      if (err instanceof IdentityRuleError) throw new RegistryError('bad_request', `identity_rule: ${err.message}`);
      throw err;
    }
    if (rule.kind !== joinRule) throw new RegistryError('bad_request', `identity_rule.kind "${rule.kind}" does not match join_rule "${joinRule}"`);
  } else if (m.identity_rule !== undefined && m.identity_rule !== null) {
    throw new RegistryError('bad_request', 'identity_rule is only used with an identity join_rule (oidc, spiffe, ca, ldap, webhook)');
  }
  let groupNetworks: Record<string, number[]> | null = null;
  if (m.group_networks !== undefined && m.group_networks !== null) {
    if (!rule) throw new RegistryError('bad_request', 'group_networks is only used with an identity join_rule');
    const g = m.group_networks;
    if (typeof g !== 'object' || Array.isArray(g)) throw new RegistryError('bad_request', 'group_networks must be an object {group: [network_id, …]}');
    const entries = Object.entries(g as Record<string, unknown>);
    if (entries.length > MAX_GROUPS) throw new RegistryError('bad_request', `group_networks: at most ${MAX_GROUPS} groups`);
    groupNetworks = {};
    for (const [group, nets] of entries) {
      if (group.length === 0 || group.length > 512) throw new RegistryError('bad_request', 'group_networks: group names are 1-512 characters');
      if (!Array.isArray(nets) || nets.length > MAX_GROUP_NETWORKS || !nets.every((n) => Number.isInteger(n) && n >= 1 && n <= 0xffff)) {
        throw new RegistryError('bad_request', `group_networks["${group.slice(0, 64)}"] must be at most ${MAX_GROUP_NETWORKS} network IDs in 1..65535`);
      }
      groupNetworks[group] = [...new Set(nets as number[])];
    }
  }
  return { joinRule, token, rule, ruleJson, groupNetworks };
}

/**
 * Apply a validated join-rule spec to a network (create_network, set_join_rule). Identity rules need an
 * enterprise network; mapped networks must exist and, for a signed actor, be administered by it (an
 * admin of one network cannot push identities into networks it does not control).
 */
export function applyJoinRule(ctx: HandlerContext, net: NetworkEntry, spec: JoinRuleSpec, actor: Actor | null): Mutation[] {
  if (spec.rule && !ctx.enterprise.isEnterprise(net.id)) {
    throw new RegistryError('enterprise_required', `identity join rules are an enterprise feature: network ${net.id} needs enterprise: true`);
  }
  for (const id of new Set(Object.values(spec.groupNetworks ?? {}).flat())) {
    const target = ctx.state.network(id);
    if (!target) throw new RegistryError('not_found', `group_networks: network ${id} does not exist`);
    if (actor?.id != null && id !== net.id) {
      const r = roleOf(ctx, target, actor.id);
      if (!r || !atLeast(r, 'admin')) throw new RegistryError('forbidden', `group_networks: node ${actor.id} is not an owner or admin of network ${id}`);
    }
  }
  net.joinRule = spec.joinRule;
  net.tokenHash = spec.token ? hashJoinToken(spec.token) : null;
  return [
    { kind: 'network', row: net.toRow() },
    ...ctx.enterprise.putExt(net.id, { identityRule: spec.ruleJson, rule: spec.rule, groupNetworks: spec.groupNetworks }),
  ];
}

/** Membership rows for `node` joining `net` (role from pre-assignment on enterprise networks). */
export function admit(ctx: HandlerContext, net: NetworkEntry, node: NodeEntry, externalId: string | null): { mutations: Mutation[]; role: Role | undefined } {
  const mutations = ctx.state.addMember(net, node, ctx.nowSec());
  let role: Role | undefined;
  if (ctx.enterprise.isEnterprise(net.id)) {
    role = ctx.enterprise.preassigned(net.id, externalId) ?? 'member';
    if (net.ownerId === node.id) role = 'owner';
    mutations.push(...ctx.enterprise.putMember({ networkId: net.id, nodeId: node.id, role, externalId, tags: [] }));
  }
  return { mutations, role };
}

function membershipEvent(netId: number, nodeId: number, now: number, externalId?: string): PushEvent {
  const e: PushEvent = { type: 'push', event: 'network_membership', network_id: netId, node_id: nodeId, action: 'join', timestamp: now };
  if (externalId) e.external_id = externalId;
  return e;
}

function refusal(ctx: HandlerContext, net: NetworkEntry, nodeId: number, code: string, message: string): RegistryError {
  audit(ctx, 'join_refused', { actor: nodeId, network_id: net.id, node_id: nodeId, reason: code });
  return new RegistryError('identity_refused', `[${code}] network ${net.id} refused the identity proof: ${message}`);
}

/**
 * join_network on a network with an identity rule. The caller already verified the node's fresh signature
 * (`ts` is that request's ts; the proof of possession is bound to it).
 */
export async function identityJoin(ctx: HandlerContext, m: JsonObject, node: NodeEntry, net: NetworkEntry, ts: number | undefined): Promise<JoinNetworkOk> {
  const ext = ctx.enterprise.ext(net.id);
  const rule = ext?.rule;
  if (!rule) throw new RegistryError('unavailable', `network ${net.id}'s identity rule could not be loaded; an owner must set it again`);
  if (ts === undefined) throw new RegistryError('bad_signature', 'identity joins need a fresh signature (ts); bare v1 signatures are not accepted');
  let proof: JoinProof;
  try {
    proof = parseJoinProof(m.proof ?? {});
  } catch (err) {
    throw refusal(ctx, net, node.id, (err as IdentityVerificationError).code ?? 'bad_proof', (err as Error).message);
  }
  if (net.maxMembers > 0 && net.members.size >= net.maxMembers) {
    throw new RegistryError('limit_reached', `membership limit reached: network ${net.id} allows ${net.maxMembers} members`);
  }
  const key = node.publicKey;
  let id: VerifiedIdentity;
  try {
    id = await ctx.enterprise.verifier.verify(rule, proof, { networkId: net.id, nodeId: node.id, nodePublicKey: Buffer.from(key, 'base64'), ts });
  } catch (err) {
    if (err instanceof IdentityVerificationError) throw refusal(ctx, net, node.id, err.code, err.message);
    throw err;
  }
  // Re-check everything the await may have changed (no await between these checks and the mutation).
  const now = ctx.nowSec();
  const cur = ctx.state.requireNode(node.id);
  if (cur.publicKey !== key) throw new RegistryError('conflict', `node ${node.id} rotated its key during the join; join again`);
  const netNow = ctx.state.network(net.id);
  if (netNow !== net || ctx.enterprise.ext(net.id)?.rule !== rule) throw new RegistryError('conflict', `network ${net.id} or its join rule changed during the join; join again`);
  if (net.members.has(node.id)) throw new RegistryError('conflict', `node ${node.id} is already a member of network ${net.id}`);
  if (net.maxMembers > 0 && net.members.size >= net.maxMembers) {
    throw new RegistryError('limit_reached', `membership limit reached: network ${net.id} allows ${net.maxMembers} members`);
  }
  const first = admit(ctx, net, cur, id.externalId);
  const mutations = [...first.mutations];
  const joined: NetworkEntry[] = [net];
  for (const targetId of networksForGroups(ext.groupNetworks ?? {}, id.groups)) {
    const target = ctx.state.network(targetId);
    if (!target || target === net || target.members.has(node.id)) continue;
    if (target.maxMembers > 0 && target.members.size >= target.maxMembers) {
      audit(ctx, 'auto_join_skipped', { actor: node.id, network_id: targetId, node_id: node.id, external_id: id.externalId, reason: 'membership limit reached' });
      continue;
    }
    mutations.push(...admit(ctx, target, cur, id.externalId).mutations);
    joined.push(target);
  }
  await ctx.commit(mutations);
  for (const n of joined) {
    for (const member of n.members) ctx.publish(member, membershipEvent(n.id, node.id, now, id.externalId));
    audit(ctx, 'join', { actor: node.id, network_id: n.id, node_id: node.id, external_id: id.externalId, role: ctx.enterprise.role(n.id, node.id), auto: n !== net });
  }
  const reply: JoinNetworkOk = { type: 'join_network_ok', network_id: net.id, node_id: node.id, address: addressOf(net.id, node.id), external_id: id.externalId };
  if (first.role) reply.role = first.role;
  if (joined.length > 1) reply.auto_joined = joined.slice(1).map((n) => n.id);
  return reply;
}
