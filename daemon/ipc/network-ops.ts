/**
 * The daemon's network and key IPC ops (issue 6; registry side in registry/ENTERPRISE.md): joining with an
 * identity proof (daemon/identity-proof.ts), enterprise administration signed by this node as the acting
 * node (members with role and external ID, promote/demote/kick/transfer, invites, member tags, join rule,
 * enterprise toggle, policy, pre-assignment, network admin token) and the key lifecycle (info, rotation
 * that keeps the node ID, expiry). Also the daemon's reactions to enterprise pushes and heartbeat key
 * warnings, surfaced as `network` IPC events and webhooks.
 *
 * Errors keep the registry's stable codes (`enterprise_required`, `identity_refused`, `forbidden`,
 * `key_expired`, `conflict`, …) and add an actionable hint. Secrets (tokens, passwords, keys) are never
 * logged, and never written to disk: a kept membership (`keep: true`) stores only file paths / commands.
 *
 * Kept memberships: with `keep`, the daemon keeps the proof's source (token file or command, certificate
 * and key files, LDAP password file), renews tokens shortly before their `exp`, and re-joins with a fresh
 * proof when it finds itself no longer a member at start-up or after re-registering (registry restart
 * or data loss). A kick or leave the daemon sees drops the kept entry; a kick that happened while the
 * daemon was offline is not distinguishable from data loss, so to keep a node out, refuse its identity
 * (rule, IdP, CA) rather than only kicking it.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { NodeAuth, RegistryClient } from '../../registry/client.js';
import type { HeartbeatOk, JoinRule, PushEvent } from '../../registry/protocol/messages.js';
import type { Identity } from '../../transport/identity.js';
import { PilotError } from '../../transport/errors.js';
import { writeFileAtomic } from '../datadir.js';
import { describeSpec, parseProofSpec, persistableSpec, prepareProof, ProofSourceError, TokenSource, type ProofSpec } from '../identity-proof.js';
import { rotateIdentity } from '../key-rotation.js';
import type { IpcMap, IpcValue } from './protocol.js';

declare module './protocol.js' {
  interface IpcOps {
    network_role: { args: { network_id: number; node?: number | string }; result: IpcMap };
    network_promote: { args: { network_id: number; node: number | string }; result: IpcMap };
    network_demote: { args: { network_id: number; node: number | string }; result: IpcMap };
    network_kick: { args: { network_id: number; node: number | string }; result: IpcMap };
    network_transfer: { args: { network_id: number; node: number | string }; result: IpcMap };
    network_invite: { args: { network_id: number; node: number | string; ttl_s?: number }; result: IpcMap };
    network_invites: { args: IpcMap; result: IpcMap };
    network_accept: { args: { network_id: number }; result: IpcMap };
    network_reject: { args: { network_id: number }; result: IpcMap };
    network_tags: { args: { network_id: number; node: number | string; tags: string[] }; result: IpcMap };
    network_enterprise: { args: { network_id: number; enterprise: boolean }; result: IpcMap };
    network_join_rule: { args: IpcMap; result: IpcMap };
    network_set_policy: { args: { network_id: number; allowed_ports?: number[]; max_members?: number }; result: IpcMap };
    network_preassign: { args: { network_id: number; external_id: string; role: string | null }; result: IpcMap };
    network_admin_token: { args: { network_id: number; token: string }; result: IpcMap };
    network_identities: { args: IpcMap; result: IpcMap };
    key_info: { args: IpcMap; result: IpcMap };
    key_rotate: { args: IpcMap; result: IpcMap };
    key_expiry: { args: { expires_at: number | null; admin_token?: string }; result: IpcMap };
  }
  interface IpcEvents {
    /**
     * Enterprise and key events: `kind` ∈ invite, role, kicked, member_kicked, member_tags, key_rotated,
     * peer_key_rotated, key_expires_soon, key_expired, token_renewed, token_renew_failed, rejoined, rejoin_failed.
     */
    network: { kind: string; network_id?: number; node_id?: number; [key: string]: IpcValue | undefined };
  }
}

/** An op failure with a stable code and a hint; the IPC server passes it through unchanged. */
export class NetworkOpError extends PilotError {
  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, hint });
  }
}

/** The identity refusal reason (`[token_audience_mismatch] …` → `token_audience_mismatch`). */
export function refusalReason(message: string): string | null {
  const m = /\[([a-z0-9_]+)\]/.exec(message);
  return m ? m[1]! : null;
}

function identityHint(reason: string | null): string {
  const r = reason ?? '';
  if (r === 'token_audience_mismatch') return "the token was issued for another audience: request one for the audience the network's rule names";
  if (r === 'token_expired' || r === 'token_too_old') return 'the token expired: fetch a fresh one (or give a token file/command and --keep so the daemon renews it)';
  if (r === 'token_issuer_mismatch') return "the token comes from another issuer than the one the network's rule names";
  if (r.startsWith('token_') || r === 'proof_missing') return 'the token is not acceptable to the network: check issuer, audience, algorithm and lifetime';
  if (['tenant_mismatch', 'email_domain_mismatch', 'group_missing', 'role_missing', 'claim_mismatch'].includes(r)) return "your identity lacks a claim the network requires (tenant, domain, group or role): ask its owner";
  if (r.startsWith('spiffe_')) return "the SVID's SPIFFE ID or trust domain is not admitted by the network's rule";
  if (r.startsWith('cert_') || r.startsWith('chain_') || r.startsWith('crl_') || r === 'leaf_is_ca' || r === 'eku_missing' || r === 'san_mismatch' || r === 'subject_mismatch') {
    return "the certificate was refused: it must chain to the network's CA bundle, be valid now, not revoked, and match the required EKU/SAN";
  }
  if (r.startsWith('pop_')) return 'the proof of possession failed: give the private key of the certificate, and check the clock';
  if (r.startsWith('ldap_')) return r === 'ldap_unavailable' ? 'the LDAP directory did not answer: try again later' : 'LDAP refused: check the user, the password file and group membership';
  if (r.startsWith('webhook_')) return 'the identity webhook refused the credential';
  return "the network's identity rule refused the proof; the code in brackets says why (registry/identity/README.md lists them)";
}

/** Registry/local error → NetworkOpError with the registry's code and a hint. */
export function toNetworkOpError(err: unknown, what: string, net?: number): NetworkOpError {
  if (err instanceof NetworkOpError) return err;
  const raw = (err as { code?: unknown })?.code;
  const code = typeof raw === 'string' ? raw : 'internal';
  const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  const n = net === undefined ? '<net>' : String(net);
  switch (code) {
    case 'enterprise_required':
      return new NetworkOpError(code, message, `an enterprise feature: the owner turns it on with "pilotctl network enterprise ${n} on", or create the network with --enterprise`);
    case 'identity_refused':
      return new NetworkOpError(code, message, identityHint(refusalReason(message)));
    case 'forbidden':
      return new NetworkOpError(code, message, `your role on network ${n} does not allow this: "pilotctl network members ${n}" shows roles; ask the owner or an admin`);
    case 'key_expired':
      return new NetworkOpError(code, message, 'this node\'s key has expired: a registry admin clears the expiry (set_key_expiry with the admin token); then rotate with "pilotctl key rotate"');
    case 'conflict':
      return new NetworkOpError(code, message, `already so, or changed meanwhile: check "pilotctl network members ${n}" and retry`);
    case 'limit_reached':
      return new NetworkOpError(code, message, 'a limit is reached (max_members, invite inbox): ask the owner to raise it or clean up');
    case 'unauthorized':
      return new NetworkOpError(code, message, 'the admin token is wrong or not configured (--admin-token or $PILOT_ADMIN_TOKEN)');
    case 'not_found':
      return new NetworkOpError(code, message, '"pilotctl network list" shows networks; node IDs and addresses come from "pilotctl network members"');
    case 'bad_signature':
    case 'stale_signature':
    case 'replayed_signature':
      return new NetworkOpError(code, message, 'the registry refused this node\'s signature: check the system clock (±60 s)');
    case 'bad_request':
    case 'bad_value':
      return new NetworkOpError('bad_request', message, 'check the arguments (pilotctl network --help)');
    case 'proof_source_unreadable':
      return new NetworkOpError(code, message, 'the daemon reads proof files itself: give absolute paths it can read');
    case 'token_command_failed':
      return new NetworkOpError(code, message, 'run the token command by hand: it must print the token on stdout within 10 s');
    case 'bad_certificate':
    case 'bad_key':
    case 'cert_key_mismatch':
      return new NetworkOpError(code, message, 'give the PEM certificate chain (leaf first) and the PEM private key of that leaf');
    case 'timeout':
    case 'connection_lost':
    case 'closed':
    case 'queue_full':
      return new NetworkOpError('unavailable', message, 'the registry did not answer: check that it runs and this daemon reaches it');
    default:
      return new NetworkOpError(code, message);
  }
}

export interface NetworkOpsHost {
  readonly registry: RegistryClient;
  auth(): NodeAuth;
  identity(): Identity;
  /** A node given as ID, address or hostname. */
  resolveNode(text: string): Promise<number>;
  /** Where kept memberships are stored (0600 JSON). */
  keptJoinsPath: string;
  identityPath: string;
  /** `network` IPC event + webhook (`network.<kind>`, `key.<kind>`, `identity.<kind>`). */
  emit(kind: string, data: Record<string, IpcValue | undefined>): void;
  /** We became a member of `net` (membership cache, policy fetch). */
  joined(net: number): Promise<void>;
  /** We are no longer a member of `net` (re-check sessions). */
  left(net: number): void;
  /** The registry now holds `next` for our node: switch every signer and the tunnel to it. */
  rotated(next: Identity): void;
  log: Logger;
  now?: () => number;
}

interface Kept {
  spec: ProofSpec;
  tokens: TokenSource | null;
  timer: NodeJS.Timeout | null;
  failures: number;
}

const MAX_KEPT = 256;
const RENEW_RETRY_MAX_MS = 5 * 60_000;
/** Registry codes after which a re-join with the kept proof will not succeed by retrying. */
const DEFINITE = new Set(['identity_refused', 'not_found', 'forbidden', 'enterprise_required', 'bad_request', 'proof_source_unreadable', 'cert_key_mismatch', 'bad_certificate', 'bad_key']);

type Args = IpcMap;

function num(a: Args, key: string, min: number, max: number, what = key): number {
  const v = a[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new NetworkOpError('bad_request', `${what} must be an integer in ${min}..${max}`);
  return v;
}

function text(a: Args, key: string, max: number, allowEmpty = false): string {
  const v = a[key];
  if (typeof v !== 'string' || v.length > max || (!allowEmpty && v.length === 0)) throw new NetworkOpError('bad_request', `${key} must be a ${allowEmpty ? '' : 'non-empty '}string of at most ${max} characters`);
  return v;
}

function optText(a: Args, key: string, max: number): string | undefined {
  return a[key] === undefined || a[key] === null ? undefined : text(a, key, max);
}

/** An object argument given as a map or as JSON text (identity_rule, group_networks). */
function objectArg(a: Args, key: string): Record<string, unknown> | undefined {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  let o: unknown = v;
  if (typeof v === 'string') {
    try {
      o = JSON.parse(v);
    } catch {
      throw new NetworkOpError('bad_request', `${key} is not valid JSON`);
    }
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o) || o instanceof Uint8Array) throw new NetworkOpError('bad_request', `${key} must be a JSON object`);
  return o as Record<string, unknown>;
}

function intList(a: Args, key: string, min: number, max: number, cap: number): number[] | undefined {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > cap || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max)) {
    throw new NetworkOpError('bad_request', `${key} must be at most ${cap} integers in ${min}..${max}`);
  }
  return v as number[];
}

function strip(r: unknown): IpcMap {
  const { type: _t, ...rest } = r as Record<string, unknown>;
  return rest as IpcMap;
}

export class NetworkOps {
  private readonly kept = new Map<number, Kept>();
  private readonly now: () => number;
  private closed = false;
  private warnedExpiry: number | null = null;
  private expiredReported = false;
  readonly stats = { identityJoins: 0, tokenRenewals: 0, tokenRenewFailures: 0, rejoins: 0, rotations: 0 };

  constructor(private readonly h: NetworkOpsHost) {
    this.now = h.now ?? Date.now;
  }

  private netArg(a: Args): number {
    const v = a.network_id ?? a.id;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 0xffff) throw new NetworkOpError('bad_request', 'network_id must be 1..65535');
    return v;
  }

  private async nodeArg(a: Args, key = 'node'): Promise<number> {
    const v = a[key] ?? a.node_id;
    if (typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 0xffffffff) return v;
    if (typeof v === 'string' && v.trim() !== '') {
      try {
        return await this.h.resolveNode(v);
      } catch (err) {
        throw new NetworkOpError('not_found', `${(err as Error).message}`, 'give a node ID, an address or a hostname');
      }
    }
    throw new NetworkOpError('bad_request', `${key} must be a node ID, address or hostname`);
  }

  /** Run a registry call; failures become NetworkOpErrors with the registry's code. */
  private async call<T>(what: string, net: number | undefined, fn: () => Promise<T>): Promise<IpcMap> {
    try {
      return strip(await fn());
    } catch (err) {
      throw toNetworkOpError(err, what, net);
    }
  }

  // ----- IPC: network_* ----------------------------------------------------------------------------

  async network(op: string, a: Args): Promise<IpcMap> {
    const reg = this.h.registry;
    const me = (): NodeAuth => this.h.auth();
    switch (op) {
      case 'list':
        return this.call('network list', undefined, () => reg.listNetworks());
      case 'create':
        return this.create(a);
      case 'join':
        return this.join(a);
      case 'leave': {
        const net = this.netArg(a);
        const r = await this.call('network leave', net, () => reg.leaveNetwork(me(), net));
        this.dropKept(net);
        this.h.left(net);
        return r;
      }
      case 'members': {
        const net = this.netArg(a);
        return this.call('network members', net, () => reg.listMembers(me(), net));
      }
      case 'policy': {
        const net = this.netArg(a);
        return this.call('network policy', net, () => reg.getNetworkPolicy(net, me()));
      }
      case 'set_policy': {
        const net = this.netArg(a);
        const allowedPorts = intList(a, 'allowed_ports', 1, 65535, 100);
        const maxMembers = a.max_members === undefined ? undefined : num(a, 'max_members', 0, 10_000);
        if (allowedPorts === undefined && maxMembers === undefined) throw new NetworkOpError('bad_request', 'give allowed_ports and/or max_members');
        return this.call('network policy', net, () =>
          reg.setNetworkPolicy(me(), net, { ...(allowedPorts ? { allowedPorts } : {}), ...(maxMembers !== undefined ? { maxMembers } : {}) }),
        );
      }
      case 'role': {
        const net = this.netArg(a);
        const node = a.node === undefined && a.node_id === undefined ? me().nodeId : await this.nodeArg(a);
        return this.call('network role', net, () => reg.getMemberRole(me(), net, node));
      }
      case 'promote': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        return this.call('network promote', net, () => reg.promoteMember(me(), net, node));
      }
      case 'demote': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        return this.call('network demote', net, () => reg.demoteMember(me(), net, node));
      }
      case 'kick': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        const by = typeof a.admin_token === 'string' ? { adminToken: a.admin_token } : typeof a.network_admin_token === 'string' ? { networkAdminToken: a.network_admin_token } : me();
        return this.call('network kick', net, () => reg.kickMember(by, net, node));
      }
      case 'transfer': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        return this.call('network transfer', net, () => reg.transferOwnership(me(), net, node));
      }
      case 'invite': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        const ttlS = a.ttl_s === undefined ? undefined : num(a, 'ttl_s', 60, 30 * 86_400);
        return this.call('network invite', net, () => reg.inviteToNetwork(me(), net, node, ttlS === undefined ? {} : { ttlS }));
      }
      case 'invites':
        return this.call('network invites', undefined, () => reg.pollInvites(me()));
      case 'accept':
      case 'reject': {
        const net = this.netArg(a);
        const r = await this.call(`network ${op}`, net, () => reg.respondInvite(me(), net, op === 'accept'));
        if (op === 'accept' && r.accepted === true) await this.h.joined(net);
        return r;
      }
      case 'tags': {
        const net = this.netArg(a);
        const node = await this.nodeArg(a);
        const tags = a.tags;
        if (!Array.isArray(tags) || tags.length > 10 || !tags.every((t) => typeof t === 'string' && t.length <= 64)) throw new NetworkOpError('bad_request', 'tags must be at most 10 strings');
        return this.call('network tags', net, () => reg.setMemberTags(me(), net, node, tags as string[]));
      }
      case 'enterprise': {
        const net = this.netArg(a);
        if (typeof a.enterprise !== 'boolean') throw new NetworkOpError('bad_request', 'enterprise must be true or false');
        const on = a.enterprise;
        const by = typeof a.admin_token === 'string' ? { adminToken: a.admin_token } : me();
        return this.call('network enterprise', net, () => reg.setNetworkEnterprise(by, net, on));
      }
      case 'join_rule': {
        const net = this.netArg(a);
        const joinRule = text(a, 'join_rule', 16) as JoinRule;
        const token = optText(a, 'token', 256);
        const identityRule = objectArg(a, 'identity_rule');
        const groupNetworks = objectArg(a, 'group_networks') as Record<string, number[]> | undefined;
        return this.call('network join-rule', net, () =>
          reg.setJoinRule(me(), net, {
            joinRule,
            ...(token !== undefined ? { token } : {}),
            ...(identityRule ? { identityRule } : {}),
            ...(groupNetworks ? { groupNetworks } : {}),
          }),
        );
      }
      case 'preassign': {
        const net = this.netArg(a);
        const externalId = text(a, 'external_id', 1024);
        const role = a.role === null || a.role === undefined || a.role === 'none' ? null : a.role;
        if (role !== null && role !== 'admin' && role !== 'member') throw new NetworkOpError('bad_request', 'role must be admin, member or none');
        return this.call('network preassign', net, () => reg.setRolePreassignment(me(), net, externalId, role));
      }
      case 'admin_token': {
        const net = this.netArg(a);
        const token = text(a, 'token', 4096, true);
        return this.call('network admin-token', net, () => reg.setNetworkAdminToken(me(), net, token));
      }
      case 'identities':
        return { kept: [...this.kept].map(([net, k]) => ({ network_id: net, ...describeSpec(k.spec), token_expires_at: k.tokens?.expiresAt ?? null })) };
      default:
        throw new PilotError('unknown_op', `unknown op "network_${op.slice(0, 40)}"`);
    }
  }

  private async create(a: Args): Promise<IpcMap> {
    const name = text(a, 'name', 63);
    const adminToken = typeof a.admin_token === 'string' ? a.admin_token : process.env.PILOT_ADMIN_TOKEN ?? '';
    const joinRule = (typeof a.join_rule === 'string' ? a.join_rule : 'open') as JoinRule;
    const token = optText(a, 'token', 256);
    const allowedPorts = intList(a, 'allowed_ports', 1, 65535, 100);
    const maxMembers = a.max_members === undefined ? undefined : num(a, 'max_members', 0, 10_000);
    const identityRule = objectArg(a, 'identity_rule');
    const groupNetworks = objectArg(a, 'group_networks') as Record<string, number[]> | undefined;
    const networkAdminToken = optText(a, 'network_admin_token', 4096);
    const enterprise = a.enterprise === undefined ? undefined : a.enterprise === true;
    const me = this.h.auth();
    const r = await this.call('network create', undefined, () =>
      this.h.registry.createNetwork(adminToken, {
        name,
        joinRule,
        nodeId: me.nodeId,
        ...(token !== undefined ? { token } : {}),
        ...(allowedPorts ? { allowedPorts } : {}),
        ...(maxMembers !== undefined ? { maxMembers } : {}),
        ...(enterprise !== undefined ? { enterprise } : {}),
        ...(identityRule ? { identityRule } : {}),
        ...(groupNetworks ? { groupNetworks } : {}),
        ...(networkAdminToken ? { networkAdminToken } : {}),
      }),
    );
    if (typeof r.network_id === 'number') await this.h.joined(r.network_id);
    return r;
  }

  private async join(a: Args): Promise<IpcMap> {
    const net = this.netArg(a);
    let spec: ProofSpec | null;
    try {
      spec = parseProofSpec(a);
    } catch (err) {
      throw toNetworkOpError(err, 'network join', net);
    }
    const token = optText(a, 'token', 256);
    const keep = a.keep === true;
    if (keep && !spec) throw new NetworkOpError('bad_request', 'keep is for identity joins (a proof from a file or command)');
    if (keep && spec && !persistableSpec(spec)) {
      throw new NetworkOpError('bad_request', 'keep needs a proof the daemon can fetch again: a token file or command, certificate and key files, or an LDAP password file');
    }
    const tokens = spec && (spec.kind === 'oidc' || spec.kind === 'jwt_svid' || spec.kind === 'webhook') ? new TokenSource(spec.token, this.now) : null;
    const r = await this.joinWith(net, spec, tokens, token);
    if (keep && spec) {
      this.setKept(net, { spec, tokens, timer: null, failures: 0 });
      await this.saveKept();
    }
    return r;
  }

  private async joinWith(net: number, spec: ProofSpec | null, tokens: TokenSource | null, token?: string): Promise<IpcMap> {
    const me = this.h.auth();
    let build: ((ts: number) => Record<string, string>) | undefined;
    if (spec) {
      try {
        build = await prepareProof(spec, { networkId: net, nodeId: me.nodeId, nodePublicKey: this.h.identity().publicKey }, tokens ?? undefined);
      } catch (err) {
        throw toNetworkOpError(err, 'network join', net);
      }
    }
    const r = await this.call('network join', net, () => this.h.registry.joinNetwork(me, net, token, build));
    if (spec) {
      this.stats.identityJoins++;
      // audit-relevant: the admitted identity, never the proof
      this.h.log.info({ network_id: net, external_id: r.external_id ?? null, kind: spec.kind, role: r.role ?? null }, 'joined network with an identity proof');
    }
    await this.h.joined(net);
    for (const n of Array.isArray(r.auto_joined) ? r.auto_joined : []) if (typeof n === 'number') await this.h.joined(n);
    return r;
  }

  // ----- IPC: key_* --------------------------------------------------------------------------------

  async key(op: string, a: Args): Promise<IpcMap> {
    const reg = this.h.registry;
    const me = this.h.auth();
    switch (op) {
      case 'info':
        return this.call('key info', undefined, () => reg.getKeyInfo(me.nodeId));
      case 'rotate': {
        let next: Identity;
        try {
          next = await rotateIdentity({
            identityPath: this.h.identityPath,
            current: this.h.identity(),
            nodeId: me.nodeId,
            rotate: (pub) => reg.rotateKey(me, pub),
            registryKey: async (n) => (await reg.lookup(n)).public_key ?? null,
            log: this.h.log,
          });
        } catch (err) {
          throw toNetworkOpError(err, 'key rotate');
        }
        this.stats.rotations++;
        this.h.rotated(next);
        this.h.log.info({ node_id: me.nodeId, public_key: next.publicKeyB64 }, 'identity key rotated (node ID kept)');
        this.h.emit('key_rotated', { node_id: me.nodeId, public_key: next.publicKeyB64 });
        const info = await this.call('key info', undefined, () => reg.getKeyInfo(me.nodeId)).catch(() => ({}) as IpcMap);
        return { ...info, node_id: me.nodeId, public_key: next.publicKeyB64, rotated: true };
      }
      case 'expiry': {
        const v = a.expires_at;
        let at: number | null;
        if (v === null || v === undefined || v === 0) at = null;
        else at = num(a, 'expires_at', 1, 2 ** 40, 'expires_at (unix seconds)');
        const by = typeof a.admin_token === 'string' ? { adminToken: a.admin_token, nodeId: me.nodeId } : me;
        const r = await this.call('key expiry', undefined, () => reg.setKeyExpiry(by, at));
        this.warnedExpiry = null;
        this.expiredReported = false;
        return r;
      }
      default:
        throw new PilotError('unknown_op', `unknown op "key_${op.slice(0, 40)}"`);
    }
  }

  // ----- pushes, heartbeats ------------------------------------------------------------------------

  /** Enterprise pushes: surface them; a kick or leave of this node drops its kept membership. */
  onPush(e: PushEvent, self: number): void {
    switch (e.event) {
      case 'network_membership':
        if (e.action !== 'kick' && e.action !== 'delete' && e.action !== 'leave') return;
        if (e.node_id === self || e.action === 'delete') {
          if (this.kept.has(e.network_id)) {
            this.dropKept(e.network_id);
            void this.saveKept().catch(() => undefined);
          }
          if (e.action === 'kick' && e.node_id === self) {
            this.h.log.warn({ network_id: e.network_id }, 'this node was removed from a network');
            this.h.emit('kicked', { network_id: e.network_id, node_id: self });
          }
        } else if (e.action === 'kick') this.h.emit('member_kicked', { network_id: e.network_id, node_id: e.node_id });
        return;
      case 'network_role':
        if (e.node_id === self) this.h.log.info({ network_id: e.network_id, role: e.role }, 'role on network changed');
        this.h.emit('role', { network_id: e.network_id, node_id: e.node_id, role: e.role });
        return;
      case 'network_invite':
        if (e.node_id !== self) return;
        this.h.log.info({ network_id: e.network_id, from: e.from_node_id, expires_at: e.expires_at }, 'invited to a network');
        this.h.emit('invite', { network_id: e.network_id, node_id: self, from_node_id: e.from_node_id, expires_at: e.expires_at });
        return;
      case 'member_tags':
        this.h.emit('member_tags', { network_id: e.network_id, node_id: e.node_id, tags: e.tags });
        return;
      case 'key_rotated':
        if (e.node_id !== self) this.h.emit('peer_key_rotated', { node_id: e.node_id });
        return;
      default:
        return;
    }
  }

  /** Heartbeat reply: warn (log + event, once per expiry time) when the key expires within the warning window. */
  onHeartbeat(r: HeartbeatOk): void {
    this.expiredReported = false;
    if (!r.key_expires_soon || typeof r.key_expires_at !== 'number') return;
    if (this.warnedExpiry === r.key_expires_at) return;
    this.warnedExpiry = r.key_expires_at;
    const at = new Date(r.key_expires_at * 1000).toISOString();
    this.h.log.warn({ expires_at: at }, 'identity key expires soon: rotate it (pilotctl key rotate) or have the expiry moved');
    this.h.emit('key_expires_soon', { expires_at: r.key_expires_at });
  }

  /** A registry refusal of a signed op: `key_expired` is reported once (log error + event) until it clears. */
  onRegistryError(err: unknown): boolean {
    if ((err as { code?: unknown })?.code !== 'key_expired') return false;
    if (!this.expiredReported) {
      this.expiredReported = true;
      this.h.log.error({ err: (err as Error).message }, 'identity key expired: the registry refuses heartbeats, resolves, joins and tunnels until an admin clears the expiry');
      this.h.emit('key_expired', {});
    }
    return true;
  }

  // ----- kept memberships ----------------------------------------------------------------------------

  private setKept(net: number, k: Kept): void {
    this.dropKept(net);
    if (this.kept.size >= MAX_KEPT) throw new NetworkOpError('limit_reached', `at most ${MAX_KEPT} kept memberships`);
    this.kept.set(net, k);
    this.scheduleRenewal(net, k);
  }

  private dropKept(net: number): void {
    const k = this.kept.get(net);
    if (!k) return;
    if (k.timer) clearTimeout(k.timer);
    this.kept.delete(net);
  }

  private scheduleRenewal(net: number, k: Kept, retryMs?: number): void {
    if (this.closed || !k.tokens) return;
    const at = retryMs !== undefined ? this.now() + retryMs : k.tokens.renewAt();
    if (at === null) return;
    const delay = Math.min(Math.max(1000, at - this.now()), 2 ** 31 - 1);
    k.timer = setTimeout(() => void this.renew(net, k), delay);
    k.timer.unref();
  }

  private async renew(net: number, k: Kept): Promise<void> {
    k.timer = null;
    if (this.closed || this.kept.get(net) !== k || !k.tokens) return;
    const before = k.tokens.expiresAt;
    try {
      await k.tokens.fetch();
    } catch (err) {
      return this.renewFailed(net, k, (err as Error).message);
    }
    const after = k.tokens.expiresAt;
    if (before !== null && after !== null && after <= before) return this.renewFailed(net, k, 'the source still gives the same (or an older) token');
    k.failures = 0;
    this.stats.tokenRenewals++;
    this.h.log.info({ network_id: net, expires_at: after === null ? null : new Date(after).toISOString() }, 'identity token renewed');
    this.h.emit('token_renewed', { network_id: net, expires_at: after === null ? null : Math.floor(after / 1000) });
    this.scheduleRenewal(net, k);
  }

  private renewFailed(net: number, k: Kept, why: string): void {
    k.failures++;
    this.stats.tokenRenewFailures++;
    const retry = Math.min(RENEW_RETRY_MAX_MS, 5000 * 2 ** Math.min(k.failures - 1, 10));
    this.h.log.warn({ network_id: net, err: why, retry_ms: retry }, 'identity token renewal failed');
    if (k.failures === 1) this.h.emit('token_renew_failed', { network_id: net, error: why });
    this.scheduleRenewal(net, k, retry);
  }

  /** Load kept memberships (paths and commands only) at start-up. */
  async loadKept(): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(this.h.keptJoinsPath, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.h.log.warn({ path: this.h.keptJoinsPath, err: (err as Error).message }, 'kept memberships unreadable; ignored');
      return;
    }
    const list = (json as { kept?: unknown })?.kept;
    if (!Array.isArray(list)) return;
    for (const item of list.slice(0, MAX_KEPT)) {
      try {
        const net = (item as { network_id?: unknown }).network_id;
        if (typeof net !== 'number' || !Number.isInteger(net) || net < 1 || net > 0xffff) continue;
        const spec = parseProofSpec((item as { proof?: Record<string, unknown> }).proof ?? {});
        if (!spec || !persistableSpec(spec)) continue;
        const tokens = spec.kind === 'oidc' || spec.kind === 'jwt_svid' || spec.kind === 'webhook' ? new TokenSource(spec.token, this.now) : null;
        this.kept.set(net, { spec, tokens, timer: null, failures: 0 });
      } catch {
        /* a bad entry is skipped */
      }
    }
  }

  private async saveKept(): Promise<void> {
    const kept = [...this.kept].map(([net, k]) => ({ network_id: net, proof: specFields(k.spec) }));
    await writeFileAtomic(this.h.keptJoinsPath, JSON.stringify({ kept }, null, 2) + '\n', 0o600);
  }

  /** Re-join kept networks we are not a member of (start-up, after re-registration). */
  async rejoinMissing(memberOf: ReadonlySet<number>): Promise<void> {
    let changed = false;
    for (const [net, k] of [...this.kept]) {
      if (memberOf.has(net)) {
        if (!k.timer) this.scheduleRenewal(net, k);
        continue;
      }
      try {
        const r = await this.joinWith(net, k.spec, k.tokens);
        this.stats.rejoins++;
        this.h.emit('rejoined', { network_id: net, external_id: typeof r.external_id === 'string' ? r.external_id : undefined });
        if (!k.timer) this.scheduleRenewal(net, k);
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        this.h.log.warn({ network_id: net, err: (err as Error).message }, 're-join with the kept identity failed');
        this.h.emit('rejoin_failed', { network_id: net, code: typeof code === 'string' ? code : 'error' });
        if (typeof code === 'string' && DEFINITE.has(code)) {
          this.dropKept(net);
          changed = true;
        }
      }
    }
    if (changed) await this.saveKept().catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    for (const k of this.kept.values()) if (k.timer) clearTimeout(k.timer);
  }
}

/** A spec as the IPC/persisted field names (the inverse of parseProofSpec, for persistable specs). */
function specFields(spec: ProofSpec): Record<string, string> {
  const src = (prefix: string, s: { file?: string; command?: string }): Record<string, string> =>
    s.file ? { [`${prefix}_file`]: s.file } : { [`${prefix}_command`]: s.command! };
  switch (spec.kind) {
    case 'oidc':
      return src('oidc_token', spec.token);
    case 'jwt_svid':
      return src('jwt_svid', spec.token);
    case 'webhook':
      return { webhook_token_file: spec.token.file! };
    case 'ldap':
      return { ldap_user: spec.user, ldap_password_file: spec.password.file! };
    case 'svid':
      return { svid_cert: spec.cert, svid_key: spec.key };
    case 'cert':
      return { cert: spec.cert, cert_key: spec.key };
  }
}

export { ProofSourceError };
