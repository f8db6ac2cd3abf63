#!/usr/bin/env -S node --initial-old-space-size=48 --max-semi-space-size=4
/**
 * `pilot-daemon`: parse flags/env/config (daemon/config.ts), run a Daemon, log JSON (pino) to stderr,
 * shut down gracefully on SIGTERM/SIGINT (deregister, FIN every connection). Exit codes: 0 clean,
 * 2 bad flags/config, 1 startup failure.
 */
import { pino } from 'pino';
import { ConfigError, loadDaemonConfig } from './config.js';
import { Daemon } from './daemon.js';

async function main(): Promise<void> {
  let cl;
  try {
    cl = await loadDaemonConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`pilot-daemon: ${(err as Error).message}\n`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  }
  if (cl.kind === 'help') {
    process.stdout.write(cl.text);
    return;
  }
  const cfg = cl.config;
  const log = pino(
    { level: cfg.logLevel, base: { pid: process.pid, name: 'pilot-daemon' } },
    cfg.logFormat === 'text' ? pino.destination({ fd: 2, sync: false }) : pino.destination({ fd: 2, sync: false }),
  );
  for (const w of cl.warnings) log.warn(w);
  const daemon = new Daemon({ config: cfg, log });
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) {
      log.warn({ sig }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ sig }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    daemon.close({ deregister: true }).then(
      () => {
        log.flush();
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('uncaughtException', (err) => log.error({ err: err.stack ?? err.message }, 'uncaught exception (continuing)'));
  process.on('unhandledRejection', (err) => log.error({ err: (err as Error)?.stack ?? String(err) }, 'unhandled rejection (continuing)'));
  try {
    await daemon.start();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'daemon failed to start');
    log.flush();
    await daemon.close({ deregister: false }).catch(() => undefined);
    process.stderr.write(`pilot-daemon: ${(err as Error).message}\n`);
    process.exit(1);
  }
  // Machine-readable readiness line on stdout (tests and pilotctl wait for it).
  process.stdout.write(`${JSON.stringify({ ready: true, node_id: daemon.nodeId, address: daemon.address, socket: cfg.socket, pid: process.pid })}\n`);
}

void main();
