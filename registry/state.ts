import type {
  HandshakeRequestRow,
  HandshakeResponseRow,
  JoinRuleName,
  Mutation,
  NetworkRow,
  NodeRow,
  StoreMeta,
  StoreSnapshot,
  TrustRow,
} from './store/types.js';
import { RegistryError } from './errors.js';
import { MAX_NODE_ID, MAX_NETWORK_ID } from './protocol/validate.js';

/**
 * The registry's in-memory state: every hot read (lookup, resolve, heartbeat key check) is answered from
 * here. Methods that change state mutate memory synchronously and return the `Mutation`s the caller must
 * commit before acknowledging (Redis-AOF style: apply, persist, then reply). Callers validate first;
 * these methods only throw before changing anything.
 *
 * Memory: one `NodeEntry` (11 fields, strings shared with the indexes) plus three map entries per node;
 * measured well under 2 KiB per node at 100k nodes (see bench/registry-load.ts).
 */

/** Granularity of persisted heartbeat last-seen (see `markSeen`). */
export const LAST_SEEN_PERSIST_SEC = 60;

export const NodeFlag = {
  Public: 1,
  TaskExec: 2,
  Deregistered: 4,
  /** memory only: no heartbeat within the stale threshold (derived from lastSeen at load) */
  Offline: 8,
} as const;

export class NodeEntry {
  constructor(
    readonly id: number,
    public publicKey: string,
    public owner: string | null,
    public realAddr: string,
    public hostname: string | null,
    /** null = no tags (saves an array per node) */
    public tags: string[] | null,
    public flags: number,
    public polo: number,
    /** sorted non-backbone network IDs, null = backbone only */
    public networks: number[] | null,
    public createdAt: number,
    /** unix seconds */
    public lastSeen: number,
  ) {}

  get isPublic(): boolean {
    return (this.flags & NodeFlag.Public) !== 0;
  }
  get taskExec(): boolean {
    return (this.flags & NodeFlag.TaskExec) !== 0;
  }
  get deregistered(): boolean {
    return (this.flags & NodeFlag.Deregistered) !== 0;
  }
  get offline(): boolean {
    return (this.flags & NodeFlag.Offline) !== 0;
  }
  /** registered, not deregistered, heartbeating */
  get online(): boolean {
    return (this.flags & (NodeFlag.Deregistered | NodeFlag.Offline)) === 0;
  }

  toRow(): NodeRow {
    return {
      id: this.id,
      publicKey: this.publicKey,
      owner: this.owner,
      realAddr: this.realAddr,
      isPublic: this.isPublic,
      hostname: this.hostname,
      tags: this.tags ?? [],
      taskExec: this.taskExec,
      poloScore: this.polo,
      lastSeen: this.lastSeen,
      deregistered: this.deregistered,
      createdAt: this.createdAt,
    };
  }
}

export class NetworkEntry {
  readonly members = new Set<number>();
  constructor(
    readonly id: number,
    public name: string,
    public joinRule: JoinRuleName,
    public tokenHash: string | null,
    public allowedPorts: number[],
    public maxMembers: number,
    public ownerId: number | null,
    readonly createdAt: number,
  ) {}

  toRow(): NetworkRow {
    return {
      id: this.id,
      name: this.name,
      joinRule: this.joinRule,
      tokenHash: this.tokenHash,
      allowedPorts: this.allowedPorts,
      maxMembers: this.maxMembers,
      ownerId: this.ownerId,
      createdAt: this.createdAt,
    };
  }
}

/** One trust link (a < b), shared by both adjacency maps. */
export interface TrustLink {
  a: number;
  b: number;
  aConsents: boolean;
  bConsents: boolean;
  createdAt: number;
}

export interface Inbox {
  requests: Map<number, HandshakeRequestRow>;
  responses: Map<number, HandshakeResponseRow>;
}

export const INBOX_CAP = 100;

export interface StateCounters {
  /** not deregistered (online + offline) */
  total: number;
  online: number;
  deregistered: number;
  taskExecutors: number;
  /** links where both sides consented */
  mutualLinks: number;
}

export class RegistryState {
  readonly nodes = new Map<number, NodeEntry>();
  readonly byKey = new Map<string, number>();
  readonly byOwner = new Map<string, number>();
  readonly byHostname = new Map<string, number>();
  readonly networks = new Map<number, NetworkEntry>();
  readonly networkByName = new Map<string, number>();
  private readonly trust = new Map<number, Map<number, TrustLink>>();
  private readonly inboxes = new Map<number, Inbox>();
  readonly counters: StateCounters = { total: 0, online: 0, deregistered: 0, taskExecutors: 0, mutualLinks: 0 };
  /** nodes whose lastSeen changed since the last flush */
  readonly dirtySeen = new Set<number>();
  meta: StoreMeta = { nextNodeId: 1, nextNetworkId: 1 };

  /** Rebuild from a store snapshot; nodes unseen for `staleSec` start offline. */
  static fromSnapshot(snap: StoreSnapshot, nowSec: number, staleSec: number): RegistryState {
    const s = new RegistryState();
    s.meta = { ...snap.meta };
    for (const r of snap.nodes) {
      let flags = (r.isPublic ? NodeFlag.Public : 0) | (r.taskExec ? NodeFlag.TaskExec : 0) | (r.deregistered ? NodeFlag.Deregistered : 0);
      if (!r.deregistered && nowSec - r.lastSeen > staleSec) flags |= NodeFlag.Offline;
      const n = new NodeEntry(r.id, r.publicKey, r.owner, r.realAddr, r.hostname, r.tags.length ? r.tags : null, flags, r.poloScore, null, r.createdAt, r.lastSeen);
      s.nodes.set(n.id, n);
      s.byKey.set(n.publicKey, n.id);
      if (n.owner !== null) s.byOwner.set(n.owner, n.id);
      if (n.hostname !== null && !n.deregistered) s.byHostname.set(n.hostname, n.id);
      s.account(n, 1);
    }
    for (const r of snap.networks) {
      const net = new NetworkEntry(r.id, r.name, r.joinRule, r.tokenHash, r.allowedPorts, r.maxMembers, r.ownerId, r.createdAt);
      s.networks.set(net.id, net);
      s.networkByName.set(net.name, net.id);
    }
    for (const m of snap.memberships) {
      const net = s.networks.get(m.networkId);
      const node = s.nodes.get(m.nodeId);
      if (!net || !node) continue;
      net.members.add(node.id);
      node.networks = insertSorted(node.networks, net.id);
    }
    for (const t of snap.trust) s.putLink({ ...t });
    for (const r of snap.handshakeRequests) s.inbox(r.toId).requests.set(r.fromId, r);
    for (const r of snap.handshakeResponses) s.inbox(r.toId).responses.set(r.fromId, r);
    return s;
  }

  // ---------------------------------------------------------------- counters

  private account(n: NodeEntry, sign: 1 | -1): void {
    const c = this.counters;
    if (n.deregistered) {
      c.deregistered += sign;
      return;
    }
    c.total += sign;
    if (!n.offline) c.online += sign;
    if (n.taskExec) c.taskExecutors += sign;
  }

  private change(n: NodeEntry, fn: () => void): Mutation[] {
    this.account(n, -1);
    fn();
    this.account(n, 1);
    return [{ kind: 'node', row: n.toRow() }];
  }

  // ---------------------------------------------------------------- node reads

  node(id: number): NodeEntry | undefined {
    return this.nodes.get(id);
  }

  /** A node that is registered and not deregistered (it may be offline). */
  requireNode(id: number, field = 'node'): NodeEntry {
    const n = this.nodes.get(id);
    if (!n || n.deregistered) throw new RegistryError('not_found', `${field} ${id} is not registered`);
    return n;
  }

  /** A node that is registered and heartbeating. */
  requireOnline(id: number, field = 'node'): NodeEntry {
    const n = this.requireNode(id, field);
    if (n.offline) throw new RegistryError('not_found', `${field} ${id} is offline (no heartbeat within the stale threshold)`);
    return n;
  }

  // ---------------------------------------------------------------- node writes

  allocateNodeId(): number {
    let id = this.meta.nextNodeId;
    while (this.nodes.has(id)) id++;
    if (id > MAX_NODE_ID) throw new RegistryError('limit_reached', 'node ID space exhausted');
    return id;
  }

  createNode(p: { publicKey: string; owner: string | null; realAddr: string; hostname: string | null; nowSec: number }): { node: NodeEntry; mutations: Mutation[] } {
    const id = this.allocateNodeId();
    const n = new NodeEntry(id, p.publicKey, p.owner, p.realAddr, p.hostname, null, 0, 0, null, p.nowSec, p.nowSec);
    this.nodes.set(id, n);
    this.byKey.set(n.publicKey, id);
    if (n.owner !== null) this.byOwner.set(n.owner, id);
    if (n.hostname !== null) this.byHostname.set(n.hostname, id);
    this.account(n, 1);
    this.meta = { ...this.meta, nextNodeId: id + 1 };
    return { node: n, mutations: [{ kind: 'meta', meta: this.meta }, { kind: 'node', row: n.toRow() }] };
  }

  /** Re-registration: endpoint update, back online, undo deregistration; optional new key (owner reclaim). */
  reregister(n: NodeEntry, p: { realAddr: string; nowSec: number; publicKey?: string; owner?: string | null }): Mutation[] {
    return this.change(n, () => {
      if (p.publicKey !== undefined && p.publicKey !== n.publicKey) {
        this.byKey.delete(n.publicKey);
        n.publicKey = p.publicKey;
        this.byKey.set(n.publicKey, n.id);
      }
      if (p.owner !== undefined && p.owner !== null && p.owner !== n.owner) {
        if (n.owner !== null) this.byOwner.delete(n.owner);
        n.owner = p.owner;
        this.byOwner.set(p.owner, n.id);
      }
      n.realAddr = p.realAddr;
      n.lastSeen = p.nowSec;
      n.flags &= ~(NodeFlag.Deregistered | NodeFlag.Offline);
      this.dirtySeen.delete(n.id);
    });
  }

  rotateKey(n: NodeEntry, publicKey: string): Mutation[] {
    return this.change(n, () => {
      this.byKey.delete(n.publicKey);
      n.publicKey = publicKey;
      this.byKey.set(publicKey, n.id);
    });
  }

  /**
   * Heartbeat: memory only; the last-seen flush persists it in batches, and only when the heartbeat
   * enters a new `LAST_SEEN_PERSIST_SEC` window: the stored value then lags the real one by less than
   * that (plus the flush interval) while a node heartbeating every 20–30 s costs a row write per
   * minute instead of one per heartbeat. Only startup reads it (stale after 3 min).
   */
  markSeen(n: NodeEntry, nowSec: number): void {
    if (n.offline) {
      this.account(n, -1);
      n.flags &= ~NodeFlag.Offline;
      this.account(n, 1);
    }
    if (n.lastSeen !== nowSec) {
      if (Math.floor(n.lastSeen / LAST_SEEN_PERSIST_SEC) !== Math.floor(nowSec / LAST_SEEN_PERSIST_SEC)) this.dirtySeen.add(n.id);
      n.lastSeen = nowSec;
    }
  }

  /** Reaper: memory only (offline is derived from last_seen again at load). Returns how many went offline. */
  markStale(nowSec: number, staleSec: number): number {
    let count = 0;
    for (const n of this.nodes.values()) {
      if (n.flags & (NodeFlag.Deregistered | NodeFlag.Offline)) continue;
      if (nowSec - n.lastSeen > staleSec) {
        this.account(n, -1);
        n.flags |= NodeFlag.Offline;
        this.account(n, 1);
        count++;
      }
    }
    return count;
  }

  /** Deregister: keeps key/owner (ID reclaimable), trust links and memberships; frees the hostname. */
  deregister(n: NodeEntry): Mutation[] {
    return this.change(n, () => {
      if (n.hostname !== null) this.byHostname.delete(n.hostname);
      n.hostname = null;
      n.flags |= NodeFlag.Deregistered;
      n.flags &= ~NodeFlag.Offline;
      this.dirtySeen.delete(n.id);
    });
  }

  setHostname(n: NodeEntry, hostname: string | null): Mutation[] {
    return this.change(n, () => {
      if (n.hostname !== null) this.byHostname.delete(n.hostname);
      n.hostname = hostname;
      if (hostname !== null) this.byHostname.set(hostname, n.id);
    });
  }

  setTags(n: NodeEntry, tags: string[]): Mutation[] {
    return this.change(n, () => {
      n.tags = tags.length ? tags : null;
    });
  }

  setFlag(n: NodeEntry, flag: typeof NodeFlag.Public | typeof NodeFlag.TaskExec, on: boolean): Mutation[] {
    return this.change(n, () => {
      if (on) n.flags |= flag;
      else n.flags &= ~flag;
    });
  }

  setPolo(n: NodeEntry, score: number): Mutation[] {
    return this.change(n, () => {
      n.polo = score;
    });
  }

  /** Snapshot of dirty last-seen values, clearing the dirty set. */
  takeDirtySeen(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (const id of this.dirtySeen) {
      const n = this.nodes.get(id);
      if (n && !n.deregistered) out.push([id, n.lastSeen]);
    }
    this.dirtySeen.clear();
    return out;
  }

  // ---------------------------------------------------------------- trust

  link(x: number, y: number): TrustLink | undefined {
    return this.trust.get(x)?.get(y);
  }

  /** Both sides consented: the pair grants endpoint disclosure. */
  trusted(x: number, y: number): boolean {
    const l = this.link(x, y);
    return l !== undefined && l.aConsents && l.bConsents;
  }

  /** Did `from` consent to `to`? */
  consents(from: number, to: number): boolean {
    const l = this.link(from, to);
    if (!l) return false;
    return from === l.a ? l.aConsents : l.bConsents;
  }

  private putLink(l: TrustLink): void {
    for (const [x, y] of [[l.a, l.b], [l.b, l.a]] as const) {
      let m = this.trust.get(x);
      if (!m) this.trust.set(x, (m = new Map()));
      m.set(y, l);
    }
    if (l.aConsents && l.bConsents) this.counters.mutualLinks++;
  }

  /** Record that `from` consents to `to`. Returns the mutations and whether the link just became mutual. */
  consent(from: number, to: number, nowSec: number): { mutations: Mutation[]; becameMutual: boolean; mutual: boolean } {
    let l = this.link(from, to);
    if (!l) {
      l = { a: Math.min(from, to), b: Math.max(from, to), aConsents: false, bConsents: false, createdAt: nowSec };
      this.putLink(l);
    }
    const before = l.aConsents && l.bConsents;
    if (from === l.a) l.aConsents = true;
    else l.bConsents = true;
    const after = l.aConsents && l.bConsents;
    if (after && !before) this.counters.mutualLinks++;
    return { mutations: [{ kind: 'trust', row: toTrustRow(l) }], becameMutual: after && !before, mutual: after };
  }

  /** Remove the link between x and y entirely (revoke, reject). */
  removeLink(x: number, y: number): Mutation[] {
    const l = this.link(x, y);
    if (!l) return [];
    if (l.aConsents && l.bConsents) this.counters.mutualLinks--;
    for (const [p, q] of [[l.a, l.b], [l.b, l.a]] as const) {
      const m = this.trust.get(p);
      m?.delete(q);
      if (m && m.size === 0) this.trust.delete(p);
    }
    return [{ kind: 'trust_delete', a: l.a, b: l.b }];
  }

  // ---------------------------------------------------------------- handshake inbox

  private inbox(id: number): Inbox {
    let box = this.inboxes.get(id);
    if (!box) this.inboxes.set(id, (box = { requests: new Map(), responses: new Map() }));
    return box;
  }

  peekInbox(id: number): { requests: number; responses: number } {
    const box = this.inboxes.get(id);
    return { requests: box?.requests.size ?? 0, responses: box?.responses.size ?? 0 };
  }

  hasRequest(to: number, from: number): boolean {
    return this.inboxes.get(to)?.requests.has(from) ?? false;
  }

  /** Memory side of a targeted request removal (the caller emits the `hs_request_delete`). */
  dropRequest(to: number, from: number): void {
    const box = this.inboxes.get(to);
    if (!box) return;
    box.requests.delete(from);
    if (box.requests.size === 0 && box.responses.size === 0) this.inboxes.delete(to);
  }

  addRequest(row: HandshakeRequestRow): Mutation[] {
    const box = this.inbox(row.toId);
    if (box.requests.size >= INBOX_CAP) throw new RegistryError('limit_reached', `handshake inbox of node ${row.toId} is full (${INBOX_CAP} pending requests)`);
    box.requests.set(row.fromId, row);
    return [{ kind: 'hs_request', row }];
  }

  /** Queue a response; at the cap the oldest response is dropped (responses are informational). */
  addResponse(row: HandshakeResponseRow): Mutation[] {
    const box = this.inbox(row.toId);
    box.responses.delete(row.fromId);
    const out: Mutation[] = [];
    if (box.responses.size >= INBOX_CAP) {
      const oldest = box.responses.keys().next().value!;
      box.responses.delete(oldest);
      // the store keys responses by (to, from): re-writing the survivors is simpler than a targeted delete
      out.push({ kind: 'hs_response_delete', toId: row.toId });
      for (const r of box.responses.values()) out.push({ kind: 'hs_response', row: r });
    }
    box.responses.set(row.fromId, row);
    out.push({ kind: 'hs_response', row });
    return out;
  }

  /** poll_handshakes: return and clear both inbox lists. */
  takeInbox(id: number): { requests: HandshakeRequestRow[]; responses: HandshakeResponseRow[]; mutations: Mutation[] } {
    const box = this.inboxes.get(id);
    if (!box) return { requests: [], responses: [], mutations: [] };
    this.inboxes.delete(id);
    const mutations: Mutation[] = [];
    if (box.requests.size) mutations.push({ kind: 'hs_request_delete', toId: id });
    if (box.responses.size) mutations.push({ kind: 'hs_response_delete', toId: id });
    return { requests: [...box.requests.values()], responses: [...box.responses.values()], mutations };
  }

  // ---------------------------------------------------------------- networks

  network(id: number): NetworkEntry | undefined {
    return this.networks.get(id);
  }

  requireNetwork(id: number): NetworkEntry {
    const net = this.networks.get(id);
    if (!net) throw new RegistryError('not_found', `network ${id} does not exist`);
    return net;
  }

  allocateNetworkId(): number {
    const start = Math.min(Math.max(this.meta.nextNetworkId, 1), MAX_NETWORK_ID);
    for (let i = 0; i < MAX_NETWORK_ID; i++) {
      const id = ((start - 1 + i) % MAX_NETWORK_ID) + 1;
      if (!this.networks.has(id)) return id;
    }
    throw new RegistryError('limit_reached', `all ${MAX_NETWORK_ID} network IDs are in use`);
  }

  createNetwork(p: Omit<NetworkRow, 'id'>): { network: NetworkEntry; mutations: Mutation[] } {
    const id = this.allocateNetworkId();
    const net = new NetworkEntry(id, p.name, p.joinRule, p.tokenHash, p.allowedPorts, p.maxMembers, p.ownerId, p.createdAt);
    this.networks.set(id, net);
    this.networkByName.set(net.name, id);
    this.meta = { ...this.meta, nextNetworkId: id + 1 };
    return { network: net, mutations: [{ kind: 'meta', meta: this.meta }, { kind: 'network', row: net.toRow() }] };
  }

  addMember(net: NetworkEntry, n: NodeEntry, nowSec: number): Mutation[] {
    net.members.add(n.id);
    n.networks = insertSorted(n.networks, net.id);
    return [{ kind: 'member', row: { networkId: net.id, nodeId: n.id, joinedAt: nowSec } }];
  }

  removeMember(net: NetworkEntry, nodeId: number): Mutation[] {
    net.members.delete(nodeId);
    const n = this.nodes.get(nodeId);
    if (n?.networks) {
      const rest = n.networks.filter((x) => x !== net.id);
      n.networks = rest.length ? rest : null;
    }
    return [{ kind: 'member_delete', networkId: net.id, nodeId }];
  }

  /** Delete a network and every membership in it. Returns the former members too. */
  deleteNetwork(net: NetworkEntry): { members: number[]; mutations: Mutation[] } {
    const members = [...net.members];
    const mutations: Mutation[] = [];
    for (const id of members) mutations.push(...this.removeMember(net, id));
    this.networks.delete(net.id);
    this.networkByName.delete(net.name);
    mutations.push({ kind: 'network_delete', id: net.id });
    return { members, mutations };
  }

  renameNetwork(net: NetworkEntry, name: string): Mutation[] {
    this.networkByName.delete(net.name);
    net.name = name;
    this.networkByName.set(name, net.id);
    return [{ kind: 'network', row: net.toRow() }];
  }

  setNetworkPolicy(net: NetworkEntry, p: { allowedPorts?: number[]; maxMembers?: number }): Mutation[] {
    if (p.allowedPorts !== undefined) net.allowedPorts = p.allowedPorts;
    if (p.maxMembers !== undefined) net.maxMembers = p.maxMembers;
    return [{ kind: 'network', row: net.toRow() }];
  }

  dump(): StateDump {
    const links = new Set<TrustLink>();
    for (const m of this.trust.values()) for (const l of m.values()) links.add(l);
    return {
      meta: { ...this.meta },
      nodes: [...this.nodes.values()].sort((a, b) => a.id - b.id).map((n) => ({ ...n.toRow(), online: n.online, networks: n.networks ?? [] })),
      networks: [...this.networks.values()].sort((a, b) => a.id - b.id).map((n) => ({ ...n.toRow(), members: [...n.members].sort((a, b) => a - b) })),
      trust: [...links].map(toTrustRow).sort((x, y) => x.a - y.a || x.b - y.b),
      inbox: [...this.inboxes.entries()]
        .filter(([, b]) => b.requests.size + b.responses.size > 0)
        .sort((x, y) => x[0] - y[0])
        .map(([node, b]) => ({ node, requests: [...b.requests.values()], responses: [...b.responses.values()] })),
    };
  }

  /** Both nodes are members of some non-backbone network. */
  shareNetwork(x: NodeEntry, y: NodeEntry): boolean {
    const a = x.networks;
    const b = y.networks;
    if (!a || !b) return false;
    let i = 0;
    let j = 0;
    while (i < a.length && j < b.length) {
      if (a[i] === b[j]) return true;
      if (a[i]! < b[j]!) i++;
      else j++;
    }
    return false;
  }

  /**
   * The privacy rule (SPEC §6): may `requester` learn `target`'s endpoint? Yes if it is itself, the
   * target is public, both consented to a trust link, or they share a non-backbone network.
   * Online status is not considered here.
   */
  canResolve(requesterId: number, targetId: number): boolean {
    if (requesterId === targetId) return this.nodes.has(targetId);
    const target = this.nodes.get(targetId);
    const requester = this.nodes.get(requesterId);
    if (!target || !requester || target.deregistered || requester.deregistered) return false;
    if (target.isPublic) return true;
    if (this.trusted(requesterId, targetId)) return true;
    return this.shareNetwork(requester, target);
  }
}

/** Deterministic plain copy of the whole state (tests, debugging). */
export interface StateDump {
  meta: StoreMeta;
  nodes: Array<NodeRow & { online: boolean; networks: number[] }>;
  networks: Array<NetworkRow & { members: number[] }>;
  trust: TrustRow[];
  inbox: Array<{ node: number; requests: HandshakeRequestRow[]; responses: HandshakeResponseRow[] }>;
}

function insertSorted(list: number[] | null, id: number): number[] {
  if (!list) return [id];
  if (list.includes(id)) return list;
  return [...list, id].sort((a, b) => a - b);
}

function toTrustRow(l: TrustLink): TrustRow {
  return { a: l.a, b: l.b, aConsents: l.aConsents, bConsents: l.bConsents, createdAt: l.createdAt };
}
