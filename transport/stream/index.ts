/**
 * Public surface of the stream engine (the lead merges this into transport/index.ts).
 *
 * Design in brief (SPEC §4, wire reference §1.7):
 * - One TransportHost per node: ports, listeners, connections, datagrams, Control ping, path MTU; all
 *   timers are deadlines in one scheduler (one clock timer armed for the earliest).
 * - Connection = Node Duplex. Send side keeps bytes (SendBuffer) and cuts segments at transmit time, so
 *   retransmissions are re-sliced when the segment size changes. Receive side pushes views of received
 *   packets; the advertised window is recvBuffer minus what the app has not read (real zero window).
 * - Loss recovery: SACK scoreboard, RACK time-based loss detection, DupThresh on SACK/dup ACKs, tail-loss
 *   probe, RFC 6298 RTO with Karn and backoff, reset after maxRetransmits consecutive timeouts.
 * - Congestion control behind `CongestionController`: BBR-like (default, paced) or Reno.
 * - ACKs: every 2nd segment / 40 ms (v1), but per event-loop batch at high rates; SACK (v1 in-band
 *   format) immediately when out-of-order data is held, preceded by a pure dup ACK for v1 senders.
 * - PMTU: Control pings padded to the probe size (a v1 peer echoes the payload), ≤3 probes per round,
 *   black-hole fallback to initialUdpPayload; segments = PMTU − tunnel overhead − 34.
 */
export {
  TransportHost,
  DEFAULT_TUNNEL_OVERHEAD,
  type HostOptions,
  type HostStats,
  type ConnectOptions,
  type ListenOptions,
  type RefusedEvent,
  type PathInfo,
} from '../host.js';
export { Connection } from './connection.js';
export { Listener } from './listener.js';
export { DatagramSocket } from './datagram.js';
export { StreamError } from './errors.js';
export type { ConnectionInfo } from './types.js';
export { DEFAULT_STREAM_CONFIG, resolveStreamConfig, type StreamConfig } from './config.js';
export type { CongestionController, RateSample, AckEvent } from './cc.js';
export { BbrController } from './bbr.js';
export { RenoController } from './reno.js';
export { encodeSack, decodeSack, sackBlockCount, type SackBlock } from './sack.js';
export { realClock, type Clock, type TimerHandle } from '../clock.js';
export { seqDiff, seqLt, seqLeq, seqGt, seqGeq, seqAdd, unwrapSeq, toWire } from '../seq.js';
