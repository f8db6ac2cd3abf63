/**
 * Identity proofs for joining networks with an identity join rule (issue 6; the JoinProof fields are in
 * registry/identity/README.md): the daemon turns what the user points it at (an OIDC token inline, in a
 * file or printed by a command; an X.509-SVID or enterprise certificate with its private key; an LDAP user
 * with a password file; a webhook credential) into the proof the registry verifies.
 *
 * Secrets are read when a join needs them and never logged; errors name files and commands, never their
 * contents. Certificates: the chain is sent as PEM (leaf first) and the certificate key signs the
 * proof-of-possession challenge bound to network, node ID, Pilot key and the join's `ts`.
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, sign as cryptoSign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import type { JoinProofInput } from '../registry/client.js';
import { PilotError } from '../transport/errors.js';

/** Codes: `bad_value`, `proof_source_unreadable`, `token_command_failed`, `bad_certificate`, `bad_key`, `cert_key_mismatch`. */
export class ProofSourceError extends PilotError {}

/** Where a token or password comes from: exactly one of inline text, a file, a command's stdout. */
export interface SecretSource {
  inline?: string;
  file?: string;
  command?: string;
}

/** What the user gave for one identity join (IPC `network_join` fields, see parseProofSpec). */
export type ProofSpec =
  | { kind: 'oidc'; token: SecretSource }
  | { kind: 'jwt_svid'; token: SecretSource }
  | { kind: 'svid'; cert: string; key: string }
  | { kind: 'cert'; cert: string; key: string }
  | { kind: 'ldap'; user: string; password: SecretSource }
  | { kind: 'webhook'; token: SecretSource };

/** The join context a proof of possession binds (registry/identity/pop.ts). */
export interface PopContext {
  networkId: number;
  nodeId: number;
  nodePublicKey: Buffer;
  ts: number;
}

/** The challenge a certificate key signs (format of registry/identity/README.md, "Proof of possession"). */
export function popChallenge(ctx: PopContext): string {
  return ['pilot-join-pop:v1', `network:${ctx.networkId}`, `node:${ctx.nodeId}`, `key:${Buffer.from(ctx.nodePublicKey).toString('base64')}`, `ts:${ctx.ts}`].join('\n');
}

const MAX_SECRET = 16 * 1024;
const MAX_PEM = 64 * 1024;
const COMMAND_TIMEOUT_MS = 10_000;

type Fields = { [key: string]: unknown };

function str(a: Fields, key: string, max = 4096): string | undefined {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new ProofSourceError('bad_value', `${key} must be a non-empty string of at most ${max} characters`);
  return v;
}

function path(a: Fields, key: string): string | undefined {
  const p = str(a, key);
  if (p !== undefined && !isAbsolute(p) && !p.includes('-----BEGIN')) throw new ProofSourceError('bad_value', `${key} must be an absolute path (the daemon's working directory is not yours)`);
  return p;
}

function secret(a: Fields, inline: string, file: string | null, command: string | null, what: string): SecretSource | undefined {
  const s: SecretSource = {};
  const i = str(a, inline, MAX_SECRET);
  const f = file ? path(a, file) : undefined;
  const c = command ? str(a, command) : undefined;
  if (i !== undefined) s.inline = i;
  if (f !== undefined) s.file = f;
  if (c !== undefined) s.command = c;
  const n = Object.keys(s).length;
  if (n === 0) return undefined;
  if (n > 1) throw new ProofSourceError('bad_value', `give the ${what} once: inline, as a file or as a command`);
  return s;
}

/**
 * Read the proof fields of an IPC `network_join` request. Null when none is given (open/token/invite
 * joins). Fields: `oidc_token` | `oidc_token_file` | `oidc_token_command`; `jwt_svid` | `jwt_svid_file` |
 * `jwt_svid_command`; `svid_cert` + `svid_key`; `cert` + `cert_key` (PEM text or absolute paths);
 * `ldap_user` + (`ldap_password` | `ldap_password_file`); `webhook_token` | `webhook_token_file`.
 */
export function parseProofSpec(a: Fields): ProofSpec | null {
  const specs: ProofSpec[] = [];
  const oidc = secret(a, 'oidc_token', 'oidc_token_file', 'oidc_token_command', 'OIDC token');
  if (oidc) specs.push({ kind: 'oidc', token: oidc });
  const jwtSvid = secret(a, 'jwt_svid', 'jwt_svid_file', 'jwt_svid_command', 'JWT-SVID');
  if (jwtSvid) specs.push({ kind: 'jwt_svid', token: jwtSvid });
  const pair = (certKey: string, keyKey: string, kind: 'svid' | 'cert'): void => {
    const cert = path(a, certKey);
    const key = path(a, keyKey);
    if (cert === undefined && key === undefined) return;
    if (cert === undefined || key === undefined) throw new ProofSourceError('bad_value', `${certKey} and ${keyKey} go together (certificate chain and its private key)`);
    specs.push({ kind, cert, key });
  };
  pair('svid_cert', 'svid_key', 'svid');
  pair('cert', 'cert_key', 'cert');
  const user = str(a, 'ldap_user', 512);
  const password = secret(a, 'ldap_password', 'ldap_password_file', null, 'LDAP password');
  if (user !== undefined || password !== undefined) {
    if (user === undefined || password === undefined) throw new ProofSourceError('bad_value', 'ldap_user needs a password (ldap_password or ldap_password_file) and vice versa');
    specs.push({ kind: 'ldap', user, password });
  }
  const webhook = secret(a, 'webhook_token', 'webhook_token_file', null, 'webhook credential');
  if (webhook) specs.push({ kind: 'webhook', token: webhook });
  if (specs.length > 1) throw new ProofSourceError('bad_value', `give one identity proof per join (got ${specs.map((s) => s.kind).join(' and ')})`);
  return specs[0] ?? null;
}

/** The spec without inline secrets (what may be kept on disk for re-joins); null if it has one. */
export function persistableSpec(spec: ProofSpec): ProofSpec | null {
  switch (spec.kind) {
    case 'oidc':
    case 'jwt_svid':
    case 'webhook':
      return spec.token.inline === undefined ? spec : null;
    case 'ldap':
      return spec.password.inline === undefined ? spec : null;
    case 'svid':
    case 'cert':
      return spec.cert.includes('-----BEGIN') || spec.key.includes('-----BEGIN') ? null : spec;
  }
}

/** A short description for logs and `network identities` (paths and commands, never secrets). */
export function describeSpec(spec: ProofSpec): Record<string, string> {
  const src = (s: SecretSource): string => (s.file ? `file ${s.file}` : s.command ? 'command' : 'inline');
  switch (spec.kind) {
    case 'oidc':
    case 'jwt_svid':
    case 'webhook':
      return { kind: spec.kind, source: src(spec.token) };
    case 'ldap':
      return { kind: 'ldap', user: spec.user, source: src(spec.password) };
    case 'svid':
    case 'cert':
      return { kind: spec.kind, cert: spec.cert.includes('-----BEGIN') ? 'inline' : spec.cert };
  }
}

/** Read a secret file: bounded, trailing whitespace trimmed, contents never in errors. */
export async function readSecretFile(file: string, max = MAX_SECRET): Promise<string> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    throw new ProofSourceError('proof_source_unreadable', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (buf.length > max) throw new ProofSourceError('proof_source_unreadable', `${file} is larger than ${max} bytes`);
  const text = buf.toString('utf8').trim();
  if (text === '') throw new ProofSourceError('proof_source_unreadable', `${file} is empty`);
  return text;
}

/** Run a token command (`/bin/sh -c`), bounded in time and output; its stdout (trimmed) is the secret. */
export function runSecretCommand(command: string, timeoutMs = COMMAND_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', command], { timeout: timeoutMs, maxBuffer: MAX_SECRET, windowsHide: true }, (err, stdout) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why = e.killed ? `timed out after ${timeoutMs} ms` : typeof e.code === 'number' ? `exited with status ${e.code}` : (e.code ?? 'failed');
        // stderr is not repeated: a failing credential helper may print what it was handling.
        reject(new ProofSourceError('token_command_failed', `token command ${why}`));
        return;
      }
      const text = String(stdout).trim();
      if (text === '') reject(new ProofSourceError('token_command_failed', 'token command printed nothing'));
      else resolve(text);
    });
  });
}

export async function readSecret(s: SecretSource): Promise<string> {
  if (s.inline !== undefined) return s.inline;
  if (s.file !== undefined) return readSecretFile(s.file);
  return runSecretCommand(s.command!);
}

/** The `exp` of a JWT in unix ms, read without verification (only to schedule renewal); null if none. */
export function jwtExpiry(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' && Number.isFinite(payload.exp) ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * A token the daemon can fetch again (file re-read, command re-run), cached until shortly before its
 * `exp`. `renewAt()` says when to fetch the next one.
 */
export class TokenSource {
  private token: string | null = null;
  private exp: number | null = null;

  constructor(
    readonly source: SecretSource,
    private readonly now: () => number = Date.now,
  ) {}

  /** A token that is not about to expire (fetches when needed). */
  async get(): Promise<string> {
    if (this.token !== null && (this.exp === null || this.exp - this.now() > 60_000)) return this.token;
    return this.fetch();
  }

  /** Fetch now (file re-read / command re-run). */
  async fetch(): Promise<string> {
    const t = await readSecret(this.source);
    this.token = t;
    this.exp = jwtExpiry(t);
    return t;
  }

  get expiresAt(): number | null {
    return this.exp;
  }

  /** When to renew: a tenth of the remaining lifetime before expiry, at least 60 s before; null = never. */
  renewAt(): number | null {
    if (this.exp === null || this.source.inline !== undefined) return null;
    const left = this.exp - this.now();
    return this.now() + Math.max(0, left - Math.max(60_000, left / 10));
  }
}

// ----- certificates ---------------------------------------------------------------------------------

async function pemOf(src: string, what: string): Promise<string> {
  if (src.includes('-----BEGIN')) {
    if (src.length > MAX_PEM) throw new ProofSourceError('bad_value', `${what} is larger than ${MAX_PEM} bytes`);
    return src;
  }
  return readSecretFile(src, MAX_PEM);
}

export interface CertMaterial {
  /** PEM chain, leaf first (as given). */
  chainPem: string;
  key: KeyObject;
  /** Leaf subject and SAN, for messages. */
  subject: string;
  notAfter: number;
}

/** Load a certificate chain and its private key; refuse a key that does not belong to the leaf. */
export async function loadCertMaterial(certSrc: string, keySrc: string): Promise<CertMaterial> {
  const chainPem = await pemOf(certSrc, 'certificate');
  const keyPem = await pemOf(keySrc, 'private key');
  const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(chainPem);
  if (!first) throw new ProofSourceError('bad_certificate', `${certSrc.includes('-----BEGIN') ? 'the certificate' : certSrc} holds no PEM certificate`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(first[0]);
  } catch {
    throw new ProofSourceError('bad_certificate', `${certSrc.includes('-----BEGIN') ? 'the certificate' : certSrc}: the first certificate does not parse`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    // never echo the key material
    throw new ProofSourceError('bad_key', `${keySrc.includes('-----BEGIN') ? 'the private key' : keySrc} is not a PEM private key`);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new ProofSourceError('cert_key_mismatch', `the private key does not belong to the certificate ${leaf.subject.replace(/\n/g, ', ')}`);
  }
  return { chainPem, key, subject: leaf.subject.replace(/\n/g, ', '), notAfter: Date.parse(leaf.validTo) };
}

/** Sign the proof-of-possession challenge with the certificate key (base64; ECDSA DER, RSA PKCS#1 v1.5). */
export function signPop(key: KeyObject, ctx: PopContext): string {
  const data = Buffer.from(popChallenge(ctx), 'utf8');
  const type = key.asymmetricKeyType;
  let hash: string | null;
  if (type === 'ed25519' || type === 'ed448') hash = null;
  else if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    hash = curve === 'secp384r1' ? 'sha384' : curve === 'secp521r1' ? 'sha512' : 'sha256';
  } else if (type === 'rsa') hash = 'sha256';
  else throw new ProofSourceError('bad_key', `unsupported certificate key type ${type ?? 'unknown'} (use Ed25519, ECDSA P-256/384/521 or RSA)`);
  return cryptoSign(hash, data, key).toString('base64');
}

// ----- building the proof ---------------------------------------------------------------------------

/** Load the material of `spec` and return a builder for the request's `ts` (the PoP binds it). */
export async function prepareProof(
  spec: ProofSpec,
  base: Omit<PopContext, 'ts'>,
  tokens?: TokenSource,
): Promise<(ts: number) => JoinProofInput> {
  switch (spec.kind) {
    case 'oidc': {
      const t = await (tokens ?? new TokenSource(spec.token)).get();
      return () => ({ oidc_token: t });
    }
    case 'jwt_svid': {
      const t = await (tokens ?? new TokenSource(spec.token)).get();
      return () => ({ jwt_svid: t });
    }
    case 'webhook': {
      const t = await (tokens ?? new TokenSource(spec.token)).get();
      return () => ({ webhook_token: t });
    }
    case 'ldap': {
      const password = await readSecret(spec.password);
      return () => ({ ldap_user: spec.user, ldap_password: password });
    }
    case 'svid':
    case 'cert': {
      const m = await loadCertMaterial(spec.cert, spec.key);
      const field = spec.kind === 'svid' ? 'svid_chain' : 'cert_chain';
      return (ts) => ({ [field]: m.chainPem, pop_signature: signPop(m.key, { ...base, ts }) });
    }
  }
}
