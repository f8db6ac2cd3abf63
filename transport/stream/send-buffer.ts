/**
 * The send side keeps bytes, not segments: data written by the application is copied into blocks and
 * segments are cut at transmit time, so a retransmission can be re-sliced when the segment size changes
 * (PMTU probing / black-hole fallback). Sequence numbers here are absolute (see seq.ts).
 */
export const BLOCK_SIZE = 64 * 1024;

/**
 * Recycles send-buffer blocks (one per host, bounded). Fresh 64 KiB buffers cost page faults on first
 * touch and GC pressure; a warm block makes the copy-in a plain memcpy.
 */
export class BlockPool {
  private readonly free: Buffer[] = [];
  constructor(private readonly max: number) {}
  get(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(BLOCK_SIZE);
  }
  put(b: Buffer): void {
    if (b.length === BLOCK_SIZE && this.free.length < this.max) this.free.push(b);
  }
  get size(): number {
    return this.free.length;
  }
}

const NO_POOL = new BlockPool(0);

export class SendBuffer {
  private blocks: Buffer[] = [];
  private starts: number[] = [];
  private lens: number[] = [];
  private head = 0;
  /** Sequence number of the first byte still held. */
  start: number;
  /** Sequence number one past the last byte written. */
  end: number;
  private cursor = 0;

  constructor(startSeq: number, private readonly pool: BlockPool = NO_POOL) {
    this.start = startSeq;
    this.end = startSeq;
  }

  get length(): number {
    return this.end - this.start;
  }

  /** Copy `len` bytes of `src` from `off` into the buffer. */
  append(src: Uint8Array, off: number, len: number): void {
    if (len <= 0) return;
    const n = this.blocks.length;
    if (n > this.head) {
      const last = n - 1;
      const blk = this.blocks[last]!;
      const used = this.lens[last]!;
      const room = blk.length - used;
      if (room > 0) {
        const k = Math.min(room, len);
        copyInto(blk, used, src, off, k);
        this.lens[last] = used + k;
        this.end += k;
        off += k;
        len -= k;
        if (len === 0) return;
      }
    }
    while (len > 0) {
      const blk = len >= BLOCK_SIZE * 4 ? Buffer.allocUnsafeSlow(len) : this.pool.get();
      const k = Math.min(blk.length, len);
      copyInto(blk, 0, src, off, k);
      this.blocks.push(blk);
      this.starts.push(this.end);
      this.lens.push(k);
      this.end += k;
      off += k;
      len -= k;
    }
  }

  /** Copy bytes [seq, seq+len) into `dst` at `dstOff`. Caller guarantees start ≤ seq and seq+len ≤ end. */
  copyOut(seq: number, len: number, dst: Buffer, dstOff: number): void {
    let i = this.find(seq);
    let off = seq - this.starts[i]!;
    while (len > 0) {
      const blk = this.blocks[i]!;
      const avail = this.lens[i]! - off;
      const k = avail < len ? avail : len;
      blk.copy(dst, dstOff, off, off + k);
      dstOff += k;
      len -= k;
      i++;
      off = 0;
    }
    this.cursor = i - 1;
  }

  /** One byte (for the SACK-ambiguity check); −1 beyond the end. */
  byteAt(seq: number): number {
    if (seq < this.start || seq >= this.end) return -1;
    const i = this.find(seq);
    return this.blocks[i]![seq - this.starts[i]!]!;
  }

  /** Return every block to the pool (connection closed). */
  release(): void {
    for (let i = this.head; i < this.blocks.length; i++) this.pool.put(this.blocks[i]!);
    this.blocks = [];
    this.starts = [];
    this.lens = [];
    this.head = 0;
    this.start = this.end;
  }

  /** Release everything before `seq` (acknowledged data). */
  trimTo(seq: number): void {
    if (seq <= this.start) return;
    if (seq > this.end) seq = this.end;
    this.start = seq;
    const n = this.blocks.length;
    while (this.head < n && this.starts[this.head]! + this.lens[this.head]! <= seq) {
      // Keep the tail block (it may still have room) unless everything is consumed.
      if (this.head === n - 1) break;
      this.pool.put(this.blocks[this.head]!);
      this.blocks[this.head] = EMPTY;
      this.head++;
    }
    if (this.head === n - 1 && this.starts[this.head]! + this.lens[this.head]! <= seq && seq === this.end) {
      // Everything acknowledged: drop the last block too and start fresh.
      this.pool.put(this.blocks[this.head]!);
      this.blocks.length = 0;
      this.starts.length = 0;
      this.lens.length = 0;
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > n) {
      this.blocks = this.blocks.slice(this.head);
      this.starts = this.starts.slice(this.head);
      this.lens = this.lens.slice(this.head);
      this.head = 0;
    }
    this.cursor = this.head;
  }

  private find(seq: number): number {
    const starts = this.starts;
    const lens = this.lens;
    let c = this.cursor;
    if (c < this.head || c >= starts.length) c = this.head;
    // Fast path: sequential access hits the cursor block or the next one.
    if (seq >= starts[c]!) {
      if (seq < starts[c]! + lens[c]!) return c;
      if (c + 1 < starts.length && seq < starts[c + 1]! + lens[c + 1]!) return c + 1;
    }
    let lo = this.head;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= seq) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

const EMPTY = Buffer.alloc(0);

function copyInto(dst: Buffer, dstOff: number, src: Uint8Array, off: number, len: number): void {
  if (Buffer.isBuffer(src)) src.copy(dst, dstOff, off, off + len);
  else dst.set(src.subarray(off, off + len), dstOff);
}
