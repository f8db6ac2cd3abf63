/**
 * Port 1002 event stream broker (wire reference §1.14). Event = topic len u16 BE (≤1024) ‖ topic ‖
 * payload len u32 BE (≤16 MiB) ‖ payload. The first event on a connection is its subscription (`*` =
 * every topic); later events are publishes, fanned out to subscribers of that topic and of `*`, never
 * back to the publishing connection.
 *
 * Isolation: fan-out writes never wait. A subscriber whose unsent backlog would exceed its bound is
 * dropped (counted), so a slow subscriber costs the publisher and the other subscribers nothing.
 */
import type { Duplex } from 'node:stream';
import { Ports } from '../../transport/address.js';
import { ByteQueue } from '../ipc/bytequeue.js';
import { ConnectionSet } from './conns.js';
import { readFrames } from './frames.js';
import { ServiceError, silentLogger, type EventSink, type Service, type ServiceContext, type ServiceLogger } from './types.js';

export const MAX_TOPIC_BYTES = 1024;
export const MAX_EVENT_PAYLOAD = 16 * 1024 * 1024;
export const WILDCARD_TOPIC = '*';

export interface StreamEvent {
  topic: string;
  payload: Buffer;
}

export function encodeEvent(topic: string, payload: Uint8Array): Buffer {
  const t = Buffer.from(topic, 'utf8');
  if (t.length > MAX_TOPIC_BYTES) throw new ServiceError('topic_too_large', `topic of ${t.length} bytes exceeds ${MAX_TOPIC_BYTES}`);
  if (payload.length > MAX_EVENT_PAYLOAD) throw new ServiceError('frame_too_large', `event payload of ${payload.length} bytes exceeds ${MAX_EVENT_PAYLOAD}`);
  const out = Buffer.allocUnsafe(2 + t.length + 4 + payload.length);
  out.writeUInt16BE(t.length, 0);
  t.copy(out, 2);
  out.writeUInt32BE(payload.length, 2 + t.length);
  out.set(payload, 6 + t.length);
  return out;
}

/** Streaming event decoder; limits are checked from the length fields before buffering. Stays failed. */
export class EventDecoder {
  private readonly queue = new ByteQueue();
  private failed: ServiceError | null = null;

  constructor(private readonly maxPayload = MAX_EVENT_PAYLOAD) {}

  push(chunk: Uint8Array): StreamEvent[] {
    if (this.failed) throw this.failed;
    this.queue.push(chunk);
    const out: StreamEvent[] = [];
    for (;;) {
      if (this.queue.length < 2) break;
      const tlen = this.queue.readUInt16BE(0);
      if (tlen > MAX_TOPIC_BYTES) return this.fail(new ServiceError('topic_too_large', `topic of ${tlen} bytes exceeds ${MAX_TOPIC_BYTES}`));
      if (this.queue.length < 2 + tlen + 4) break;
      const plen = this.queue.readUInt32BE(2 + tlen);
      if (plen > this.maxPayload) return this.fail(new ServiceError('frame_too_large', `event payload of ${plen} bytes exceeds ${this.maxPayload}`));
      if (this.queue.length < 6 + tlen + plen) break;
      this.queue.skip(2);
      const topic = this.queue.take(tlen).toString('utf8');
      this.queue.skip(4);
      out.push({ topic, payload: this.queue.take(plen) });
    }
    return out;
  }

  private fail(err: ServiceError): never {
    this.failed = err;
    this.queue.clear();
    throw err;
  }
}

export interface EventStreamOptions {
  emit?: EventSink;
  logger?: ServiceLogger;
  /** Subscribers (connections) at once. */
  maxConnections?: number;
  /** Unsent bytes a subscriber may have queued before it is dropped. */
  maxSubscriberBacklog?: number;
  maxPayload?: number;
}

interface Subscriber {
  conn: Duplex;
  topic: string;
  remote: string;
}

export class EventStreamService implements Service {
  readonly name = 'eventstream';
  readonly port = Ports.EVENT_STREAM;
  private readonly conns: ConnectionSet;
  private readonly log: ServiceLogger;
  private readonly backlog: number;
  private readonly maxPayload: number;
  /** topic → subscribers; `*` holds the wildcard subscribers. */
  private readonly byTopic = new Map<string, Set<Subscriber>>();
  readonly stats = { subscribed: 0, published: 0, delivered: 0, slowDropped: 0, malformed: 0 };

  constructor(private readonly opts: EventStreamOptions = {}) {
    this.conns = new ConnectionSet(opts.maxConnections ?? 1024);
    this.log = opts.logger ?? silentLogger;
    this.backlog = opts.maxSubscriberBacklog ?? 4 * 1024 * 1024;
    this.maxPayload = Math.min(opts.maxPayload ?? MAX_EVENT_PAYLOAD, MAX_EVENT_PAYLOAD);
  }

  get subscriberCount(): number {
    let n = 0;
    for (const s of this.byTopic.values()) n += s.size;
    return n;
  }

  async handle(conn: Duplex, ctx: ServiceContext): Promise<void> {
    if (!this.conns.add(conn)) {
      this.log.warn({ remote: ctx.remote }, 'eventstream: too many connections, dropping');
      conn.destroy();
      return;
    }
    conn.on('error', (err) => this.log.debug({ remote: ctx.remote, err: err.message }, 'eventstream connection error'));
    let sub: Subscriber | null = null;
    try {
      for await (const ev of readFrames(conn, new EventDecoder(this.maxPayload))) {
        if (!sub) {
          sub = { conn, topic: ev.topic, remote: ctx.remote };
          this.subscribe(sub);
          continue;
        }
        this.fanOut(ev, conn, ctx.remote);
      }
      conn.end();
    } catch (err) {
      if (err instanceof ServiceError) {
        this.stats.malformed++;
        this.log.warn({ remote: ctx.remote, code: err.code, err: err.message }, 'eventstream: malformed input, closing');
      }
      conn.destroy();
    } finally {
      if (sub) this.unsubscribe(sub);
      this.conns.delete(conn);
    }
  }

  /** Publish from inside the daemon (e.g. an SDK client); delivered to every matching subscriber. */
  publish(topic: string, payload: Uint8Array, from = 'local'): number {
    return this.fanOut({ topic, payload: Buffer.from(payload) }, null, from);
  }

  private subscribe(sub: Subscriber): void {
    let set = this.byTopic.get(sub.topic);
    if (!set) this.byTopic.set(sub.topic, (set = new Set()));
    set.add(sub);
    this.stats.subscribed++;
    this.opts.emit?.('pubsub.subscribed', { topic: sub.topic, from: sub.remote });
  }

  private unsubscribe(sub: Subscriber): void {
    const set = this.byTopic.get(sub.topic);
    if (!set?.delete(sub)) return;
    if (set.size === 0) this.byTopic.delete(sub.topic);
    this.opts.emit?.('pubsub.unsubscribed', { topic: sub.topic, from: sub.remote });
  }

  private fanOut(ev: StreamEvent, publisher: Duplex | null, from: string): number {
    this.stats.published++;
    this.opts.emit?.('pubsub.published', { topic: ev.topic, bytes: ev.payload.length, from });
    let frame: Buffer | null = null;
    let delivered = 0;
    const targets = [this.byTopic.get(ev.topic), ev.topic === WILDCARD_TOPIC ? undefined : this.byTopic.get(WILDCARD_TOPIC)];
    for (const set of targets) {
      if (!set) continue;
      for (const sub of [...set]) {
        if (sub.conn === publisher) continue;
        if (sub.conn.destroyed || sub.conn.writableEnded) continue;
        frame ??= encodeEvent(ev.topic, ev.payload);
        // Allow one event into an idle subscriber even if it is larger than the bound, so big events
        // still reach fast subscribers; otherwise drop the subscriber rather than queue without limit.
        if (sub.conn.writableLength > 0 && sub.conn.writableLength + frame.length > this.backlog) {
          this.stats.slowDropped++;
          this.log.warn({ remote: sub.remote, topic: sub.topic, backlog: sub.conn.writableLength }, 'eventstream: slow subscriber dropped');
          this.unsubscribe(sub);
          sub.conn.destroy();
          continue;
        }
        sub.conn.write(frame);
        delivered++;
      }
    }
    this.stats.delivered += delivered;
    return delivered;
  }

  async close(): Promise<void> {
    this.conns.closeAll();
    this.byTopic.clear();
  }
}
