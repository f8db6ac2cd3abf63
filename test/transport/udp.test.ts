import t, { type Test } from 'tap';
import { once } from 'node:events';
import { createSocket } from 'node:dgram';
import type { RemoteInfo } from 'node:dgram';
import { UdpEndpoint, UdpError, dropsForInode } from '../../transport/udp.js';

async function endpoint(t: Test, host = '127.0.0.1', opts = {}): Promise<UdpEndpoint> {
  const ep = new UdpEndpoint(opts);
  await ep.bind(host, 0);
  t.teardown(() => ep.close());
  return ep;
}

function nextMessage(ep: UdpEndpoint): Promise<[Buffer, RemoteInfo]> {
  return once(ep, 'message') as Promise<[Buffer, RemoteInfo]>;
}

t.test('bind, send a buffer and a gathered buffer list, receive, count', async (t) => {
  const a = await endpoint(t);
  const b = await endpoint(t);
  const addrB = b.address();
  t.equal(addrB.address, '127.0.0.1');
  t.ok(addrB.port > 0, 'port 0 resolves to the real port');
  t.equal(addrB.family, 'IPv4');

  let got = nextMessage(b);
  a.send(Buffer.from('one'), addrB.port, '127.0.0.1');
  let [msg, rinfo] = await got;
  t.equal(msg.toString(), 'one');
  t.equal(rinfo.port, a.address().port);
  t.equal(rinfo.address, '127.0.0.1');

  got = nextMessage(b);
  a.send([Buffer.from('PI'), Buffer.from('LS'), Buffer.alloc(0), Buffer.from('!')], addrB.port, '127.0.0.1');
  [msg] = await got;
  t.equal(msg.toString(), 'PILS!', 'a buffer list is one datagram');

  const sa = a.stats();
  t.equal(sa.packets_sent, 2);
  t.equal(sa.bytes_sent, 8);
  const sb = b.stats();
  t.equal(sb.packets_received, 2);
  t.equal(sb.bytes_received, 8);
  t.equal(sb.send_errors, 0);
});

t.test('sends leave in order, together, when the current callback returns; close() still sends what was queued', async (t) => {
  const a = await endpoint(t);
  const b = await endpoint(t);
  const got: string[] = [];
  b.on('message', (m) => got.push(m.toString()));
  for (let i = 0; i < 50; i++) a.send(Buffer.from(`m${i}`), b.address().port, '127.0.0.1');
  t.equal(a.stats().packets_sent, 0, 'nothing handed to the kernel inside the sending callback');
  await new Promise((r) => process.nextTick(r));
  t.equal(a.stats().packets_sent, 50, 'all handed over by the next tick');
  a.send(Buffer.from('last'), b.address().port, '127.0.0.1');
  await a.close();
  a.send(Buffer.from('after close'), b.address().port, '127.0.0.1');
  for (let i = 0; i < 100 && got.length < 51; i++) await new Promise((r) => setTimeout(r, 5));
  t.same(got, [...Array.from({ length: 50 }, (_, i) => `m${i}`), 'last'], 'in order; the frame queued before close() was sent');
  t.equal(a.stats().send_errors, 1, 'a send after close is counted, not sent');
});

t.test('socket buffers: 4 MiB requested, what the kernel granted is reported', async (t) => {
  const ep = await endpoint(t);
  const s = ep.stats();
  t.ok(s.recv_buffer_bytes > 0 && s.send_buffer_bytes > 0);
  if (process.platform === 'linux') {
    const { readFileSync } = await import('node:fs');
    const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
    // Linux grants min(requested, rmem_max) and reports double that.
    t.equal(s.recv_buffer_bytes, 2 * Math.min(4 * 1024 * 1024, rmemMax));
  }
  const small = await endpoint(t, '127.0.0.1', { bufferBytes: 0 });
  t.ok(small.stats().recv_buffer_bytes > 0, 'bufferBytes 0 keeps the OS default');
});

const linuxOnly = { skip: process.platform === 'linux' ? false : 'Linux only' };

t.test('warns once (with the sysctl) when the kernel grants less than requested', linuxOnly, async (t) => {
  const { readFileSync } = await import('node:fs');
  const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
  const lines: string[] = [];
  const { pino } = await import('pino');
  const log = pino({ level: 'warn' }, { write: (s: string) => lines.push(s) });
  await endpoint(t, '127.0.0.1', { bufferBytes: rmemMax * 2, log });
  const warn = lines.find((l) => l.includes('net.core.rmem_max'));
  t.ok(warn, 'warning names the sysctl');
});

t.test('kernel receive drops are read from /proc/net/udp for our socket', linuxOnly, async (t) => {
  // A tiny receive buffer, and a burst sent before the event loop can read: the kernel must drop.
  const rx = await endpoint(t, '127.0.0.1', { bufferBytes: 4096 });
  const tx = await endpoint(t);
  t.equal(rx.kernelDrops(), 0, 'no drops yet');
  const port = rx.address().port;
  const payload = Buffer.alloc(1000);
  for (let i = 0; i < 500; i++) tx.send(payload, port, '127.0.0.1');
  await new Promise((r) => setTimeout(r, 50));
  const s = rx.stats();
  t.ok(s.kernel_drops !== null && s.kernel_drops > 0, `kernel dropped ${s.kernel_drops}`);
  t.ok(s.packets_received < 500, `received ${s.packets_received} of 500`);
});

t.test('dropsForInode parses the /proc format', async (t) => {
  const text = [
    '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
    '  123: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 424242 2 0000000000000000 17',
    '  124: 0100007F:A1B3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 0',
  ].join('\n');
  t.equal(dropsForInode(text, '424242'), 17);
  t.equal(dropsForInode(text, '999'), 0);
  t.equal(dropsForInode(text, '1'), null);
});

t.test('IPv6 and dual stack: IPv4 peers appear as plain IPv4 and can be sent to', async (t) => {
  const v6 = new UdpEndpoint();
  try {
    await v6.bind('::', 0);
  } catch {
    t.comment('no IPv6 on this host: skipped');
    return;
  }
  t.teardown(() => v6.close());
  t.equal(v6.address().family, 'IPv6');
  const v4 = await endpoint(t);
  let got = nextMessage(v6);
  v4.send(Buffer.from('to v6'), v6.address().port, '127.0.0.1');
  const [, rinfo] = await got;
  t.equal(rinfo.address, '127.0.0.1', '::ffff: prefix stripped');
  const back = nextMessage(v4);
  v6.send(Buffer.from('reply'), rinfo.port, rinfo.address);
  const [msg] = await back;
  t.equal(msg.toString(), 'reply', 'dual-stack socket sends to an IPv4 literal');

  const lo6 = new UdpEndpoint();
  try {
    await lo6.bind('::1', 0);
  } catch {
    t.comment('no ::1: skipped');
    return;
  }
  t.teardown(() => lo6.close());
  got = nextMessage(lo6);
  v6.send(Buffer.from('six'), lo6.address().port, '::1');
  const [m6, r6] = await got;
  t.equal(m6.toString(), 'six');
  t.equal(r6.family, 'IPv6');
});

t.test('hostnames still resolve (slow path)', async (t) => {
  const a = await endpoint(t);
  const b = await endpoint(t);
  const got = nextMessage(b);
  a.send(Buffer.from('named'), b.address().port, 'localhost');
  const [msg] = await got;
  t.equal(msg.toString(), 'named');
});

t.test('errors are counted, never thrown; typed bind errors; close is idempotent', async (t) => {
  const a = await endpoint(t);
  a.send(Buffer.from('x'), 9, '127.0.0.1'); // may or may not error asynchronously on loopback
  a.send(Buffer.alloc(70_000), 9, '127.0.0.1'); // EMSGSIZE
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.ok(a.stats().send_errors >= 1, 'oversized datagram counted as a send error');

  await t.rejects(new UdpEndpoint().bind('not-an-ip', 0), { code: 'bad_address' });
  await t.rejects(new UdpEndpoint().bind('127.0.0.1', 70000), { code: 'bad_port' });
  const taken = createSocket('udp4');
  await new Promise<void>((r) => taken.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => taken.close());
  const clash = new UdpEndpoint();
  await t.rejects(clash.bind('127.0.0.1', taken.address().port), { code: 'bind_failed' });
  t.throws(() => clash.address(), UdpError);

  const c = new UdpEndpoint();
  await c.bind('127.0.0.1', 0);
  await t.rejects(c.bind('127.0.0.1', 0), { code: 'already_bound' });
  await Promise.all([c.close(), c.close()]);
  await c.close();
  t.doesNotThrow(() => c.send(Buffer.from('late'), 9, '127.0.0.1'), 'send after close does not throw');
  t.equal(c.stats().send_errors, 1);
  t.equal(c.stats().kernel_drops, null, 'no socket, no drop figure');
});
