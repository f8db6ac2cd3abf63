/**
 * Webhook delivery (wire reference §1.15, timers §1.12): every event becomes an HTTP POST with
 * `application/json` body `{event, node_id, timestamp (RFC3339 UTC), data}`.
 *
 * emit() never blocks and never throws: events go into a bounded queue (default 1024; when full the new
 * event is dropped and counted) and are posted by a small number of workers (default 1, preserving
 * order), each request limited to 5 s. Failures (timeouts, connection errors, non-2xx) are counted and
 * logged once per burst; there are no retries, as in v1. The URL can change at runtime; "" disables.
 */
import http from 'node:http';
import https from 'node:https';
import { PilotError } from '../transport/errors.js';

/** The v1 event names. */
export const WEBHOOK_EVENTS = [
  'node.registered',
  'node.reregistered',
  'node.deregistered',
  'tunnel.peer_added',
  'tunnel.established',
  'tunnel.relay_activated',
  'conn.syn_received',
  'conn.established',
  'conn.fin',
  'conn.rst',
  'conn.idle_timeout',
  'data.datagram',
  'security.syn_rate_limited',
  'security.nonce_replay',
  'handshake.received',
  'handshake.pending',
  'handshake.approved',
  'handshake.rejected',
  'handshake.auto_approved',
  'trust.revoked',
  'trust.revoked_by_peer',
  'message.received',
  'file.received',
  'pubsub.subscribed',
  'pubsub.unsubscribed',
  'pubsub.published',
] as const;
export type WebhookEventName = (typeof WEBHOOK_EVENTS)[number];

export interface WebhookPayload {
  event: string;
  node_id: number;
  timestamp: string;
  data: Record<string, unknown>;
}

/** Codes: `bad_url`. */
export class WebhookError extends PilotError {}

export interface WebhookLogger {
  warn(obj: object, msg?: string): void;
}

export interface WebhookOptions {
  url?: string;
  /** Our node ID at emit time (0 before registration). */
  nodeId?: () => number;
  queueSize?: number;
  timeoutMs?: number;
  concurrency?: number;
  now?: () => number;
  logger?: WebhookLogger;
}

/** Validate a webhook URL: "" or http(s) with a host. */
export function parseWebhookUrl(url: string): URL | null {
  if (url === '') return null;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new WebhookError('bad_url', `invalid webhook URL "${url.slice(0, 100)}"`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname) {
    throw new WebhookError('bad_url', `webhook URL must be http:// or https://, got "${url.slice(0, 100)}"`);
  }
  return u;
}

export class WebhookClient {
  private target: URL | null;
  private readonly queue: WebhookPayload[] = [];
  private readonly inFlight = new Set<http.ClientRequest>();
  private active = 0;
  private closing = false;
  private drainWaiters: Array<() => void> = [];
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;
  private readonly queueSize: number;
  private readonly timeoutMs: number;
  private readonly concurrency: number;
  private readonly now: () => number;
  private lastFailureLog = 0;
  readonly stats = { delivered: 0, failed: 0, dropped: 0 };

  constructor(private readonly opts: WebhookOptions = {}) {
    this.target = parseWebhookUrl(opts.url ?? '');
    this.queueSize = opts.queueSize ?? 1024;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.concurrency = Math.max(1, opts.concurrency ?? 1);
    this.now = opts.now ?? Date.now;
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: this.concurrency });
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: this.concurrency });
  }

  get url(): string {
    return this.target?.toString() ?? '';
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Change the destination; "" disables delivery and discards queued events. Throws WebhookError('bad_url'). */
  setUrl(url: string): void {
    this.target = parseWebhookUrl(url);
    if (!this.target) this.queue.length = 0;
    else this.pump();
  }

  /** Queue an event. Never blocks, never throws. */
  emit(event: string, data: Record<string, unknown> = {}): void {
    if (!this.target || this.closing) return;
    if (this.queue.length >= this.queueSize) {
      this.stats.dropped++;
      if (this.stats.dropped === 1 || this.stats.dropped % 1000 === 0) {
        this.opts.logger?.warn({ dropped: this.stats.dropped }, 'webhook queue full, dropping events');
      }
      return;
    }
    let nodeId = 0;
    try {
      nodeId = this.opts.nodeId?.() ?? 0;
    } catch {
      /* keep 0 */
    }
    this.queue.push({ event, node_id: nodeId, timestamp: new Date(this.now()).toISOString(), data });
    this.pump();
  }

  /**
   * Stop accepting events and deliver what is queued, giving up at `deadlineMs`: in-flight requests are
   * aborted and the rest dropped. Frees every socket.
   */
  async close(deadlineMs = 2000): Promise<void> {
    this.closing = true;
    if (this.active > 0 || this.queue.length > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadlineMs);
        timer.unref?.();
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.stats.dropped += this.queue.length;
    this.queue.length = 0;
    for (const req of this.inFlight) req.destroy();
    this.inFlight.clear();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private pump(): void {
    while (this.active < this.concurrency && this.queue.length > 0 && this.target) {
      const payload = this.queue.shift()!;
      this.active++;
      void this.post(this.target, payload).then((ok) => {
        this.active--;
        if (ok) this.stats.delivered++;
        else this.stats.failed++;
        this.pump();
        if (this.active === 0 && this.queue.length === 0) {
          const waiters = this.drainWaiters;
          this.drainWaiters = [];
          for (const w of waiters) w();
        }
      });
    }
  }

  private post(target: URL, payload: WebhookPayload): Promise<boolean> {
    return new Promise((resolve) => {
      let body: Buffer;
      try {
        body = Buffer.from(JSON.stringify(payload), 'utf8');
      } catch (err) {
        this.fail(target, payload, err as Error);
        return resolve(false);
      }
      const isHttps = target.protocol === 'https:';
      let settled = false;
      let gotResponse = false;
      const finish = (ok: boolean, err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.inFlight.delete(req);
        if (!ok) this.fail(target, payload, err);
        resolve(ok);
      };
      const req = (isHttps ? https : http).request(
        target,
        {
          method: 'POST',
          agent: isHttps ? this.httpsAgent : this.httpAgent,
          headers: { 'content-type': 'application/json', 'content-length': body.length, 'user-agent': 'pilot-node-webhook' },
        },
        (res) => {
          gotResponse = true;
          res.resume(); // discard the body so the socket can be reused
          const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
          res.once('end', () => finish(ok, ok ? undefined : new Error(`HTTP ${res.statusCode}`)));
          res.once('close', () => finish(false, new Error('response aborted')));
          res.once('error', (err) => finish(false, err));
        },
      );
      const timer = setTimeout(() => {
        req.destroy(new Error(`timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      timer.unref?.();
      this.inFlight.add(req);
      req.once('error', (err) => finish(false, err));
      req.once('close', () => {
        if (!gotResponse) finish(false, new Error('connection closed'));
      });
      req.end(body);
    });
  }

  private fail(target: URL, payload: WebhookPayload, err?: Error): void {
    const t = this.now();
    if (t - this.lastFailureLog > 60_000) {
      this.lastFailureLog = t;
      this.opts.logger?.warn({ host: target.host, event: payload.event, err: err?.message, failed: this.stats.failed + 1 }, 'webhook delivery failed');
    }
  }
}
