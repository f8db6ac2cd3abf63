import { createHash } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { isErrorCode, RegistryError } from './errors.js';
import { challenges } from './protocol/challenges.js';
import { encodeFrame, FrameDecoder } from './protocol/framing.js';
import type {
  AdminStatsOk,
  BeaconListOk,
  BeaconRegisterOk,
  CreateNetworkOk,
  DeleteNetworkOk,
  DeregisterOk,
  HeartbeatOk,
  JoinNetworkOk,
  JoinRule,
  InviteToNetworkOk,
  KeyInfoOk,
  KickMemberOk,
  LeaveNetworkOk,
  ListMembersOk,
  MemberRoleOk,
  PollInvitesOk,
  RespondInviteOk,
  SetJoinRuleOk,
  SetMemberTagsOk,
  SetNetworkAdminTokenOk,
  SetNetworkEnterpriseOk,
  SetRolePreassignmentOk,
  TransferOwnershipOk,
  ListNetworksOk,
  ListNodesOk,
  LookupOk,
  NetworkPolicyOk,
  PollHandshakesOk,
  PoloScoreOk,
  PunchOk,
  PushEvent,
  RegisterOk,
  RenameNetworkOk,
  ReportTrustOk,
  RequestHandshakeOk,
  ResolveHostnameOk,
  ResolveOk,
  RespondHandshakeOk,
  RevokeTrustOk,
  RotateKeyOk,
  SetHostnameOk,
  SetTagsOk,
  SetTaskExecOk,
  SetVisibilityOk,
  SubscribeOk,
} from './protocol/messages.js';

/**
 * Typed registry client (used by the daemon and pilotctl).
 *
 * - One persistent connection; requests are pipelined and replies matched in order (the server answers
 *   in request order).
 * - Reconnects with exponential backoff (500 ms → 10 s, jitter). A request in flight when the connection
 *   drops is sent once more if it is idempotent (signed requests are re-signed with a fresh `ts`);
 *   otherwise it fails with `connection_lost`.
 * - Bounded: at most `maxPending` requests queued + in flight (`queue_full`); each has a timeout
 *   (`timeout`; the connection is then presumed broken and reopened).
 * - TLS with `fingerprint` pins the SHA-256 of the server's leaf certificate (CA checks are not used).
 */

export interface TlsOptions {
  /** hex SHA-256 of the server's leaf certificate DER (colons and case ignored) */
  fingerprint?: string;
  /** CA bundle for normal verification when no fingerprint is given */
  ca?: string | Buffer;
  servername?: string;
}

export interface ConnectOptions {
  host: string;
  port: number;
  tls?: TlsOptions;
  connectTimeoutMs?: number;
}

export interface RegistryClientOptions extends ConnectOptions {
  requestTimeoutMs?: number;
  maxPending?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** time source for signature `ts` (unix ms) */
  clock?: { now(): number };
}

/** What the client needs of a key: `Identity` (transport/identity.ts) satisfies it. */
export interface Signer {
  readonly publicKeyB64: string;
  /** base64 Ed25519 signature over the UTF-8 message */
  signB64(message: string): string;
}

/** A node acting on its own behalf: its identity signs, its ID is named. */
export interface NodeAuth {
  identity: Signer;
  nodeId: number;
}

/** Who acts on an enterprise network: a signing node, the registry admin token, or the network's admin token. */
export type NetworkActor = NodeAuth | { adminToken: string } | { networkAdminToken: string };

/** Proof for identity join rules (registry/identity JoinProof). */
export type JoinProofInput = Partial<
  Record<'oidc_token' | 'svid_chain' | 'jwt_svid' | 'cert_chain' | 'pop_signature' | 'ldap_user' | 'ldap_password' | 'webhook_token', string>
>;

type Json = Record<string, unknown>;

interface PendingRequest {
  build: () => Json;
  idempotent: boolean;
  attempts: number;
  done: boolean;
  timer: NodeJS.Timeout;
  resolve: (v: Json) => void;
  reject: (e: Error) => void;
}

/** `ts` + `signature` over `<challenge>:<ts>` (SPEC §6). */
export function signFresh(identity: Signer, challenge: string, nowMs: number): { ts: number; signature: string } {
  const ts = Math.floor(nowMs);
  return { ts, signature: identity.signB64(`${challenge}:${ts}`) };
}

function normaliseFingerprint(fp: string): string {
  return fp.replace(/:/g, '').toLowerCase();
}

/** Open a TCP or TLS socket; with a pinned fingerprint, refuse any other certificate. */
export function openSocket(opts: ConnectOptions): Promise<Socket> {
  const timeoutMs = opts.connectTimeoutMs ?? 5000;
  return new Promise<Socket>((resolve, reject) => {
    let socket: Socket | TLSSocket;
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const ok = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('error', fail);
      resolve(socket);
    };
    const timer = setTimeout(() => fail(new RegistryError('timeout', `connecting to ${opts.host}:${opts.port} timed out`)), timeoutMs);
    if (opts.tls) {
      const pin = opts.tls.fingerprint ? normaliseFingerprint(opts.tls.fingerprint) : null;
      const tlsSocket = tlsConnect({
        host: opts.host,
        port: opts.port,
        servername: opts.tls.servername ?? (isIp(opts.host) ? undefined : opts.host),
        ca: opts.tls.ca,
        rejectUnauthorized: pin === null,
        ...(pin !== null ? { checkServerIdentity: () => undefined } : {}),
      });
      socket = tlsSocket;
      tlsSocket.once('secureConnect', () => {
        if (pin !== null) {
          const cert = tlsSocket.getPeerCertificate();
          const actual = cert?.raw ? createHash('sha256').update(cert.raw).digest('hex') : '';
          if (actual !== pin) {
            fail(new RegistryError('tls_pin_mismatch', `registry certificate fingerprint ${actual || '(none)'} does not match the pinned ${pin}`));
            return;
          }
        }
        ok();
      });
    } else {
      socket = netConnect({ host: opts.host, port: opts.port });
      socket.once('connect', ok);
    }
    socket.once('error', (err) =>
      fail(err instanceof RegistryError ? err : new RegistryError('connection_lost', `cannot connect to ${opts.host}:${opts.port}: ${err.message}`, { cause: err })),
    );
  });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

function errorFromReply(r: Json): RegistryError {
  const message = typeof r.error === 'string' ? r.error : 'registry error';
  return new RegistryError(isErrorCode(r.code) ? r.code : 'internal', message);
}

export class RegistryClient {
  private readonly opts: Required<Omit<RegistryClientOptions, 'tls' | 'clock'>> & Pick<RegistryClientOptions, 'tls'>;
  private readonly clock: { now(): number };
  private socket: Socket | null = null;
  private connecting = false;
  private closed = false;
  private readonly queue: PendingRequest[] = [];
  private readonly inflight: PendingRequest[] = [];
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private openWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private readonly subscriptions = new Set<Subscription>();
  private lastTs = 0;
  private corked = false;

  constructor(opts: RegistryClientOptions) {
    this.opts = {
      host: opts.host,
      port: opts.port,
      tls: opts.tls,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
      maxPending: opts.maxPending ?? 1024,
      reconnectMinMs: opts.reconnectMinMs ?? 500,
      reconnectMaxMs: opts.reconnectMaxMs ?? 10_000,
    };
    this.clock = opts.clock ?? { now: () => Date.now() };
  }

  /** Create a client and wait for its first connection (rejects if that fails). */
  static async connect(opts: RegistryClientOptions): Promise<RegistryClient> {
    const c = new RegistryClient(opts);
    try {
      await c.open();
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  /** Connect now (if not connected); resolves once connected, rejects on the first failure. */
  open(): Promise<void> {
    if (this.socket) return Promise.resolve();
    if (this.closed) return Promise.reject(new RegistryError('closed', 'client closed'));
    return new Promise((resolve, reject) => {
      this.openWaiters.push({ resolve, reject });
      if (this.reconnectTimer) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
      }
      this.dial();
    });
  }

  get connected(): boolean {
    return this.socket !== null;
  }

  get pending(): number {
    return this.queue.length + this.inflight.length;
  }

  /** Connect unless connected, connecting, or waiting out a reconnect backoff. */
  private dial(): void {
    if (this.closed || this.connecting || this.socket || this.reconnectTimer) return;
    this.connecting = true;
    openSocket(this.opts).then(
      (socket) => {
        this.connecting = false;
        if (this.closed) {
          socket.destroy();
          return;
        }
        this.attempt = 0;
        this.attach(socket);
        for (const w of this.openWaiters.splice(0)) w.resolve();
      },
      (err: Error) => {
        this.connecting = false;
        for (const w of this.openWaiters.splice(0)) w.reject(err);
        if (err instanceof RegistryError && err.code === 'tls_pin_mismatch') this.failQueued(err);
        this.scheduleReconnect();
      },
    );
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    socket.setNoDelay(true);
    const decoder = new FrameDecoder(16 * 1024 * 1024);
    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) this.onFrame(f, socket);
    });
    socket.on('error', () => {});
    socket.on('close', () => this.onClose(socket));
    while (this.queue.length > 0) this.send(this.queue.shift()!);
  }

  private onFrame(body: Buffer, socket: Socket): void {
    let reply: Json;
    try {
      reply = JSON.parse(body.toString('utf8')) as Json;
      if (typeof reply !== 'object' || reply === null) throw new Error('not an object');
    } catch {
      socket.destroy();
      return;
    }
    if (reply.type === 'push') return; // only subscription connections carry pushes
    const req = this.inflight.shift();
    if (!req) {
      socket.destroy(); // unsolicited reply: the stream is out of step
      return;
    }
    if (req.done) return;
    req.done = true;
    clearTimeout(req.timer);
    if (reply.type === 'error') req.reject(errorFromReply(reply));
    else req.resolve(reply);
  }

  private onClose(socket: Socket): void {
    if (this.socket !== socket) return;
    this.socket = null;
    const lost = this.inflight.splice(0);
    const retry: PendingRequest[] = [];
    for (const req of lost) {
      if (req.done) continue;
      if (req.idempotent && req.attempts < 2 && !this.closed) retry.push(req);
      else {
        req.done = true;
        clearTimeout(req.timer);
        req.reject(new RegistryError(this.closed ? 'closed' : 'connection_lost', this.closed ? 'client closed' : 'connection to the registry was lost with the request in flight'));
      }
    }
    this.queue.unshift(...retry);
    if (!this.closed) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const base = Math.min(this.opts.reconnectMaxMs, this.opts.reconnectMinMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    const delay = base / 2 + Math.random() * (base / 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.dial();
    }, delay);
    this.reconnectTimer.unref();
  }

  private failQueued(err: Error): void {
    for (const req of this.queue.splice(0)) {
      req.done = true;
      clearTimeout(req.timer);
      req.reject(err);
    }
  }

  private send(req: PendingRequest): void {
    let frame: Buffer;
    try {
      frame = encodeFrame(req.build());
    } catch (err) {
      req.done = true;
      clearTimeout(req.timer);
      req.reject(err as Error);
      return;
    }
    req.attempts++;
    this.inflight.push(req);
    const socket = this.socket!;
    if (!this.corked) {
      // requests issued in the same tick leave in one writev
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(frame);
  }

  /**
   * Send a request built by `build` (called again for a retry, so signatures are fresh) and wait for
   * its reply. Error replies reject with `RegistryError` carrying the server's code.
   */
  request<T>(build: () => Json, opts: { idempotent?: boolean; timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) return Promise.reject(new RegistryError('closed', 'client closed'));
    if (this.pending >= this.opts.maxPending) {
      return Promise.reject(new RegistryError('queue_full', `too many registry requests pending (${this.opts.maxPending})`));
    }
    return new Promise<T>((resolve, reject) => {
      const req: PendingRequest = {
        build,
        idempotent: opts.idempotent ?? false,
        attempts: 0,
        done: false,
        resolve: resolve as (v: Json) => void,
        reject,
        timer: setTimeout(() => this.onTimeout(req), opts.timeoutMs ?? this.opts.requestTimeoutMs),
      };
      if (this.socket) this.send(req);
      else {
        this.queue.push(req);
        this.dial();
      }
    });
  }

  private onTimeout(req: PendingRequest): void {
    if (req.done) return;
    req.done = true;
    req.reject(new RegistryError('timeout', 'registry did not answer in time'));
    const qi = this.queue.indexOf(req);
    if (qi >= 0) this.queue.splice(qi, 1);
    else if (this.inflight.includes(req)) this.socket?.destroy(); // replies are positional: start over
  }

  /**
   * Signature timestamps strictly increase per client: two requests with the same challenge in the
   * same millisecond would otherwise carry identical signatures and the second would be a "replay".
   */
  private nextTs(): number {
    this.lastTs = Math.max(Math.floor(this.clock.now()), this.lastTs + 1);
    return this.lastTs;
  }

  private signedBuild(type: string, auth: NodeAuth, challenge: string, fields: Json): () => Json {
    return () => ({ type, ...fields, ...signFresh(auth.identity, challenge, this.nextTs()) });
  }

  /** Close the connection and every subscription; pending requests fail with `closed`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.failQueued(new RegistryError('closed', 'client closed'));
    for (const w of this.openWaiters.splice(0)) w.reject(new RegistryError('closed', 'client closed'));
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    const s = this.socket;
    if (s) {
      const closedP = new Promise<void>((r) => s.once('close', () => r()));
      s.end();
      setTimeout(() => s.destroy(), 1000).unref();
      await closedP;
    }
    for (const req of this.inflight.splice(0)) {
      if (req.done) continue;
      req.done = true;
      clearTimeout(req.timer);
      req.reject(new RegistryError('closed', 'client closed'));
    }
  }

  // ---------------------------------------------------------------- nodes

  /** Register (or re-register) `identity`. Re-registration of a known key is signed. */
  register(identity: Signer, opts: { listenAddr?: string; owner?: string; hostname?: string } = {}): Promise<RegisterOk> {
    const fields: Json = { public_key: identity.publicKeyB64 };
    if (opts.listenAddr !== undefined) fields.listen_addr = opts.listenAddr;
    if (opts.owner !== undefined) fields.owner = opts.owner;
    if (opts.hostname !== undefined) fields.hostname = opts.hostname;
    return this.request(() => ({ type: 'register', ...fields, ...signFresh(identity, challenges.register(identity.publicKeyB64), this.nextTs()) }), {
      idempotent: true,
    });
  }

  /** With `requester` (signed), external IDs on networks shared with the node are included. */
  lookup(nodeId: number, requester?: NodeAuth): Promise<LookupOk> {
    if (!requester) return this.request(() => ({ type: 'lookup', node_id: nodeId }), { idempotent: true });
    return this.request(this.signedBuild('lookup', requester, challenges.lookup(requester.nodeId, nodeId), { node_id: nodeId, requester_id: requester.nodeId }), {
      idempotent: true,
    });
  }

  resolve(auth: NodeAuth, nodeId: number): Promise<ResolveOk> {
    return this.request(this.signedBuild('resolve', auth, challenges.resolve(auth.nodeId, nodeId), { node_id: nodeId, requester_id: auth.nodeId }), {
      idempotent: true,
    });
  }

  heartbeat(auth: NodeAuth): Promise<HeartbeatOk> {
    return this.request(this.signedBuild('heartbeat', auth, challenges.heartbeat(auth.nodeId), { node_id: auth.nodeId }), { idempotent: true });
  }

  deregister(auth: NodeAuth): Promise<DeregisterOk> {
    return this.request(this.signedBuild('deregister', auth, challenges.deregister(auth.nodeId), { node_id: auth.nodeId }));
  }

  setVisibility(auth: NodeAuth, isPublic: boolean): Promise<SetVisibilityOk> {
    return this.request(this.signedBuild('set_visibility', auth, challenges.setVisibility(auth.nodeId), { node_id: auth.nodeId, public: isPublic }), {
      idempotent: true,
    });
  }

  /** "" clears the hostname. */
  setHostname(auth: NodeAuth, hostname: string): Promise<SetHostnameOk> {
    return this.request(this.signedBuild('set_hostname', auth, challenges.setHostname(auth.nodeId), { node_id: auth.nodeId, hostname }), {
      idempotent: true,
    });
  }

  setTags(auth: NodeAuth, tags: string[]): Promise<SetTagsOk> {
    return this.request(this.signedBuild('set_tags', auth, challenges.setTags(auth.nodeId), { node_id: auth.nodeId, tags }), { idempotent: true });
  }

  setTaskExec(auth: NodeAuth, enabled: boolean): Promise<SetTaskExecOk> {
    return this.request(this.signedBuild('set_task_exec', auth, challenges.setTaskExec(auth.nodeId), { node_id: auth.nodeId, enabled }), {
      idempotent: true,
    });
  }

  /** With `requester`, private hostnames the requester may resolve are answered too. */
  resolveHostname(hostname: string, requester?: NodeAuth): Promise<ResolveHostnameOk> {
    if (!requester) return this.request(() => ({ type: 'resolve_hostname', hostname }), { idempotent: true });
    return this.request(
      this.signedBuild('resolve_hostname', requester, challenges.resolveHostname(requester.nodeId, hostname), { hostname, requester_id: requester.nodeId }),
      { idempotent: true },
    );
  }

  punch(auth: NodeAuth, nodeA: number, nodeB: number): Promise<PunchOk> {
    return this.request(this.signedBuild('punch', auth, challenges.punch(nodeA, nodeB), { requester_id: auth.nodeId, node_a: nodeA, node_b: nodeB }), {
      idempotent: true,
    });
  }

  /** Signed with the current key (`auth.identity`). */
  rotateKey(auth: NodeAuth, newPublicKeyB64: string): Promise<RotateKeyOk> {
    return this.request(this.signedBuild('rotate_key', auth, challenges.rotateKeyTo(auth.nodeId, newPublicKeyB64), { node_id: auth.nodeId, new_public_key: newPublicKeyB64 }));
  }

  getPoloScore(nodeId: number): Promise<PoloScoreOk> {
    return this.request(() => ({ type: 'get_polo_score', node_id: nodeId }), { idempotent: true });
  }

  setPoloScore(adminToken: string, nodeId: number, score: number): Promise<PoloScoreOk> {
    return this.request(() => ({ type: 'set_polo_score', admin_token: adminToken, node_id: nodeId, polo_score: score }), { idempotent: true });
  }

  updatePoloScore(auth: NodeAuth, delta: number): Promise<PoloScoreOk> {
    return this.request(this.signedBuild('update_polo_score', auth, challenges.updatePoloScore(auth.nodeId), { node_id: auth.nodeId, delta }));
  }

  // ---------------------------------------------------------------- trust

  reportTrust(auth: NodeAuth, peerId: number): Promise<ReportTrustOk> {
    return this.request(this.signedBuild('report_trust', auth, challenges.reportTrust(auth.nodeId, peerId), { node_id: auth.nodeId, peer_id: peerId }), {
      idempotent: true,
    });
  }

  revokeTrust(auth: NodeAuth, peerId: number): Promise<RevokeTrustOk> {
    return this.request(this.signedBuild('revoke_trust', auth, challenges.revokeTrust(auth.nodeId, peerId), { node_id: auth.nodeId, peer_id: peerId }));
  }

  requestHandshake(auth: NodeAuth, toNodeId: number, justification = ''): Promise<RequestHandshakeOk> {
    return this.request(
      this.signedBuild('request_handshake', auth, challenges.requestHandshake(auth.nodeId, toNodeId), {
        from_node_id: auth.nodeId,
        to_node_id: toNodeId,
        justification,
      }),
    );
  }

  /** Returns and clears the node's inbox. */
  pollHandshakes(auth: NodeAuth): Promise<PollHandshakesOk> {
    return this.request(this.signedBuild('poll_handshakes', auth, challenges.pollHandshakes(auth.nodeId), { node_id: auth.nodeId }));
  }

  respondHandshake(auth: NodeAuth, peerId: number, accept: boolean): Promise<RespondHandshakeOk> {
    return this.request(
      this.signedBuild('respond_handshake', auth, challenges.respondHandshake(auth.nodeId, peerId), { node_id: auth.nodeId, peer_id: peerId, accept }),
    );
  }

  // ---------------------------------------------------------------- networks

  listNetworks(): Promise<ListNetworksOk> {
    return this.request(() => ({ type: 'list_networks' }), { idempotent: true });
  }

  /** Members (signed) or an admin token. */
  listNodes(networkId: number, auth: NodeAuth | { adminToken: string }): Promise<ListNodesOk> {
    return this.request(this.memberOrAdmin('list_nodes', networkId, auth, challenges.listNodes), { idempotent: true });
  }

  getNetworkPolicy(networkId: number, auth: NodeAuth | { adminToken: string }): Promise<NetworkPolicyOk> {
    return this.request(this.memberOrAdmin('get_network_policy', networkId, auth, challenges.getNetworkPolicy), { idempotent: true });
  }

  private memberOrAdmin(type: string, networkId: number, auth: NodeAuth | { adminToken: string }, challenge: (n: number, net: number) => string): () => Json {
    if ('adminToken' in auth) return () => ({ type, network_id: networkId, admin_token: auth.adminToken });
    return this.signedBuild(type, auth, challenge(auth.nodeId, networkId), { network_id: networkId, node_id: auth.nodeId });
  }

  createNetwork(
    adminToken: string,
    p: {
      name: string;
      joinRule: JoinRule;
      token?: string;
      nodeId?: number;
      allowedPorts?: number[];
      maxMembers?: number;
      /** enterprise layer (registry/ENTERPRISE.md) */
      enterprise?: boolean;
      identityRule?: Record<string, unknown>;
      groupNetworks?: Record<string, number[]>;
      networkAdminToken?: string;
    },
  ): Promise<CreateNetworkOk> {
    const fields: Json = { type: 'create_network', admin_token: adminToken, name: p.name, join_rule: p.joinRule };
    if (p.token !== undefined) fields.token = p.token;
    if (p.enterprise !== undefined) fields.enterprise = p.enterprise;
    if (p.identityRule !== undefined) fields.identity_rule = p.identityRule;
    if (p.groupNetworks !== undefined) fields.group_networks = p.groupNetworks;
    if (p.networkAdminToken !== undefined) fields.network_admin_token = p.networkAdminToken;
    if (p.nodeId !== undefined) fields.node_id = p.nodeId;
    if (p.allowedPorts !== undefined) fields.allowed_ports = p.allowedPorts;
    if (p.maxMembers !== undefined) fields.max_members = p.maxMembers;
    return this.request(() => fields);
  }

  /**
   * Join a network. `proof` is for identity join rules: either the proof object, or a function building
   * it from the request's `ts` (certificate proofs of possession sign `popChallenge({networkId, nodeId,
   * nodePublicKey, ts})` and must use the same ts as the request signature).
   */
  joinNetwork(auth: NodeAuth, networkId: number, token?: string, proof?: JoinProofInput | ((ts: number) => JoinProofInput)): Promise<JoinNetworkOk> {
    const fields: Json = { node_id: auth.nodeId, network_id: networkId };
    if (token !== undefined) fields.token = token;
    const challenge = challenges.joinNetwork(auth.nodeId, networkId);
    return this.request(() => {
      const signed = signFresh(auth.identity, challenge, this.nextTs());
      const p = typeof proof === 'function' ? proof(signed.ts) : proof;
      return { type: 'join_network', ...fields, ...(p !== undefined ? { proof: p } : {}), ...signed };
    });
  }

  leaveNetwork(auth: NodeAuth, networkId: number): Promise<LeaveNetworkOk> {
    return this.request(this.signedBuild('leave_network', auth, challenges.leaveNetwork(auth.nodeId, networkId), { node_id: auth.nodeId, network_id: networkId }));
  }

  /** `by`: the registry admin token, or on enterprise networks the owner (signed) or ... see kickMember. */
  deleteNetwork(by: string | NetworkActor, networkId: number): Promise<DeleteNetworkOk> {
    return this.request(this.actorBuild('delete_network', typeof by === 'string' ? { adminToken: by } : by, networkId, 0, {}));
  }

  renameNetwork(by: string | NetworkActor, networkId: number, name: string): Promise<RenameNetworkOk> {
    return this.request(this.actorBuild('rename_network', typeof by === 'string' ? { adminToken: by } : by, networkId, 0, { name }), { idempotent: true });
  }

  /** `by`: the registry admin token (v1), or on enterprise networks an owner/admin node or the network admin token. */
  kickMember(by: string | NetworkActor, networkId: number, nodeId: number): Promise<KickMemberOk> {
    return this.request(this.actorBuild('kick_member', typeof by === 'string' ? { adminToken: by } : by, networkId, nodeId, { node_id: nodeId }));
  }

  // ---------------------------------------------------------------- enterprise (registry/ENTERPRISE.md)

  /**
   * A role-gated request on `networkId`: signed by the acting node over `<op>:<actor>:<network>:<target>:<ts>`,
   * or carrying the registry admin token or the network's admin token.
   */
  private actorBuild(type: string, by: NetworkActor, networkId: number, target: number | string, fields: Json): () => Json {
    const base: Json = { type, network_id: networkId, ...fields };
    if ('adminToken' in by) return () => ({ ...base, admin_token: by.adminToken });
    if ('networkAdminToken' in by) return () => ({ ...base, network_admin_token: by.networkAdminToken });
    const challenge = challenges.networkOp(type, by.nodeId, networkId, target);
    return () => ({ ...base, actor_id: by.nodeId, ...signFresh(by.identity, challenge, this.nextTs()) });
  }

  /** Turn enterprise on/off (owner or registry admin). Off erases roles. */
  setNetworkEnterprise(by: NetworkActor, networkId: number, enterprise: boolean): Promise<SetNetworkEnterpriseOk> {
    return this.request(this.actorBuild('set_network_enterprise', by, networkId, 0, { enterprise }), { idempotent: true });
  }

  /** Change the join rule (owner/admin of an enterprise network). */
  setJoinRule(
    by: NetworkActor,
    networkId: number,
    p: { joinRule: JoinRule; token?: string; identityRule?: Record<string, unknown>; groupNetworks?: Record<string, number[]> },
  ): Promise<SetJoinRuleOk> {
    const f: Json = { join_rule: p.joinRule };
    if (p.token !== undefined) f.token = p.token;
    if (p.identityRule !== undefined) f.identity_rule = p.identityRule;
    if (p.groupNetworks !== undefined) f.group_networks = p.groupNetworks;
    return this.request(this.actorBuild('set_join_rule', by, networkId, 0, f), { idempotent: true });
  }

  /** member → admin (owner only). */
  promoteMember(by: NetworkActor, networkId: number, nodeId: number): Promise<MemberRoleOk> {
    return this.request(this.actorBuild('promote_member', by, networkId, nodeId, { node_id: nodeId }));
  }

  /** admin → member (owner only). */
  demoteMember(by: NetworkActor, networkId: number, nodeId: number): Promise<MemberRoleOk> {
    return this.request(this.actorBuild('demote_member', by, networkId, nodeId, { node_id: nodeId }));
  }

  /** Atomic: the old owner becomes admin, `newOwnerId` owner (owner only). */
  transferOwnership(by: NetworkActor, networkId: number, newOwnerId: number): Promise<TransferOwnershipOk> {
    return this.request(this.actorBuild('transfer_ownership', by, networkId, newOwnerId, { new_owner_id: newOwnerId }));
  }

  getMemberRole(by: NetworkActor, networkId: number, nodeId: number): Promise<MemberRoleOk> {
    return this.request(this.actorBuild('get_member_role', by, networkId, nodeId, { node_id: nodeId }), { idempotent: true });
  }

  /** Set ("" clears) the network's own admin token (owner). */
  setNetworkAdminToken(by: NetworkActor, networkId: number, token: string): Promise<SetNetworkAdminTokenOk> {
    return this.request(this.actorBuild('set_network_admin_token', by, networkId, 0, { token }), { idempotent: true });
  }

  /** A node later admitted with `externalId` (case-insensitive) gets `role`; null removes the entry. */
  setRolePreassignment(by: NetworkActor, networkId: number, externalId: string, role: 'admin' | 'member' | null): Promise<SetRolePreassignmentOk> {
    return this.request(this.actorBuild('set_role_preassignment', by, networkId, externalId.toLowerCase(), { external_id: externalId, role }), { idempotent: true });
  }

  /** Per-network tags of a member (owner/admin); [] clears. */
  setMemberTags(by: NetworkActor, networkId: number, nodeId: number, tags: string[]): Promise<SetMemberTagsOk> {
    return this.request(this.actorBuild('set_member_tags', by, networkId, nodeId, { node_id: nodeId, tags }), { idempotent: true });
  }

  /** Members with role, external ID, member tags and online state (any member, or an admin token). */
  listMembers(by: NetworkActor, networkId: number): Promise<ListMembersOk> {
    return this.request(this.actorBuild('list_members', by, networkId, 0, {}), { idempotent: true });
  }

  /** Invite `nodeId` (owner/admin of an enterprise network). `ttlS` 60 s … 30 days (default 7 days). */
  inviteToNetwork(by: NetworkActor, networkId: number, nodeId: number, opts: { ttlS?: number } = {}): Promise<InviteToNetworkOk> {
    return this.request(this.actorBuild('invite_to_network', by, networkId, nodeId, { node_id: nodeId, ...(opts.ttlS !== undefined ? { ttl_s: opts.ttlS } : {}) }));
  }

  /** The node's pending (unexpired) invites; signed by the invitee. */
  pollInvites(auth: NodeAuth): Promise<PollInvitesOk> {
    return this.request(this.signedBuild('poll_invites', auth, challenges.pollInvites(auth.nodeId), { node_id: auth.nodeId }), { idempotent: true });
  }

  /** Accept (join as member, subject to max_members) or reject an invite; signed by the invitee. */
  respondInvite(auth: NodeAuth, networkId: number, accept: boolean): Promise<RespondInviteOk> {
    return this.request(
      this.signedBuild('respond_invite', auth, challenges.respondInvite(auth.nodeId, networkId), { node_id: auth.nodeId, network_id: networkId, accept }),
    );
  }

  /**
   * Key expiry (unix seconds; null clears). Signed by the node (may set or shorten only) or with the admin
   * token (`{ adminToken, nodeId }`).
   */
  setKeyExpiry(by: NodeAuth | { adminToken: string; nodeId: number }, expiresAt: number | null): Promise<KeyInfoOk> {
    if ('adminToken' in by) return this.request(() => ({ type: 'set_key_expiry', node_id: by.nodeId, expires_at: expiresAt, admin_token: by.adminToken }), { idempotent: true });
    return this.request(this.signedBuild('set_key_expiry', by, challenges.setKeyExpiry(by.nodeId), { node_id: by.nodeId, expires_at: expiresAt }), { idempotent: true });
  }

  getKeyInfo(nodeId: number): Promise<KeyInfoOk> {
    return this.request(() => ({ type: 'get_key_info', node_id: nodeId }), { idempotent: true });
  }

  setNetworkPolicy(by: string | NetworkActor, networkId: number, p: { allowedPorts?: number[]; maxMembers?: number }): Promise<NetworkPolicyOk> {
    const fields: Json = {};
    if (p.allowedPorts !== undefined) fields.allowed_ports = p.allowedPorts;
    if (p.maxMembers !== undefined) fields.max_members = p.maxMembers;
    return this.request(this.actorBuild('set_network_policy', typeof by === 'string' ? { adminToken: by } : by, networkId, 0, fields), { idempotent: true });
  }

  // ---------------------------------------------------------------- beacons, admin

  beaconRegister(beaconId: number, addr: string): Promise<BeaconRegisterOk> {
    return this.request(() => ({ type: 'beacon_register', beacon_id: beaconId, addr }), { idempotent: true });
  }

  beaconList(): Promise<BeaconListOk> {
    return this.request(() => ({ type: 'beacon_list' }), { idempotent: true });
  }

  adminStats(adminToken: string, opts: { gc?: boolean } = {}): Promise<AdminStatsOk> {
    return this.request(() => ({ type: 'admin_stats', admin_token: adminToken, ...(opts.gc ? { gc: true } : {}) }), { idempotent: true });
  }

  // ---------------------------------------------------------------- push

  /**
   * Hold a push subscription for `auth.nodeId` on a separate connection. Resubscribes (with backoff)
   * after disconnects and after 3 missed keepalives; `onSubscribed` runs after every (re)subscribe so
   * the caller can `pollHandshakes` to catch up (pushes are prompts, the inbox is the record).
   */
  subscribe(auth: NodeAuth, onEvent: (event: PushEvent) => void, opts?: SubscribeOptions): Subscription;
  subscribe(identity: Signer, nodeId: number, onEvent: (event: PushEvent) => void, opts?: SubscribeOptions): Subscription;
  subscribe(
    a: NodeAuth | Signer,
    b: number | ((event: PushEvent) => void),
    c?: ((event: PushEvent) => void) | SubscribeOptions,
    d?: SubscribeOptions,
  ): Subscription {
    const [auth, onEvent, opts] =
      typeof b === 'number' ? [{ identity: a as Signer, nodeId: b }, c as (event: PushEvent) => void, d ?? {}] : [a as NodeAuth, b, (c as SubscribeOptions | undefined) ?? {}];
    const sub = new Subscription(this.opts, this.clock, auth, onEvent, opts, () => this.subscriptions.delete(sub));
    this.subscriptions.add(sub);
    return sub;
  }
}

export interface SubscribeOptions {
  /** after every (re)subscribe: poll the inbox here (pushes are prompts, the inbox is the record) */
  onSubscribed?: (ok: SubscribeOk) => void;
  onError?: (err: Error) => void;
}

/** A push subscription handle (see `RegistryClient.subscribe`). */
export class Subscription {
  private socket: Socket | null = null;
  private closed = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private silenceMs = 45_000;
  private subscribedOnce: Promise<SubscribeOk>;
  private resolveFirst!: (ok: SubscribeOk) => void;
  /** number of successful (re)subscriptions */
  subscriptions = 0;

  constructor(
    private readonly conn: ConnectOptions & { reconnectMinMs: number; reconnectMaxMs: number },
    private readonly clock: { now(): number },
    private readonly auth: NodeAuth,
    private readonly onEvent: (event: PushEvent) => void,
    private readonly opts: { onSubscribed?: (ok: SubscribeOk) => void; onError?: (err: Error) => void },
    private readonly onClosed: () => void,
  ) {
    this.subscribedOnce = new Promise((r) => (this.resolveFirst = r));
    this.start();
  }

  /** Resolves after the first successful subscribe. */
  ready(): Promise<SubscribeOk> {
    return this.subscribedOnce;
  }

  get active(): boolean {
    return this.socket !== null;
  }

  private start(): void {
    if (this.closed) return;
    openSocket(this.conn).then(
      (socket) => {
        if (this.closed) {
          socket.destroy();
          return;
        }
        this.attach(socket);
      },
      (err: Error) => {
        this.opts.onError?.(err);
        this.retry();
      },
    );
  }

  private attach(socket: Socket): void {
    let subscribed = false;
    const decoder = new FrameDecoder(16 * 1024 * 1024);
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) {
        let msg: Json;
        try {
          msg = JSON.parse(f.toString('utf8')) as Json;
        } catch {
          socket.destroy();
          return;
        }
        this.feedWatchdog(socket);
        if (!subscribed) {
          if (msg.type === 'subscribe_ok') {
            subscribed = true;
            this.attempt = 0;
            this.subscriptions++;
            const ok = msg as unknown as SubscribeOk;
            if (typeof ok.keepalive_ms === 'number' && ok.keepalive_ms > 0) this.silenceMs = ok.keepalive_ms * 3;
            this.feedWatchdog(socket);
            this.resolveFirst(ok);
            this.opts.onSubscribed?.(ok);
          } else {
            this.opts.onError?.(msg.type === 'error' ? errorFromReply(msg) : new RegistryError('protocol', 'unexpected reply to subscribe'));
            socket.destroy();
          }
          continue;
        }
        if (msg.type === 'push' && msg.event !== 'keepalive') this.onEvent(msg as unknown as PushEvent);
        else if (msg.type === 'error') this.opts.onError?.(errorFromReply(msg));
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.socket === socket) this.socket = null;
      if (this.watchdog) clearTimeout(this.watchdog);
      this.retry();
    });
    const ts = Math.floor(this.clock.now());
    socket.write(
      encodeFrame({ type: 'subscribe', node_id: this.auth.nodeId, ts, signature: this.auth.identity.signB64(`${challenges.subscribe(this.auth.nodeId)}:${ts}`) }),
    );
    this.feedWatchdog(socket);
  }

  private feedWatchdog(socket: Socket): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => socket.destroy(), this.silenceMs);
    this.watchdog.unref();
  }

  private retry(): void {
    if (this.closed || this.timer) return;
    const base = Math.min(this.conn.reconnectMaxMs, this.conn.reconnectMinMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start();
    }, base / 2 + Math.random() * (base / 2));
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.watchdog) clearTimeout(this.watchdog);
    const s = this.socket;
    this.socket = null;
    if (s) {
      const done = new Promise<void>((r) => s.once('close', () => r()));
      s.destroy();
      await done;
    }
    this.onClosed();
  }
}
