import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { REGISTRY_NODE_FLAGS } from '../../registry/node-flags.js';

/** The compiled `pilot-registry` entry point (tests run from dist/). */
export const MAIN = fileURLToPath(new URL('../../registry/main.js', import.meta.url));

export interface RegistryProcess {
  proc: ChildProcess;
  port: number;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start `pilot-registry` and wait for its "listening on" line. Killed at teardown. */
export async function startRegistryProcess(t: { teardown(fn: () => unknown): void }, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RegistryProcess> {
  const proc = spawn(process.execPath, [...REGISTRY_NODE_FLAGS, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`registry did not start: ${err.slice(-2000)}`)), 15_000);
    const check = (): void => {
      const m = /listening on [^\s]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', check);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`registry exited (${code}) before listening: ${err.slice(-2000)}`));
    });
  });
  return { proc, port, stdout: () => out, stderr: () => err, exited };
}
