import t from 'tap';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { EchoService } from '../../daemon/services/echo.js';
import {
  DataExchangeService,
  DataFrameDecoder,
  encodeDataFrame,
  parseDataReply,
  type DataFrame,
} from '../../daemon/services/dataexchange.js';
import { TypedFrameDecoder, encodeTypedFrame } from '../../daemon/services/frames.js';
import { DataDir, sanitizeFileName, fileTimestamp } from '../../daemon/datadir.js';
import { closed, duplexPair, readAll, until } from './duplex-pair.js';

const ctx = { remote: '0:0000.0000.0007', remoteNode: 7 };

t.test('echo: every byte comes back, in order', async (t) => {
  const echo = new EchoService();
  const [client, server] = duplexPair();
  const done = echo.handle(server, ctx);
  const payload = randomBytes(300_000);
  const got = readAll(client);
  for (let off = 0; off < payload.length; off += 7000) client.write(payload.subarray(off, off + 7000));
  client.end();
  t.ok((await got).equals(payload));
  await done;
  t.equal(echo.bytesEchoed, payload.length);
});

t.test('echo: a client that does not read stops the echo (back-pressure, bounded buffering)', async (t) => {
  const echo = new EchoService();
  const [client, server] = duplexPair({ highWaterMark: 16 * 1024 });
  void echo.handle(server, ctx);
  client.on('error', () => {}); // its queued writes fail once the service closes
  const chunk = Buffer.alloc(4096, 1);
  // A misbehaving client pushes 4 MiB and never reads the echo.
  for (let i = 0; i < 1024; i++) client.write(chunk);
  await new Promise((r) => setTimeout(r, 50));
  t.ok(echo.bytesEchoed < 1024 * chunk.length / 8, `echo stalled after ${echo.bytesEchoed} bytes instead of buffering 4 MiB`);
  t.ok(server.writableLength <= 64 * 1024, `server-side write buffer stays bounded (${server.writableLength})`);
  await echo.close();
  await closed(server);
  t.ok(server.destroyed);
});

t.test('echo: connection cap', async (t) => {
  const echo = new EchoService({ maxConnections: 1 });
  const [, s1] = duplexPair();
  const [, s2] = duplexPair();
  void echo.handle(s1, ctx);
  await echo.handle(s2, ctx);
  t.ok(s2.destroyed, 'second connection refused');
  t.notOk(s1.destroyed);
  await echo.close();
  t.ok(s1.destroyed, 'close() drops live connections');
});

async function setupData(t: { teardown(fn: () => unknown): void }, opts: Partial<ConstructorParameters<typeof DataExchangeService>[0]> = {}) {
  const root = await mkdtemp(join(tmpdir(), 'pilot-dx-'));
  const dd = new DataDir(join(root, 'pilot'));
  await dd.ensure();
  const events: Array<[string, Record<string, unknown>]> = [];
  let clock = Date.UTC(2024, 0, 2, 3, 4, 5, 6);
  const svc = new DataExchangeService({
    inboxDir: dd.inboxDir,
    receivedDir: dd.receivedDir,
    emit: (e, d) => events.push([e, d]),
    now: () => clock++,
    ...opts,
  });
  t.teardown(() => svc.close());
  return { root, dd, svc, events };
}

/** Send frames on a fresh connection, half-close, return the replies' texts. */
async function exchange(svc: DataExchangeService, frames: Buffer[]): Promise<{ replies: string[]; serverDestroyed: boolean }> {
  const [client, server] = duplexPair();
  const done = svc.handle(server, ctx);
  const got = readAll(client);
  for (const f of frames) client.write(f);
  client.end();
  const bytes = await got;
  await done;
  const dec = new DataFrameDecoder();
  const replies = dec.push(bytes).map((f) => (f.type === 'TEXT' ? f.text : `<${f.type}>`));
  return { replies, serverDestroyed: server.destroyed };
}

t.test('data exchange: TEXT/JSON/BINARY/FILE saved and acknowledged as v1 does', async (t) => {
  const { dd, svc, events } = await setupData(t);
  const bin = randomBytes(1000);
  const file = randomBytes(70_000);
  const { replies } = await exchange(svc, [
    encodeDataFrame({ type: 'TEXT', text: 'hello' }),
    encodeDataFrame({ type: 'JSON', json: '{"a":1}' }),
    encodeDataFrame({ type: 'BINARY', data: bin }),
    encodeDataFrame({ type: 'FILE', filename: 'report.txt', data: file }),
  ]);
  t.same(replies, ['ACK TEXT 5 bytes', 'ACK JSON 7 bytes', 'ACK BINARY 1000 bytes', 'ACK FILE 70000 bytes']);
  const inbox = (await readdir(dd.inboxDir)).sort();
  t.same(inbox, ['BINARY-20240102-030405.008.json', 'JSON-20240102-030405.007.json', 'TEXT-20240102-030405.006.json']);
  const text = JSON.parse(await readFile(join(dd.inboxDir, inbox[2]!), 'utf8'));
  t.same(text, { type: 'TEXT', from: ctx.remote, data: 'hello', bytes: 5, received_at: '2024-01-02T03:04:05.006Z' });
  const binRec = JSON.parse(await readFile(join(dd.inboxDir, inbox[0]!), 'utf8'));
  t.equal(Buffer.from(binRec.data, 'base64').equals(bin), true, 'binary data base64 in the inbox record');
  t.same(await readdir(dd.receivedDir), ['report-20240102-030405.009.txt']);
  t.ok((await readFile(join(dd.receivedDir, 'report-20240102-030405.009.txt'))).equals(file));
  t.same(
    events.map((e) => e[0]),
    ['message.received', 'message.received', 'message.received', 'file.received'],
  );
  t.equal(svc.stats.messages, 3);
  t.equal(svc.stats.files, 1);
});

t.test('data exchange: hostile file names never leave received/ and never create hidden files', async (t) => {
  const { root, dd, svc } = await setupData(t);
  const names = ['../../escape.txt', '/etc/passwd', '..', '.', '.bashrc', 'a\\..\\..\\win.ini', 'sub/dir/x.bin', '', '\u0000evil\n.sh', '...', 'ok name.pdf', 'x'.repeat(600) + '.tar'];
  const { replies } = await exchange(
    svc,
    names.map((n) => encodeDataFrame({ type: 'FILE', filename: n, data: Buffer.from(n) })),
  );
  t.equal(replies.length, names.length);
  t.ok(replies.every((r) => r.startsWith('ACK FILE')), 'all saved under safe names');
  const saved = await readdir(dd.receivedDir);
  t.equal(saved.length, names.length);
  for (const s of saved) {
    t.notOk(s.startsWith('.'), `${s} is not hidden`);
    t.notOk(s.includes('/') || s.includes('\\') || s.includes('\u0000') || s.includes('\n'), `${s} has no separators or controls`);
    t.ok(Buffer.byteLength(s) < 255, 'fits a file-system name');
  }
  // Nothing was written anywhere else under the temp root.
  const all = await readdir(root, { recursive: true });
  const outside = all.filter((p) => !p.startsWith(relative(root, dd.root)));
  t.same(outside, [], 'no files outside the data dir');
  t.ok(saved.some((s) => s.startsWith('escape-')), '../../escape.txt → escape-<ts>.txt');
  t.ok(saved.some((s) => s.startsWith('passwd-')));
  t.ok(saved.some((s) => s.startsWith('bashrc-')), '.bashrc loses its leading dot');
  t.ok(saved.some((s) => s.startsWith('win-') && s.endsWith('.ini')));
  t.equal(sanitizeFileName('..'), 'file');
  t.equal(sanitizeFileName('../../a/b/c.txt'), 'c.txt');
  t.equal(sanitizeFileName('C:\\Users\\x\\evil.exe'), 'evil.exe');
  t.equal(sanitizeFileName('.ssh'), 'ssh');
  t.equal(sanitizeFileName('a\u202egnp.exe'), 'a_gnp.exe', 'bidi override neutralised');
  t.equal(fileTimestamp(new Date(Date.UTC(2024, 11, 31, 23, 59, 58, 7))), '20241231-235958.007');
});

t.test('data exchange: bad frames get ERR or a clean close, never a crash', async (t) => {
  const { svc } = await setupData(t);
  const badFileHeader = encodeTypedFrame(4, Buffer.from([0x00, 0x10, 0x41])); // name length 16, 1 byte present
  const r1 = await exchange(svc, [
    badFileHeader,
    encodeTypedFrame(9, Buffer.from('??')),
    encodeDataFrame({ type: 'JSON', json: '{not json' }),
    encodeDataFrame({ type: 'TEXT', text: 'still alive' }),
  ]);
  t.equal(r1.replies[0]!.startsWith('ERR FILE'), true, r1.replies[0]);
  t.equal(r1.replies[1], 'ERR UNKNOWN(9) unsupported frame type');
  t.equal(r1.replies[2], 'ERR JSON invalid JSON payload');
  t.equal(r1.replies[3], 'ACK TEXT 11 bytes', 'connection keeps working after an ERR');

  // Over-size length: refused from the header; the connection is dropped without buffering 16 MiB.
  const header = Buffer.alloc(8);
  header.writeUInt32BE(1, 0);
  header.writeUInt32BE(16 * 1024 * 1024 + 1, 4);
  const r2 = await exchange(svc, [header, Buffer.alloc(1000)]);
  t.same(r2.replies, []);
  t.ok(r2.serverDestroyed, 'oversize frame closes the connection');
  t.equal(svc.stats.malformed, 1);

  // Truncated frame at EOF: no reply, no crash.
  const r3 = await exchange(svc, [encodeDataFrame({ type: 'TEXT', text: 'abcdef' }).subarray(0, 10)]);
  t.same(r3.replies, []);

  const r4 = await exchange(svc, [encodeDataFrame({ type: 'TEXT', text: 'after' })]);
  t.same(r4.replies, ['ACK TEXT 5 bytes'], 'service still serves new connections');
});

t.test('data exchange: storage quota answers ERR instead of filling the disk', async (t) => {
  const { svc } = await setupData(t, { maxStoredBytes: 10 });
  const r = await exchange(svc, [encodeDataFrame({ type: 'TEXT', text: '12345678' }), encodeDataFrame({ type: 'TEXT', text: '12345678' })]);
  t.same(r.replies, ['ACK TEXT 8 bytes', 'ERR TEXT save failed: storage quota exceeded']);
});

t.test('data exchange client helpers: encode/decode round trip with arbitrary chunking, reply parsing', async (t) => {
  const frames: DataFrame[] = [
    { type: 'TEXT', text: 'héllo' },
    { type: 'BINARY', data: randomBytes(5000) },
    { type: 'JSON', json: '[1,2]' },
    { type: 'FILE', filename: 'ü.bin', data: randomBytes(100) },
    { type: 'TEXT', text: '' },
  ];
  const wire = Buffer.concat(frames.map(encodeDataFrame));
  const dec = new DataFrameDecoder();
  const out: DataFrame[] = [];
  for (let off = 0; off < wire.length; off += 13) out.push(...dec.push(wire.subarray(off, off + 13)));
  t.same(out, frames);
  t.same(parseDataReply('ACK FILE 12 bytes'), { ok: true, type: 'FILE', bytes: 12 });
  t.same(parseDataReply('ERR FILE save failed: EACCES'), { ok: false, type: 'FILE', reason: 'save failed: EACCES' });
  t.equal(parseDataReply('what'), null);
  const td = new TypedFrameDecoder(100);
  t.throws(() => td.push(encodeTypedFrame(1, Buffer.alloc(101))), { code: 'frame_too_large' });
  t.throws(() => td.push(Buffer.alloc(1)), { code: 'frame_too_large' }, 'stays failed');
});
