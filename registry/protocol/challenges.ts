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
  /** signed with the current key. */
  rotateKey: (nodeId: number) => `rotate:${nodeId}`,
  /** ours: v1 left polo updates unauthenticated. */
  updatePoloScore: (nodeId: number) => `update_polo_score:${nodeId}`,
  /** ours (enterprise reference): membership operations. */
  joinNetwork: (nodeId: number, networkId: number) => `join_network:${nodeId}:${networkId}`,
  leaveNetwork: (nodeId: number, networkId: number) => `leave_network:${nodeId}:${networkId}`,
  listNodes: (nodeId: number, networkId: number) => `list_nodes:${nodeId}:${networkId}`,
  getNetworkPolicy: (nodeId: number, networkId: number) => `get_network_policy:${nodeId}:${networkId}`,
  /** ours: push subscription. */
  subscribe: (nodeId: number) => `subscribe:${nodeId}`,
} as const;

/** The bytes actually signed for a fresh signature. */
export function freshMessage(challenge: string, ts: number): string {
  return `${challenge}:${ts}`;
}
