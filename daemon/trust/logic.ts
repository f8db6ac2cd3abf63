/**
 * The trust handshake state machine (wire reference §1.11) against injected side effects, so the daemon
 * plugs in its registry client, dialer and peer manager, and tests use fakes.
 *
 * Inbound (direct on port 444, verified by {@link HandshakeVerifier}, or relayed by the registry):
 * - request: already trusted → answer accept; we asked them too → mutual auto-approve; shared
 *   non-backbone network → auto-approve; else pending (persisted) for the user.
 * - accept: trusted (mutual) only if we have an outgoing request to that node; unsolicited accepts are ignored.
 * - reject: forget our outgoing request.  - revoke: drop trust, tear down the tunnel, `revoke_trust`.
 * User actions (IPC / pilotctl): request, approve, reject, revoke, pending, trusted.
 *
 * State changes are persisted before a method resolves; network side effects (registry calls, direct
 * messages) run in the background, are logged on failure and never block the caller — except the
 * request path, which reports failure when neither the direct send nor the registry relay worked.
 */
import type { Duplex } from 'node:stream';
import { Ports } from '../../transport/address.js';
import type { HandshakePendingEntry, HandshakeTrustedEntry } from '../ipc/protocol.js';
import { finish } from '../services/conns.js';
import { silentLogger, type ServiceContext, type ServiceLogger } from '../services/types.js';
import { HANDSHAKE_MAX_BYTES, HandshakeError, createHandshakeMessage, type HandshakeMessage, type HandshakeType, type HandshakeVerifier } from './handshake.js';
import { TrustError, unixSeconds, type TrustStore } from './store.js';

export interface HandshakeEffects {
  /** Deliver `msg` to `peer`:444 directly (dial, one write, close ~500 ms later). Rejects if unreachable. */
  sendDirect(peer: number, msg: HandshakeMessage): Promise<void>;
  /** Registry `request_handshake` (signed `handshake:<self>:<peer>`). */
  requestHandshake(peer: number, justification: string): Promise<void>;
  /** Registry `respond_handshake` (signed `respond:<self>:<peer>`). */
  respondHandshake(peer: number, accept: boolean): Promise<void>;
  /** Registry `report_trust`. */
  reportTrust(peer: number): Promise<void>;
  /** Registry `revoke_trust`. */
  revokeTrust(peer: number): Promise<void>;
  /** Registry `lookup` → b64 public key, or null. */
  lookupPublicKey(peer: number): Promise<string | null>;
  /** Close sessions and the tunnel/crypto context with `peer` (SPEC §5: within one second). */
  tearDownPeer(peer: number): void | Promise<void>;
  /** Webhook event sink. */
  emit(event: string, data: Record<string, unknown>): void;
  /** Network ID of a non-backbone network shared with `peer`, or null (auto-approval). */
  sharedNetwork?(peer: number): number | null;
}

export interface HandshakeLogicOptions {
  selfNode: () => number;
  signer: { sign(message: string): Uint8Array; publicKeyB64: string };
  store: TrustStore;
  verifier: HandshakeVerifier;
  effects: HandshakeEffects;
  logger?: ServiceLogger;
  now?: () => number;
  /** How long port-444 waits for the message (default 10 s). */
  readTimeoutMs?: number;
}

export interface RelayedRequest {
  from_node_id: number;
  justification?: string;
  timestamp?: number;
}
export interface RelayedResponse {
  from_node_id: number;
  accept: boolean;
  timestamp?: number;
}

export type HandshakeStatus = { status: 'sent' | 'approved' | 'rejected' | 'revoked'; node_id: number };

export class HandshakeLogic {
  readonly name = 'handshake';
  readonly port = Ports.HANDSHAKE;
  private readonly log: ServiceLogger;
  private readonly now: () => number;
  private readonly background = new Set<Promise<unknown>>();
  private readonly conns = new Set<Duplex>();
  private closed = false;
  readonly stats = { received: 0, rejectedMessages: 0, unsolicited: 0, sideEffectFailures: 0 };

  constructor(private readonly opts: HandshakeLogicOptions) {
    this.log = opts.logger ?? silentLogger;
    this.now = opts.now ?? Date.now;
  }

  private get fx(): HandshakeEffects {
    return this.opts.effects;
  }
  private get store(): TrustStore {
    return this.opts.store;
  }

  // ----- user actions ------------------------------------------------------------------------------

  /** Ask `peer` for trust: direct message, falling back to the registry relay. */
  async request(peer: number, justification: string): Promise<HandshakeStatus> {
    this.checkPeer(peer);
    if (this.store.isTrusted(peer)) return { status: 'sent', node_id: peer };
    await this.store.markOutgoing(peer);
    const msg = this.message('handshake_request', peer, { justification });
    try {
      await this.fx.sendDirect(peer, msg);
      return { status: 'sent', node_id: peer };
    } catch (direct) {
      this.log.info({ peer, err: (direct as Error).message }, 'handshake: direct send failed, relaying through the registry');
    }
    try {
      await this.fx.requestHandshake(peer, justification);
    } catch (err) {
      throw new TrustError('unreachable', `could not deliver the handshake to node ${peer} directly or through the registry: ${(err as Error).message}`, { cause: err });
    }
    return { status: 'sent', node_id: peer };
  }

  async approve(peer: number): Promise<HandshakeStatus> {
    const p = await this.store.approve(peer);
    if (!p) throw new TrustError('not_found', `no pending handshake from node ${peer}`);
    this.fx.emit('handshake.approved', { node_id: peer });
    if (!p.public_key) this.bg('lookup', () => this.backfillKey(peer));
    this.bg('report_trust', () => this.fx.reportTrust(peer));
    this.bg('respond_handshake', () => this.fx.respondHandshake(peer, true));
    this.bg('direct accept', () => this.fx.sendDirect(peer, this.message('handshake_accept', peer)));
    return { status: 'approved', node_id: peer };
  }

  async reject(peer: number, reason: string): Promise<HandshakeStatus> {
    const p = await this.store.reject(peer);
    if (!p) throw new TrustError('not_found', `no pending handshake from node ${peer}`);
    this.fx.emit('handshake.rejected', { node_id: peer, reason });
    this.bg('respond_handshake', () => this.fx.respondHandshake(peer, false));
    this.bg('direct reject', () => this.fx.sendDirect(peer, this.message('handshake_reject', peer, { reason })));
    return { status: 'rejected', node_id: peer };
  }

  async revoke(peer: number): Promise<HandshakeStatus> {
    const p = await this.store.revoke(peer);
    if (!p) throw new TrustError('not_found', `node ${peer} is not trusted`);
    await this.tearDown(peer);
    this.fx.emit('trust.revoked', { node_id: peer });
    this.bg('revoke_trust', () => this.fx.revokeTrust(peer));
    this.bg('direct revoke', () => this.fx.sendDirect(peer, this.message('handshake_revoke', peer)));
    return { status: 'revoked', node_id: peer };
  }

  /** HandshakeOK `pending` entries (times in unix seconds). */
  pending(): HandshakePendingEntry[] {
    return this.store.listPending().map((p) => ({
      node_id: p.node_id,
      public_key: p.public_key ?? '',
      justification: p.justification ?? '',
      received_at: unixSeconds(p.received_at),
    }));
  }

  /** HandshakeOK `trusted` entries (times in unix seconds). */
  trusted(): HandshakeTrustedEntry[] {
    return this.store.listTrusted().map((p) => ({
      node_id: p.node_id,
      public_key: p.public_key,
      approved_at: unixSeconds(p.approved_at),
      mutual: p.mutual,
      network: p.network ?? 0,
    }));
  }

  // ----- inbound -----------------------------------------------------------------------------------

  /** Apply a verified direct message. */
  async onMessage(m: HandshakeMessage): Promise<void> {
    const peer = m.node_id;
    this.stats.received++;
    switch (m.type) {
      case 'handshake_request':
        return this.onRequest(peer, m.justification, m.public_key, 'direct');
      case 'handshake_accept':
        return this.onAccept(peer, m.public_key);
      case 'handshake_reject':
        return this.onReject(peer, m.reason);
      case 'handshake_revoke':
        return this.onRevoke(peer);
    }
  }

  /** A request the registry relayed (`poll_handshakes` / push). */
  async onRelayedRequest(r: RelayedRequest): Promise<void> {
    this.stats.received++;
    return this.onRequest(r.from_node_id, r.justification ?? '', '', 'relay');
  }

  /** A response the registry relayed. */
  async onRelayedResponse(r: RelayedResponse): Promise<void> {
    this.stats.received++;
    return r.accept ? this.onAccept(r.from_node_id, '') : this.onReject(r.from_node_id, '');
  }

  private async onRequest(peer: number, justification: string, publicKey: string, via: 'direct' | 'relay'): Promise<void> {
    this.fx.emit('handshake.received', { node_id: peer, justification, via });
    const answer = () => {
      if (via === 'direct') this.bg('direct accept', () => this.fx.sendDirect(peer, this.message('handshake_accept', peer)));
      else this.bg('respond_handshake', () => this.fx.respondHandshake(peer, true));
    };
    if (this.store.isTrusted(peer)) {
      if (publicKey && !this.store.getTrusted(peer)?.public_key) await this.store.setPublicKey(peer, publicKey);
      answer();
      return;
    }
    const network = this.fx.sharedNetwork?.(peer) ?? null;
    if (this.store.hasOutgoing(peer) || network !== null) {
      const mutual = this.store.hasOutgoing(peer);
      await this.store.trust({ node_id: peer, public_key: publicKey, mutual, ...(network !== null ? { network } : {}) });
      this.fx.emit('handshake.auto_approved', { node_id: peer, mutual, ...(network !== null ? { network } : {}) });
      if (!publicKey) this.bg('lookup', () => this.backfillKey(peer));
      answer();
      if (via === 'direct') this.bg('report_trust', () => this.fx.reportTrust(peer));
      return;
    }
    const req: { node_id: number; public_key?: string; justification?: string } = { node_id: peer };
    if (publicKey) req.public_key = publicKey;
    if (justification) req.justification = justification;
    if (await this.store.addPending(req)) this.fx.emit('handshake.pending', { node_id: peer, justification });
    else this.log.warn({ peer }, 'handshake: pending list full, request dropped');
  }

  private async onAccept(peer: number, publicKey: string): Promise<void> {
    if (this.store.hasOutgoing(peer)) {
      await this.store.trust({ node_id: peer, public_key: publicKey, mutual: true });
      this.fx.emit('handshake.approved', { node_id: peer, by_peer: true });
      if (!publicKey) this.bg('lookup', () => this.backfillKey(peer));
      return;
    }
    if (!this.store.isTrusted(peer)) {
      this.stats.unsolicited++;
      this.log.info({ peer }, 'handshake: ignoring an accept we never asked for');
    }
  }

  private async onReject(peer: number, reason: string): Promise<void> {
    if (await this.store.clearOutgoing(peer)) this.fx.emit('handshake.rejected', { node_id: peer, reason, by_peer: true });
    else this.stats.unsolicited++;
  }

  private async onRevoke(peer: number): Promise<void> {
    const p = await this.store.revoke(peer);
    if (!p) {
      this.stats.unsolicited++;
      return;
    }
    await this.tearDown(peer);
    this.fx.emit('trust.revoked_by_peer', { node_id: peer });
    this.bg('revoke_trust', () => this.fx.revokeTrust(peer));
  }

  // ----- port 444 ----------------------------------------------------------------------------------

  /** Serve one port-444 connection: read the message (≤4096 bytes), verify, apply, close. Never rejects. */
  async handle(conn: Duplex, ctx: ServiceContext): Promise<void> {
    if (this.closed || this.conns.size >= 256) {
      conn.destroy();
      return;
    }
    this.conns.add(conn);
    conn.on('error', () => {});
    try {
      const raw = await readMessage(conn, this.opts.readTimeoutMs ?? 10_000);
      const m = await this.opts.verifier.verify(raw, ctx.remoteNode);
      await this.onMessage(m);
    } catch (err) {
      this.stats.rejectedMessages++;
      const code = err instanceof HandshakeError || err instanceof TrustError ? err.code : 'error';
      this.log.warn({ remote: ctx.remote, code, err: (err as Error).message }, 'handshake: message refused');
      this.fx.emit('security.handshake_rejected', { from: ctx.remote, code });
    } finally {
      this.conns.delete(conn);
      // The v1 sender closes ~500 ms after its write; close our side gently (FIN, then destroy on a grace timer).
      void finish(conn, 2000);
    }
  }

  /** Wait until background side effects have settled (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await this.idle();
  }

  // ----- helpers -----------------------------------------------------------------------------------

  private message(type: HandshakeType, peer: number, opts: { justification?: string; reason?: string } = {}): HandshakeMessage {
    return createHandshakeMessage(this.opts.signer, type, this.opts.selfNode(), peer, { ...opts, nowMs: this.now() });
  }

  private checkPeer(peer: number): void {
    if (!Number.isInteger(peer) || peer < 0 || peer > 0xffffffff) throw new TrustError('invalid', `invalid node ID ${peer}`);
    if (peer === this.opts.selfNode()) throw new TrustError('invalid', 'cannot handshake with yourself');
  }

  private async tearDown(peer: number): Promise<void> {
    try {
      await this.fx.tearDownPeer(peer);
    } catch (err) {
      this.log.warn({ peer, err: (err as Error).message }, 'handshake: tearing down the peer failed');
    }
  }

  private async backfillKey(peer: number): Promise<void> {
    const key = await this.fx.lookupPublicKey(peer);
    if (key) await this.store.setPublicKey(peer, key);
  }

  private bg(what: string, fn: () => Promise<unknown>): void {
    const p = (async () => {
      try {
        await fn();
      } catch (err) {
        this.stats.sideEffectFailures++;
        this.log.warn({ what, err: (err as Error)?.message }, 'handshake: side effect failed');
      }
    })();
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }
}

/**
 * Read one handshake message: v1 sends it as one write and the receiver parses the first segment, so we
 * stop as soon as the bytes parse as JSON, at EOF, or when more than 4096 bytes arrived (too large).
 */
export function readMessage(conn: Duplex, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let total = 0;
    const done = (err: Error | null, buf?: Buffer) => {
      clearTimeout(timer);
      conn.off('data', onData);
      conn.off('end', onEnd);
      conn.off('close', onEnd);
      conn.off('error', onError);
      conn.pause();
      if (err) reject(err);
      else resolve(buf!);
    };
    const onData = (c: Buffer) => {
      total += c.length;
      if (total > HANDSHAKE_MAX_BYTES) return done(new HandshakeError('too_large', `handshake message exceeds ${HANDSHAKE_MAX_BYTES} bytes`));
      parts.push(c);
      const buf = Buffer.concat(parts);
      try {
        JSON.parse(buf.toString('utf8'));
        done(null, buf);
      } catch {
        /* wait for more */
      }
    };
    const onEnd = () => (total === 0 ? done(new HandshakeError('bad_json', 'connection closed before a handshake message')) : done(null, Buffer.concat(parts)));
    const onError = (err: Error) => done(err);
    const timer = setTimeout(() => done(new HandshakeError('bad_json', 'timed out waiting for the handshake message')), timeoutMs);
    timer.unref?.();
    conn.on('data', onData);
    conn.once('end', onEnd);
    conn.once('close', onEnd);
    conn.once('error', onError);
  });
}
