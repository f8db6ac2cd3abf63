import type { Logger } from 'pino';
import { RegistryError } from '../errors.js';
import { IdentityVerifier, parseIdentityRule, type IdentityRule, type IdentityVerifierOptions } from '../identity/index.js';
import type { NetworkEntry } from '../state.js';
import type { EnterpriseSnapshot, InviteRow, MemberExtRow, Mutation, NetworkExtRow, NodeKeyRow, PreassignRow, Role } from '../store/types.js';

/**
 * In-memory enterprise state (issue 6; registry/ENTERPRISE.md): per-network enterprise flag, identity
 * rule, per-network admin token and group mapping; member roles, admitted external IDs and member tags;
 * RBAC pre-assignments; invite inboxes; node key lifecycle. Like RegistryState, methods change memory
 * synchronously and return the Mutations the caller commits before replying.
 */

export interface EnterpriseOptions {
  /** Options for the identity verifier (tests: allowHttp/allowPrivateUrls for loopback IdPs). */
  identity?: IdentityVerifierOptions;
  /** Use this verifier instead of creating one (it is then not closed by the registry). */
  verifier?: IdentityVerifier;
  /** Invite lifetime when the request gives none. Default 7 days; at most 30 days. */
  inviteTtlS?: number;
  /** Pending invites per node. Default 100. */
  inviteInboxCap?: number;
  /** Warn in heartbeat replies this long before a key expires. Default 24 h. */
  keyWarnS?: number;
  /** A logger for the verifier. */
  log?: Logger;
}

export const MAX_INVITE_TTL_S = 30 * 86_400;
export const MAX_KEY_EXPIRY_S = 10 * 365 * 86_400;

export interface NetExt extends NetworkExtRow {
  /** parsed identityRule */
  rule: IdentityRule | null;
}

export class EnterpriseState {
  readonly nets = new Map<number, NetExt>();
  /** networkId → nodeId → member row */
  readonly members = new Map<number, Map<number, MemberExtRow>>();
  /** networkId → lower-cased external ID → role */
  readonly preassign = new Map<number, Map<string, PreassignRow['role']>>();
  /** invitee → networkId → invite */
  readonly invites = new Map<number, Map<number, InviteRow>>();
  readonly keys = new Map<number, NodeKeyRow>();
  readonly verifier: IdentityVerifier;
  readonly inviteTtlS: number;
  readonly inviteInboxCap: number;
  readonly keyWarnS: number;
  private readonly ownsVerifier: boolean;

  constructor(snap: EnterpriseSnapshot | undefined, opts: EnterpriseOptions = {}) {
    this.ownsVerifier = opts.verifier === undefined;
    this.verifier = opts.verifier ?? new IdentityVerifier({ ...(opts.log ? { log: opts.log } : {}), ...opts.identity });
    this.inviteTtlS = Math.min(opts.inviteTtlS ?? 7 * 86_400, MAX_INVITE_TTL_S);
    this.inviteInboxCap = opts.inviteInboxCap ?? 100;
    this.keyWarnS = opts.keyWarnS ?? 86_400;
    if (!snap) return;
    for (const r of snap.networks) {
      let rule: IdentityRule | null = null;
      if (r.identityRule !== null) {
        try {
          rule = parseIdentityRule(JSON.parse(r.identityRule));
        } catch (err) {
          // stored rules were validated when set; a rule this build cannot parse refuses every join (logged)
          opts.log?.error({ network_id: r.networkId, err: (err as Error).message }, 'stored identity rule no longer parses; identity joins refused');
        }
      }
      this.nets.set(r.networkId, { ...r, rule });
    }
    for (const r of snap.members) this.memberMap(r.networkId).set(r.nodeId, r);
    for (const r of snap.preassign) this.preassignMap(r.networkId).set(r.externalId, r.role);
    for (const r of snap.invites) this.inbox(r.toId).set(r.networkId, r);
    for (const r of snap.keys) this.keys.set(r.nodeId, r);
  }

  async close(): Promise<void> {
    if (this.ownsVerifier) await this.verifier.close();
  }

  // ---------------------------------------------------------------- networks

  ext(networkId: number): NetExt | undefined {
    return this.nets.get(networkId);
  }

  isEnterprise(networkId: number): boolean {
    return this.nets.get(networkId)?.enterprise ?? false;
  }

  /** Throws `enterprise_required` unless the network is an enterprise network. */
  requireEnterprise(net: NetworkEntry, op: string): NetExt {
    const e = this.nets.get(net.id);
    if (!e?.enterprise) {
      throw new RegistryError(
        'enterprise_required',
        `${op} is an enterprise feature: network ${net.id} is not an enterprise network (create it with enterprise: true or turn it on with set_network_enterprise)`,
      );
    }
    return e;
  }

  /** Create or update a network's settings row. */
  putExt(networkId: number, patch: Partial<Omit<NetExt, 'networkId'>>): Mutation[] {
    const cur: NetExt = this.nets.get(networkId) ?? { networkId, enterprise: false, identityRule: null, adminTokenHash: null, groupNetworks: null, rule: null };
    const next: NetExt = { ...cur, ...patch };
    this.nets.set(networkId, next);
    const row: NetworkExtRow = {
      networkId,
      enterprise: next.enterprise,
      identityRule: next.identityRule,
      adminTokenHash: next.adminTokenHash,
      groupNetworks: next.groupNetworks,
    };
    return [{ kind: 'net_ext', row }];
  }

  /** Forget everything enterprise about a deleted network (memory + one mutation). */
  dropNetwork(networkId: number): Mutation[] {
    this.nets.delete(networkId);
    this.members.delete(networkId);
    this.preassign.delete(networkId);
    for (const [to, box] of this.invites) {
      box.delete(networkId);
      if (box.size === 0) this.invites.delete(to);
    }
    return [{ kind: 'net_ext_delete', networkId }];
  }

  // ---------------------------------------------------------------- members

  private memberMap(networkId: number): Map<number, MemberExtRow> {
    let m = this.members.get(networkId);
    if (!m) this.members.set(networkId, (m = new Map()));
    return m;
  }

  member(networkId: number, nodeId: number): MemberExtRow | undefined {
    return this.members.get(networkId)?.get(nodeId);
  }

  role(networkId: number, nodeId: number): Role | undefined {
    return this.members.get(networkId)?.get(nodeId)?.role;
  }

  putMember(row: MemberExtRow): Mutation[] {
    this.memberMap(row.networkId).set(row.nodeId, row);
    return [{ kind: 'member_ext', row: { ...row, tags: [...row.tags] } }];
  }

  setRole(networkId: number, nodeId: number, role: Role): Mutation[] {
    const cur = this.member(networkId, nodeId) ?? { networkId, nodeId, role, externalId: null, tags: [] };
    return this.putMember({ ...cur, role });
  }

  /** Remove a member's row and any pending invite of it for that network. */
  dropMember(networkId: number, nodeId: number): Mutation[] {
    const out: Mutation[] = [];
    if (this.members.get(networkId)?.delete(nodeId)) out.push({ kind: 'member_ext_delete', networkId, nodeId });
    if (this.invites.get(nodeId)?.has(networkId)) out.push(...this.dropInvite(nodeId, networkId));
    return out;
  }

  clearRoles(networkId: number): Mutation[] {
    this.members.delete(networkId);
    return [{ kind: 'member_ext_clear', networkId }];
  }

  // ---------------------------------------------------------------- pre-assignment

  private preassignMap(networkId: number): Map<string, PreassignRow['role']> {
    let m = this.preassign.get(networkId);
    if (!m) this.preassign.set(networkId, (m = new Map()));
    return m;
  }

  preassigned(networkId: number, externalId: string | null): PreassignRow['role'] | undefined {
    if (externalId === null) return undefined;
    return this.preassign.get(networkId)?.get(externalId.toLowerCase());
  }

  preassignCount(networkId: number): number {
    return this.preassign.get(networkId)?.size ?? 0;
  }

  setPreassign(networkId: number, externalId: string, role: PreassignRow['role'] | null): Mutation[] {
    const key = externalId.toLowerCase();
    if (role === null) {
      this.preassign.get(networkId)?.delete(key);
      return [{ kind: 'preassign_delete', networkId, externalId: key }];
    }
    this.preassignMap(networkId).set(key, role);
    return [{ kind: 'preassign', row: { networkId, externalId: key, role } }];
  }

  // ---------------------------------------------------------------- invites

  private inbox(nodeId: number): Map<number, InviteRow> {
    let m = this.invites.get(nodeId);
    if (!m) this.invites.set(nodeId, (m = new Map()));
    return m;
  }

  invite(toId: number, networkId: number): InviteRow | undefined {
    return this.invites.get(toId)?.get(networkId);
  }

  inboxSize(toId: number): number {
    return this.invites.get(toId)?.size ?? 0;
  }

  invitesOf(toId: number): InviteRow[] {
    return [...(this.invites.get(toId)?.values() ?? [])];
  }

  addInvite(row: InviteRow): Mutation[] {
    this.inbox(row.toId).set(row.networkId, row);
    return [{ kind: 'invite', row: { ...row } }];
  }

  dropInvite(toId: number, networkId: number): Mutation[] {
    const box = this.invites.get(toId);
    if (!box?.delete(networkId)) return [];
    if (box.size === 0) this.invites.delete(toId);
    return [{ kind: 'invite_delete', toId, networkId }];
  }

  /** Invites that `fromId` sent for `networkId` (dropped when the inviter is kicked). */
  dropInvitesFrom(fromId: number, networkId: number): Mutation[] {
    const out: Mutation[] = [];
    for (const [to, box] of [...this.invites]) {
      const inv = box.get(networkId);
      if (inv && inv.fromId === fromId) out.push(...this.dropInvite(to, networkId));
    }
    return out;
  }

  // ---------------------------------------------------------------- keys

  keyRow(nodeId: number, createdAt: number): NodeKeyRow {
    return this.keys.get(nodeId) ?? { nodeId, keyCreatedAt: createdAt, rotatedAt: null, rotateCount: 0, expiresAt: null };
  }

  putKey(row: NodeKeyRow): Mutation[] {
    this.keys.set(row.nodeId, row);
    return [{ kind: 'node_key', row: { ...row } }];
  }

  keyExpired(nodeId: number, nowSec: number): boolean {
    const exp = this.keys.get(nodeId)?.expiresAt;
    return exp !== undefined && exp !== null && nowSec >= exp;
  }

  /** Throws `key_expired` if the node's key is past its expiry. */
  assertKeyUsable(nodeId: number, nowSec: number, who = 'node'): void {
    if (this.keyExpired(nodeId, nowSec)) {
      const exp = this.keys.get(nodeId)!.expiresAt!;
      throw new RegistryError(
        'key_expired',
        `${who} ${nodeId}'s key expired at ${new Date(exp * 1000).toISOString()}: it can no longer heartbeat, resolve, join or be used for tunnels; rotate the key (rotate_key needs an admin to clear the expiry first) or re-enrol`,
      );
    }
  }

  /** Heartbeat reply extras: warn ahead of expiry. */
  keyWarning(nodeId: number, nowSec: number): { key_expires_soon?: true; key_expires_at?: number } {
    const exp = this.keys.get(nodeId)?.expiresAt;
    if (exp === undefined || exp === null) return {};
    if (exp - nowSec <= this.keyWarnS) return { key_expires_soon: true, key_expires_at: exp };
    return { key_expires_at: exp };
  }
}
