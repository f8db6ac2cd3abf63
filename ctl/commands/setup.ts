/** init, config, context, daemon start|stop|status (wire reference §2). */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { defaultDataDir } from '../../daemon/datadir.js';
import { DAEMON_NODE_FLAGS } from '../../daemon/node-flags.js';
import { Pilot } from '../sdk/pilot.js';
import { action, CliError, configPath, parseDuration, readConfig, type Ctx } from './common.js';

/** The compiled daemon entry next to us: dist/ctl/commands → dist/daemon/main.js. */
export const DAEMON_MAIN = fileURLToPath(new URL('../../daemon/main.js', import.meta.url));

const CONFIG_KEYS = ['registry', 'beacon', 'socket', 'hostname', 'webhook', 'data_dir'];

function writeConfig(c: Record<string, unknown>): string {
  const p = configPath();
  mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
  writeFileSync(p, `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  return p;
}

function dataDirOf(o: { dataDir?: string }): string {
  const c = readConfig();
  return resolve(o.dataDir ?? (typeof c.data_dir === 'string' && c.data_dir ? c.data_dir : defaultDataDir()));
}

async function answers(socket: string): Promise<Record<string, unknown> | null> {
  try {
    const p = await Pilot.connect({ socket, timeoutMs: 1000, client: 'pilotctl' });
    try {
      return await p.info();
    } finally {
      await p.close();
    }
  } catch {
    return null;
  }
}

function readPid(dir: string): number | null {
  try {
    const n = Number(readFileSync(join(dir, 'pilot.pid'), 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function registerSetupCommands(program: Command): void {
  program
    .command('init')
    .description('write the pilotctl config file (~/.pilot/config.json)')
    .option('--registry <host:port>', 'registry address')
    .option('--beacon <host:port>', 'beacon address')
    .option('--hostname <name>', 'hostname to register')
    .option('--socket <path>', 'IPC socket path')
    .option('--data-dir <dir>', 'daemon data directory')
    .action(
      action(async (ctx: Ctx, o: { registry?: string; beacon?: string; hostname?: string; socket?: string; dataDir?: string }) => {
        const c = readConfig();
        for (const [k, v] of Object.entries({ registry: o.registry, beacon: o.beacon, hostname: o.hostname, socket: o.socket ?? ctx.g.socket, data_dir: o.dataDir })) if (v !== undefined) c[k] = v;
        const path = writeConfig(c);
        ctx.ok({ path, config: c }, `wrote ${path}`);
      }),
    );

  program
    .command('config')
    .description('show the config, or set keys with --set key=value')
    .option('--set <kv...>', `key=value (keys: ${CONFIG_KEYS.join(', ')})`)
    .action(
      action(async (ctx: Ctx, o: { set?: string[] }) => {
        const c = readConfig();
        if (o.set) {
          for (const kv of o.set) {
            const i = kv.indexOf('=');
            if (i <= 0) throw new CliError('invalid_argument', `bad --set "${kv}"`, { hint: 'use --set key=value' });
            const k = kv.slice(0, i);
            if (!CONFIG_KEYS.includes(k)) throw new CliError('invalid_argument', `unknown config key "${k}"`, { hint: `keys: ${CONFIG_KEYS.join(', ')}` });
            c[k] = kv.slice(i + 1);
          }
          writeConfig(c);
        }
        ctx.ok({ path: configPath(), config: c });
      }),
    );

  program
    .command('context')
    .description('machine-readable manifest of every command')
    .action(
      action(async (ctx: Ctx) => {
        const walk = (cmd: Command, prefix: string): Array<Record<string, unknown>> =>
          cmd.commands.flatMap((c) => {
            const name = `${prefix}${c.name()}`;
            const self = {
              name,
              description: c.description(),
              args: c.registeredArguments.map((a) => ({ name: a.name(), required: a.required, variadic: a.variadic })),
              options: c.options.map((o) => ({ flags: o.flags, description: o.description })),
            };
            return c.commands.length > 0 ? walk(c, `${name} `) : [self];
          });
        const commands = walk(program, '');
        ctx.ok({ version: '1.2', global_options: ['--json', '--socket <path>'], commands }, () => commands.map((c) => `${String(c.name).padEnd(22)} ${String(c.description)}`).join('\n'));
      }),
    );

  const daemon = program.command('daemon').description('start, stop and inspect the local pilot-daemon');
  daemon
    .command('start')
    .description('start pilot-daemon in the background and wait until its IPC socket answers')
    .option('--registry <host:port>', 'registry address (default: config / $PILOT_REGISTRY)')
    .option('--beacon <host:port>', 'beacon address')
    .option('--listen <host:port>', 'tunnel UDP bind address')
    .option('--data-dir <dir>', 'data directory (default ~/.pilot)')
    .option('--identity <path>', 'identity file')
    .option('--owner <owner>', 'owner string')
    .option('--hostname <name>', 'hostname')
    .option('--public', 'public endpoint')
    .option('--endpoint <host:port>', 'fixed public endpoint')
    .option('--webhook <url>', 'webhook URL')
    .option('--config <file>', 'daemon JSON config file')
    .option('--log-level <level>', 'log level')
    .option('--log-format <fmt>', 'json | text')
    .option('--keepalive <d>', 'heartbeat interval')
    .option('--registry-fingerprint <hex>', 'pin the registry TLS certificate')
    .option('--no-echo', 'disable the echo service')
    .option('--no-dataexchange', 'disable the data exchange service')
    .option('--no-eventstream', 'disable the event stream service')
    .option('--foreground', 'run in the foreground (logs to stderr)')
    .option('--wait <d>', 'how long to wait for the socket', '15s')
    .action(
      action(async (ctx: Ctx, o: Record<string, string | boolean | undefined>) => {
        const c = readConfig();
        const dataDir = dataDirOf(o as { dataDir?: string });
        const socket = ctx.socket;
        const registry = (o.registry as string | undefined) ?? process.env.PILOT_REGISTRY ?? (typeof c.registry === 'string' ? c.registry : undefined);
        if (!registry) throw new CliError('invalid_argument', 'no registry address', { hint: 'pass --registry HOST:PORT or run pilotctl init --registry HOST:PORT' });
        if (await answers(socket)) throw new CliError('already_exists', `a daemon already answers on ${socket}`, { hint: 'pilotctl daemon stop first' });
        const args = ['--registry', registry, '--socket', socket, '--data-dir', dataDir];
        const beacon = (o.beacon as string | undefined) ?? (typeof c.beacon === 'string' ? c.beacon : undefined);
        if (beacon !== undefined) args.push('--beacon', beacon);
        const hostname = (o.hostname as string | undefined) ?? (typeof c.hostname === 'string' ? c.hostname : undefined);
        if (hostname) args.push('--hostname', hostname);
        const webhook = (o.webhook as string | undefined) ?? (typeof c.webhook === 'string' ? c.webhook : undefined);
        if (webhook) args.push('--webhook', webhook);
        for (const k of ['listen', 'identity', 'owner', 'endpoint', 'config', 'logLevel', 'logFormat', 'keepalive', 'registryFingerprint'] as const) {
          if (typeof o[k] === 'string') args.push(`--${k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`, o[k]);
        }
        if (o.public) args.push('--public');
        if (o.echo === false) args.push('--no-echo');
        if (o.dataexchange === false) args.push('--no-dataexchange');
        if (o.eventstream === false) args.push('--no-eventstream');
        mkdirSync(dataDir, { recursive: true, mode: 0o700 });
        // Flags carry everything; empty PILOT_* variables would only make the daemon refuse to start.
        const env = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => !(k.startsWith('PILOT_') && v === '')));
        if (o.foreground) {
          const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON_MAIN, ...args], { stdio: 'inherit', env });
          const forward = (s: NodeJS.Signals): void => void child.kill(s);
          process.on('SIGINT', forward);
          process.on('SIGTERM', forward);
          const code = await new Promise<number | null>((r) => child.on('exit', (c2) => r(c2)));
          process.exitCode = code ?? 1;
          return;
        }
        const logPath = join(dataDir, 'pilot.log');
        const log = openSync(logPath, 'a', 0o600);
        const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON_MAIN, ...args], { detached: true, stdio: ['ignore', log, log], env });
        closeSync(log);
        let exited: number | null | undefined;
        child.on('exit', (code) => (exited = code));
        child.unref();
        writeFileSync(join(dataDir, 'pilot.pid'), `${child.pid}\n`, { mode: 0o600 });
        const deadline = Date.now() + parseDuration(o.wait as string);
        let info: Record<string, unknown> | null = null;
        while (Date.now() < deadline && exited === undefined) {
          info = await answers(socket);
          if (info) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        if (!info) {
          if (exited === undefined) child.kill('SIGTERM');
          rmSync(join(dataDir, 'pilot.pid'), { force: true });
          let tail = '';
          try {
            tail = readFileSync(logPath, 'utf8').split('\n').filter(Boolean).slice(-3).join(' | ');
          } catch {
            /* no log */
          }
          throw new CliError(exited === undefined ? 'timeout' : 'internal', `daemon did not come up${exited !== undefined ? ` (exit ${exited})` : ''}: ${tail.slice(-500)}`, { hint: `see ${logPath}` });
        }
        ctx.ok({ pid: child.pid, socket, data_dir: dataDir, log: logPath, node_id: info.node_id, address: info.address }, `daemon started (pid ${child.pid}): node ${String(info.node_id)} ${String(info.address)}, socket ${socket}, log ${logPath}`);
      }),
    );

  daemon
    .command('stop')
    .description('stop the daemon (SIGTERM, SIGKILL after 10 s)')
    .option('--data-dir <dir>', 'data directory holding pilot.pid')
    .action(
      action(async (ctx: Ctx, o: { dataDir?: string }) => {
        const dir = dataDirOf(o);
        const pid = readPid(dir);
        if (pid === null || !alive(pid)) {
          rmSync(join(dir, 'pilot.pid'), { force: true });
          throw new CliError('not_running', 'no running daemon (no live pid in pilot.pid)', { hint: `checked ${join(dir, 'pilot.pid')}` });
        }
        process.kill(pid, 'SIGTERM');
        const deadline = Date.now() + 10_000;
        while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        let forced = false;
        if (alive(pid)) {
          process.kill(pid, 'SIGKILL');
          forced = true;
        }
        rmSync(join(dir, 'pilot.pid'), { force: true });
        ctx.ok({ pid, stopped: true, forced }, `daemon ${pid} stopped${forced ? ' (killed)' : ''}`);
      }),
    );

  daemon
    .command('status')
    .description('is the daemon running? (--check: exit code only)')
    .option('--check', 'print nothing, exit 0 if running, 1 if not')
    .action(
      action(async (ctx: Ctx, o: { check?: boolean }) => {
        const info = await answers(ctx.socket);
        if (o.check) {
          process.exitCode = info ? 0 : 1;
          return;
        }
        if (!info) throw new CliError('not_running', `no daemon answers on ${ctx.socket}`);
        ctx.ok({ running: true, socket: ctx.socket, node_id: info.node_id, address: info.address, uptime_secs: info.uptime_secs }, `running: node ${String(info.node_id)} ${String(info.address)} (socket ${ctx.socket})`);
      }),
    );
}
