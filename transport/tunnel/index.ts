/** Public surface of the encrypted tunnel (wire reference §1.4–1.6, §1.8; SPEC §3). */
export {
  Tunnel,
  DEFAULT_TUNNEL_LIMITS,
  realTunnelClock,
  type TunnelOptions,
  type TunnelLimits,
  type TunnelClock,
  type TunnelStats,
  type TunnelEvents,
  type DropReason,
  type PeerInfo,
  type PacketInfo,
  type EstablishedInfo,
  type Endpoint,
  type PathKind,
  type RemoteInfoLike,
} from './tunnel.js';
export { AeadKey, X25519KeyPair, deriveAeadKey, authSignedMessage, type Sealed } from './crypto.js';
export { ReplayGuard, CounterWindow, DEFAULT_REPLAY_LIMITS, type ReplayVerdict, type ReplayLimits } from './replay.js';
export { FrameError, TunnelCryptoError, TunnelError } from './errors.js';
export * from './frames.js';
export { UdpEndpoint, UdpError, DEFAULT_SOCKET_BUFFER, type UdpEndpointOptions, type UdpAddress, type UdpStats } from '../udp.js';
