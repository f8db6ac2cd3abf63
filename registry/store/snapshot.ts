import { hashJoinToken } from '../auth.js';
import { PilotError } from '../../transport/errors.js';
import { hostnameProblem, MAX_TAGS, networkNameProblem } from '../rules.js';
import type {
  HandshakeRequestRow,
  HandshakeResponseRow,
  JoinRuleName,
  MembershipRow,
  Mutation,
  NetworkRow,
  NodeRow,
  RegistryStore,
  TrustRow,
} from './types.js';

/**
 * Import of a v1 registry JSON snapshot (wire reference §1.10 "Snapshot JSON") into an empty store,
 * keeping node IDs, keys, owners, hostnames, tags, polo scores, task_exec, visibility, trust pairs,
 * handshake inboxes and the ID counters. Strict: any malformed entry aborts the whole import, naming
 * its path; nothing is written unless everything parses. Keys in `pub_key_idx` whose node was reaped
 * become deregistered records, so the key reclaims its old ID on re-registration (v1 behaviour).
 * v1 trust pairs were unilateral; imported pairs are recorded as consented by both sides.
 */
export class SnapshotError extends PilotError {}

type J = Record<string, unknown>;

function fail(path: string, msg: string): never {
  throw new SnapshotError('bad_snapshot', `${path}: ${msg}`);
}

function obj(v: unknown, path: string): J {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'must be an object');
  return v as J;
}

function int(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(path, `must be an integer in ${min}..${max}`);
  return v;
}

function optStr(v: unknown, path: string): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string') fail(path, 'must be a string');
  return v;
}

function optBool(v: unknown, path: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') fail(path, 'must be a boolean');
  return v;
}

function pubKey(v: unknown, path: string): string {
  if (typeof v !== 'string') fail(path, 'must be a base64 string');
  const b = Buffer.from(v, 'base64');
  if (b.length !== 32 || b.toString('base64') !== v) fail(path, 'must be a 32-byte Ed25519 key in standard base64');
  return v;
}

/** RFC3339 (with optional fractional seconds) → unix ms. */
function time(v: unknown, path: string, fallbackMs: number): number {
  if (v === undefined || v === null || v === '') return fallbackMs;
  if (typeof v !== 'string') fail(path, 'must be an RFC3339 time string');
  const ms = Date.parse(v.replace(/(\.\d{3})\d+/, '$1'));
  if (!Number.isFinite(ms)) fail(path, `"${v}" is not an RFC3339 time`);
  // Go's zero time ("0001-01-01T00:00:00Z") means "unset"
  return ms < 0 ? fallbackMs : ms;
}

export interface ImportSummary {
  nodes: number;
  reclaimableKeys: number;
  networks: number;
  memberships: number;
  trustPairs: number;
  handshakeRequests: number;
  handshakeResponses: number;
  nextNodeId: number;
  nextNetworkId: number;
}

/** Parse a v1 snapshot into store mutations (no I/O). */
export function snapshotToMutations(json: unknown, nowMs: number): { mutations: Mutation[]; summary: ImportSummary } {
  const root = obj(json, 'snapshot');
  const nowSec = Math.floor(nowMs / 1000);
  const nodes = new Map<number, NodeRow>();
  const keys = new Map<string, number>();
  const hostnames = new Set<string>();
  const nodesObj = root.nodes === undefined || root.nodes === null ? {} : obj(root.nodes, 'nodes');
  const memberships: MembershipRow[] = [];
  const nodeNetworks = new Map<number, number[]>();

  for (const [key, raw] of Object.entries(nodesObj)) {
    const path = `nodes.${key}`;
    const n = obj(raw, path);
    const id = int(n.id, `${path}.id`, 1, 0xffffffff);
    if (String(id) !== key) fail(`${path}.id`, `${id} does not match its key`);
    const publicKey = pubKey(n.public_key, `${path}.public_key`);
    if (keys.has(publicKey)) fail(`${path}.public_key`, `already used by node ${keys.get(publicKey)}`);
    const hostname = optStr(n.hostname, `${path}.hostname`);
    if (hostname !== null && (hostnameProblem(hostname) || hostnames.has(hostname))) fail(`${path}.hostname`, `"${hostname}" is invalid or duplicated`);
    if (hostname !== null) hostnames.add(hostname);
    let tags: string[] = [];
    if (n.tags !== undefined && n.tags !== null) {
      if (!Array.isArray(n.tags) || n.tags.length > MAX_TAGS || !n.tags.every((t) => typeof t === 'string')) fail(`${path}.tags`, `must be at most ${MAX_TAGS} strings`);
      tags = n.tags as string[];
    }
    const realAddr = optStr(n.real_addr, `${path}.real_addr`) ?? '';
    const lastSeenMs = time(n.last_seen, `${path}.last_seen`, nowMs);
    if (n.networks !== undefined && n.networks !== null) {
      if (!Array.isArray(n.networks)) fail(`${path}.networks`, 'must be an array of network IDs');
      nodeNetworks.set(id, (n.networks as unknown[]).map((x, i) => int(x, `${path}.networks[${i}]`, 0, 0xffff)));
    }
    const row: NodeRow = {
      id,
      publicKey,
      owner: optStr(n.owner, `${path}.owner`),
      realAddr,
      isPublic: optBool(n.public, `${path}.public`),
      hostname,
      tags,
      taskExec: optBool(n.task_exec, `${path}.task_exec`),
      poloScore: n.polo_score === undefined ? 0 : int(n.polo_score, `${path}.polo_score`, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
      lastSeen: Math.floor(lastSeenMs / 1000),
      deregistered: false,
      createdAt: nowSec,
    };
    nodes.set(id, row);
    keys.set(publicKey, id);
  }

  // keys of reaped nodes: keep the ID reclaimable
  let reclaimable = 0;
  if (root.pub_key_idx !== undefined && root.pub_key_idx !== null) {
    for (const [k, v] of Object.entries(obj(root.pub_key_idx, 'pub_key_idx'))) {
      const path = `pub_key_idx["${k.slice(0, 12)}…"]`;
      const key = pubKey(k, path);
      const id = int(v, path, 1, 0xffffffff);
      const existing = nodes.get(id);
      if (existing) {
        if (existing.publicKey !== key && keys.get(key) !== undefined) fail(path, `key maps to node ${id} but is also node ${keys.get(key)}'s key`);
        continue; // index entry for a live node (or a stale alias of a rotated key): nothing to add
      }
      if (keys.has(key)) continue;
      nodes.set(id, {
        id,
        publicKey: key,
        owner: null,
        realAddr: '',
        isPublic: false,
        hostname: null,
        tags: [],
        taskExec: false,
        poloScore: 0,
        lastSeen: 0,
        deregistered: true,
        createdAt: nowSec,
      });
      keys.set(key, id);
      reclaimable++;
    }
  }

  const networks: NetworkRow[] = [];
  const names = new Set<string>();
  if (root.networks !== undefined && root.networks !== null) {
    for (const [key, raw] of Object.entries(obj(root.networks, 'networks'))) {
      const path = `networks.${key}`;
      const n = obj(raw, path);
      const id = int(n.id, `${path}.id`, 0, 0xffff);
      if (id === 0) continue; // the backbone is implicit
      if (typeof n.name !== 'string' || networkNameProblem(n.name) || names.has(n.name)) fail(`${path}.name`, 'invalid or duplicated network name');
      names.add(n.name);
      const rule = n.join_rule ?? 'open';
      if (rule !== 'open' && rule !== 'token' && rule !== 'invite') fail(`${path}.join_rule`, 'must be open, token or invite');
      const token = optStr(n.token, `${path}.token`);
      if (rule === 'token' && token === null) fail(`${path}.token`, 'a token network needs its token');
      networks.push({
        id,
        name: n.name,
        joinRule: rule as JoinRuleName,
        tokenHash: rule === 'token' ? hashJoinToken(token!) : null,
        allowedPorts: [],
        maxMembers: 0,
        ownerId: null,
        createdAt: Math.floor(time(n.created, `${path}.created`, nowMs) / 1000),
      });
      if (n.members !== undefined && n.members !== null) {
        if (!Array.isArray(n.members)) fail(`${path}.members`, 'must be an array of node IDs');
        for (const [i, m] of (n.members as unknown[]).entries()) {
          const nodeId = int(m, `${path}.members[${i}]`, 1, 0xffffffff);
          if (nodes.has(nodeId)) memberships.push({ networkId: id, nodeId, joinedAt: nowSec });
        }
      }
    }
  }
  // memberships listed only on the node side
  const netIds = new Set(networks.map((n) => n.id));
  const seen = new Set(memberships.map((m) => `${m.networkId}:${m.nodeId}`));
  for (const [nodeId, nets] of nodeNetworks) {
    for (const net of nets) {
      if (net === 0 || !netIds.has(net) || seen.has(`${net}:${nodeId}`)) continue;
      seen.add(`${net}:${nodeId}`);
      memberships.push({ networkId: net, nodeId, joinedAt: nowSec });
    }
  }

  const trust: TrustRow[] = [];
  if (root.trust_pairs !== undefined && root.trust_pairs !== null) {
    if (!Array.isArray(root.trust_pairs)) fail('trust_pairs', 'must be an array of "a:b" strings');
    const pairs = new Set<string>();
    for (const [i, p] of (root.trust_pairs as unknown[]).entries()) {
      const m = typeof p === 'string' ? /^(\d+):(\d+)$/.exec(p) : null;
      if (!m) fail(`trust_pairs[${i}]`, 'must be "a:b"');
      const x = int(Number(m[1]), `trust_pairs[${i}]`, 1, 0xffffffff);
      const y = int(Number(m[2]), `trust_pairs[${i}]`, 1, 0xffffffff);
      if (x === y) fail(`trust_pairs[${i}]`, 'a node cannot trust itself');
      const a = Math.min(x, y);
      const b = Math.max(x, y);
      if (!nodes.has(a) || !nodes.has(b) || pairs.has(`${a}:${b}`)) continue;
      pairs.add(`${a}:${b}`);
      trust.push({ a, b, aConsents: true, bConsents: true, createdAt: nowSec });
    }
  }

  const requests: HandshakeRequestRow[] = [];
  if (root.handshake_inbox !== undefined && root.handshake_inbox !== null) {
    for (const [key, list] of Object.entries(obj(root.handshake_inbox, 'handshake_inbox'))) {
      const toId = int(Number(key), `handshake_inbox.${key}`, 1, 0xffffffff);
      if (list === null) continue;
      if (!Array.isArray(list)) fail(`handshake_inbox.${key}`, 'must be an array');
      for (const [i, raw] of list.entries()) {
        const path = `handshake_inbox.${key}[${i}]`;
        const r = obj(raw, path);
        const fromId = int(r.from_node_id, `${path}.from_node_id`, 1, 0xffffffff);
        if (!nodes.has(toId) || !nodes.has(fromId)) continue;
        requests.push({ toId, fromId, justification: optStr(r.justification, `${path}.justification`) ?? '', ts: time(r.timestamp, `${path}.timestamp`, nowMs) });
      }
    }
  }
  const responses: HandshakeResponseRow[] = [];
  if (root.handshake_responses !== undefined && root.handshake_responses !== null) {
    for (const [key, list] of Object.entries(obj(root.handshake_responses, 'handshake_responses'))) {
      const toId = int(Number(key), `handshake_responses.${key}`, 1, 0xffffffff);
      if (list === null) continue;
      if (!Array.isArray(list)) fail(`handshake_responses.${key}`, 'must be an array');
      for (const [i, raw] of list.entries()) {
        const path = `handshake_responses.${key}[${i}]`;
        const r = obj(raw, path);
        const fromId = int(r.from_node_id, `${path}.from_node_id`, 1, 0xffffffff);
        if (!nodes.has(toId) || !nodes.has(fromId)) continue;
        responses.push({ toId, fromId, accept: optBool(r.accept, `${path}.accept`), ts: time(r.timestamp, `${path}.timestamp`, nowMs) });
      }
    }
  }

  const maxNode = Math.max(0, ...nodes.keys());
  const maxNet = Math.max(0, ...networks.map((n) => n.id));
  const nextNodeId = Math.max(maxNode + 1, root.next_node === undefined ? 1 : int(root.next_node, 'next_node', 1, 0x100000000));
  const nextNetworkId = Math.max(maxNet + 1, root.next_net === undefined ? 1 : int(root.next_net, 'next_net', 1, 0x10000));

  const mutations: Mutation[] = [{ kind: 'meta', meta: { nextNodeId, nextNetworkId } }];
  for (const row of nodes.values()) mutations.push({ kind: 'node', row });
  for (const row of networks) mutations.push({ kind: 'network', row });
  for (const row of memberships) mutations.push({ kind: 'member', row });
  for (const row of trust) mutations.push({ kind: 'trust', row });
  for (const row of requests) mutations.push({ kind: 'hs_request', row });
  for (const row of responses) mutations.push({ kind: 'hs_response', row });
  return {
    mutations,
    summary: {
      nodes: nodes.size - reclaimable,
      reclaimableKeys: reclaimable,
      networks: networks.length,
      memberships: memberships.length,
      trustPairs: trust.length,
      handshakeRequests: requests.length,
      handshakeResponses: responses.length,
      nextNodeId,
      nextNetworkId,
    },
  };
}

/** Import a parsed v1 snapshot into an open, empty store (one atomic commit). */
export async function importSnapshot(store: RegistryStore, json: unknown, nowMs = Date.now()): Promise<ImportSummary> {
  const current = await store.load();
  if (current.nodes.length > 0 || current.networks.length > 0) {
    throw new SnapshotError('store_not_empty', `the store already holds ${current.nodes.length} nodes and ${current.networks.length} networks; import needs an empty data dir`);
  }
  const { mutations, summary } = snapshotToMutations(json, nowMs);
  await store.commit(mutations);
  return summary;
}
