/**
 * Port 1001 data exchange (wire reference §1.14): typed frames TEXT/BINARY/JSON/FILE, every frame answered
 * with a TEXT frame `ACK <TYPE> <n> bytes` or `ERR <TYPE> <reason>`. Messages are saved to
 * `inbox/<TYPE>-<ts>.json` as `{type, from, data, bytes, received_at}`, files to
 * `received/<base>-<ts><ext>` with the peer's name sanitised (no traversal, no hidden/absolute paths).
 */
import type { Duplex } from 'node:stream';
import { Ports } from '../../transport/address.js';
import { fileTimestamp, sanitizeFileName, writeNewFile } from '../datadir.js';
import { ConnectionSet, finish } from './conns.js';
import { MAX_TYPED_FRAME_PAYLOAD, TypedFrameDecoder, encodeTypedFrame, readFrames, type TypedFrame } from './frames.js';
import { ServiceError, silentLogger, type EventSink, type Service, type ServiceContext, type ServiceLogger } from './types.js';
import { extname } from 'node:path';

export const DataType = { TEXT: 1, BINARY: 2, JSON: 3, FILE: 4 } as const;
export type DataTypeName = keyof typeof DataType;

export type DataFrame =
  | { type: 'TEXT'; text: string }
  | { type: 'BINARY'; data: Buffer }
  | { type: 'JSON'; json: string }
  | { type: 'FILE'; filename: string; data: Buffer }
  /** A type this side does not know; kept so the receiver can answer `ERR`. */
  | { type: 'UNKNOWN'; code: number; data: Buffer };

export function dataTypeName(code: number): string {
  for (const [name, c] of Object.entries(DataType)) if (c === code) return name;
  return `UNKNOWN(${code})`;
}

/** Encode a client frame (pilotctl send-message / send-file). */
export function encodeDataFrame(f: DataFrame): Buffer {
  switch (f.type) {
    case 'TEXT':
      return encodeTypedFrame(DataType.TEXT, Buffer.from(f.text, 'utf8'));
    case 'BINARY':
      return encodeTypedFrame(DataType.BINARY, f.data);
    case 'JSON':
      return encodeTypedFrame(DataType.JSON, Buffer.from(f.json, 'utf8'));
    case 'FILE': {
      const name = Buffer.from(f.filename, 'utf8');
      if (name.length > 0xffff) throw new ServiceError('bad_filename', 'file name longer than 65535 bytes');
      const head = Buffer.allocUnsafe(2);
      head.writeUInt16BE(name.length, 0);
      return encodeTypedFrame(DataType.FILE, Buffer.concat([head, name, f.data]));
    }
    case 'UNKNOWN':
      return encodeTypedFrame(f.code, f.data);
  }
}

/** Interpret a typed frame's payload; throws ServiceError('bad_frame') for a malformed FILE header. */
export function parseDataFrame(frame: TypedFrame): DataFrame {
  switch (frame.type) {
    case DataType.TEXT:
      return { type: 'TEXT', text: frame.payload.toString('utf8') };
    case DataType.BINARY:
      return { type: 'BINARY', data: frame.payload };
    case DataType.JSON:
      return { type: 'JSON', json: frame.payload.toString('utf8') };
    case DataType.FILE: {
      if (frame.payload.length < 2) throw new ServiceError('bad_frame', 'FILE frame shorter than its name length');
      const n = frame.payload.readUInt16BE(0);
      if (frame.payload.length < 2 + n) throw new ServiceError('bad_frame', `FILE name length ${n} exceeds the frame`);
      return { type: 'FILE', filename: frame.payload.subarray(2, 2 + n).toString('utf8'), data: frame.payload.subarray(2 + n) };
    }
    default:
      return { type: 'UNKNOWN', code: frame.type, data: frame.payload };
  }
}

/** Client-side decoder for frames coming back (ACK/ERR texts) or any data-exchange stream. */
export class DataFrameDecoder {
  private readonly inner: TypedFrameDecoder;
  constructor(maxPayload = MAX_TYPED_FRAME_PAYLOAD) {
    this.inner = new TypedFrameDecoder(maxPayload);
  }
  push(chunk: Uint8Array): DataFrame[] {
    return this.inner.push(chunk).map(parseDataFrame);
  }
}

/** `ACK FILE 12 bytes` → {ok:true, type:'FILE', bytes:12}; `ERR …` → {ok:false, type, reason}. */
export function parseDataReply(text: string): { ok: true; type: string; bytes: number } | { ok: false; type: string; reason: string } | null {
  let m = /^ACK (\S+) (\d+) bytes$/.exec(text);
  if (m) return { ok: true, type: m[1]!, bytes: Number(m[2]) };
  m = /^ERR (\S+) ?(.*)$/s.exec(text);
  if (m) return { ok: false, type: m[1]!, reason: m[2]! };
  return null;
}

export interface ReceivedItem {
  kind: 'message' | 'file';
  type: string;
  from: string;
  bytes: number;
  path: string;
}

export interface DataExchangeOptions {
  inboxDir: string;
  receivedDir: string;
  emit?: EventSink;
  /** Called after each saved message/file (e.g. to notify IPC clients). */
  onReceived?: (item: ReceivedItem) => void;
  now?: () => number;
  logger?: ServiceLogger;
  maxFrame?: number;
  maxConnections?: number;
  /** Total bytes this instance will store before answering `ERR … quota exceeded`. */
  maxStoredBytes?: number;
}

export class DataExchangeService implements Service {
  readonly name = 'dataexchange';
  readonly port = Ports.DATA_EXCHANGE;
  private readonly conns: ConnectionSet;
  private readonly log: ServiceLogger;
  private readonly now: () => number;
  private readonly maxFrame: number;
  private readonly maxStored: number;
  readonly stats = { frames: 0, messages: 0, files: 0, errors: 0, malformed: 0, storedBytes: 0 };

  constructor(private readonly opts: DataExchangeOptions) {
    this.conns = new ConnectionSet(opts.maxConnections ?? 64);
    this.log = opts.logger ?? silentLogger;
    this.now = opts.now ?? Date.now;
    this.maxFrame = Math.min(opts.maxFrame ?? MAX_TYPED_FRAME_PAYLOAD, MAX_TYPED_FRAME_PAYLOAD);
    this.maxStored = opts.maxStoredBytes ?? 4 * 1024 ** 3;
  }

  async handle(conn: Duplex, ctx: ServiceContext): Promise<void> {
    if (!this.conns.add(conn)) {
      this.log.warn({ remote: ctx.remote }, 'dataexchange: too many connections, dropping');
      conn.destroy();
      return;
    }
    conn.on('error', (err) => this.log.debug({ remote: ctx.remote, err: err.message }, 'dataexchange connection error'));
    try {
      for await (const frame of readFrames(conn, new TypedFrameDecoder(this.maxFrame))) {
        this.stats.frames++;
        const reply = await this.process(frame, ctx);
        if (!conn.destroyed && !conn.writableEnded) conn.write(encodeTypedFrame(DataType.TEXT, Buffer.from(reply, 'utf8')));
      }
      await finish(conn);
    } catch (err) {
      if (err instanceof ServiceError) {
        this.stats.malformed++;
        this.log.warn({ remote: ctx.remote, code: err.code, err: err.message }, 'dataexchange: malformed input, closing');
      }
      conn.destroy();
    } finally {
      this.conns.delete(conn);
    }
  }

  private async process(frame: TypedFrame, ctx: ServiceContext): Promise<string> {
    const typeName = dataTypeName(frame.type);
    let f: DataFrame;
    try {
      f = parseDataFrame(frame);
    } catch (err) {
      this.stats.errors++;
      return `ERR ${typeName} ${(err as Error).message}`;
    }
    if (f.type === 'UNKNOWN') {
      this.stats.errors++;
      return `ERR ${typeName} unsupported frame type`;
    }
    const bytes = f.type === 'TEXT' || f.type === 'JSON' ? frame.payload.length : f.data.length;
    if (this.stats.storedBytes + bytes > this.maxStored) {
      this.stats.errors++;
      return `ERR ${typeName} save failed: storage quota exceeded`;
    }
    const when = new Date(this.now());
    const ts = fileTimestamp(when);
    try {
      if (f.type === 'FILE') {
        const safe = sanitizeFileName(f.filename);
        const ext = extname(safe);
        const base = ext ? safe.slice(0, -ext.length) : safe;
        const path = await writeNewFile(this.opts.receivedDir, `${base || 'file'}-${ts}`, ext, f.data);
        this.stats.files++;
        this.stats.storedBytes += bytes;
        this.opts.emit?.('file.received', { from: ctx.remote, filename: safe, bytes, path });
        this.opts.onReceived?.({ kind: 'file', type: typeName, from: ctx.remote, bytes, path });
      } else {
        let data: string;
        if (f.type === 'JSON') {
          try {
            JSON.parse(f.json);
          } catch {
            this.stats.errors++;
            return `ERR JSON invalid JSON payload`;
          }
          data = f.json;
        } else if (f.type === 'TEXT') {
          data = f.text;
        } else {
          data = f.data.toString('base64');
        }
        const record = { type: typeName, from: ctx.remote, data, bytes, received_at: when.toISOString() };
        const path = await writeNewFile(this.opts.inboxDir, `${typeName}-${ts}`, '.json', Buffer.from(JSON.stringify(record, null, 2) + '\n'));
        this.stats.messages++;
        this.stats.storedBytes += bytes;
        this.opts.emit?.('message.received', { from: ctx.remote, type: typeName, bytes });
        this.opts.onReceived?.({ kind: 'message', type: typeName, from: ctx.remote, bytes, path });
      }
    } catch (err) {
      this.stats.errors++;
      this.log.warn({ remote: ctx.remote, err: (err as Error).message }, 'dataexchange: save failed');
      return `ERR ${typeName} save failed: ${(err as NodeJS.ErrnoException).code ?? 'io error'}`;
    }
    return `ACK ${typeName} ${bytes} bytes`;
  }

  async close(): Promise<void> {
    this.conns.closeAll();
  }
}
