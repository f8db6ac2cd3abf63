import t from 'tap';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadDaemonConfig, normalizeArgv, normalizeKey, parseDuration, type DaemonConfig } from '../../daemon/config.js';

const base = { home: '/home/agent', tmp: '/tmp', cwd: '/work' };
const REG = ['--registry', '127.0.0.1:9000'];

async function run(argv: string[], env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}) {
  const res = await loadDaemonConfig(argv, {
    ...base,
    env,
    readFile: async (p) => {
      if (!(p in files)) throw Object.assign(new Error(`ENOENT: no such file ${p}`), { code: 'ENOENT' });
      return files[p]!;
    },
  });
  if (res.kind !== 'run') throw new Error('expected a run config');
  return res;
}

t.test('defaults: v1 constants, data dir layout, services on, encryption on', async (t) => {
  const { config } = await run(REG);
  const expected: DaemonConfig = {
    configFile: null,
    registry: '127.0.0.1:9000',
    beacon: '',
    stun: [],
    listen: '0.0.0.0:0',
    socket: '/tmp/pilot.sock',
    dataDir: '/home/agent/.pilot',
    identity: '/home/agent/.pilot/identity.key',
    hostname: '',
    public: false,
    owner: '',
    endpoint: '',
    encrypt: true,
    registryTls: false,
    registryFingerprint: '',
    allowPlaintext: false,
    allowAnonymous: false,
    keepaliveMs: 30_000,
    nat: { keepaliveMs: 20_000, probeMs: 5_000, probeMaxMs: 60_000, directTimeoutMs: 4_000, pingTimeoutMs: 2_000 },
    idleTimeoutMs: 120_000,
    synRateLimit: 100,
    maxConnsPerPort: 1024,
    maxConnsTotal: 4096,
    timeWaitMs: 10_000,
    services: { echo: true, dataExchange: true, eventStream: true, taskSubmit: true },
    webhook: '',
    logLevel: 'info',
    logFormat: 'json',
  };
  t.same(config, expected);
});

t.test('precedence: defaults ← config file ← env ← flags, with sources', async (t) => {
  const file = JSON.stringify({ registry: 'file:1', beacon: 'file:2', hostname: 'from-file', keepalive: '45s', 'no-echo': true, webhook: 'http://file/x' });
  const env = { PILOT_CONFIG: '/etc/pilot.json', PILOT_BEACON: 'env:2', PILOT_HOSTNAME: 'from-env', PILOT_NO_EVENTSTREAM: '1' };
  const res = await run(['--hostname', 'from-flag', '--keepalive=1m'], env, { '/etc/pilot.json': file });
  const c = res.config;
  t.equal(c.configFile, '/etc/pilot.json');
  t.equal(c.registry, 'file:1', 'file over default');
  t.equal(c.beacon, 'env:2', 'env over file');
  t.equal(c.hostname, 'from-flag', 'flag over env and file');
  t.equal(c.keepaliveMs, 60_000, 'flag over file');
  t.equal(c.webhook, 'http://file/x');
  t.same(c.services, { echo: false, dataExchange: true, eventStream: false, taskSubmit: true });
  t.same(
    { registry: res.sources.registry, beacon: res.sources.beacon, hostname: res.sources.hostname, keepalive: res.sources.keepalive, listen: res.sources.listen },
    { registry: 'file', beacon: 'env', hostname: 'flag', keepalive: 'flag', listen: undefined },
  );
  // --config on the command line beats PILOT_CONFIG
  const other = await run(['--config', 'local.json'], env, { '/work/local.json': JSON.stringify({ registry: 'local:9' }), '/etc/pilot.json': file });
  t.equal(other.config.registry, 'local:9');
  t.equal(other.config.configFile, '/work/local.json', 'relative to cwd');
});

t.test('v1 config keys: hyphen, underscore and camelCase spellings; unknown keys warn', async (t) => {
  const files = {
    '/c.json': JSON.stringify({
      registry: '10.0.0.1:9000',
      registry_tls: true,
      'registry-fingerprint': 'AB'.repeat(32),
      no_dataexchange: 'true',
      'max-conns-per-port': 10,
      max_conns_total: '20',
      syn_rate_limit: 5,
      idle_timeout: '2m30s',
      time_wait: 0,
      log_level: 'DEBUG',
      logFormat: 'text',
      dataDir: '/srv/pilot',
      encrypt: 'true',
      socket: 'rel.sock',
      gateway: 'whatever',
    }),
  };
  const res = await run(['--config', '/c.json'], {}, files);
  const c = res.config;
  t.equal(c.registryTls, true);
  t.equal(c.registryFingerprint, 'ab'.repeat(32));
  t.equal(c.services.dataExchange, false);
  t.equal(c.maxConnsPerPort, 10);
  t.equal(c.maxConnsTotal, 20);
  t.equal(c.synRateLimit, 5);
  t.equal(c.idleTimeoutMs, 150_000);
  t.equal(c.timeWaitMs, 0);
  t.equal(c.logLevel, 'debug');
  t.equal(c.logFormat, 'text');
  t.equal(c.dataDir, '/srv/pilot');
  t.equal(c.identity, '/srv/pilot/identity.key', 'identity follows the data dir');
  t.equal(c.socket, '/work/rel.sock');
  t.same(res.warnings, ['config file /c.json: unknown key "gateway" ignored']);
  t.equal(normalizeKey('registry_tls'), 'registry-tls');
  t.equal(normalizeKey('maxConnsPerPort'), 'max-conns-per-port');
  t.equal(normalizeKey('no_echo'), 'no-echo');
});

t.test('v1 Go-style flags: single dash, -flag=value, -encrypt=false, --no-encrypt', async (t) => {
  const c = (
    await run([
      '-registry', '127.0.0.1:9000', '-beacon=127.0.0.1:9001', '-listen', ':4000', '-encrypt=false', '-allow-plaintext',
      '-no-echo', '-no-tasksubmit', '-public', '-identity', '/k/id.key', '-owner', 'me@example.com', '-endpoint', '1.2.3.4:4000',
      '-keepalive', '10s', '-idle-timeout', '1h', '-syn-rate-limit', '50', '-max-conns-per-port', '8', '-max-conns-total', '64',
      '-time-wait', '500ms', '-webhook', 'https://hooks.example/p', '-log-level', 'warn', '-log-format', 'text', '-registry-tls',
      '-hostname', 'agent-7', '-allow-anonymous', '-data-dir', '/d', '-socket', '/s.sock', '-no-dataexchange', '-no-eventstream',
    ])
  ).config;
  t.same(c, {
    configFile: null,
    registry: '127.0.0.1:9000',
    beacon: '127.0.0.1:9001',
    stun: [],
    listen: ':4000',
    socket: '/s.sock',
    dataDir: '/d',
    identity: '/k/id.key',
    hostname: 'agent-7',
    public: true,
    owner: 'me@example.com',
    endpoint: '1.2.3.4:4000',
    encrypt: false,
    registryTls: true,
    registryFingerprint: '',
    allowPlaintext: true,
    allowAnonymous: true,
    keepaliveMs: 10_000,
    nat: { keepaliveMs: 20_000, probeMs: 5_000, probeMaxMs: 60_000, directTimeoutMs: 4_000, pingTimeoutMs: 2_000 },
    idleTimeoutMs: 3_600_000,
    synRateLimit: 50,
    maxConnsPerPort: 8,
    maxConnsTotal: 64,
    timeWaitMs: 500,
    services: { echo: false, dataExchange: false, eventStream: false, taskSubmit: false },
    webhook: 'https://hooks.example/p',
    logLevel: 'warn',
    logFormat: 'text',
  });
  t.same(
    (await run([...REG, '--nat-keepalive', '1s', '--nat-probe', '700ms', '--nat-probe-max', '3s', '--nat-direct-timeout', '1500ms', '--nat-ping-timeout', '800ms'])).config.nat,
    { keepaliveMs: 1000, probeMs: 700, probeMaxMs: 3000, directTimeoutMs: 1500, pingTimeoutMs: 800 },
    'NAT traversal timers',
  );
  t.equal((await run([...REG, '--no-encrypt', '--allow-plaintext'])).config.encrypt, false);
  t.equal((await run([...REG, '--encrypt', 'false', '--allow-plaintext'])).config.encrypt, false);
  t.equal((await run([...REG, '--public=false'])).config.public, false);
  t.same(normalizeArgv(['-h', '-registry=x', '--a', '-', '--', '-b']), ['-h', '--registry=x', '--a', '-', '--', '-b']);
});

t.test('validation errors are ConfigError with a one-line reason naming the source', async (t) => {
  const cases: Array<[string[], NodeJS.ProcessEnv, Record<string, string>, string, RegExp]> = [
    [[], {}, {}, 'missing_value', /no registry configured/],
    [[...REG, '--bogus'], {}, {}, 'bad_flag', /unknown option '--bogus'/],
    [[...REG, 'extra'], {}, {}, 'bad_flag', /too many arguments/],
    [['--registry'], {}, {}, 'bad_flag', /argument missing/],
    [['--registry', 'nohostport'], {}, {}, 'bad_value', /^--registry: expected HOST:PORT/],
    [['--registry', ':9000'], {}, {}, 'bad_value', /missing host/],
    [[...REG, '--listen', 'x:70000'], {}, {}, 'bad_value', /port out of range/],
    [[...REG, '--keepalive', '10 parsecs'], {}, {}, 'bad_value', /^--keepalive: expected a duration/],
    [[...REG, '--keepalive', '1ms'], {}, {}, 'bad_value', /must be between 1s/],
    [[...REG, '--syn-rate-limit', '1.5'], {}, {}, 'bad_value', /expected an integer/],
    [[...REG, '--max-conns-total', '0'], {}, {}, 'bad_value', /between 1 and/],
    [[...REG, '--public=maybe'], {}, {}, 'bad_value', /expected true or false/],
    [[...REG, '--log-level', 'loud'], {}, {}, 'bad_value', /expected one of trace, debug/],
    [[...REG, '--hostname', 'Bad_Name'], {}, {}, 'bad_value', /invalid hostname/],
    [[...REG, '--hostname', 'localhost'], {}, {}, 'bad_value', /reserved/],
    [[...REG, '--registry-fingerprint', 'abcd'], {}, {}, 'bad_value', /64 hex digits/],
    [[...REG, '--webhook', 'ftp://x'], {}, {}, 'bad_value', /http:\/\/ or https:\/\//],
    [[...REG, '--encrypt=false'], {}, {}, 'conflict', /also pass --allow-plaintext/],
    [[...REG], { PILOT_KEEPALIVE: 'soon' }, {}, 'bad_value', /^env PILOT_KEEPALIVE: /],
    [['--config', '/x.json'], {}, { '/x.json': '{"registry": 5}' }, 'bad_value', /config file \/x.json: "registry": expected a string/],
    [['--config', '/x.json'], {}, { '/x.json': '{oops' }, 'bad_config_file', /not valid JSON/],
    [['--config', '/x.json'], {}, { '/x.json': '[]' }, 'bad_config_file', /JSON object/],
    [['--config', '/missing.json'], {}, {}, 'bad_config_file', /cannot read config file/],
  ];
  for (const [argv, env, files, code, re] of cases) {
    const err = await run(argv, env, files).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof ConfigError, `${argv.join(' ')} → ConfigError`);
    t.equal((err as ConfigError).code, code, `${argv.join(' ')} → ${code}`);
    t.match((err as Error).message, re);
    t.notOk((err as Error).message.includes('\n'), 'one line');
  }
});

t.test('--help returns the help text listing SPEC and v1 flags', async (t) => {
  const res = await loadDaemonConfig(['--help'], base);
  t.equal(res.kind, 'help');
  const text = res.kind === 'help' ? res.text : '';
  for (const f of ['--registry', '--beacon', '--listen', '--socket', '--data-dir', '--hostname', '--public', '--registry-fingerprint', '--allow-plaintext', '--allow-anonymous', '--no-tasksubmit', '--idle-timeout', '--config']) {
    t.ok(text.includes(f), `help mentions ${f}`);
  }
  t.same((await loadDaemonConfig(['-h'], base)).kind, 'help');
});

t.test('durations: Go syntax', async (t) => {
  t.equal(parseDuration('1h30m'), 5_400_000);
  t.equal(parseDuration('1.5s'), 1500);
  t.equal(parseDuration('250ms'), 250);
  t.equal(parseDuration('90'), 90_000, 'bare number = seconds');
  t.equal(parseDuration('0'), 0);
  t.equal(parseDuration('1d'), null);
  t.equal(parseDuration(''), null);
});

t.test('reads a real config file from disk', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilot-cfg-'));
  const path = join(dir, 'config.json');
  await writeFile(path, JSON.stringify({ registry: '127.0.0.1:9000', socket: join(dir, 'p.sock') }));
  const res = await loadDaemonConfig(['-config', path], { env: {} });
  t.equal(res.kind === 'run' && res.config.socket, join(dir, 'p.sock'));
});
