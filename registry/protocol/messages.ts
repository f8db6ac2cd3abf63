/**
 * Reply and push shapes of the registry protocol (wire reference §1.10 plus SPEC §6 additions).
 * Field names are v1's so v1 clients keep working; our additions are optional extra fields.
 */

export type JoinRule = 'open' | 'token' | 'invite' | 'oidc' | 'spiffe' | 'ca' | 'ldap' | 'webhook';
export type Role = 'owner' | 'admin' | 'member';

export interface ErrorReply {
  type: 'error';
  error: string;
  code: string;
}

export interface RegisterOk {
  type: 'register_ok';
  node_id: number;
  network_id: 0;
  address: string;
  public_key: string;
  hostname?: string;
  hostname_error?: string;
}

export interface LookupOk {
  type: 'lookup_ok';
  node_id: number;
  address: string;
  networks: number[];
  public_key: string;
  public: boolean;
  polo_score: number;
  hostname?: string;
  tags?: string[];
  task_exec?: true;
  /** only for public nodes */
  real_addr?: string;
  /** ours: admitted external IDs per network, only for a signed requester sharing that network */
  external_ids?: Record<string, string>;
}

export interface ResolveOk {
  type: 'resolve_ok';
  node_id: number;
  real_addr: string;
}

export interface HeartbeatOk {
  type: 'heartbeat_ok';
  /** unix seconds */
  time: number;
  /** ours: set when the key expires within 24 h (unix seconds of expiry in key_expires_at) */
  key_expires_soon?: true;
  key_expires_at?: number;
}

export interface DeregisterOk {
  type: 'deregister_ok';
  node_id: number;
}

export interface SetVisibilityOk {
  type: 'set_visibility_ok';
  node_id: number;
  visibility: 'public' | 'private';
}

export interface SetHostnameOk {
  type: 'set_hostname_ok';
  node_id: number;
  hostname: string;
}

export interface SetTagsOk {
  type: 'set_tags_ok';
  node_id: number;
  tags: string[];
}

export interface SetTaskExecOk {
  type: 'set_task_exec_ok';
  node_id: number;
  task_exec: boolean;
}

export interface ResolveHostnameOk {
  type: 'resolve_hostname_ok';
  node_id: number;
  address: string;
  public: boolean;
  hostname: string;
}

export interface ReportTrustOk {
  type: 'report_trust_ok';
  node_id: number;
  peer_id: number;
  /** true once both sides have consented (only then does the pair grant `resolve`). */
  mutual: boolean;
}

export interface RevokeTrustOk {
  type: 'revoke_trust_ok';
  node_id: number;
  peer_id: number;
}

export interface RequestHandshakeOk {
  type: 'request_handshake_ok';
  status: 'delivered';
}

export interface HandshakeRequestEntry {
  from_node_id: number;
  justification: string;
  /** unix seconds */
  timestamp: number;
}

export interface HandshakeResponseEntry {
  from_node_id: number;
  accept: boolean;
  /** unix seconds */
  timestamp: number;
}

export interface PollHandshakesOk {
  type: 'poll_handshakes_ok';
  requests: HandshakeRequestEntry[];
  responses: HandshakeResponseEntry[];
}

export interface RespondHandshakeOk {
  type: 'respond_handshake_ok';
  accept: boolean;
  peer_id: number;
}

export interface PunchOk {
  type: 'punch_ok';
  node_a: number;
  node_a_addr: string;
  node_b: number;
  node_b_addr: string;
}

export interface RotateKeyOk {
  type: 'rotate_key_ok';
  node_id: number;
  address: string;
  public_key: string;
}

export interface PoloScoreOk {
  type: 'get_polo_score_ok' | 'set_polo_score_ok' | 'update_polo_score_ok';
  node_id: number;
  address: string;
  polo_score: number;
}

export interface NetworkSummary {
  id: number;
  name: string;
  members: number;
  join_rule: JoinRule;
}

export interface ListNetworksOk {
  type: 'list_networks_ok';
  networks: NetworkSummary[];
}

export interface NodeListing {
  node_id: number;
  address: string;
  /** enterprise networks */
  role?: Role;
  /** identity networks: issuer+subject, SPIFFE ID, certificate subject, LDAP DN */
  external_id?: string;
  /** per-network member tags set by an owner/admin */
  member_tags?: string[];
  hostname?: string;
  task_exec?: true;
  /** only for public nodes */
  real_addr?: string;
}

export interface ListNodesOk {
  type: 'list_nodes_ok';
  network_id: number;
  nodes: NodeListing[];
}

export interface CreateNetworkOk {
  type: 'create_network_ok';
  network_id: number;
  name: string;
  join_rule: JoinRule;
  enterprise?: boolean;
}

export interface JoinNetworkOk {
  type: 'join_network_ok';
  network_id: number;
  node_id: number;
  /** the node's address in that network, `N:<node id>` */
  address: string;
  /** enterprise networks: the role the node got (pre-assignment by external ID, else member) */
  role?: Role;
  /** identity join rules: the admitted identity */
  external_id?: string;
  /** networks joined automatically through the rule's group mapping */
  auto_joined?: number[];
}

export interface LeaveNetworkOk {
  type: 'leave_network_ok';
  network_id: number;
  node_id: number;
}

export interface DeleteNetworkOk {
  type: 'delete_network_ok';
  network_id: number;
}

export interface RenameNetworkOk {
  type: 'rename_network_ok';
  network_id: number;
  name: string;
}

export interface NetworkPolicy {
  network_id: number;
  /** empty = every port allowed */
  allowed_ports: number[];
  /** 0 = unlimited */
  max_members: number;
}

export interface NetworkPolicyOk extends NetworkPolicy {
  type: 'get_network_policy_ok' | 'set_network_policy_ok';
}

export interface KickMemberOk {
  type: 'kick_member_ok';
  network_id: number;
  node_id: number;
}

export interface BeaconRegisterOk {
  type: 'beacon_register_ok';
  beacon_id: number;
}

export interface BeaconListOk {
  type: 'beacon_list_ok';
  beacons: Array<{ id: number; addr: string }>;
}

export interface SubscribeOk {
  type: 'subscribe_ok';
  node_id: number;
  keepalive_ms: number;
  /** inbox entries waiting for `poll_handshakes` (pushes are hints; the inbox is the record) */
  pending: { requests: number; responses: number };
}

export interface AdminStatsOk {
  type: 'admin_stats_ok';
  nodes_total: number;
  nodes_online: number;
  nodes_deregistered: number;
  trust_links: number;
  networks: number;
  connections: number;
  subscriptions: number;
  replay_cache_entries: number;
  uptime_s: number;
  memory: { rss: number; heap_used: number; external: number };
  /** event-loop delay since the previous admin_stats call */
  event_loop_delay: { p50_ms: number; p99_ms: number; max_ms: number } | null;
  gc_ran: boolean;
}

// ------------------------------------------------------------------ enterprise (registry/ENTERPRISE.md)

export interface SetNetworkEnterpriseOk {
  type: 'set_network_enterprise_ok';
  network_id: number;
  enterprise: boolean;
}

export interface SetJoinRuleOk {
  type: 'set_join_rule_ok';
  network_id: number;
  join_rule: JoinRule;
}

export interface MemberRoleOk {
  type: 'promote_member_ok' | 'demote_member_ok' | 'get_member_role_ok';
  network_id: number;
  node_id: number;
  role: Role;
}

export interface TransferOwnershipOk {
  type: 'transfer_ownership_ok';
  network_id: number;
  /** the new owner */
  owner_id: number;
  /** the old owner, now admin */
  previous_owner_id: number;
}

export interface SetNetworkAdminTokenOk {
  type: 'set_network_admin_token_ok';
  network_id: number;
  /** false = cleared */
  enabled: boolean;
}

export interface SetRolePreassignmentOk {
  type: 'set_role_preassignment_ok';
  network_id: number;
  external_id: string;
  /** null = removed */
  role: 'admin' | 'member' | null;
}

export interface SetMemberTagsOk {
  type: 'set_member_tags_ok';
  network_id: number;
  node_id: number;
  tags: string[];
}

export interface MemberEntry {
  node_id: number;
  address: string;
  online: boolean;
  role?: Role;
  external_id?: string;
  member_tags: string[];
  hostname?: string;
}

export interface ListMembersOk {
  type: 'list_members_ok';
  network_id: number;
  enterprise: boolean;
  members: MemberEntry[];
}

export interface InviteToNetworkOk {
  type: 'invite_to_network_ok';
  network_id: number;
  node_id: number;
  status: 'invited' | 'already_invited';
  /** unix seconds */
  expires_at: number;
}

export interface InviteEntry {
  network_id: number;
  network_name: string;
  from_node_id: number;
  /** unix seconds */
  created_at: number;
  expires_at: number;
}

export interface PollInvitesOk {
  type: 'poll_invites_ok';
  node_id: number;
  invites: InviteEntry[];
}

export interface RespondInviteOk {
  type: 'respond_invite_ok';
  network_id: number;
  node_id: number;
  accepted: boolean;
  /** when accepted */
  address?: string;
  role?: Role;
}

export interface KeyInfo {
  node_id: number;
  public_key: string;
  /** unix seconds the current key became valid */
  created_at: number;
  rotated_at: number | null;
  rotate_count: number;
  /** unix seconds, null = never */
  expires_at: number | null;
  key_age_days: number;
  expired: boolean;
  expires_soon: boolean;
}

export interface KeyInfoOk extends KeyInfo {
  type: 'get_key_info_ok' | 'set_key_expiry_ok';
}

/** Frames pushed on a subscription connection. */
export type PushEvent =
  | { type: 'push'; event: 'keepalive'; time: number }
  | { type: 'push'; event: 'handshake_request'; node_id: number; from_node_id: number; justification: string; timestamp: number }
  | { type: 'push'; event: 'handshake_response'; node_id: number; from_node_id: number; accept: boolean; timestamp: number }
  | { type: 'push'; event: 'trust_revoked'; node_id: number; from_node_id: number; timestamp: number }
  | {
      type: 'push';
      event: 'network_membership';
      network_id: number;
      node_id: number;
      action: 'join' | 'leave' | 'kick' | 'delete';
      /** ours: the member's admitted external ID, on join to an identity network */
      external_id?: string;
      timestamp: number;
    }
  | ({ type: 'push'; event: 'network_policy'; timestamp: number } & NetworkPolicy)
  /** ours (enterprise): a member's role changed (promote, demote, transfer, enterprise toggle); role null = roles erased */
  | { type: 'push'; event: 'network_role'; network_id: number; node_id: number; role: Role | null; timestamp: number }
  /** ours: an invite arrived in node_id's inbox (poll_invites is the record) */
  | { type: 'push'; event: 'network_invite'; network_id: number; node_id: number; from_node_id: number; expires_at: number; timestamp: number }
  /** ours: an owner/admin changed a member's per-network tags */
  | { type: 'push'; event: 'member_tags'; network_id: number; node_id: number; tags: string[]; timestamp: number }
  /** ours: node_id now has a new key (to the node and to members of its networks: drop sessions keyed to the old one) */
  | { type: 'push'; event: 'key_rotated'; node_id: number; public_key: string; timestamp: number };

export type PushEventName = PushEvent['event'];
