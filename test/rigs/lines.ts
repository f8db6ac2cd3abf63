/**
 * Line-oriented reading of a child's output with timeouts: the glue tests use to wait for
 * "listening on …" style lines from processes running inside rig namespaces.
 */
import type { Readable } from 'node:stream';
import { RigError } from './errors.js';

export type LineMatch = string | RegExp | ((line: string) => boolean);

interface Waiter {
  label: string;
  match: (line: string) => boolean;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Bound on unconsumed lines kept per stream; older ones are dropped (and counted). */
const MAX_PENDING = 2000;
/** Bound on the tail kept for error messages. */
const TAIL = 20;

function toPredicate(m: LineMatch): (line: string) => boolean {
  if (typeof m === 'function') return m;
  if (typeof m === 'string') return (l) => l.includes(m);
  return (l) => m.test(l);
}

/**
 * Splits a stream into lines. `next(match)` resolves with the first not-yet-consumed line that matches
 * (lines seen before the call count too, so there is no race between starting a process and waiting).
 */
export class LineReader {
  private readonly pending: string[] = [];
  private readonly waiters = new Set<Waiter>();
  private readonly tail: string[] = [];
  private partial = '';
  private ended = false;
  /** Lines dropped because nobody consumed them and the bound was reached. */
  dropped = 0;

  constructor(stream: Readable, private readonly label = 'stream') {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.push(chunk));
    stream.on('end', () => this.end());
    stream.on('close', () => this.end());
    stream.on('error', () => this.end());
  }

  /** Every line seen so far that is still kept in the tail (for diagnostics). */
  recent(): string[] {
    return [...this.tail];
  }

  /**
   * Resolves with the first unconsumed line matching `match`; rejects on timeout or end of stream.
   * `what` names the awaited line in the error (default: the string/RegExp itself).
   */
  next(match: LineMatch, timeoutMs = 10_000, what?: string): Promise<string> {
    const pred = toPredicate(match);
    const idx = this.pending.findIndex(pred);
    if (idx >= 0) return Promise.resolve(this.pending.splice(idx, 1)[0]!);
    const label = what ?? (typeof match === 'function' ? 'line matching the predicate' : `line matching ${String(match)}`);
    if (this.ended) return Promise.reject(this.failure(label, 'ended'));
    return new Promise<string>((resolve, reject) => {
      const w: Waiter = {
        label,
        match: pred,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(this.failure(label, `timed out after ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** Consumes and returns every pending line matching `match` (no waiting). */
  drain(match: LineMatch = () => true): string[] {
    const pred = toPredicate(match);
    const out: string[] = [];
    for (let i = 0; i < this.pending.length; ) {
      if (pred(this.pending[i]!)) out.push(this.pending.splice(i, 1)[0]!);
      else i++;
    }
    return out;
  }

  private failure(what: string, why: string): RigError {
    return new RigError('line_wait_failed', `${this.label}: no ${what} (${why}); last lines:\n  ${this.tail.join('\n  ')}`);
  }

  private push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const raw of parts) this.line(raw.replace(/\r$/, ''));
  }

  private line(l: string): void {
    this.tail.push(l);
    if (this.tail.length > TAIL) this.tail.shift();
    for (const w of this.waiters) {
      if (w.match(l)) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(l);
        return;
      }
    }
    this.pending.push(l);
    if (this.pending.length > MAX_PENDING) {
      this.pending.shift();
      this.dropped++;
    }
  }

  private end(): void {
    if (this.ended) return;
    if (this.partial) {
      const p = this.partial;
      this.partial = '';
      this.line(p);
    }
    this.ended = true;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.failure(w.label, 'ended'));
    }
    this.waiters.clear();
  }
}

/** One-shot helper: wait for a line on `stream` matching `match`. */
export function waitForLine(stream: Readable, match: LineMatch, timeoutMs = 10_000): Promise<string> {
  return new LineReader(stream).next(match, timeoutMs);
}
