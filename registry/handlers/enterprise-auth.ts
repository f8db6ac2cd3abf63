import { joinTokenMatches } from '../auth.js';
import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type { PushEvent, Role } from '../protocol/messages.js';
import { reqNetworkId, reqNodeId, signedFields, type JsonObject } from '../protocol/validate.js';
import type { NetworkEntry } from '../state.js';
import type { HandlerContext } from './context.js';

/**
 * Who is acting on an enterprise network (issue 6 "every role-gated command is signed by the acting
 * node"). Three ways, checked in this order:
 * - `admin_token`: the registry's global admin token (acts as owner);
 * - `network_admin_token`: the network's own admin token (acts as admin, on that network only);
 * - `actor_id` + `ts` + `signature` over `<op>:<actor_id>:<network_id>:<target>` (challenges.networkOp), by
 *   the actor's registered, unexpired key, fresh and not replayed; its role is then looked up.
 * The reference implementation took the caller's node ID from the message without a signature on this
 * path; here a forged actor_id fails the signature check.
 */

export type Level = Role;
const RANK: Record<Role, number> = { member: 1, admin: 2, owner: 3 };

export interface Actor {
  /** null for token callers */
  id: number | null;
  via: 'admin_token' | 'network_admin_token' | 'signature';
  /** effective role (token callers: owner for the global token, admin for the network token) */
  role: Role;
}

export function backboneRefusal(what: string): RegistryError {
  return new RegistryError('forbidden', `network 0 is the backbone: it cannot be ${what}`);
}

/** Role of a node on a network: enterprise role row, else owner by ownerId, else member by membership. */
export function roleOf(ctx: HandlerContext, net: NetworkEntry, nodeId: number): Role | undefined {
  if (!net.members.has(nodeId)) return undefined;
  const r = ctx.enterprise.role(net.id, nodeId);
  if (r) return r;
  return net.ownerId === nodeId ? 'owner' : 'member';
}

/**
 * Authenticate the caller of role-gated `op` on the request's network and require at least `need`.
 * `target` goes into the signed challenge (the node or external ID acted on; 0 when none).
 */
export async function authorizeActor(
  ctx: HandlerContext,
  m: JsonObject,
  op: string,
  need: Level,
  target: number | string = 0,
): Promise<{ net: NetworkEntry; actor: Actor }> {
  const netId = reqNetworkId(m);
  if (netId === 0) throw backboneRefusal(`administered (${op})`);
  if (m.admin_token !== undefined && m.admin_token !== null) {
    ctx.requireAdmin(m, op);
    return { net: ctx.state.requireNetwork(netId), actor: { id: null, via: 'admin_token', role: 'owner' } };
  }
  if (m.network_admin_token !== undefined && m.network_admin_token !== null) {
    const given = m.network_admin_token;
    if (typeof given !== 'string' || given.length > 4096) throw new RegistryError('bad_request', 'network_admin_token must be a string');
    const net = ctx.state.network(netId);
    const hash = net ? ctx.enterprise.ext(netId)?.adminTokenHash : null;
    // same answer for "no such network", "no token set" and "wrong token": unauthorised callers learn nothing
    if (!net || !hash || !joinTokenMatches(hash, given)) throw new RegistryError('unauthorized', `${op}: network_admin_token is wrong or not set for network ${netId}`);
    if (RANK[need] > RANK.admin) throw new RegistryError('forbidden', `${op} needs the network owner; a network admin token acts as admin`);
    return { net, actor: { id: null, via: 'network_admin_token', role: 'admin' } };
  }
  if (m.actor_id === undefined) {
    throw new RegistryError('forbidden', `${op}: sign as the acting node (actor_id, ts, signature over "${op}:<actor_id>:${netId}:${target}:<ts>") or give an admin token`);
  }
  const actorId = reqNodeId(m, 'actor_id');
  await ctx.verifyNode(actorId, challenges.networkOp(op, actorId, netId, target), signedFields(m), 'actor');
  const net = ctx.state.requireNetwork(netId);
  const role = roleOf(ctx, net, actorId);
  if (!role) throw new RegistryError('forbidden', `${op}: node ${actorId} is not a member of network ${netId}`);
  if (RANK[role] < RANK[need]) throw new RegistryError('forbidden', `${op} needs the ${need} role on network ${netId}; node ${actorId} is ${role === 'admin' ? 'an admin' : `a ${role}`}`);
  return { net, actor: { id: actorId, via: 'signature', role } };
}

/** Does `role` meet `need`? */
export function atLeast(role: Role, need: Role): boolean {
  return RANK[role] >= RANK[need];
}

/**
 * One audit line per audit-relevant action (issue 6): action, actor, network, subject node and its
 * external ID. Never tokens, keys or signatures.
 */
export function audit(
  ctx: HandlerContext,
  action: string,
  f: { actor?: number | null; via?: Actor['via']; network_id?: number; node_id?: number; external_id?: string | null; [k: string]: unknown },
): void {
  ctx.log.info({ audit: action, ...f }, `audit: ${action}`);
}

export function publishAll(ctx: HandlerContext, ids: Iterable<number>, event: PushEvent): void {
  for (const id of new Set(ids)) ctx.publish(id, event);
}
