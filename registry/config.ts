import { readFileSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { PilotError } from '../transport/errors.js';
import { DEFAULT_RATE_LIMITS, RateCategories, type BucketSpec, type RateLimitConfig } from './ratelimit.js';

/**
 * The one configuration object of `pilot-registry` (DESIGN: defaults ← JSON config file ← env `PILOT_*`
 * ← flags). JSON keys may use v1 spellings (hyphen or underscore, and v1 names like `registry_addr`).
 */
export interface RegistryConfig {
  /** registry TCP listen address `HOST:PORT` (port 0 = any) */
  listen: string;
  /** beacon UDP address (the beacon is wired in main.ts) */
  beacon: string;
  noBeacon: boolean;
  /** accept unsigned beacon discover (v1 behaviour) */
  legacyBeacon: boolean;
  /** data directory (SQLite database, TLS material); null = in-memory store (tests) */
  dataDir: string | null;
  adminToken: string | undefined;
  /** HTTP `HOST:PORT` for /metrics and /healthz; null = off */
  http: string | null;
  tls: boolean;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** also accept bare v1 signature challenges (no ts, replayable) */
  legacySignatures: boolean;
  /** SQLite synchronous mode: `full` survives power loss, `normal` survives process crashes */
  storeSync: 'full' | 'normal';
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  signatureWindowMs: number;
  replayCacheMax: number;
  staleAfterMs: number;
  reapIntervalMs: number;
  heartbeatFlushMs: number;
  idleTimeoutMs: number;
  keepaliveMs: number;
  beaconTtlMs: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** requests in flight per connection before the server stops reading from it */
  maxPipeline: number;
  maxSubscriptionsPerNode: number;
  rateLimits: RateLimitConfig;
  /** worker threads verifying Ed25519 signatures in batches; 0 = in-process (see verifyAsync) */
  verifyWorkers: number;
  /** with verifyWorkers 0: verify on the libuv thread pool instead of the event loop */
  verifyAsync: boolean;
  /** with verifyWorkers 0: public keys kept imported (the workers take raw keys and need none) */
  keyCacheSize: number;
  /** identity join rules may fetch from private/loopback addresses (on-premises IdPs, tests) */
  identityAllowPrivateUrls: boolean;
  /** identity join rules may fetch over plain http:// (tests only) */
  identityAllowHttp: boolean;
}

export const DEFAULT_CONFIG: RegistryConfig = {
  listen: '0.0.0.0:9000',
  beacon: '0.0.0.0:9001',
  noBeacon: false,
  legacyBeacon: false,
  dataDir: join(homedir(), '.pilot', 'registry'),
  adminToken: undefined,
  http: null,
  tls: false,
  tlsCert: undefined,
  tlsKey: undefined,
  legacySignatures: false,
  storeSync: 'full',
  logLevel: 'info',
  signatureWindowMs: 60_000,
  replayCacheMax: 2_000_000,
  staleAfterMs: 180_000,
  reapIntervalMs: 60_000,
  heartbeatFlushMs: 5_000,
  idleTimeoutMs: 300_000,
  keepaliveMs: 15_000,
  beaconTtlMs: 60_000,
  maxConnections: 10_000,
  maxConnectionsPerIp: 512,
  maxPipeline: 256,
  maxSubscriptionsPerNode: 4,
  rateLimits: DEFAULT_RATE_LIMITS,
  verifyWorkers: Math.max(1, Math.min(4, availableParallelism())),
  verifyAsync: true,
  keyCacheSize: 16_384,
  identityAllowPrivateUrls: false,
  identityAllowHttp: false,
};

export class ConfigError extends PilotError {}

type Kind = 'string' | 'boolean' | 'number' | 'nullableString';
const KEYS: Record<Exclude<keyof RegistryConfig, 'rateLimits'>, Kind> = {
  listen: 'string',
  beacon: 'string',
  noBeacon: 'boolean',
  legacyBeacon: 'boolean',
  dataDir: 'nullableString',
  adminToken: 'string',
  http: 'nullableString',
  tls: 'boolean',
  tlsCert: 'string',
  tlsKey: 'string',
  legacySignatures: 'boolean',
  storeSync: 'string',
  logLevel: 'string',
  signatureWindowMs: 'number',
  replayCacheMax: 'number',
  staleAfterMs: 'number',
  reapIntervalMs: 'number',
  heartbeatFlushMs: 'number',
  idleTimeoutMs: 'number',
  keepaliveMs: 'number',
  beaconTtlMs: 'number',
  maxConnections: 'number',
  maxConnectionsPerIp: 'number',
  maxPipeline: 'number',
  maxSubscriptionsPerNode: 'number',
  verifyWorkers: 'number',
  verifyAsync: 'boolean',
  keyCacheSize: 'number',
  identityAllowPrivateUrls: 'boolean',
  identityAllowHttp: 'boolean',
};

/** v1 / alternative key names (after lower-casing and `-` → `_`). */
const ALIASES: Record<string, keyof RegistryConfig> = {
  registry_addr: 'listen',
  addr: 'listen',
  listen_addr: 'listen',
  beacon_addr: 'beacon',
  http_addr: 'http',
  data: 'dataDir',
};

/** Keys v1 config files carry that mean nothing here; ignored with a warning. */
const IGNORED = new Set(['log_format', 'standby', 'config']);

function camel(snake: string): string {
  return snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

export type PartialConfig = Partial<RegistryConfig>;

/** Parse a JSON config object (v1 spellings accepted). Returns the values and warnings. */
export function configFromJson(json: unknown, source = 'config file'): { config: PartialConfig; warnings: string[] } {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('bad_config', `${source} must hold a JSON object`);
  const out: Record<string, unknown> = {};
  const warnings: string[] = [];
  for (const [rawKey, value] of Object.entries(json as Record<string, unknown>)) {
    const snake = rawKey.toLowerCase().replace(/-/g, '_');
    if (snake === 'store') {
      // v1 `-store FILE` was a JSON snapshot; its directory becomes the data dir unless one is given
      if (typeof value !== 'string') throw new ConfigError('bad_config', `${source}: "${rawKey}" must be a string`);
      if (out.dataDir === undefined) out.dataDir = dirname(value);
      warnings.push(`${source}: "store" is a v1 snapshot path; using its directory as data_dir (import the snapshot with "pilot-registry import-snapshot")`);
      continue;
    }
    if (IGNORED.has(snake)) {
      warnings.push(`${source}: "${rawKey}" is not used by this registry`);
      continue;
    }
    if (snake === 'rate_limits') {
      out.rateLimits = rateLimitsFrom(value, source);
      continue;
    }
    const key = (ALIASES[snake] ?? camel(snake)) as keyof typeof KEYS;
    const kind = KEYS[key];
    if (!kind) {
      warnings.push(`${source}: unknown key "${rawKey}" ignored`);
      continue;
    }
    out[key] = checkKind(value, kind, `${source}: "${rawKey}"`);
  }
  return { config: out as PartialConfig, warnings };
}

function checkKind(value: unknown, kind: Kind, what: string): unknown {
  switch (kind) {
    case 'string':
      if (typeof value !== 'string') throw new ConfigError('bad_config', `${what} must be a string`);
      return value;
    case 'nullableString':
      if (value !== null && typeof value !== 'string') throw new ConfigError('bad_config', `${what} must be a string or null`);
      return value === '' ? null : value;
    case 'boolean':
      if (typeof value !== 'boolean') throw new ConfigError('bad_config', `${what} must be true or false`);
      return value;
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new ConfigError('bad_config', `${what} must be a non-negative number`);
      return value;
  }
}

function rateLimitsFrom(value: unknown, source: string): RateLimitConfig {
  if (value === false || value === null) return Object.fromEntries(RateCategories.map((c) => [c, null])) as RateLimitConfig;
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('bad_config', `${source}: rate_limits must be an object or false`);
  const out: RateLimitConfig = { ...DEFAULT_RATE_LIMITS };
  for (const [cat, spec] of Object.entries(value as Record<string, unknown>)) {
    if (!(RateCategories as readonly string[]).includes(cat)) throw new ConfigError('bad_config', `${source}: unknown rate limit category "${cat}" (${RateCategories.join(', ')})`);
    if (spec === null || spec === false) {
      out[cat as keyof RateLimitConfig] = null;
      continue;
    }
    const s = spec as Partial<BucketSpec>;
    if (typeof s !== 'object' || typeof s.rate !== 'number' || typeof s.burst !== 'number' || !(s.rate > 0) || !(s.burst >= 1)) {
      throw new ConfigError('bad_config', `${source}: rate_limits.${cat} must be {"rate": >0 per second, "burst": >=1} or null`);
    }
    out[cat as keyof RateLimitConfig] = { rate: s.rate, burst: s.burst };
  }
  return out;
}

export function loadConfigFile(path: string): { config: PartialConfig; warnings: string[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('bad_config', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError('bad_config', `config file ${path} is not valid JSON`);
  }
  return configFromJson(json, `config file ${path}`);
}

const ENV_KEYS: ReadonlyArray<keyof typeof KEYS> = [
  'listen',
  'beacon',
  'noBeacon',
  'legacyBeacon',
  'dataDir',
  'adminToken',
  'http',
  'tls',
  'tlsCert',
  'tlsKey',
  'legacySignatures',
  'storeSync',
  'logLevel',
  'identityAllowPrivateUrls',
  'identityAllowHttp',
];

/** `PILOT_<KEY>` variables, e.g. PILOT_ADMIN_TOKEN, PILOT_DATA_DIR, PILOT_LEGACY_SIGNATURES=1. */
export function configFromEnv(env: NodeJS.ProcessEnv): PartialConfig {
  const out: Record<string, unknown> = {};
  for (const key of ENV_KEYS) {
    const name = `PILOT_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    if (KEYS[key] === 'boolean') {
      if (/^(1|true|yes|on)$/i.test(raw)) out[key] = true;
      else if (/^(0|false|no|off)$/i.test(raw)) out[key] = false;
      else throw new ConfigError('bad_config', `${name} must be true or false, got "${raw}"`);
    } else out[key] = raw;
  }
  return out as PartialConfig;
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):(\d{1,5})$/;

/** Split `HOST:PORT` (port 0 allowed = any); throws ConfigError. */
export function splitHostPort(text: string, what: string): { host: string; port: number } {
  const m = HOST_PORT.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError('bad_config', `${what} must be HOST:PORT, got "${text}"`);
  let host = m[1]!;
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** Merge layers over the defaults and validate the result. */
export function resolveConfig(...layers: PartialConfig[]): RegistryConfig {
  const c: RegistryConfig = { ...DEFAULT_CONFIG };
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  }
  splitHostPort(c.listen, 'listen');
  splitHostPort(c.beacon, 'beacon');
  if (c.http !== null) splitHostPort(c.http, 'http');
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) throw new ConfigError('bad_config', 'tls-cert and tls-key must be given together');
  if (c.tlsCert !== undefined) c.tls = true;
  if (c.storeSync !== 'full' && c.storeSync !== 'normal') throw new ConfigError('bad_config', 'store-sync must be "full" or "normal"');
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(c.logLevel)) {
    throw new ConfigError('bad_config', 'log-level must be one of fatal, error, warn, info, debug, trace, silent');
  }
  if (c.adminToken === '') c.adminToken = undefined;
  for (const k of ['maxConnections', 'maxConnectionsPerIp', 'maxPipeline', 'maxSubscriptionsPerNode', 'keyCacheSize', 'replayCacheMax'] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1) throw new ConfigError('bad_config', `${k} must be a positive integer`);
  }
  if (!Number.isInteger(c.verifyWorkers) || c.verifyWorkers > 64) throw new ConfigError('bad_config', 'verifyWorkers must be an integer in 0..64');
  return c;
}
