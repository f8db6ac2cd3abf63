import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { TunnelCryptoError } from './errors.js';
import { NONCE_LEN, TAG_LEN, X25519_KEY_LEN } from './frames.js';

/**
 * Tunnel crypto (wire reference §1.5–1.6) on node:crypto only: X25519, SHA-256 key derivation,
 * AES-256-GCM with no associated data, and the PILA signed message.
 */

// RFC 8410 DER wrappers so node:crypto can import raw X25519 keys.
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const KDF_LABEL = Buffer.from('pilot-tunnel-v1:', 'ascii');
const AUTH_LABEL = Buffer.from('auth', 'ascii');
const ALGORITHM = 'aes-256-gcm';

/** Our X25519 key pair: one per Tunnel instance (v1: one per process lifetime, never persisted). */
export class X25519KeyPair {
  private constructor(
    private readonly privateKey: KeyObject,
    /** Raw 32-byte public key, as carried in PILK/PILA. */
    readonly publicKey: Buffer,
  ) {}

  static generate(): X25519KeyPair {
    const { privateKey, publicKey } = generateKeyPairSync('x25519');
    return new X25519KeyPair(privateKey, rawPublic(publicKey));
  }

  /** From a raw 32-byte private scalar (tests, deterministic setups). */
  static fromPrivate(raw: Uint8Array): X25519KeyPair {
    if (raw.length !== X25519_KEY_LEN) throw new TunnelCryptoError('bad_key', `X25519 private key must be 32 bytes, got ${raw.length}`);
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
    return new X25519KeyPair(privateKey, rawPublic(createPublicKey(privateKey)));
  }

  /**
   * X25519(own private, peer public). Rejects the all-zero output of low-order peer keys (as Go's ecdh
   * does) and malformed keys with `weak_key` / `bad_key`.
   */
  sharedSecret(peerPublic: Uint8Array): Buffer {
    if (peerPublic.length !== X25519_KEY_LEN) throw new TunnelCryptoError('bad_key', `X25519 public key must be 32 bytes, got ${peerPublic.length}`);
    let shared: Buffer;
    try {
      const publicKey = createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, peerPublic]), format: 'der', type: 'spki' });
      shared = diffieHellman({ privateKey: this.privateKey, publicKey });
    } catch (err) {
      // OpenSSL refuses all-zero results itself; either way the peer's key is unusable.
      throw new TunnelCryptoError('weak_key', 'X25519 agreement failed (low-order or invalid peer key)', { cause: err });
    }
    if (isAllZero(shared)) throw new TunnelCryptoError('weak_key', 'X25519 shared secret is all zero');
    return shared;
  }
}

function rawPublic(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(SPKI_X25519_PREFIX.length));
}

function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}

/** AEAD key = SHA-256(ASCII "pilot-tunnel-v1:" ‖ shared secret) (§1.5; same key both directions). */
export function deriveAeadKey(shared: Uint8Array): Buffer {
  return createHash('sha256').update(KDF_LABEL).update(shared).digest();
}

/** The 40 bytes a PILA signature covers: ASCII "auth" (no colon) ‖ node id (4, BE) ‖ X25519 public key (§1.6). */
export function authSignedMessage(node: number, x25519: Uint8Array): Buffer {
  if (x25519.length !== X25519_KEY_LEN) throw new TunnelCryptoError('bad_key', 'X25519 public key must be 32 bytes');
  const msg = Buffer.allocUnsafe(4 + 4 + X25519_KEY_LEN);
  AUTH_LABEL.copy(msg, 0);
  msg.writeUInt32BE(node >>> 0, 4);
  msg.set(x25519, 8);
  return msg;
}

/** Result of sealing: ciphertext and tag as separate buffers, ready for a gather send. */
export interface Sealed {
  ciphertext: Buffer;
  tag: Buffer;
}

/**
 * AES-256-GCM under one tunnel key, no associated data (v1). The key is imported once as a KeyObject
 * (per-packet cost measured equal to raw key bytes, see bench/tunnel-crypto.ts; the bytes then live
 * outside the JS heap). The per-packet cost is dominated by creating the cipher object, which
 * node:crypto offers no way to reuse with a new IV.
 */
export class AeadKey {
  private readonly key: KeyObject;

  constructor(raw: Uint8Array) {
    if (raw.length !== 32) throw new TunnelCryptoError('bad_key', `AES-256 key must be 32 bytes, got ${raw.length}`);
    this.key = createSecretKey(raw);
  }

  static fromSharedSecret(shared: Uint8Array): AeadKey {
    return new AeadKey(deriveAeadKey(shared));
  }

  /** Encrypt `plaintext` under `nonce` (12 bytes). Returns fresh ciphertext and tag buffers. */
  seal(nonce: Uint8Array, plaintext: Uint8Array): Sealed {
    const cipher = createCipheriv(ALGORITHM, this.key, nonce);
    const ciphertext = cipher.update(plaintext);
    cipher.final(); // GCM is a stream mode: final() emits nothing but computes the tag
    return { ciphertext, tag: cipher.getAuthTag() };
  }

  /** Decrypt and authenticate. Returns the plaintext, or null if the tag does not verify. Never throws on bad input. */
  open(nonce: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array): Buffer | null {
    if (nonce.length !== NONCE_LEN || tag.length !== TAG_LEN) return null;
    try {
      const decipher = createDecipheriv(ALGORITHM, this.key, nonce, { authTagLength: TAG_LEN });
      decipher.setAuthTag(tag);
      const plaintext = decipher.update(ciphertext);
      decipher.final(); // throws if the tag does not verify
      return plaintext;
    } catch {
      return null;
    }
  }
}
