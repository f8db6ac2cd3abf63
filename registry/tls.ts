import * as x509 from '@peculiar/x509';
import { createHash, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PilotError } from '../transport/errors.js';

/**
 * Registry TLS material (wire reference §1.10): either the operator's cert/key, or a self-signed ECDSA
 * P-256 certificate generated once and kept in the data dir so its fingerprint stays stable. Clients
 * pin the hex SHA-256 of the leaf certificate's DER (CA verification is not used).
 */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** hex SHA-256 of the leaf DER */
  fingerprint: string;
}

export class TlsError extends PilotError {}

export const CERT_FILE = 'tls-cert.pem';
export const KEY_FILE = 'tls-key.pem';

/** Hex SHA-256 of the first certificate in a PEM bundle (lower-case). */
export function fingerprintOf(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

export async function generateSelfSigned(hostnames: string[] = ['localhost']): Promise<{ cert: string; key: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomBytes(16).toString('hex').replace(/^[89a-f]/, '1'),
      name: 'CN=pilot-registry',
      notBefore: new Date(now.getTime() - 60_000),
      // pinned by fingerprint, so a long validity avoids a fingerprint change at renewal
      notAfter: new Date(now.getTime() + 10 * 365 * 86_400_000),
      signingAlgorithm: alg,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          ...hostnames.map((h) => ({ type: 'dns' as const, value: h })),
          { type: 'ip', value: '127.0.0.1' },
          { type: 'ip', value: '::1' },
        ]),
      ],
    },
    webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[1],
  );
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem') + '\n', key };
}

/**
 * Load the configured cert/key, or the persisted self-signed pair from `dataDir` (creating it on first
 * use). Without a data dir (in-memory registry) a fresh pair is generated per start.
 */
export async function loadTlsMaterial(opts: { dataDir: string | null; certFile?: string; keyFile?: string }): Promise<TlsMaterial> {
  if (opts.certFile && opts.keyFile) {
    let cert: string;
    let key: string;
    try {
      cert = readFileSync(opts.certFile, 'utf8');
      key = readFileSync(opts.keyFile, 'utf8');
    } catch (err) {
      throw new TlsError('tls_unreadable', `cannot read TLS cert/key: ${(err as Error).message}`);
    }
    return { cert, key, fingerprint: safeFingerprint(cert, opts.certFile) };
  }
  if (opts.dataDir === null) {
    const pair = await generateSelfSigned();
    return { ...pair, fingerprint: fingerprintOf(pair.cert) };
  }
  const certPath = join(opts.dataDir, CERT_FILE);
  const keyPath = join(opts.dataDir, KEY_FILE);
  if (existsSync(certPath) && existsSync(keyPath)) {
    const cert = readFileSync(certPath, 'utf8');
    return { cert, key: readFileSync(keyPath, 'utf8'), fingerprint: safeFingerprint(cert, certPath) };
  }
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const pair = await generateSelfSigned();
  atomicWrite(keyPath, pair.key, 0o600);
  atomicWrite(certPath, pair.cert, 0o644);
  return { ...pair, fingerprint: fingerprintOf(pair.cert) };
}

function safeFingerprint(pem: string, path: string): string {
  try {
    return fingerprintOf(pem);
  } catch (err) {
    throw new TlsError('tls_bad_cert', `${path} is not a PEM certificate: ${(err as Error).message}`);
  }
}

function atomicWrite(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}
