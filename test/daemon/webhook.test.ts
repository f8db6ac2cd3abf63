import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WEBHOOK_EVENTS, WebhookClient, parseWebhookUrl } from '../../daemon/webhook.js';
import { until } from './duplex-pair.js';

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

/** A real HTTP server on loopback; `handler` decides per request. Closed (with its sockets) on teardown. */
async function server(t: { teardown(fn: () => unknown): void }, handler: Handler) {
  const received: Array<{ headers: http.IncomingHttpHeaders; body: string }> = [];
  const srv = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts).toString();
      received.push({ headers: req.headers, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    srv.closeAllConnections();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook?token=secret`, received, srv };
}

t.test('delivers v1-shaped JSON POSTs in order', async (t) => {
  const s = await server(t, (_req, _body, res) => res.end('ok'));
  const wh = new WebhookClient({ url: s.url, nodeId: () => 42, now: () => Date.UTC(2025, 0, 2, 3, 4, 5, 6) });
  t.teardown(() => wh.close());
  wh.emit('node.registered', { address: '0:0000.0000.002A' });
  wh.emit('conn.established', { port: 7 });
  wh.emit('file.received', {});
  await until(() => wh.stats.delivered === 3);
  t.same(
    s.received.map((r) => JSON.parse(r.body)),
    [
      { event: 'node.registered', node_id: 42, timestamp: '2025-01-02T03:04:05.006Z', data: { address: '0:0000.0000.002A' } },
      { event: 'conn.established', node_id: 42, timestamp: '2025-01-02T03:04:05.006Z', data: { port: 7 } },
      { event: 'file.received', node_id: 42, timestamp: '2025-01-02T03:04:05.006Z', data: {} },
    ],
  );
  t.equal(s.received[0]!.headers['content-type'], 'application/json');
  t.equal(WEBHOOK_EVENTS.length, 26, 'the v1 event set');
});

t.test('a server answering 500 counts failures and delivery continues', async (t) => {
  let n = 0;
  const s = await server(t, (_req, _body, res) => {
    res.statusCode = n++ % 2 === 0 ? 500 : 200;
    res.end();
  });
  const wh = new WebhookClient({ url: s.url });
  t.teardown(() => wh.close());
  for (let i = 0; i < 6; i++) wh.emit('conn.fin', { i });
  await until(() => wh.stats.delivered + wh.stats.failed === 6);
  t.equal(wh.stats.failed, 3);
  t.equal(wh.stats.delivered, 3);
  t.same(s.received.map((r) => JSON.parse(r.body).data.i), [0, 1, 2, 3, 4, 5], 'no retries, order kept');
});

t.test('a hanging server: requests time out, the queue is bounded, emit never blocks, close() honours its deadline', async (t) => {
  const hung: http.ServerResponse[] = [];
  const s = await server(t, (_req, _body, res) => void hung.push(res)); // never answers
  const wh = new WebhookClient({ url: s.url, timeoutMs: 150, queueSize: 10 });
  for (let i = 0; i < 100; i++) wh.emit('data.datagram', { i }); // returns immediately every time
  t.equal(wh.queued, 10, 'queue holds at most queueSize');
  t.ok(wh.stats.dropped >= 89, `overflow dropped and counted (${wh.stats.dropped})`);
  await until(() => wh.stats.failed >= 2);
  t.ok(wh.stats.failed >= 2, 'hung requests fail by timeout, the next one starts');
  t.equal(wh.stats.delivered, 0);
  const closing = wh.close(100);
  await closing; // resolves although the server never answers
  wh.emit('node.deregistered', {});
  t.equal(wh.queued, 0, 'emit after close is ignored');
});

t.test('close() drains what is queued when the server is healthy', async (t) => {
  const s = await server(t, (_req, _body, res) => setTimeout(() => res.end(), 5));
  const wh = new WebhookClient({ url: s.url, concurrency: 2 });
  for (let i = 0; i < 20; i++) wh.emit('pubsub.published', { i });
  await wh.close(5000);
  t.equal(wh.stats.delivered, 20);
  t.equal(s.received.length, 20);
});

t.test('URL settable at runtime; "" disables; bad URLs refused; unreachable host fails cleanly', async (t) => {
  const s = await server(t, (_req, _body, res) => res.end());
  const wh = new WebhookClient();
  t.teardown(() => wh.close());
  wh.emit('node.registered', {});
  t.equal(wh.queued, 0, 'disabled by default');
  wh.setUrl(s.url);
  t.equal(wh.url, s.url);
  wh.emit('node.registered', {});
  await until(() => wh.stats.delivered === 1);
  wh.setUrl('');
  wh.emit('node.registered', {});
  t.equal(wh.queued, 0);
  t.equal(s.received.length, 1);
  t.throws(() => wh.setUrl('ftp://x/'), { code: 'bad_url' });
  t.throws(() => wh.setUrl('not a url'), { code: 'bad_url' });
  t.equal(parseWebhookUrl(''), null);
  // Nothing listens on port 1 of loopback: connection refused is a counted failure, not a crash.
  wh.setUrl('http://127.0.0.1:1/x');
  wh.emit('conn.rst', {});
  await until(() => wh.stats.failed === 1);
  t.equal(wh.stats.failed, 1);
});
