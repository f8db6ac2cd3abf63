/**
 * JWT verification against a JWKS, shared by OIDC and JWT-SVIDs. Order matters (enterprise-features §D):
 * shape → algorithm allowlist → unverified `iss` pre-check (no fetch for foreign tokens) → key selection by
 * `kid` with one throttled refetch on a miss → key type / JWK `alg` / `use` must fit the header `alg`
 * (algorithm confusion is refused before any signature maths) → signature → claims (`exp` required,
 * `nbf`, `iss` exact, `aud` contains, 60 s skew, optional max age), all against the injected clock.
 */
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, importJWK, jwtVerify, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { IdentityVerificationError, refuse } from './errors.js';
import type { JwtAlgorithm } from './rules.js';

export const MAX_TOKEN_BYTES = 16 * 1024;
export const CLOCK_SKEW_S = 60;
const MAX_KEYS = 100;
const MAX_CANDIDATES = 8;

export type Jwk = Record<string, unknown>;

/** Keep only well-formed public JWK objects from a JWKS document (bounded). Throws jwks_invalid on bad shape. */
export function parseJwks(doc: unknown, what = 'JWKS'): Jwk[] {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) refuse('jwks_invalid', `${what} has no "keys" list`);
  const keys = (doc as { keys: unknown[] }).keys;
  if (keys.length > MAX_KEYS) refuse('jwks_invalid', `${what} has more than ${MAX_KEYS} keys`);
  return keys.filter((k): k is Jwk => typeof k === 'object' && k !== null && !Array.isArray(k) && typeof (k as Jwk).kty === 'string');
}

/** Why `jwk` cannot verify `alg`, or null if it can. */
export function keyAlgMismatch(jwk: Jwk, alg: string, use: string): string | null {
  if (jwk.use !== undefined && jwk.use !== use) return `key use "${String(jwk.use)}" is not "${use}"`;
  if (jwk.alg !== undefined && jwk.alg !== alg) return `key is for ${String(jwk.alg)}, token says ${alg}`;
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return 'key_ops does not include verify';
  if (jwk.d !== undefined) return 'key carries private material';
  const kty = jwk.kty;
  if (alg.startsWith('RS') || alg.startsWith('PS')) return kty === 'RSA' ? null : `${alg} needs an RSA key, got ${String(kty)}`;
  if (alg === 'ES256' || alg === 'ES384' || alg === 'ES512') {
    const crv = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' }[alg];
    return kty === 'EC' && jwk.crv === crv ? null : `${alg} needs an EC ${crv} key, got ${String(kty)} ${String(jwk.crv ?? '')}`.trim();
  }
  if (alg === 'EdDSA') return kty === 'OKP' && jwk.crv === 'Ed25519' ? null : `EdDSA needs an OKP Ed25519 key, got ${String(kty)}`;
  return `unsupported algorithm ${alg}`;
}

export interface JwtCheck {
  algorithms: readonly JwtAlgorithm[];
  /** Exact issuer, checked before any key fetch (OIDC). */
  issuer?: string;
  audience: string;
  now: number;
  maxTokenAgeS?: number;
  /** Expected JWK `use` when present: "sig" for OIDC, "jwt-svid" for SPIFFE bundles. */
  use: 'sig' | 'jwt-svid';
  /** Current keys (may fetch). */
  keys: () => Promise<Jwk[]>;
  /** Keys after a forced refetch, or null when throttled. */
  refresh: () => Promise<Jwk[] | null>;
}

export interface VerifiedJwt {
  payload: JWTPayload;
  alg: string;
  kid?: string;
}

/** Shape-check a compact JWS and read its header and (unverified) payload. */
export function peekJwt(token: unknown): { header: Record<string, unknown>; payload: JWTPayload } {
  if (typeof token !== 'string' || token.length === 0) refuse('token_malformed', 'token must be a non-empty string');
  if (token.length > MAX_TOKEN_BYTES) refuse('token_malformed', `token larger than ${MAX_TOKEN_BYTES} bytes`);
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) refuse('token_malformed', 'token is not a compact JWS (three base64url parts)');
  try {
    return { header: decodeProtectedHeader(token) as Record<string, unknown>, payload: decodeJwt(token) };
  } catch {
    refuse('token_malformed', 'token header or payload is not base64url JSON');
  }
}

const keyCache = new WeakMap<Jwk, Map<string, Promise<CryptoKey | Uint8Array>>>();

function importKey(jwk: Jwk, alg: string): Promise<CryptoKey | Uint8Array> {
  let m = keyCache.get(jwk);
  if (!m) keyCache.set(jwk, (m = new Map()));
  let p = m.get(alg);
  if (!p) {
    p = importJWK({ ...(jwk as JWK), ext: true }, alg) as Promise<CryptoKey | Uint8Array>;
    m.set(alg, p);
  }
  return p;
}

export async function verifyJwt(token: unknown, check: JwtCheck): Promise<VerifiedJwt> {
  const { header, payload } = peekJwt(token);
  const alg = header.alg;
  if (typeof alg !== 'string' || alg === 'none' || alg.toLowerCase() === 'none') refuse('token_alg_not_allowed', 'unsigned tokens (alg "none") are never accepted');
  if (/^HS/i.test(alg)) refuse('token_alg_not_allowed', `${alg} is symmetric; keys come from a public JWKS, so HS* is never accepted`);
  if (!(check.algorithms as readonly string[]).includes(alg)) refuse('token_alg_not_allowed', `algorithm ${alg} is not in the allowlist (${check.algorithms.join(', ')})`);
  if (header.crit !== undefined) refuse('token_malformed', 'tokens with "crit" header parameters are not accepted');
  if (check.issuer !== undefined && payload.iss !== check.issuer) refuse('token_issuer_mismatch', `token issuer ${JSON.stringify(payload.iss ?? null)} is not ${JSON.stringify(check.issuer)}`);
  const kid = typeof header.kid === 'string' ? header.kid : undefined;
  if (header.kid !== undefined && kid === undefined) refuse('token_malformed', 'kid must be a string');

  let keys = await check.keys();
  const pick = (list: Jwk[]): Jwk[] => (kid !== undefined ? list.filter((k) => k.kid === kid) : list.filter((k) => keyAlgMismatch(k, alg, check.use) === null));
  let candidates = pick(keys);
  if (candidates.length === 0) {
    const fresh = await check.refresh();
    if (fresh) {
      keys = fresh;
      candidates = pick(keys);
    }
  }
  if (candidates.length === 0) {
    refuse('token_kid_unknown', kid !== undefined ? `no key with kid ${JSON.stringify(kid.slice(0, 64))} in the issuer's key set` : `no ${alg} key in the issuer's key set`);
  }
  const usable = candidates.filter((k) => keyAlgMismatch(k, alg, check.use) === null).slice(0, MAX_CANDIDATES);
  if (usable.length === 0) refuse('token_alg_key_mismatch', `key ${JSON.stringify(kid ?? '')} cannot verify ${alg}: ${keyAlgMismatch(candidates[0]!, alg, check.use)}`);

  let lastSigErr: unknown;
  for (const jwk of usable) {
    let key: CryptoKey | Uint8Array;
    try {
      key = await importKey(jwk, alg);
    } catch (err) {
      lastSigErr = err;
      continue;
    }
    try {
      const res = await jwtVerify(token as string, key, {
        algorithms: [alg],
        ...(check.issuer !== undefined ? { issuer: check.issuer } : {}),
        audience: check.audience,
        clockTolerance: CLOCK_SKEW_S,
        requiredClaims: ['exp'],
        currentDate: new Date(check.now),
        ...(check.maxTokenAgeS !== undefined ? { maxTokenAge: check.maxTokenAgeS } : {}),
      });
      return { payload: res.payload, alg, ...(kid !== undefined ? { kid } : {}) };
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
        lastSigErr = err;
        continue;
      }
      throw mapJoseError(err);
    }
  }
  if (lastSigErr instanceof IdentityVerificationError) throw lastSigErr;
  refuse('token_signature_invalid', 'token signature does not verify with the issuer key', lastSigErr);
}

function mapJoseError(err: unknown): IdentityVerificationError {
  const e = err as { claim?: string; reason?: string; message?: string };
  if (err instanceof joseErrors.JWTExpired) {
    if (e.claim === 'iat') return new IdentityVerificationError('token_too_old', 'token was issued too long ago (max_token_age_s)');
    return new IdentityVerificationError('token_expired', 'token has expired');
  }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (e.claim) {
      case 'exp':
        return e.reason === 'missing'
          ? new IdentityVerificationError('token_missing_exp', 'token has no "exp": tokens that never expire are refused')
          : new IdentityVerificationError('token_claim_invalid', `"exp" is invalid: ${e.message}`);
      case 'iss':
        return new IdentityVerificationError('token_issuer_mismatch', 'token issuer does not match');
      case 'aud':
        return new IdentityVerificationError('token_audience_mismatch', `token audience does not include the network's audience`);
      case 'nbf':
        return e.reason === 'check_failed'
          ? new IdentityVerificationError('token_not_yet_valid', 'token is not valid yet ("nbf")')
          : new IdentityVerificationError('token_claim_invalid', `"nbf" is invalid`);
      case 'iat':
        return e.reason === 'missing'
          ? new IdentityVerificationError('token_claim_invalid', 'token has no "iat" but the rule sets max_token_age_s')
          : new IdentityVerificationError('token_claim_invalid', `"iat" is invalid: ${e.message}`);
      default:
        return new IdentityVerificationError('token_claim_invalid', `claim ${e.claim ?? '?'} is invalid: ${e.message}`);
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) {
    return new IdentityVerificationError('token_alg_not_allowed', e.message ?? 'algorithm not allowed');
  }
  if (err instanceof joseErrors.JWTInvalid || err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JOSEError) {
    return new IdentityVerificationError('token_malformed', e.message ?? 'malformed token');
  }
  if (err instanceof IdentityVerificationError) return err;
  return new IdentityVerificationError('token_malformed', 'token could not be verified', { cause: err });
}
