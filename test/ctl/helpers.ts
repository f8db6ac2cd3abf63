// Shared setup for ctl tests: a real registry process + two real daemon processes on loopback.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pilot } from '../../ctl/index.js';
import { spawnDaemon, tempDir, until, type DaemonProcess } from '../daemon/daemon-helpers.js';
import { startRegistryProcess } from '../registry/proc.js';

export { until, tempDir };
export const PILOTCTL = fileURLToPath(new URL('../../ctl/pilotctl.js', import.meta.url));

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Node {
  proc: DaemonProcess;
  dir: string;
  socket: string;
  nodeId: number;
  pilot: Pilot;
}

export async function startNetwork(t: Tap, opts: { trust?: boolean } = {}): Promise<{ regPort: number; a: Node; b: Node }> {
  const regDir = tempDir(t, 'pilotctl-reg-');
  const reg = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', regDir, '--log-level', 'warn']);
  const start = async (name: string): Promise<Node> => {
    const dir = tempDir(t, `pilotctl-${name}-`);
    const socket = join(dir, 'pilot.sock');
    const proc = await spawnDaemon(t, ['--registry', `127.0.0.1:${reg.port}`, '--listen', '127.0.0.1:0', '--socket', socket, '--data-dir', dir, '--hostname', name, '--public', '--keepalive', '2s']);
    const pilot = await Pilot.connect({ socket });
    t.teardown(() => pilot.close());
    return { proc, dir, socket, nodeId: proc.nodeId, pilot };
  };
  const a = await start('alpha');
  const b = await start('bravo');
  if (opts.trust) {
    await a.pilot.handshake(b.nodeId, 'test');
    await until(async () => (await b.pilot.pending()).length > 0 || (await b.pilot.trusted()).length > 0, 10_000, 'pending at B');
    await b.pilot.approve(a.nodeId);
    await until(async () => (await a.pilot.trusted()).some((x) => x.node_id === b.nodeId), 10_000, 'A trusts B');
  }
  return { regPort: reg.port, a, b };
}

export interface CtlResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json: { status: string; data?: Record<string, unknown> & unknown; code?: string; message?: string; hint?: string };
}

/** Run `pilotctl --json --socket S args…` to completion. */
export function ctl(t: Tap, socket: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CtlResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [PILOTCTL, '--json', '--socket', socket, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`pilotctl ${args.join(' ')} timed out; stdout=${stdout} stderr=${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    t.teardown(() => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
    p.on('exit', (code) => {
      clearTimeout(timer);
      let json: CtlResult['json'];
      try {
        const lines = stdout.trim().split('\n');
        json = JSON.parse(lines[lines.length - 1] ?? '') as CtlResult['json'];
      } catch {
        json = { status: 'unparsable' };
      }
      resolve({ code, stdout, stderr, json });
    });
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else p.stdin.end();
  });
}
