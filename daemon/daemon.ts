/**
 * pilot-daemon: one per host (SPEC §1). Assembles the transport (UDP + tunnel + streams), the registry
 * client (registration, heartbeat, push subscription), the peer manager, admission (SPEC §5), trust
 * (port 444 + registry relay, wire reference §1.11), built-in services, webhooks and the IPC server.
 *
 * Life cycle: `start()` loads the identity (node ID kept across restarts: the registry maps the key to
 * the same ID), binds UDP, registers, starts the transport as that node, binds services, subscribes for
 * pushes, opens the IPC socket. `close()` deregisters (graceful shutdown), FINs every connection and
 * frees everything.
 */
import { createRequire } from 'node:module';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import { RegistryClient, type NodeAuth, type Subscription, type TlsOptions } from '../registry/client.js';
import type { PushEvent } from '../registry/protocol/messages.js';
import { Addr, BROADCAST_NODE } from '../transport/address.js';
import { PilotError } from '../transport/errors.js';
import { Identity } from '../transport/identity.js';
import type { Connection, DatagramSocket, Listener, TransportHost } from '../transport/host.js';
import { TransportNode } from '../transport/node.js';
import { NatTraversal, parseEndpoint as parseNatEndpoint } from '../natpunch/index.js';
import { Admission } from './admission.js';
import type { DaemonConfig } from './config.js';
import { DataDir } from './datadir.js';
import { IpcServer, type IpcDaemonApi } from './ipc-server.js';
import { NetworkOps } from './ipc/network-ops.js';
import { settleRotation } from './key-rotation.js';
import { event as ipcEvent, type HandshakeCommand, type HandshakeResult, type IpcMap, type IpcValue, type JsonObject } from './ipc/protocol.js';
import { PeerManager, parseEndpoint, type PeerPath } from './peers.js';
import { createBuiltinServices, type BuiltinServices, type Service } from './services/index.js';
import { HandshakeLogic, HandshakeVerifier, TrustStore, encodeHandshakeMessage, type HandshakeMessage } from './trust/index.js';
import { WebhookClient } from './webhook.js';

export class DaemonError extends PilotError {}

export interface DaemonOptions {
  config: DaemonConfig;
  log?: Logger;
  /** NAT traversal seam: how to reach a node (default: registry resolve → direct). */
  resolvePath?: (node: number) => Promise<PeerPath>;
  /** NAT traversal seam: called at the 3rd SYN timeout; return true if the peer now uses a relay. */
  relayFallback?: (node: number) => boolean;
  /** Registry (re)connect backoff bounds, for tests. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Admission log rotation size (default 1 MiB). */
  maxAdmissionLogBytes?: number;
}

const require_ = createRequire(import.meta.url);
function packageVersion(): string {
  try {
    return (require_('../../package.json') as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export class Daemon implements IpcDaemonApi {
  readonly version = `pilot-node/${packageVersion()}`;
  readonly log: Logger;
  readonly dataDir: DataDir;
  identity!: Identity;
  transport!: TransportNode;
  /** Reflexive discovery, hole punching, relay fallback and upgrade (SPEC §7); idle without a beacon. */
  nat!: NatTraversal;
  registry!: RegistryClient;
  peers!: PeerManager;
  admission!: Admission;
  trustStore!: TrustStore;
  handshakes!: HandshakeLogic;
  services!: BuiltinServices;
  webhook!: WebhookClient;
  ipc!: IpcServer;
  /** Network/enterprise and key IPC ops, enterprise pushes, kept identity memberships (daemon/ipc/network-ops.ts). */
  netOps!: NetworkOps;
  nodeId = 0;
  private startedAt = 0;
  private reflexive: { host: string; port: number } | null = null;
  private subscription: Subscription | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatFailures = 0;
  private reregistering: Promise<void> | null = null;
  private closing = false;
  private closed = false;
  private readonly serviceListeners: Listener[] = [];
  /** Networks we are a member of (besides the backbone 0). */
  private readonly myNetworks = new Set<number>();
  /** Network ID → allowed ports (empty = all). */
  private readonly policies = new Map<number, number[]>();
  private readonly serviceConns = new Set<Duplex>();
  /** Network ID → member node IDs (broadcast fan-out), refreshed every 10 s and on membership pushes. */
  private readonly memberCache = new Map<number, { at: number; nodes: number[] }>();
  readonly counters = {
    heartbeats: 0, heartbeatFailures: 0, reregistrations: 0, pushes: 0, revocationsApplied: 0, broadcastsSent: 0, broadcastsDropped: 0,
  };

  constructor(private readonly opts: DaemonOptions) {
    this.log = opts.log ?? pino({ level: 'silent' });
    this.dataDir = new DataDir(opts.config.dataDir, { identityPath: opts.config.identity });
  }

  get config(): DaemonConfig {
    return this.opts.config;
  }

  get host(): TransportHost {
    return this.transport.host;
  }

  get address(): string {
    return new Addr(0, this.nodeId).toString();
  }

  /** This node's registry credentials: live, so a key rotation (which swaps `identity`) applies everywhere at once. */
  auth = (): NodeAuth => this.liveAuth;

  private readonly liveAuth: NodeAuth = (() => {
    const self = this;
    return {
      get identity() {
        return self.identity;
      },
      get nodeId() {
        return self.nodeId;
      },
    };
  })();

  // ================================================================================================
  // start / close

  async start(): Promise<void> {
    const cfg = this.config;
    await this.dataDir.ensure();
    this.identity = await Identity.load(this.dataDir.identityPath, { create: true });
    this.trustStore = await TrustStore.open(this.dataDir.trustPath);
    this.webhook = new WebhookClient({ url: cfg.webhook, nodeId: () => this.nodeId, logger: this.log });

    const [regHost, regPort] = splitHostPort(cfg.registry);
    const tls: TlsOptions | undefined = cfg.registryTls ? (cfg.registryFingerprint ? { fingerprint: cfg.registryFingerprint } : {}) : undefined;
    this.registry = new RegistryClient({
      host: regHost,
      port: regPort,
      ...(tls ? { tls } : {}),
      reconnectMinMs: this.opts.reconnectMinMs ?? 500,
      reconnectMaxMs: this.opts.reconnectMaxMs ?? 10_000,
    });
    // An interrupted key rotation is finished or discarded before we register (daemon/key-rotation.ts).
    this.identity = await settleRotation({
      identityPath: this.dataDir.identityPath,
      current: this.identity,
      registryKey: async (n) => {
        try {
          return (await this.registry.lookup(n)).public_key;
        } catch (err) {
          if ((err as { code?: string }).code === 'not_found') return null;
          throw err;
        }
      },
      log: this.log,
      stop: () => this.closing,
    });
    this.netOps = new NetworkOps({
      registry: this.registry,
      auth: this.auth,
      identity: () => this.identity,
      resolveNode: async (t) => (await this.resolveTarget(t)).node,
      keptJoinsPath: join(this.dataDir.root, 'identity-joins.json'),
      identityPath: this.dataDir.identityPath,
      emit: (kind, data) => this.networkEvent(kind, data),
      joined: async (net) => {
        this.myNetworks.add(net);
        this.memberCache.delete(net);
        await this.fetchPolicy(net);
      },
      left: (net) => {
        this.myNetworks.delete(net);
        this.recheckSessions();
      },
      rotated: (next) => this.useIdentity(next),
      log: this.log.child({ c: 'network' }),
    });
    await this.netOps.loadKept();

    this.admission = new Admission({
      policy: {
        isTrusted: (n) => this.trustStore.isTrusted(n),
        sharesNetwork: (n, net) => this.myNetworks.has(net) && (this.peers.get(n)?.networks.includes(net) ?? false),
        allowedPorts: (net) => this.policies.get(net) ?? null,
      },
      logPath: this.dataDir.admissionLogPath,
      maxLogBytes: this.opts.maxAdmissionLogBytes,
      log: this.log,
      onRefused: (r) => this.webhook.emit('security.admission_refused', { ...r }),
    });

    this.transport = new TransportNode({
      identity: this.identity,
      lookupPublicKey: (n) => this.peers.publicKey(n),
      admit: this.admission.check,
      relayFallback: this.opts.relayFallback ?? ((p) => this.nat.relayFallback(p)),
      onBroadcast: (pkt) => this.onBroadcast(pkt),
      stream: {
        idleTimeoutMs: cfg.idleTimeoutMs,
        timeWaitMs: cfg.timeWaitMs,
        synRateGlobal: cfg.synRateLimit,
        maxConnsPerPort: cfg.maxConnsPerPort,
        maxConnsTotal: cfg.maxConnsTotal,
      },
      tunnel: { allowPlaintext: cfg.allowPlaintext, allowAnonymous: cfg.allowAnonymous },
      log: this.log.child({ c: 'transport' }),
    });
    this.peers = new PeerManager({
      registry: this.registry,
      auth: this.auth,
      transport: this.transport,
      log: this.log,
      ...(this.opts.resolvePath ? { resolvePath: this.opts.resolvePath } : {}),
      // Every resolved peer goes through NAT traversal: direct first, coordinated punch, relay fallback.
      attach: (node, path) => {
        // A fresh resolve is authoritative for a direct peer (it may have restarted on a new port); a
        // relayed peer stays on the relay until NAT traversal proves a direct path.
        if (path.relay || this.transport.tunnel.peer(node)?.path !== 'relay') this.transport.addPeer(node, path.endpoint, path.relay);
        if (!path.relay) this.nat.addPeer(node, path.endpoint);
      },
    });
    this.transport.on('established', (node) => {
      this.webhook.emit('tunnel.established', { node_id: node });
      void this.peers.lookup(node);
    });

    const [lHost, lPort] = splitHostPort(cfg.listen, true);
    const bound = await this.transport.bind(lHost || '0.0.0.0', lPort);
    this.log.info({ udp: `${bound.address}:${bound.port}` }, 'tunnel socket bound');
    this.nat = new NatTraversal({
      node: this.transport,
      identity: { sign: (m: Uint8Array | string) => this.identity.sign(m) },
      beacon: cfg.beacon ? await resolveEndpoint(cfg.beacon) : null,
      stunServers: cfg.stun,
      endpointOverride: cfg.endpoint ? parseNatEndpoint(cfg.endpoint) : null,
      keepaliveMs: cfg.nat.keepaliveMs,
      probeIntervalMs: cfg.nat.probeMs,
      maxProbeIntervalMs: cfg.nat.probeMaxMs,
      directTimeoutMs: cfg.nat.directTimeoutMs,
      pingTimeoutMs: cfg.nat.pingTimeoutMs,
      // The maintenance tick bounds how precisely those timers fire: short timers need a short tick.
      tickMs: Math.min(500, Math.max(50, Math.floor(Math.min(cfg.nat.probeMs, cfg.nat.directTimeoutMs) / 4))),
      log: this.log.child({ c: 'nat' }),
    });
    // Behind a NAT the registry must hand out the reflexive endpoint (the registry takes the IP from
    // our TCP connection and the port from listen_addr).
    this.reflexive = cfg.beacon || cfg.stun.length ? await this.nat.discover() : null;
    this.nat.on('reflexive', (ep) => {
      this.reflexive = ep;
      if (this.nodeId) void this.reregister();
    });

    // Register (retrying with backoff until the registry answers or we are closed).
    await this.register(false);
    const host = this.transport.start(this.nodeId);
    this.nat.start(this.nodeId);
    host.on('refused', (r) => this.log.debug({ reason: r.reason, src: r.src.toString(), port: r.dstPort }, 'admission: refused'));

    // Trust
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const verifier = new HandshakeVerifier({ selfNode: () => this.nodeId, publicKeyOf: (n) => this.peers.publicKey(n) });
    this.handshakes = new HandshakeLogic({
      selfNode: () => this.nodeId,
      signer: {
        sign: (m) => this.identity.sign(Buffer.from(m)),
        get publicKeyB64() {
          return self.identity.publicKeyB64;
        },
      },
      store: this.trustStore,
      verifier,
      logger: this.log.child({ c: 'trust' }),
      effects: {
        sendDirect: (peer, msg) => this.sendHandshakeDirect(peer, msg),
        requestHandshake: async (peer, j) => void (await this.registry.requestHandshake(this.auth(), peer, j)),
        respondHandshake: async (peer, accept) => void (await this.registry.respondHandshake(this.auth(), peer, accept)),
        reportTrust: async (peer) => void (await this.registry.reportTrust(this.auth(), peer)),
        revokeTrust: async (peer) => void (await this.registry.revokeTrust(this.auth(), peer)),
        lookupPublicKey: async (peer) => (await this.peers.lookup(peer, true))?.publicKeyB64 || null,
        tearDownPeer: (peer) => this.tearDownPeer(peer, 'trust revoked'),
        emit: (e, d) => this.emit(e, d),
        sharedNetwork: (peer) => {
          const rec = this.peers.get(peer);
          for (const n of rec?.networks ?? []) if (n !== 0 && this.myNetworks.has(n)) return n;
          return null;
        },
      },
    });
    this.serve(this.handshakes);

    // Built-in services
    this.services = createBuiltinServices(cfg.services, {
      dataDir: this.dataDir,
      self: () => ({ node: this.nodeId, addr: this.address }),
      getPoloScore: async (n) => (await this.registry.getPoloScore(n)).polo_score,
      adjustPoloScore: async (n, delta) => {
        if (n === this.nodeId) await this.registry.updatePoloScore(this.auth(), delta);
      },
      dial: async (addr, port) => this.dial(await this.resolveTarget(addr), port),
      emit: (e, d) => this.emit(e, d),
      logger: this.log.child({ c: 'services' }),
    });
    for (const s of this.services.list) this.serve(s);
    this.services.tasks?.start();

    await this.refreshMemberships();
    this.subscribe();
    this.scheduleHeartbeat();
    // Re-announce trust pairs (the registry gates `resolve` on them; v1 does this on re-registration).
    for (const p of this.trustStore.listTrusted()) void this.registry.reportTrust(this.auth(), p.node_id).catch(() => undefined);

    this.ipc = new IpcServer({ path: cfg.socket, daemon: this, log: this.log.child({ c: 'ipc' }) });
    await this.ipc.listen();
    this.startedAt = Date.now();
    this.log.info({ node_id: this.nodeId, address: this.address, socket: cfg.socket }, 'daemon started');
  }

  /** Graceful shutdown: deregister (if asked), FIN every connection, close everything. */
  async close(opts: { deregister?: boolean } = {}): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.netOps?.close();
    await this.ipc?.close().catch(() => undefined);
    if (opts.deregister !== false && this.nodeId && this.registry) {
      await withTimeout(this.registry.deregister(this.auth()), 2000).catch((err: Error) => this.log.warn({ err: err.message }, 'deregister failed'));
      this.webhook?.emit('node.deregistered', { node_id: this.nodeId });
    }
    await this.subscription?.close().catch(() => undefined);
    for (const l of this.serviceListeners) l.close();
    await this.handshakes?.close().catch(() => undefined);
    await Promise.allSettled((this.services?.list ?? []).map((s) => s.close()));
    for (const c of this.serviceConns) c.destroy();
    // FIN every connection and give the FINs a moment to leave before the socket closes.
    if (this.transport?.started) {
      for (const c of this.host.connectionList()) c.end();
      await new Promise((r) => setTimeout(r, 50));
    }
    this.nat?.close();
    await this.transport?.close().catch(() => undefined);
    await this.registry?.close().catch(() => undefined);
    await this.admission?.close().catch(() => undefined);
    await this.trustStore?.flush().catch(() => undefined);
    await this.webhook?.close().catch(() => undefined);
    this.closed = true;
    this.log.info({ node_id: this.nodeId }, 'daemon stopped');
  }

  /** Event fan-out: webhooks (v1 event set) and, for trust changes, an IPC `trust` event. */
  emit(name: string, data: Record<string, unknown>): void {
    this.webhook.emit(name, data);
    if (this.ipc && (name.startsWith('handshake.') || name.startsWith('trust.'))) {
      const node = typeof data.node_id === 'number' ? data.node_id : 0;
      const fields: { kind: string; node: number; justification?: string; reason?: string } = { kind: name, node };
      if (typeof data.justification === 'string') fields.justification = data.justification;
      if (typeof data.reason === 'string') fields.reason = data.reason;
      this.ipc.broadcast(ipcEvent('trust', fields));
    }
  }

  // ================================================================================================
  // registry: registration, heartbeat, push

  private async register(again: boolean): Promise<void> {
    const cfg = this.config;
    let delay = this.opts.reconnectMinMs ?? 500;
    for (;;) {
      if (this.closing) throw new DaemonError('closed', 'daemon closing');
      try {
        const addr = this.transport.address();
        const refl = this.reflexive;
        const listenAddr = cfg.endpoint || (refl ? `${refl.host}:${refl.port}` : `${addr.address === '0.0.0.0' || addr.address === '::' ? '' : addr.address}:${addr.port}`);
        const r = await this.registry.register(this.identity, {
          listenAddr,
          ...(cfg.owner ? { owner: cfg.owner } : {}),
          ...(cfg.hostname ? { hostname: cfg.hostname } : {}),
        });
        if (this.nodeId && r.node_id !== this.nodeId) {
          // The transport runs as the old ID; a new ID needs a restart (registry lost our record).
          this.log.error({ old: this.nodeId, new: r.node_id }, 'registry assigned a new node ID: restart the daemon to use it');
        } else this.nodeId = r.node_id;
        if (r.hostname_error) this.log.warn({ hostname: cfg.hostname, err: r.hostname_error }, 'hostname not set');
        if (cfg.public) await this.registry.setVisibility(this.auth(), true);
        this.heartbeatFailures = 0;
        this.webhook.emit(again ? 'node.reregistered' : 'node.registered', { node_id: this.nodeId, address: this.address });
        this.log.info({ node_id: this.nodeId, again }, again ? 're-registered' : 'registered');
        if (again) {
          this.counters.reregistrations++;
          for (const p of this.trustStore.listTrusted()) void this.registry.reportTrust(this.auth(), p.node_id).catch(() => undefined);
        }
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'tls_pin_mismatch') throw err;
        this.log.warn({ err: (err as Error).message, retry_ms: delay }, 'registration failed, retrying');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, this.opts.reconnectMaxMs ?? 10_000);
      }
    }
  }

  private scheduleHeartbeat(): void {
    if (this.closing) return;
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), this.config.keepaliveMs);
    this.heartbeatTimer.unref();
  }

  private async heartbeat(): Promise<void> {
    try {
      // A heartbeat not answered within one interval counts as failed (the client would wait 10 s).
      const reply = await withTimeout(this.registry.heartbeat(this.auth()), Math.max(1000, this.config.keepaliveMs));
      this.counters.heartbeats++;
      this.netOps.onHeartbeat(reply);
      const recovered = this.heartbeatFailures > 0;
      this.heartbeatFailures = 0;
      // The registry was unreachable: it may have restarted from an older state or lost our endpoint,
      // hostname or trust reports, so refresh the registration instead of trusting the heartbeat alone.
      if (recovered) await this.reregister();
      // v1: poll the handshake inbox after each successful heartbeat (pushes are prompts, this is the record).
      await this.pollHandshakes();
    } catch (err) {
      this.counters.heartbeatFailures++;
      this.heartbeatFailures++;
      const code = (err as { code?: string }).code;
      // An expired key: reported once (log + event); re-registering would be refused the same way.
      if (this.netOps.onRegistryError(err)) return;
      this.log.warn({ err: (err as Error).message, failures: this.heartbeatFailures }, 'heartbeat failed');
      // An unknown node (registry lost state) or 3 consecutive failures → re-register (v1 §1.12).
      if (code === 'not_found' || code === 'unauthorized' || this.heartbeatFailures >= 3) await this.reregister();
    } finally {
      this.scheduleHeartbeat();
    }
  }

  private reregister(): Promise<void> {
    if (!this.reregistering) {
      this.reregistering = this.register(true)
        .then(() => this.refreshMemberships())
        .catch((err: Error) => this.log.warn({ err: err.message }, 're-registration failed'))
        .finally(() => (this.reregistering = null));
    }
    return this.reregistering;
  }

  private subscribe(): void {
    this.subscription = this.registry.subscribe(this.auth(), (e) => void this.onPush(e), {
      onSubscribed: () => void this.pollHandshakes().catch(() => undefined),
      onError: (err) => {
        this.log.debug({ err: err.message }, 'push subscription error');
        const code = (err as { code?: string }).code;
        if (code === 'not_found' || code === 'unauthorized') void this.reregister();
      },
    });
  }

  private async pollHandshakes(): Promise<void> {
    const r = await this.registry.pollHandshakes(this.auth());
    for (const req of r.requests) await this.handshakes.onRelayedRequest(req).catch((e: Error) => this.log.warn({ err: e.message }, 'relayed request failed'));
    for (const res of r.responses) await this.handshakes.onRelayedResponse(res).catch((e: Error) => this.log.warn({ err: e.message }, 'relayed response failed'));
  }

  private async onPush(e: PushEvent): Promise<void> {
    this.counters.pushes++;
    try {
      switch (e.event) {
        case 'handshake_request':
        case 'handshake_response':
          // The inbox is the record: poll consumes it, so each entry is applied exactly once.
          await this.pollHandshakes();
          break;
        case 'trust_revoked': {
          const peer = e.from_node_id;
          if (this.trustStore.isTrusted(peer)) {
            await this.trustStore.revoke(peer);
            this.emit('trust.revoked_by_peer', { node_id: peer });
          }
          this.tearDownPeer(peer, 'trust revoked by peer');
          break;
        }
        case 'network_membership': {
          this.memberCache.delete(e.network_id);
          const member = e.action === 'join';
          if (e.action === 'delete') {
            this.myNetworks.delete(e.network_id);
            this.peers.dropNetwork(e.network_id);
          } else if (e.node_id === this.nodeId) {
            if (member) this.myNetworks.add(e.network_id);
            else this.myNetworks.delete(e.network_id);
            if (member) await this.fetchPolicy(e.network_id);
          } else this.peers.noteMembership(e.node_id, e.network_id, member);
          this.recheckSessions(e.action === 'delete' || e.node_id === this.nodeId ? undefined : e.node_id);
          this.netOps.onPush(e, this.nodeId);
          break;
        }
        case 'network_policy':
          this.policies.set(e.network_id, [...e.allowed_ports]);
          this.recheckSessions();
          break;
        case 'key_rotated':
          // A peer's key changed: forget its cached key and drop the tunnel context authenticated under
          // the old one, so the next exchange is verified against the new key.
          if (e.node_id !== this.nodeId) this.rekeyPeer(e.node_id);
          this.netOps.onPush(e, this.nodeId);
          break;
        case 'network_role':
        case 'network_invite':
        case 'member_tags':
          this.netOps.onPush(e, this.nodeId);
          break;
        default:
          break;
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message, event: e.event }, 'push handling failed');
    }
  }

  private async refreshMemberships(): Promise<void> {
    try {
      const me = await this.registry.lookup(this.nodeId);
      this.myNetworks.clear();
      for (const n of me.networks ?? []) if (n !== 0) this.myNetworks.add(n);
      await Promise.all([...this.myNetworks].map((n) => this.fetchPolicy(n)));
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'membership refresh failed');
      return;
    }
    await this.netOps.rejoinMissing(this.myNetworks).catch((err: Error) => this.log.warn({ err: err.message }, 're-joining kept networks failed'));
  }

  private async fetchPolicy(net: number): Promise<void> {
    try {
      const p = await this.registry.getNetworkPolicy(net, this.auth());
      this.policies.set(net, [...(p.allowed_ports ?? [])]);
    } catch (err) {
      this.log.debug({ net, err: (err as Error).message }, 'network policy fetch failed');
    }
  }

  // ================================================================================================
  // sessions, trust effects

  /** Revocation (SPEC §5): close every session with `peer` now and forget its tunnel context. */
  tearDownPeer(peer: number, reason: string): void {
    this.counters.revocationsApplied++;
    if (this.transport?.started) this.host.closePeer(peer, reason);
    this.peers.forget(peer);
  }

  /** A peer rotated its key: re-key its tunnel (sessions stay; their packets wait for the new context). */
  private rekeyPeer(peer: number): void {
    this.peers.invalidate(peer);
    if (!this.transport?.started) return;
    const live = this.host.connectionList().some((c) => c.remote.node === peer && !c.isTimeWaitOrClosed);
    this.transport.tunnel.removePeer(peer);
    if (live) void this.peers.ensurePath(peer).catch((err: Error) => this.log.debug({ peer, err: err.message }, 're-key after peer rotation failed'));
  }

  /** Our key was rotated (node ID kept): sign with the new key everywhere and re-key every tunnel. */
  private useIdentity(next: Identity): void {
    this.identity = next;
    if (this.transport) this.transport.tunnel.setIdentity(next);
  }

  /** Enterprise/key events: an IPC `network` event and a webhook (`network.*`, `key.*`, `identity.*`). */
  private networkEvent(kind: string, data: Record<string, IpcValue | undefined>): void {
    const hook = kind.startsWith('key_')
      ? `key.${kind.slice(4)}`
      : kind === 'peer_key_rotated'
        ? 'key.peer_rotated'
        : ['token_renewed', 'token_renew_failed', 'rejoined', 'rejoin_failed'].includes(kind)
          ? `identity.${kind}`
          : `network.${kind}`;
    const clean: Record<string, IpcValue> = {};
    for (const [k, v] of Object.entries(data)) if (v !== undefined) clean[k] = v;
    this.webhook.emit(hook, clean);
    this.ipc?.broadcast(ipcEvent('network', { ...clean, kind }));
  }

  /** Re-run admission over live sessions after a membership/policy change; close the ones now refused. */
  private recheckSessions(onlyPeer?: number): void {
    if (!this.transport?.started) return;
    for (const c of this.host.connectionList()) {
      const peer = c.remote.node;
      if (onlyPeer !== undefined && peer !== onlyPeer) continue;
      const d = this.admission.decide(peer, c.remote.network, c.initiator ? c.remotePort : c.localPort);
      if (!d.ok) c.reset('peer_closed', `session no longer admitted: ${d.reason}`, true);
    }
  }

  private async sendHandshakeDirect(peer: number, msg: HandshakeMessage): Promise<void> {
    const conn = await this.dial(new Addr(0, peer), 444, 5000);
    conn.on('error', () => {});
    conn.write(encodeHandshakeMessage(msg));
    // v1: the sender closes ~500 ms after its single write.
    setTimeout(() => conn.end(), 500).unref();
  }

  private serve(s: Service | HandshakeLogic): void {
    let l: Listener;
    try {
      l = this.host.listen(s.port);
    } catch (err) {
      this.log.error({ port: s.port, err: (err as Error).message }, 'cannot bind service port');
      return;
    }
    this.serviceListeners.push(l);
    l.on('connection', (conn: Connection) => {
      this.serviceConns.add(conn);
      conn.on('error', () => {});
      conn.once('close', () => this.serviceConns.delete(conn));
      void s.handle(conn, { remote: conn.remote.toString(), remoteNode: conn.remote.node, remotePort: conn.remotePort });
    });
  }

  /**
   * Broadcast datagram (SPEC §4, `N:FFFF.FFFF.FFFF`): fan the packet out to every member of network N we
   * can reach; each receiver's admission applies N's port policy. Only networks we are a member of.
   */
  private onBroadcast(pkt: Buffer): void {
    const net = pkt.length >= 16 ? pkt.readUInt16BE(10) : 0;
    if (net === 0 || !this.myNetworks.has(net)) {
      this.counters.broadcastsDropped++;
      return;
    }
    const copy = Buffer.from(pkt);
    void this.fanOut(net, copy).catch((err: Error) => this.log.debug({ net, err: err.message }, 'broadcast fan-out failed'));
  }

  private async fanOut(net: number, pkt: Buffer): Promise<void> {
    let cached = this.memberCache.get(net);
    if (!cached || Date.now() - cached.at > 10_000) {
      const r = await this.registry.listNodes(net, this.auth());
      cached = { at: Date.now(), nodes: r.nodes.map((n) => n.node_id).slice(0, 1024) };
      this.memberCache.set(net, cached);
    }
    this.counters.broadcastsSent++;
    await Promise.all(
      cached.nodes
        .filter((n) => n !== this.nodeId)
        .map(async (n) => {
          try {
            await this.peers.ensurePath(n);
            this.transport.tunnel.send(n, pkt);
          } catch {
            /* unreachable member (private, untrusted): skipped */
          }
        }),
    );
  }

  // ================================================================================================
  // IpcDaemonApi

  async resolveTarget(text: string): Promise<Addr> {
    const t = text.trim();
    const a = Addr.parseLoose(t);
    if (a) return a;
    if (/^\d+$/.test(t)) {
      const n = Number(t);
      if (n > 0 && n <= 0xffffffff) return new Addr(0, n);
    }
    if (/^[a-z0-9][a-z0-9-]{0,62}$/i.test(t)) {
      try {
        const r = (await this.registry.resolveHostname(t.toLowerCase(), this.auth())) as unknown as { node_id?: number };
        if (typeof r.node_id === 'number') return new Addr(0, r.node_id);
      } catch (err) {
        throw new PilotError('not_found', `unknown peer "${t}": ${(err as Error).message}`);
      }
    }
    throw new PilotError('not_found', `"${t.slice(0, 80)}" is not an address, node ID or known hostname`);
  }

  async dial(addr: Addr, port: number, timeoutMs?: number): Promise<Connection> {
    this.assertRunning();
    if (addr.node === this.nodeId) throw new PilotError('invalid_argument', 'cannot dial our own node');
    await this.peers.ensurePath(addr.node);
    // Half-open: IPC `end` is a half-close; a peer's FIN must not stop our replies (SPEC §8).
    return this.host.connect(addr, port, { ...(timeoutMs ? { timeoutMs } : {}), noDelay: true, allowHalfOpen: true });
  }

  listen(port: number, backlog?: number): Listener {
    this.assertRunning();
    return this.host.listen(port, { allowHalfOpen: true, ...(backlog ? { backlog } : {}) });
  }

  bindDatagram(port: number): DatagramSocket {
    this.assertRunning();
    return this.host.bindDatagram(port);
  }

  async sendDatagram(addr: Addr, port: number, data: Buffer, srcPort?: number): Promise<void> {
    this.assertRunning();
    if (addr.node === BROADCAST_NODE) {
      if (addr.network === 0 || !this.myNetworks.has(addr.network)) {
        throw new PilotError('not_allowed', `broadcast needs membership of a network (not ${addr.network})`);
      }
    } else await this.peers.ensurePath(addr.node);
    this.host.sendDatagram(addr, port, data, srcPort);
  }

  async ping(addr: Addr, size: number): Promise<number> {
    this.assertRunning();
    await this.peers.ensurePath(addr.node);
    return this.host.ping(addr.node, size);
  }

  info(): JsonObject {
    const st = this.transport.stats();
    const peers = this.transport.tunnel.peers();
    const conns = this.host.connections();
    const cfg = this.config;
    return {
      node_id: this.nodeId,
      address: this.address,
      hostname: cfg.hostname,
      uptime_secs: (Date.now() - this.startedAt) / 1000,
      connections: conns.filter((c) => ['SYN_SENT', 'SYN_RECV', 'ESTABLISHED'].includes(c.state)).length,
      ports: this.listeningPorts().length,
      peers: peers.length,
      encrypted_peers: peers.filter((p) => p.encrypted).length,
      authenticated_peers: peers.filter((p) => p.authenticated).length,
      encrypt: cfg.encrypt,
      identity: true,
      public_key: this.identity.publicKeyB64,
      owner: cfg.owner,
      bytes_sent: st.udp.bytes_sent,
      bytes_recv: st.udp.bytes_received,
      pkts_sent: st.udp.packets_sent,
      pkts_recv: st.udp.packets_received,
      peer_list: peers.map((p) => ({
        node_id: p.node_id,
        endpoint: p.endpoint ? `${p.endpoint.host}:${p.endpoint.port}` : '',
        encrypted: p.encrypted,
        authenticated: p.authenticated,
        ...this.pathFields(p.node_id, p.path),
      })),
      conn_list: conns as unknown as JsonObject[],
      data_dir: this.dataDir.root,
      socket: this.config.socket,
      version: this.version,
    } as JsonObject;
  }

  private listeningPorts(): number[] {
    return this.serviceListeners.map((l) => l.port);
  }

  peerList(search?: string): IpcMap[] {
    return this.transport.tunnel
      .peers()
      .filter((p) => !search || String(p.node_id).includes(search) || (this.peers.get(p.node_id)?.hostname ?? '').includes(search))
      .map((p) => ({
        node_id: p.node_id,
        address: new Addr(0, p.node_id).toString(),
        endpoint: p.endpoint ? `${p.endpoint.host}:${p.endpoint.port}` : '',
        encrypted: p.encrypted,
        authenticated: p.authenticated,
        relay: p.path === 'relay',
        ...this.pathFields(p.node_id, p.path),
        trusted: this.trustStore.isTrusted(p.node_id),
        hostname: this.peers.get(p.node_id)?.hostname ?? '',
        bytes_in: p.bytes_in,
        bytes_out: p.bytes_out,
      }));
  }

  /** Path kind (direct / punched / relayed), RTT and when it last changed, for `pilotctl peers` and `info`. */
  private pathFields(node: number, tunnelPath: 'direct' | 'relay'): IpcMap {
    const p = this.nat.path(node);
    return {
      path: p?.path ?? (tunnelPath === 'relay' ? 'relayed' : 'direct'),
      rtt_ms: p?.rtt ?? null,
      path_changed_at: p ? new Date(p.changedAt).toISOString() : null,
    } as IpcMap;
  }

  connections(): IpcMap[] {
    return this.host.connections() as unknown as IpcMap[];
  }

  disconnect(id: number): boolean {
    const c = this.host.connectionList().find((x) => x.id === id);
    if (!c) return false;
    c.reset('connection_reset', 'disconnected by the operator', true);
    return true;
  }

  async handshake(cmd: HandshakeCommand): Promise<HandshakeResult> {
    this.assertRunning();
    switch (cmd.sub) {
      case 'send':
        return this.handshakes.request(cmd.nodeId, cmd.justification);
      case 'approve':
        return this.handshakes.approve(cmd.nodeId);
      case 'reject':
        return this.handshakes.reject(cmd.nodeId, cmd.reason);
      case 'revoke':
        return this.handshakes.revoke(cmd.nodeId);
      case 'pending':
        return { pending: this.handshakes.pending() };
      case 'trusted':
        return { trusted: this.handshakes.trusted() };
    }
  }

  async registryCommand(op: 'resolve_hostname' | 'set_hostname' | 'set_visibility' | 'deregister' | 'set_tags' | 'set_task_exec', a: unknown): Promise<JsonObject> {
    this.assertRunning();
    const auth = this.auth();
    let r: unknown;
    try {
      switch (op) {
        case 'resolve_hostname':
          r = await this.registry.resolveHostname(String(a), auth);
          break;
        case 'set_hostname':
          r = await this.registry.setHostname(auth, String(a));
          break;
        case 'set_visibility':
          r = await this.registry.setVisibility(auth, a === true);
          break;
        case 'deregister':
          r = await this.registry.deregister(auth);
          break;
        case 'set_tags':
          r = await this.registry.setTags(auth, a as string[]);
          break;
        case 'set_task_exec':
          r = await this.registry.setTaskExec(auth, a === true);
          break;
      }
    } catch (err) {
      const e = new PilotError((err as { code?: string }).code ?? 'registry_error', `${op}: registry: ${(err as Error).message}`, { cause: err });
      throw e;
    }
    return r as JsonObject;
  }

  setWebhook(url: string): JsonObject {
    this.webhook.setUrl(url);
    return { webhook: url };
  }

  async network(op: string, a: IpcMap): Promise<IpcMap> {
    this.assertRunning();
    return this.netOps.network(op, a);
  }

  async key(op: string, a: IpcMap): Promise<IpcMap> {
    this.assertRunning();
    return this.netOps.key(op, a);
  }

  stats(): IpcMap {
    const t = this.transport.stats();
    return {
      node_id: this.nodeId,
      udp: t.udp as unknown as IpcMap,
      tunnel: t.tunnel as unknown as IpcMap,
      host: (t.host ?? {}) as unknown as IpcMap,
      admission: this.admission.stats() as unknown as IpcMap,
      ipc: { ...this.ipc.stats },
      registry: { ...this.counters, connected: this.registry.connected, subscribed: this.subscription?.active ?? false },
      peers: { cached: this.peers.size(), ...this.peers.stats },
      nat: { ...this.nat.stats(), reflexive: this.reflexive ? `${this.reflexive.host}:${this.reflexive.port}` : '' },
      webhook: { ...this.webhook.stats },
      handshake: { ...this.handshakes.stats },
      network: { ...this.netOps.stats },
    };
  }

  private assertRunning(): void {
    if (this.closing || !this.transport?.started) throw new PilotError('unavailable', 'daemon not running');
  }
}

export function splitHostPort(text: string, allowEmptyHost = false): [string, number] {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(text);
  if (!m || (!allowEmptyHost && !m[1])) throw new DaemonError('bad_value', `expected HOST:PORT, got "${text}"`);
  return [m[1]!, Number(m[2])];
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new DaemonError('timeout', `timed out after ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e)),
    );
  });
}

export { parseEndpoint };

/** `host:port` → an IP-literal endpoint (the beacon is addressed by IP; a hostname is looked up once). */
async function resolveEndpoint(text: string): Promise<{ host: string; port: number }> {
  const [host, port] = splitHostPort(text);
  if (isIP(host)) return { host, port };
  return { host: (await dnsLookup(host)).address, port };
}
