/**
 * Enterprise identity verifiers for network join rules (issue 6). The registry's join_network handler
 * parses the network's rule once (`parseIdentityRule`), then calls `verifier.verify(rule, proof, ctx)` for
 * each join: it resolves to a VerifiedIdentity or rejects with IdentityVerificationError (stable `code`).
 */
import type { Logger } from 'pino';
import { DocCache } from './doc-cache.js';
import { IdentityVerificationError, refuse, type IdentityErrorCode } from './errors.js';
import type { FetchPolicy } from './fetch.js';
import { verifyOidc } from './oidc.js';
import { verifyJwtSvid, verifyX509Svid, type ParsedBundle } from './spiffe.js';
import { verifyCa, type ParsedCaConfig } from './ca.js';
import { verifyLdap } from './ldap.js';
import { verifyWebhook } from './webhook.js';
import type { IdentityRule } from './rules.js';
import type { JoinContext, JoinProof, VerifiedIdentity } from './types.js';

export { parseIdentityRule, ASYMMETRIC_ALGORITHMS, DEFAULT_ALGORITHMS } from './rules.js';
export type { IdentityRule, OidcRule, SpiffeRule, SpiffeTrustDomain, CaRule, LdapRule, LdapSearch, LdapGroups, WebhookRule, ClaimSetMatch, ClaimValue, JwtAlgorithm, JwksDocument, SanConstraints } from './rules.js';
export { IdentityVerificationError, IdentityRuleError, type IdentityErrorCode } from './errors.js';
export type { JoinProof, JoinContext, VerifiedIdentity } from './types.js';
export { popChallenge, POP_DOMAIN } from './pop.js';
export { networksForGroups } from './groups.js';
export { presets } from './presets.js';
export { parseSpiffeId, parseSpiffePattern, matchSpiffePattern, type SpiffeId, type SpiffePattern } from './spiffe-id.js';
export { escapeDnValue, escapeFilterValue } from './ldap.js';
export { isPrivateAddress } from './fetch.js';

export interface IdentityVerifierOptions {
  /** Unix ms; drives token/certificate validity and cache ages. Default Date.now. */
  clock?: () => number;
  log?: Logger;
  /** Per HTTP request (discovery, JWKS, bundle, webhook ≤ 5000). Default 5000. */
  fetchTimeoutMs?: number;
  /** Cap on discovery / JWKS / bundle documents; larger → fetch_too_large. Default 64 KiB. */
  maxJwksBytes?: number;
  /** Permit loopback/private/link-local targets (tests, on-prem IdPs). Default false. */
  allowPrivateUrls?: boolean;
  /** Permit http:// (tests). Default false: keys fetched over plain HTTP could be swapped in transit. */
  allowHttp?: boolean;
  /** Freshness of cached discovery/JWKS/bundle documents. Default 300000 (5 min). */
  jwksTtlMs?: number;
  /** Minimum gap between fetches of one URL on an unknown kid or after a failure. Default 10000. */
  jwksRefetchCooldownMs?: number;
  /** How long a stale copy may be used while the IdP is unreachable. Default 3600000. */
  jwksMaxStaleMs?: number;
  /** Distinct URLs cached. Default 256. */
  maxCachedDocuments?: number;
  /** |now − ctx.ts| allowed for certificate proof of possession. Default 120000. */
  popMaxSkewMs?: number;
  /** Default LDAP operation timeout when a rule sets none. Default 5000. */
  ldapTimeoutMs?: number;
}

export interface IdentityVerifierStats {
  verified: number;
  refused: Partial<Record<IdentityErrorCode, number>>;
  /** HTTP fetches of discovery documents, JWKS and bundles. */
  documentFetches: number;
  cachedDocuments: number;
}

const MAX_FIELD: Record<keyof JoinProof, number> = {
  oidc_token: 16 * 1024,
  svid_chain: 64 * 1024,
  jwt_svid: 16 * 1024,
  cert_chain: 64 * 1024,
  pop_signature: 2048,
  ldap_user: 256,
  ldap_password: 1024,
  webhook_token: 16 * 1024,
};

/** Validate the proof object from a join request. Unknown fields are ignored; only IdentityVerificationError is thrown. */
export function parseJoinProof(json: unknown): JoinProof {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) refuse('bad_proof', 'proof must be a JSON object');
  const o = json as Record<string, unknown>;
  const out: JoinProof = {};
  for (const k of Object.keys(MAX_FIELD) as Array<keyof JoinProof>) {
    const v = o[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') refuse('bad_proof', `${k} must be a string`);
    if (v.length > MAX_FIELD[k]) refuse('bad_proof', `${k} longer than ${MAX_FIELD[k]} characters`);
    out[k] = v;
  }
  return out;
}

function checkContext(ctx: JoinContext): void {
  if (typeof ctx !== 'object' || ctx === null) refuse('bad_proof', 'missing join context');
  if (!Number.isSafeInteger(ctx.networkId) || ctx.networkId < 0) refuse('bad_proof', 'bad network id');
  if (!Number.isSafeInteger(ctx.nodeId) || ctx.nodeId < 0) refuse('bad_proof', 'bad node id');
  if (!Buffer.isBuffer(ctx.nodePublicKey) || ctx.nodePublicKey.length !== 32) refuse('bad_proof', 'node public key must be 32 bytes');
  if (!Number.isSafeInteger(ctx.ts)) refuse('bad_proof', 'bad join timestamp');
}

/** One per registry: holds the document caches and parsed trust bundles for every network's rule. */
export class IdentityVerifier {
  private readonly clock: () => number;
  private readonly log: Logger | undefined;
  private readonly cache: DocCache;
  private readonly abort = new AbortController();
  private readonly pending = new Set<Promise<unknown>>();
  private readonly staticBundles = new Map<string, ParsedBundle>();
  private readonly caConfigs = new Map<string, ParsedCaConfig>();
  private closed = false;
  private verified = 0;
  private readonly refused: Partial<Record<IdentityErrorCode, number>> = {};

  constructor(private readonly opts: IdentityVerifierOptions = {}) {
    this.clock = opts.clock ?? Date.now;
    this.log = opts.log?.child({ component: 'identity' });
    this.cache = new DocCache({
      clock: this.clock,
      ttlMs: opts.jwksTtlMs ?? 300_000,
      refetchCooldownMs: opts.jwksRefetchCooldownMs ?? 10_000,
      maxStaleMs: opts.jwksMaxStaleMs ?? 3_600_000,
      maxEntries: opts.maxCachedDocuments ?? 256,
      ...(this.log ? { log: this.log } : {}),
    });
  }

  private policy = (): FetchPolicy => ({
    timeoutMs: this.opts.fetchTimeoutMs ?? 5000,
    maxBytes: this.opts.maxJwksBytes ?? 64 * 1024,
    allowPrivate: this.opts.allowPrivateUrls ?? false,
    allowHttp: this.opts.allowHttp ?? false,
    signal: this.abort.signal,
  });

  verify(rule: IdentityRule, proof: JoinProof, ctx: JoinContext): Promise<VerifiedIdentity> {
    const p = this.run(rule, proof, ctx);
    this.pending.add(p);
    void p.then(
      () => this.pending.delete(p),
      () => this.pending.delete(p),
    );
    return p;
  }

  private async run(rule: IdentityRule, rawProof: JoinProof, ctx: JoinContext): Promise<VerifiedIdentity> {
    const kind = (rule as { kind?: unknown })?.kind;
    try {
      if (this.closed) refuse('verifier_closed', 'identity verifier is closed');
      const proof = parseJoinProof(rawProof);
      checkContext(ctx);
      const id = await this.dispatch(rule, proof, ctx);
      this.verified++;
      this.log?.debug({ kind, networkId: ctx.networkId, nodeId: ctx.nodeId, externalId: id.externalId }, 'identity verified');
      return id;
    } catch (err) {
      const e =
        err instanceof IdentityVerificationError
          ? err
          : new IdentityVerificationError('internal_error', 'identity verification failed unexpectedly', { cause: err });
      this.refused[e.code] = (this.refused[e.code] ?? 0) + 1;
      const where = { kind, code: e.code, networkId: ctx?.networkId, nodeId: ctx?.nodeId };
      if (e.code === 'internal_error') this.log?.error({ ...where, err: (err as Error)?.message }, 'identity verification error');
      else this.log?.info({ ...where, reason: e.message }, 'identity proof refused');
      throw e;
    }
  }

  private dispatch(rule: IdentityRule, proof: JoinProof, ctx: JoinContext): Promise<VerifiedIdentity> {
    switch (rule?.kind) {
      case 'oidc':
        if (!proof.oidc_token) refuse('proof_missing', 'this network requires oidc_token');
        return verifyOidc(rule, proof.oidc_token, { cache: this.cache, policy: this.policy, now: this.clock });
      case 'spiffe': {
        const deps = { cache: this.cache, policy: this.policy, now: this.clock, popMaxSkewMs: this.opts.popMaxSkewMs ?? 120_000, staticBundles: this.staticBundles };
        if (proof.svid_chain) return verifyX509Svid(rule, proof, ctx, deps);
        if (proof.jwt_svid) return verifyJwtSvid(rule, proof.jwt_svid, deps);
        refuse('proof_missing', 'this network requires svid_chain + pop_signature, or jwt_svid');
      }
      // falls through (unreachable: refuse throws)
      case 'ca':
        if (!proof.cert_chain) refuse('proof_missing', 'this network requires cert_chain + pop_signature');
        return verifyCa(rule, proof, ctx, { now: this.clock, popMaxSkewMs: this.opts.popMaxSkewMs ?? 120_000, parsed: this.caConfigs });
      case 'ldap':
        if (proof.ldap_user === undefined) refuse('proof_missing', 'this network requires ldap_user and ldap_password');
        return verifyLdap(rule, proof.ldap_user, proof.ldap_password ?? '', { defaultTimeoutMs: this.opts.ldapTimeoutMs ?? 5000 });
      case 'webhook':
        if (!proof.webhook_token) refuse('proof_missing', 'this network requires webhook_token');
        return verifyWebhook(rule, proof.webhook_token, ctx, this.policy());
      default:
        refuse('internal_error', 'unknown rule kind (rules must come from parseIdentityRule)');
    }
  }

  stats(): IdentityVerifierStats {
    return { verified: this.verified, refused: { ...this.refused }, documentFetches: this.cache.fetches, cachedDocuments: this.cache.size };
  }

  /** Abort in-flight fetches, wait for running verifications to settle, drop caches. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    await Promise.allSettled([...this.pending]);
    this.cache.clear();
    this.staticBundles.clear();
    this.caConfigs.clear();
  }
}
