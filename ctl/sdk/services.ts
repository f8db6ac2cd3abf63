/**
 * Client side of the built-in services (wire reference §1.14), over SDK streams:
 * data exchange (1001) messages and files, event stream (1002) publish/subscribe, task submit (1003),
 * and the bench protocol (echo round trip on 7, or one-way to a discard listener on 9).
 */
import { createHash, randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { readFile } from 'node:fs/promises';
import { DataFrameDecoder, encodeDataFrame, parseDataReply, type DataFrame } from '../../daemon/services/dataexchange.js';
import { encodeEvent, EventDecoder, type StreamEvent } from '../../daemon/services/eventstream.js';
import { TypedFrameDecoder } from '../../daemon/services/frames.js';
import { encodeTaskFrame, parseSubmitResponse, TaskFrame, type SubmitResponse } from '../../daemon/services/tasks.js';
import type { PilotConnection } from './connection.js';
import type { PilotServer } from './server.js';
import { PilotSdkError } from './errors.js';
import type { PeerRef, Pilot } from './pilot.js';

export const Ports = { Echo: 7, Discard: 9, DataExchange: 1001, EventStream: 1002, TaskSubmit: 1003 } as const;

/** Wait for 'drain' (or fail when the stream closes first), leaving no listeners behind. */
export function waitDrain(conn: PilotConnection): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      conn.off('drain', onDrain);
      conn.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(conn.errored ?? new PilotSdkError('conn_closed', 'connection closed while sending'));
    conn.on('drain', onDrain);
    conn.on('close', onClose);
  });
}

/** Resolve with the first value of `fn` or reject after `ms` (destroying `conn`). */
async function deadline<T>(conn: PilotConnection, ms: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new PilotSdkError('timeout', `${what}: no answer within ${ms} ms`);
          conn.destroy(err);
          reject(err);
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface SendDataResult {
  type: string;
  bytes: number;
  reply: string;
}

/** Send one data-exchange frame and wait for its `ACK`/`ERR` text reply. */
export async function sendDataFrame(pilot: Pilot, peer: PeerRef, frame: DataFrame, opts: { timeoutMs?: number; onProgress?: (sent: number, total: number) => void } = {}): Promise<SendDataResult> {
  const conn = await pilot.dial(peer, Ports.DataExchange, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {});
  try {
    return await deadline(conn, opts.timeoutMs ?? 60_000, 'data exchange', async () => {
      const bytes = encodeDataFrame(frame);
      const step = 256 * 1024;
      for (let off = 0; off < bytes.length; off += step) {
        const piece = bytes.subarray(off, Math.min(bytes.length, off + step));
        if (!conn.write(piece)) await waitDrain(conn);
        opts.onProgress?.(Math.min(bytes.length, off + step), bytes.length);
      }
      const dec = new DataFrameDecoder();
      for await (const chunk of conn) {
        for (const f of dec.push(chunk as Buffer)) {
          if (f.type !== 'TEXT') continue;
          const r = parseDataReply(f.text);
          if (!r) throw new PilotSdkError('protocol', `unexpected data exchange reply: ${f.text.slice(0, 200)}`);
          if (!r.ok) throw new PilotSdkError('refused', `peer refused the ${r.type} frame: ${r.reason}`);
          return { type: r.type, bytes: r.bytes, reply: f.text };
        }
      }
      throw new PilotSdkError('conn_closed', 'data exchange closed before its reply');
    });
  } finally {
    conn.end();
    conn.destroy();
  }
}

export async function sendMessage(pilot: Pilot, peer: PeerRef, data: string | Buffer, type: 'text' | 'json' | 'binary' = 'text', opts: { timeoutMs?: number } = {}): Promise<SendDataResult> {
  let frame: DataFrame;
  if (type === 'json') {
    const text = data.toString();
    try {
      JSON.parse(text);
    } catch {
      throw new PilotSdkError('invalid_argument', 'data is not valid JSON', { hint: 'use --type text for free text' });
    }
    frame = { type: 'JSON', json: text };
  } else if (type === 'binary') frame = { type: 'BINARY', data: Buffer.isBuffer(data) ? data : Buffer.from(data) };
  else frame = { type: 'TEXT', text: data.toString() };
  return sendDataFrame(pilot, peer, frame, opts);
}

export interface SendFileResult extends SendDataResult {
  filename: string;
  sha256: string;
}

/** Send a file (≤ 16 MiB, the v1 frame limit) through the data exchange; returns its SHA-256. */
export async function sendFile(pilot: Pilot, peer: PeerRef, path: string, opts: { timeoutMs?: number; onProgress?: (sent: number, total: number) => void } = {}): Promise<SendFileResult> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    throw new PilotSdkError('not_found', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  if (data.length > 16 * 1024 * 1024 - 1024) throw new PilotSdkError('invalid_argument', `${path} is larger than the 16 MiB data-exchange limit`);
  const filename = basename(path);
  const r = await sendDataFrame(pilot, peer, { type: 'FILE', filename, data }, opts);
  return { ...r, filename, sha256: createHash('sha256').update(data).digest('hex') };
}

/** Publish one event on a peer's event stream broker. */
export async function publish(pilot: Pilot, peer: PeerRef, topic: string, data: string | Buffer, opts: { timeoutMs?: number } = {}): Promise<{ topic: string; bytes: number }> {
  const conn = await pilot.dial(peer, Ports.EventStream, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {});
  const payload = Buffer.isBuffer(data) ? data : Buffer.from(data);
  // First event = subscription (v1 framing), then the publication.
  conn.write(encodeEvent(topic, Buffer.alloc(0)));
  conn.write(encodeEvent(topic, payload));
  await deadline(conn, opts.timeoutMs ?? 30_000, 'publish', () => new Promise<void>((resolve, reject) => {
    conn.end(() => resolve());
    conn.once('error', reject);
  }));
  conn.destroy();
  return { topic, bytes: payload.length };
}

/** Subscribe to a topic (`*` = all) on a peer's broker; iterate events until `close()`. */
export async function subscribe(pilot: Pilot, peer: PeerRef, topic: string, opts: { timeoutMs?: number } = {}): Promise<{ events: AsyncGenerator<StreamEvent>; close: () => void }> {
  const conn = await pilot.dial(peer, Ports.EventStream, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {});
  conn.write(encodeEvent(topic, Buffer.alloc(0)));
  async function* events(): AsyncGenerator<StreamEvent> {
    const dec = new EventDecoder();
    try {
      for await (const chunk of conn) for (const e of dec.push(chunk as Buffer)) yield e;
    } finally {
      conn.destroy();
    }
  }
  return { events: events(), close: () => conn.destroy() };
}

/**
 * Submit a task to a peer (port 1003) straight over a stream; resolves with the peer's decision. The local
 * daemon does not see such a task, so it cannot follow its status or receive its results: use
 * `pilot.tasks.submit()` (ctl/sdk/tasks.ts) for that. This raw client stays for talking the wire directly.
 */
export async function submitTask(pilot: Pilot, peer: PeerRef, description: string, opts: { timeoutMs?: number; taskId?: string } = {}): Promise<SubmitResponse> {
  const me = await pilot.info();
  const target = await pilot.resolve(peer);
  const taskId = opts.taskId ?? `task-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const conn = await pilot.dial(peer, Ports.TaskSubmit, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {});
  try {
    return await deadline(conn, opts.timeoutMs ?? 30_000, 'task submit', async () => {
      conn.write(encodeTaskFrame(TaskFrame.Submit, { task_id: taskId, task_description: description, from_addr: String(me.address ?? ''), to_addr: target.address }));
      const dec = new TypedFrameDecoder();
      for await (const chunk of conn) {
        for (const f of dec.push(chunk as Buffer)) {
          if (f.type === TaskFrame.Submit) return parseSubmitResponse(f);
        }
      }
      throw new PilotSdkError('conn_closed', 'task service closed before answering');
    });
  } finally {
    conn.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------
// Bench

export interface BenchResult {
  mode: 'echo' | 'one-way';
  bytes: number;
  seconds: number;
  mb_per_s: number;
  sha256: string;
  verified: boolean;
}

/** Deterministic, incompressible-looking payload generator (cheap: one random block repeated with a counter). */
function benchChunk(block: Buffer, index: number): Buffer {
  const c = Buffer.from(block);
  c.writeUInt32BE(index >>> 0, 0);
  return c;
}

/**
 * Bench through IPC (encrypted tunnel): `echo` writes `bytes` to the peer's echo port 7 and reads them back
 * concurrently, hashing both directions; `one-way` writes to a discard listener (port 9 by default, run
 * `pilotctl bench --serve` on the peer), half-closes, and compares the listener's reply `{bytes, sha256}`.
 */
export async function bench(
  pilot: Pilot,
  peer: PeerRef,
  bytes: number,
  opts: { oneWay?: boolean; port?: number; timeoutMs?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<BenchResult> {
  const mode = opts.oneWay ? 'one-way' : 'echo';
  const port = opts.port ?? (opts.oneWay ? Ports.Discard : Ports.Echo);
  const conn = await pilot.dial(peer, port, { timeoutMs: Math.min(opts.timeoutMs ?? 30_000, 30_000), recvCredit: 8 * 1024 * 1024 });
  const block = randomBytes(64 * 1024);
  const sent = createHash('sha256');
  const started = process.hrtime.bigint();
  try {
    return await deadline(conn, opts.timeoutMs ?? 120_000, 'bench', async () => {
      // One-way: announce the size (u64 BE) so the listener answers without needing our FIN.
      if (opts.oneWay) {
        const head = Buffer.alloc(8);
        head.writeBigUInt64BE(BigInt(bytes), 0);
        conn.write(head);
      }
      const writer = (async () => {
        let i = 0;
        for (let off = 0; off < bytes; off += block.length, i++) {
          const c = benchChunk(block, i).subarray(0, Math.min(block.length, bytes - off));
          sent.update(c);
          if (!conn.write(c)) await waitDrain(conn);
          if (opts.oneWay) opts.onProgress?.(Math.min(bytes, off + block.length), bytes);
        }
      })();
      const recv = createHash('sha256');
      let got = 0;
      let reply = '';
      for await (const chunk of conn) {
        const b = chunk as Buffer;
        if (opts.oneWay) {
          reply += b.toString();
          if (reply.length > 4096) throw new PilotSdkError('protocol', 'discard listener sent an oversized reply');
          if (reply.includes('\n')) break;
          continue;
        }
        recv.update(b);
        got += b.length;
        opts.onProgress?.(got, bytes);
        if (got >= bytes) break;
      }
      await writer;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const sha256 = sent.digest('hex');
      let verified: boolean;
      if (opts.oneWay) {
        let r: { bytes?: unknown; sha256?: unknown };
        try {
          r = JSON.parse(reply) as { bytes?: unknown; sha256?: unknown };
        } catch {
          throw new PilotSdkError('protocol', `discard listener reply is not JSON: ${reply.slice(0, 200)}`, { hint: 'run `pilotctl bench --serve` on the peer' });
        }
        verified = r.bytes === bytes && r.sha256 === sha256;
      } else {
        verified = got === bytes && recv.digest('hex') === sha256;
      }
      return { mode, bytes, seconds, mb_per_s: bytes / (1024 * 1024) / Math.max(seconds, 1e-9), sha256, verified };
    });
  } finally {
    conn.destroy();
  }
}

/**
 * The discard listener for one-way benches (port 9 by default): each stream starts with the byte count
 * (u64 BE); the listener hashes that many bytes, answers one JSON line `{bytes, sha256}` and keeps reading
 * (discarding) until the client closes. No half-close needed, so it works whatever the daemon does on FIN.
 */
export async function serveDiscard(pilot: Pilot, port: number = Ports.Discard, onResult?: (r: { remote: string; bytes: number; sha256: string }) => void): Promise<PilotServer> {
  const server = await pilot.listen(port, { recvCredit: 8 * 1024 * 1024 });
  server.on('connection', (conn: PilotConnection) => {
    const h = createHash('sha256');
    let head = Buffer.alloc(0);
    let want = -1;
    let n = 0;
    conn.on('data', (c: Buffer) => {
      if (want < 0) {
        head = Buffer.concat([head, c]);
        if (head.length < 8) return;
        const w = head.readBigUInt64BE(0);
        if (w > BigInt(Number.MAX_SAFE_INTEGER)) return void conn.destroy();
        want = Number(w);
        c = head.subarray(8);
      }
      if (n >= want) return;
      const take = c.subarray(0, want - n);
      h.update(take);
      n += take.length;
      if (n === want) {
        const sha256 = h.digest('hex');
        conn.write(`${JSON.stringify({ bytes: n, sha256 })}\n`);
        onResult?.({ remote: conn.remote, bytes: n, sha256 });
      }
    });
    conn.on('end', () => conn.end());
    conn.on('error', () => undefined);
  });
  return server;
}
