import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RegistryClient } from '../../registry/client.js';
import { configFromEnv, configFromJson, DEFAULT_CONFIG, resolveConfig } from '../../registry/config.js';
import { parseCli } from '../../registry/main.js';
import { MAIN, startRegistryProcess } from './proc.js';

function parse(argv: string[], env: NodeJS.ProcessEnv = {}): { cmd: ReturnType<typeof parseCli>; out: string; err: string } {
  let out = '';
  let err = '';
  const cmd = parseCli(argv, env, (s) => (out += s), (s) => (err += s));
  return { cmd, out, err };
}

t.test('config precedence: defaults ← config file ← env ← flags; v1 key spellings accepted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ registry_addr: '127.0.0.1:7000', 'admin-token': 'from-file', http_addr: '127.0.0.1:7001', tls: false, log_format: 'json', data_dir: '/srv/pilot', rate_limits: { register_new: { rate: 1, burst: 5 } } }));
  const fileOnly = parse(['--config', file]);
  t.match(fileOnly.cmd, { kind: 'serve', config: { listen: '127.0.0.1:7000', adminToken: 'from-file', http: '127.0.0.1:7001', dataDir: '/srv/pilot', beacon: DEFAULT_CONFIG.beacon } });
  t.match((fileOnly.cmd as { warnings: string[] }).warnings, [/log_format/]);
  t.same((fileOnly.cmd as { config: { rateLimits: { register_new: unknown } } }).config.rateLimits.register_new, { rate: 1, burst: 5 });
  const envWins = parse(['--config', file], { PILOT_ADMIN_TOKEN: 'from-env', PILOT_LEGACY_SIGNATURES: 'true', PILOT_LISTEN: '127.0.0.1:7100' });
  t.match(envWins.cmd, { config: { adminToken: 'from-env', legacySignatures: true, listen: '127.0.0.1:7100' } });
  const flagsWin = parse(['--config', file, '--admin-token', 'from-flag', '--listen', '0.0.0.0:9999', '--no-beacon', '--tls'], { PILOT_ADMIN_TOKEN: 'from-env' });
  t.match(flagsWin.cmd, { kind: 'serve', config: { adminToken: 'from-flag', listen: '0.0.0.0:9999', noBeacon: true, tls: true } });
  t.match(parse([]).cmd, { kind: 'serve', config: { listen: '0.0.0.0:9000', beacon: '0.0.0.0:9001', noBeacon: false, adminToken: undefined } });
  t.match(parse(['--beacon', '127.0.0.1:9101', '--legacy-beacon']).cmd, { config: { beacon: '127.0.0.1:9101', legacyBeacon: true, noBeacon: false } });
});

t.test('config errors are one clear line', async (t) => {
  t.throws(() => configFromJson({ listen: 5 }), { code: 'bad_config', message: /"listen" must be a string/ });
  t.throws(() => configFromJson({ rate_limits: { bogus: null } }), { message: /unknown rate limit category/ });
  t.throws(() => configFromEnv({ PILOT_TLS: 'maybe' }), { message: /PILOT_TLS must be true or false/ });
  t.throws(() => resolveConfig({ listen: 'nope' }), { message: /listen must be HOST:PORT/ });
  t.throws(() => resolveConfig({ tlsKey: 'k.pem' }), { message: /together/ });
  t.match(configFromJson({ mystery: 1 }).warnings, [/unknown key "mystery"/]);
  for (const [argv, msg] of [
    [['--bogus'], /unknown option '--bogus'/],
    [['--listen', 'x'], /--listen must be HOST:PORT/],
    [['--store-sync', 'sometimes'], /sometimes/],
    [['--tls-key', 'k.pem'], /together/],
    [['--config', '/nonexistent.json'], /cannot read config file/],
    [['import-snapshot', 'f.json'], /--data-dir/],
  ] as const) {
    const r = parse([...argv]);
    t.same(r.cmd, { kind: 'exit', code: 1 }, argv.join(' '));
    t.match(r.err, msg);
    t.equal(r.err.trim().split('\n').length, 1, 'one line');
  }
  const help = parse(['--help']);
  t.same(help.cmd, { kind: 'exit', code: 0 });
  t.match(help.out, /--listen <host:port>[\s\S]*--admin-token[\s\S]*import-snapshot/);
});

t.test('real process: --help, bad flag, serve + SIGTERM, TLS fingerprint printed, import-snapshot', async (t) => {
  const help = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /Usage: pilot-registry/);
  const bad = spawnSync(process.execPath, [MAIN, '--nope'], { encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.equal(bad.stderr.trim().split('\n').length, 1);

  const dir = mkdtempSync(join(tmpdir(), 'pilot-main-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const id = Identity.generate();
  writeFileSync(
    join(dir, 'snap.json'),
    JSON.stringify({ next_node: 9, nodes: { '5': { id: 5, public_key: id.publicKeyB64, hostname: 'imported', last_seen: new Date().toISOString() } }, trust_pairs: [] }),
  );
  const imp = spawnSync(process.execPath, [MAIN, 'import-snapshot', join(dir, 'snap.json'), '--data-dir', join(dir, 'data')], { encoding: 'utf8' });
  t.equal(imp.status, 0, imp.stderr);
  t.match(JSON.parse(imp.stdout), { nodes: 1, nextNodeId: 9 });
  const again = spawnSync(process.execPath, [MAIN, 'import-snapshot', join(dir, 'snap.json'), '--data-dir', join(dir, 'data')], { encoding: 'utf8' });
  t.equal(again.status, 1);
  t.match(again.stderr, /empty data dir/);

  const p = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--no-beacon', '--tls', '--data-dir', join(dir, 'data'), '--log-level', 'info'], {
    PILOT_ADMIN_TOKEN: 'secret-token-value',
  });
  const fp = /tls fingerprint \(sha-256 of the leaf certificate\): ([0-9a-f]{64})/.exec(p.stdout())?.[1];
  t.ok(fp, 'fingerprint printed');
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: p.port, tls: { fingerprint: fp! } });
  t.equal((await c.register(id)).node_id, 5, 'imported node keeps its ID');
  t.equal((await c.adminStats('secret-token-value')).nodes_total, 1, 'admin token taken from PILOT_ADMIN_TOKEN');
  await c.close();
  p.proc.kill('SIGTERM');
  t.equal((await p.exited).code, 0, 'clean exit on SIGTERM');
  const logs = p.stderr();
  t.match(logs, /"msg":"registry listening"/);
  t.match(logs, /"msg":"registry closed"/);
  t.notMatch(logs, /secret-token-value/, 'the admin token is never logged');
  for (const line of logs.trim().split('\n')) t.doesNotThrow(() => JSON.parse(line), 'stderr is JSON lines');
});
