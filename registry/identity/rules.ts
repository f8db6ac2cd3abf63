/**
 * A network's identity join rule (issue 6): parsed from the JSON an owner stores on the network.
 * `parseIdentityRule` is strict (unknown fields are refused, so a typo never weakens a rule) and only ever
 * throws `IdentityRuleError`.
 */
import { IdentityRuleError } from './errors.js';
import { isValidTrustDomain, parseSpiffePattern } from './spiffe-id.js';
import { parsePemCertificates, parsePemCrls } from './x509.js';

export type JwtAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';
/** Every asymmetric algorithm a rule may name. HS* and `none` are never accepted against a JWKS. */
export const ASYMMETRIC_ALGORITHMS: readonly JwtAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
export const DEFAULT_ALGORITHMS: readonly JwtAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];

export type ClaimValue = string | number | boolean;
/** Membership test on a multi-valued claim: any one of `any_of` and every one of `all_of`. */
export interface ClaimSetMatch {
  any_of?: string[];
  all_of?: string[];
}

export interface OidcRule {
  kind: 'oidc';
  /** Exact `iss`; also the discovery base unless `jwks_uri` is set. */
  issuer: string;
  /** Must appear in `aud` (string or array). */
  audience: string;
  /** Skip discovery and fetch keys here. */
  jwks_uri?: string;
  /** Subset of ASYMMETRIC_ALGORITHMS; default DEFAULT_ALGORITHMS. */
  algorithms?: JwtAlgorithm[];
  /** Refuse tokens whose `iat` is older than this (requires `iat`). */
  max_token_age_s?: number;
  /** Required `tid` (Entra tenant). */
  tenant?: string;
  /** `hd` or the domain of `email` (only if `email_verified` is not false) must be one of these. */
  email_domains?: string[];
  groups?: ClaimSetMatch;
  /** Claim holding groups (default "groups"); exact name first, then a dotted path (e.g. realm_access.roles). */
  groups_claim?: string;
  roles?: ClaimSetMatch;
  /** Default "roles". */
  roles_claim?: string;
  /** Exact matches: a value, or a list meaning any-of. For array claims, the claim must contain a listed value. */
  claims?: Record<string, ClaimValue | ClaimValue[]>;
}

/** A SPIFFE bundle in JWKS form (SPIFFE Trust Domain and Bundle spec §4). */
export interface JwksDocument {
  keys: Array<Record<string, unknown>>;
  [extra: string]: unknown;
}

export interface SpiffeTrustDomain {
  /** PEM X.509 authorities, or a SPIFFE bundle (JWKS with `use: x509-svid | jwt-svid` keys). */
  bundle?: string | JwksDocument;
  /** A SPIFFE bundle endpoint (https_web profile) serving the JWKS form; cached like a JWKS. */
  bundle_url?: string;
}

export interface SpiffeRule {
  kind: 'spiffe';
  /** One entry per federated trust domain, keyed by trust-domain name. */
  trust_domains: Record<string, SpiffeTrustDomain>;
  /** Admission patterns (see spiffe-id.ts for the glob semantics). */
  allow: string[];
  /** Required `aud` of JWT-SVIDs; without it JWT-SVIDs are refused (X.509-SVIDs only). */
  jwt_audience?: string;
  jwt_algorithms?: JwtAlgorithm[];
}

export interface SanConstraints {
  /** Every DNS SAN must equal or be a subdomain of one of these (label-aware, case-insensitive). */
  dns_suffixes?: string[];
  /** Every email SAN must be in one of these domains. */
  email_domains?: string[];
  /** Every URI SAN must start with one of these (end them with "/" to stay on a path boundary). */
  uri_prefixes?: string[];
}

export interface CaRule {
  kind: 'ca';
  /** PEM trust anchors (the enterprise root(s)). */
  roots: string;
  /** Extra PEM intermediates the registry may use to build paths (the node may also send them). */
  intermediates?: string;
  /** PEM CRLs; each is checked against the CA that issued the certificate it covers. */
  crls?: string[];
  /** Refuse when no CRL covers an issuer in the path. */
  require_crl?: boolean;
  /** Required EKUs, all of them: names (clientAuth, serverAuth, codeSigning, emailProtection) or OIDs. */
  eku?: string[];
  san?: SanConstraints;
  /** Required subject attributes, e.g. { "O": "Example Corp", "OU": "Agents" }. */
  subject?: Record<string, string>;
  /** "subject" (default): x509:<subject DN>. "issuer_serial": x509:<issuer DN>/<serial hex>. */
  external_id?: 'subject' | 'issuer_serial';
}

export interface LdapSearch {
  base: string;
  /** Filter with exactly one `{user}`, substituted RFC 4515-escaped, e.g. "(&(objectClass=person)(uid={user}))". */
  filter: string;
  bind_dn: string;
  bind_password: string;
  scope?: 'one' | 'sub';
}

export interface LdapGroups {
  /** "member": search groupOfNames/groupOfUniqueNames under `base`; "memberOf": read the user's memberOf. */
  mode: 'member' | 'memberOf';
  base?: string;
  /** Admit if the user is in any of these (group DN or cn, case-insensitive). Empty: no group needed. */
  required: string[];
}

export interface LdapRule {
  kind: 'ldap';
  /** ldaps://host:636 or ldap://host:389 (with start_tls, or allow_plain for tests). */
  url: string;
  start_tls?: boolean;
  /** PEM CA for the directory's TLS certificate (else the system store). */
  tls_ca?: string;
  /** Permit a plain ldap:// connection without StartTLS (passwords in clear: tests only). */
  allow_plain?: boolean;
  /** Direct bind: a DN with exactly one `{user}`, substituted RFC 4514-escaped. */
  user_dn_template?: string;
  /** Search-then-bind through a service account. Exactly one of user_dn_template / search. */
  search?: LdapSearch;
  groups?: LdapGroups;
  /** Per-operation timeout, default 5000, at most 30000. */
  timeout_ms?: number;
}

export interface WebhookRule {
  kind: 'webhook';
  url: string;
  /** HMAC-SHA256 key: the hex MAC of the body goes in X-Pilot-Signature-256. */
  secret?: string;
  /** Default and maximum 5000. */
  timeout_ms?: number;
}

export type IdentityRule = OidcRule | SpiffeRule | CaRule | LdapRule | WebhookRule;

// ---- limits -------------------------------------------------------------------------------------------
const MAX_STR = 1024;
const MAX_URL = 2048;
const MAX_LIST = 256;
const MAX_PEM = 512 * 1024;
const MAX_TRUST_DOMAINS = 64;

export function parseIdentityRule(json: unknown): IdentityRule {
  try {
    const o = obj(json, 'rule');
    switch (o.kind) {
      case 'oidc':
        return parseOidc(o);
      case 'spiffe':
        return parseSpiffe(o);
      case 'ca':
        return parseCa(o);
      case 'ldap':
        return parseLdap(o);
      case 'webhook':
        return parseWebhook(o);
      default:
        throw new IdentityRuleError('rule.kind must be one of oidc, spiffe, ca, ldap, webhook');
    }
  } catch (err) {
    if (err instanceof IdentityRuleError) throw err;
    throw new IdentityRuleError(`invalid rule: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

function parseOidc(o: Record<string, unknown>): OidcRule {
  only(o, 'rule', ['kind', 'issuer', 'audience', 'jwks_uri', 'algorithms', 'max_token_age_s', 'tenant', 'email_domains', 'groups', 'groups_claim', 'roles', 'roles_claim', 'claims']);
  const r: OidcRule = { kind: 'oidc', issuer: httpUrl(o.issuer, 'issuer'), audience: str(o.audience, 'audience') };
  if (o.jwks_uri !== undefined) r.jwks_uri = httpUrl(o.jwks_uri, 'jwks_uri');
  if (o.algorithms !== undefined) r.algorithms = algorithms(o.algorithms, 'algorithms');
  if (o.max_token_age_s !== undefined) r.max_token_age_s = int(o.max_token_age_s, 'max_token_age_s', 1, 366 * 86400);
  if (o.tenant !== undefined) r.tenant = str(o.tenant, 'tenant');
  if (o.email_domains !== undefined) r.email_domains = strList(o.email_domains, 'email_domains', 1).map((d) => d.toLowerCase());
  if (o.groups !== undefined) r.groups = claimSet(o.groups, 'groups');
  if (o.groups_claim !== undefined) r.groups_claim = str(o.groups_claim, 'groups_claim');
  if (o.roles !== undefined) r.roles = claimSet(o.roles, 'roles');
  if (o.roles_claim !== undefined) r.roles_claim = str(o.roles_claim, 'roles_claim');
  if (o.claims !== undefined) {
    const c = obj(o.claims, 'claims');
    const keys = Object.keys(c);
    if (keys.length > MAX_LIST) throw new IdentityRuleError('claims: too many entries');
    const out: Record<string, ClaimValue | ClaimValue[]> = Object.create(null);
    for (const k of keys) {
      str(k, 'claims key');
      const v = c[k];
      if (Array.isArray(v)) {
        if (v.length === 0 || v.length > MAX_LIST) throw new IdentityRuleError(`claims.${k}: list must have 1..${MAX_LIST} values`);
        out[k] = v.map((x, i) => claimValue(x, `claims.${k}[${i}]`));
      } else out[k] = claimValue(v, `claims.${k}`);
    }
    r.claims = out;
  }
  return r;
}

function parseSpiffe(o: Record<string, unknown>): SpiffeRule {
  only(o, 'rule', ['kind', 'trust_domains', 'allow', 'jwt_audience', 'jwt_algorithms']);
  const tdObj = obj(o.trust_domains, 'trust_domains');
  const names = Object.keys(tdObj);
  if (names.length === 0 || names.length > MAX_TRUST_DOMAINS) throw new IdentityRuleError(`trust_domains must have 1..${MAX_TRUST_DOMAINS} entries`);
  const trust_domains: Record<string, SpiffeTrustDomain> = Object.create(null);
  for (const name of names) {
    if (!isValidTrustDomain(name)) throw new IdentityRuleError(`trust_domains: "${clip(name)}" is not a valid trust domain name`);
    const d = obj(tdObj[name], `trust_domains.${name}`);
    only(d, `trust_domains.${name}`, ['bundle', 'bundle_url']);
    const td: SpiffeTrustDomain = {};
    if (d.bundle !== undefined) {
      if (typeof d.bundle === 'string') {
        pem(d.bundle, `trust_domains.${name}.bundle`);
        td.bundle = d.bundle;
      } else td.bundle = jwks(d.bundle, `trust_domains.${name}.bundle`);
    }
    if (d.bundle_url !== undefined) td.bundle_url = httpUrl(d.bundle_url, `trust_domains.${name}.bundle_url`);
    if (td.bundle === undefined && td.bundle_url === undefined) throw new IdentityRuleError(`trust_domains.${name}: needs bundle or bundle_url`);
    trust_domains[name] = td;
  }
  const allow = strList(o.allow, 'allow', 1, MAX_URL);
  for (const p of allow) {
    const parsed = parseSpiffePattern(p);
    if (typeof parsed === 'string') throw new IdentityRuleError(`allow: "${clip(p)}": ${parsed}`);
    if (!(parsed.trustDomain in trust_domains)) throw new IdentityRuleError(`allow: "${clip(p)}" names trust domain ${parsed.trustDomain}, which has no bundle in trust_domains`);
  }
  const r: SpiffeRule = { kind: 'spiffe', trust_domains, allow };
  if (o.jwt_audience !== undefined) r.jwt_audience = str(o.jwt_audience, 'jwt_audience');
  if (o.jwt_algorithms !== undefined) r.jwt_algorithms = algorithms(o.jwt_algorithms, 'jwt_algorithms');
  return r;
}

const EKU_NAMES = new Set(['serverAuth', 'clientAuth', 'codeSigning', 'emailProtection', 'timeStamping', 'ocspSigning']);
const SUBJECT_ATTRS = new Set(['CN', 'O', 'OU', 'C', 'L', 'ST', 'DC', 'E', 'serialNumber', 'UID']);

function parseCa(o: Record<string, unknown>): CaRule {
  only(o, 'rule', ['kind', 'roots', 'intermediates', 'crls', 'require_crl', 'eku', 'san', 'subject', 'external_id']);
  const r: CaRule = { kind: 'ca', roots: pem(o.roots, 'roots') };
  if (o.intermediates !== undefined) r.intermediates = pem(o.intermediates, 'intermediates');
  if (o.crls !== undefined) {
    if (!Array.isArray(o.crls) || o.crls.length > MAX_LIST) throw new IdentityRuleError(`crls must be a list of at most ${MAX_LIST} PEM CRLs`);
    r.crls = o.crls.map((c, i) => {
      if (typeof c !== 'string' || c.length > MAX_PEM) throw new IdentityRuleError(`crls[${i}] must be a PEM string`);
      try {
        if (parsePemCrls(c).length === 0) throw new Error('no CRL found');
      } catch (err) {
        throw new IdentityRuleError(`crls[${i}]: ${(err as Error).message}`);
      }
      return c;
    });
  }
  if (o.require_crl !== undefined) r.require_crl = bool(o.require_crl, 'require_crl');
  if (o.eku !== undefined) {
    r.eku = strList(o.eku, 'eku', 1);
    for (const e of r.eku) if (!EKU_NAMES.has(e) && !/^[0-2](\.(0|[1-9][0-9]*))+$/.test(e)) throw new IdentityRuleError(`eku: "${clip(e)}" is neither a known EKU name nor an OID`);
  }
  if (o.san !== undefined) {
    const s = obj(o.san, 'san');
    only(s, 'san', ['dns_suffixes', 'email_domains', 'uri_prefixes']);
    const san: SanConstraints = {};
    if (s.dns_suffixes !== undefined) san.dns_suffixes = strList(s.dns_suffixes, 'san.dns_suffixes', 1).map((d) => d.toLowerCase().replace(/^\./, ''));
    if (s.email_domains !== undefined) san.email_domains = strList(s.email_domains, 'san.email_domains', 1).map((d) => d.toLowerCase());
    if (s.uri_prefixes !== undefined) san.uri_prefixes = strList(s.uri_prefixes, 'san.uri_prefixes', 1, MAX_URL);
    r.san = san;
  }
  if (o.subject !== undefined) {
    const s = obj(o.subject, 'subject');
    const out: Record<string, string> = Object.create(null);
    for (const k of Object.keys(s)) {
      if (!SUBJECT_ATTRS.has(k)) throw new IdentityRuleError(`subject: unsupported attribute "${clip(k)}" (use ${[...SUBJECT_ATTRS].join(', ')})`);
      out[k] = str(s[k], `subject.${k}`);
    }
    r.subject = out;
  }
  if (o.external_id !== undefined) {
    if (o.external_id !== 'subject' && o.external_id !== 'issuer_serial') throw new IdentityRuleError('external_id must be "subject" or "issuer_serial"');
    r.external_id = o.external_id;
  }
  return r;
}

function parseLdap(o: Record<string, unknown>): LdapRule {
  only(o, 'rule', ['kind', 'url', 'start_tls', 'tls_ca', 'allow_plain', 'user_dn_template', 'search', 'groups', 'timeout_ms']);
  const url = str(o.url, 'url', MAX_URL);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new IdentityRuleError('url is not a valid URL');
  }
  if (u.protocol !== 'ldap:' && u.protocol !== 'ldaps:') throw new IdentityRuleError('url must be ldap:// or ldaps://');
  if (u.username || u.password) throw new IdentityRuleError('url must not carry credentials');
  if (u.pathname !== '' && u.pathname !== '/') throw new IdentityRuleError('url must not carry a DN or query (use user_dn_template / search)');
  const r: LdapRule = { kind: 'ldap', url };
  if (o.start_tls !== undefined) r.start_tls = bool(o.start_tls, 'start_tls');
  if (o.tls_ca !== undefined) r.tls_ca = pem(o.tls_ca, 'tls_ca');
  if (o.allow_plain !== undefined) r.allow_plain = bool(o.allow_plain, 'allow_plain');
  if (u.protocol === 'ldaps:' && r.start_tls) throw new IdentityRuleError('start_tls makes no sense with ldaps://');
  if (u.protocol === 'ldap:' && !r.start_tls && !r.allow_plain) throw new IdentityRuleError('ldap:// sends passwords in clear: set start_tls, use ldaps://, or allow_plain (tests only)');
  if ((o.user_dn_template === undefined) === (o.search === undefined)) throw new IdentityRuleError('exactly one of user_dn_template and search is required');
  if (o.user_dn_template !== undefined) r.user_dn_template = oneUserSlot(o.user_dn_template, 'user_dn_template');
  if (o.search !== undefined) {
    const s = obj(o.search, 'search');
    only(s, 'search', ['base', 'filter', 'bind_dn', 'bind_password', 'scope']);
    const search: LdapSearch = {
      base: str(s.base, 'search.base'),
      filter: oneUserSlot(s.filter, 'search.filter'),
      bind_dn: str(s.bind_dn, 'search.bind_dn'),
      bind_password: str(s.bind_password, 'search.bind_password'),
    };
    if (!search.filter.startsWith('(') || !search.filter.endsWith(')')) throw new IdentityRuleError('search.filter must be a parenthesised LDAP filter');
    if (s.scope !== undefined) {
      if (s.scope !== 'one' && s.scope !== 'sub') throw new IdentityRuleError('search.scope must be "one" or "sub"');
      search.scope = s.scope;
    }
    r.search = search;
  }
  if (o.groups !== undefined) {
    const g = obj(o.groups, 'groups');
    only(g, 'groups', ['mode', 'base', 'required']);
    if (g.mode !== 'member' && g.mode !== 'memberOf') throw new IdentityRuleError('groups.mode must be "member" or "memberOf"');
    const groups: LdapGroups = { mode: g.mode, required: strList(g.required ?? [], 'groups.required', 0) };
    if (g.base !== undefined) groups.base = str(g.base, 'groups.base');
    if (groups.mode === 'member' && groups.base === undefined) throw new IdentityRuleError('groups.base is required with mode "member"');
    r.groups = groups;
  }
  if (o.timeout_ms !== undefined) r.timeout_ms = int(o.timeout_ms, 'timeout_ms', 100, 30_000);
  return r;
}

function parseWebhook(o: Record<string, unknown>): WebhookRule {
  only(o, 'rule', ['kind', 'url', 'secret', 'timeout_ms']);
  const r: WebhookRule = { kind: 'webhook', url: httpUrl(o.url, 'url') };
  if (o.secret !== undefined) r.secret = str(o.secret, 'secret');
  if (o.timeout_ms !== undefined) r.timeout_ms = int(o.timeout_ms, 'timeout_ms', 100, 5000);
  return r;
}

// ---- small typed readers ------------------------------------------------------------------------------
function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}…` : s;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IdentityRuleError(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function only(o: Record<string, unknown>, what: string, allowed: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new IdentityRuleError(`${what}: unknown field "${clip(k)}"`);
}

function str(v: unknown, what: string, max = MAX_STR): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new IdentityRuleError(`${what} must be a non-empty string of at most ${max} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) throw new IdentityRuleError(`${what} must not contain control characters`);
  return v;
}

function strList(v: unknown, what: string, min: number, max = MAX_STR): string[] {
  if (!Array.isArray(v) || v.length < min || v.length > MAX_LIST) throw new IdentityRuleError(`${what} must be a list of ${min}..${MAX_LIST} strings`);
  return v.map((x, i) => str(x, `${what}[${i}]`, max));
}

function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new IdentityRuleError(`${what} must be true or false`);
  return v;
}

function int(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new IdentityRuleError(`${what} must be an integer in ${min}..${max}`);
  return v;
}

function claimValue(v: unknown, what: string): ClaimValue {
  if (typeof v === 'string') return str(v, what);
  if (typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) return v;
  throw new IdentityRuleError(`${what} must be a string, number or boolean`);
}

function claimSet(v: unknown, what: string): ClaimSetMatch {
  const o = obj(v, what);
  only(o, what, ['any_of', 'all_of']);
  const m: ClaimSetMatch = {};
  if (o.any_of !== undefined) m.any_of = strList(o.any_of, `${what}.any_of`, 1);
  if (o.all_of !== undefined) m.all_of = strList(o.all_of, `${what}.all_of`, 1);
  if (!m.any_of && !m.all_of) throw new IdentityRuleError(`${what} needs any_of or all_of`);
  return m;
}

function algorithms(v: unknown, what: string): JwtAlgorithm[] {
  const list = strList(v, what, 1);
  for (const a of list) {
    if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(a)) throw new IdentityRuleError(`${what}: "${clip(a)}" is not allowed (only ${ASYMMETRIC_ALGORITHMS.join(', ')}; never HS* or none)`);
  }
  return list as JwtAlgorithm[];
}

function httpUrl(v: unknown, what: string): string {
  const s = str(v, what, MAX_URL);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new IdentityRuleError(`${what} is not a valid URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new IdentityRuleError(`${what} must be an https:// URL`);
  if (u.username || u.password) throw new IdentityRuleError(`${what} must not carry credentials`);
  if (u.hash) throw new IdentityRuleError(`${what} must not have a fragment`);
  return s;
}

function pem(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_PEM) throw new IdentityRuleError(`${what} must be a PEM string of at most ${MAX_PEM} bytes`);
  try {
    if (parsePemCertificates(v).length === 0) throw new Error('no certificate found');
  } catch (err) {
    throw new IdentityRuleError(`${what}: ${(err as Error).message}`);
  }
  return v;
}

function jwks(v: unknown, what: string): JwksDocument {
  const o = obj(v, what);
  if (!Array.isArray(o.keys) || o.keys.length === 0 || o.keys.length > MAX_LIST) throw new IdentityRuleError(`${what}.keys must be a list of 1..${MAX_LIST} JWKs`);
  for (const [i, k] of o.keys.entries()) obj(k, `${what}.keys[${i}]`);
  if (JSON.stringify(o).length > MAX_PEM) throw new IdentityRuleError(`${what} is too large`);
  return o as JwksDocument;
}

function oneUserSlot(v: unknown, what: string): string {
  const s = str(v, what);
  if (s.split('{user}').length !== 2) throw new IdentityRuleError(`${what} must contain "{user}" exactly once`);
  return s;
}
