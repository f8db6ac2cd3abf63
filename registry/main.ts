#!/usr/bin/env -S node --max-semi-space-size=64
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino, { type Logger } from 'pino';
import { PilotError } from '../transport/errors.js';
import { configFromEnv, loadConfigFile, resolveConfig, splitHostPort, type PartialConfig, type RegistryConfig } from './config.js';
import { DB_FILE, RegistryServer } from './server.js';
import { BeaconServer } from '../natpunch/beacon-server.js';
import { startStandaloneBeacon, type RegistryLookup } from '../natpunch/standalone.js';
import { RegistryClient } from './client.js';
import { RegistryError } from './errors.js';
import { importSnapshot } from './store/snapshot.js';
import { SqliteStore } from './store/sqlite.js';

/**
 * `pilot-registry`: the registry (TCP/TLS :9000) and the beacon (UDP :9001) in one
 * process (SPEC §1). Config: defaults ← `--config FILE` ← env `PILOT_*` ← flags.
 *
 *   pilot-registry [--listen H:P] [--beacon H:P | --no-beacon] [--data-dir D] [--admin-token T] ...
 *   pilot-registry import-snapshot FILE --data-dir DIR
 *   pilot-registry beacon [--beacon H:P] [--registry H:P [--registry-fingerprint HEX]] [--legacy-beacon]
 */

/** A running beacon, as main.ts needs it. */
export interface BeaconHandle {
  readonly server: BeaconServer;
  /** The bound UDP address. */
  readonly address: { address: string; port: number };
  close(): Promise<void>;
}

/** The registry a `pilot-registry beacon` asks for node keys (v1 `lookup`). */
export interface UpstreamRegistry {
  host: string;
  port: number;
  /** TLS with this pinned SHA-256 certificate fingerprint (hex), as printed by `pilot-registry --tls`. */
  tlsFingerprint?: string;
  tls?: boolean;
}

/** How often a beacon re-announces itself (`beacon_register`) and refreshes its peer list (`beacon_list`). */
function announceEveryMs(config: RegistryConfig): number {
  return Math.max(1000, Math.floor(config.beaconTtlMs / 3));
}

/** `host:port` others use to reach a beacon bound at `host`/`port` (IPv6 in brackets). */
function advertised(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Peer beacons from a `beacon_list`, minus ourselves and wildcard hosts nobody can dial. */
function peersFrom(list: ReadonlyArray<{ id: number; addr: string }>, selfId: number): Array<{ host: string; port: number }> {
  const out: Array<{ host: string; port: number }> = [];
  for (const b of list) {
    if (b.id === selfId) continue;
    try {
      const { host, port } = splitHostPort(b.addr, 'beacon addr');
      if (host === '0.0.0.0' || host === '::' || port === 0) continue;
      out.push({ host, port });
    } catch {
      // a malformed entry from another beacon: skip it
    }
  }
  return out;
}

/**
 * BEACON SEAM (SPEC §1, §7): start natpunch's beacon on `config.beacon` next to `registry`. It binds a
 * node ID to an endpoint only with proof of the key the registry holds (signed discover, or an unsigned
 * v1 discover from the endpoint the node registered from; any unsigned discover with `legacyBeacon`),
 * and discloses endpoints in punch commands only under the registry's privacy rule. The beacon shows in
 * `/healthz`, `/metrics` and `beacon_list`, and gossips with the other beacons listed there.
 */
export async function startBeacon(config: RegistryConfig, registry: RegistryServer, log: Logger): Promise<BeaconHandle> {
  const { host, port } = splitHostPort(config.beacon, 'beacon');
  const server = new BeaconServer({
    listen: { host, port },
    publicKeyOf: (id) => registry.publicKeyOf(id),
    canDisclose: (a, b) => registry.canResolve(a, b),
    registeredEndpointOf: (id) => registry.registeredEndpointOf(id),
    legacy: config.legacyBeacon,
    log,
  });
  const address = await server.listen();
  registry.attachBeacon(server, advertised(host, address.port));
  const peers = setInterval(() => {
    const list = peersFrom(registry.listBeacons(), server.beaconId);
    server.setPeers(list).catch((err: Error) => log.warn({ err: err.message }, 'beacon: cannot set peers'));
  }, announceEveryMs(config));
  peers.unref();
  return {
    server,
    address,
    close: async () => {
      clearInterval(peers);
      registry.detachBeacon();
      await server.close();
    },
  };
}

/**
 * `pilot-registry beacon`: the beacon alone. With an upstream registry, node keys (and the registered
 * endpoint) come from its `lookup` through a short-lived cache, and the beacon announces itself with
 * `beacon_register` and gossips with the beacons in `beacon_list`. Without one, nothing can prove a key,
 * so only `--legacy-beacon` binds anything (v1's standalone beacon).
 */
export async function startBeaconOnly(config: RegistryConfig, upstream: UpstreamRegistry | null, log: Logger): Promise<BeaconHandle> {
  const { host, port } = splitHostPort(config.beacon, 'beacon');
  const listen = { host, port };
  if (!upstream) {
    if (!config.legacyBeacon) log.warn('beacon without --registry cannot check node keys: it binds nothing unless --legacy-beacon is given');
    const server = new BeaconServer({ listen, publicKeyOf: () => null, legacy: config.legacyBeacon, log });
    const address = await server.listen();
    return { server, address, close: () => server.close() };
  }
  const client = new RegistryClient({
    host: upstream.host,
    port: upstream.port,
    ...(upstream.tls || upstream.tlsFingerprint ? { tls: upstream.tlsFingerprint ? { fingerprint: upstream.tlsFingerprint } : {} } : {}),
    requestTimeoutMs: 5000,
  });
  const lookup: RegistryLookup = {
    lookup: (nodeId) =>
      client.lookup(nodeId).then(
        (r) => ({ public_key: r.public_key, public: r.public, ...(r.real_addr !== undefined ? { real_addr: r.real_addr } : {}) }),
        (err: unknown) => {
          if (err instanceof RegistryError && err.code === 'not_found') return null;
          throw err;
        },
      ),
  };
  let server: BeaconServer;
  try {
    server = await startStandaloneBeacon({ listen, registry: lookup, legacy: config.legacyBeacon, log });
  } catch (err) {
    await client.close();
    throw err;
  }
  const address = server.address()!;
  const self = advertised(host, address.port);
  const announce = async (): Promise<void> => {
    try {
      await client.beaconRegister(server.beaconId, self);
      await server.setPeers(peersFrom((await client.beaconList()).beacons, server.beaconId));
    } catch (err) {
      log.warn({ err: (err as Error).message, registry: `${upstream.host}:${upstream.port}` }, 'beacon: cannot announce to the registry (will retry)');
    }
  };
  void announce();
  const timer = setInterval(() => void announce(), announceEveryMs(config));
  timer.unref();
  return {
    server,
    address,
    close: async () => {
      clearInterval(timer);
      await server.close();
      await client.close();
    },
  };
}

function hostPort(what: string) {
  return (value: string): string => {
    try {
      splitHostPort(value, what);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
    return value;
  };
}

export type CliCommand =
  | { kind: 'serve'; config: RegistryConfig; warnings: string[] }
  | { kind: 'beacon'; config: RegistryConfig; warnings: string[]; upstream: UpstreamRegistry | null }
  | { kind: 'import'; file: string; dataDir: string }
  | { kind: 'exit'; code: number };

interface ServeFlags {
  listen?: string;
  beacon?: string | boolean;
  dataDir?: string;
  adminToken?: string;
  http?: string;
  tls?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  legacySignatures?: boolean;
  legacyBeacon?: boolean;
  identityAllowPrivateUrls?: boolean;
  identityAllowHttp?: boolean;
  config?: string;
  storeSync?: 'full' | 'normal';
  logLevel?: RegistryConfig['logLevel'];
  registry?: string;
  registryTls?: boolean;
  registryFingerprint?: string;
}

function addServeOptions(cmd: Command): Command {
  return cmd
    .option('--listen <host:port>', 'registry TCP address (default 0.0.0.0:9000)', hostPort('--listen'))
    .option('--beacon <host:port>', 'beacon UDP address (default 0.0.0.0:9001)', hostPort('--beacon'))
    .option('--no-beacon', 'do not run the beacon')
    .option('--data-dir <dir>', 'data directory: SQLite database and TLS material (default ~/.pilot/registry)')
    .option('--admin-token <token>', 'admin token for the admin API (or PILOT_ADMIN_TOKEN); none = admin API disabled')
    .option('--http <host:port>', 'serve /metrics and /healthz on this address', hostPort('--http'))
    .option('--tls', 'serve TLS (self-signed ECDSA P-256 certificate kept in the data dir unless --tls-cert/--tls-key)')
    .option('--tls-cert <file>', 'PEM certificate (implies --tls)')
    .option('--tls-key <file>', 'PEM private key (implies --tls)')
    .option('--legacy-signatures', 'also accept bare v1 signature challenges (no ts; replayable)')
    .option('--legacy-beacon', 'let the beacon accept unsigned v1 discover messages')
    .option('--identity-allow-private-urls', 'identity join rules may fetch IdP/JWKS/bundle/webhook URLs on private or loopback addresses (on-premises IdPs)')
    .option('--identity-allow-http', 'identity join rules may fetch over plain http:// (tests only)')
    .option('--config <file>', 'JSON config file (v1 keys accepted)')
    .addOption(new Option('--store-sync <mode>', 'SQLite sync: full (survives power loss) or normal (survives crashes)').choices(['full', 'normal']))
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']));
}

function flagsToConfig(f: ServeFlags): PartialConfig {
  const c: PartialConfig = {};
  if (f.listen !== undefined) c.listen = f.listen;
  if (typeof f.beacon === 'string') c.beacon = f.beacon;
  if (f.beacon === false) c.noBeacon = true;
  if (f.dataDir !== undefined) c.dataDir = f.dataDir;
  if (f.adminToken !== undefined) c.adminToken = f.adminToken;
  if (f.http !== undefined) c.http = f.http;
  if (f.tls) c.tls = true;
  if (f.tlsCert !== undefined) c.tlsCert = f.tlsCert;
  if (f.tlsKey !== undefined) c.tlsKey = f.tlsKey;
  if (f.legacySignatures) c.legacySignatures = true;
  if (f.legacyBeacon) c.legacyBeacon = true;
  if (f.identityAllowPrivateUrls) c.identityAllowPrivateUrls = true;
  if (f.identityAllowHttp) c.identityAllowHttp = true;
  if (f.storeSync !== undefined) c.storeSync = f.storeSync;
  if (f.logLevel !== undefined) c.logLevel = f.logLevel;
  return c;
}

function buildConfig(f: ServeFlags, env: NodeJS.ProcessEnv): { config: RegistryConfig; warnings: string[] } {
  const file = f.config ? loadConfigFile(f.config) : { config: {}, warnings: [] };
  return { config: resolveConfig(file.config, configFromEnv(env), flagsToConfig(f)), warnings: file.warnings };
}

/**
 * Parse the command line. Help and usage errors are written to `out`/`err` and returned as
 * `{kind:'exit'}` (usage errors: one line, code 1).
 */
export function parseCli(argv: string[], env: NodeJS.ProcessEnv, out: (s: string) => void, err: (s: string) => void): CliCommand {
  let result: CliCommand | null = null;
  const program = new Command('pilot-registry')
    .description('Pilot registry: rendezvous server for pilot daemons (registry TCP/TLS + beacon UDP)')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: err, outputError: (s, write) => write(s.split('\n')[0] + '\n') });
  addServeOptions(program).action((flags: ServeFlags) => {
    const { config, warnings } = buildConfig(flags, env);
    result = { kind: 'serve', config, warnings };
  });
  program
    .command('import-snapshot')
    .description('import a v1 registry JSON snapshot into an empty data dir (keeps node IDs)')
    .argument('<file>', 'v1 snapshot JSON')
    .requiredOption('--data-dir <dir>', 'data directory to import into')
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: err, outputError: (s, write) => write(s.split('\n')[0] + '\n') })
    .action((file: string, flags: { dataDir: string }) => {
      result = { kind: 'import', file, dataDir: flags.dataDir };
    });
  addServeOptions(
    program
      .command('beacon')
      .description('run the beacon alone; node keys come from --registry')
      .option('--registry <host:port>', 'registry to look node keys up in (and announce this beacon to)', hostPort('--registry'))
      .option('--registry-tls', 'connect to the registry with TLS')
      .option('--registry-fingerprint <sha256>', 'pin the registry TLS certificate (hex SHA-256, as pilot-registry --tls prints it; implies --registry-tls)')
      .exitOverride()
      .configureOutput({ writeOut: out, writeErr: err, outputError: (s, write) => write(s.split('\n')[0] + '\n') }),
  ).action((flags: ServeFlags) => {
    const { config, warnings } = buildConfig(flags, env);
    let upstream: UpstreamRegistry | null = null;
    if (flags.registry !== undefined) {
      const { host, port } = splitHostPort(flags.registry, '--registry');
      upstream = { host, port, tls: flags.registryTls === true || flags.registryFingerprint !== undefined };
      if (flags.registryFingerprint !== undefined) upstream.tlsFingerprint = flags.registryFingerprint;
    }
    result = { kind: 'beacon', config, warnings, upstream };
  });
  try {
    program.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return { kind: 'exit', code: e.exitCode === 0 ? 0 : 1 };
    if (e instanceof PilotError) {
      err(`pilot-registry: ${e.message}\n`);
      return { kind: 'exit', code: 1 };
    }
    throw e;
  }
  return result ?? { kind: 'exit', code: 1 };
}

async function serve(config: RegistryConfig, warnings: string[]): Promise<void> {
  const log = pino({ level: config.logLevel, base: { name: 'pilot-registry', pid: process.pid } }, pino.destination(2));
  for (const w of warnings) log.warn(w);
  const server = new RegistryServer({
    config,
    logger: log,
    enterprise: { identity: { allowPrivateUrls: config.identityAllowPrivateUrls, allowHttp: config.identityAllowHttp } },
  });
  let beacon: BeaconHandle | null = null;
  let stopping = false;
  const stop = async (code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ code }, 'shutting down');
    const force = setTimeout(() => process.exit(code || 1), 10_000);
    force.unref();
    try {
      await beacon?.close();
      await server.close();
    } catch (e) {
      log.error({ err: (e as Error).message }, 'error during shutdown');
      code = code || 1;
    }
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop(0));
  process.on('SIGINT', () => void stop(0));
  server.on('fatal', () => void stop(1));
  log.info(
    {
      listen: config.listen,
      data_dir: config.dataDir,
      admin_api: config.adminToken !== undefined,
      tls: config.tls,
      legacy_signatures: config.legacySignatures,
      beacon: config.noBeacon ? null : config.beacon,
    },
    'starting',
  );
  let info;
  try {
    info = await server.listen();
  } catch (e) {
    process.stderr.write(`pilot-registry: cannot start: ${(e as Error).message}\n`);
    await server.close().catch(() => {});
    process.exit(1);
  }
  if (!config.noBeacon) {
    try {
      beacon = await startBeacon(config, server, log);
    } catch (e) {
      process.stderr.write(`pilot-registry: cannot start the beacon: ${(e as Error).message} (use --no-beacon to run without it)\n`);
      await server.close().catch(() => {});
      process.exit(1);
    }
    process.stdout.write(`beacon on udp ${advertised(beacon.address.address, beacon.address.port)}\n`);
  }
  // the "listening on" line comes last: scripts wait for it and then find the fingerprint above it
  if (info.tlsFingerprint) process.stdout.write(`tls fingerprint (sha-256 of the leaf certificate): ${info.tlsFingerprint}\n`);
  if (info.http) process.stdout.write(`metrics on http://${info.http.address}:${info.http.port}/metrics\n`);
  process.stdout.write(`pilot-registry listening on ${info.registry.address}:${info.registry.port}${info.tlsFingerprint ? ' (tls)' : ''}\n`);
}

async function runImport(file: string, dataDir: string): Promise<number> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    process.stderr.write(`pilot-registry: cannot read snapshot ${file}: ${(e as Error).message}\n`);
    return 1;
  }
  const store = new SqliteStore({ path: join(dataDir, DB_FILE) });
  try {
    await store.open();
    const summary = await importSnapshot(store, json);
    process.stdout.write(`${JSON.stringify({ imported: file, data_dir: dataDir, ...summary })}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`pilot-registry: import failed: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
  }
}

export async function main(argv = process.argv.slice(2), env = process.env): Promise<void> {
  const cmd = parseCli(
    argv,
    env,
    (s) => process.stdout.write(s),
    (s) => process.stderr.write(s),
  );
  switch (cmd.kind) {
    case 'exit':
      process.exit(cmd.code);
      break;
    case 'import':
      process.exit(await runImport(cmd.file, cmd.dataDir));
      break;
    case 'beacon': {
      const log = pino({ level: cmd.config.logLevel, base: { name: 'pilot-beacon', pid: process.pid } }, pino.destination(2));
      for (const w of cmd.warnings) log.warn(w);
      let beacon: BeaconHandle;
      try {
        beacon = await startBeaconOnly(cmd.config, cmd.upstream, log);
      } catch (e) {
        process.stderr.write(`pilot-registry: cannot start the beacon: ${(e as Error).message}\n`);
        process.exit(1);
      }
      process.stdout.write(`pilot-registry beacon listening on ${advertised(beacon.address.address, beacon.address.port)} (udp)\n`);
      const stop = (): void => void beacon.close().finally(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      break;
    }
    case 'serve':
      await serve(cmd.config, cmd.warnings);
      break;
  }
}

function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main().catch((e: unknown) => {
    process.stderr.write(`pilot-registry: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
