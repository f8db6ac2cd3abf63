import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import t from 'tap';
import { RegistryClient } from '../../registry/client.js';
import { RegistryServer } from '../../registry/server.js';
import { CERT_FILE, fingerprintOf, generateSelfSigned, KEY_FILE, loadTlsMaterial } from '../../registry/tls.js';
import { NO_LIMITS, registerNode } from './helpers.js';

t.test('TLS with fingerprint pinning: right pin works, wrong pin refused, plaintext client fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = new RegistryServer({ logger: pino({ level: 'silent' }), manualMaintenance: true, config: { dataDir: dir, listen: '127.0.0.1:0', tls: true, rateLimits: NO_LIMITS } });
  const info = await server.listen();
  t.teardown(() => server.close());
  t.match(info.tlsFingerprint, /^[0-9a-f]{64}$/);
  t.equal(info.tlsFingerprint, fingerprintOf(readFileSync(join(dir, CERT_FILE), 'utf8')), 'fingerprint = SHA-256 of the persisted leaf');
  t.equal(statSync(join(dir, KEY_FILE)).mode & 0o777, 0o600, 'key file is private');
  const port = info.registry.port;

  const good = await RegistryClient.connect({ host: '127.0.0.1', port, tls: { fingerprint: info.tlsFingerprint!.toUpperCase().replace(/(..)/g, '$1:').slice(0, -1) } });
  t.teardown(() => good.close());
  const n = await registerNode(good);
  t.equal((await good.lookup(n.nodeId)).node_id, n.nodeId, 'requests work over TLS');

  const wrong = 'ab'.repeat(32);
  await t.rejects(RegistryClient.connect({ host: '127.0.0.1', port, tls: { fingerprint: wrong } }), { code: 'tls_pin_mismatch' });
  await t.rejects(RegistryClient.connect({ host: '127.0.0.1', port, tls: {} }), { code: 'connection_lost', message: /self.signed|certificate/ }, 'CA verification without a pin refuses a self-signed cert');
  const plain = new RegistryClient({ host: '127.0.0.1', port, requestTimeoutMs: 1000 });
  t.teardown(() => plain.close());
  await t.rejects(plain.lookup(1), { code: /timeout|connection_lost/ }, 'plaintext client gets nothing usable');
});

t.test('self-signed certificate is persisted (stable fingerprint) and operator cert/key are used as given', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await loadTlsMaterial({ dataDir: dir });
  const second = await loadTlsMaterial({ dataDir: dir });
  t.equal(second.fingerprint, first.fingerprint);
  const pair = await generateSelfSigned(['registry.example']);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'c.pem'), pair.cert);
  writeFileSync(join(dir, 'k.pem'), pair.key);
  const given = await loadTlsMaterial({ dataDir: dir, certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') });
  t.equal(given.fingerprint, fingerprintOf(pair.cert));
  t.not(given.fingerprint, first.fingerprint);
  await t.rejects(loadTlsMaterial({ dataDir: dir, certFile: join(dir, 'nope.pem'), keyFile: join(dir, 'k.pem') }), { code: 'tls_unreadable' });
  writeFileSync(join(dir, 'bad.pem'), 'not a cert');
  await t.rejects(loadTlsMaterial({ dataDir: dir, certFile: join(dir, 'bad.pem'), keyFile: join(dir, 'k.pem') }), { code: 'tls_bad_cert' });
});
