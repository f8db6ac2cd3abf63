/**
 * Every stream-engine constant, with the v1 value as default where v1 has one (wire reference §1.12, §3.2).
 * All of them can be overridden per host (`HostOptions.config`).
 */
export interface StreamConfig {
  // --- buffers and windows ---
  /** Per-connection receive buffer in bytes; the advertised window is what is free of it (4096-byte units). */
  recvBuffer: number;
  /** Per-connection send buffer in bytes (unacknowledged + unsent); `write()` returns false beyond it. */
  sendBuffer: number;
  /** Out-of-order segments held per connection (v1: 128; larger here because our windows are larger). */
  oooMaxSegments: number;
  /** Pending (not yet accepted) connections per listener (v1: 64). */
  acceptBacklog: number;

  // --- congestion control ---
  /** 'bbr' (default) or 'reno' (v1-like AIMD with SACK recovery; kept to show the interface is swappable). */
  congestionControl: 'bbr' | 'reno';
  /** Initial congestion window in bytes (v1: 10 × 4096). The engine uses max(this, 10 segments). */
  initialCwnd: number;
  /** Upper bound on the congestion window in bytes. */
  maxCwnd: number;
  /** BBR sizes cwnd with max(min RTT, this) ms (see CcParams.minRttFloor). */
  bbrMinRttFloorMs: number;

  // --- retransmission (RFC 6298 with v1 clamps) ---
  rtoInitialMs: number;
  rtoMinMs: number;
  rtoMaxMs: number;
  /** Clock granularity G in RTO = SRTT + max(G, 4·RTTVAR) (v1: 10 ms). */
  rtoGranularityMs: number;
  /** Consecutive retransmission timeouts before the connection is reset (v1: 8). */
  maxRetransmits: number;
  /** Tail-loss probe (RACK-TLP) enabled. */
  tailLossProbe: boolean;

  // --- ACK policy ---
  /** Delayed-ACK timer (v1: 40 ms). */
  delayedAckMs: number;
  /** ACK at least every N in-order segments (v1: 2); at high rates one ACK per event-loop batch. */
  ackEverySegments: number;
  /** Also ACK mid-batch once this many bytes arrived unacknowledged (0 = recvBuffer/8). */
  ackEveryBytes: number;
  /** With out-of-order data, send a pure duplicate ACK before each SACK ACK (v1 senders only count pure dup ACKs). */
  legacyDupAcks: boolean;

  // --- Nagle ---
  /** Nagle on by default (v1); connections can opt out with setNoDelay / noDelay. */
  nagle: boolean;
  /** Sub-MSS data waits at most this long for outstanding data to be acknowledged (v1: 40 ms). */
  nagleDelayMs: number;

  // --- zero window ---
  zeroWindowProbeMs: number;
  zeroWindowProbeMaxMs: number;

  // --- connection setup ---
  /** SYN retransmission: 1 s doubling to 8 s, fail at the 7th expiry (v1). */
  synRetryInitialMs: number;
  synRetryMaxMs: number;
  synMaxTimeouts: number;
  /** At this SYN timeout the host asks `relayFallback` to switch the peer to relay (v1: 3rd). */
  relayFallbackAfter: number;

  // --- liveness / teardown ---
  keepaliveMs: number;
  idleTimeoutMs: number;
  sweepIntervalMs: number;
  timeWaitMs: number;
  /** After a FIN, how long to wait for missing bytes before the FIN's seq (a v1 sender stops retransmitting). */
  finDataWaitMs: number;

  // --- admission and limits (v1 §3.2) ---
  synRateGlobal: number;
  synRatePerSource: number;
  synRateSourcesMax: number;
  maxConnsPerPort: number;
  maxConnsTotal: number;

  // --- path MTU (RFC 8899 style, via Control pings) ---
  /** Largest UDP payload we ever use (IPv4 UDP limit 65507). */
  maxUdpPayload: number;
  /** UDP payload size assumed to work before any probe (BASE_PLPMTU). */
  initialUdpPayload: number;
  pmtuProbing: boolean;
  /** A probe not answered within this long counts as lost, until a pong has measured the RTT. */
  pmtuProbeTimeoutMs: number;
  /** Once the RTT is known: probe timeout = max(this, 4 × ping RTT). */
  pmtuProbeMinTimeoutMs: number;
  /** Lost probes of one size before that size is taken as too big (RFC 8899 MAX_PROBES). */
  pmtuMaxProbes: number;
  /** Search stops when the gap between largest-confirmed and smallest-failed is below this fraction. */
  pmtuSearchTolerance: number;
  /** Re-probe upward this long after a search ended below maxUdpPayload (RFC 8899 PMTU_RAISE_TIMER). */
  pmtuRaiseIntervalMs: number;
  /** Consecutive RTOs with above-base segments that signal a black hole (fall back to base, re-probe). */
  pmtuBlackHoleRtos: number;
  /** Delay before re-probing after a black-hole fallback. */
  pmtuBlackHoleReprobeMs: number;

  // --- control ---
  pingTimeoutMs: number;
  /** Pending pings per host (bounded; beyond it ping() rejects with too_many_pings). */
  maxPendingPings: number;

  /** Initial sequence number. v1 always uses 0 and v1 peers require it; other values exist to test 32-bit wrap. */
  initialSequence: number;
}

export const DEFAULT_STREAM_CONFIG: Readonly<StreamConfig> = Object.freeze({
  recvBuffer: 4 * 1024 * 1024,
  sendBuffer: 4 * 1024 * 1024,
  oooMaxSegments: 8192,
  acceptBacklog: 64,

  congestionControl: 'bbr',
  initialCwnd: 10 * 4096,
  maxCwnd: 64 * 1024 * 1024,
  bbrMinRttFloorMs: 2,

  rtoInitialMs: 1000,
  rtoMinMs: 200,
  rtoMaxMs: 10_000,
  rtoGranularityMs: 10,
  maxRetransmits: 8,
  tailLossProbe: true,

  delayedAckMs: 40,
  ackEverySegments: 2,
  ackEveryBytes: 0,
  legacyDupAcks: true,

  nagle: true,
  nagleDelayMs: 40,

  zeroWindowProbeMs: 500,
  zeroWindowProbeMaxMs: 30_000,

  synRetryInitialMs: 1000,
  synRetryMaxMs: 8000,
  synMaxTimeouts: 7,
  relayFallbackAfter: 3,

  keepaliveMs: 30_000,
  idleTimeoutMs: 120_000,
  sweepIntervalMs: 15_000,
  timeWaitMs: 10_000,
  finDataWaitMs: 3000,

  synRateGlobal: 100,
  synRatePerSource: 10,
  synRateSourcesMax: 4096,
  maxConnsPerPort: 1024,
  maxConnsTotal: 4096,

  maxUdpPayload: 65507,
  initialUdpPayload: 1200,
  pmtuProbing: true,
  pmtuProbeTimeoutMs: 1000,
  pmtuProbeMinTimeoutMs: 100,
  pmtuMaxProbes: 3,
  pmtuSearchTolerance: 0.01,
  pmtuRaiseIntervalMs: 600_000,
  pmtuBlackHoleRtos: 2,
  pmtuBlackHoleReprobeMs: 30_000,

  pingTimeoutMs: 5000,
  maxPendingPings: 4096,

  initialSequence: 0,
});

/** Merge overrides onto the defaults and reject values that would break the engine. */
export function resolveStreamConfig(over?: Partial<StreamConfig>): StreamConfig {
  const c: StreamConfig = { ...DEFAULT_STREAM_CONFIG, ...(over ?? {}) };
  const positive: (keyof StreamConfig)[] = [
    'recvBuffer', 'sendBuffer', 'oooMaxSegments', 'initialCwnd', 'maxCwnd', 'rtoInitialMs', 'rtoMinMs',
    'rtoMaxMs', 'maxRetransmits', 'ackEverySegments', 'zeroWindowProbeMs', 'zeroWindowProbeMaxMs',
    'synRetryInitialMs', 'synRetryMaxMs', 'synMaxTimeouts', 'timeWaitMs', 'sweepIntervalMs',
    'maxUdpPayload', 'initialUdpPayload', 'pmtuProbeTimeoutMs', 'pmtuMaxProbes', 'pingTimeoutMs',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !(v > 0)) throw new RangeError(`stream config ${k} must be a positive number, got ${String(v)}`);
  }
  if (c.initialUdpPayload > c.maxUdpPayload) c.initialUdpPayload = c.maxUdpPayload;
  if (c.maxUdpPayload > 65507) c.maxUdpPayload = 65507;
  return c;
}
