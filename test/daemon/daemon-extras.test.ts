// Trust events on IPC, webhooks, datagrams (admitted and refused), membership kick closes sessions,
// registry TLS pinning, admission log rotation.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Admission } from '../../daemon/admission.js';
import { RegistryClient } from '../../registry/client.js';
import { Addr } from '../../transport/address.js';
import { Flags, Protocol, type Packet } from '../../transport/packet.js';
import { ADMIN, RawIpc, startDaemon, startRegistry, tempDir, trustPair, until } from './daemon-helpers.js';

t.test('trust events, webhooks, datagrams, membership kick', async (t) => {
  const hooks: Array<{ event: string; node_id: number; data: Record<string, unknown> }> = [];
  const http = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      hooks.push(JSON.parse(body) as (typeof hooks)[number]);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => http.close(() => r())));
  const hookUrl = `http://127.0.0.1:${(http.address() as { port: number }).port}/hook`;

  const reg = await startRegistry(t);
  const a = await startDaemon(t, reg.port, { extra: ['--public'] });
  const b = await startDaemon(t, reg.port, { extra: ['--public', '--webhook', hookUrl] });
  const ia = await RawIpc.connect(t, a.config.socket);
  const ib = await RawIpc.connect(t, b.config.socket);
  await ib.ok('info', {}); // speak the extension protocol: trust events are for extension clients
  const pendingEvent = ib.event('trust', (e) => e.kind === 'handshake.pending', 10_000);
  await trustPair(ia, ib, a.nodeId, b.nodeId);
  const ev = await pendingEvent;
  t.equal(ev.node, a.nodeId, 'IPC trust event names the requesting node');
  await until(() => hooks.some((h) => h.event === 'handshake.pending'), 5000, 'webhook handshake.pending');
  t.ok(hooks.some((h) => h.event === 'node.registered' && h.node_id === b.nodeId), 'webhook node.registered');

  // Datagrams between trusted peers.
  await ib.ok('datagram_bind', { port: 6000 });
  await ia.ok('datagram_send', { addr: b.address, port: 6000, data: Buffer.from('dgram!') });
  const dg = await ib.event('datagram', (e) => e.port === 6000);
  t.equal(Buffer.from(dg.data as Uint8Array).toString(), 'dgram!');
  t.equal(dg.src_addr, a.address);

  // An untrusted node's datagram is refused (silently), counted and logged.
  const c = await startDaemon(t, reg.port, { extra: ['--public'] });
  const ic = await RawIpc.connect(t, c.config.socket);
  await ic.ok('datagram_send', { addr: b.address, port: 6000, data: Buffer.from('sneaky') });
  await until(() => (b.admission.stats().refused.untrusted ?? 0) >= 1, 5000, 'datagram refused');
  await b.admission.flush();
  const line = JSON.parse((await readFile(b.dataDir.admissionLogPath, 'utf8')).trim().split('\n').pop()!) as Record<string, unknown>;
  t.equal(line.protocol, 'datagram');
  t.equal(line.src, c.address);

  // Membership kick closes the member's open session within ~1 s.
  const admin = await RegistryClient.connect({ host: '127.0.0.1', port: reg.port });
  t.teardown(() => admin.close());
  const net = await admin.createNetwork(ADMIN, { name: 'crew', joinRule: 'open' });
  await ib.ok('network_join', { network_id: net.network_id });
  await ic.ok('network_join', { network_id: net.network_id });
  // Broadcast datagram to the network reaches members.
  await ia.ok('network_join', { network_id: net.network_id });
  await ia.ok('datagram_bind', { port: 6100 });
  await ic.ok('datagram_send', { addr: `${new Addr(net.network_id, 0xffffffff).toString()}`, port: 6100, data: Buffer.from('to all') });
  const bc = await ia.event('datagram', (e) => e.port === 6100);
  t.equal(Buffer.from(bc.data as Uint8Array).toString(), 'to all', 'broadcast delivered to a member');
  t.equal(bc.src_addr, new Addr(net.network_id, c.nodeId).toString());
  const notMember = await ia.call('datagram_send', { addr: new Addr(999, 0xffffffff).toString(), port: 6100, data: Buffer.from('x') });
  t.equal(notMember.code, 'not_allowed', 'broadcast only into networks we belong to');

  const conn = await ic.ok('dial', { addr: new Addr(net.network_id, b.nodeId).toString(), port: 7, timeout_ms: 5000 });
  await ic.ok('send', { conn: conn.conn as number, data: Buffer.from('member') });
  t.equal((await ic.readBytes(conn.conn as number, 6)).toString(), 'member', 'member reaches B through the network');
  const t0 = Date.now();
  await admin.kickMember(ADMIN, net.network_id, c.nodeId);
  await ic.event('closed', (e) => e.conn === conn.conn, 3000);
  t.ok(Date.now() - t0 < 2500, `kicked member's session closed after ${Date.now() - t0} ms`);
});

t.test('registry TLS with fingerprint pinning', async (t) => {
  const reg = await startRegistry(t, { dataDir: tempDir(t, 'pilotreg-'), tls: true });
  const good = await startDaemon(t, reg.port, { extra: ['--registry-fingerprint', reg.fingerprint] });
  t.ok(good.nodeId > 0, 'registered over pinned TLS');
  const wrong = 'ab'.repeat(32);
  await t.rejects(startDaemon(t, reg.port, { extra: ['--registry-fingerprint', wrong] }), { code: 'tls_pin_mismatch' }, 'wrong pin: refused');
});

t.test('admission log is bounded (rotated)', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'admission.log');
  const adm = new Admission({
    policy: { isTrusted: () => false, sharesNetwork: () => false, allowedPorts: () => null },
    logPath: path,
    maxLogBytes: 2000,
  });
  const pkt = { srcNet: 0, srcNode: 9, dstNet: 0, dstNode: 1, srcPort: 1234, dstPort: 80, protocol: Protocol.STREAM, flags: Flags.SYN } as Packet;
  for (let i = 0; i < 100; i++) {
    t.equal(adm.check(pkt), 'untrusted');
    if (i % 10 === 0) await adm.flush();
  }
  await adm.close();
  t.equal(adm.stats().refused.untrusted, 100, 'every refusal counted');
  t.ok((await stat(path)).size <= 2000 + 300, 'log stays near its bound');
  t.ok((await stat(`${path}.1`)).size > 0, 'older lines rotated to .1');
  t.equal(adm.check({ ...pkt, dstPort: 444 }), true, 'port 444 (handshake) is open to authenticated peers');
});
