// Registry + two in-process daemons over real UDP and a raw IPC client: registration, IPC hello/info,
// untrusted SYN silence (counted + admission log), handshake + approve, echo, listen/dial/send, revoke.
import { readFile, stat } from 'node:fs/promises';
import t from 'tap';
import { startDaemon, startRegistry, RawIpc, until } from './daemon-helpers.js';

t.test('two daemons: admission, handshake, streams, revoke', async (t) => {
  const reg = await startRegistry(t);
  const a = await startDaemon(t, reg.port);
  const b = await startDaemon(t, reg.port, { extra: ['--public'] });
  t.ok(a.nodeId > 0 && b.nodeId > 0 && a.nodeId !== b.nodeId, 'both registered with distinct node IDs');

  const ia = await RawIpc.connect(t, a.config.socket);
  const ib = await RawIpc.connect(t, b.config.socket);
  const mode = (await stat(a.config.socket)).mode & 0o777;
  t.equal(mode, 0o600, 'IPC socket mode 0600');

  const hello = await ia.ok('hello', { version: 1, client: 'test' });
  t.equal(hello.version, 1);
  const info = await ia.ok('info', {});
  t.equal(info.node_id, a.nodeId);
  t.equal(info.address, a.address);

  // Untrusted SYN: silence (dial times out, no RST), counted and logged at B.
  const refused = await ia.call('dial', { addr: b.address, port: 7, timeout_ms: 1500 });
  t.equal(refused.ok, false, 'untrusted dial fails');
  t.equal(refused.code, 'timeout', 'with a timeout: no RST, no SYN-ACK came back');
  t.ok((b.host.stats().refused.untrusted ?? 0) >= 1, 'B counted the refusal as untrusted');
  t.equal(b.host.stats().rstSent, 0, 'B sent no RST');
  await b.admission.flush();
  const log = await readFile(b.dataDir.admissionLogPath, 'utf8');
  const line = JSON.parse(log.trim().split('\n')[0]!) as Record<string, unknown>;
  t.equal(line.reason, 'untrusted');
  t.equal(line.dst_port, 7);
  t.equal(line.src, a.address);

  // Handshake: A asks B (public → direct to port 444); B approves.
  const sent = await ia.ok('handshake_send', { node: b.nodeId, justification: 'test' });
  t.equal(sent.status, 'sent');
  await until(async () => ((await ib.ok('handshake_pending', {})).pending as unknown[]).length > 0, 10_000, 'pending at B');
  const ap = await ib.ok('handshake_approve', { node: a.nodeId });
  t.equal(ap.status, 'approved');
  await until(() => a.trustStore.isTrusted(b.nodeId), 10_000, 'A trusts B');
  t.ok(b.trustStore.isTrusted(a.nodeId), 'B trusts A');

  // Echo over a real stream.
  const echo = await ia.ok('dial', { addr: b.address, port: 7 });
  const conn = echo.conn as number;
  t.same((await ia.ok('send', { conn, data: Buffer.from('hello pilot') })).accepted, 11);
  t.equal((await ia.readBytes(conn, 11)).toString(), 'hello pilot', 'echo came back');
  await ia.ok('close', { conn });
  await ia.event('closed', (e) => e.conn === conn);

  // App listener on B, dial by node ID from A, data both ways, half-close → eof.
  await ib.ok('listen', { port: 5000 });
  const d = await ia.ok('dial', { addr: String(b.nodeId), port: 5000 });
  const acc = await ib.event('accept', (e) => e.port === 5000);
  t.equal(acc.remote_addr, a.address);
  await ia.ok('send', { conn: d.conn as number, data: Buffer.from('ping') });
  t.equal((await ib.readBytes(acc.conn as number, 4)).toString(), 'ping');
  await ib.ok('send', { conn: acc.conn as number, data: Buffer.from('pong') });
  t.equal((await ia.readBytes(d.conn as number, 4)).toString(), 'pong');
  await ia.ok('end', { conn: d.conn as number });
  await ib.event('eof', (e) => e.conn === acc.conn);

  // Revoke cuts an open stream within ~1 s.
  const d2 = await ia.ok('dial', { addr: b.address, port: 5000 });
  await ib.event('accept', (e) => e.port === 5000);
  const t0 = Date.now();
  const rv = await ib.ok('handshake_revoke', { node: a.nodeId });
  t.equal(rv.status, 'revoked');
  const closed = await ia.event('closed', (e) => e.conn === d2.conn, 3000);
  t.ok(closed, 'A saw its stream closed');
  t.ok(Date.now() - t0 < 2000, `closed after ${Date.now() - t0} ms`);
  await until(() => !a.trustStore.isTrusted(b.nodeId), 5000, 'A dropped trust after the revoke');
});
