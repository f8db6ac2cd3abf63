/**
 * Signature challenges (SPEC §6 "fresh signatures"). Each signed request carries `ts` (unix ms) and a
 * base64 Ed25519 `signature` over `<challenge>:<ts>`. The bare challenge is the v1 one (wire reference
 * §1.10), accepted only with `--legacy-signatures`. Challenges marked "ours" do not exist in v1.
 */
export const challenges = {
  /** ours: re-registration of a known key must prove possession of it. */
  register: (publicKeyB64: string) => `register:${publicKeyB64}`,
  resolve: (requesterId: number, nodeId: number) => `resolve:${requesterId}:${nodeId}`,
  heartbeat: (nodeId: number) => `heartbeat:${nodeId}`,
  deregister: (nodeId: number) => `deregister:${nodeId}`,
  setVisibility: (nodeId: number) => `set_visibility:${nodeId}`,
  setHostname: (nodeId: number) => `set_hostname:${nodeId}`,
  setTags: (nodeId: number) => `set_tags:${nodeId}`,
  setTaskExec: (nodeId: number) => `set_task_exec:${nodeId}`,
  /** ours: a private hostname resolves only for a requester allowed to resolve the node. */
  resolveHostname: (requesterId: number, hostname: string) => `resolve_hostname:${requesterId}:${hostname}`,
  reportTrust: (nodeId: number, peerId: number) => `report_trust:${nodeId}:${peerId}`,
  revokeTrust: (nodeId: number, peerId: number) => `revoke_trust:${nodeId}:${peerId}`,
  requestHandshake: (fromId: number, toId: number) => `handshake:${fromId}:${toId}`,
  pollHandshakes: (nodeId: number) => `poll_handshakes:${nodeId}`,
  respondHandshake: (nodeId: number, peerId: number) => `respond:${nodeId}:${peerId}`,
  /** signed by the requester, which must be node_a or node_b. */
  punch: (nodeA: number, nodeB: number) => `punch:${nodeA}:${nodeB}`,
  /** v1 (legacy mode only): signed with the current key, without naming the new one. */
  rotateKey: (nodeId: number) => `rotate:${nodeId}`,
  /** ours: the old key signs a statement naming the new key (a captured signature cannot install another key). */
  rotateKeyTo: (nodeId: number, newPublicKeyB64: string) => `rotate:${nodeId}:${newPublicKeyB64}`,
  /** ours: v1 left polo updates unauthenticated. */
  updatePoloScore: (nodeId: number) => `update_polo_score:${nodeId}`,
  /** ours (enterprise reference): membership operations. */
  joinNetwork: (nodeId: number, networkId: number) => `join_network:${nodeId}:${networkId}`,
  leaveNetwork: (nodeId: number, networkId: number) => `leave_network:${nodeId}:${networkId}`,
  listNodes: (nodeId: number, networkId: number) => `list_nodes:${nodeId}:${networkId}`,
  getNetworkPolicy: (nodeId: number, networkId: number) => `get_network_policy:${nodeId}:${networkId}`,
  /**
   * ours (enterprise): role-gated network operations, signed by the acting node. `target` names the node
   * acted on (0 when none), so a signature cannot be reused for another op, network or target.
   */
  networkOp: (op: string, actorId: number, networkId: number, target: number | string = 0) => `${op}:${actorId}:${networkId}:${target}`,
  pollInvites: (nodeId: number) => `poll_invites:${nodeId}`,
  respondInvite: (nodeId: number, networkId: number) => `respond_invite:${nodeId}:${networkId}`,
  setKeyExpiry: (nodeId: number) => `set_key_expiry:${nodeId}`,
  getKeyInfo: (nodeId: number) => `get_key_info:${nodeId}`,
  /** ours: lookup by a signed requester also returns external IDs on networks it shares with the node */
  lookup: (requesterId: number, nodeId: number) => `lookup:${requesterId}:${nodeId}`,
  /** ours: push subscription. */
  subscribe: (nodeId: number) => `subscribe:${nodeId}`,
} as const;

/** The bytes actually signed for a fresh signature. */
export function freshMessage(challenge: string, ts: number): string {
  return `${challenge}:${ts}`;
}
