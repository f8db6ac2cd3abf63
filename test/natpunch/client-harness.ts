// A NAT-traversing peer as a daemon composes it: TransportNode + registry registration + NatTraversal.
// Used by the in-process client tests, the rig peer script (test/rigs/nat-peer.ts) and bench/nat-paths.ts.
import { createHash, randomBytes } from 'node:crypto';
import { Addr } from '../../transport/address.js';
import { Identity, decodeB64Strict } from '../../transport/identity.js';
import { TransportNode } from '../../transport/node.js';
import type { Connection } from '../../transport/stream/index.js';
import type { Endpoint } from '../../transport/tunnel/index.js';
import { RegistryClient } from '../../registry/client.js';
import { NatTraversal, parseEndpoint, type NatTraversalOptions } from '../../natpunch/index.js';

export const DATA_PORT = 1000;

export interface PeerOptions {
  registry: Endpoint;
  beacon?: Endpoint | null;
  bind?: string;
  stunServers?: Array<Endpoint | string>;
  endpointOverride?: Endpoint | null;
  nat?: Partial<Omit<NatTraversalOptions, 'node' | 'identity'>>;
  /** Cap on UDP payload size (e.g. 1472 for MTU-sized datagrams, no IP fragmentation). */
  udpPayload?: number;
  /** Outgoing datagram filter (tests: an in-process firewall). Return false to drop. */
  sendFilter?: (port: number, host: string) => boolean;
}

export interface Peer {
  id: number;
  identity: Identity;
  node: TransportNode;
  nat: NatTraversal;
  registry: RegistryClient;
  local: Endpoint;
  /** What we registered (reflexive endpoint, or the local one on loopback). */
  registered: Endpoint;
  /** Resolve `peer` through the registry and hand it to NatTraversal. */
  connectTo(peer: number): Promise<Endpoint>;
  close(): Promise<void>;
}

export async function startPeer(o: PeerOptions): Promise<Peer> {
  const identity = Identity.generate();
  const keys = new Map<number, Uint8Array>();
  let registry: RegistryClient | null = null;
  let nat: NatTraversal | null = null;
  const node = new TransportNode({
    identity,
    lookupPublicKey: async (n) => {
      const hit = keys.get(n);
      if (hit) return hit;
      if (!registry) return null;
      try {
        const rec = await registry.lookup(n);
        const k = decodeB64Strict(rec.public_key, 'public_key');
        keys.set(n, k);
        return k;
      } catch {
        return null;
      }
    },
    relayFallback: (peer) => nat?.relayFallback(peer) ?? false,
    stream: o.udpPayload ? { maxUdpPayload: o.udpPayload, initialUdpPayload: Math.min(1200, o.udpPayload) } : undefined,
  });
  if (o.sendFilter) {
    const filter = o.sendFilter;
    const udp = node.udp;
    const orig = udp.send.bind(udp);
    udp.send = (data, port, host) => {
      if (filter(port, host)) orig(data, port, host);
    };
  }
  const addr = await node.bind(o.bind ?? '0.0.0.0', 0);
  nat = new NatTraversal({
    node,
    identity,
    beacon: o.beacon ?? null,
    stunServers: o.stunServers,
    endpointOverride: o.endpointOverride,
    ...o.nat,
  });
  try {
    const reflexive = await nat.discover();
    const local = { host: addr.address, port: addr.port };
    // As v1: a loopback/unspecified discovered host registers 127.0.0.1:<port>.
    const registered = reflexive && reflexive.host !== '0.0.0.0' ? reflexive : { host: '127.0.0.1', port: addr.port };
    // Generous: under a loaded CI machine the registry's signature checks can queue for seconds.
    registry = await RegistryClient.connect({ host: o.registry.host, port: o.registry.port, requestTimeoutMs: 30_000 });
    const r = await registry.register(identity, { listenAddr: `${registered.host}:${registered.port}` });
    const auth = { identity, nodeId: r.node_id };
    await registry.setVisibility(auth, true);
    node.start(r.node_id);
    nat.start(r.node_id);
    const reg = registry;
    const n = nat;
    return {
      id: r.node_id,
      identity,
      node,
      nat,
      registry,
      local,
      registered,
      async connectTo(peer) {
        const res = await reg.resolve(auth, peer);
        const ep = parseEndpoint(res.real_addr);
        n.addPeer(peer, ep);
        return ep;
      },
      async close() {
        n.close();
        await reg.close();
        await node.close();
      },
    };
  } catch (err) {
    nat.close();
    await registry?.close();
    await node.close();
    throw err;
  }
}

export interface TransferResult {
  bytes: number;
  sentSha256: string;
  recvSha256: string;
  ms: number;
}

/** Serve DATA_PORT: every connection's bytes are hashed; `expect(n)` resolves when n bytes arrived. */
export function serveHash(p: Peer): { expect(bytes: number): Promise<{ bytes: number; sha256: string }> } {
  let received = 0;
  let hash = createHash('sha256');
  let want = Infinity;
  let done: ((r: { bytes: number; sha256: string }) => void) | null = null;
  p.node.host.listen(DATA_PORT).on('connection', (c: Connection) => {
    c.on('data', (d: Buffer) => {
      received += d.length;
      hash.update(d);
      if (received >= want && done) {
        const r = { bytes: received, sha256: hash.digest('hex') };
        done(r);
        done = null;
      }
    });
    c.on('error', () => {});
  });
  return {
    expect(bytes) {
      received = 0;
      hash = createHash('sha256');
      want = bytes;
      return new Promise((resolve) => (done = resolve));
    },
  };
}

/**
 * Send `bytes` random bytes over one connection to `peer` in `chunk`-sized writes, optionally pausing
 * `gapMs` between writes (a long-lived stream for mid-stream path changes). Hash of what was sent.
 */
export async function sendHashed(
  p: Peer,
  peer: number,
  bytes: number,
  o: { chunk?: number; gapMs?: number; onProgress?: (sent: number) => void; conn?: Connection } = {},
): Promise<{ sha256: string; conn: Connection }> {
  const conn = o.conn ?? (await p.node.host.connect(new Addr(0, peer), DATA_PORT, { noDelay: true, timeoutMs: 30_000 }));
  const h = createHash('sha256');
  const chunk = o.chunk ?? 64 * 1024;
  for (let off = 0; off < bytes; off += chunk) {
    const b = randomBytes(Math.min(chunk, bytes - off));
    h.update(b);
    if (!conn.write(b)) await new Promise<void>((r) => conn.once('drain', () => r()));
    o.onProgress?.(off + b.length);
    if (o.gapMs) await new Promise((r) => setTimeout(r, o.gapMs));
  }
  return { sha256: h.digest('hex'), conn };
}
