import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/** A benchmark peer process speaking a tiny request/reply protocol over the fork IPC channel. */
export class BenchChild {
  private readonly proc: ChildProcess;
  private readonly waiting: Array<{ type: string; resolve: (m: BenchMessage) => void; reject: (e: Error) => void }> = [];
  private readonly inbox: BenchMessage[] = [];
  private exited: Error | null = null;

  constructor(script: string, args: string[] = [], execArgv: string[] = []) {
    // BENCH_PROFILE_DIR=DIR writes a V8 CPU profile of every child there (see README, Benchmarks).
    const prof = process.env.BENCH_PROFILE_DIR;
    if (prof && execArgv.length === 0) execArgv = ['--cpu-prof', `--cpu-prof-dir=${prof}`];
    this.proc = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
    this.proc.on('message', (m: BenchMessage) => {
      const i = this.waiting.findIndex((w) => w.type === m.type);
      if (m.type === 'error') {
        const w = this.waiting.shift();
        if (w) w.reject(new Error(String(m.message)));
        else this.inbox.push(m);
      } else if (i >= 0) this.waiting.splice(i, 1)[0]!.resolve(m);
      else this.inbox.push(m);
    });
    this.proc.on('exit', (code, signal) => {
      this.exited = new Error(`bench child ${script} exited (${code ?? signal})`);
      for (const w of this.waiting.splice(0)) w.reject(this.exited);
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  send(m: BenchMessage): void {
    this.proc.send(m);
  }

  /** Wait for the next message of `type` (messages that arrived earlier are kept). */
  next(type: string, timeoutMs = 120_000): Promise<BenchMessage> {
    const i = this.inbox.findIndex((m) => m.type === type || m.type === 'error');
    if (i >= 0) {
      const m = this.inbox.splice(i, 1)[0]!;
      return m.type === 'error' ? Promise.reject(new Error(String(m.message))) : Promise.resolve(m);
    }
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for "${type}"`)), timeoutMs);
      this.waiting.push({
        type,
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  async request(m: BenchMessage, replyType: string, timeoutMs?: number): Promise<BenchMessage> {
    const reply = this.next(replyType, timeoutMs);
    this.send(m);
    return reply;
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    await Promise.race([once(this.proc, 'exit'), new Promise((r) => setTimeout(r, 3000))]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

export interface BenchMessage {
  type: string;
  [k: string]: unknown;
}

/** Child side: handle requests from the parent; errors are reported, never thrown away. */
export function serveParent(handler: (m: BenchMessage, reply: (r: BenchMessage) => void) => Promise<void> | void): void {
  const reply = (r: BenchMessage): void => {
    process.send?.(r);
  };
  process.on('message', (m: BenchMessage) => {
    Promise.resolve()
      .then(() => handler(m, reply))
      .catch((err: Error) => reply({ type: 'error', message: err.stack ?? err.message }));
  });
  process.on('disconnect', () => process.exit(0));
  // A clean exit on SIGTERM (BenchChild.close) so --cpu-prof profiles get written.
  process.on('SIGTERM', () => process.exit(0));
}

/** CPU time of this process in ms (user + system). */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
