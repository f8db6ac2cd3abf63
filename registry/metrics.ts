import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Values the gauges read at scrape time. */
export interface GaugeSource {
  nodesOnline(): number;
  nodesTotal(): number;
  trustLinks(): number;
  taskExecutors(): number;
  networks(): number;
  connections(): number;
  subscriptions(): number;
  replayCacheEntries(): number;
  uptimeSeconds(): number;
}

/** What the beacon metrics read (natpunch's `BeaconStats` plus health), kept structural. */
export interface BeaconMetricsSource {
  healthy: boolean;
  bindings: number;
  sendQueue: number;
  counters: Readonly<Record<string, number>> & { relay_delivered: number; relay_forwarded: number; relay_bytes: number };
}

interface TypeChildren {
  requests: { inc(): void };
  duration: { observe(v: number): void };
}

/**
 * Prometheus metrics of one registry instance (own prom-client Registry, never the global default).
 * Names follow v1 where v1 had them (wire reference §2 Observability).
 */
export class RegistryMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'type'>;
  private readonly duration: Histogram<'type'>;
  private readonly errors: Counter<'type' | 'code'>;
  readonly registrations: Counter;
  readonly deregistrations: Counter;
  readonly trustReports: Counter;
  readonly trustRevocations: Counter;
  readonly handshakeRequests: Counter;
  readonly rateLimited: Counter<'category'>;
  readonly signatureChecks: Counter<'result'>;
  readonly storeCommitSeconds: Histogram;
  readonly dropped: Counter<'what'>;
  private readonly children = new Map<string, TypeChildren>();

  constructor(src: GaugeSource) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'pilot_requests_total', help: 'Registry requests by type', labelNames: ['type'], registers });
    this.duration = new Histogram({
      name: 'pilot_request_duration_seconds',
      help: 'Registry request handling time by type (receipt to reply written)',
      labelNames: ['type'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.errors = new Counter({ name: 'pilot_errors_total', help: 'Error replies by request type and error code', labelNames: ['type', 'code'], registers });
    this.registrations = new Counter({ name: 'pilot_registrations_total', help: 'Successful register requests', registers });
    this.deregistrations = new Counter({ name: 'pilot_deregistrations_total', help: 'Successful deregister requests', registers });
    this.trustReports = new Counter({ name: 'pilot_trust_reports_total', help: 'Trust consents recorded (report_trust, accepted handshakes)', registers });
    this.trustRevocations = new Counter({ name: 'pilot_trust_revocations_total', help: 'Trust links revoked', registers });
    this.handshakeRequests = new Counter({ name: 'pilot_handshake_requests_total', help: 'Relayed handshake requests', registers });
    this.rateLimited = new Counter({ name: 'pilot_rate_limited_total', help: 'Requests refused by the rate limiter', labelNames: ['category'], registers });
    this.signatureChecks = new Counter({ name: 'pilot_signature_checks_total', help: 'Signature checks by result', labelNames: ['result'], registers });
    this.storeCommitSeconds = new Histogram({
      name: 'pilot_store_commit_seconds',
      help: 'Time from mutation to durable commit',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.dropped = new Counter({ name: 'pilot_dropped_total', help: 'Things dropped at a bound (connections, pushes, ...)', labelNames: ['what'], registers });
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    };
    gauge('pilot_nodes_online', 'Registered nodes with a recent heartbeat', () => src.nodesOnline());
    gauge('pilot_nodes_total', 'Registered nodes (online or offline, not deregistered)', () => src.nodesTotal());
    gauge('pilot_trust_links', 'Trust links both sides consented to', () => src.trustLinks());
    gauge('pilot_task_executors', 'Nodes advertising task_exec', () => src.taskExecutors());
    gauge('pilot_networks', 'Networks besides the backbone', () => src.networks());
    gauge('pilot_connections', 'Open client connections', () => src.connections());
    gauge('pilot_push_subscriptions', 'Active push subscriptions', () => src.subscriptions());
    gauge('pilot_replay_cache_entries', 'Signatures remembered for replay protection', () => src.replayCacheEntries());
    gauge('pilot_uptime_seconds', 'Seconds since the registry started', () => src.uptimeSeconds());
  }

  /**
   * Beacon metrics (SPEC §7) read at scrape time from the in-process beacon; `read` returns null while no
   * beacon runs. Counters mirror the beacon's own monotonic counters. Call once.
   */
  addBeaconSource(read: () => BeaconMetricsSource | null): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, pick: (s: BeaconMetricsSource) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = read();
          this.set(s ? pick(s) : 0);
        },
      });
    };
    gauge('pilot_beacon_up', 'The beacon socket is open (1) or not (0)', (s) => (s.healthy ? 1 : 0));
    gauge('pilot_beacon_bindings', 'Node IDs bound to an endpoint (proof of key) on this beacon', (s) => s.bindings);
    gauge('pilot_beacon_send_queue', 'Datagrams waiting in the beacon socket send queue', (s) => s.sendQueue);
    // A counter mirrored from another counter: reset and re-add the current total at each scrape.
    const mirror = (name: string, help: string, pick: (s: BeaconMetricsSource) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const s = read();
          this.reset();
          if (s) this.inc(pick(s));
        },
      });
    };
    mirror('pilot_beacon_relayed_total', 'Relay frames delivered or forwarded to a peer beacon', (s) => s.counters.relay_delivered + s.counters.relay_forwarded);
    mirror('pilot_beacon_relay_bytes_total', 'Relayed payload bytes', (s) => s.counters.relay_bytes);
    new Counter({
      name: 'pilot_beacon_dropped_total',
      help: 'Beacon datagrams dropped, by reason',
      labelNames: ['reason'],
      registers,
      collect() {
        const s = read();
        this.reset();
        if (!s) return;
        for (const [k, v] of Object.entries(s.counters)) {
          if (k.startsWith('relay_dropped_')) this.labels(k.slice('relay_dropped_'.length)).inc(v);
          else if (k === 'replies_dropped_queue_full') this.labels('reply_queue_full').inc(v);
          else if (k === 'malformed' || k === 'unexpected_type') this.labels(k).inc(v);
        }
      },
    });
    new Counter({
      name: 'pilot_beacon_events_total',
      help: 'Every beacon counter (discover/punch/relay/sync outcomes), by event',
      labelNames: ['event'],
      registers,
      collect() {
        const s = read();
        this.reset();
        if (!s) return;
        for (const [k, v] of Object.entries(s.counters)) this.labels(k).inc(v);
      },
    });
  }

  request(type: string, seconds: number): void {
    let c = this.children.get(type);
    if (!c) {
      c = { requests: this.requests.labels(type), duration: this.duration.labels(type) };
      this.children.set(type, c);
    }
    c.requests.inc();
    c.duration.observe(seconds);
  }

  error(type: string, code: string): void {
    this.errors.labels(type, code).inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
