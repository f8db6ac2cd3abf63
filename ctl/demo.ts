#!/usr/bin/env node
// The main job (`npm start`): a registry and two daemons on loopback with separate data dirs; they
// handshake and approve, connect, send a message and a file, and run `pilotctl bench` — every step
// through the real binaries, printed as the commands a user would type.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DAEMON_NODE_FLAGS } from '../daemon/node-flags.js';
import { REGISTRY_NODE_FLAGS } from '../registry/node-flags.js';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..');
const keep = process.argv.includes('--keep');
const dir = mkdtempSync(join(tmpdir(), 'pilot-demo-'));
const procs: ChildProcess[] = [];

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);
}

/** Start a binary; resolve with the first stdout line `match` accepts (its stderr goes to a log file). */
function start(script: string, args: string[], logName: string, match: (line: string) => string | null): Promise<string> {
  const log = join(dir, `${logName}.log`);
  writeFileSync(log, '');
  const flags = script === 'daemon/main.js' ? DAEMON_NODE_FLAGS : REGISTRY_NODE_FLAGS;
  const proc = spawn(process.execPath, [...flags, join(dist, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  proc.stderr!.on('data', (d: Buffer) => writeFileSync(log, d, { flag: 'a' }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within 30 s (log: ${log})`)), 30_000);
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const v = match(l);
      if (v !== null) (clearTimeout(timer), resolve(v));
    });
    proc.once('exit', (c) => (clearTimeout(timer), reject(new Error(`${script} exited with ${c} (log: ${log})`))));
  });
}

/** Run one pilotctl command as `who`, echo it and its output; fail loudly on error. */
function pilotctl(who: string, ...args: string[]): string {
  process.stdout.write(`\x1b[36m${who}$ pilotctl ${args.join(' ')}\x1b[0m\n`);
  const r = spawnSync(process.execPath, [join(dist, 'ctl/pilotctl.js'), '--socket', join(dir, `${who}.sock`), ...args], { encoding: 'utf8', timeout: 120_000 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trimEnd();
  if (out) process.stdout.write(`${out.replace(/^/gm, '  ')}\n`);
  if (r.status !== 0) throw new Error(`pilotctl ${args[0]} failed (exit ${r.status ?? r.signal})`);
  return r.stdout;
}

async function main(): Promise<void> {
  say('1. pilot-registry (registry on TCP, beacon on UDP), on loopback');
  let beacon = '';
  const registry = await start(
    'registry/main.js',
    ['--listen', '127.0.0.1:0', '--beacon', '127.0.0.1:0', '--data-dir', join(dir, 'registry'), '--log-level', 'warn'],
    'registry',
    (l) => {
      beacon = /beacon on udp (\S+)/.exec(l)?.[1] ?? beacon;
      return /^pilot-registry listening on (\S+)/.exec(l)?.[1] ?? null;
    },
  );
  console.log(`  registry on tcp ${registry}, beacon on udp ${beacon}`);

  say('2. two pilot-daemons, alice and bob, each with its own data dir and IPC socket');
  const nodes: Record<string, number> = {};
  for (const who of ['alice', 'bob']) {
    const ready = await start(
      'daemon/main.js',
      ['--registry', registry, '--beacon', beacon, '--listen', '127.0.0.1:0', '--socket', join(dir, `${who}.sock`), '--data-dir', join(dir, who), '--hostname', who, '--log-level', 'warn'],
      who,
      (l) => (l.startsWith('{"ready"') ? l : null),
    );
    const info = JSON.parse(ready) as { node_id: number; address: string };
    nodes[who] = info.node_id;
    console.log(`  ${who}: node ${info.node_id}, address ${info.address}`);
  }

  say('3. trust: alice asks bob (by node ID: a private node\'s hostname is invisible to strangers), bob approves');
  pilotctl('alice', 'handshake', String(nodes.bob), 'demo: alice would like to talk');
  for (let i = 0; i < 50 && !pilotctl('bob', '--json', 'pending').includes(`${nodes.alice}`); i++) await new Promise((r) => setTimeout(r, 200));
  pilotctl('bob', 'approve', String(nodes.alice));
  for (let i = 0; i < 50 && !pilotctl('alice', '--json', 'trust').includes(`${nodes.bob}`); i++) await new Promise((r) => setTimeout(r, 200));
  pilotctl('alice', 'trust');

  say('4. connect: an encrypted stream to bob\'s echo service (port 7)');
  pilotctl('alice', 'connect', 'bob', '7', '--message', 'hello bob');

  say('5. a message and a file through bob\'s data exchange (port 1001)');
  pilotctl('alice', 'send-message', 'bob', '--data', 'hello from alice');
  const file = join(dir, 'report.bin');
  const content = randomBytes(4 * 1024 * 1024);
  writeFileSync(file, content);
  pilotctl('alice', 'send-file', 'bob', file);
  pilotctl('bob', 'inbox');
  pilotctl('bob', 'received');
  const receivedDir = join(dir, 'bob', 'received');
  const got = readdirSync(receivedDir).find((f) => f.includes(basename(file, '.bin')));
  const sent = createHash('sha256').update(content).digest('hex');
  const arrived = got ? createHash('sha256').update(readFileSync(join(receivedDir, got))).digest('hex') : 'missing';
  console.log(`  sha256 sent     ${sent}\n  sha256 received ${arrived} ${arrived === sent ? '(identical)' : '(MISMATCH)'}`);
  if (arrived !== sent) throw new Error('the received file differs from the sent one');

  say('6. pilotctl bench: 16 MiB echo round trip through both daemons, encrypted, hash verified');
  pilotctl('alice', 'bench', 'bob', '16');

  say('7. what alice sees');
  pilotctl('alice', 'info');
  pilotctl('alice', 'peers');
  say(`Done. Logs and data dirs: ${keep ? dir : '(removed; run with -- --keep to keep them)'}`);
}

let code = 0;
try {
  await main();
} catch (err) {
  process.stderr.write(`\nmain job failed: ${(err as Error).message}\n`);
  code = 1;
} finally {
  for (const p of procs.reverse()) p.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1000));
  if (!keep && code === 0) rmSync(dir, { recursive: true, force: true });
  else if (code !== 0) process.stderr.write(`logs kept in ${dir}\n`);
}
process.exit(code);
