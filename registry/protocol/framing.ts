import { isUtf8 } from 'node:buffer';
import { RegistryError } from '../errors.js';

/** Registry frames: 4-byte big-endian length ‖ UTF-8 JSON object (wire reference §1.10). */
export const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * Incremental decoder for length-prefixed frames. `push()` returns the complete frame bodies found so far.
 * A length above the cap raises `too_large` (the stream cannot be resynchronised after that, so callers
 * answer and close). Bodies are returned as views into the received chunks when possible.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1; // body length of the frame being assembled, -1 while reading the header

  constructor(private readonly maxFrame = MAX_FRAME_BYTES) {}

  /** Bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (chunk.length === 0) return out;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const len = this.peekLength();
        if (len > this.maxFrame) {
          this.reset();
          throw new RegistryError('too_large', `frame of ${len} bytes exceeds the ${this.maxFrame}-byte limit`);
        }
        this.consume(4);
        this.need = len;
      }
      if (this.buffered < this.need) break;
      out.push(this.consume(this.need));
      this.need = -1;
    }
    return out;
  }

  reset(): void {
    this.chunks = [];
    this.buffered = 0;
    this.need = -1;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const head = Buffer.concat(this.chunks, Math.min(this.buffered, 8)); // header split across chunks
    return head.readUInt32BE(0);
  }

  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      this.buffered -= n;
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length, n - off);
      c.copy(out, off, 0, take);
      off += take;
      if (take === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(take);
    }
    this.buffered -= n;
    return out;
  }
}

/** Encode one JSON value as a frame. */
export function encodeFrame(value: unknown): Buffer {
  const text = JSON.stringify(value);
  const len = Buffer.byteLength(text);
  const buf = Buffer.allocUnsafe(4 + len);
  buf.writeUInt32BE(len, 0);
  buf.write(text, 4, 'utf8');
  return buf;
}

/**
 * Parse a frame body into a JSON object. Rejects invalid UTF-8, invalid JSON and non-objects with
 * `bad_request`; never throws anything else.
 */
export function parseFrameObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) throw new RegistryError('bad_request', 'empty frame: expected a JSON object');
  if (!isUtf8(body)) throw new RegistryError('bad_request', 'frame is not valid UTF-8');
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RegistryError('bad_request', 'frame is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RegistryError('bad_request', 'frame must be a JSON object');
  }
  return value as Record<string, unknown>;
}
