import { Worker } from 'node:worker_threads';
import { RegistryError } from './errors.js';

/** Verifies Ed25519 signatures; `SignatureVerifier` (auth.ts) and `VerifyPool` implement it. */
export interface Verifier {
  /** Resolves true/false; rejects only on an internal failure (e.g. a crashed worker). */
  verify(publicKeyB64: string, message: string, signature: Buffer): Promise<boolean>;
  close(): Promise<void>;
}

/** Jobs a key's home worker may be behind the least-loaded worker before its overflow goes elsewhere. */
const SPILL_AFTER = 64;

/** Cheap stable hash of a base64 key: FNV-1a over its first 8 characters (48 random bits). */
function keyHash(b64: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < 8 && i < b64.length; i++) h = Math.imul(h ^ b64.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

interface Job {
  key: string;
  msg: string;
  sig: Buffer;
  resolve: (ok: boolean) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  outstanding: number;
  batches: Map<number, Job[]>;
}

/**
 * Ed25519 verification on worker threads, in batches (SPEC §6 heavy signed traffic): jobs queued in one
 * event-loop turn go out as one message per worker, so the event loop spends a few µs per signature
 * instead of the ≈100 µs a verify costs on the reference machine (libsodium, verify-worker.ts). Bounded by `maxQueued` (excess is
 * refused with `unavailable` rather than queued without limit). A crashed worker fails its batches
 * (as internal errors) and is replaced.
 */
export class VerifyPool implements Verifier {
  private readonly slots: Slot[] = [];
  private queue: Job[] = [];
  private scheduled = false;
  private nextId = 1;
  private closed = false;
  private queued = 0;

  constructor(private readonly opts: { workers: number; maxBatch?: number; maxQueued?: number; onError?: (err: Error) => void }) {
    for (let i = 0; i < Math.max(1, opts.workers); i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./verify-worker.js', import.meta.url));
    worker.unref();
    const slot: Slot = { worker, outstanding: 0, batches: new Map() };
    worker.on('message', (m: { id: number; ok: Uint8Array }) => {
      const jobs = slot.batches.get(m.id);
      if (!jobs) return;
      slot.batches.delete(m.id);
      slot.outstanding -= jobs.length;
      this.queued -= jobs.length;
      for (let i = 0; i < jobs.length; i++) jobs[i]!.resolve(m.ok[i] === 1);
    });
    const fail = (err: Error): void => {
      for (const jobs of slot.batches.values()) {
        this.queued -= jobs.length;
        for (const j of jobs) j.reject(err);
      }
      slot.batches.clear();
      slot.outstanding = 0;
      if (this.closed) return;
      this.opts.onError?.(err);
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots[i] = this.spawn();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`signature worker exited (${code})`));
    });
    return slot;
  }

  verify(publicKeyB64: string, message: string, signature: Buffer): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error('verifier closed'));
    if (this.queued >= (this.opts.maxQueued ?? 100_000)) {
      return Promise.reject(new RegistryError('unavailable', 'signature verification is overloaded; retry shortly'));
    }
    this.queued++;
    return new Promise((resolve, reject) => {
      this.queue.push({ key: publicKeyB64, msg: message, sig: signature, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const jobs = this.queue;
    this.queue = [];
    const n = this.slots.length;
    if (n === 1) {
      this.dispatch(this.slots[0]!, jobs);
      return;
    }
    // Key affinity: a key goes to the same worker each time, so one node's signed requests finish
    // verification, and take effect, in the order it sent them (a worker answers its batches in
    // order; with a key spread over workers a daemon test missed push events). A worker already
    // `SPILL_AFTER` jobs behind the least-loaded one sends its overflow there instead: a descheduled
    // or slow worker never holds up the queue (no head-of-line blocking), at the price of order for
    // that overflow.
    const groups: Job[][] = Array.from({ length: n }, () => []);
    let least = this.slots[0]!.outstanding;
    for (const s of this.slots) if (s.outstanding < least) least = s.outstanding;
    for (const job of jobs) {
      const home = keyHash(job.key) % n;
      let target = home;
      if (this.slots[home]!.outstanding + groups[home]!.length - least > SPILL_AFTER) {
        for (let i = 0; i < n; i++) if (this.slots[i]!.outstanding + groups[i]!.length < this.slots[target]!.outstanding + groups[target]!.length) target = i;
      }
      groups[target]!.push(job);
    }
    for (let i = 0; i < n; i++) if (groups[i]!.length > 0) this.dispatch(this.slots[i]!, groups[i]!);
  }

  /**
   * Send jobs to one worker in batches of at most `maxBatch`: a batch resolves as a whole, so its size
   * bounds the latency it adds (32 × ≈ 100 µs ≈ 3 ms) while still amortising the message overhead.
   */
  private dispatch(slot: Slot, jobs: Job[]): void {
    const max = this.opts.maxBatch ?? 32;
    for (let start = 0; start < jobs.length; start += max) {
      const batch = start === 0 && jobs.length <= max ? jobs : jobs.slice(start, start + max);
      const id = this.nextId++;
      const sigs = new Uint8Array(batch.length * 64);
      const keys = new Array<string>(batch.length);
      const msgs = new Array<string>(batch.length);
      for (let i = 0; i < batch.length; i++) {
        const j = batch[i]!;
        sigs.set(j.sig, i * 64);
        keys[i] = j.key;
        msgs[i] = j.msg;
      }
      slot.batches.set(id, batch);
      slot.outstanding += batch.length;
      slot.worker.postMessage({ id, keys, msgs, sigs }, [sigs.buffer]);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('verifier closed');
    for (const j of this.queue) j.reject(err);
    this.queue = [];
    await Promise.all(
      this.slots.map(async (s) => {
        for (const jobs of s.batches.values()) for (const j of jobs) j.reject(err);
        s.batches.clear();
        await s.worker.terminate();
      }),
    );
  }
}
