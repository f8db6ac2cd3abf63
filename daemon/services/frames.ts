/**
 * The 8-byte typed frame shared by data exchange (1001) and task submission (1003), wire reference
 * §1.14: `type u32 BE ‖ length u32 BE ‖ payload`, payload ≤ 16 MiB.
 */
import type { Duplex } from 'node:stream';
import { ByteQueue } from '../ipc/bytequeue.js';
import { ServiceError } from './types.js';

export const TYPED_FRAME_HEADER = 8;
export const MAX_TYPED_FRAME_PAYLOAD = 16 * 1024 * 1024;

export interface TypedFrame {
  type: number;
  payload: Buffer;
}

export function encodeTypedFrame(type: number, payload: Uint8Array): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xffffffff) throw new ServiceError('bad_frame', `frame type out of range: ${type}`);
  if (payload.length > MAX_TYPED_FRAME_PAYLOAD) {
    throw new ServiceError('frame_too_large', `frame payload of ${payload.length} bytes exceeds ${MAX_TYPED_FRAME_PAYLOAD}`);
  }
  const out = Buffer.allocUnsafe(TYPED_FRAME_HEADER + payload.length);
  out.writeUInt32BE(type, 0);
  out.writeUInt32BE(payload.length, 4);
  out.set(payload, TYPED_FRAME_HEADER);
  return out;
}

/** Streaming decoder; an over-size length fails at the header (nothing is buffered for it) and stays failed. */
export class TypedFrameDecoder {
  private readonly queue = new ByteQueue();
  private failed: ServiceError | null = null;

  constructor(private readonly maxPayload = MAX_TYPED_FRAME_PAYLOAD) {}

  get buffered(): number {
    return this.queue.length;
  }

  push(chunk: Uint8Array): TypedFrame[] {
    if (this.failed) throw this.failed;
    this.queue.push(chunk);
    const out: TypedFrame[] = [];
    while (this.queue.length >= TYPED_FRAME_HEADER) {
      const len = this.queue.readUInt32BE(4);
      if (len > this.maxPayload) {
        this.failed = new ServiceError('frame_too_large', `frame payload of ${len} bytes exceeds ${this.maxPayload}`);
        this.queue.clear();
        throw this.failed;
      }
      if (this.queue.length < TYPED_FRAME_HEADER + len) break;
      const type = this.queue.readUInt32BE(0);
      this.queue.skip(TYPED_FRAME_HEADER);
      out.push({ type, payload: this.queue.take(len) });
    }
    return out;
  }
}

/**
 * Read whole frames from a stream, one at a time, with back-pressure (the next chunk is pulled only
 * after the consumer is done with the previous frames). Ends at EOF; throws ServiceError on bad input
 * and rethrows stream errors. Neither EOF nor an early `break` destroys the stream (the default async
 * iterator would, losing replies still buffered on the writable side).
 */
export async function* readFrames<F>(conn: Duplex, decoder: { push(chunk: Uint8Array): F[] }): AsyncGenerator<F> {
  for await (const chunk of conn.iterator({ destroyOnReturn: false })) {
    for (const f of decoder.push(chunk as Buffer)) yield f;
  }
}
