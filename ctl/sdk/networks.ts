/**
 * SDK surface for networks, enterprise administration and the key lifecycle (issue 6; daemon side in
 * daemon/ipc/network-ops.ts, registry semantics in registry/ENTERPRISE.md):
 *
 *   await pilot.network.join(7, { oidcTokenFile: '/run/secrets/token', keep: true });
 *   await pilot.network.join(8, { svid: { cert: 'svid.pem', key: 'svid.key' } });
 *   const { members } = await pilot.network.members(7);   // role, external_id, member_tags, online
 *   await pilot.network.promote(7, 'bravo'); await pilot.network.kick(7, 42);
 *   await pilot.key.rotate();                              // node ID kept
 *   pilot.on('network', (ev) => …);                        // invites, roles, kicks, key warnings
 *
 * Every administrative call is signed by the daemon's node as the acting node. Errors are PilotSdkErrors
 * with the registry's codes (`enterprise_required`, `identity_refused`, `forbidden`, `key_expired`, …) and a hint.
 * File arguments are resolved to absolute paths here: the daemon reads them itself (and again for renewals
 * and re-joins of kept memberships).
 */
import { resolve as resolvePath } from 'node:path';
import type { IpcMap, IpcValue } from '../../daemon/ipc/protocol.js';
import { PilotSdkError } from './errors.js';

export type Result = { [key: string]: IpcValue | undefined };

/** A peer as users write it: hostname, address text or node ID. */
export type NodeRef = string | number;

/** Certificate chain (leaf first) and its private key: PEM text or file paths. */
export interface CertPair {
  cert: string;
  key: string;
}

/** How to prove identity when joining (give one), plus the join token of token networks. */
export interface JoinOptions {
  /** join token (join rule "token") */
  token?: string;
  /** OIDC JWT inline, in a file, or printed by a command the daemon runs */
  oidcToken?: string;
  oidcTokenFile?: string;
  oidcTokenCommand?: string;
  /** JWT-SVID inline or in a file */
  jwtSvid?: string;
  jwtSvidFile?: string;
  /** X.509-SVID chain + key (SPIFFE rule) */
  svid?: CertPair;
  /** enterprise certificate chain + key (CA rule) */
  cert?: CertPair;
  /** LDAP bind; the password inline or (better) in a file */
  ldap?: { user: string; password?: string; passwordFile?: string };
  /** webhook credential inline, or `{ tokenFile }` */
  webhook?: string | { token?: string; tokenFile?: string };
  /**
   * Keep the membership: the daemon keeps the proof's source (files, command — never inline secrets),
   * renews tokens before they expire, and re-joins with a fresh proof if it finds itself no longer a
   * member after a registry or daemon restart (not after a kick or leave it saw).
   */
  keep?: boolean;
}

export interface CreateOptions {
  joinRule?: string;
  token?: string;
  /** registry admin token (default: the daemon's $PILOT_ADMIN_TOKEN) */
  adminToken?: string;
  allowedPorts?: number[];
  maxMembers?: number;
  enterprise?: boolean;
  /** identity rule object (registry/identity/README.md) for join rules oidc, spiffe, ca, ldap, webhook */
  identityRule?: Record<string, unknown>;
  groupNetworks?: Record<string, number[]>;
  networkAdminToken?: string;
}

type Request = (op: string, args?: IpcMap) => Promise<Result>;

function fileArg(p: string): string {
  return p.includes('-----BEGIN') ? p : resolvePath(p);
}

function netArg(id: number): number {
  if (!Number.isInteger(id) || id < 1 || id > 0xffff) throw new PilotSdkError('invalid_argument', `bad network ID ${id}`, { hint: 'network IDs are 1-65535 (pilotctl network list)' });
  return id;
}

function nodeArg(n: NodeRef): number | string {
  if (typeof n === 'number') {
    if (!Number.isInteger(n) || n <= 0 || n > 0xffffffff) throw new PilotSdkError('invalid_argument', `bad node ID ${n}`);
    return n;
  }
  const s = n.trim();
  if (s === '') throw new PilotSdkError('invalid_argument', 'empty node', { hint: 'give a node ID, an address N:NNNN.HHHH.LLLL or a hostname' });
  return /^\d+$/.test(s) ? Number(s) : s;
}

/** IPC `network_join` fields for `opts` (exported for pilotctl and tests). */
export function joinFields(opts: JoinOptions): IpcMap {
  const f: IpcMap = {};
  if (opts.token !== undefined) f.token = opts.token;
  if (opts.oidcToken !== undefined) f.oidc_token = opts.oidcToken;
  if (opts.oidcTokenFile !== undefined) f.oidc_token_file = resolvePath(opts.oidcTokenFile);
  if (opts.oidcTokenCommand !== undefined) f.oidc_token_command = opts.oidcTokenCommand;
  if (opts.jwtSvid !== undefined) f.jwt_svid = opts.jwtSvid;
  if (opts.jwtSvidFile !== undefined) f.jwt_svid_file = resolvePath(opts.jwtSvidFile);
  if (opts.svid) {
    f.svid_cert = fileArg(opts.svid.cert);
    f.svid_key = fileArg(opts.svid.key);
  }
  if (opts.cert) {
    f.cert = fileArg(opts.cert.cert);
    f.cert_key = fileArg(opts.cert.key);
  }
  if (opts.ldap) {
    f.ldap_user = opts.ldap.user;
    if (opts.ldap.password !== undefined) f.ldap_password = opts.ldap.password;
    if (opts.ldap.passwordFile !== undefined) f.ldap_password_file = resolvePath(opts.ldap.passwordFile);
  }
  if (typeof opts.webhook === 'string') f.webhook_token = opts.webhook;
  else if (opts.webhook) {
    if (opts.webhook.token !== undefined) f.webhook_token = opts.webhook.token;
    if (opts.webhook.tokenFile !== undefined) f.webhook_token_file = resolvePath(opts.webhook.tokenFile);
  }
  if (opts.keep) f.keep = true;
  return f;
}

/** `pilot.network`: list, create, join, leave, members and enterprise administration. */
export class PilotNetworks {
  constructor(private readonly request: Request) {}

  list(): Promise<Result> {
    return this.request('network_list');
  }

  create(name: string, opts: CreateOptions = {}): Promise<Result> {
    const f: IpcMap = { name };
    if (opts.joinRule) f.join_rule = opts.joinRule;
    if (opts.token) f.token = opts.token;
    if (opts.adminToken) f.admin_token = opts.adminToken;
    if (opts.allowedPorts) f.allowed_ports = opts.allowedPorts;
    if (opts.maxMembers !== undefined) f.max_members = opts.maxMembers;
    if (opts.enterprise !== undefined) f.enterprise = opts.enterprise;
    if (opts.identityRule) f.identity_rule = JSON.stringify(opts.identityRule);
    if (opts.groupNetworks) f.group_networks = JSON.stringify(opts.groupNetworks);
    if (opts.networkAdminToken) f.network_admin_token = opts.networkAdminToken;
    return this.request('network_create', f);
  }

  /** Join; `opts` is the join token (string) or the identity proof options. */
  join(networkId: number, opts: string | JoinOptions = {}): Promise<Result> {
    const f = typeof opts === 'string' ? (opts ? { token: opts } : {}) : joinFields(opts);
    return this.request('network_join', { network_id: netArg(networkId), ...f });
  }

  leave(networkId: number): Promise<Result> {
    return this.request('network_leave', { network_id: netArg(networkId) });
  }

  /** `{network_id, enterprise, members: [{node_id, address, online, role?, external_id?, member_tags, hostname?}]}` */
  members(networkId: number): Promise<Result> {
    return this.request('network_members', { network_id: netArg(networkId) });
  }

  /** This node's role (or `node`'s) on an enterprise network. */
  role(networkId: number, node?: NodeRef): Promise<Result> {
    return this.request('network_role', { network_id: netArg(networkId), ...(node !== undefined ? { node: nodeArg(node) } : {}) });
  }

  promote(networkId: number, node: NodeRef): Promise<Result> {
    return this.request('network_promote', { network_id: netArg(networkId), node: nodeArg(node) });
  }

  demote(networkId: number, node: NodeRef): Promise<Result> {
    return this.request('network_demote', { network_id: netArg(networkId), node: nodeArg(node) });
  }

  /** Remove a member (owner/admin; or with `{ adminToken }` the registry admin). Its sessions on the network close. */
  kick(networkId: number, node: NodeRef, opts: { adminToken?: string } = {}): Promise<Result> {
    return this.request('network_kick', { network_id: netArg(networkId), node: nodeArg(node), ...(opts.adminToken ? { admin_token: opts.adminToken } : {}) });
  }

  /** Atomic: this node (owner) becomes admin, `node` owner. */
  transfer(networkId: number, node: NodeRef): Promise<Result> {
    return this.request('network_transfer', { network_id: netArg(networkId), node: nodeArg(node) });
  }

  invite(networkId: number, node: NodeRef, opts: { ttlS?: number } = {}): Promise<Result> {
    return this.request('network_invite', { network_id: netArg(networkId), node: nodeArg(node), ...(opts.ttlS !== undefined ? { ttl_s: opts.ttlS } : {}) });
  }

  /** Pending invites of this node: `[{network_id, network_name, from_node_id, created_at, expires_at}]`. */
  async invites(): Promise<Result[]> {
    return ((await this.request('network_invites')).invites as Result[] | undefined) ?? [];
  }

  acceptInvite(networkId: number): Promise<Result> {
    return this.request('network_accept', { network_id: netArg(networkId) });
  }

  rejectInvite(networkId: number): Promise<Result> {
    return this.request('network_reject', { network_id: netArg(networkId) });
  }

  /** Per-network tags of a member (owner/admin); [] clears. */
  setMemberTags(networkId: number, node: NodeRef, tags: string[]): Promise<Result> {
    return this.request('network_tags', { network_id: netArg(networkId), node: nodeArg(node), tags });
  }

  setEnterprise(networkId: number, on: boolean, opts: { adminToken?: string } = {}): Promise<Result> {
    return this.request('network_enterprise', { network_id: netArg(networkId), enterprise: on, ...(opts.adminToken ? { admin_token: opts.adminToken } : {}) });
  }

  setJoinRule(networkId: number, joinRule: string, opts: { token?: string; identityRule?: Record<string, unknown>; groupNetworks?: Record<string, number[]> } = {}): Promise<Result> {
    return this.request('network_join_rule', {
      network_id: netArg(networkId),
      join_rule: joinRule,
      ...(opts.token !== undefined ? { token: opts.token } : {}),
      ...(opts.identityRule ? { identity_rule: JSON.stringify(opts.identityRule) } : {}),
      ...(opts.groupNetworks ? { group_networks: JSON.stringify(opts.groupNetworks) } : {}),
    });
  }

  policy(networkId: number): Promise<Result> {
    return this.request('network_policy', { network_id: netArg(networkId) });
  }

  setPolicy(networkId: number, p: { allowedPorts?: number[]; maxMembers?: number }): Promise<Result> {
    return this.request('network_set_policy', {
      network_id: netArg(networkId),
      ...(p.allowedPorts ? { allowed_ports: p.allowedPorts } : {}),
      ...(p.maxMembers !== undefined ? { max_members: p.maxMembers } : {}),
    });
  }

  /** A node later admitted with `externalId` gets `role` (null removes the entry). */
  preassign(networkId: number, externalId: string, role: 'admin' | 'member' | null): Promise<Result> {
    return this.request('network_preassign', { network_id: netArg(networkId), external_id: externalId, role });
  }

  /** Set ("" clears) the network's own admin token (owner). */
  setAdminToken(networkId: number, token: string): Promise<Result> {
    return this.request('network_admin_token', { network_id: netArg(networkId), token });
  }

  /** Memberships the daemon keeps (proof sources, token expiry; never secrets). */
  async kept(): Promise<Result[]> {
    return ((await this.request('network_identities')).kept as Result[] | undefined) ?? [];
  }
}

/** `pilot.key`: the node's Ed25519 key lifecycle. */
export class PilotKeys {
  constructor(private readonly request: Request) {}

  /** `{node_id, public_key, created_at, rotated_at, rotate_count, expires_at, key_age_days, expired, expires_soon}` */
  info(): Promise<Result> {
    return this.request('key_info');
  }

  /** New key, same node ID: the old key signs the change, the identity file is replaced atomically. */
  rotate(): Promise<Result> {
    return this.request('key_rotate');
  }

  /** Expiry as a Date, unix seconds, or null (clear; needs `adminToken`, a node may only set or shorten). */
  setExpiry(at: Date | number | null, opts: { adminToken?: string } = {}): Promise<Result> {
    const secs = at === null ? null : at instanceof Date ? Math.floor(at.getTime() / 1000) : Math.floor(at);
    if (secs !== null && (!Number.isFinite(secs) || secs <= 0)) throw new PilotSdkError('invalid_argument', 'expiry must be a future time');
    return this.request('key_expiry', { expires_at: secs, ...(opts.adminToken ? { admin_token: opts.adminToken } : {}) });
  }
}
