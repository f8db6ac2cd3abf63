import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StunClass, decodeStunMessage, encodeStunMessage, isStunMessage, parseBindingResponse, stunDiscover, StunAttr } from '../../natpunch/index.js';

/**
 * STUN client against a real coturn server (Debian package `coturn`), STUN only, no auth, on loopback:
 *   turnserver -n --stun-only --no-cli --no-tls --no-dtls --listening-ip=127.0.0.1 [--listening-ip=::1]
 *              --listening-port=<port> --pidfile=<tmp>/turnserver.pid --log-file=stdout --simple-log
 */
const haveTurnserver = spawnSync('sh', ['-c', 'command -v turnserver']).status === 0;
const skip = haveTurnserver ? false : 'turnserver not installed (Debian package coturn: apt-get install -y coturn)';

const haveIPv6 = await new Promise<boolean>((resolve) => {
  const s = createSocket('udp6');
  s.once('error', () => resolve(false));
  s.bind(0, '::1', () => s.close(() => resolve(true)));
});

async function freeUdpPort(): Promise<number> {
  // A port free on both loopbacks, so coturn can listen on each.
  for (;;) {
    const s = createSocket('udp4');
    const port = await new Promise<number>((r) => s.bind(0, '127.0.0.1', () => r(s.address().port)));
    await new Promise<void>((r) => s.close(() => r()));
    if (!haveIPv6) return port;
    const s6 = createSocket({ type: 'udp6', ipv6Only: true });
    const ok = await new Promise<boolean>((r) => {
      s6.once('error', () => r(false));
      s6.bind(port, '::1', () => r(true));
    });
    s6.close();
    if (ok) return port;
  }
}

async function bound(t: { teardown(f: () => unknown): void }, type: 'udp4' | 'udp6', host: string): Promise<Socket> {
  const s = createSocket(type);
  await new Promise<void>((r) => s.bind(0, host, r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

t.test('STUN Binding against coturn', { skip }, async (t) => {
  const port = await freeUdpPort();
  const dir = mkdtempSync(join(tmpdir(), 'pilot-coturn-'));
  const args = [
    '-n',
    '--stun-only',
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--listening-ip=127.0.0.1',
    ...(haveIPv6 ? ['--listening-ip=::1'] : []),
    `--listening-port=${port}`,
    `--pidfile=${join(dir, 'turnserver.pid')}`,
    '--log-file=stdout',
    '--simple-log',
  ];
  const child: ChildProcess = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  t.teardown(async () => {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(killer);
    rmSync(dir, { recursive: true, force: true });
  });

  const c4 = await bound(t, 'udp4', '127.0.0.1');
  // Wait for coturn to come up: retry short transactions for up to 15 s.
  let first: Awaited<ReturnType<typeof stunDiscover>> | null = null;
  const end = Date.now() + 15_000;
  while (first === null && Date.now() < end && child.exitCode === null) {
    first = await stunDiscover(c4, { host: '127.0.0.1', port }, { rtoMs: 100, timeoutMs: 400 }).catch(() => null);
  }
  if (first === null) {
    t.fail(`coturn did not answer on 127.0.0.1:${port}; log tail:\n${log}`);
    return;
  }
  t.same({ address: first.address, port: first.port }, { address: '127.0.0.1', port: c4.address().port }, 'reflexive IPv4 endpoint = our socket');
  t.same(first.server, { address: '127.0.0.1', port });

  // Raw exchange: coturn answers with XOR-MAPPED-ADDRESS (and FINGERPRINT, which we verify).
  const txid = randomBytes(12);
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no raw response')), 3000);
    const onMsg = (m: Buffer): void => {
      if (isStunMessage(m) && m.subarray(8, 20).equals(txid)) {
        clearTimeout(timer);
        c4.off('message', onMsg);
        resolve(m);
      }
    };
    c4.on('message', onMsg);
    c4.send(encodeStunMessage(txid, { fingerprint: true }), port, '127.0.0.1');
  });
  const m = decodeStunMessage(raw);
  t.equal(m.cls, StunClass.SUCCESS);
  t.ok(m.attributes.some((a) => a.type === StunAttr.XOR_MAPPED_ADDRESS), 'XOR-MAPPED-ADDRESS present');
  t.same(parseBindingResponse(m), { address: '127.0.0.1', port: c4.address().port });

  // An unknown comprehension-required attribute makes coturn answer 420: a typed error response.
  const bad = encodeStunMessage(randomBytes(12), { attributes: [{ type: 0x7f01, value: Buffer.alloc(4) }], fingerprint: true });
  const errReply = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no error response')), 3000);
    const onMsg = (msg: Buffer): void => {
      if (isStunMessage(msg) && msg.subarray(8, 20).equals(bad.subarray(8, 20))) {
        clearTimeout(timer);
        c4.off('message', onMsg);
        resolve(msg);
      }
    };
    c4.on('message', onMsg);
    c4.send(bad, port, '127.0.0.1');
  });
  t.throws(() => parseBindingResponse(decodeStunMessage(errReply)), { code: 'error_response', stunCode: 420 });

  if (haveIPv6) {
    const c6 = await bound(t, 'udp6', '::1');
    const r6 = await stunDiscover(c6, { host: '::1', port }, { rtoMs: 100, timeoutMs: 3000 });
    t.same({ address: r6.address, port: r6.port }, { address: '::1', port: c6.address().port }, 'reflexive IPv6 endpoint');
  }
});
