/**
 * Port-444 trust handshake messages (wire reference §1.11): one JSON object per connection with the
 * fields type, node_id, public_key, justification, signature, reason, timestamp (all always present),
 * signature = b64 Ed25519 over `handshake:<sender>:<receiver>` (the same challenge for all four types),
 * timestamp in unix seconds, accepted within −5 min/+30 s.
 *
 * Hardening over v1 (wire-compatible): the signature is checked against the sender's key *from the
 * registry* (v1 trusted the key inside the message); the sender must be the node on the other end of the
 * authenticated tunnel; the message must fit the 4096-byte first segment; replays are remembered
 * (bounded) by the SHA-256 of the canonical message, and only after the signature verified.
 */
import { createHash } from 'node:crypto';
import { verifyEd25519, decodeB64Strict } from '../../transport/identity.js';
import { PilotError } from '../../transport/errors.js';

export const HANDSHAKE_MAX_BYTES = 4096;
export const HANDSHAKE_MAX_AGE_S = 5 * 60;
export const HANDSHAKE_MAX_SKEW_S = 30;
export const HANDSHAKE_REPLAY_TTL_MS = 10 * 60 * 1000;

export const HANDSHAKE_TYPES = ['handshake_request', 'handshake_accept', 'handshake_reject', 'handshake_revoke'] as const;
export type HandshakeType = (typeof HANDSHAKE_TYPES)[number];

export interface HandshakeMessage {
  type: HandshakeType;
  node_id: number;
  public_key: string;
  justification: string;
  signature: string;
  reason: string;
  timestamp: number;
}

/**
 * Rejected handshake message. Codes: `too_large`, `bad_json`, `bad_field`, `wrong_sender`, `stale`,
 * `future`, `unknown_sender`, `key_mismatch`, `bad_signature`, `replay`.
 */
export class HandshakeError extends PilotError {}

export function handshakeChallenge(sender: number, receiver: number): string {
  return `handshake:${sender}:${receiver}`;
}

/** Build and sign a message from `sender` to `receiver`. */
export function createHandshakeMessage(
  signer: { sign(message: string): Uint8Array; publicKeyB64: string },
  type: HandshakeType,
  sender: number,
  receiver: number,
  opts: { justification?: string; reason?: string; nowMs?: number } = {},
): HandshakeMessage {
  return {
    type,
    node_id: sender,
    public_key: signer.publicKeyB64,
    justification: opts.justification ?? '',
    signature: Buffer.from(signer.sign(handshakeChallenge(sender, receiver))).toString('base64'),
    reason: opts.reason ?? '',
    timestamp: Math.floor((opts.nowMs ?? Date.now()) / 1000),
  };
}

/** JSON in v1 field order. Throws HandshakeError('too_large') beyond 4096 bytes. */
export function encodeHandshakeMessage(m: HandshakeMessage): Buffer {
  const buf = Buffer.from(canonicalJson(m), 'utf8');
  if (buf.length > HANDSHAKE_MAX_BYTES) throw new HandshakeError('too_large', `handshake message of ${buf.length} bytes exceeds ${HANDSHAKE_MAX_BYTES}`);
  return buf;
}

function canonicalJson(m: HandshakeMessage): string {
  return JSON.stringify({
    type: m.type,
    node_id: m.node_id,
    public_key: m.public_key,
    justification: m.justification,
    signature: m.signature,
    reason: m.reason,
    timestamp: m.timestamp,
  });
}

/** Parse and shape-check a received message (no signature or time checks). */
export function parseHandshakeMessage(raw: Uint8Array): HandshakeMessage {
  if (raw.length > HANDSHAKE_MAX_BYTES) throw new HandshakeError('too_large', `handshake message of ${raw.length} bytes exceeds ${HANDSHAKE_MAX_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch {
    throw new HandshakeError('bad_json', 'handshake message is not valid UTF-8 JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HandshakeError('bad_json', 'handshake message must be a JSON object');
  const o = v as Record<string, unknown>;
  if (typeof o.type !== 'string' || !(HANDSHAKE_TYPES as readonly string[]).includes(o.type)) throw new HandshakeError('bad_field', 'unknown handshake type');
  if (typeof o.node_id !== 'number' || !Number.isInteger(o.node_id) || o.node_id < 0 || o.node_id > 0xffffffff) throw new HandshakeError('bad_field', 'node_id must be a uint32');
  if (typeof o.timestamp !== 'number' || !Number.isInteger(o.timestamp)) throw new HandshakeError('bad_field', 'timestamp must be an integer (unix seconds)');
  if (typeof o.signature !== 'string' || o.signature === '') throw new HandshakeError('bad_field', 'signature missing');
  const text = (k: string): string => {
    const x = o[k];
    if (x === undefined || x === null) return '';
    if (typeof x !== 'string') throw new HandshakeError('bad_field', `${k} must be a string`);
    return x;
  };
  return {
    type: o.type as HandshakeType,
    node_id: o.node_id,
    public_key: text('public_key'),
    justification: text('justification'),
    signature: o.signature,
    reason: text('reason'),
    timestamp: o.timestamp,
  };
}

export interface HandshakeVerifierOptions {
  /** Our node ID (the receiver in the signed challenge). */
  selfNode: () => number;
  /** The sender's registered Ed25519 public key (raw 32 bytes), or null when the registry has none. */
  publicKeyOf: (node: number) => Promise<Uint8Array | null>;
  now?: () => number;
  replayCacheSize?: number;
}

export class HandshakeVerifier {
  /** canonical SHA-256 → expiry (ms); insertion order = expiry order. */
  private readonly seen = new Map<string, number>();
  private readonly now: () => number;
  private readonly cap: number;
  readonly stats = { accepted: 0, rejected: 0, replayEvicted: 0 };

  constructor(private readonly opts: HandshakeVerifierOptions) {
    this.now = opts.now ?? Date.now;
    this.cap = opts.replayCacheSize ?? 4096;
  }

  /**
   * Verify raw bytes received on port 444. `tunnelPeer` is the authenticated node the connection came
   * from; the message must claim that node. Throws HandshakeError with the reason.
   */
  async verify(raw: Uint8Array, tunnelPeer?: number): Promise<HandshakeMessage> {
    try {
      const m = parseHandshakeMessage(raw);
      if (tunnelPeer !== undefined && m.node_id !== tunnelPeer) {
        throw new HandshakeError('wrong_sender', `message claims node ${m.node_id} but came from node ${tunnelPeer}`);
      }
      const nowS = Math.floor(this.now() / 1000);
      if (nowS - m.timestamp > HANDSHAKE_MAX_AGE_S) throw new HandshakeError('stale', 'handshake message older than 5 minutes');
      if (m.timestamp - nowS > HANDSHAKE_MAX_SKEW_S) throw new HandshakeError('future', 'handshake message more than 30 s in the future');
      const registryKey = await this.opts.publicKeyOf(m.node_id);
      if (!registryKey || registryKey.length !== 32) throw new HandshakeError('unknown_sender', `no registered key for node ${m.node_id}`);
      if (m.public_key !== '') {
        let carried: Buffer;
        try {
          carried = decodeB64Strict(m.public_key, 'public_key');
        } catch {
          throw new HandshakeError('bad_field', 'public_key is not base64');
        }
        if (!carried.equals(Buffer.from(registryKey))) throw new HandshakeError('key_mismatch', 'public_key differs from the registered key');
      }
      let sig: Buffer;
      try {
        sig = decodeB64Strict(m.signature, 'signature');
      } catch {
        throw new HandshakeError('bad_signature', 'signature is not base64');
      }
      if (!verifyEd25519(registryKey, handshakeChallenge(m.node_id, this.opts.selfNode()), sig)) {
        throw new HandshakeError('bad_signature', 'signature does not verify against the registered key');
      }
      this.checkReplay(m);
      this.stats.accepted++;
      return m;
    } catch (err) {
      this.stats.rejected++;
      if (err instanceof HandshakeError) throw err;
      throw new HandshakeError('unknown_sender', `cannot verify sender: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
  }

  private checkReplay(m: HandshakeMessage): void {
    const now = this.now();
    for (const [k, exp] of this.seen) {
      if (exp > now) break;
      this.seen.delete(k);
    }
    const key = createHash('sha256').update(canonicalJson(m)).digest('base64');
    if (this.seen.has(key)) throw new HandshakeError('replay', 'handshake message already seen');
    if (this.seen.size >= this.cap) {
      this.seen.delete(this.seen.keys().next().value!);
      this.stats.replayEvicted++;
    }
    this.seen.set(key, now + HANDSHAKE_REPLAY_TTL_MS);
  }
}
