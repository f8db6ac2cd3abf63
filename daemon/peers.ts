/**
 * Peer manager: what the daemon knows about other nodes, all of it from the registry.
 *
 * - `publicKey(node)` backs the tunnel's `lookupPublicKey` (SPEC §3: a PILA is accepted only with the
 *   registry's key). One `lookup` fills the record (key, networks, hostname), so by the time a SYN
 *   arrives after the key exchange, admission (SPEC §5) can answer synchronously from the cache.
 * - `ensurePath(node)` resolves an endpoint (`resolve`, which the registry only discloses for public or
 *   trusted nodes) and hands it to the tunnel before a dial.
 * - Bounded: at most `maxPeers` records (LRU eviction), concurrent lookups for one node are shared,
 *   records expire after `ttlMs` and are refreshed on the next use.
 * - `forget(node)` drops the record and the tunnel context (trust revoked, SPEC §5).
 *
 * Seam for NAT traversal: `resolvePath` is injectable; the default is "registry resolve → direct".
 * A hole-punching/relay strategy (natpunch/) plugs in there without changing the daemon.
 */
import type { Logger } from 'pino';
import type { NodeAuth, RegistryClient } from '../registry/client.js';
import type { LookupOk } from '../registry/protocol/messages.js';
import { PilotError } from '../transport/errors.js';
import type { TransportNode } from '../transport/node.js';

export class PeerError extends PilotError {}

export interface PeerRecord {
  node: number;
  publicKey: Uint8Array | null;
  publicKeyB64: string;
  networks: number[];
  hostname: string;
  isPublic: boolean;
  fetchedAt: number;
}

export interface Endpoint {
  host: string;
  port: number;
}

/** How to reach a peer: a direct endpoint, optionally with a relay (beacon) to use instead. */
export interface PeerPath {
  endpoint: Endpoint;
  relay?: Endpoint;
}

export interface PeerManagerOptions {
  registry: RegistryClient;
  auth: () => NodeAuth;
  transport: TransportNode;
  maxPeers?: number;
  ttlMs?: number;
  now?: () => number;
  log?: Logger;
  /** NAT-traversal seam: find a path to `node` (default: registry resolve → direct endpoint). */
  resolvePath?: (node: number) => Promise<PeerPath>;
  /** Hand a resolved path to the transport (the daemon routes it through NAT traversal; default: tunnel direct). */
  attach?: (node: number, path: PeerPath) => void;
}

export function parseEndpoint(text: string): Endpoint {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(text);
  if (!m || !m[1] || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new PeerError('bad_endpoint', `bad endpoint "${text}"`);
  return { host: m[1], port: Number(m[2]) };
}

export class PeerManager {
  private readonly records = new Map<number, PeerRecord>();
  private readonly inflight = new Map<number, Promise<PeerRecord | null>>();
  private readonly maxPeers: number;
  private readonly ttlMs: number;
  private readonly now: () => number;
  readonly stats = { lookups: 0, lookupFailures: 0, resolves: 0, resolveFailures: 0, evicted: 0 };

  constructor(private readonly opts: PeerManagerOptions) {
    this.maxPeers = opts.maxPeers ?? 4096;
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Cached record (no I/O). */
  get(node: number): PeerRecord | undefined {
    return this.records.get(node);
  }

  /** The registry's Ed25519 key for `node` (tunnel `lookupPublicKey`). */
  publicKey = async (node: number): Promise<Uint8Array | null> => {
    const r = await this.lookup(node);
    return r?.publicKey ?? null;
  };

  /** Cached or fresh registry `lookup`; null if the registry does not know the node. */
  async lookup(node: number, force = false): Promise<PeerRecord | null> {
    const cached = this.records.get(node);
    if (cached && !force && this.now() - cached.fetchedAt < this.ttlMs) {
      this.records.delete(node);
      this.records.set(node, cached); // LRU touch
      return cached;
    }
    const running = this.inflight.get(node);
    if (running) return running;
    const p = this.fetch(node).finally(() => this.inflight.delete(node));
    this.inflight.set(node, p);
    return p;
  }

  private async fetch(node: number): Promise<PeerRecord | null> {
    this.stats.lookups++;
    let r: LookupOk;
    try {
      r = await this.opts.registry.lookup(node);
    } catch (err) {
      this.stats.lookupFailures++;
      this.opts.log?.debug({ node, err: (err as Error).message }, 'peer lookup failed');
      return this.records.get(node) ?? null;
    }
    let key: Uint8Array | null = null;
    try {
      const k = Buffer.from(r.public_key, 'base64');
      if (k.length === 32) key = k;
    } catch {
      key = null;
    }
    const rec: PeerRecord = {
      node,
      publicKey: key,
      publicKeyB64: key ? r.public_key : '',
      networks: Array.isArray(r.networks) ? r.networks.filter((n) => Number.isInteger(n)) : [],
      hostname: r.hostname ?? '',
      isPublic: r.public === true,
      fetchedAt: this.now(),
    };
    this.records.delete(node);
    this.records.set(node, rec);
    while (this.records.size > this.maxPeers) {
      const oldest = this.records.keys().next().value as number;
      this.records.delete(oldest);
      this.stats.evicted++;
    }
    return rec;
  }

  /** Update cached membership after a push (join/leave/kick). */
  noteMembership(node: number, net: number, member: boolean): void {
    const r = this.records.get(node);
    if (!r) return;
    const has = r.networks.includes(net);
    if (member && !has) r.networks.push(net);
    if (!member && has) r.networks = r.networks.filter((n) => n !== net);
  }

  /** Drop `net` from every cached record (network deleted). */
  dropNetwork(net: number): void {
    for (const r of this.records.values()) r.networks = r.networks.filter((n) => n !== net);
  }

  /** Make sure the tunnel knows where `node` is (before a dial). */
  async ensurePath(node: number): Promise<void> {
    const t = this.opts.transport.tunnel;
    const known = t.hasPeer(node) && t.peer(node)?.endpoint;
    // A peer with live sessions is where it is; otherwise ask again (it may have restarted elsewhere).
    if (known && this.opts.transport.host.connectionList().some((c) => c.remote.node === node && !c.isTimeWaitOrClosed)) return;
    let path: PeerPath;
    try {
      path = await (this.opts.resolvePath ?? this.resolveDirect)(node);
    } catch (err) {
      if (known) return; // registry unreachable or refusing: keep the path we have
      throw err;
    }
    if (this.opts.attach) this.opts.attach(node, path);
    else this.opts.transport.addPeer(node, path.endpoint, path.relay);
    // Prefetch the key/networks so the key exchange and admission do not wait on the registry later.
    void this.lookup(node);
  }

  private resolveDirect = async (node: number): Promise<PeerPath> => {
    this.stats.resolves++;
    try {
      const r = await this.opts.registry.resolve(this.opts.auth(), node);
      return { endpoint: parseEndpoint(r.real_addr) };
    } catch (err) {
      this.stats.resolveFailures++;
      const code = (err as { code?: string }).code;
      throw new PeerError(
        code === 'not_found' ? 'not_found' : 'unreachable',
        `cannot resolve node ${node}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  };

  /** Drop the cached record only (the peer's key changed: the next look-up fetches the new one). */
  invalidate(node: number): void {
    this.records.delete(node);
  }

  /** Forget the record and the tunnel context (trust revoked). */
  forget(node: number): void {
    this.records.delete(node);
    try {
      this.opts.transport.tunnel.removePeer(node);
    } catch {
      /* tunnel closed */
    }
  }

  size(): number {
    return this.records.size;
  }
}
