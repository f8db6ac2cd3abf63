import { decodeB64Strict } from '../transport/identity.js';
import { BeaconServer, type BeaconClock, type BeaconOptions } from './beacon-server.js';
import type { Endpoint } from './beacon-wire.js';
import { ipToBytes } from './ip.js';

/**
 * What the standalone beacon needs from a registry client: v1 `lookup` (wire reference §1.10). Kept
 * structural so natpunch does not depend on the registry folder.
 */
export interface RegistryLookup {
  lookup(nodeId: number): Promise<LookupRecord | null>;
  /** Optional registry-side privacy rule (public / trusted / shared network). */
  canDisclose?(requesterId: number, targetId: number): Promise<boolean>;
}

export interface LookupRecord {
  public_key?: string;
  public?: boolean;
  /** `host:port`; v1 registries include it only for public nodes. */
  real_addr?: string;
}

export interface StandaloneBeaconOptions extends Omit<BeaconOptions, 'publicKeyOf'> {
  registry: RegistryLookup;
  /** How long a looked-up record is trusted (default 30 s); unknown nodes are re-asked after `negativeTtlMs` (5 s). */
  cacheTtlMs?: number;
  negativeTtlMs?: number;
  /** Records cached (default 65,536). */
  cacheSize?: number;
}

/**
 * `pilot-registry beacon`: a beacon whose key source is a registry client. Disclosure follows the
 * registry's rule when the client offers it, otherwise only public targets are disclosed in punch
 * commands (private nodes still reach each other through relay). Unsigned v1 discovers bind when they
 * come from the endpoint the registry publishes for the node.
 */
export async function startStandaloneBeacon(opts: StandaloneBeaconOptions): Promise<BeaconServer> {
  const { registry, cacheTtlMs, negativeTtlMs, cacheSize, ...rest } = opts;
  const cache = new LookupCache(registry, {
    ttlMs: cacheTtlMs ?? 30_000,
    negativeTtlMs: negativeTtlMs ?? 5_000,
    maxEntries: cacheSize ?? 65_536,
    clock: opts.clock ?? { now: () => Date.now() },
  });
  const beacon = new BeaconServer({
    ...rest,
    publicKeyOf: async (nodeId) => publicKeyFrom(await cache.get(nodeId)),
    canDisclose:
      rest.canDisclose ??
      (registry.canDisclose
        ? (a, b) => registry.canDisclose!(a, b)
        : async (_a, target) => (await cache.get(target))?.public === true),
    registeredEndpointOf: rest.registeredEndpointOf ?? (async (nodeId) => endpointFrom(await cache.get(nodeId))),
  });
  await beacon.listen();
  return beacon;
}

/** Bounded TTL cache over `lookup`, with concurrent look-ups for one node coalesced. */
export class LookupCache {
  private readonly entries = new Map<number, { rec: LookupRecord | null; expiresAt: number }>();
  private readonly inflight = new Map<number, Promise<LookupRecord | null>>();

  constructor(
    private readonly registry: Pick<RegistryLookup, 'lookup'>,
    private readonly o: { ttlMs: number; negativeTtlMs: number; maxEntries: number; clock: BeaconClock },
  ) {}

  async get(nodeId: number): Promise<LookupRecord | null> {
    const now = this.o.clock.now();
    const hit = this.entries.get(nodeId);
    if (hit !== undefined && hit.expiresAt > now) return hit.rec;
    const pending = this.inflight.get(nodeId);
    if (pending) return pending;
    const p = this.registry.lookup(nodeId).then(
      (rec) => {
        this.inflight.delete(nodeId);
        this.store(nodeId, rec ?? null);
        return rec ?? null;
      },
      (err: unknown) => {
        this.inflight.delete(nodeId);
        throw err;
      },
    );
    this.inflight.set(nodeId, p);
    return p;
  }

  get size(): number {
    return this.entries.size;
  }

  private store(nodeId: number, rec: LookupRecord | null): void {
    const now = this.o.clock.now();
    this.entries.delete(nodeId);
    if (this.entries.size >= this.o.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(nodeId, { rec, expiresAt: now + (rec && rec.public_key ? this.o.ttlMs : this.o.negativeTtlMs) });
  }
}

function publicKeyFrom(rec: LookupRecord | null): Buffer | null {
  if (!rec || typeof rec.public_key !== 'string') return null;
  try {
    const key = decodeB64Strict(rec.public_key, 'public_key');
    return key.length === 32 ? key : null;
  } catch {
    return null;
  }
}

function endpointFrom(rec: LookupRecord | null): Endpoint | null {
  const text = rec?.real_addr;
  if (typeof text !== 'string') return null;
  const i = text.lastIndexOf(':');
  if (i <= 0) return null;
  const host = text.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(text.slice(i + 1));
  if (ipToBytes(host) === null || !Number.isInteger(port) || port < 1 || port > 0xffff) return null;
  return { address: host, port };
}
