/**
 * SPIFFE join rule: an X.509-SVID (chain + proof of possession) or a JWT-SVID, checked against the bundle
 * of the trust domain named in the SPIFFE ID. Several trust domains can be federated on one network; a
 * chain is only ever anchored in the bundle of its own ID's trust domain. External ID: the SPIFFE ID.
 */
import { createHash } from 'node:crypto';
import { IdentityVerificationError, refuse } from './errors.js';
import { fetchJson, type FetchPolicy } from './fetch.js';
import type { DocCache } from './doc-cache.js';
import { parseJwks, peekJwt, verifyJwt, type Jwk } from './jwt.js';
import { checkPop } from './pop.js';
import { ASYMMETRIC_ALGORITHMS, type JwksDocument, type SpiffeRule, type SpiffeTrustDomain } from './rules.js';
import { matchSpiffePattern, parseSpiffeId, parseSpiffePattern, type SpiffeId, type SpiffePattern } from './spiffe-id.js';
import type { JoinContext, JoinProof, VerifiedIdentity } from './types.js';
import { parseDerCertificate, parsePemCertificates, parsePresentedChain, subjectAltNames, validateChain, type ParsedCert } from './x509.js';

/** JWT-SVID spec §3: RS/ES/PS families (EdDSA only if a rule names it). */
const JWT_SVID_ALGORITHMS = ASYMMETRIC_ALGORITHMS.filter((a) => a !== 'EdDSA');

export interface SpiffeDeps {
  cache: DocCache;
  policy: () => FetchPolicy;
  now: () => number;
  popMaxSkewMs: number;
  /** Parsed static bundles, keyed by content hash (bounded by the caller). */
  staticBundles: Map<string, ParsedBundle>;
}

export interface ParsedBundle {
  x509: ParsedCert[];
  jwt: Jwk[];
}

/** Split a SPIFFE bundle (PEM, or JWKS with use x509-svid / jwt-svid) into X.509 authorities and JWT keys. */
export function parseBundle(bundle: string | JwksDocument, what: string): ParsedBundle {
  if (typeof bundle === 'string') {
    try {
      return { x509: parsePemCertificates(bundle), jwt: [] };
    } catch (err) {
      refuse('jwks_invalid', `${what}: ${(err as Error).message}`);
    }
  }
  const out: ParsedBundle = { x509: [], jwt: [] };
  for (const k of parseJwks(bundle, what)) {
    if (k.use === 'x509-svid') {
      const x5c = k.x5c;
      if (!Array.isArray(x5c) || x5c.length !== 1 || typeof x5c[0] !== 'string') refuse('jwks_invalid', `${what}: x509-svid key needs exactly one x5c certificate`);
      try {
        out.x509.push(parseDerCertificate(Buffer.from(x5c[0], 'base64')));
      } catch {
        refuse('jwks_invalid', `${what}: x509-svid certificate does not parse`);
      }
    } else if (k.use === 'jwt-svid') out.jwt.push(k);
    // Other uses are ignored (SPIFFE bundle spec §4.2: unknown use → skip the key).
  }
  return out;
}

function staticBundle(td: SpiffeTrustDomain, name: string, deps: SpiffeDeps): ParsedBundle {
  if (td.bundle === undefined) return { x509: [], jwt: [] };
  const text = typeof td.bundle === 'string' ? td.bundle : JSON.stringify(td.bundle);
  const key = createHash('sha256').update(text).digest('base64');
  let b = deps.staticBundles.get(key);
  if (!b) {
    b = parseBundle(td.bundle, `bundle of ${name}`);
    if (deps.staticBundles.size >= 256) deps.staticBundles.delete(deps.staticBundles.keys().next().value!);
    deps.staticBundles.set(key, b);
  }
  return b;
}

async function bundleFor(td: SpiffeTrustDomain, name: string, deps: SpiffeDeps, refresh = false): Promise<ParsedBundle | null> {
  const s = staticBundle(td, name, deps);
  if (!td.bundle_url) return refresh ? null : s;
  const url = td.bundle_url;
  const load = async (): Promise<ParsedBundle> => parseBundle((await fetchJson(url, deps.policy())) as JwksDocument, `bundle endpoint of ${name}`);
  const remote = refresh ? await deps.cache.refresh(`spiffe-bundle:${url}`, load) : await deps.cache.get(`spiffe-bundle:${url}`, load);
  if (!remote) return null;
  return { x509: [...s.x509, ...remote.x509], jwt: [...s.jwt, ...remote.jwt] };
}

function admit(rule: SpiffeRule, id: SpiffeId): string[] {
  const matched = rule.allow.filter((p) => {
    const pat = parseSpiffePattern(p) as SpiffePattern; // validated by parseIdentityRule
    return typeof pat !== 'string' && matchSpiffePattern(pat, id);
  });
  if (matched.length === 0) refuse('spiffe_id_not_allowed', `${id.id} matches none of the network's SPIFFE ID patterns`);
  return matched;
}

function parseId(text: unknown, where: string): SpiffeId {
  const id = parseSpiffeId(text);
  if (typeof id === 'string') refuse('spiffe_id_invalid', `${where}: ${id}`);
  if (id.segments.length === 0) refuse('spiffe_id_invalid', `${where}: ${id.id} is a trust-domain ID, not a workload ID`);
  return id;
}

function trustDomainOf(rule: SpiffeRule, id: SpiffeId): SpiffeTrustDomain {
  const td = Object.prototype.hasOwnProperty.call(rule.trust_domains, id.trustDomain) ? rule.trust_domains[id.trustDomain] : undefined;
  if (!td) refuse('spiffe_trust_domain_unknown', `trust domain ${id.trustDomain} is not federated with this network`);
  return td;
}

export async function verifyX509Svid(rule: SpiffeRule, proof: JoinProof, ctx: JoinContext, deps: SpiffeDeps): Promise<VerifiedIdentity> {
  const chain = parsePresentedChain(proof.svid_chain!);
  const leaf = chain[0]!;
  if (leaf.node.ca) refuse('leaf_is_ca', 'the presented certificate is a CA certificate, not an X.509-SVID leaf');
  const san = subjectAltNames(leaf);
  if (san.uri.length !== 1) refuse('spiffe_id_invalid', `an X.509-SVID must carry exactly one URI SAN, this one has ${san.uri.length}`);
  const id = parseId(san.uri[0], 'X.509-SVID URI SAN');
  const td = trustDomainOf(rule, id);
  const now = deps.now();
  const bundle = (await bundleFor(td, id.trustDomain, deps))!;
  let path: ParsedCert[];
  try {
    path = validateChain(chain, { now, anchors: bundle.x509, requireLeafKeyUsage: true });
  } catch (err) {
    if (err instanceof IdentityVerificationError && err.code === 'chain_untrusted') {
      // Clearer reason when another federated domain's CA signed an ID claiming this domain.
      for (const [name, other] of Object.entries(rule.trust_domains)) {
        if (name === id.trustDomain) continue;
        const ob = await bundleFor(other, name, deps).catch(() => null);
        if (!ob) continue;
        try {
          validateChain(chain, { now, anchors: ob.x509, requireLeafKeyUsage: true });
          refuse('spiffe_trust_domain_mismatch', `${id.id} is signed by the CA of trust domain ${name}, not ${id.trustDomain}`);
        } catch (e2) {
          if (e2 instanceof IdentityVerificationError && e2.code === 'spiffe_trust_domain_mismatch') throw e2;
        }
      }
    }
    throw err;
  }
  // X509-SVID §4.3: a leaf SVID must not be able to sign certificates or CRLs.
  const ku = leaf.px.getExtension('2.5.29.15') as { usages?: number } | null;
  if (ku?.usages !== undefined && ku.usages & (32 | 64)) refuse('leaf_is_ca', 'X.509-SVID leaf has keyCertSign or cRLSign');
  checkPop(leaf.node.publicKey, proof.pop_signature, ctx, now, deps.popMaxSkewMs);
  const groups = admit(rule, id);
  return {
    externalId: id.id,
    kind: 'spiffe',
    subject: id.id,
    issuer: `spiffe://${id.trustDomain}`,
    groups,
    claims: { spiffe_id: id.id, trust_domain: id.trustDomain, serial: leaf.px.serialNumber, svid: 'x509', chain_length: path.length },
    expiresAt: leaf.px.notAfter.getTime(),
  };
}

export async function verifyJwtSvid(rule: SpiffeRule, token: string, deps: SpiffeDeps): Promise<VerifiedIdentity> {
  if (!rule.jwt_audience) refuse('jwt_svid_not_accepted', 'this network accepts X.509-SVIDs only (no jwt_audience configured)');
  const { payload } = peekJwt(token);
  const id = parseId(payload.sub, 'JWT-SVID sub');
  const td = trustDomainOf(rule, id);
  const res = await verifyJwt(token, {
    algorithms: rule.jwt_algorithms ?? JWT_SVID_ALGORITHMS,
    audience: rule.jwt_audience,
    now: deps.now(),
    use: 'jwt-svid',
    keys: async () => (await bundleFor(td, id.trustDomain, deps))!.jwt,
    refresh: async () => (await bundleFor(td, id.trustDomain, deps, true))?.jwt ?? null,
  });
  const groups = admit(rule, id);
  return {
    externalId: id.id,
    kind: 'spiffe',
    subject: id.id,
    issuer: `spiffe://${id.trustDomain}`,
    groups,
    claims: { ...res.payload, svid: 'jwt' },
    ...(typeof res.payload.exp === 'number' ? { expiresAt: res.payload.exp * 1000 } : {}),
  };
}
