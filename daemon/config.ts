/**
 * pilot-daemon configuration: one object built from defaults ← JSON config file ← env `PILOT_*` ← flags
 * (SPEC §1, DESIGN "one config object per binary").
 *
 * - Flags: SPEC §1 (`--registry`, `--beacon`, `--listen`, `--socket`, `--data-dir`, `--hostname`,
 *   `--public`, `--registry-fingerprint`, `--allow-plaintext`, `--allow-anonymous`) plus the v1 daemon
 *   flags (wire reference §2). v1 scripts use Go-style single-dash long flags (`-registry x`,
 *   `-encrypt=false`); both spellings are accepted.
 * - Config file (`--config FILE` or `PILOT_CONFIG`): a JSON object; keys in v1 hyphen or underscore
 *   spelling (`registry-tls` / `registry_tls`) or camelCase. Unknown keys are reported as warnings (the
 *   pilotctl config.json shares the file format), bad values are errors.
 * - Env: `PILOT_<FLAG>` with `-` → `_` (e.g. `PILOT_DATA_DIR`, `PILOT_NO_ECHO=1`).
 * Every problem is a {@link ConfigError} with a one-line reason naming where the value came from.
 */
import { Command, Option } from 'commander';
import { readFile as fsReadFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PilotError } from '../transport/errors.js';
import { parseWebhookUrl } from './webhook.js';

/** Codes: `bad_flag`, `bad_value`, `bad_config_file`, `missing_value`, `conflict`. */
export class ConfigError extends PilotError {}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface DaemonConfig {
  /** Config file that was read, if any. */
  configFile: string | null;
  /** Registry TCP `host:port`. */
  registry: string;
  /** Beacon UDP `host:port`; '' = no beacon (no hole punching or relay). */
  beacon: string;
  /** STUN servers (`host:port`, comma-separated) for reflexive discovery besides the beacon. */
  stun: string[];
  /** Tunnel UDP bind `host:port` (port 0 = any). */
  listen: string;
  /** IPC Unix socket path. */
  socket: string;
  dataDir: string;
  identity: string;
  hostname: string;
  public: boolean;
  /** v1 owner string (key-loss recovery at the registry). */
  owner: string;
  /** Fixed public endpoint `host:port` to register instead of discovering one; ''. */
  endpoint: string;
  encrypt: boolean;
  registryTls: boolean;
  /** Hex SHA-256 of the registry's leaf certificate (implies TLS); ''. */
  registryFingerprint: string;
  allowPlaintext: boolean;
  allowAnonymous: boolean;
  keepaliveMs: number;
  /** NAT traversal timers (SPEC §7; natpunch/client.ts NatTraversalOptions): binding keepalive, re-punch
   *  interval of a relayed peer and its backoff cap, relay fallback of a new peer, path-check ping timeout. */
  nat: { keepaliveMs: number; probeMs: number; probeMaxMs: number; directTimeoutMs: number; pingTimeoutMs: number };
  idleTimeoutMs: number;
  synRateLimit: number;
  maxConnsPerPort: number;
  maxConnsTotal: number;
  timeWaitMs: number;
  services: { echo: boolean; dataExchange: boolean; eventStream: boolean; taskSubmit: boolean };
  /** Webhook URL; '' disables. */
  webhook: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

export type ConfigSource = 'default' | 'file' | 'env' | 'flag';

export type DaemonCommandLine =
  | { kind: 'run'; config: DaemonConfig; sources: Record<string, ConfigSource>; warnings: string[] }
  | { kind: 'help'; text: string };

type Kind = 'string' | 'bool' | 'int' | 'duration' | 'enum';
type Value = string | number | boolean;

interface Spec {
  /** v1 flag name (kebab case) */
  name: string;
  kind: Kind;
  help: string;
  arg?: string;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** Validates a string setting (throws a message). */
  check?: (v: string) => void;
}

const SPECS: Spec[] = [
  { name: 'registry', kind: 'string', arg: 'HOST:PORT', help: 'registry TCP address (required)', check: (v) => hostPort(v, { port0: false, emptyHost: false }) },
  { name: 'beacon', kind: 'string', arg: 'HOST:PORT', help: 'beacon UDP address ("" = none)', check: (v) => v === '' || hostPort(v, { port0: false, emptyHost: false }) },
  { name: 'listen', kind: 'string', arg: 'HOST:PORT', help: 'tunnel UDP bind address (default 0.0.0.0:0)', check: (v) => hostPort(v, { port0: true, emptyHost: true }) },
  { name: 'socket', kind: 'string', arg: 'PATH', help: 'IPC socket path (default pilot.sock in the temp directory)', check: nonEmpty },
  { name: 'data-dir', kind: 'string', arg: 'DIR', help: 'identity, trust store, inbox, received files (default ~/.pilot)', check: nonEmpty },
  { name: 'identity', kind: 'string', arg: 'PATH', help: 'identity key file (default <data-dir>/identity.key)', check: nonEmpty },
  { name: 'hostname', kind: 'string', arg: 'NAME', help: 'hostname to register', check: (v) => v === '' || checkHostname(v) },
  { name: 'public', kind: 'bool', help: 'make this node\'s endpoint public' },
  { name: 'owner', kind: 'string', arg: 'OWNER', help: 'owner string for key-loss recovery (v1)' },
  { name: 'stun', kind: 'string', arg: 'HOST:PORT[,…]', help: 'STUN servers for reflexive address discovery', check: (v) => v.split(',').filter(Boolean).forEach((x) => hostPort(x, { port0: false, emptyHost: false })) },
  { name: 'endpoint', kind: 'string', arg: 'HOST:PORT', help: 'fixed public endpoint instead of beacon discovery', check: (v) => v === '' || hostPort(v, { port0: false, emptyHost: false }) },
  { name: 'encrypt', kind: 'bool', help: 'encrypt tunnel traffic (default true; false needs --allow-plaintext)' },
  { name: 'registry-tls', kind: 'bool', help: 'connect to the registry over TLS' },
  { name: 'registry-fingerprint', kind: 'string', arg: 'HEX', help: 'pin the registry TLS certificate (SHA-256 hex; implies --registry-tls)', check: (v) => v === '' || checkFingerprint(v) },
  { name: 'allow-plaintext', kind: 'bool', help: 'accept and send plaintext (PILT) tunnel frames' },
  { name: 'allow-anonymous', kind: 'bool', help: 'accept anonymous (PILK) key exchanges' },
  { name: 'keepalive', kind: 'duration', arg: 'DURATION', help: 'registry heartbeat and keepalive interval (default 30s)', min: 1000, max: 24 * 3600_000 },
  { name: 'nat-keepalive', kind: 'duration', arg: 'DURATION', help: 'NAT binding keepalive and path check interval (default 20s)', min: 100, max: 3600_000 },
  { name: 'nat-probe', kind: 'duration', arg: 'DURATION', help: 're-punch interval of a relayed peer, doubling per failure (default 5s)', min: 100, max: 3600_000 },
  { name: 'nat-probe-max', kind: 'duration', arg: 'DURATION', help: 'cap of the re-punch backoff (default 60s)', min: 100, max: 24 * 3600_000 },
  { name: 'nat-direct-timeout', kind: 'duration', arg: 'DURATION', help: 'a new peer without a key exchange after this goes to the relay (default 4s)', min: 100, max: 3600_000 },
  { name: 'nat-ping-timeout', kind: 'duration', arg: 'DURATION', help: 'path check ping timeout (default 2s)', min: 100, max: 600_000 },
  { name: 'idle-timeout', kind: 'duration', arg: 'DURATION', help: 'close idle connections after (default 120s)', min: 1000, max: 7 * 24 * 3600_000 },
  { name: 'syn-rate-limit', kind: 'int', arg: 'N', help: 'SYNs accepted per second (default 100)', min: 1, max: 1_000_000 },
  { name: 'max-conns-per-port', kind: 'int', arg: 'N', help: 'connections per port (default 1024)', min: 1, max: 1_000_000 },
  { name: 'max-conns-total', kind: 'int', arg: 'N', help: 'connections in total (default 4096)', min: 1, max: 10_000_000 },
  { name: 'time-wait', kind: 'duration', arg: 'DURATION', help: 'TIME_WAIT duration (default 10s)', min: 0, max: 3600_000 },
  { name: 'no-echo', kind: 'bool', help: 'disable the echo service (port 7)' },
  { name: 'no-dataexchange', kind: 'bool', help: 'disable the data exchange service (port 1001)' },
  { name: 'no-eventstream', kind: 'bool', help: 'disable the event stream service (port 1002)' },
  { name: 'no-tasksubmit', kind: 'bool', help: 'disable the task submission service (port 1003)' },
  { name: 'webhook', kind: 'string', arg: 'URL', help: 'POST events to this URL', check: (v) => void parseWebhookUrl(v) },
  { name: 'log-level', kind: 'enum', arg: 'LEVEL', choices: LOG_LEVELS, help: 'log level (default info)' },
  { name: 'log-format', kind: 'enum', arg: 'FORMAT', choices: LOG_FORMATS, help: 'log format (default json)' },
];
const BY_NAME = new Map(SPECS.map((s) => [s.name, s]));

export interface ConfigEnvironment {
  env?: NodeJS.ProcessEnv;
  home?: string;
  tmp?: string;
  cwd?: string;
  readFile?: (path: string) => Promise<string>;
}

/**
 * Parse pilot-daemon's command line (without `node script`), reading the config file and env.
 * Returns the help text for `--help`; throws ConfigError for anything invalid.
 */
export async function loadDaemonConfig(argv: string[], envIn: ConfigEnvironment = {}): Promise<DaemonCommandLine> {
  const env = envIn.env ?? process.env;
  const cwd = envIn.cwd ?? process.cwd();
  const program = buildProgram();
  let helpRequested = false;
  try {
    program.parse(normalizeArgv(argv), { from: 'user' });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help') helpRequested = true;
    else throw new ConfigError('bad_flag', oneLine(e.message ?? String(err)));
  }
  if (helpRequested) return { kind: 'help', text: program.helpInformation() };

  const values = new Map<string, Value>();
  const sources: Record<string, ConfigSource> = {};
  const warnings: string[] = [];

  // 1. config file
  const flagOpts = program.opts<Record<string, unknown>>();
  const configPath = typeof flagOpts.config === 'string' ? flagOpts.config : env.PILOT_CONFIG || null;
  let configFile: string | null = null;
  if (configPath) {
    configFile = resolve(cwd, configPath);
    let text: string;
    try {
      text = await (envIn.readFile ?? ((p: string) => fsReadFile(p, 'utf8')))(configFile);
    } catch (err) {
      throw new ConfigError('bad_config_file', `cannot read config file ${configFile}: ${(err as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new ConfigError('bad_config_file', `config file ${configFile} is not valid JSON`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError('bad_config_file', `config file ${configFile} must hold a JSON object`);
    for (const [rawKey, raw] of Object.entries(doc as Record<string, unknown>)) {
      const name = normalizeKey(rawKey);
      const spec = BY_NAME.get(name);
      if (!spec) {
        if (name !== 'config') warnings.push(`config file ${configFile}: unknown key "${rawKey}" ignored`);
        continue;
      }
      values.set(name, coerce(spec, raw, `config file ${configFile}: "${rawKey}"`));
      sources[name] = 'file';
    }
  }

  // 2. environment
  for (const spec of SPECS) {
    const key = `PILOT_${spec.name.toUpperCase().replace(/-/g, '_')}`;
    const raw = env[key];
    if (raw === undefined) continue;
    values.set(spec.name, coerce(spec, raw, `env ${key}`));
    sources[spec.name] = 'env';
  }

  // 3. flags
  for (const spec of SPECS) {
    const { attr, negated } = commanderAttr(spec.name);
    if (program.getOptionValueSource(attr) !== 'cli') continue;
    let raw = flagOpts[attr];
    if (negated) raw = raw === false; // `--no-echo` sets echo=false → no-echo=true
    if (spec.name === 'encrypt' && raw === undefined) raw = true;
    values.set(spec.name, coerce(spec, raw, `--${spec.name}`));
    sources[spec.name] = 'flag';
  }

  return { kind: 'run', config: build(values, sources, envIn, configFile), sources, warnings };
}

function build(values: Map<string, Value>, sources: Record<string, ConfigSource>, envIn: ConfigEnvironment, configFile: string | null): DaemonConfig {
  const str = (n: string, d: string) => (values.has(n) ? (values.get(n) as string) : d);
  const bool = (n: string, d: boolean) => (values.has(n) ? (values.get(n) as boolean) : d);
  const num = (n: string, d: number) => (values.has(n) ? (values.get(n) as number) : d);
  const home = envIn.home ?? homedir();
  const cwd = envIn.cwd ?? process.cwd();
  const dataDir = resolve(cwd, str('data-dir', join(home, '.pilot')));
  const fingerprint = str('registry-fingerprint', '').replace(/:/g, '').toLowerCase();
  const cfg: DaemonConfig = {
    configFile,
    registry: str('registry', ''),
    beacon: str('beacon', ''),
    stun: str('stun', '').split(',').filter(Boolean),
    listen: str('listen', '0.0.0.0:0'),
    socket: resolve(cwd, str('socket', join(envIn.tmp ?? tmpdir(), 'pilot.sock'))),
    dataDir,
    identity: resolve(cwd, str('identity', join(dataDir, 'identity.key'))),
    hostname: str('hostname', ''),
    public: bool('public', false),
    owner: str('owner', ''),
    endpoint: str('endpoint', ''),
    encrypt: bool('encrypt', true),
    registryTls: bool('registry-tls', false) || fingerprint !== '',
    registryFingerprint: fingerprint,
    allowPlaintext: bool('allow-plaintext', false),
    allowAnonymous: bool('allow-anonymous', false),
    keepaliveMs: num('keepalive', 30_000),
    nat: {
      keepaliveMs: num('nat-keepalive', 20_000),
      probeMs: num('nat-probe', 5_000),
      probeMaxMs: num('nat-probe-max', 60_000),
      directTimeoutMs: num('nat-direct-timeout', 4_000),
      pingTimeoutMs: num('nat-ping-timeout', 2_000),
    },
    idleTimeoutMs: num('idle-timeout', 120_000),
    synRateLimit: num('syn-rate-limit', 100),
    maxConnsPerPort: num('max-conns-per-port', 1024),
    maxConnsTotal: num('max-conns-total', 4096),
    timeWaitMs: num('time-wait', 10_000),
    services: {
      echo: !bool('no-echo', false),
      dataExchange: !bool('no-dataexchange', false),
      eventStream: !bool('no-eventstream', false),
      taskSubmit: !bool('no-tasksubmit', false),
    },
    webhook: str('webhook', ''),
    logLevel: str('log-level', 'info') as LogLevel,
    logFormat: str('log-format', 'json') as LogFormat,
  };
  if (cfg.registry === '') {
    throw new ConfigError('missing_value', 'no registry configured: pass --registry HOST:PORT, set PILOT_REGISTRY or "registry" in the config file');
  }
  if (!cfg.encrypt && !cfg.allowPlaintext) {
    throw new ConfigError('conflict', `--encrypt=false (from ${where(sources, 'encrypt')}) sends plaintext; also pass --allow-plaintext`);
  }
  if (cfg.registryFingerprint !== '' && sources['registry-tls'] !== undefined && values.get('registry-tls') === false) {
    throw new ConfigError('conflict', '--registry-fingerprint pins a TLS certificate but --registry-tls is false');
  }
  return cfg;
}

function where(sources: Record<string, ConfigSource>, name: string): string {
  return sources[name] ?? 'default';
}

// ---------------------------------------------------------------------------------------------------
// commander wiring

function buildProgram(): Command {
  const p = new Command('pilot-daemon')
    .description('Pilot Protocol daemon: encrypted P2P tunnels, trust, built-in services and the IPC socket for pilotctl and the SDK')
    .exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {} })
    .allowExcessArguments(false)
    .helpOption('-h, --help', 'show this help');
  p.addOption(new Option('--config <FILE>', 'JSON config file (v1 keys accepted; env PILOT_CONFIG)'));
  for (const s of SPECS) {
    if (s.kind === 'bool') {
      if (s.name.startsWith('no-')) p.addOption(new Option(`--${s.name}`, s.help));
      else p.addOption(new Option(`--${s.name} [BOOL]`, s.help));
      if (s.name === 'encrypt') p.addOption(new Option('--no-encrypt', 'same as --encrypt=false'));
    } else {
      const o = new Option(`--${s.name} <${s.arg ?? 'VALUE'}>`, s.help);
      p.addOption(o);
    }
  }
  return p;
}

/** Commander attribute for a flag name; `no-x` flags are stored negated under `x`. */
function commanderAttr(name: string): { attr: string; negated: boolean } {
  const negated = name.startsWith('no-');
  const base = negated ? name.slice(3) : name;
  return { attr: base.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()), negated };
}

/** Accept Go-style single-dash long flags: `-registry x`, `-encrypt=false`. */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    out.push(/^-[a-zA-Z][a-zA-Z0-9-]+(=.*)?$/s.test(a) ? `-${a}` : a);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// values

/** `registry_tls`, `registryTls`, `REGISTRY-TLS` → `registry-tls`. */
export function normalizeKey(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .toLowerCase()
    .replace(/_/g, '-')
    .replace(/^-+/, '');
}

function coerce(spec: Spec, raw: unknown, origin: string): Value {
  const fail = (why: string): never => {
    throw new ConfigError('bad_value', `${origin}: ${why}`);
  };
  switch (spec.kind) {
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'number' && (raw === 0 || raw === 1)) return raw === 1;
      if (typeof raw === 'string') {
        const v = raw.trim().toLowerCase();
        if (['1', 'true', 't', 'yes', 'on'].includes(v)) return true;
        if (['0', 'false', 'f', 'no', 'off'].includes(v)) return false;
      }
      return fail(`expected true or false, got ${show(raw)}`);
    }
    case 'int': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isInteger(n)) return fail(`expected an integer, got ${show(raw)}`);
      if (n < (spec.min ?? -Infinity) || n > (spec.max ?? Infinity)) return fail(`must be between ${spec.min} and ${spec.max}, got ${n}`);
      return n;
    }
    case 'duration': {
      let ms: number | null;
      if (typeof raw === 'number' && Number.isFinite(raw)) ms = raw * 1000; // a bare number means seconds
      else if (typeof raw === 'string') ms = parseDuration(raw);
      else ms = null;
      if (ms === null) return fail(`expected a duration like 30s, 2m or 1h30m, got ${show(raw)}`);
      if (ms < (spec.min ?? 0) || ms > (spec.max ?? Infinity)) return fail(`must be between ${fmtMs(spec.min ?? 0)} and ${fmtMs(spec.max ?? Infinity)}, got ${fmtMs(ms)}`);
      return ms;
    }
    case 'enum': {
      if (typeof raw !== 'string' || !spec.choices!.includes(raw.toLowerCase())) return fail(`expected one of ${spec.choices!.join(', ')}, got ${show(raw)}`);
      return raw.toLowerCase();
    }
    case 'string': {
      if (typeof raw !== 'string') return fail(`expected a string, got ${show(raw)}`);
      try {
        spec.check?.(raw);
      } catch (err) {
        return fail((err as Error).message);
      }
      return raw;
    }
  }
}

const DURATION_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go `time.ParseDuration` syntax (`300ms`, `1.5h`, `2h45m`), plus a bare number = seconds. Returns ms or null. */
export function parseDuration(text: string): number | null {
  const s = text.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) return null;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  return Math.round(total);
}

function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '∞';
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : String(JSON.stringify(v));
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function oneLine(s: string): string {
  return s.replace(/^error:\s*/i, '').split('\n')[0]!.trim();
}

function nonEmpty(v: string): void {
  if (v === '') throw new Error('must not be empty');
}

/** `host:port`, `[v6]:port`, `:port` (when emptyHost). */
export function hostPort(v: string, opts: { port0: boolean; emptyHost: boolean }): void {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):(\d{1,5})$/.exec(v);
  if (!m) throw new Error(`expected HOST:PORT, got ${show(v)}`);
  if (!opts.emptyHost && m[1] === '') throw new Error(`missing host in ${show(v)}`);
  const port = Number(m[2]);
  if (port > 65535 || (!opts.port0 && port === 0)) throw new Error(`port out of range in ${show(v)}`);
}

const HOSTNAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const RESERVED_HOSTNAMES = new Set(['localhost', 'backbone', 'broadcast']);

/** The v1 registry hostname rule (wire reference §1.10 `set_hostname`). */
export function checkHostname(v: string): void {
  if (!HOSTNAME_RE.test(v)) throw new Error(`invalid hostname ${show(v)}: 1-63 of a-z, 0-9 and inner hyphens`);
  if (RESERVED_HOSTNAMES.has(v)) throw new Error(`hostname ${show(v)} is reserved`);
}

function checkFingerprint(v: string): void {
  const hex = v.replace(/:/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex) || (v.includes(':') && !/^([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}$/.test(v))) {
    throw new Error('expected the SHA-256 certificate fingerprint as 64 hex digits');
  }
}
