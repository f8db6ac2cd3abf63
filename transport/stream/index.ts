/** Public surface of the stream engine (the lead merges this into transport/index.ts). */
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
