import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { RegistryError } from './errors.js';
import type { ConnInfo } from './handlers/context.js';
import { encodeFrame, FrameDecoder } from './protocol/framing.js';
import type { PushSink } from './push.js';

/** What a connection needs from its server. */
export interface ConnectionHost {
  readonly log: Logger;
  readonly maxPipeline: number;
  readonly maxFrameBytes: number;
  readonly idleTimeoutMs: number;
  /** Handle one frame body; the result is the encoded reply frame. Never throws. */
  dispatch(body: Buffer, conn: Connection): Buffer | Promise<Buffer>;
  /** A connection became a push subscription for `nodeId`. */
  addSubscription(nodeId: number, sink: PushSink): void;
  removeSubscription(nodeId: number, sink: PushSink): void;
  connectionClosed(conn: Connection): void;
}

interface Slot {
  frame: Buffer | null;
}

/** Push frames held back until every reply before the subscribe_ok has been written. */
const MAX_PENDING_PUSH = 256;
/** A subscriber this far behind is dropped (it resubscribes and polls; nothing is lost). */
const MAX_PUSH_BACKLOG = 1024 * 1024;
/** Stop reading while this much reply data waits in the socket. */
const MAX_WRITE_BACKLOG = 4 * 1024 * 1024;

/**
 * One client connection: frames in, replies out in request order (pipelining allowed: requests are
 * dispatched as they arrive, replies are released in order), bounded in-flight work, idle timeout,
 * and optionally a push subscription.
 */
export class Connection implements ConnInfo {
  private readonly decoder: FrameDecoder;
  private readonly slots: Slot[] = [];
  private readingPaused = false;
  private closing = false;
  private closed = false;
  private subscribedNode: number | null = null;
  private sink: ConnectionSink | null = null;
  private corked = false;

  constructor(
    private readonly host: ConnectionHost,
    private readonly socket: Socket,
    readonly id: number,
    readonly ip: string,
    readonly port: number,
    readonly tls: boolean,
  ) {
    this.decoder = new FrameDecoder(host.maxFrameBytes);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000); // notice dead peers of quiet (push) connections
    socket.setTimeout(host.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('timeout', () => {
      host.log.debug({ conn: id }, 'idle timeout');
      socket.destroy();
    });
    socket.on('drain', () => this.maybeResume());
    socket.on('error', (err) => host.log.debug({ conn: id, err: err.message }, 'connection error'));
    socket.on('close', () => {
      this.closed = true;
      if (this.sink && this.subscribedNode !== null) host.removeSubscription(this.subscribedNode, this.sink);
      host.connectionClosed(this);
    });
  }

  get isSubscription(): boolean {
    return this.subscribedNode !== null;
  }

  /** ConnInfo.subscribe: called by the `subscribe` handler after verifying the node's signature. */
  subscribe(nodeId: number): void {
    if (this.subscribedNode !== null) throw new RegistryError('conflict', 'this connection is already a push subscription');
    this.subscribedNode = nodeId;
    this.sink = new ConnectionSink(this);
    this.socket.setTimeout(0); // the server's keepalives keep it busy; the client watches for silence
    this.host.addSubscription(nodeId, this.sink);
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    let frames: Buffer[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // too large: the stream cannot be resynchronised; answer (in order) and close
      this.enqueue(encodeError(err as RegistryError));
      this.closing = true;
      this.socket.pause();
      this.flush();
      this.maybeResume();
      return;
    }
    if (frames.length === 0) return;
    for (const body of frames) {
      if (this.subscribedNode !== null) {
        this.enqueue(encodeError(new RegistryError('bad_request', 'this connection is a push subscription; send requests on another connection')));
        continue;
      }
      const result = this.host.dispatch(body, this);
      if (Buffer.isBuffer(result)) this.enqueue(result);
      else {
        const slot: Slot = { frame: null };
        this.slots.push(slot);
        (result as Promise<Buffer>).then((frame) => {
          slot.frame = frame;
          this.flush();
        });
      }
    }
    if (this.slots.length >= this.host.maxPipeline && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  private enqueue(frame: Buffer): void {
    if (this.slots.length === 0) this.write(frame);
    else this.slots.push({ frame });
  }

  private flush(): void {
    if (this.slots.length === 0 || this.slots[0]!.frame === null) return;
    while (this.slots.length > 0 && this.slots[0]!.frame !== null) this.write(this.slots.shift()!.frame!);
    this.maybeResume();
  }

  /**
   * Replies produced in the same event-loop turn (chunks of pipelined requests, the batches of verified
   * signatures every worker answered) leave in one writev: cork on the first write, uncork in the
   * check phase (setImmediate), after all of this turn's I/O and worker messages were handled. A
   * writev costs more than the handling of a heartbeat; per-tick uncorking wrote ~2 replies each.
   */
  private write(frame: Buffer): void {
    if (this.closed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
    if (this.socket.writableLength > MAX_WRITE_BACKLOG && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  private maybeResume(): void {
    if (this.slots.length === 0) {
      if (this.closing) {
        this.socket.end();
        return;
      }
      this.sink?.activate();
    }
    if (this.readingPaused && this.slots.length < this.host.maxPipeline / 2 && this.socket.writableLength <= MAX_WRITE_BACKLOG) {
      this.readingPaused = false;
      this.socket.resume();
    }
  }

  /** Push path: false when the subscriber is too far behind (it is then closed). */
  writePush(frame: Buffer): boolean {
    if (this.closed) return false;
    if (this.socket.writableLength > MAX_PUSH_BACKLOG) {
      this.host.log.warn({ conn: this.id, node_id: this.subscribedNode }, 'push subscriber too slow; closing it');
      this.socket.destroy();
      return false;
    }
    this.socket.write(frame);
    return true;
  }

  /** Finish pending replies, then close (server shutdown). */
  end(): void {
    if (this.closed) return;
    this.closing = true;
    this.socket.pause();
    if (this.slots.length === 0) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  get pendingReplies(): number {
    return this.slots.length;
  }
}

class ConnectionSink implements PushSink {
  private active = false;
  private held: Buffer[] = [];
  constructor(private readonly conn: Connection) {}

  activate(): void {
    if (this.active) return;
    this.active = true;
    const held = this.held;
    this.held = [];
    for (const f of held) if (!this.conn.writePush(f)) return;
  }

  send(frame: Buffer): boolean {
    if (this.active) return this.conn.writePush(frame);
    if (this.held.length >= MAX_PENDING_PUSH) {
      this.conn.destroy();
      return false;
    }
    this.held.push(frame);
    return true;
  }

  close(reason: string): void {
    this.conn.writePush(encodeFrame({ type: 'error', error: `subscription closed: ${reason}`, code: 'conflict' }));
    this.conn.end();
  }
}

export function encodeError(err: RegistryError): Buffer {
  return encodeFrame({ type: 'error', error: err.message, code: err.code });
}
