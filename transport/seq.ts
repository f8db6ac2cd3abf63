/**
 * 32-bit sequence-number arithmetic (wire reference §1.7: byte sequence numbers, RFC 1982 style compare).
 *
 * On the wire, seq/ack are u32 and wrap. Inside the engine we keep *absolute* sequence numbers as plain
 * JS numbers (exact up to 2^53, i.e. 8 PiB per connection), so ordering is ordinary `<`; the only place
 * wrap matters is when a wire value is turned back into an absolute one (`unwrapSeq`).
 */

/** Signed distance a − b between two u32 sequence numbers, in (−2^31, 2^31]. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLeq(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGeq(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** (a + n) mod 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** The low 32 bits of an absolute sequence number, as sent on the wire. */
export function toWire(abs: number): number {
  return abs >>> 0;
}

/**
 * The absolute sequence number whose low 32 bits equal `wire` and which is closest to `ref`
 * (an absolute number the value is expected to be near, e.g. snd_una or rcv_nxt).
 */
export function unwrapSeq(wire: number, ref: number): number {
  return ref + (((wire >>> 0) - (ref >>> 0)) | 0);
}
