/**
 * A FIFO of received chunks that frame decoders read from without re-concatenating everything on each
 * push (a naive `Buffer.concat(buffered, chunk)` per chunk is O(n²) on a 16 MiB frame arriving in 4 KiB
 * pieces). Reads that fall inside one chunk are zero-copy subarrays.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private first = 0; // index of the first live chunk (avoids O(n) Array.shift on many small chunks)
  private head = 0; // offset into chunks[first]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.total += chunk.length;
  }

  /** Byte at `offset` from the front (caller guarantees offset < length). */
  byteAt(offset: number): number {
    let off = offset + this.head;
    for (let i = this.first; i < this.chunks.length; i++) {
      const c = this.chunks[i]!;
      if (off < c.length) return c[off]!;
      off -= c.length;
    }
    throw new RangeError('ByteQueue.byteAt past end');
  }

  readUInt16BE(offset: number): number {
    return (this.byteAt(offset) << 8) | this.byteAt(offset + 1);
  }

  readUInt32BE(offset: number): number {
    return ((this.byteAt(offset) << 24) >>> 0) + ((this.byteAt(offset + 1) << 16) | (this.byteAt(offset + 2) << 8) | this.byteAt(offset + 3));
  }

  /** Remove and return the first `n` bytes (caller guarantees n ≤ length). */
  take(n: number): Buffer {
    if (n > this.total) throw new RangeError('ByteQueue.take past end');
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.first]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      this.total -= n;
      if (this.head === first.length) this.dropFirst();
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    while (written < n) {
      const c = this.chunks[this.first]!;
      const avail = c.length - this.head;
      const want = Math.min(avail, n - written);
      c.copy(out, written, this.head, this.head + want);
      written += want;
      this.head += want;
      if (this.head === c.length) this.dropFirst();
    }
    this.total -= n;
    return out;
  }

  /** Remove the first `n` bytes as slices of the queued chunks (no copy; caller guarantees n ≤ length). */
  takeSlices(n: number): Buffer[] {
    if (n > this.total) throw new RangeError('ByteQueue.takeSlices past end');
    const out: Buffer[] = [];
    this.total -= n;
    while (n > 0) {
      const c = this.chunks[this.first]!;
      const k = Math.min(c.length - this.head, n);
      out.push(c.subarray(this.head, this.head + k));
      n -= k;
      this.head += k;
      if (this.head === c.length) this.dropFirst();
    }
    return out;
  }

  skip(n: number): void {
    let left = Math.min(n, this.total);
    this.total -= left;
    while (left > 0) {
      const c = this.chunks[this.first]!;
      const avail = c.length - this.head;
      if (avail > left) {
        this.head += left;
        return;
      }
      left -= avail;
      this.dropFirst();
    }
  }

  private dropFirst(): void {
    this.chunks[this.first] = EMPTY;
    this.first++;
    this.head = 0;
    if (this.first === this.chunks.length) {
      this.chunks = [];
      this.first = 0;
    } else if (this.first >= 1024 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }

  clear(): void {
    this.chunks = [];
    this.first = 0;
    this.head = 0;
    this.total = 0;
  }
}

const EMPTY = Buffer.alloc(0);
