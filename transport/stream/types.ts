import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { StreamConfig } from './config.js';
import type { Scheduler } from './scheduler.js';
import type { BlockPool } from './send-buffer.js';

/** Per-connection statistics: the v1 InfoOK `conn_list` fields (wire reference §1.13) plus extensions. */
export interface ConnectionInfo {
  id: number;
  local_port: number;
  remote_addr: string;
  remote_port: number;
  /** CLOSED, SYN_SENT, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT (v1 strings). */
  state: string;
  /** Congestion window, bytes. */
  cong_win: number;
  /** Slow-start threshold (Reno) or cwnd target (BBR), bytes. */
  ssthresh: number;
  /** Bytes in flight (sent, not acknowledged/SACKed/lost). */
  in_flight: number;
  srtt_ms: number;
  rttvar_ms: number;
  /** Unacknowledged segments. */
  unacked: number;
  /** Out-of-order segments held by the receiver. */
  ooo_buf: number;
  /** The peer's advertised window, bytes. */
  peer_recv_win: number;
  /** Our advertised window, bytes. */
  recv_win: number;
  in_recovery: boolean;
  bytes_sent: number;
  bytes_recv: number;
  segs_sent: number;
  segs_recv: number;
  retransmits: number;
  fast_retx: number;
  sack_recv: number;
  sack_sent: number;
  dup_acks: number;
  // --- extensions ---
  /** Current segment payload size towards this peer. */
  mss: number;
  rto_ms: number;
  min_rtt_ms: number;
  /** Pacing rate, bytes/s (0 = unpaced). */
  pacing_rate: number;
  cc: string;
  zero_window_probes: number;
  tail_loss_probes: number;
  rto_timeouts: number;
  /** Segments received that were already delivered (duplicates). */
  dup_segs_recv: number;
  /** Bytes queued to send (written, not yet acknowledged). */
  send_queue: number;
  /** Bytes received and not yet read by the application. */
  recv_queue: number;
}

/** What a connection needs from its host (implemented by TransportHost). */
export interface ConnectionHost {
  readonly cfg: StreamConfig;
  readonly clock: Clock;
  readonly sched: Scheduler;
  readonly log: Logger | undefined;
  readonly localNode: number;
  /** Hand a fully encoded packet to the tunnel (counts it). */
  sendPacket(peerNode: number, packet: Buffer): void;
  /** Current segment payload size towards `peerNode` (from the path MTU). */
  mssFor(peerNode: number): number;
  /** Segment size that always works (from initialUdpPayload). */
  baseMssFor(peerNode: number): number;
  /** Run `conn.flush()` at the end of this event-loop turn. */
  markDirty(conn: FlushTarget): void;
  /** The connection is gone: remove it from every table. */
  connectionClosed(conn: object): void;
  /** Repeated RTOs with above-base segments: maybe a PMTU black hole. */
  suspectBlackHole(peerNode: number): void;
  /** SYN timeout number `n` on a dial: returns true if the peer was switched to relay (backoff restarts). */
  synTimeout(peerNode: number, n: number): boolean;
  random(): number;
  /** Pool for send-buffer blocks. */
  readonly blockPool: BlockPool;
  /** Reused packet buffer when `output` does not retain packets (HostOptions.outputIsSynchronous), else null. */
  readonly scratch: Buffer | null;
}

export interface FlushTarget {
  dirty: boolean;
  flush(): void;
}
