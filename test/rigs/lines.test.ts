import t from 'tap';
import { PassThrough } from 'node:stream';
import { LineReader, waitForLine } from './lines.js';

t.test('lines printed before the wait count, in order, each consumed once', async (t) => {
  const s = new PassThrough();
  const r = new LineReader(s);
  s.write('one\ntw');
  s.write('o\r\nthree\n');
  await new Promise((res) => setImmediate(res));
  t.equal(await r.next('t'), 'two', 'first unconsumed match, CRLF stripped, split across chunks');
  t.equal(await r.next(/^t/), 'three');
  t.equal(await r.next((l) => l === 'one'), 'one');
  const later = r.next('four');
  s.write('four\n');
  t.equal(await later, 'four', 'a waiter gets a line printed after the call');
});

t.test('timeouts and end of stream reject with a typed error that shows the last lines', async (t) => {
  const s = new PassThrough();
  const r = new LineReader(s, 'proc');
  s.write('booting\n');
  await t.rejects(r.next('ready', 50), { code: 'line_wait_failed', message: /proc: .*timed out.*booting/s });
  const pending = r.next('ready', 5000);
  s.end('last words');
  await t.rejects(pending, { code: 'line_wait_failed', message: /ended/ });
  t.same(r.recent(), ['booting', 'last words'], 'an unterminated last line still counts');
  await t.rejects(r.next('ready'), { code: 'line_wait_failed' }, 'waiting after the end fails at once');
});

t.test('unconsumed lines are bounded', async (t) => {
  const s = new PassThrough();
  const r = new LineReader(s);
  s.write(Array.from({ length: 2100 }, (_, i) => `l${i}`).join('\n') + '\n');
  await new Promise((res) => setImmediate(res));
  t.equal(r.dropped, 100, 'oldest lines beyond the bound are dropped and counted');
  t.equal(r.drain().length, 2000);
});

t.test('waitForLine on a raw stream', async (t) => {
  const s = new PassThrough();
  setTimeout(() => s.write('listening on 1234\n'), 10);
  t.equal(await waitForLine(s, /listening/), 'listening on 1234');
});
