/**
 * The local trust store, persisted as v1 `trust.json` (wire reference §1.15) so an existing `~/.pilot`
 * keeps its trust relationships:
 *   {"trusted":[{node_id, public_key, approved_at (RFC3339), mutual, network?}],
 *    "pending":[{node_id, public_key?, justification?, received_at}]}
 * We add an `outgoing` list (requests we sent and still wait for); v1 ignores unknown keys.
 *
 * Every mutation is written atomically (temp file + fsync + rename) before the method resolves, and
 * mutations are serialised so the file always reflects a prefix of them.
 */
import { readFile } from 'node:fs/promises';
import { PilotError } from '../../transport/errors.js';
import { writeFileAtomic } from '../datadir.js';

/** Trust store problems. Codes: `bad_trust_file`, `trust_unreadable`, `not_found`. */
export class TrustError extends PilotError {}

export interface TrustedPeer {
  node_id: number;
  /** b64 Ed25519; may be '' when learned through the registry relay before a key backfill. */
  public_key: string;
  /** RFC3339 */
  approved_at: string;
  mutual: boolean;
  network?: number;
}

export interface PendingRequest {
  node_id: number;
  public_key?: string;
  justification?: string;
  /** RFC3339 */
  received_at: string;
}

export interface OutgoingRequest {
  node_id: number;
  /** RFC3339 */
  sent_at: string;
}

export interface TrustStoreOptions {
  /** Pending requests kept; new ones beyond this are refused (counted) so a flood cannot evict real ones. */
  maxPending?: number;
  /** Outgoing requests tracked; the oldest is forgotten beyond this. */
  maxOutgoing?: number;
  /** Outgoing requests older than this are forgotten (default 30 days). */
  outgoingTtlMs?: number;
  now?: () => number;
}

export interface ParsedTrustFile {
  trusted: TrustedPeer[];
  pending: PendingRequest[];
  outgoing: OutgoingRequest[];
  /** Entries that were not understood and dropped. */
  skipped: number;
}

const MAX_TEXT = 4096;

function nodeIdOf(v: unknown): number | null {
  const n = typeof v === 'string' && /^[0-9]{1,10}$/.test(v) ? Number(v) : v;
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff ? n : null;
}

function timeText(v: unknown): string | null {
  if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return v;
  if (typeof v === 'number' && Number.isFinite(v)) return rfc3339(v * 1000); // tolerate unix seconds
  return null;
}

/** RFC3339 UTC without fractional seconds (what Go's time.RFC3339 layout prints for UTC). */
export function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** Unix seconds of an RFC3339 text (0 when unparsable). */
export function unixSeconds(text: string): number {
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? 0 : Math.floor(ms / 1000);
}

/** Interpret a trust.json document leniently: unknown fields ignored, bad entries skipped and counted. */
export function parseTrustFile(doc: unknown): ParsedTrustFile {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new TrustError('bad_trust_file', 'trust file must be a JSON object');
  const d = doc as Record<string, unknown>;
  const out: ParsedTrustFile = { trusted: [], pending: [], outgoing: [], skipped: 0 };
  const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : v == null ? [] : (out.skipped++, []));
  const seenT = new Map<number, TrustedPeer>();
  for (const e of list(d.trusted)) {
    const o = (e ?? {}) as Record<string, unknown>;
    const id = nodeIdOf(o.node_id);
    if (id === null || typeof o !== 'object') {
      out.skipped++;
      continue;
    }
    const p: TrustedPeer = {
      node_id: id,
      public_key: typeof o.public_key === 'string' ? o.public_key : '',
      approved_at: timeText(o.approved_at) ?? rfc3339(0),
      mutual: o.mutual === true,
    };
    const net = nodeIdOf(o.network);
    if (net !== null && net <= 0xffff && o.network !== undefined) p.network = net;
    seenT.set(id, p);
  }
  const seenP = new Map<number, PendingRequest>();
  for (const e of list(d.pending)) {
    const o = (e ?? {}) as Record<string, unknown>;
    const id = nodeIdOf(o.node_id);
    if (id === null || seenT.has(id)) {
      out.skipped++;
      continue;
    }
    const p: PendingRequest = { node_id: id, received_at: timeText(o.received_at) ?? rfc3339(0) };
    if (typeof o.public_key === 'string' && o.public_key !== '') p.public_key = o.public_key;
    if (typeof o.justification === 'string' && o.justification !== '') p.justification = o.justification.slice(0, MAX_TEXT);
    seenP.set(id, p);
  }
  const seenO = new Map<number, OutgoingRequest>();
  for (const e of list(d.outgoing)) {
    const o = (e ?? {}) as Record<string, unknown>;
    const id = nodeIdOf(o.node_id);
    const at = timeText(o.sent_at);
    if (id === null || at === null || seenT.has(id)) {
      out.skipped++;
      continue;
    }
    seenO.set(id, { node_id: id, sent_at: at });
  }
  out.trusted = [...seenT.values()];
  out.pending = [...seenP.values()];
  out.outgoing = [...seenO.values()];
  return out;
}

export class TrustStore {
  private readonly trustedMap = new Map<number, TrustedPeer>();
  private readonly pendingMap = new Map<number, PendingRequest>();
  private readonly outgoingMap = new Map<number, OutgoingRequest>();
  private readonly maxPending: number;
  private readonly maxOutgoing: number;
  private readonly outgoingTtl: number;
  private readonly now: () => number;
  private chain: Promise<unknown> = Promise.resolve();
  readonly stats = { pendingRefused: 0, saves: 0, skippedOnLoad: 0 };

  private constructor(readonly path: string, opts: TrustStoreOptions) {
    this.maxPending = opts.maxPending ?? 1024;
    this.maxOutgoing = opts.maxOutgoing ?? 1024;
    this.outgoingTtl = opts.outgoingTtlMs ?? 30 * 24 * 3600 * 1000;
    this.now = opts.now ?? Date.now;
  }

  /** Load `path` (a missing file is an empty store). Throws TrustError for an unreadable or non-JSON file. */
  static async open(path: string, opts: TrustStoreOptions = {}): Promise<TrustStore> {
    const store = new TrustStore(path, opts);
    let text: string | null = null;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new TrustError('trust_unreadable', `cannot read trust store ${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (text !== null && text.trim() !== '') {
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch (err) {
        throw new TrustError('bad_trust_file', `trust store ${path} is not valid JSON`, { cause: err });
      }
      const parsed = parseTrustFile(doc);
      store.stats.skippedOnLoad = parsed.skipped;
      for (const p of parsed.trusted) store.trustedMap.set(p.node_id, p);
      for (const p of parsed.pending.slice(0, store.maxPending)) store.pendingMap.set(p.node_id, p);
      for (const o of parsed.outgoing.slice(-store.maxOutgoing)) store.outgoingMap.set(o.node_id, o);
    }
    return store;
  }

  // ----- queries -----------------------------------------------------------------------------------

  isTrusted(node: number): boolean {
    return this.trustedMap.has(node);
  }
  getTrusted(node: number): TrustedPeer | undefined {
    return this.trustedMap.get(node);
  }
  getPending(node: number): PendingRequest | undefined {
    return this.pendingMap.get(node);
  }
  listTrusted(): TrustedPeer[] {
    return [...this.trustedMap.values()];
  }
  listPending(): PendingRequest[] {
    return [...this.pendingMap.values()];
  }
  hasOutgoing(node: number): boolean {
    const o = this.outgoingMap.get(node);
    return !!o && this.now() - Date.parse(o.sent_at) < this.outgoingTtl;
  }
  listOutgoing(): OutgoingRequest[] {
    return [...this.outgoingMap.values()];
  }

  // ----- mutations (each persisted before resolving) -----------------------------------------------

  /** Trust `peer` (replacing any previous entry); clears its pending and outgoing entries. */
  trust(peer: { node_id: number; public_key: string; mutual: boolean; network?: number }): Promise<TrustedPeer> {
    return this.mutate(() => {
      const prev = this.trustedMap.get(peer.node_id);
      const p: TrustedPeer = {
        node_id: peer.node_id,
        public_key: peer.public_key || prev?.public_key || '',
        approved_at: rfc3339(this.now()),
        mutual: peer.mutual || prev?.mutual === true,
      };
      if (peer.network !== undefined) p.network = peer.network;
      else if (prev?.network !== undefined) p.network = prev.network;
      this.trustedMap.set(p.node_id, p);
      this.pendingMap.delete(p.node_id);
      this.outgoingMap.delete(p.node_id);
      return p;
    });
  }

  /** Fill in a trusted peer's public key learned later (registry lookup backfill). */
  setPublicKey(node: number, publicKey: string): Promise<boolean> {
    return this.mutate(() => {
      const p = this.trustedMap.get(node);
      if (!p || p.public_key === publicKey) return false;
      p.public_key = publicKey;
      return true;
    });
  }

  /**
   * Record an incoming request. Returns false (nothing stored) when the node is already trusted or the
   * pending list is full; a repeated request from the same node refreshes its entry.
   */
  addPending(req: { node_id: number; public_key?: string; justification?: string }): Promise<boolean> {
    return this.mutate(() => {
      if (this.trustedMap.has(req.node_id)) return false;
      if (!this.pendingMap.has(req.node_id) && this.pendingMap.size >= this.maxPending) {
        this.stats.pendingRefused++;
        return false;
      }
      const p: PendingRequest = { node_id: req.node_id, received_at: rfc3339(this.now()) };
      if (req.public_key) p.public_key = req.public_key;
      if (req.justification) p.justification = req.justification.slice(0, MAX_TEXT);
      this.pendingMap.set(req.node_id, p);
      return true;
    });
  }

  /** Pending → trusted (mutual=false). null when there is no pending request from `node`. */
  approve(node: number): Promise<TrustedPeer | null> {
    return this.mutate(() => {
      const req = this.pendingMap.get(node);
      if (!req) return null;
      this.pendingMap.delete(node);
      const p: TrustedPeer = { node_id: node, public_key: req.public_key ?? '', approved_at: rfc3339(this.now()), mutual: false };
      this.trustedMap.set(node, p);
      this.outgoingMap.delete(node);
      return p;
    });
  }

  /** Drop a pending request. null when there was none. */
  reject(node: number): Promise<PendingRequest | null> {
    return this.mutate(() => {
      const req = this.pendingMap.get(node) ?? null;
      this.pendingMap.delete(node);
      return req;
    });
  }

  /** Remove trust. null when `node` was not trusted. */
  revoke(node: number): Promise<TrustedPeer | null> {
    return this.mutate(() => {
      const p = this.trustedMap.get(node) ?? null;
      this.trustedMap.delete(node);
      this.outgoingMap.delete(node);
      return p;
    });
  }

  markOutgoing(node: number): Promise<void> {
    return this.mutate(() => {
      this.outgoingMap.delete(node);
      this.outgoingMap.set(node, { node_id: node, sent_at: rfc3339(this.now()) });
      while (this.outgoingMap.size > this.maxOutgoing) this.outgoingMap.delete(this.outgoingMap.keys().next().value!);
    });
  }

  clearOutgoing(node: number): Promise<boolean> {
    return this.mutate(() => this.outgoingMap.delete(node));
  }

  /** The document written to disk. */
  toJSON(): { trusted: TrustedPeer[]; pending: PendingRequest[]; outgoing: OutgoingRequest[] } {
    const now = this.now();
    return {
      trusted: this.listTrusted(),
      pending: this.listPending(),
      outgoing: this.listOutgoing().filter((o) => now - Date.parse(o.sent_at) < this.outgoingTtl),
    };
  }

  /** Wait for every queued write. */
  flush(): Promise<void> {
    return this.chain.then(() => {});
  }

  private mutate<T>(fn: () => T): Promise<T> {
    const run = async (): Promise<T> => {
      const result = fn();
      await writeFileAtomic(this.path, JSON.stringify(this.toJSON(), null, 2) + '\n', 0o600);
      this.stats.saves++;
      return result;
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => {});
    return p;
  }
}
