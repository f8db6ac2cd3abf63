import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';

/**
 * Ed25519 verification worker (see verify-pool.ts). Receives batches
 * `{id, keys: b64[], msgs: string[], sigs: Uint8Array(64·n)}` and answers `{id, ok: Uint8Array(n)}`.
 * libsodium (sodium-native) rather than node:crypto: measured ≈100 µs vs ≈180 µs per verify on the
 * reference machine, and it takes the raw 32-byte key (no KeyObject import or key cache). It also refuses
 * non-canonical signatures and small-order keys.
 */
interface Batch {
  id: number;
  keys: string[];
  msgs: string[];
  sigs: Uint8Array;
}

interface Sodium {
  crypto_sign_verify_detached(signature: Buffer, message: Buffer, publicKey: Buffer): boolean;
}
const sodium = createRequire(import.meta.url)('sodium-native') as Sodium;

parentPort!.on('message', (b: Batch) => {
  const ok = new Uint8Array(b.keys.length);
  const sigs = Buffer.from(b.sigs.buffer, b.sigs.byteOffset, b.sigs.byteLength);
  for (let i = 0; i < b.keys.length; i++) {
    try {
      const key = Buffer.from(b.keys[i]!, 'base64');
      ok[i] = key.length === 32 && sodium.crypto_sign_verify_detached(sigs.subarray(i * 64, i * 64 + 64), Buffer.from(b.msgs[i]!), key) ? 1 : 0;
    } catch {
      ok[i] = 0;
    }
  }
  parentPort!.postMessage({ id: b.id, ok }, [ok.buffer]);
});
