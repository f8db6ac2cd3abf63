/**
 * The congestion-controller interface the connection drives. Units: bytes and milliseconds;
 * rates in bytes per millisecond. Two implementations: BBR-like (default) and Reno (for comparison).
 */

/** A delivery-rate sample for one ACK (draft-cheng-iccrg-delivery-rate-estimation). */
export interface RateSample {
  /** Bytes delivered over `interval`. */
  delivered: number;
  /** max(send elapsed, ack elapsed) in ms. */
  interval: number;
  /** delivered / interval (0 when the sample is invalid). */
  deliveryRate: number;
  /** RTT of the most recently sent segment this ACK delivered (−1 if none was unambiguous). */
  rtt: number;
  /** Total delivered when that segment was sent (round counting). */
  priorDelivered: number;
  /** The sender was application-limited when that segment was sent. */
  isAppLimited: boolean;
}

export interface AckEvent {
  now: number;
  /** Bytes newly delivered by this ACK (cumulatively acknowledged or SACKed). */
  ackedBytes: number;
  /** Bytes newly marked lost while processing this ACK. */
  lostBytes: number;
  /** Bytes in flight after processing. */
  inflight: number;
  /** Connection total delivered bytes after processing. */
  delivered: number;
  rs: RateSample | null;
}

export interface CongestionController {
  readonly name: string;
  /** Congestion window in bytes. */
  readonly cwnd: number;
  /** Pacing rate in bytes/ms; Infinity means "do not pace". */
  readonly pacingRate: number;
  /** Slow-start threshold in bytes (for stats; BBR reports its cwnd target). */
  readonly ssthresh: number;
  readonly inRecovery: boolean;
  onAck(ev: AckEvent): void;
  /** A loss episode (fast recovery) begins. */
  onEnterRecovery(now: number, inflight: number, delivered: number): void;
  onExitRecovery(now: number): void;
  /** Retransmission timeout: everything in flight was declared lost. */
  onRto(now: number): void;
  /** The segment size changed (PMTU). */
  setMss(mss: number): void;
  /** A first RTT is known (e.g. from the handshake) before any data was acknowledged. */
  onInitialRtt(rtt: number): void;
}

export interface CcParams {
  mss: number;
  initialCwnd: number;
  maxCwnd: number;
  /** Randomness source in [0,1) (BBR picks a random PROBE_BW phase). */
  random: () => number;
  /**
   * BBR: RTTs below this (ms) are treated as this when sizing cwnd. On loopback/LAN the measured min RTT
   * (tens of µs) says nothing about how long a Node event loop takes to turn ACKs around under load;
   * sizing cwnd from it starves a CPU-bound sender. Costs at most this much queueing at a real bottleneck.
   */
  minRttFloor?: number;
}
