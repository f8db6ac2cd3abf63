import type { Logger } from 'pino';
import { decodeSignature, requireAdmin, type ReplayGuard } from '../auth.js';
import { RegistryError } from '../errors.js';
import type { RegistryMetrics } from '../metrics.js';
import type { PushEvent } from '../protocol/messages.js';
import { optAdminToken, type JsonObject, type SignedFields } from '../protocol/validate.js';
import type { PushHub } from '../push.js';
import type { RateCategory, RateLimiter } from '../ratelimit.js';
import type { NodeEntry, RegistryState } from '../state.js';
import type { Mutation, RegistryStore } from '../store/types.js';
import type { Verifier } from '../verify-pool.js';
import type { EnterpriseState } from './enterprise-state.js';

/** Injected time source (unix ms), so tests can drive freshness and reaping. */
export interface Clock {
  now(): number;
}

/** What a handler knows about the connection a request came in on. */
export interface ConnInfo {
  readonly id: number;
  /** peer IP (IPv4-mapped IPv6 unwrapped) */
  readonly ip: string;
  readonly port: number;
  readonly tls: boolean;
  /** Turn this connection into a push subscription for `nodeId` once the reply is written. */
  subscribe(nodeId: number): void;
}

/** Settings handlers read (a slice of RegistryConfig). */
export interface HandlerSettings {
  adminToken: string | undefined;
  legacySignatures: boolean;
  keepaliveMs: number;
  beaconTtlMs: number;
}

export interface BeaconInfo {
  addr: string;
  seenMs: number;
}

export type Reply = { type: string };

/**
 * A message handler. `category` is the rate-limit bucket charged before `handle` runs (handlers that
 * need to pick the bucket from the request, like `register`, leave it out and call `ctx.limit`).
 * Handlers validate everything before the first mutation, mutate state synchronously after their last
 * `await`, then `await ctx.commit()` before returning the reply.
 */
export interface Handler {
  readonly category?: RateCategory;
  handle(ctx: HandlerContext, m: JsonObject, conn: ConnInfo): Reply | Promise<Reply>;
}

export type HandlerTable = Map<string, Handler>;

export interface HandlerContextDeps {
  state: RegistryState;
  store: RegistryStore;
  clock: Clock;
  settings: HandlerSettings;
  log: Logger;
  metrics: RegistryMetrics;
  push: PushHub;
  verifier: Verifier;
  replay: ReplayGuard;
  limiter: RateLimiter;
  beacons: Map<number, BeaconInfo>;
  onStoreFailure: (err: Error) => void;
  stats: () => Record<string, unknown>;
  /** enterprise layer (roles, invites, identity rules, key lifecycle) */
  enterprise: EnterpriseState;
}


/** Everything a handler may use; one per server. */
export class HandlerContext {
  readonly state: RegistryState;
  readonly clock: Clock;
  readonly settings: HandlerSettings;
  readonly log: Logger;
  readonly metrics: RegistryMetrics;
  readonly beacons: Map<number, BeaconInfo>;
  readonly enterprise: EnterpriseState;
  private failed = false;

  constructor(private readonly deps: HandlerContextDeps) {
    this.state = deps.state;
    this.clock = deps.clock;
    this.settings = deps.settings;
    this.log = deps.log;
    this.metrics = deps.metrics;
    this.beacons = deps.beacons;
    this.enterprise = deps.enterprise;
  }

  get storeFailed(): boolean {
    return this.failed;
  }

  nowMs(): number {
    return this.deps.clock.now();
  }

  nowSec(): number {
    return Math.floor(this.deps.clock.now() / 1000);
  }

  /** Charge one token of `category` for the caller's IP, or throw `rate_limited`. */
  limit(conn: ConnInfo, category: RateCategory): void {
    if (!this.deps.limiter.take(category, conn.ip, this.nowMs())) {
      this.metrics.rateLimited.labels(category).inc();
      throw new RegistryError('rate_limited', `rate limit for ${category.replace('_', ' ')} requests from ${conn.ip} exceeded; retry later`);
    }
  }

  /** Throws `unauthorized` unless the request carries the configured admin token. */
  requireAdmin(m: JsonObject, what: string): void {
    requireAdmin(this.settings.adminToken, optAdminToken(m), what);
  }

  /** Does the request carry a correct admin token? (No token configured → false.) */
  hasAdmin(m: JsonObject): boolean {
    const given = optAdminToken(m);
    if (given === undefined || !this.settings.adminToken) return false;
    requireAdmin(this.settings.adminToken, given, 'admin request');
    return true;
  }

  /**
   * Verify that `signed` is a fresh signature by `publicKeyB64` over `<challenge>:<ts>` (or the bare
   * v1 challenge in legacy mode) and record it against replays.
   */
  async verifyKey(publicKeyB64: string, challenge: string, signed: SignedFields, who: string): Promise<void> {
    const sig = decodeSignature(signed.signature);
    let message: string;
    if (signed.ts === undefined) {
      if (!this.settings.legacySignatures) {
        this.metrics.signatureChecks.labels('missing_ts').inc();
        throw new RegistryError(
          'bad_signature',
          `missing ts: sign "${challenge}:<ts>" with ts = unix milliseconds (bare v1 signatures need --legacy-signatures)`,
        );
      }
      message = challenge;
    } else {
      try {
        this.deps.replay.check(signed.signature, signed.ts, this.nowMs());
      } catch (err) {
        this.metrics.signatureChecks.labels((err as RegistryError).code).inc();
        throw err;
      }
      message = `${challenge}:${signed.ts}`;
    }
    const ok = await this.deps.verifier.verify(publicKeyB64, message, sig);
    if (!ok) {
      this.metrics.signatureChecks.labels('bad_signature').inc();
      throw new RegistryError('bad_signature', `signature does not verify against ${who}'s public key`);
    }
    if (signed.ts !== undefined && !this.deps.replay.record(signed.signature, signed.ts, this.nowMs())) {
      this.metrics.signatureChecks.labels('replayed_signature').inc();
      throw new RegistryError('replayed_signature', 'signature was already used; sign each request with a fresh ts');
    }
    this.metrics.signatureChecks.labels('ok').inc();
  }

  /**
   * Verify a request signed by registered node `nodeId` (offline nodes included) and return its entry as
   * it is *after* the await, refusing if the key changed meanwhile.
   */
  async verifyNode(nodeId: number, challenge: string, signed: SignedFields, field = 'node'): Promise<NodeEntry> {
    const before = this.state.requireNode(nodeId, field);
    const key = before.publicKey;
    await this.verifyKey(key, challenge, signed, `${field} ${nodeId}`);
    const after = this.state.requireNode(nodeId, field);
    if (after.publicKey !== key) throw new RegistryError('bad_signature', `${field} ${nodeId} rotated its key meanwhile; sign again`);
    this.enterprise.assertKeyUsable(nodeId, this.nowSec(), field); // expired keys are refused everywhere (ENTERPRISE.md)
    return after;
  }

  /** Make mutations durable (fail-stop on store failure). Call right after mutating state. */
  async commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.failed) throw new RegistryError('unavailable', 'registry store has failed; restart the registry');
    if (mutations.length === 0) return;
    const t0 = performance.now();
    try {
      await this.deps.store.commit(mutations);
    } catch (err) {
      if (!this.failed) {
        this.failed = true;
        this.deps.onStoreFailure(err as Error);
      }
      throw new RegistryError('unavailable', 'registry store failed; the change was not acknowledged');
    }
    this.metrics.storeCommitSeconds.observe((performance.now() - t0) / 1000);
  }

  /** Push an event to a node's subscriptions (call after commit). */
  publish(nodeId: number, event: PushEvent): void {
    this.deps.push.publish(nodeId, event);
  }

  pending(nodeId: number): { requests: number; responses: number } {
    return this.state.peekInbox(nodeId);
  }

  replayEntries(): number {
    return this.deps.replay.size;
  }

  stats(): Record<string, unknown> {
    return this.deps.stats();
  }
}

/** `N:NNNN.HHHH.LLLL` (upper-case hex; wire reference §1.1). */
export function addressOf(network: number, node: number): string {
  return `${network}:${hex4(network)}.${hex4(node >>> 16)}.${hex4(node & 0xffff)}`;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}
