import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type { KeyInfoOk, LookupOk, RotateKeyOk } from '../protocol/messages.js';
import { reqNodeId, reqString, signedFields, type JsonObject } from '../protocol/validate.js';
import type { NodeEntry } from '../state.js';
import type { Mutation, NodeKeyRow } from '../store/types.js';
import { addressOf, type Handler, type HandlerContext } from './context.js';
import { audit } from './enterprise-auth.js';
import { MAX_KEY_EXPIRY_S } from './enterprise-state.js';

/**
 * Key lifecycle (issue 6, enterprise reference D): rotation where the old key signs a statement naming the
 * new key, with concurrent rotations detected; key expiry that is enforced (HandlerContext.verifyNode
 * refuses an expired key for every signed operation; lookup/resolve/punch refuse to hand it out) with a
 * warning in heartbeat replies; key info that survives restarts.
 */

function reqPublicKey(m: JsonObject, field: string): string {
  const text = reqString(m, field, 64);
  const buf = Buffer.from(text, 'base64');
  if (buf.length !== 32 || buf.toString('base64') !== text) throw new RegistryError('bad_request', `${field} must be a 32-byte Ed25519 key in standard base64`);
  return text;
}

function keyInfo(ctx: HandlerContext, n: NodeEntry, type: KeyInfoOk['type']): KeyInfoOk {
  const row = ctx.enterprise.keyRow(n.id, n.createdAt);
  const now = ctx.nowSec();
  const expired = row.expiresAt !== null && now >= row.expiresAt;
  return {
    type,
    node_id: n.id,
    public_key: n.publicKey,
    created_at: row.keyCreatedAt,
    rotated_at: row.rotatedAt,
    rotate_count: row.rotateCount,
    expires_at: row.expiresAt,
    key_age_days: Math.max(0, Math.floor((now - row.keyCreatedAt) / 86_400)),
    expired,
    expires_soon: !expired && row.expiresAt !== null && row.expiresAt - now <= ctx.enterprise.keyWarnS,
  };
}

/** rotate_key: replaces the v1 handler (same request/reply; the signed challenge names the new key). */
export const rotateKeyHandler: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<RotateKeyOk> {
    const id = reqNodeId(m);
    const newKey = reqPublicKey(m, 'new_public_key');
    const signed = signedFields(m);
    const before = ctx.state.requireNode(id);
    const oldKey = before.publicKey;
    // Fresh signatures must name the new key (`rotate:<node>:<new key>`); the bare v1 `rotate:<node>` only in legacy mode.
    const challenge = signed.ts === undefined ? challenges.rotateKey(id) : challenges.rotateKeyTo(id, newKey);
    await ctx.verifyKey(oldKey, challenge, signed, `node ${id}`);
    const node = ctx.state.requireNode(id);
    if (node.publicKey !== oldKey) {
      throw new RegistryError('conflict', `node ${id}'s key was rotated concurrently by another request; this rotation was not applied (retry signed with the current key)`);
    }
    const now = ctx.nowSec();
    ctx.enterprise.assertKeyUsable(id, now);
    if (oldKey === newKey) throw new RegistryError('conflict', "new_public_key is already this node's key");
    const holder = ctx.state.byKey.get(newKey);
    if (holder !== undefined) throw new RegistryError('conflict', `new_public_key is already registered to node ${holder}`);
    const prev = ctx.enterprise.keyRow(id, node.createdAt);
    // An expiring key hands its lifetime on: the new key expires as long after now as the old one did after its start.
    const expiresAt = prev.expiresAt === null ? null : now + Math.max(0, prev.expiresAt - prev.keyCreatedAt);
    const row: NodeKeyRow = { nodeId: id, keyCreatedAt: now, rotatedAt: now, rotateCount: prev.rotateCount + 1, expiresAt };
    await ctx.commit([...ctx.state.rotateKey(node, newKey), ...ctx.enterprise.putKey(row)]);
    const peers = new Set<number>([id]);
    for (const netId of node.networks ?? []) for (const member of ctx.state.network(netId)?.members ?? []) peers.add(member);
    for (const p of peers) ctx.publish(p, { type: 'push', event: 'key_rotated', node_id: id, public_key: newKey, timestamp: now });
    audit(ctx, 'rotate_key', { actor: id, node_id: id, rotate_count: row.rotateCount });
    return { type: 'rotate_key_ok', node_id: id, address: addressOf(0, id), public_key: newKey };
  },
};

/**
 * set_key_expiry: `expires_at` unix seconds (future, ≤ 10 years) or null/0 to clear. The node itself (signed)
 * may set or shorten its expiry but not extend or clear it; the admin token may do anything (also revive an
 * expired key so it can rotate).
 */
const setKeyExpiry: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<KeyInfoOk> {
    const id = reqNodeId(m);
    const raw = m.expires_at;
    if (raw !== undefined && raw !== null && (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 0)) {
      throw new RegistryError('bad_request', 'expires_at must be unix seconds (integer), or 0/null to clear');
    }
    const expiresAt = raw === undefined || raw === null || raw === 0 ? null : (raw as number);
    const isAdmin = m.admin_token !== undefined && m.admin_token !== null;
    let node: NodeEntry;
    if (isAdmin) {
      ctx.requireAdmin(m, 'set_key_expiry');
      node = ctx.state.requireNode(id);
    } else {
      node = await ctx.verifyNode(id, challenges.setKeyExpiry(id), signedFields(m));
    }
    const now = ctx.nowSec();
    if (expiresAt !== null && (expiresAt <= now || expiresAt > now + MAX_KEY_EXPIRY_S)) {
      throw new RegistryError('bad_request', 'expires_at must be in the future and at most 10 years ahead');
    }
    const prev = ctx.enterprise.keyRow(id, node.createdAt);
    if (!isAdmin && prev.expiresAt !== null && (expiresAt === null || expiresAt > prev.expiresAt)) {
      throw new RegistryError('forbidden', `node ${id} may shorten its key expiry but not extend or clear it; that needs the admin token`);
    }
    await ctx.commit(ctx.enterprise.putKey({ ...prev, expiresAt }));
    audit(ctx, 'set_key_expiry', { actor: isAdmin ? null : id, via: isAdmin ? 'admin_token' : 'signature', node_id: id, expires_at: expiresAt });
    return keyInfo(ctx, node, 'set_key_expiry_ok');
  },
};

/** get_key_info: public metadata (no secrets): key age, rotations, expiry. */
const getKeyInfo: Handler = {
  category: 'read',
  handle(ctx, m): KeyInfoOk {
    return keyInfo(ctx, ctx.state.requireNode(reqNodeId(m)), 'get_key_info_ok');
  },
};

/**
 * lookup extension: refuse nodes whose key expired (nobody should open a tunnel to it); with a signed
 * `requester_id`, add the node's admitted external IDs on networks the requester is a member of too.
 */
export async function lookupWithIdentity(ctx: HandlerContext, m: JsonObject, node: NodeEntry, reply: LookupOk): Promise<LookupOk> {
  ctx.enterprise.assertKeyUsable(node.id, ctx.nowSec());
  if (m.requester_id === undefined || m.requester_id === null) return reply;
  const requester = reqNodeId(m, 'requester_id');
  await ctx.verifyNode(requester, challenges.lookup(requester, node.id), signedFields(m), 'requester');
  const ids: Record<string, string> = {};
  for (const netId of node.networks ?? []) {
    const net = ctx.state.network(netId);
    if (!net?.members.has(requester)) continue;
    const ext = ctx.enterprise.member(netId, node.id)?.externalId;
    if (ext) ids[String(netId)] = ext;
  }
  if (Object.keys(ids).length) reply.external_ids = ids;
  return reply;
}

/**
 * Key replaced outside rotate_key (owner reclaim at register): a new key starts a fresh lifecycle; an expiry
 * set for the lost key does not carry over (only nodes that had key info get a row).
 */
export function keyReplaced(ctx: HandlerContext, node: NodeEntry): Mutation[] {
  const prev = ctx.enterprise.keys.get(node.id);
  if (!prev) return [];
  const now = ctx.nowSec();
  return ctx.enterprise.putKey({ nodeId: node.id, keyCreatedAt: now, rotatedAt: now, rotateCount: prev.rotateCount + 1, expiresAt: null });
}

export const keyHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['set_key_expiry', setKeyExpiry],
  ['get_key_info', getKeyInfo],
];
