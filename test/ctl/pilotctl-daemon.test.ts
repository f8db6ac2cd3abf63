// pilotctl init/config and `daemon start|status|stop` with a real registry and a real daemon process.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startRegistryProcess } from '../registry/proc.js';
import { ctl, tempDir } from './helpers.js';

t.test('init, config, daemon start/status/stop', async (t) => {
  const home = tempDir(t, 'pilotctl-home-');
  const env = { PILOT_CONFIG: join(home, 'config.json'), PILOT_DATA_DIR: join(home, 'data') };
  const regDir = tempDir(t, 'pilotctl-reg-');
  const reg = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', regDir, '--log-level', 'warn']);
  const socket = join(home, 'pilot.sock');
  const run = (args: string[], timeoutMs = 20_000) => ctl(t, socket, args, { env, timeoutMs });

  const init = await run(['init', '--registry', `127.0.0.1:${reg.port}`, '--hostname', 'charlie']);
  t.equal(init.json.status, 'ok', 'init ok');
  t.match(JSON.parse(readFileSync(env.PILOT_CONFIG, 'utf8')), { registry: `127.0.0.1:${reg.port}`, hostname: 'charlie', socket }, 'config written');
  const set = await run(['config', '--set', 'beacon=']);
  t.equal((set.json.data as { config: { beacon: string } }).config.beacon, '', 'config --set');
  const badSet = await run(['config', '--set', 'nope=1']);
  t.equal(badSet.json.code, 'invalid_argument', 'unknown config key refused');

  const before = await run(['daemon', 'status']);
  t.equal(before.json.code, 'not_running', 'status before start: not_running');

  let pid = 0;
  t.teardown(() => {
    if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  });
  const start = await run(['daemon', 'start', '--listen', '127.0.0.1:0', '--log-level', 'warn']);
  t.equal(start.json.status, 'ok', `daemon start ok ${start.stdout}`);
  pid = (start.json.data as { pid: number }).pid;
  t.ok(pid > 0, 'pid reported');
  const again = await run(['daemon', 'start', '--listen', '127.0.0.1:0']);
  t.equal(again.json.code, 'already_exists', 'second start refused');

  const info = await run(['info']);
  t.equal((info.json.data as { hostname: string }).hostname, 'charlie', 'daemon registered the configured hostname');
  const st = await run(['daemon', 'status']);
  t.equal((st.json.data as { running: boolean }).running, true, 'status running');

  const stop = await run(['daemon', 'stop']);
  t.equal(stop.json.status, 'ok', `daemon stop ok ${stop.stdout}`);
  t.equal((stop.json.data as { forced: boolean }).forced, false, 'stopped by SIGTERM');
  let alive = true;
  try {
    process.kill(pid, 0);
  } catch {
    alive = false;
  }
  t.equal(alive, false, 'daemon process is gone');
  pid = 0;
  const after = await run(['daemon', 'status']);
  t.equal(after.json.code, 'not_running', 'status after stop: not_running');
  const stop2 = await run(['daemon', 'stop']);
  t.equal(stop2.json.code, 'not_running', 'stop when not running');
});
