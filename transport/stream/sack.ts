/**
 * v1 in-band SACK (wire reference §1.7): the payload of an ACK-flag packet is
 *   ASCII "SACK" ‖ count (u8, 1..4) ‖ count × (left u32 BE, right u32 BE)     (right = first byte after the block)
 * A v1 receiver treats *any* ACK-flag payload that parses this way as SACK, not data. We replicate the
 * parse rule for interop and make our own sender never emit data that would parse as SACK
 * (`sackAmbiguousPrefixLength`).
 */

export const SACK_MAGIC_0 = 0x53; // 'S'
export const SACK_MAGIC_1 = 0x41; // 'A'
export const SACK_MAGIC_2 = 0x43; // 'C'
export const SACK_MAGIC_3 = 0x4b; // 'K'
export const SACK_MAX_BLOCKS = 4;
export const SACK_HEADER_LEN = 5;
export const SACK_BLOCK_LEN = 8;

/** Wire (u32) block edges. */
export interface SackBlock {
  left: number;
  right: number;
}

/**
 * The v1 parse rule: returns the number of blocks (1..4) if `payload` is a SACK option, else 0.
 * Bytes after count×8 are ignored (as v1 does), which is exactly what makes data ambiguous.
 */
export function sackBlockCount(payload: Uint8Array): number {
  if (payload.length < SACK_HEADER_LEN) return 0;
  if (payload[0] !== SACK_MAGIC_0 || payload[1] !== SACK_MAGIC_1 || payload[2] !== SACK_MAGIC_2 || payload[3] !== SACK_MAGIC_3) {
    return 0;
  }
  const n = payload[4]!;
  if (n < 1 || n > SACK_MAX_BLOCKS) return 0;
  if (payload.length < SACK_HEADER_LEN + n * SACK_BLOCK_LEN) return 0;
  return n;
}

/** Left edge (u32) of block i of a payload for which sackBlockCount() > i. */
export function sackLeft(payload: Uint8Array, i: number): number {
  return readU32(payload, SACK_HEADER_LEN + i * SACK_BLOCK_LEN);
}

export function sackRight(payload: Uint8Array, i: number): number {
  return readU32(payload, SACK_HEADER_LEN + i * SACK_BLOCK_LEN + 4);
}

/** Decode into objects (tests, tools). Returns null if the payload is not a SACK option. */
export function decodeSack(payload: Uint8Array): SackBlock[] | null {
  const n = sackBlockCount(payload);
  if (n === 0) return null;
  const out: SackBlock[] = [];
  for (let i = 0; i < n; i++) out.push({ left: sackLeft(payload, i), right: sackRight(payload, i) });
  return out;
}

/** Encode 1..4 blocks (edges taken mod 2^32) into a SACK payload. */
export function encodeSack(blocks: readonly SackBlock[]): Buffer {
  const n = Math.min(blocks.length, SACK_MAX_BLOCKS);
  if (n < 1) throw new RangeError('SACK needs at least one block');
  const b = Buffer.allocUnsafe(SACK_HEADER_LEN + n * SACK_BLOCK_LEN);
  b[0] = SACK_MAGIC_0;
  b[1] = SACK_MAGIC_1;
  b[2] = SACK_MAGIC_2;
  b[3] = SACK_MAGIC_3;
  b[4] = n;
  for (let i = 0; i < n; i++) {
    b.writeUInt32BE(blocks[i]!.left >>> 0, SACK_HEADER_LEN + i * SACK_BLOCK_LEN);
    b.writeUInt32BE(blocks[i]!.right >>> 0, SACK_HEADER_LEN + i * SACK_BLOCK_LEN + 4);
  }
  return b;
}

/**
 * For a data segment that would start with `first5` (the first up-to-5 payload bytes) and be `len` long:
 * if that payload would parse as SACK on a v1 receiver, return a shorter length that cannot (4: the
 * bytes "SACK" alone are too short to parse, and the next segment then starts with the count byte, not
 * 'S'); otherwise return `len` unchanged.
 */
export function sackSafeLength(b0: number, b1: number, b2: number, b3: number, b4: number, len: number): number {
  if (len < SACK_HEADER_LEN + SACK_BLOCK_LEN) return len;
  if (b0 !== SACK_MAGIC_0 || b1 !== SACK_MAGIC_1 || b2 !== SACK_MAGIC_2 || b3 !== SACK_MAGIC_3) return len;
  if (b4 < 1 || b4 > SACK_MAX_BLOCKS) return len;
  if (len < SACK_HEADER_LEN + b4 * SACK_BLOCK_LEN) return len;
  return 4;
}

function readU32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
