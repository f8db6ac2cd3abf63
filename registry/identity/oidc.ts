/**
 * OIDC join rule: a JWT from the enterprise IdP, verified against the issuer's JWKS (discovered or
 * configured), then matched against the rule's tenant / email-domain / group / role / claim conditions.
 * External ID: "oidc:<iss>#<sub>".
 */
import type { JWTPayload } from 'jose';
import { refuse } from './errors.js';
import { fetchJson, type FetchPolicy } from './fetch.js';
import type { DocCache } from './doc-cache.js';
import { parseJwks, verifyJwt, type Jwk } from './jwt.js';
import { DEFAULT_ALGORITHMS, type ClaimSetMatch, type ClaimValue, type OidcRule } from './rules.js';
import type { VerifiedIdentity } from './types.js';

export interface OidcDeps {
  cache: DocCache;
  policy: () => FetchPolicy;
  now: () => number;
}

/** Where the issuer's keys live: configured, or from its discovery document (whose issuer must match). */
async function jwksUriFor(rule: OidcRule, deps: OidcDeps): Promise<string> {
  if (rule.jwks_uri) return rule.jwks_uri;
  const discoveryUrl = `${rule.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  return deps.cache.get(`discovery:${discoveryUrl}`, async () => {
    const doc = await fetchJson(discoveryUrl, deps.policy());
    if (typeof doc !== 'object' || doc === null) refuse('discovery_invalid', 'discovery document is not a JSON object');
    const d = doc as Record<string, unknown>;
    if (d.issuer !== rule.issuer) refuse('discovery_issuer_mismatch', `discovery document names issuer ${JSON.stringify(d.issuer ?? null)}, not ${JSON.stringify(rule.issuer)}`);
    if (typeof d.jwks_uri !== 'string') refuse('discovery_invalid', 'discovery document has no jwks_uri');
    return d.jwks_uri;
  });
}

export function loadJwks(url: string, deps: OidcDeps): () => Promise<Jwk[]> {
  return async () => parseJwks(await fetchJson(url, deps.policy()), `JWKS at ${new URL(url).host}`);
}

export async function verifyOidc(rule: OidcRule, token: string, deps: OidcDeps): Promise<VerifiedIdentity> {
  const now = deps.now();
  let jwksUrl: string | undefined;
  const { payload } = await verifyJwt(token, {
    algorithms: rule.algorithms ?? DEFAULT_ALGORITHMS,
    issuer: rule.issuer,
    audience: rule.audience,
    now,
    ...(rule.max_token_age_s !== undefined ? { maxTokenAgeS: rule.max_token_age_s } : {}),
    use: 'sig',
    keys: async () => {
      jwksUrl = await jwksUriFor(rule, deps);
      return deps.cache.get(`jwks:${jwksUrl}`, loadJwks(jwksUrl, deps));
    },
    refresh: async () => (jwksUrl ? deps.cache.refresh(`jwks:${jwksUrl}`, loadJwks(jwksUrl, deps)) : null),
  });
  if (typeof payload.sub !== 'string' || payload.sub.length === 0) refuse('token_claim_invalid', 'token has no "sub"');
  checkOidcClaims(rule, payload);
  const groups = claimStrings(payload, rule.groups_claim ?? 'groups');
  return {
    externalId: `oidc:${rule.issuer}#${payload.sub}`,
    kind: 'oidc',
    subject: payload.sub,
    issuer: rule.issuer,
    groups,
    claims: payload as Record<string, unknown>,
    ...(typeof payload.exp === 'number' ? { expiresAt: payload.exp * 1000 } : {}),
  };
}

/** Claim conditions of the rule, in a fixed order so the first failure names the reason. */
export function checkOidcClaims(rule: OidcRule, payload: JWTPayload): void {
  if (rule.tenant !== undefined && payload.tid !== rule.tenant) refuse('tenant_mismatch', `token tenant ${JSON.stringify(payload.tid ?? null)} is not the network's tenant`);
  if (rule.email_domains) {
    const domains = new Set<string>();
    if (typeof payload.hd === 'string') domains.add(payload.hd.toLowerCase());
    if (typeof payload.email === 'string' && payload.email_verified !== false && payload.email_verified !== 'false') {
      const at = payload.email.lastIndexOf('@');
      if (at > 0) domains.add(payload.email.slice(at + 1).toLowerCase());
    }
    if (![...domains].some((d) => rule.email_domains!.includes(d))) refuse('email_domain_mismatch', 'token carries no verified email / hosted domain of the network');
  }
  if (rule.groups) matchSet(rule.groups, claimStrings(payload, rule.groups_claim ?? 'groups'), 'group_missing', 'group');
  if (rule.roles) matchSet(rule.roles, claimStrings(payload, rule.roles_claim ?? 'roles'), 'role_missing', 'role');
  if (rule.claims) {
    for (const [name, want] of Object.entries(rule.claims)) {
      const have = claimAt(payload, name);
      const wants = Array.isArray(want) ? want : [want];
      const haves: unknown[] = Array.isArray(have) ? have : [have];
      if (!haves.some((h) => wants.some((w) => sameClaim(h, w)))) refuse('claim_mismatch', `claim ${JSON.stringify(name)} does not have a required value`);
    }
  }
}

function sameClaim(have: unknown, want: ClaimValue): boolean {
  return have === want;
}

function matchSet(m: ClaimSetMatch, have: string[], code: 'group_missing' | 'role_missing', what: string): void {
  const set = new Set(have);
  if (m.all_of) for (const g of m.all_of) if (!set.has(g)) refuse(code, `token lacks required ${what} ${JSON.stringify(g)}`);
  if (m.any_of && !m.any_of.some((g) => set.has(g))) refuse(code, `token has none of the ${what}s ${JSON.stringify(m.any_of)}`);
}

/**
 * A claim by exact name (namespaced claims such as "https://x.com/groups" contain dots), else by a dotted
 * path where each step may itself contain dots ("kubernetes.io.namespace" → payload["kubernetes.io"].namespace).
 */
export function claimAt(obj: unknown, name: string): unknown {
  if (typeof obj !== 'object' || obj === null) return undefined;
  const o = obj as Record<string, unknown>;
  if (Object.prototype.hasOwnProperty.call(o, name)) return o[name];
  const parts = name.split('.');
  if (parts.length > 16) return undefined;
  for (let i = parts.length - 1; i >= 1; i--) {
    const head = parts.slice(0, i).join('.');
    if (Object.prototype.hasOwnProperty.call(o, head)) {
      const v = claimAt(o[head], parts.slice(i).join('.'));
      if (v !== undefined) return v;
    }
  }
  return undefined;
}

/** A multi-valued claim as strings: an array of strings, or a space-separated string (like "scope"). */
export function claimStrings(payload: unknown, name: string): string[] {
  const v = claimAt(payload, name);
  if (typeof v === 'string') return v.split(' ').filter(Boolean).slice(0, 1024);
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string').slice(0, 1024);
  return [];
}
