import type { Writable } from 'node:stream';

const CHUNK = Buffer.alloc(1 << 20, 0x5a);

/** Write `bytes` to a stream in 1 MiB chunks, honouring back-pressure. */
export async function pumpWrites(w: Writable, bytes: number, chunk = CHUNK): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!w.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => (w.off('error', onError), resolve());
        const onError = (e: Error) => (w.off('drain', onDrain), reject(e));
        w.once('drain', onDrain);
        w.once('error', onError);
      });
    }
  }
}
