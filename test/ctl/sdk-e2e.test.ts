// SDK end to end: registry + two daemon processes over real UDP, driven through `Pilot` only.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import t from 'tap';
import { bench, PilotSdkError, publish, sendFile, sendMessage, serveDiscard, submitTask, subscribe, type PilotConnection } from '../../ctl/index.js';
import { startNetwork, tempDir, until } from './helpers.js';

t.test('SDK against real daemons', async (t) => {
  const { a, b } = await startNetwork(t, { trust: true });

  const info = await a.pilot.info();
  t.equal(info.node_id, a.nodeId, 'info: node id');
  t.match(String(info.address), /^0:0000\.[0-9A-F]{4}\.[0-9A-F]{4}$/, 'info: address text');
  t.ok((await b.pilot.trusted()).some((x) => x.node_id === a.nodeId), 'B trusts A after approve');

  await t.test('echo by hostname, address and node ID; stream.pipeline', async (t) => {
    const bAddr = (await b.pilot.info()).address as string;
    for (const peer of ['bravo', bAddr, b.nodeId]) {
      const conn = await a.pilot.dial(peer, 7);
      const payload = randomBytes(300_000);
      const sink: Buffer[] = [];
      let got = 0;
      const out = new Writable({
        write(c: Buffer, _e, cb) {
          sink.push(c);
          got += c.length;
          if (got >= payload.length) conn.end();
          cb();
        },
      });
      await Promise.all([pipeline(conn, out), (async () => conn.write(payload))()]);
      t.ok(Buffer.concat(sink).equals(payload), `echo via ${typeof peer === 'number' ? 'node id' : peer}`);
    }
  });

  await t.test('half-close: the server replies after the client ended its side', async (t) => {
    const server = await b.pilot.listen(2001);
    server.once('connection', (conn: PilotConnection) => {
      const parts: Buffer[] = [];
      conn.on('data', (c: Buffer) => parts.push(c));
      conn.on('end', () => conn.end(`got ${Buffer.concat(parts).toString()}`));
    });
    const conn = await a.pilot.dial('bravo', 2001);
    conn.end('request');
    const reply: Buffer[] = [];
    for await (const c of conn) reply.push(c as Buffer);
    t.equal(Buffer.concat(reply).toString(), 'got request', 'reply arrives after our FIN');
    await server.close();
  });

  await t.test('listen/dial with back-pressure: 8 MiB to a slow reader, hash verified', async (t) => {
    const server = await b.pilot.listen(2000, { recvCredit: 256 * 1024 });
    const received = new Promise<string>((resolve, reject) => {
      server.once('connection', (conn: PilotConnection) => {
        t.equal(conn.remoteAddr, String(info.address), 'accepted connection knows its remote address');
        const h = createHash('sha256');
        const slow = new Writable({
          highWaterMark: 64 * 1024,
          write(c: Buffer, _e, cb) {
            h.update(c);
            setImmediate(cb);
          },
        });
        pipeline(conn, slow).then(() => resolve(h.digest('hex')), reject);
      });
    });
    const conn = await a.pilot.dial('bravo', 2000);
    const data = randomBytes(8 * 1024 * 1024);
    let maxBuffered = 0;
    const src = Readable.from((function* () {
      for (let o = 0; o < data.length; o += 100_000) yield data.subarray(o, o + 100_000);
    })());
    const watch = new PassThrough();
    watch.on('data', () => (maxBuffered = Math.max(maxBuffered, conn.writableLength)));
    await pipeline(src, watch, conn);
    t.equal(await received, createHash('sha256').update(data).digest('hex'), '8 MiB arrived intact');
    t.ok(maxBuffered <= 2 * 1024 * 1024, `writable buffer stays bounded (${maxBuffered})`);
    await server.close();
  });

  await t.test('server is async-iterable', async (t) => {
    const server = await b.pilot.listen(2001);
    const accepted = (async () => {
      for await (const conn of server) {
        let text = '';
        // Like net.Socket, the default iterator destroys the stream when the loop exits: keep it open to reply.
        for await (const c of conn.iterator({ destroyOnReturn: false })) {
          text += (c as Buffer).toString();
          if (text.endsWith('\n')) break;
        }
        conn.end('bye');
        return text.trim();
      }
      return '';
    })();
    const conn = await a.pilot.dial('bravo', 2001);
    conn.write('hello server\n');
    const reply: Buffer[] = [];
    for await (const c of conn) reply.push(c as Buffer);
    t.equal(await accepted, 'hello server', 'server got the whole stream');
    t.equal(Buffer.concat(reply).toString(), 'bye', 'client got the reply and EOF');
  });

  await t.test('datagrams', async (t) => {
    const sb = await b.pilot.datagram(5000);
    const sa = await a.pilot.datagram(5001);
    const got = new Promise<{ data: Buffer; from: { addr: string; port: number } }>((r) => sb.once('message', (data: Buffer, from: { addr: string; port: number }) => r({ data, from })));
    // Unreliable: resend until one arrives.
    const timer = setInterval(() => void sa.send('bravo', 5000, 'ping-dgram').catch(() => undefined), 200);
    const m = await got;
    clearInterval(timer);
    t.equal(m.data.toString(), 'ping-dgram', 'datagram payload');
    t.equal(m.from.port, 5001, 'source port is the bound port');
    t.equal(m.from.addr, String(info.address), 'source address');
    await sa.close();
    await sb.close();
  });

  await t.test('data exchange: message and file (SHA-256 verified on disk)', async (t) => {
    const r = await sendMessage(a.pilot, 'bravo', 'hello inbox');
    t.equal(r.type, 'TEXT', 'ACK TEXT');
    t.equal(r.bytes, 11, 'ACK byte count');
    const inbox = readdirSync(join(b.dir, 'inbox'));
    t.ok(inbox.some((f) => readFileSync(join(b.dir, 'inbox', f), 'utf8').includes('hello inbox')), 'message saved in B inbox');
    const dir = tempDir(t, 'pilotctl-file-');
    const path = join(dir, 'blob.bin');
    const blob = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(path, blob);
    let progress = 0;
    const f = await sendFile(a.pilot, b.nodeId, path, { onProgress: (s) => (progress = s) });
    t.equal(f.bytes, blob.length, 'ACK FILE size');
    t.ok(progress > blob.length, 'progress reported up to the whole frame');
    const saved = readdirSync(join(b.dir, 'received')).filter((n) => n.startsWith('blob'));
    t.equal(saved.length, 1, 'file saved under received/');
    t.equal(createHash('sha256').update(readFileSync(join(b.dir, 'received', saved[0]!))).digest('hex'), f.sha256, 'saved file hash matches');
  });

  await t.test('event stream publish/subscribe', async (t) => {
    const sub = await subscribe(a.pilot, 'bravo', 'news');
    const first = (async () => {
      for await (const e of sub.events) return e;
      return null;
    })();
    const timer = setInterval(() => void publish(a.pilot, 'bravo', 'news', 'breaking').catch(() => undefined), 300);
    const e = await first;
    clearInterval(timer);
    t.equal(e?.topic, 'news', 'topic');
    t.equal(e?.payload.toString(), 'breaking', 'payload');
    sub.close();
  });

  await t.test('task submit', async (t) => {
    const r = await submitTask(a.pilot, 'bravo', 'summarise the logs');
    t.equal(r.status, 200, `task accepted (${r.message})`);
    t.ok(r.task_id.length > 0, 'task id echoed');
  });

  await t.test('bench: echo and one-way to a discard listener, hash verified', async (t) => {
    const e = await bench(a.pilot, 'bravo', 2 * 1024 * 1024);
    t.equal(e.verified, true, 'echo bench verified');
    t.equal(e.bytes, 2 * 1024 * 1024, 'echo bench size');
    const server = await serveDiscard(b.pilot);
    const o = await bench(a.pilot, 'bravo', 4 * 1024 * 1024, { oneWay: true });
    t.equal(o.verified, true, 'one-way bench verified by the listener hash');
    await server.close();
  });

  await t.test('typed errors', async (t) => {
    await t.rejects(a.pilot.dial('no-such-host', 7), { name: 'PilotSdkError', code: 'not_found' }, 'unknown hostname');
    await t.rejects(a.pilot.dial('bravo', 0), { code: 'invalid_argument' }, 'bad port');
    const err = await a.pilot.dial('bravo', 3999, { timeoutMs: 3000 }).catch((e: unknown) => e);
    t.ok(err instanceof PilotSdkError, 'dial to a closed port fails with PilotSdkError');
    t.ok(['refused', 'timeout'].includes((err as PilotSdkError).code), `code ${(err as PilotSdkError).code}`);
    await t.rejects(a.pilot.listen(7), { code: 'port_in_use' }, 'port in use');
  });
});
