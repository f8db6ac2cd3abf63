import { RegistryError } from '../errors.js';
import { challenges } from '../protocol/challenges.js';
import type {
  DeregisterOk,
  HeartbeatOk,
  LookupOk,
  PoloScoreOk,
  PunchOk,
  RegisterOk,
  ResolveHostnameOk,
  ResolveOk,
  SetHostnameOk,
  SetTagsOk,
  SetTaskExecOk,
  SetVisibilityOk,
} from '../protocol/messages.js';
import {
  optString,
  parseHostPort,
  reqBool,
  reqInt,
  reqNodeId,
  reqString,
  reqStringArray,
  signedFields,
  type JsonObject,
} from '../protocol/validate.js';
import { hostnameProblem, normaliseTags } from '../rules.js';
import { NodeFlag, type NodeEntry } from '../state.js';
import type { Mutation } from '../store/types.js';
import { addressOf, type ConnInfo, type Handler, type HandlerContext } from './context.js';
import { keyReplaced, lookupWithIdentity, rotateKeyHandler } from './enterprise-keys.js';

/**
 * Node lifecycle and directory messages (wire reference §1.10): register, lookup, resolve, heartbeat,
 * deregister, set_*, resolve_hostname, punch, rotate_key, polo score. Every node-scoped mutation is
 * signed by the node itself (SPEC §6 caller binding).
 */

const MAX_SCORE = Number.MAX_SAFE_INTEGER;
const MAX_POLO_DELTA = 1_000_000;

/** A base64 Ed25519 public key: exactly 32 bytes, canonical standard base64. */
export function reqPublicKey(m: JsonObject, field: string): string {
  const text = reqString(m, field, 64);
  const buf = Buffer.from(text, 'base64');
  if (buf.length !== 32 || buf.toString('base64') !== text) throw new RegistryError('bad_request', `${field} must be a 32-byte Ed25519 key in standard base64`);
  return text;
}

/** Endpoint: host from the TCP peer, port from listen_addr (v1 rule); empty → the TCP peer address. */
function realAddrOf(listenAddr: string | undefined, conn: ConnInfo): string {
  const host = conn.ip.includes(':') ? `[${conn.ip}]` : conn.ip;
  if (listenAddr === undefined || listenAddr === '') return `${host}:${conn.port}`;
  const { port } = parseHostPort(listenAddr, 'listen_addr');
  return `${host}:${port}`;
}

function hostnameIssue(ctx: HandlerContext, node: NodeEntry | null, name: string): string | null {
  const problem = hostnameProblem(name);
  if (problem) return problem;
  const holder = ctx.state.byHostname.get(name);
  if (holder !== undefined && holder !== node?.id) return `hostname "${name}" is taken`;
  return null;
}

const register: Handler = {
  async handle(ctx, m, conn): Promise<RegisterOk> {
    const publicKey = reqPublicKey(m, 'public_key');
    const listenAddr = optString(m, 'listen_addr', 300);
    const owner = optString(m, 'owner', 256) || null;
    const hostname = optString(m, 'hostname', 253) || null;
    const realAddr = realAddrOf(listenAddr, conn);
    const knownId = ctx.state.byKey.get(publicKey);
    let node: NodeEntry;
    let mutations: Mutation[];
    let hostnameError: string | undefined;
    let existing = true;

    if (knownId !== undefined) {
      // Known key: proves possession (otherwise anyone could move this node's endpoint).
      ctx.limit(conn, 'register');
      const unsignedLegacy = m.signature === undefined && ctx.settings.legacySignatures;
      if (!unsignedLegacy) await ctx.verifyKey(publicKey, challenges.register(publicKey), signedFields(m), `node ${knownId}`);
      const current = ctx.state.node(knownId);
      if (!current || current.publicKey !== publicKey) throw new RegistryError('conflict', 'the key was rotated meanwhile; register again');
      ctx.enterprise.assertKeyUsable(knownId, ctx.nowSec());
      node = current;
      const ownerHolder = owner === null ? undefined : ctx.state.byOwner.get(owner);
      const newOwner = owner !== null && node.owner === null && ownerHolder === undefined ? owner : undefined;
      mutations = ctx.state.reregister(node, { realAddr, nowSec: ctx.nowSec(), owner: newOwner });
    } else if (owner !== null && ctx.state.byOwner.has(owner)) {
      // Unknown key, known owner: key-loss recovery, only while the holder is away.
      ctx.limit(conn, 'register_new');
      const holder = ctx.state.node(ctx.state.byOwner.get(owner)!)!;
      if (holder.online) {
        throw new RegistryError('conflict', `owner is held by node ${holder.id}, which is online; reclaiming needs it to be offline or deregistered`);
      }
      node = holder;
      ctx.log.warn({ node_id: node.id, ip: conn.ip }, 'node ID reclaimed by owner with a new key');
      mutations = ctx.state.reregister(node, { realAddr, nowSec: ctx.nowSec(), publicKey });
      mutations.push(...keyReplaced(ctx, node)); // enterprise: the lost key's expiry does not bind the new key
    } else {
      ctx.limit(conn, 'register_new');
      existing = false;
      const issue = hostname === null ? null : hostnameIssue(ctx, null, hostname);
      if (issue) hostnameError = issue;
      const created = ctx.state.createNode({ publicKey, owner, realAddr, hostname: issue ? null : hostname, nowSec: ctx.nowSec() });
      node = created.node;
      mutations = created.mutations;
    }

    if (existing) {
      // existing node: apply a requested hostname change (v1: a bad hostname is reported, not fatal)
      if (hostname !== null && hostname !== node.hostname) {
        const issue = hostnameIssue(ctx, node, hostname);
        if (issue) hostnameError = issue;
        else mutations.push(...ctx.state.setHostname(node, hostname));
      }
    }
    await ctx.commit(mutations);
    ctx.metrics.registrations.inc();
    ctx.log.debug({ node_id: node.id, ip: conn.ip }, 'registered');
    const reply: RegisterOk = { type: 'register_ok', node_id: node.id, network_id: 0, address: addressOf(0, node.id), public_key: node.publicKey };
    if (node.hostname !== null) reply.hostname = node.hostname;
    if (hostnameError) reply.hostname_error = hostnameError;
    return reply;
  },
};

export function lookupReply(n: NodeEntry): LookupOk {
  const reply: LookupOk = {
    type: 'lookup_ok',
    node_id: n.id,
    address: addressOf(0, n.id),
    networks: n.networks ? [0, ...n.networks] : [0],
    public_key: n.publicKey,
    public: n.isPublic,
    polo_score: n.polo,
  };
  if (n.hostname !== null) reply.hostname = n.hostname;
  if (n.tags) reply.tags = n.tags;
  if (n.taskExec) reply.task_exec = true;
  if (n.isPublic) reply.real_addr = n.realAddr; // never for private nodes
  return reply;
}

const lookup: Handler = {
  category: 'read',
  handle(ctx, m) {
    const n = ctx.state.requireOnline(reqNodeId(m), 'node');
    return lookupWithIdentity(ctx, m, n, lookupReply(n)); // enterprise: expired keys, external IDs
  },
};

function privateRefusal(target: number): RegistryError {
  return new RegistryError('forbidden', `node ${target} is private: its endpoint is disclosed only to nodes it trusts (both sides consented) or shares a network with`);
}

const resolve: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<ResolveOk> {
    const target = reqNodeId(m, 'node_id');
    const requester = reqNodeId(m, 'requester_id');
    await ctx.verifyNode(requester, challenges.resolve(requester, target), signedFields(m), 'requester');
    const t = ctx.state.requireOnline(target, 'node');
    ctx.enterprise.assertKeyUsable(target, ctx.nowSec());
    if (!ctx.state.canResolve(requester, target)) throw privateRefusal(target);
    return { type: 'resolve_ok', node_id: t.id, real_addr: t.realAddr };
  },
};

const heartbeat: Handler = {
  category: 'heartbeat',
  async handle(ctx, m): Promise<HeartbeatOk> {
    const id = reqNodeId(m);
    const node = await ctx.verifyNode(id, challenges.heartbeat(id), signedFields(m));
    const now = ctx.nowSec();
    ctx.state.markSeen(node, now); // batched to the store, see README "Heartbeats"
    return { type: 'heartbeat_ok', time: now, ...ctx.enterprise.keyWarning(id, now) };
  },
};

const deregister: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<DeregisterOk> {
    const id = reqNodeId(m);
    const node = await ctx.verifyNode(id, challenges.deregister(id), signedFields(m));
    await ctx.commit(ctx.state.deregister(node));
    ctx.metrics.deregistrations.inc();
    return { type: 'deregister_ok', node_id: id };
  },
};

const setVisibility: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<SetVisibilityOk> {
    const id = reqNodeId(m);
    const isPublic = reqBool(m, 'public');
    const node = await ctx.verifyNode(id, challenges.setVisibility(id), signedFields(m));
    if (node.isPublic !== isPublic) await ctx.commit(ctx.state.setFlag(node, NodeFlag.Public, isPublic));
    return { type: 'set_visibility_ok', node_id: id, visibility: isPublic ? 'public' : 'private' };
  },
};

const setHostname: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<SetHostnameOk> {
    const id = reqNodeId(m);
    const hostname = reqString(m, 'hostname', 253, 0);
    if (hostname !== '') {
      const problem = hostnameProblem(hostname);
      if (problem) throw new RegistryError('bad_request', problem);
    }
    const node = await ctx.verifyNode(id, challenges.setHostname(id), signedFields(m));
    const wanted = hostname === '' ? null : hostname;
    if (wanted !== null) {
      const holder = ctx.state.byHostname.get(wanted);
      if (holder !== undefined && holder !== id) throw new RegistryError('conflict', `hostname "${wanted}" is taken`);
    }
    if (node.hostname !== wanted) await ctx.commit(ctx.state.setHostname(node, wanted));
    return { type: 'set_hostname_ok', node_id: id, hostname };
  },
};

const setTags: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<SetTagsOk> {
    const id = reqNodeId(m);
    const tags = normaliseTags(reqStringArray(m, 'tags', 10, 33));
    const node = await ctx.verifyNode(id, challenges.setTags(id), signedFields(m));
    await ctx.commit(ctx.state.setTags(node, tags));
    return { type: 'set_tags_ok', node_id: id, tags };
  },
};

const setTaskExec: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<SetTaskExecOk> {
    const id = reqNodeId(m);
    const enabled = reqBool(m, 'enabled');
    const node = await ctx.verifyNode(id, challenges.setTaskExec(id), signedFields(m));
    if (node.taskExec !== enabled) await ctx.commit(ctx.state.setFlag(node, NodeFlag.TaskExec, enabled));
    return { type: 'set_task_exec_ok', node_id: id, task_exec: enabled };
  },
};

const resolveHostname: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<ResolveHostnameOk> {
    const hostname = reqString(m, 'hostname', 253);
    // A private node's hostname resolves only for a signed requester allowed to resolve it; anyone
    // else gets the same answer as for a hostname that does not exist.
    let requester: number | undefined;
    if (m.requester_id !== undefined) {
      requester = reqNodeId(m, 'requester_id');
      await ctx.verifyNode(requester, challenges.resolveHostname(requester, hostname), signedFields(m), 'requester');
    }
    const id = ctx.state.byHostname.get(hostname);
    const node = id === undefined ? undefined : ctx.state.node(id);
    const visible = node !== undefined && node.online && (node.isPublic || (requester !== undefined && ctx.state.canResolve(requester, node.id)));
    if (!visible) throw new RegistryError('not_found', `hostname "${hostname}" not found`);
    return { type: 'resolve_hostname_ok', node_id: node.id, address: addressOf(0, node.id), public: node.isPublic, hostname };
  },
};

const punch: Handler = {
  category: 'read',
  async handle(ctx, m): Promise<PunchOk> {
    const requester = reqNodeId(m, 'requester_id');
    const a = reqNodeId(m, 'node_a');
    const b = reqNodeId(m, 'node_b');
    if (a === b) throw new RegistryError('bad_request', 'node_a and node_b must differ');
    if (requester !== a && requester !== b) throw new RegistryError('forbidden', 'punch: requester_id must be node_a or node_b');
    await ctx.verifyNode(requester, challenges.punch(a, b), signedFields(m), 'requester');
    const na = ctx.state.requireOnline(a, 'node_a');
    const nb = ctx.state.requireOnline(b, 'node_b');
    const other = requester === a ? b : a;
    ctx.enterprise.assertKeyUsable(other, ctx.nowSec());
    if (!ctx.state.canResolve(requester, other)) throw privateRefusal(other);
    return { type: 'punch_ok', node_a: a, node_a_addr: na.realAddr, node_b: b, node_b_addr: nb.realAddr };
  },
};

function poloReply(type: PoloScoreOk['type'], n: NodeEntry): PoloScoreOk {
  return { type, node_id: n.id, address: addressOf(0, n.id), polo_score: n.polo };
}

const getPoloScore: Handler = {
  category: 'read',
  handle(ctx, m) {
    return poloReply('get_polo_score_ok', ctx.state.requireNode(reqNodeId(m)));
  },
};

const setPoloScore: Handler = {
  category: 'admin',
  async handle(ctx, m): Promise<PoloScoreOk> {
    ctx.requireAdmin(m, 'set_polo_score');
    const id = reqNodeId(m);
    const score = reqInt(m, 'polo_score', -MAX_SCORE, MAX_SCORE);
    const node = ctx.state.requireNode(id);
    await ctx.commit(ctx.state.setPolo(node, score));
    return poloReply('set_polo_score_ok', node);
  },
};

const updatePoloScore: Handler = {
  category: 'write',
  async handle(ctx, m): Promise<PoloScoreOk> {
    const id = reqNodeId(m);
    const delta = reqInt(m, 'delta', -MAX_POLO_DELTA, MAX_POLO_DELTA);
    const node = await ctx.verifyNode(id, challenges.updatePoloScore(id), signedFields(m));
    const score = Math.max(-MAX_SCORE, Math.min(MAX_SCORE, node.polo + delta));
    await ctx.commit(ctx.state.setPolo(node, score));
    return poloReply('update_polo_score_ok', node);
  },
};

export const nodeHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['register', register],
  ['lookup', lookup],
  ['resolve', resolve],
  ['heartbeat', heartbeat],
  ['deregister', deregister],
  ['set_visibility', setVisibility],
  ['set_hostname', setHostname],
  ['set_tags', setTags],
  ['set_task_exec', setTaskExec],
  ['resolve_hostname', resolveHostname],
  ['punch', punch],
  ['rotate_key', rotateKeyHandler],
  ['get_polo_score', getPoloScore],
  ['set_polo_score', setPoloScore],
  ['update_polo_score', updatePoloScore],
];
