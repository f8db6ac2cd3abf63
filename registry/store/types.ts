/**
 * The registry's durable store, behind one interface so a PostgreSQL implementation can replace the
 * embedded SQLite one without touching handlers.
 *
 * Model: the server keeps the whole registry state in memory (hot reads never touch the store) and
 * describes every change as an ordered list of `Mutation`s. `commit()` makes a list durable atomically;
 * the server replies only after the promise resolves. Implementations may group concurrent commits into
 * one transaction but must apply them in call order. A rejected commit is fatal for the server
 * (fail-stop: it stops acknowledging writes, and a restart reloads the last durable state).
 *
 * Extending (enterprise networks, RBAC, invites): add row types and `Mutation` variants here, a
 * migration in the implementation, and fields to `StoreSnapshot`. Existing variants never change shape.
 */

/** `open`/`token`/`invite`, or an identity rule kind (enterprise; the rule itself is in `NetworkExtRow`). */
export type JoinRuleName = 'open' | 'token' | 'invite' | IdentityRuleKind;
export type IdentityRuleKind = 'oidc' | 'spiffe' | 'ca' | 'ldap' | 'webhook';
export const IDENTITY_RULE_KINDS: readonly IdentityRuleKind[] = ['oidc', 'spiffe', 'ca', 'ldap', 'webhook'];

export interface NodeRow {
  id: number;
  /** base64 Ed25519 public key (32 bytes) */
  publicKey: string;
  owner: string | null;
  /** `host:port` observed at registration; '' for records imported without one */
  realAddr: string;
  isPublic: boolean;
  hostname: string | null;
  tags: string[];
  taskExec: boolean;
  poloScore: number;
  /** unix seconds of the last heartbeat/registration (flushed in batches, see README) */
  lastSeen: number;
  deregistered: boolean;
  /** unix seconds */
  createdAt: number;
}

export interface NetworkRow {
  id: number;
  name: string;
  joinRule: JoinRuleName;
  /** `salt:hex(sha256(salt ‖ token))` for token networks, else null */
  tokenHash: string | null;
  allowedPorts: number[];
  /** 0 = unlimited */
  maxMembers: number;
  /** node that created it, if any (the enterprise layer makes it the owner) */
  ownerId: number | null;
  createdAt: number;
}

export interface MembershipRow {
  networkId: number;
  nodeId: number;
  joinedAt: number;
}

/**
 * A trust link between nodes a < b. Each side's consent is recorded separately; the link grants
 * endpoint disclosure (`resolve`, `punch`) only when both consented (see handlers/trust.ts).
 */
export interface TrustRow {
  a: number;
  b: number;
  aConsents: boolean;
  bConsents: boolean;
  createdAt: number;
}

export interface HandshakeRequestRow {
  toId: number;
  fromId: number;
  justification: string;
  /** unix ms */
  ts: number;
}

export interface HandshakeResponseRow {
  toId: number;
  fromId: number;
  accept: boolean;
  /** unix ms */
  ts: number;
}

export interface StoreMeta {
  nextNodeId: number;
  nextNetworkId: number;
}

// ------------------------------------------------------------------ enterprise (migration 2)

export type Role = 'owner' | 'admin' | 'member';

/** Enterprise settings of a network (absent row = plain network). */
export interface NetworkExtRow {
  networkId: number;
  enterprise: boolean;
  /** identity rule JSON (as accepted by identity/parseIdentityRule), for identity join rules */
  identityRule: string | null;
  /** per-network admin token, `salt:hex(sha256(salt ‖ token))` */
  adminTokenHash: string | null;
  /** group → network IDs auto-joined after an identity join (identity/networksForGroups) */
  groupNetworks: Record<string, number[]> | null;
}

/** Role, admitted external ID and per-network tags of one member of an enterprise/identity network. */
export interface MemberExtRow {
  networkId: number;
  nodeId: number;
  role: Role;
  externalId: string | null;
  tags: string[];
}

/** RBAC pre-assignment: a node admitted with this external ID (lower-cased) gets `role`. */
export interface PreassignRow {
  networkId: number;
  externalId: string;
  role: 'admin' | 'member';
}

export interface InviteRow {
  toId: number;
  networkId: number;
  fromId: number;
  /** unix seconds */
  createdAt: number;
  expiresAt: number;
}

/** Key lifecycle of a node (absent row = key never rotated, no expiry). */
export interface NodeKeyRow {
  nodeId: number;
  /** unix seconds the current key became valid */
  keyCreatedAt: number;
  rotatedAt: number | null;
  rotateCount: number;
  /** unix seconds, null = never */
  expiresAt: number | null;
}

export interface EnterpriseSnapshot {
  networks: NetworkExtRow[];
  members: MemberExtRow[];
  preassign: PreassignRow[];
  invites: InviteRow[];
  keys: NodeKeyRow[];
}

export type Mutation =
  | { kind: 'meta'; meta: StoreMeta }
  | { kind: 'node'; row: NodeRow }
  | { kind: 'network'; row: NetworkRow }
  | { kind: 'network_delete'; id: number }
  | { kind: 'member'; row: MembershipRow }
  | { kind: 'member_delete'; networkId: number; nodeId: number }
  | { kind: 'trust'; row: TrustRow }
  | { kind: 'trust_delete'; a: number; b: number }
  | { kind: 'hs_request'; row: HandshakeRequestRow }
  /** fromId omitted: the node's whole request inbox */
  | { kind: 'hs_request_delete'; toId: number; fromId?: number }
  | { kind: 'hs_response'; row: HandshakeResponseRow }
  | { kind: 'hs_response_delete'; toId: number }
  | { kind: 'net_ext'; row: NetworkExtRow }
  /** every enterprise row of a network (settings, member roles, pre-assignments, invites) */
  | { kind: 'net_ext_delete'; networkId: number }
  | { kind: 'member_ext'; row: MemberExtRow }
  | { kind: 'member_ext_delete'; networkId: number; nodeId: number }
  /** every member role row of that network */
  | { kind: 'member_ext_clear'; networkId: number }
  | { kind: 'preassign'; row: PreassignRow }
  | { kind: 'preassign_delete'; networkId: number; externalId: string }
  | { kind: 'invite'; row: InviteRow }
  | { kind: 'invite_delete'; toId: number; networkId: number }
  | { kind: 'node_key'; row: NodeKeyRow };

export interface StoreSnapshot {
  meta: StoreMeta;
  nodes: NodeRow[];
  networks: NetworkRow[];
  memberships: MembershipRow[];
  trust: TrustRow[];
  handshakeRequests: HandshakeRequestRow[];
  handshakeResponses: HandshakeResponseRow[];
  /** enterprise rows (absent from stores/snapshots that predate migration 2) */
  enterprise?: EnterpriseSnapshot;
}

export interface RegistryStore {
  /** e.g. "sqlite:/var/lib/pilot/registry.db" (no credentials) */
  readonly description: string;
  /** Create/upgrade the schema (ordered, versioned migrations). */
  open(): Promise<void>;
  /** Everything needed to rebuild the in-memory state. */
  load(): Promise<StoreSnapshot>;
  /** Make the mutations durable atomically, after every earlier commit. */
  commit(mutations: readonly Mutation[]): Promise<void>;
  /** Batched heartbeat last-seen (unix seconds per node). Not part of acknowledged state; see README. */
  flushLastSeen(entries: ReadonlyArray<readonly [nodeId: number, lastSeen: number]>): Promise<void>;
  /** Wait for pending commits, then release the store. */
  close(): Promise<void>;
}
