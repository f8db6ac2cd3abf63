import { createHash, createPublicKey, randomBytes, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { RegistryError } from './errors.js';
import type { Verifier } from './verify-pool.js';

/**
 * Authentication pieces (SPEC §6): signature freshness + replay protection, Ed25519 verification off the
 * event loop, and constant-time secret comparison.
 */

/**
 * Freshness and replay cache for signed requests. A signature with timestamp `ts` is acceptable while
 * |now − ts| ≤ window and not seen before. Entries are bucketed by `ts` (10 s buckets) and a bucket is
 * dropped once every signature in it is stale anyway, so memory follows the request rate × 2·window.
 * Bounded: above `maxEntries` the oldest bucket is dropped early and `floorTs` rises, i.e. the guard
 * narrows the accepted window instead of forgetting signatures that could still be replayed.
 */
export class ReplayGuard {
  private readonly buckets = new Map<number, Set<number>>();
  private entries = 0;
  private floorTs = 0;
  static readonly BUCKET_MS = 10_000;

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries: number,
  ) {}

  get size(): number {
    return this.entries;
  }

  /** Throws `stale_signature` / `replayed_signature`; records nothing. */
  check(signatureB64: string, ts: number, nowMs: number): void {
    const skew = nowMs - ts;
    if (skew > this.windowMs || -skew > this.windowMs) {
      const secs = Math.round(Math.abs(skew) / 1000);
      throw new RegistryError(
        'stale_signature',
        `signature ts is ${secs} s in the ${skew > 0 ? 'past' : 'future'}; allowed clock skew is ${this.windowMs / 1000} s`,
      );
    }
    if (ts < this.floorTs) throw new RegistryError('stale_signature', 'signature ts is older than the replay cache retains (server under heavy load); sign again');
    if (this.buckets.get(Math.floor(ts / ReplayGuard.BUCKET_MS))?.has(replayKey(signatureB64))) {
      throw new RegistryError('replayed_signature', 'signature was already used; sign each request with a fresh ts');
    }
  }

  /** Record a verified signature. Returns false if it was recorded meanwhile (a concurrent replay). */
  record(signatureB64: string, ts: number, nowMs: number): boolean {
    this.prune(nowMs);
    const idx = Math.floor(ts / ReplayGuard.BUCKET_MS);
    let set = this.buckets.get(idx);
    if (!set) {
      set = new Set();
      this.buckets.set(idx, set);
    }
    const key = replayKey(signatureB64);
    if (set.has(key)) return false;
    set.add(key);
    this.entries++;
    while (this.entries > this.maxEntries && this.buckets.size > 1) this.dropOldest();
    return true;
  }

  private prune(nowMs: number): void {
    const oldestUseful = Math.floor((nowMs - this.windowMs) / ReplayGuard.BUCKET_MS);
    for (const [idx, set] of this.buckets) {
      if (idx < oldestUseful) {
        this.entries -= set.size;
        this.buckets.delete(idx);
      }
    }
  }

  private dropOldest(): void {
    let oldest = Infinity;
    for (const idx of this.buckets.keys()) oldest = Math.min(oldest, idx);
    const set = this.buckets.get(oldest)!;
    this.entries -= set.size;
    this.buckets.delete(oldest);
    this.floorTs = Math.max(this.floorTs, (oldest + 1) * ReplayGuard.BUCKET_MS);
  }
}

/** 48 bits of the signature's R half: unique per signed message for all practical purposes. */
function replayKey(signatureB64: string): number {
  const b = Buffer.from(signatureB64.slice(0, 8), 'base64');
  return b.length >= 6 ? b.readUIntBE(0, 6) : -1;
}

/**
 * In-process Ed25519 verification (used when `verifyWorkers` is 0; the default is the worker pool in
 * verify-pool.ts). `async` runs `crypto.verify` on the libuv thread pool, otherwise on the event loop.
 * Public keys are imported through JWK (≈15 µs; SPKI/DER import costs ≈160 µs under OpenSSL 3) into a
 * bounded LRU.
 */
export class SignatureVerifier implements Verifier {
  private readonly keys = new Map<string, KeyObject>();
  constructor(private readonly opts: { async: boolean; keyCacheSize: number }) {}

  verify(publicKeyB64: string, message: string, signature: Buffer): Promise<boolean> {
    let key: KeyObject;
    try {
      key = this.key(publicKeyB64);
    } catch {
      return Promise.resolve(false);
    }
    const data = Buffer.from(message);
    if (!this.opts.async) {
      try {
        return Promise.resolve(verify(null, data, key, signature));
      } catch {
        return Promise.resolve(false);
      }
    }
    return new Promise((resolve) => {
      try {
        verify(null, data, key, signature, (err, ok) => resolve(!err && ok));
      } catch {
        resolve(false);
      }
    });
  }

  async close(): Promise<void> {
    this.keys.clear();
  }

  private key(b64: string): KeyObject {
    let k = this.keys.get(b64);
    if (k) {
      // refresh LRU position
      this.keys.delete(b64);
      this.keys.set(b64, k);
      return k;
    }
    const x = b64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    k = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    if (this.keys.size >= this.opts.keyCacheSize) this.keys.delete(this.keys.keys().next().value!);
    this.keys.set(b64, k);
    return k;
  }
}

/** Decode a base64 Ed25519 signature (64 bytes) or throw `bad_signature`. */
export function decodeSignature(b64: string): Buffer {
  const buf = Buffer.from(b64, 'base64');
  if (buf.length !== 64 || buf.toString('base64') !== b64) throw new RegistryError('bad_signature', 'signature must be 64 bytes of standard base64');
  return buf;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time comparison of secrets of any length (compares SHA-256 digests). */
export function secretEquals(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * Admin authorisation: throws `unauthorized` unless an admin token is configured and `given` matches it.
 * With no token configured every admin path is refused.
 */
export function requireAdmin(configured: string | undefined, given: string | undefined, what: string): void {
  if (!configured) throw new RegistryError('unauthorized', `${what} needs the admin token, and this registry has none configured (admin API disabled)`);
  if (given === undefined) throw new RegistryError('unauthorized', `${what} needs admin_token`);
  if (!secretEquals(configured, given)) throw new RegistryError('unauthorized', `${what}: admin_token is wrong`);
}

/** Stored form of a network join token: `salt:hex(sha256(salt ‖ token))`. */
export function hashJoinToken(token: string, salt = randomBytes(16).toString('hex')): string {
  return `${salt}:${createHash('sha256').update(salt).update(token, 'utf8').digest('hex')}`;
}

/** Constant-time check of a join token against its stored hash. */
export function joinTokenMatches(stored: string, given: string): boolean {
  const i = stored.indexOf(':');
  if (i < 0) return false;
  const expected = Buffer.from(stored.slice(i + 1), 'hex');
  const actual = createHash('sha256').update(stored.slice(0, i)).update(given, 'utf8').digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
