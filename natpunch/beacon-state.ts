/**
 * The beacon's bounded tables: node bindings (node ID → proven UDP endpoint), the signed-discover replay
 * guard, and the node sets peer beacons gossip to us. All time values are ms from the injected clock.
 */

export interface Binding {
  address: string;
  port: number;
  expiresAt: number;
  /** Bound by proof of key (signed discover or the registry's record), not by a legacy unsigned discover. */
  proven: boolean;
}

export type BindResult = 'bound' | 'refreshed' | 'moved' | 'steal_refused' | 'full';

export class BindingTable {
  private readonly map = new Map<number, Binding>();
  private lastFullSweep = -Infinity;

  constructor(
    private readonly maxBindings: number,
    private readonly ttlMs: number,
  ) {}

  /** The live binding for `nodeId`, or undefined (expired entries count as absent). */
  get(nodeId: number, now: number): Binding | undefined {
    const b = this.map.get(nodeId);
    if (b === undefined) return undefined;
    if (b.expiresAt <= now) {
      this.map.delete(nodeId);
      return undefined;
    }
    return b;
  }

  /**
   * Bind or refresh. A legacy (unproven) claim never replaces a live proven binding: a v1 peer cannot
   * steal the endpoint of a node that proved its key. When full, new nodes are refused rather than
   * evicting live bindings.
   */
  bind(nodeId: number, address: string, port: number, proven: boolean, now: number): BindResult {
    const b = this.get(nodeId, now);
    if (b !== undefined) {
      if (b.proven && !proven) return 'steal_refused';
      const moved = b.address !== address || b.port !== port;
      b.address = address;
      b.port = port;
      b.proven = proven;
      b.expiresAt = now + this.ttlMs;
      return moved ? 'moved' : 'refreshed';
    }
    if (this.map.size >= this.maxBindings) {
      // Sweep at most once a second when full, so a flood of new IDs cannot make every insert O(n).
      if (now - this.lastFullSweep >= 1000) {
        this.lastFullSweep = now;
        this.sweep(now);
      }
      if (this.map.size >= this.maxBindings) return 'full';
    }
    this.map.set(nodeId, { address, port, proven, expiresAt: now + this.ttlMs });
    return 'bound';
  }

  refresh(b: Binding, now: number): void {
    b.expiresAt = now + this.ttlMs;
  }

  /** Drop expired bindings; returns how many. */
  sweep(now: number): number {
    let n = 0;
    for (const [id, b] of this.map) {
      if (b.expiresAt <= now) {
        this.map.delete(id);
        n++;
      }
    }
    return n;
  }

  /** IDs of live bindings (for gossip). */
  liveIds(now: number): number[] {
    const out: number[] = [];
    for (const [id, b] of this.map) if (b.expiresAt > now) out.push(id);
    return out;
  }

  get size(): number {
    return this.map.size;
  }
}

/**
 * Replay guard for signed discovers: the highest timestamp accepted per node. A discover is fresh only
 * if its timestamp is newer, so a captured discover can never be replayed (from any address). Entries
 * older than the skew window carry no information (such timestamps are rejected as stale) and are swept.
 */
export class ReplayGuard {
  private readonly last = new Map<number, number>();
  private lastFullSweep = -Infinity;

  constructor(
    private readonly maxEntries: number,
    private readonly skewMs: number,
  ) {}

  isFresh(nodeId: number, ts: number): boolean {
    const prev = this.last.get(nodeId);
    return prev === undefined || ts > prev;
  }

  /** Record `ts` as accepted; false if it is not fresh or the guard is full (then refuse to bind). */
  accept(nodeId: number, ts: number, now: number): boolean {
    const prev = this.last.get(nodeId);
    if (prev !== undefined) {
      if (ts <= prev) return false;
      this.last.set(nodeId, ts);
      return true;
    }
    if (this.last.size >= this.maxEntries) {
      if (now - this.lastFullSweep >= 1000) {
        this.lastFullSweep = now;
        this.sweep(now);
      }
      if (this.last.size >= this.maxEntries) return false;
    }
    this.last.set(nodeId, ts);
    return true;
  }

  sweep(now: number): void {
    const horizon = now - this.skewMs;
    for (const [id, ts] of this.last) if (ts < horizon) this.last.delete(id);
  }

  get size(): number {
    return this.last.size;
  }
}

/** A peer beacon as we send to it (`address` in the socket's family) and recognise it (`key`). */
export interface PeerRef {
  key: string;
  address: string;
  port: number;
}

interface PeerNodes {
  peer: PeerRef;
  beaconId: number;
  nodes: Set<number>;
  lastAt: number;
}

/**
 * Node IDs that peer beacons say are bound at them (wire reference §1.9 Sync). A sync replaces the set
 * attributed to its sender; datagrams arriving within `roundGapMs` of the previous one from the same peer
 * are parts of the same round (large sets are split) and are merged instead. Sets expire after `ttlMs`.
 */
export class RemoteNodes {
  private readonly byPeer = new Map<string, PeerNodes>();
  private readonly index = new Map<number, PeerNodes>();

  constructor(
    private readonly maxNodes: number,
    private readonly ttlMs: number,
    private readonly roundGapMs: number,
  ) {}

  /** Apply one sync datagram. Returns how many IDs were refused because the table is full. */
  apply(peer: PeerRef, beaconId: number, nodeIds: readonly number[], now: number): number {
    let st = this.byPeer.get(peer.key);
    if (st === undefined) {
      st = { peer, beaconId, nodes: new Set(), lastAt: now };
      this.byPeer.set(peer.key, st);
    } else if (now - st.lastAt > this.roundGapMs || st.beaconId !== beaconId) {
      this.clear(st);
    }
    st.lastAt = now;
    st.beaconId = beaconId;
    let refused = 0;
    for (const id of nodeIds) {
      if (!this.index.has(id) && this.index.size >= this.maxNodes) {
        refused++;
        continue;
      }
      st.nodes.add(id);
      this.index.set(id, st);
    }
    return refused;
  }

  /** The peer beacon that has `nodeId`, if its last sync is recent enough. */
  lookup(nodeId: number, now: number): PeerRef | undefined {
    const st = this.index.get(nodeId);
    if (st === undefined || now - st.lastAt > this.ttlMs) return undefined;
    return st.peer;
  }

  sweep(now: number): void {
    for (const [key, st] of this.byPeer) {
      if (now - st.lastAt > this.ttlMs) {
        this.clear(st);
        this.byPeer.delete(key);
      }
    }
  }

  /** Forget everything learned from peers no longer in `keys`. */
  retainPeers(keys: ReadonlySet<string>): void {
    for (const [key, st] of this.byPeer) {
      if (!keys.has(key)) {
        this.clear(st);
        this.byPeer.delete(key);
      }
    }
  }

  get size(): number {
    return this.index.size;
  }

  private clear(st: PeerNodes): void {
    for (const id of st.nodes) if (this.index.get(id) === st) this.index.delete(id);
    st.nodes.clear();
  }
}
