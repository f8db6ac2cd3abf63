import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { IdentityError } from './errors.js';

// DER prefixes that wrap raw Ed25519 keys so node:crypto can import them (RFC 8410).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** An Ed25519 node identity. The raw 32-byte public key is what the registry and PILA frames carry. */
export class Identity {
  private constructor(
    private readonly privateKey: KeyObject,
    readonly publicKey: Buffer,
    private readonly seed: Buffer,
  ) {}

  static generate(): Identity {
    // Encode inside the key-generation job: exporting a freshly generated KeyObject can deadlock on
    // Node 20 when a GC during the export finalises the generation job (both lock the key's mutex).
    const { privateKey } = generateKeyPairSync('ed25519', { privateKeyEncoding: { format: 'jwk' }, publicKeyEncoding: { format: 'jwk' } } as never) as unknown as {
      privateKey: { d: string };
    };
    return Identity.fromSeed(Buffer.from(privateKey.d, 'base64url'));
  }

  static fromSeed(seed: Uint8Array): Identity {
    if (seed.length !== 32) throw new IdentityError('bad_key', `Ed25519 seed must be 32 bytes, got ${seed.length}`);
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const pub = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(SPKI_ED25519_PREFIX.length);
    return new Identity(privateKey, Buffer.from(pub), Buffer.from(seed));
  }

  /** Go's 64-byte private key form: seed ‖ public key. */
  static fromPrivateKey64(key: Uint8Array): Identity {
    if (key.length !== 64) throw new IdentityError('bad_key', `Ed25519 private key must be 64 bytes, got ${key.length}`);
    const id = Identity.fromSeed(key.subarray(0, 32));
    if (!id.publicKey.equals(Buffer.from(key.subarray(32)))) {
      throw new IdentityError('key_mismatch', 'public half of the private key does not match its seed');
    }
    return id;
  }

  get publicKeyB64(): string {
    return this.publicKey.toString('base64');
  }

  sign(message: Uint8Array | string): Buffer {
    return sign(null, typeof message === 'string' ? Buffer.from(message) : message, this.privateKey);
  }

  signB64(message: Uint8Array | string): string {
    return this.sign(message).toString('base64');
  }

  /** v1 identity file JSON (wire reference §1.15). */
  toJSON(): { private_key: string; public_key: string } {
    return {
      private_key: Buffer.concat([this.seed, this.publicKey]).toString('base64'),
      public_key: this.publicKey.toString('base64'),
    };
  }

  static fromJSON(value: unknown): Identity {
    if (typeof value !== 'object' || value === null) throw new IdentityError('bad_identity_file', 'identity must be a JSON object');
    const { private_key, public_key } = value as Record<string, unknown>;
    if (typeof private_key !== 'string') throw new IdentityError('bad_identity_file', 'identity file lacks private_key');
    const id = Identity.fromPrivateKey64(decodeB64Strict(private_key, 'private_key'));
    if (public_key !== undefined) {
      if (typeof public_key !== 'string' || !decodeB64Strict(public_key, 'public_key').equals(id.publicKey)) {
        throw new IdentityError('key_mismatch', 'public_key does not match private_key');
      }
    }
    return id;
  }

  /** Load the identity at `path`; with `create`, generate and save one (0600, dir 0700) if none exists. */
  static async load(path: string, opts: { create?: boolean } = {}): Promise<Identity> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && opts.create) {
        const id = Identity.generate();
        await id.save(path);
        return id;
      }
      throw new IdentityError('identity_unreadable', `cannot read identity ${path}: ${(err as Error).message}`, { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new IdentityError('bad_identity_file', `identity ${path} is not valid JSON`, { cause: err });
    }
    return Identity.fromJSON(json);
  }

  /** Atomic write with mode 0600 in a 0700 directory. */
  async save(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(this.toJSON(), null, 2) + '\n', { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  }
}

const publicKeyCache = new Map<string, KeyObject>();

/** Verify an Ed25519 signature against a raw 32-byte public key. Never throws on bad input. */
export function verifyEd25519(publicKey: Uint8Array, message: Uint8Array | string, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return verify(null, typeof message === 'string' ? Buffer.from(message) : message, ed25519PublicKey(publicKey), signature);
  } catch {
    return false;
  }
}

/** Import (and cache, bounded) a raw Ed25519 public key as a KeyObject. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  const k = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64');
  let key = publicKeyCache.get(k);
  if (!key) {
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
    if (publicKeyCache.size >= 4096) publicKeyCache.delete(publicKeyCache.keys().next().value!);
    publicKeyCache.set(k, key);
  }
  return key;
}

/** Standard base64 with padding, rejecting anything that does not round-trip. */
export function decodeB64Strict(text: string, field = 'value'): Buffer {
  const buf = Buffer.from(text, 'base64');
  if (buf.toString('base64') !== text) throw new IdentityError('bad_base64', `${field} is not valid base64`);
  return buf;
}
