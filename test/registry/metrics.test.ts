import { request } from 'node:http';
import t from 'tap';
import { ADMIN, registerNode, startRegistry } from './helpers.js';

function get(port: number, path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
    })
      .on('error', reject)
      .end();
  });
}

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

t.test('/metrics: v1 names, request counts and latency by type, errors by code, gauges; /healthz', async (t) => {
  const h = await startRegistry(t, { config: { http: '127.0.0.1:0' } });
  const httpPort = (h.server as unknown as { http: { address(): { port: number } } }).http.address().port;
  const a = await registerNode(h.client);
  const b = await registerNode(h.client);
  await h.client.lookup(a.nodeId);
  await h.client.lookup(a.nodeId);
  await h.client.lookup(999).catch(() => {});
  await h.client.heartbeat(a);
  await h.client.reportTrust(a, b.nodeId);
  await h.client.reportTrust(b, a.nodeId);
  await h.client.createNetwork(ADMIN, { name: 'm', joinRule: 'open' });
  await h.client.setTaskExec(b, true);
  await h.client.request(() => ({ type: 'bogus' })).catch(() => {});

  const m = await get(httpPort, '/metrics');
  t.equal(m.status, 200);
  t.match(m.type, /text\/plain/);
  t.equal(value(m.body, 'pilot_requests_total{type="lookup"}'), 3);
  t.equal(value(m.body, 'pilot_requests_total{type="register"}'), 2);
  t.equal(value(m.body, 'pilot_request_duration_seconds_count{type="heartbeat"}'), 1);
  t.match(m.body, /pilot_request_duration_seconds_bucket\{le="0\.0001",type="lookup"\}/);
  t.equal(value(m.body, 'pilot_errors_total{type="lookup",code="not_found"}'), 1);
  t.equal(value(m.body, 'pilot_errors_total{type="unknown",code="unknown_type"}'), 1);
  t.equal(value(m.body, 'pilot_nodes_online'), 2);
  t.equal(value(m.body, 'pilot_nodes_total'), 2);
  t.equal(value(m.body, 'pilot_trust_links'), 1);
  t.equal(value(m.body, 'pilot_networks'), 1);
  t.equal(value(m.body, 'pilot_task_executors'), 1);
  t.equal(value(m.body, 'pilot_registrations_total'), 2);
  t.equal(value(m.body, 'pilot_trust_reports_total'), 2);
  t.equal(value(m.body, 'pilot_signature_checks_total{result="ok"}'), 4, 'heartbeat, 2 trust reports, set_task_exec');
  t.match(m.body, /# TYPE pilot_uptime_seconds gauge/);
  t.notMatch(m.body, new RegExp(ADMIN), 'no secrets in metrics');
  t.notMatch(m.body, /process_cpu|nodejs_/, 'own registry, not the global default metrics');

  const hz = await get(httpPort, '/healthz');
  t.equal(hz.status, 200);
  t.match(JSON.parse(hz.body), { status: 'ok', nodes_online: 2 });
  t.equal((await get(httpPort, '/nope')).status, 404);
});

t.test('two servers in one process keep separate metrics', async (t) => {
  const h1 = await startRegistry(t);
  const h2 = await startRegistry(t);
  await registerNode(h1.client);
  t.match(await h1.server.metrics.text(), /pilot_nodes_total 1/);
  t.match(await h2.server.metrics.text(), /pilot_nodes_total 0/);
});
