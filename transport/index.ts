/** Public surface of the transport (SPEC §2–4): codecs, identity, tunnel, stream engine, UDP, and the assembled node. */
export * from './errors.js';
export * from './address.js';
export * from './packet.js';
export * from './identity.js';
export * from './tunnel/index.js';
export {
  TransportHost,
  DEFAULT_TUNNEL_OVERHEAD,
  type HostOptions,
  type ConnectOptions,
  type ListenOptions,
  type RefusedEvent,
  type PathInfo,
  type HostStats,
} from './host.js';
export * from './stream/index.js';
export { TransportNode, type TransportNodeOptions, type TransportNodeEvents } from './node.js';
