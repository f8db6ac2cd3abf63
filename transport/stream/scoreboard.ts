/**
 * The sender's record of transmitted segments (RFC 6675 scoreboard + RFC 8985 RACK bookkeeping +
 * delivery-rate snapshots). Segments live in a seq-ordered array; those in flight are also linked in
 * transmission-time order so RACK can walk the oldest ones first. Records are pooled.
 */

export const enum SegState {
  InFlight = 0,
  Sacked = 1,
  Lost = 2,
}

export class Seg {
  start = 0;
  end = 0;
  /** Time of the latest (re)transmission. */
  txTime = 0;
  /** Retransmission count (0 = sent once: its RTT sample is unambiguous, Karn). */
  retrans = 0;
  state: SegState = SegState.InFlight;
  // Delivery-rate snapshot at (re)transmission.
  delivered = 0;
  deliveredTime = 0;
  firstSentTime = 0;
  appLimited = false;
  // Transmission-order list (in-flight only).
  prev: Seg | null = null;
  next: Seg | null = null;
  inTx = false;
  /** Sitting in the lost queue. */
  queued = false;
  /** Retransmitted by a tail-loss probe (not a loss signal). */
  probe = false;

  get len(): number {
    return this.end - this.start;
  }
}

export class Scoreboard {
  /** Seq-ordered records from `head`. */
  private segs: Seg[] = [];
  private head = 0;
  private txHead: Seg | null = null;
  private txTail: Seg | null = null;
  private lostQ: Seg[] = [];
  private lostHead = 0;
  private readonly pool: Seg[] = [];

  /** Bytes in flight (pipe): sent, not SACKed, not acknowledged, not marked lost. */
  inflight = 0;
  sackedBytes = 0;
  /** Bytes marked lost and not yet retransmitted. */
  lostBytes = 0;

  get count(): number {
    return this.segs.length - this.head;
  }

  get empty(): boolean {
    return this.segs.length === this.head;
  }

  first(): Seg | null {
    return this.head < this.segs.length ? this.segs[this.head]! : null;
  }

  last(): Seg | null {
    return this.head < this.segs.length ? this.segs[this.segs.length - 1]! : null;
  }

  /** Oldest in-flight segment by transmission time. */
  oldestInFlight(): Seg | null {
    return this.txHead;
  }

  newestInFlight(): Seg | null {
    return this.txTail;
  }

  at(i: number): Seg {
    return this.segs[this.head + i]!;
  }

  /** Append a newly transmitted segment (caller fills the rate snapshot). */
  push(start: number, end: number, now: number): Seg {
    const s = this.pool.pop() ?? new Seg();
    s.start = start;
    s.end = end;
    s.txTime = now;
    s.retrans = 0;
    s.state = SegState.InFlight;
    s.queued = false;
    s.probe = false;
    this.segs.push(s);
    this.linkTail(s);
    this.inflight += end - start;
    return s;
  }

  /** Index (relative to head) of the first segment with end > seq, or count if none. */
  lowerBound(seq: number): number {
    let lo = this.head;
    let hi = this.segs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.segs[mid]!.end <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo - this.head;
  }

  /** A segment leaves flight because it was SACKed. */
  markSacked(s: Seg): void {
    if (s.state === SegState.InFlight) {
      this.unlinkTx(s);
      this.inflight -= s.len;
    } else if (s.state === SegState.Lost) {
      this.lostBytes -= s.len;
    } else return;
    s.state = SegState.Sacked;
    this.sackedBytes += s.len;
  }

  /** Declare an in-flight segment lost: it leaves the pipe and waits for retransmission. */
  markLost(s: Seg): void {
    if (s.state !== SegState.InFlight) return;
    this.unlinkTx(s);
    this.inflight -= s.len;
    s.state = SegState.Lost;
    this.lostBytes += s.len;
    if (!s.queued) {
      s.queued = true;
      this.lostQ.push(s);
    }
  }

  /** Next segment waiting for retransmission (skipping ones delivered meanwhile), without removing it. */
  peekLost(): Seg | null {
    while (this.lostHead < this.lostQ.length) {
      const s = this.lostQ[this.lostHead]!;
      if (s.state === SegState.Lost && s.queued) return s;
      s.queued = false;
      this.lostHead++;
    }
    if (this.lostHead > 0) {
      this.lostQ.length = 0;
      this.lostHead = 0;
    }
    return null;
  }

  /** The segment returned by peekLost() was retransmitted now. */
  retransmitted(s: Seg, now: number): void {
    if (s.state === SegState.Lost) {
      this.lostBytes -= s.len;
      if (this.lostQ[this.lostHead] === s) {
        this.lostHead++;
        s.queued = false;
      }
    } else if (s.state === SegState.InFlight) {
      this.unlinkTx(s);
      this.inflight -= s.len;
    } else return;
    s.state = SegState.InFlight;
    s.retrans++;
    s.txTime = now;
    this.linkTail(s);
    this.inflight += s.len;
  }

  /**
   * Cut a lost segment down to `len` bytes (the segment size shrank), inserting the remainder right
   * after it as another lost segment. Used before retransmitting.
   */
  split(s: Seg, len: number): void {
    if (len <= 0 || len >= s.len || s.state !== SegState.Lost) return;
    const idx = this.head + this.lowerBound(s.start);
    const r = this.pool.pop() ?? new Seg();
    r.start = s.start + len;
    r.end = s.end;
    r.txTime = s.txTime;
    r.retrans = s.retrans;
    r.state = SegState.Lost;
    r.delivered = s.delivered;
    r.deliveredTime = s.deliveredTime;
    r.firstSentTime = s.firstSentTime;
    r.appLimited = s.appLimited;
    r.probe = false;
    r.queued = true;
    s.end = r.start;
    this.segs.splice(idx + 1, 0, r);
    // Queue the remainder right behind `s` so retransmission stays in order.
    this.lostQ.splice(this.lostHead + 1, 0, r);
  }

  /**
   * Remove segments fully below `ack` (cumulatively acknowledged), calling `onAcked` for each that
   * had not been SACKed before; a segment straddling `ack` is trimmed. Returns bytes newly delivered.
   */
  ackTo(ack: number, onAcked: (s: Seg) => void): number {
    let bytes = 0;
    const segs = this.segs;
    while (this.head < segs.length) {
      const s = segs[this.head]!;
      if (s.end <= ack) {
        if (s.state === SegState.InFlight) {
          this.unlinkTx(s);
          this.inflight -= s.len;
          bytes += s.len;
          onAcked(s);
        } else if (s.state === SegState.Lost) {
          this.lostBytes -= s.len;
          bytes += s.len;
          onAcked(s);
        } else {
          this.sackedBytes -= s.len;
        }
        s.state = SegState.Sacked; // so a stale lost-queue entry is skipped
        s.queued = false;
        segs[this.head] = PLACEHOLDER;
        this.head++;
        this.release(s);
        continue;
      }
      if (s.start < ack) {
        const part = ack - s.start;
        if (s.state === SegState.InFlight) this.inflight -= part;
        else if (s.state === SegState.Lost) this.lostBytes -= part;
        else this.sackedBytes -= part;
        if (s.state !== SegState.Sacked) bytes += part;
        s.start = ack;
      }
      break;
    }
    if (this.head === segs.length) {
      segs.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > segs.length) {
      this.segs = segs.slice(this.head);
      this.head = 0;
    }
    return bytes;
  }

  /** Mark every segment fully inside [left, right) SACKed, calling `onSacked` for newly SACKed ones. */
  sack(left: number, right: number, onSacked: (s: Seg) => void): number {
    let bytes = 0;
    const segs = this.segs;
    for (let i = this.head + this.lowerBound(left); i < segs.length; i++) {
      const s = segs[i]!;
      if (s.start >= right) break;
      if (s.start < left || s.end > right) continue;
      if (s.state === SegState.Sacked) continue;
      if (s.state === SegState.InFlight) onSacked(s);
      else onSacked(s);
      bytes += s.len;
      this.markSacked(s);
    }
    return bytes;
  }

  /** Everything in flight is declared lost (RTO). With `forgetSacks`, SACKed data is resent too (reneging). */
  markAllLost(forgetSacks: boolean): number {
    let bytes = 0;
    for (let i = this.head; i < this.segs.length; i++) {
      const s = this.segs[i]!;
      if (s.state === SegState.InFlight) {
        bytes += s.len;
        this.markLost(s);
      } else if (forgetSacks && s.state === SegState.Sacked) {
        this.sackedBytes -= s.len;
        s.state = SegState.Lost;
        this.lostBytes += s.len;
        if (!s.queued) {
          s.queued = true;
          this.lostQ.push(s);
        }
      }
    }
    // Retransmit in sequence order after an RTO.
    if (forgetSacks || bytes > 0) {
      const q = this.lostQ.slice(this.lostHead).filter((s) => s.state === SegState.Lost && s.queued);
      q.sort((a, b) => a.start - b.start);
      this.lostQ = q;
      this.lostHead = 0;
    }
    return bytes;
  }

  clear(): void {
    for (let i = this.head; i < this.segs.length; i++) this.release(this.segs[i]!);
    this.segs = [];
    this.head = 0;
    this.txHead = this.txTail = null;
    this.lostQ = [];
    this.lostHead = 0;
    this.inflight = this.sackedBytes = this.lostBytes = 0;
  }

  private release(s: Seg): void {
    s.prev = s.next = null;
    s.inTx = false;
    if (this.pool.length < 4096) this.pool.push(s);
  }

  private linkTail(s: Seg): void {
    s.prev = this.txTail;
    s.next = null;
    if (this.txTail) this.txTail.next = s;
    else this.txHead = s;
    this.txTail = s;
    s.inTx = true;
  }

  private unlinkTx(s: Seg): void {
    if (!s.inTx) return;
    if (s.prev) s.prev.next = s.next;
    else this.txHead = s.next;
    if (s.next) s.next.prev = s.prev;
    else this.txTail = s.prev;
    s.prev = s.next = null;
    s.inTx = false;
  }
}

const PLACEHOLDER = new Seg();
