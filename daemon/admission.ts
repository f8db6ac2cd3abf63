/**
 * Admission control (SPEC §5): decides, before any connection state exists, whether an inbound SYN or
 * datagram may reach a local port. Runs synchronously inside the transport's receive path, so every
 * input it needs (trust, membership, port policy) is a cached lookup; the peer manager keeps those
 * caches warm (the key exchange that precedes a SYN already fetched the peer's registry record).
 *
 * Rules, in order:
 *  1. Port 444 (trust handshake) is open to every authenticated peer: the handshake message carries its
 *     own signature and is how an untrusted peer asks for trust in the first place.
 *  2. Destination network N ≠ 0 and both nodes are members of N → N's `allowed_ports` must list the port
 *     (empty list = every port), else refused `port_policy`.
 *  3. Otherwise the source must be trusted (mutual handshake), else refused `untrusted`
 *     (`not_member` when the packet named a network we are not both in).
 * A refusal is dropped silently by the transport (no RST, no SYN-ACK); we count it per reason and append
 * a JSON line to the admission log in the data dir (bounded: rotated to `.1` at `maxLogBytes`).
 */
import { appendFile, rename, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Addr, Ports } from '../transport/address.js';
import { Protocol, type Packet } from '../transport/packet.js';

export interface AdmissionPolicySource {
  /** True if `node` is in our trust store. */
  isTrusted(node: number): boolean;
  /** True if both we and `node` are members of network `net` (net ≠ 0). */
  sharesNetwork(node: number, net: number): boolean;
  /** The network's allowed ports (empty = all), or null if unknown. */
  allowedPorts(net: number): readonly number[] | null;
}

export interface AdmissionOptions {
  policy: AdmissionPolicySource;
  /** Admission log path ('' = no log file). */
  logPath: string;
  /** Rotate the log when it grows past this many bytes (default 1 MiB). */
  maxLogBytes?: number;
  /** Log lines waiting for the disk; beyond this they are dropped and counted (default 1000). */
  maxQueuedLines?: number;
  now?: () => number;
  log?: Logger;
  /** Called for every refusal (webhooks, IPC events). */
  onRefused?: (r: AdmissionRefusal) => void;
}

export interface AdmissionRefusal {
  time: string;
  src: string;
  src_port: number;
  dst_net: number;
  dst_port: number;
  protocol: 'stream' | 'datagram' | 'control';
  rule: string;
  reason: string;
}

export type AdmissionDecision = true | string;

export class Admission {
  readonly refused: Record<string, number> = {};
  refusedTotal = 0;
  admitted = 0;
  logDropped = 0;
  private queued: string[] = [];
  private writing: Promise<void> | null = null;
  private logSize = -1;
  private readonly maxLogBytes: number;
  private readonly maxQueued: number;
  private readonly now: () => number;
  private closed = false;
  private warned = false;

  constructor(private readonly opts: AdmissionOptions) {
    this.maxLogBytes = opts.maxLogBytes ?? 1 << 20;
    this.maxQueued = opts.maxQueuedLines ?? 1000;
    this.now = opts.now ?? Date.now;
  }

  /** The decision alone (no counting, no logging): also used to re-check live sessions after a revoke. */
  decide(src: number, dstNet: number, dstPort: number): { ok: true } | { ok: false; rule: string; reason: string } {
    const p = this.opts.policy;
    if (dstPort === Ports.HANDSHAKE) return { ok: true };
    if (dstNet !== 0 && p.sharesNetwork(src, dstNet)) {
      const allowed = p.allowedPorts(dstNet);
      if (!allowed || allowed.length === 0 || allowed.includes(dstPort)) return { ok: true };
      return { ok: false, rule: `network ${dstNet} allowed_ports`, reason: 'port_policy' };
    }
    if (p.isTrusted(src)) return { ok: true };
    if (dstNet !== 0) return { ok: false, rule: `network ${dstNet} membership`, reason: 'not_member' };
    return { ok: false, rule: 'trust', reason: 'untrusted' };
  }

  /** The transport's admit hook: true, or the refusal reason. Never throws. */
  check = (pkt: Packet): AdmissionDecision => {
    const d = this.decide(pkt.srcNode, pkt.dstNet, pkt.dstPort);
    if (d.ok) {
      this.admitted++;
      return true;
    }
    this.refused[d.reason] = (this.refused[d.reason] ?? 0) + 1;
    this.refusedTotal++;
    const r: AdmissionRefusal = {
      time: new Date(this.now()).toISOString(),
      src: new Addr(pkt.srcNet, pkt.srcNode).toString(),
      src_port: pkt.srcPort,
      dst_net: pkt.dstNet,
      dst_port: pkt.dstPort,
      protocol: pkt.protocol === Protocol.STREAM ? 'stream' : pkt.protocol === Protocol.DATAGRAM ? 'datagram' : 'control',
      rule: d.rule,
      reason: d.reason,
    };
    this.record(r);
    try {
      this.opts.onRefused?.(r);
    } catch {
      /* observers never break admission */
    }
    return d.reason;
  };

  stats(): { admitted: number; refused: Record<string, number>; refused_total: number; log_dropped: number } {
    return { admitted: this.admitted, refused: { ...this.refused }, refused_total: this.refusedTotal, log_dropped: this.logDropped };
  }

  private record(r: AdmissionRefusal): void {
    if (!this.opts.logPath || this.closed) return;
    if (this.queued.length >= this.maxQueued) {
      this.logDropped++;
      if (!this.warned) {
        this.warned = true;
        this.opts.log?.warn({ path: this.opts.logPath }, 'admission log backlog full: dropping lines (counted)');
      }
      return;
    }
    this.queued.push(JSON.stringify(r) + '\n');
    if (!this.writing) this.writing = this.drain();
  }

  private async drain(): Promise<void> {
    const path = this.opts.logPath;
    try {
      while (this.queued.length > 0) {
        const chunk = this.queued.join('');
        this.queued = [];
        if (this.logSize < 0) this.logSize = await stat(path).then((s) => s.size, () => 0);
        if (this.logSize + chunk.length > this.maxLogBytes && this.logSize > 0) {
          await rename(path, `${path}.1`).catch(() => undefined);
          this.logSize = 0;
        }
        await appendFile(path, chunk, { mode: 0o600 });
        this.logSize += Buffer.byteLength(chunk);
      }
    } catch (err) {
      this.opts.log?.warn({ err: (err as Error).message, path }, 'admission log write failed');
      this.queued = [];
    } finally {
      this.writing = null;
    }
  }

  /** Wait for queued log lines to reach the disk. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}
