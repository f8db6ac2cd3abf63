/**
 * X.509 path validation, proof of possession and CRL checks shared by the SPIFFE and enterprise-CA rules.
 * node:crypto does the signature maths (OpenSSL); @peculiar/x509 reads extensions and CRLs.
 * Deliberately strict (RFC 5280 §6 subset): every cert in the path must be in its validity window, every
 * issuer must be a CA with keyCertSign and a pathLen that allows the path, unknown critical extensions
 * (including nameConstraints and policies, which we do not evaluate) are refused, weak algorithms refused.
 */
import { X509Certificate as NodeX509, verify as cryptoVerify, constants, webcrypto, type KeyObject } from 'node:crypto';
import * as px from '@peculiar/x509';
import { refuse } from './errors.js';

px.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px.cryptoProvider.set>[0]);

export interface ParsedCert {
  node: NodeX509;
  px: px.X509Certificate;
  der: Buffer;
}

export const MAX_CHAIN_CERTS = 8;
export const MAX_CHAIN_PEM = 64 * 1024;
const MAX_PEM_CERTS = 256;

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

function pemBlocks(text: string, label: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    if (m[1] !== label) continue;
    const b64 = m[2]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new Error(`${label} PEM block is not valid base64`);
    out.push(Buffer.from(b64, 'base64'));
    if (out.length > MAX_PEM_CERTS) throw new Error(`more than ${MAX_PEM_CERTS} ${label} blocks`);
  }
  return out;
}

export function parseDerCertificate(der: Buffer): ParsedCert {
  // Both parsers must agree the bytes are a certificate; either throwing means malformed.
  const c = { node: new NodeX509(der), px: new px.X509Certificate(der), der };
  // Touch every lazily decoded field now, so malformed content fails here (cert_malformed) and not mid-check.
  void [c.px.subject, c.px.issuer, c.px.notBefore, c.px.notAfter, c.px.serialNumber, c.node.publicKey];
  for (const e of c.px.extensions) void e.type;
  c.px.getExtension(px.BasicConstraintsExtension);
  c.px.getExtension(px.KeyUsagesExtension);
  c.px.getExtension(px.ExtendedKeyUsageExtension);
  return c;
}

/** Parse every CERTIFICATE block. Throws a plain Error (callers wrap it in their typed error). */
export function parsePemCertificates(text: string): ParsedCert[] {
  return pemBlocks(text, 'CERTIFICATE').map(parseDerCertificate);
}

export function parsePemCrls(text: string): px.X509Crl[] {
  // RFC 7468 says "X509 CRL"; some tools (including @peculiar/x509) write "CRL".
  return [...pemBlocks(text, 'X509 CRL'), ...pemBlocks(text, 'CRL')].map((der) => new px.X509Crl(der));
}

/** Parse the chain a node presents (leaf first). Refuses with cert_malformed / chain_too_long. */
export function parsePresentedChain(text: string): ParsedCert[] {
  if (text.length > MAX_CHAIN_PEM) refuse('chain_too_long', `certificate chain larger than ${MAX_CHAIN_PEM} bytes`);
  let certs: ParsedCert[];
  try {
    certs = parsePemCertificates(text);
  } catch (err) {
    refuse('cert_malformed', `certificate chain does not parse: ${(err as Error).message}`);
  }
  if (certs.length === 0) refuse('cert_malformed', 'no CERTIFICATE block in the chain');
  if (certs.length > MAX_CHAIN_CERTS) refuse('chain_too_long', `chain has ${certs.length} certificates (max ${MAX_CHAIN_CERTS})`);
  return certs;
}

// ---- extensions -----------------------------------------------------------------------------------------
const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  authorityKeyId: '2.5.29.35',
  subjectKeyId: '2.5.29.14',
  crlNumber: '2.5.29.20',
} as const;
const UNDERSTOOD_CRITICAL = new Set<string>([OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName]);

export const EKU_OIDS: Record<string, string> = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  ocspSigning: '1.3.6.1.5.5.7.3.9',
};

function basicConstraints(c: ParsedCert): { ca: boolean; pathLength?: number } | null {
  return c.px.getExtension(px.BasicConstraintsExtension);
}

function keyUsage(c: ParsedCert): number | null {
  const ku = c.px.getExtension(px.KeyUsagesExtension);
  return ku ? ku.usages : null;
}

export function extendedKeyUsages(c: ParsedCert): string[] | null {
  const e = c.px.getExtension(px.ExtendedKeyUsageExtension);
  return e ? e.usages.map(String) : null;
}

export interface SubjectAltNames {
  dns: string[];
  email: string[];
  uri: string[];
  ip: string[];
  other: number;
}

export function subjectAltNames(c: ParsedCert): SubjectAltNames {
  const out: SubjectAltNames = { dns: [], email: [], uri: [], ip: [], other: 0 };
  let ext: px.SubjectAlternativeNameExtension | null;
  try {
    ext = c.px.getExtension(px.SubjectAlternativeNameExtension);
  } catch {
    refuse('cert_malformed', 'subjectAltName does not parse');
  }
  if (!ext) return out;
  for (const n of ext.names.items) {
    if (n.type === 'dns') out.dns.push(n.value);
    else if (n.type === 'email') out.email.push(n.value);
    else if (n.type === 'url') out.uri.push(n.value);
    else if (n.type === 'ip') out.ip.push(n.value);
    else out.other++;
  }
  return out;
}

// Signature algorithms we accept on certificates and CRLs (no MD5/SHA-1).
const GOOD_SIG_OIDS = new Set([
  '1.2.840.113549.1.1.11', '1.2.840.113549.1.1.12', '1.2.840.113549.1.1.13', // sha256/384/512WithRSA
  '1.2.840.113549.1.1.10', // RSASSA-PSS
  '1.2.840.10045.4.3.2', '1.2.840.10045.4.3.3', '1.2.840.10045.4.3.4', // ecdsa-with-SHA256/384/512
  '1.3.101.112', // Ed25519
]);

/** The signatureAlgorithm OID of a DER certificate (outer AlgorithmIdentifier). */
function sigAlgOid(der: Buffer): string | null {
  // Certificate ::= SEQUENCE { tbs SEQUENCE, sigAlg SEQUENCE { OID, ... }, sig BIT STRING }
  try {
    let p = 0;
    const readLen = (): number => {
      let len = der[p++]!;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n > 4) throw new Error('len');
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + der[p++]!;
      }
      return len;
    };
    if (der[p++] !== 0x30) return null;
    readLen();
    if (der[p++] !== 0x30) return null;
    const tbsLen = readLen(); // (not `p += readLen()`: p would be read before readLen advances it)
    p += tbsLen;
    if (der[p++] !== 0x30) return null;
    readLen();
    if (der[p++] !== 0x06) return null;
    const l = readLen();
    return decodeOid(der.subarray(p, p + l));
  } catch {
    return null;
  }
}

function decodeOid(b: Buffer): string {
  if (b.length === 0) throw new Error('empty oid');
  const parts: number[] = [];
  const first = b[0]!;
  parts.push(first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80);
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i]! & 0x7f);
    if (!(b[i]! & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

function checkKeyStrength(c: ParsedCert, role: string): void {
  const k = c.node.publicKey;
  const t = k.asymmetricKeyType;
  if (t === 'rsa' || t === 'rsa-pss') {
    const bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) refuse('cert_algorithm_weak', `${role} has a ${bits}-bit RSA key (min 2048)`);
  } else if (t === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    if (curve !== 'prime256v1' && curve !== 'secp384r1' && curve !== 'secp521r1') refuse('cert_algorithm_weak', `${role} uses unsupported curve ${curve ?? '?'}`);
  } else if (t !== 'ed25519') refuse('cert_algorithm_weak', `${role} has an unsupported key type ${t ?? '?'}`);
}

export function describe(c: ParsedCert): string {
  return `"${c.px.subject}"`;
}

function sameDer(a: ParsedCert, b: ParsedCert): boolean {
  return a.der.equals(b.der);
}

/** RFC 5280 "self-issued": subject and issuer names are the same (no keyUsage check, unlike checkIssued). */
function isSelfIssued(c: ParsedCert): boolean {
  return c.node.subject === c.node.issuer;
}

function signedBy(child: ParsedCert, issuer: ParsedCert): boolean {
  try {
    return child.node.verify(issuer.node.publicKey);
  } catch {
    return false;
  }
}

export interface ChainOptions {
  now: number;
  anchors: ParsedCert[];
  /** Intermediates known to the verifier (rule config) besides those the node sent. */
  extraIntermediates?: ParsedCert[];
  /** SPIFFE: the leaf must carry keyUsage with digitalSignature (X509-SVID §4.3). */
  requireLeafKeyUsage: boolean;
}

/**
 * Build and validate a path from presented[0] (the leaf) to one of `anchors`.
 * Returns the path leaf..anchor. Refuses with a code naming the first problem found.
 */
export function validateChain(presented: ParsedCert[], opts: ChainOptions): ParsedCert[] {
  const leaf = presented[0]!;
  const pool = [...presented.slice(1), ...(opts.extraIntermediates ?? [])];
  if (opts.anchors.some((a) => sameDer(a, leaf))) refuse('leaf_is_ca', 'the presented certificate is a trust anchor, not an end-entity certificate');
  if (isSelfIssued(leaf) && signedBy(leaf, leaf)) refuse('cert_self_signed', `certificate ${describe(leaf)} is self-signed and not in the trust bundle`);

  const path: ParsedCert[] = [leaf];
  for (;;) {
    const cur = path[path.length - 1]!;
    if (path.length > MAX_CHAIN_CERTS + 1) refuse('chain_too_long', 'certification path too long');
    const anchor = opts.anchors.find((a) => cur.node.checkIssued(a.node) && signedBy(cur, a));
    if (anchor) {
      path.push(anchor);
      break;
    }
    const nameMatches = [...opts.anchors, ...pool].filter((c) => !path.includes(c) && cur.node.checkIssued(c.node));
    const next = pool.find((c) => !path.some((p) => sameDer(p, c)) && cur.node.checkIssued(c.node) && signedBy(cur, c));
    if (!next) {
      if (nameMatches.length > 0) refuse('cert_signature_invalid', `signature on ${describe(cur)} does not verify with its issuer's key`);
      refuse('chain_untrusted', `no path from ${describe(leaf)} to a trusted root (issuer ${JSON.stringify(cur.px.issuer)} unknown)`);
    }
    if (isSelfIssued(next) && signedBy(next, next)) refuse('chain_untrusted', `chain ends at self-signed ${describe(next)}, which is not in the trust bundle`);
    path.push(next);
  }

  const now = opts.now;
  path.forEach((c, i) => {
    const role = i === 0 ? 'certificate' : i === path.length - 1 ? 'root' : 'intermediate';
    if (now < c.px.notBefore.getTime()) refuse('cert_not_yet_valid', `${role} ${describe(c)} is not valid before ${c.px.notBefore.toISOString()}`);
    if (now > c.px.notAfter.getTime()) refuse('cert_expired', `${role} ${describe(c)} expired at ${c.px.notAfter.toISOString()}`);
    checkKeyStrength(c, `${role} ${describe(c)}`);
    if (i < path.length - 1) {
      const alg = sigAlgOid(c.der);
      if (!alg || !GOOD_SIG_OIDS.has(alg)) refuse('cert_algorithm_weak', `${role} ${describe(c)} is signed with ${alg ?? 'an unknown algorithm'}`);
    }
    for (const e of c.px.extensions) {
      if (e.critical && !UNDERSTOOD_CRITICAL.has(e.type)) refuse('critical_extension_unsupported', `${role} ${describe(c)} has unsupported critical extension ${e.type}`);
    }
    let bc: { ca: boolean; pathLength?: number } | null;
    let ku: number | null;
    try {
      bc = basicConstraints(c);
      ku = keyUsage(c);
    } catch {
      refuse('cert_malformed', `${role} ${describe(c)} has malformed extensions`);
    }
    if (i === 0) {
      if (bc?.ca) refuse('leaf_is_ca', `certificate ${describe(c)} is a CA certificate, not an end entity`);
      if (ku === null ? opts.requireLeafKeyUsage : !(ku & px.KeyUsageFlags.digitalSignature)) {
        refuse('key_usage_missing', `certificate ${describe(c)} lacks keyUsage digitalSignature`);
      }
    } else {
      if (!bc?.ca) refuse('cert_not_ca', `${role} ${describe(c)} is not a CA (basicConstraints cA is not set)`);
      if (ku !== null && !(ku & px.KeyUsageFlags.keyCertSign)) refuse('key_usage_missing', `${role} ${describe(c)} lacks keyUsage keyCertSign`);
      // Intermediates below this CA (the leaf does not count): RFC 5280 §4.2.1.9.
      const below = i - 1;
      if (bc.pathLength !== undefined && below > bc.pathLength) refuse('path_len_exceeded', `${role} ${describe(c)} allows ${bc.pathLength} intermediates below it, path has ${below}`);
    }
  });
  return path;
}

// ---- proof of possession ---------------------------------------------------------------------------------
const MAX_SIG_B64 = 2048;

/** Verify `sigB64` (standard or url-safe base64) by the leaf's key over `message`. */
export function verifyPop(leaf: KeyObject, message: string, sigB64: string): boolean {
  if (typeof sigB64 !== 'string' || sigB64.length === 0 || sigB64.length > MAX_SIG_B64) return false;
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(sigB64)) return false;
  const sig = Buffer.from(sigB64.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  const data = Buffer.from(message, 'utf8');
  const t = leaf.asymmetricKeyType;
  try {
    if (t === 'ed25519') return cryptoVerify(null, data, leaf, sig);
    if (t === 'ec') {
      const curve = leaf.asymmetricKeyDetails?.namedCurve;
      const hash = curve === 'secp384r1' ? 'sha384' : curve === 'secp521r1' ? 'sha512' : 'sha256';
      // DER (node/OpenSSL default) or raw r‖s (WebCrypto): both bind the same key and message.
      return cryptoVerify(hash, data, { key: leaf, dsaEncoding: 'der' }, sig) || cryptoVerify(hash, data, { key: leaf, dsaEncoding: 'ieee-p1363' }, sig);
    }
    if (t === 'rsa') {
      return (
        cryptoVerify('sha256', data, { key: leaf, padding: constants.RSA_PKCS1_PADDING }, sig) ||
        cryptoVerify('sha256', data, { key: leaf, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig)
      );
    }
    if (t === 'rsa-pss') return cryptoVerify('sha256', data, { key: leaf, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig);
  } catch {
    return false;
  }
  return false;
}

// ---- revocation ---------------------------------------------------------------------------------------------
const UNDERSTOOD_CRL_CRITICAL = new Set<string>([OID.crlNumber, OID.authorityKeyId]);

/**
 * For every non-anchor certificate in `path`, find the CRLs issued by its issuer (name match), verify each
 * CRL's signature with that issuer's key and its validity window, then look the serial up.
 */
export async function checkRevocation(path: ParsedCert[], crls: px.X509Crl[], now: number, requireCrl: boolean): Promise<void> {
  for (let i = 0; i < path.length - 1; i++) {
    const cert = path[i]!;
    const issuer = path[i + 1]!;
    const mine = crls.filter((crl) => crl.issuer === issuer.px.subject);
    if (mine.length === 0) {
      if (requireCrl) refuse('crl_missing', `no CRL from ${describe(issuer)} to check ${describe(cert)}`);
      continue;
    }
    for (const crl of mine) {
      let ok = false;
      try {
        ok = await crl.verify({ publicKey: issuer.px });
      } catch {
        ok = false;
      }
      if (!ok) refuse('crl_invalid', `CRL claiming issuer ${describe(issuer)} is not signed by it`);
      const ku = keyUsage(issuer);
      if (ku !== null && !(ku & px.KeyUsageFlags.cRLSign)) refuse('crl_invalid', `${describe(issuer)} may not sign CRLs (no keyUsage cRLSign)`);
      for (const e of crl.extensions) if (e.critical && !UNDERSTOOD_CRL_CRITICAL.has(e.type)) refuse('crl_invalid', `CRL from ${describe(issuer)} has unsupported critical extension ${e.type}`);
      if (crl.thisUpdate.getTime() > now) refuse('crl_invalid', `CRL from ${describe(issuer)} is not valid before ${crl.thisUpdate.toISOString()}`);
      if (crl.nextUpdate && crl.nextUpdate.getTime() < now) refuse('crl_stale', `CRL from ${describe(issuer)} expired at ${crl.nextUpdate.toISOString()}; publish a fresh one`);
      if (crl.findRevoked(cert.px.serialNumber)) refuse('cert_revoked', `certificate ${describe(cert)} (serial ${cert.px.serialNumber}) is revoked`);
    }
  }
}
