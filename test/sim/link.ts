import { TransportHost, type HostOptions } from '../../transport/host.js';
import { VirtualClock } from './virtual-clock.js';

/** One direction of a simulated path. */
export interface LinkConfig {
  /** One-way propagation delay, ms. */
  delayMs: number;
  /** Extra uniformly random delay in [0, jitterMs) per packet (reorders packets). */
  jitterMs: number;
  /** Drop probability per packet. */
  loss: number;
  /** Probability a packet is delivered twice. */
  duplicate: number;
  /** Probability a packet is held back by an extra random delay in [0, reorderDelayMs). */
  reorder: number;
  reorderDelayMs: number;
  /** Bottleneck rate in bytes per ms (0 = unlimited). */
  bandwidth: number;
  /** Bottleneck queue in bytes; a packet that would queue beyond it is dropped (tail drop). */
  queueBytes: number;
  /** Largest UDP payload the path carries (0 = no limit); larger packets are dropped silently. */
  mtu: number;
  /** Tunnel bytes added to each Pilot packet when checking the MTU. */
  overhead: number;
}

export const DEFAULT_LINK: LinkConfig = {
  delayMs: 0,
  jitterMs: 0,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderDelayMs: 0,
  bandwidth: 0,
  queueBytes: 1 << 20,
  mtu: 0,
  overhead: 36,
};

export interface LinkStats {
  sent: number;
  delivered: number;
  droppedLoss: number;
  droppedMtu: number;
  droppedQueue: number;
  duplicated: number;
  bytes: number;
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Direction {
  busyUntil = 0;
  readonly stats: LinkStats = { sent: 0, delivered: 0, droppedLoss: 0, droppedMtu: 0, droppedQueue: 0, duplicated: 0, bytes: 0 };
  constructor(public cfg: LinkConfig) {}
}

/** Observe (and optionally drop: return false) every packet entering the network. */
export type Tap = (from: number, to: number, packet: Buffer) => boolean | void;

/**
 * A network of TransportHosts connected by simulated links: each host's `output` goes through the link
 * model (loss, duplication, delay/jitter/reordering, bandwidth + queue, MTU) into the other host's
 * `input`, all on one VirtualClock with seeded randomness.
 */
export class SimNetwork {
  readonly clock: VirtualClock;
  readonly hosts = new Map<number, TransportHost>();
  private readonly dirs = new Map<string, Direction>();
  private readonly random: () => number;
  defaultLink: LinkConfig;
  taps: Tap[] = [];
  /** Scripted peers that are not TransportHosts (e.g. a v1 peer emulator): node → packet handler. */
  readonly raw = new Map<number, (packet: Buffer, from: number) => void>();

  constructor(opts: { seed?: number; clock?: VirtualClock; link?: Partial<LinkConfig> } = {}) {
    this.clock = opts.clock ?? new VirtualClock();
    this.random = rng(opts.seed ?? 1);
    this.defaultLink = { ...DEFAULT_LINK, ...(opts.link ?? {}) };
  }

  addHost(node: number, opts: Partial<Omit<HostOptions, 'localNode' | 'output' | 'clock'>> = {}): TransportHost {
    const r = rng(node * 7919 + 17);
    const host = new TransportHost({
      random: r,
      ...opts,
      localNode: node,
      clock: this.clock,
      output: (peer, pkt) => this.send(node, peer, pkt),
    });
    this.hosts.set(node, host);
    return host;
  }

  /** Register a scripted peer; send from it with `inject`. */
  addRaw(node: number, handler: (packet: Buffer, from: number) => void): void {
    this.raw.set(node, handler);
  }

  /** Send a packet from any node (e.g. a scripted peer) through the link model. */
  inject(from: number, to: number, packet: Buffer): void {
    this.send(from, to, packet);
  }

  /** Configure the path a→b (and b→a unless `symmetric` is false). */
  setLink(a: number, b: number, cfg: Partial<LinkConfig>, symmetric = true): void {
    this.dir(a, b).cfg = { ...this.dir(a, b).cfg, ...cfg };
    if (symmetric) this.dir(b, a).cfg = { ...this.dir(b, a).cfg, ...cfg };
  }

  linkStats(a: number, b: number): LinkStats {
    return this.dir(a, b).stats;
  }

  async closeAll(): Promise<void> {
    for (const h of this.hosts.values()) await h.close();
  }

  private dir(a: number, b: number): Direction {
    const k = `${a}>${b}`;
    let d = this.dirs.get(k);
    if (!d) {
      d = new Direction({ ...this.defaultLink });
      this.dirs.set(k, d);
    }
    return d;
  }

  private send(from: number, to: number, pkt: Buffer): void {
    for (const tap of this.taps) if (tap(from, to, pkt) === false) return;
    const d = this.dir(from, to);
    const c = d.cfg;
    d.stats.sent++;
    d.stats.bytes += pkt.length;
    if (c.mtu > 0 && pkt.length + c.overhead > c.mtu) {
      d.stats.droppedMtu++;
      return;
    }
    if (c.loss > 0 && this.random() < c.loss) {
      d.stats.droppedLoss++;
      return;
    }
    const now = this.clock.now();
    let depart = now;
    if (c.bandwidth > 0) {
      const start = d.busyUntil > now ? d.busyUntil : now;
      if ((start - now) * c.bandwidth + pkt.length > c.queueBytes) {
        d.stats.droppedQueue++;
        return;
      }
      depart = start + pkt.length / c.bandwidth;
      d.busyUntil = depart;
    }
    let at = depart + c.delayMs;
    if (c.jitterMs > 0) at += this.random() * c.jitterMs;
    if (c.reorder > 0 && this.random() < c.reorder) at += this.random() * c.reorderDelayMs;
    this.deliverAt(from, to, pkt, at - now, d);
    if (c.duplicate > 0 && this.random() < c.duplicate) {
      d.stats.duplicated++;
      this.deliverAt(from, to, pkt, at - now + this.random() * Math.max(1, c.delayMs), d);
    }
  }

  private deliverAt(from: number, to: number, pkt: Buffer, delay: number, d: Direction): void {
    this.clock.setTimer(() => {
      const h = this.hosts.get(to);
      d.stats.delivered++;
      if (h) h.input(pkt, from);
      else this.raw.get(to)?.(pkt, from);
    }, delay);
  }
}
