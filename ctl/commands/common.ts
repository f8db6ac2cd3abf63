/**
 * pilotctl plumbing: global options, the `--json` envelopes of wire reference §2
 * (`{status:"ok",data}` / `{status:"error",code,message,hint?}`), error-code mapping, progress bars.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { defaultDataDir } from '../../daemon/datadir.js';
import { Pilot, defaultSocketPath } from '../sdk/pilot.js';
import { PilotSdkError } from '../sdk/errors.js';

/** The v1 CLI error codes (wire reference §2). */
export const CliCodes = ['invalid_argument', 'not_found', 'already_exists', 'not_running', 'connection_failed', 'timeout', 'internal', 'unavailable'] as const;
/**
 * Registry codes of enterprise networks, identity joins and the key lifecycle (registry/ENTERPRISE.md), and
 * the daemon's proof-source codes: passed through as they are, so scripts can tell them apart.
 */
export const EnterpriseCodes = [
  'enterprise_required',
  'identity_refused',
  'forbidden',
  'key_expired',
  'conflict',
  'limit_reached',
  'unauthorized',
  'bad_signature',
  'proof_source_unreadable',
  'token_command_failed',
  'cert_key_mismatch',
  'bad_certificate',
  'bad_key',
] as const;
export type CliCode = (typeof CliCodes)[number] | (typeof EnterpriseCodes)[number];

export class CliError extends PilotSdkError {}

const HINTS: Record<CliCode, string> = {
  invalid_argument: 'check the arguments: pilotctl <command> --help',
  not_found: 'check the peer (hostname, address N:NNNN.HHHH.LLLL or node ID): pilotctl find <hostname>',
  already_exists: 'pick another name or port',
  not_running: 'start the daemon: pilotctl daemon start --registry HOST:PORT (or pass --socket / PILOT_SOCKET)',
  connection_failed: 'is the peer online and does it trust you? pilotctl handshake <peer>, then pilotctl trust',
  timeout: 'the peer did not answer in time: check it is running and trusted, or raise --timeout',
  internal: 'see the daemon log (pilot.log in the data directory)',
  unavailable: 'the daemon or registry cannot do this now: check pilotctl daemon status and the registry',
  enterprise_required: 'an enterprise feature: turn it on with pilotctl network enterprise <net> on (owner), or create the network with --enterprise',
  identity_refused: "the network's identity rule refused the proof; \"reason\" says why",
  forbidden: 'your role does not allow this: pilotctl network members <net> shows roles',
  key_expired: "this node's key has expired: a registry admin clears the expiry, then pilotctl key rotate",
  conflict: 'already so, or changed meanwhile: check the current state and retry',
  limit_reached: 'a limit is reached (max_members, invite inbox)',
  unauthorized: 'the admin token is wrong or missing (--admin-token or $PILOT_ADMIN_TOKEN)',
  bad_signature: "the registry refused this node's signature: check the system clock",
  proof_source_unreadable: 'the daemon reads proof files itself: check the path and its permissions',
  token_command_failed: 'run the token command by hand: it must print the token on stdout',
  cert_key_mismatch: 'give the private key that belongs to the certificate',
  bad_certificate: 'give a PEM certificate chain, leaf first',
  bad_key: 'give a PEM private key (Ed25519, ECDSA or RSA)',
};

/**
 * Map any error (SDK, daemon, ours) to a v1 CLI code (the original code is kept as `detail`), or keep an
 * enterprise code as it is; `identity_refused` also gets its `reason` (`[token_audience_mismatch] …`).
 */
export function toCliError(err: unknown): { code: CliCode; message: string; hint: string; detail?: string; reason?: string } {
  const raw = typeof (err as { code?: unknown })?.code === 'string' ? ((err as { code: string }).code) : '';
  const message = err instanceof Error ? err.message : String(err);
  const given = (err as { hint?: unknown })?.hint;
  let code: CliCode;
  switch (raw) {
    case 'invalid_argument':
    case 'bad_request':
    case 'bad_value':
    case 'bad_credit':
    case 'bad_address':
    case 'bad_state': // e.g. accepting a task that is not NEW (the daemon's hint names the right command)
    case 'commander.invalidArgument':
    case 'commander.missingArgument':
    case 'commander.unknownOption':
    case 'commander.unknownCommand':
    case 'commander.excessArguments':
    case 'commander.optionMissingArgument':
      code = 'invalid_argument';
      break;
    case 'not_found':
      code = 'not_found';
      break;
    case 'already_exists':
    case 'port_in_use':
      code = 'already_exists';
      break;
    case 'not_running':
    case 'ipc_closed':
      code = 'not_running';
      break;
    case 'refused':
    case 'unreachable':
    case 'conn_closed':
    case 'connection_failed':
    case 'connection_refused':
    case 'connection_reset':
      code = 'connection_failed';
      break;
    case 'timeout':
      code = 'timeout';
      break;
    case 'unavailable':
    case 'registry_error':
    case 'not_allowed':
    case 'unknown_op':
      code = 'unavailable';
      break;
    default:
      if ((EnterpriseCodes as readonly string[]).includes(raw)) code = raw as CliCode;
      else code = raw.startsWith('commander.') ? 'invalid_argument' : 'internal';
  }
  const hint = typeof given === 'string' && given !== '' ? given : HINTS[code];
  const reason = code === 'identity_refused' ? /\[([a-z0-9_]+)\]/.exec(message)?.[1] : undefined;
  return { code, message, hint, ...(raw && raw !== code ? { detail: raw } : {}), ...(reason ? { reason } : {}) };
}

// ---------------------------------------------------------------------------------------------------

export interface GlobalOptions {
  json?: boolean;
  socket?: string;
}

/** pilotctl's config file (`~/.pilot/config.json`, wire reference §1.15). */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PILOT_CONFIG || join(defaultDataDir(env), 'config.json');
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(configPath(env), 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** `--socket` > `$PILOT_SOCKET` > config `socket` > `<tmp>/pilot.sock`. */
export function socketPath(g: GlobalOptions): string {
  if (g.socket) return g.socket;
  if (process.env.PILOT_SOCKET) return process.env.PILOT_SOCKET;
  const c = readConfig();
  if (typeof c.socket === 'string' && c.socket) return c.socket;
  return defaultSocketPath({});
}

export class Ctx {
  private pilotP: Promise<Pilot> | null = null;
  constructor(readonly g: GlobalOptions) {}

  get json(): boolean {
    return this.g.json === true;
  }

  get socket(): string {
    return socketPath(this.g);
  }

  pilot(): Promise<Pilot> {
    this.pilotP ??= Pilot.connect({ socket: this.socket, client: 'pilotctl' });
    return this.pilotP;
  }

  async close(): Promise<void> {
    if (this.pilotP) await (await this.pilotP.catch(() => null))?.close();
  }

  /** Final output of a command. */
  ok(data: unknown, human?: string | ((d: never) => string)): void {
    if (this.json) process.stdout.write(`${JSON.stringify({ status: 'ok', data: data ?? {} })}\n`);
    else {
      const text = typeof human === 'function' ? human(data as never) : human ?? formatHuman(data);
      if (text !== '') process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  }

  /** One record of a streaming command (NDJSON in --json mode). */
  line(data: unknown, human: string): void {
    if (this.json) process.stdout.write(`${JSON.stringify(data)}\n`);
    else process.stdout.write(`${human}\n`);
  }

  fail(err: unknown): void {
    const e = toCliError(err);
    if (this.json) {
      const env: Record<string, string> = { status: 'error', code: e.code, message: e.message, hint: e.hint };
      if (e.detail) env.detail = e.detail;
      if (e.reason) env.reason = e.reason;
      process.stdout.write(`${JSON.stringify(env)}\n`);
    } else process.stderr.write(`error: ${e.message}\n${e.reason ? `  reason: ${e.reason}\n` : ''}  hint: ${e.hint}\n`);
    process.exitCode = 1;
  }

  /** A progress bar on stderr when it is a TTY and output is for humans; no-op otherwise. */
  progress(label: string): (done: number, total: number) => void {
    if (this.json || !process.stderr.isTTY) return () => undefined;
    let last = 0;
    return (done, total) => {
      const now = Date.now();
      if (done < total && now - last < 100) return;
      last = now;
      const width = 30;
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
      process.stderr.write(`\r${label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(done)}/${mib(total)}`);
      if (done >= total) process.stderr.write('\n');
    };
  }
}

export function mib(n: number): string {
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

/** Generic human rendering: `key: value` lines, arrays of objects as aligned tables. */
export function formatHuman(data: unknown): string {
  if (data === null || data === undefined) return '';
  if (typeof data !== 'object') return String(data);
  if (Array.isArray(data)) return table(data as Record<string, unknown>[]);
  const lines: string[] = [];
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (Array.isArray(v)) {
      lines.push(`${k}:`);
      const t = v.length === 0 ? '  (none)' : table(v as Record<string, unknown>[]).replace(/^/gm, '  ');
      lines.push(t);
    } else if (v !== null && typeof v === 'object') lines.push(`${k}: ${JSON.stringify(v)}`);
    else lines.push(`${k}: ${String(v)}`);
  }
  return lines.join('\n');
}

export function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '(none)';
  if (typeof rows[0] !== 'object' || rows[0] === null) return rows.map(String).join('\n');
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].slice(0, 8);
  const cell = (v: unknown): string => (v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const fmt = (vals: string[]): string => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [fmt(cols.map((c) => c.toUpperCase())), ...rows.map((r) => fmt(cols.map((c) => cell(r[c]))))].join('\n');
}

/** `30s`, `1500ms`, `2m`, `10` (seconds). */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(s).trim());
  if (!m) throw new CliError('invalid_argument', `bad duration "${s}"`, { hint: 'use e.g. 500ms, 30s, 2m' });
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000));
}

export function parseIntArg(s: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(String(s).trim())) throw new CliError('invalid_argument', `${what} must be an integer, got "${s}"`);
  const n = Number(s);
  if (n < min || n > max) throw new CliError('invalid_argument', `${what} must be in ${min}..${max}, got ${n}`);
  return n;
}

/** Wrap a command action: global options, one Ctx, envelopes, exit code, cleanup. */
export function action<A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<void>): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const ctx = new Ctx(cmd.optsWithGlobals() as GlobalOptions);
    try {
      await fn(ctx, ...(args.slice(0, -1) as A));
    } catch (err) {
      ctx.fail(err);
    } finally {
      await ctx.close();
    }
  };
}

/** Run `fn` with a deadline; rejects CliError('timeout'). */
export async function within<T>(ms: number, what: string, fn: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      fn,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError('timeout', `${what}: nothing within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
