/**
 * Public surface of the registry (SPEC §6): server, client, store interface, protocol types.
 */
export { RegistryServer, DB_FILE, type RegistryServerOptions, type ListeningInfo } from './server.js';
export { RegistryClient, Subscription, signFresh, openSocket, type RegistryClientOptions, type NodeAuth, type Signer, type SubscribeOptions, type TlsOptions, type ConnectOptions } from './client.js';
export { RegistryError, ErrorCodes, isErrorCode, type ErrorCode } from './errors.js';
export { challenges, freshMessage } from './protocol/challenges.js';
export { FrameDecoder, encodeFrame, parseFrameObject, MAX_FRAME_BYTES } from './protocol/framing.js';
export type * from './protocol/messages.js';
export {
  DEFAULT_CONFIG,
  resolveConfig,
  configFromJson,
  configFromEnv,
  loadConfigFile,
  splitHostPort,
  ConfigError,
  type RegistryConfig,
  type PartialConfig,
} from './config.js';
export { DEFAULT_RATE_LIMITS, RateCategories, type RateCategory, type RateLimitConfig, type BucketSpec } from './ratelimit.js';
export type { RegistryStore, StoreSnapshot, Mutation, NodeRow, NetworkRow, MembershipRow, TrustRow, HandshakeRequestRow, HandshakeResponseRow, StoreMeta } from './store/types.js';
export { SqliteStore, type SqliteStoreOptions } from './store/sqlite.js';
export { importSnapshot, snapshotToMutations, SnapshotError, type ImportSummary } from './store/snapshot.js';
export { loadTlsMaterial, generateSelfSigned, fingerprintOf, type TlsMaterial } from './tls.js';
export type { Clock, Handler, ConnInfo, Reply } from './handlers/index.js';
export { HandlerContext } from './handlers/index.js';
