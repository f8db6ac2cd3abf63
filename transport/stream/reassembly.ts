/**
 * Receive-side out-of-order store. Segments are kept sorted and non-overlapping (views into the
 * received packet buffers, no copies); merged ranges are kept alongside for SACK generation.
 * Sequence numbers are absolute.
 */
export const enum InsertResult {
  Stored = 0,
  Duplicate = 1,
  Full = 2,
}

export class Reassembly {
  private starts: number[] = [];
  private datas: Buffer[] = [];
  private head = 0;
  /** Merged ranges [rs[i], re[i]) for SACK. */
  private rs: number[] = [];
  private re: number[] = [];
  /** Starts of segments stored since the last SACK report, newest last. */
  private touched: number[] = [];
  bytes = 0;

  constructor(private readonly maxSegments: number) {}

  get count(): number {
    return this.starts.length - this.head;
  }

  get empty(): boolean {
    return this.starts.length === this.head;
  }

  get rangeCount(): number {
    return this.rs.length;
  }

  insert(start: number, data: Buffer): InsertResult {
    let end = start + data.length;
    const starts = this.starts;
    // First stored segment with start > `start` (an equal start is the left neighbour).
    let lo = this.head;
    let hi = starts.length;
    if (hi > lo && starts[hi - 1]! <= start) lo = hi; // common case: append at the end
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid]! <= start) lo = mid + 1;
      else hi = mid;
    }
    const pos = lo;
    if (pos > this.head) {
      const lEnd = starts[pos - 1]! + this.datas[pos - 1]!.length;
      if (lEnd >= end) return InsertResult.Duplicate;
      if (lEnd > start) {
        data = data.subarray(lEnd - start);
        start = lEnd;
      }
    }
    // Drop stored segments the new one covers entirely; trim at the first partial overlap.
    let rm = 0;
    while (pos + rm < starts.length) {
      const s = starts[pos + rm]!;
      if (s >= end) break;
      const e = s + this.datas[pos + rm]!.length;
      if (e <= end) {
        rm++;
        continue;
      }
      end = s;
      data = data.subarray(0, end - start);
      break;
    }
    if (data.length === 0) return InsertResult.Duplicate;
    if (rm === 0 && this.count >= this.maxSegments) return InsertResult.Full;
    for (let i = 0; i < rm; i++) this.bytes -= this.datas[pos + i]!.length;
    if (pos === starts.length) {
      starts.push(start);
      this.datas.push(data);
    } else {
      starts.splice(pos, rm, start);
      this.datas.splice(pos, rm, data);
    }
    this.bytes += data.length;
    this.addRange(start, end);
    if (this.touched.length < 64) this.touched.push(start);
    return InsertResult.Stored;
  }

  /** If the first stored segment starts at or before `rcvNxt`, remove and return its bytes from `rcvNxt`. */
  shift(rcvNxt: number): Buffer | null {
    while (this.head < this.starts.length) {
      const s = this.starts[this.head]!;
      if (s > rcvNxt) return null;
      const d = this.datas[this.head]!;
      this.bytes -= d.length;
      this.datas[this.head] = EMPTY;
      this.head++;
      if (this.head === this.starts.length) {
        this.starts.length = 0;
        this.datas.length = 0;
        this.head = 0;
      } else if (this.head > 256 && this.head * 2 > this.starts.length) {
        this.starts = this.starts.slice(this.head);
        this.datas = this.datas.slice(this.head);
        this.head = 0;
      }
      const e = s + d.length;
      if (e <= rcvNxt) continue; // fully duplicate
      this.trimRanges(e);
      return s < rcvNxt ? d.subarray(rcvNxt - s) : d;
    }
    return null;
  }

  /** Drop ranges below `seq` (delivered in order). */
  trimRanges(seq: number): void {
    let n = 0;
    while (n < this.rs.length && this.re[n]! <= seq) n++;
    if (n > 0) {
      this.rs.splice(0, n);
      this.re.splice(0, n);
    }
    if (this.rs.length > 0 && this.rs[0]! < seq) this.rs[0] = seq;
  }

  /**
   * Fill `out` with up to `max` SACK blocks as [left, right] pairs (absolute): the ranges that received
   * data since the previous call first (newest first), then the lowest ranges. Returns the block count.
   */
  sackBlocks(out: number[], max: number): number {
    out.length = 0;
    let n = 0;
    const seen: number[] = [];
    for (let i = this.touched.length - 1; i >= 0 && n < max; i--) {
      const r = this.rangeIndex(this.touched[i]!);
      if (r < 0 || seen.includes(r)) continue;
      seen.push(r);
      out.push(this.rs[r]!, this.re[r]!);
      n++;
    }
    for (let r = 0; r < this.rs.length && n < max; r++) {
      if (seen.includes(r)) continue;
      out.push(this.rs[r]!, this.re[r]!);
      n++;
    }
    this.touched.length = 0;
    return n;
  }

  /** Number of distinct ranges touched since the last sackBlocks() call. */
  touchedRanges(): number {
    const seen = new Set<number>();
    for (const t of this.touched) seen.add(this.rangeIndex(t));
    seen.delete(-1);
    return seen.size;
  }

  clear(): void {
    this.starts = [];
    this.datas = [];
    this.head = 0;
    this.rs = [];
    this.re = [];
    this.touched = [];
    this.bytes = 0;
  }

  private rangeIndex(seq: number): number {
    let lo = 0;
    let hi = this.rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.re[mid]! <= seq) lo = mid + 1;
      else if (this.rs[mid]! > seq) hi = mid - 1;
      else return mid;
    }
    return -1;
  }

  private addRange(s: number, e: number): void {
    const rs = this.rs;
    const re = this.re;
    const n = rs.length;
    // Fast path: extends or follows the last range.
    if (n > 0 && s >= rs[n - 1]!) {
      if (s <= re[n - 1]!) {
        if (e > re[n - 1]!) re[n - 1] = e;
        return;
      }
      rs.push(s);
      re.push(e);
      return;
    }
    // General case: first range with end >= s.
    let i = 0;
    while (i < n && re[i]! < s) i++;
    let j = i;
    let ns = s;
    let ne = e;
    while (j < n && rs[j]! <= ne) {
      if (rs[j]! < ns) ns = rs[j]!;
      if (re[j]! > ne) ne = re[j]!;
      j++;
    }
    rs.splice(i, j - i, ns);
    re.splice(i, j - i, ne);
  }
}

const EMPTY = Buffer.alloc(0);
