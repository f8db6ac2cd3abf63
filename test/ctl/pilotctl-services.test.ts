// pilotctl end to end (part 2): pub/sub, tasks, bench, ping, traceroute, daemon status, untrust.
import t from 'tap';
import { ctl, startNetwork } from './helpers.js';

t.test('pilotctl against real daemons (services, bench, diagnostics)', async (t) => {
  const { a, b } = await startNetwork(t, { trust: true });
  const A = (args: string[], opts = {}) => ctl(t, a.socket, args, opts);
  const B = (args: string[], opts = {}) => ctl(t, b.socket, args, opts);

  // publish/subscribe through B's broker.
  const sub = A(['subscribe', 'bravo', 'alerts', '--count', '1', '--timeout', '15s']);
  let got: Awaited<typeof sub> | null = null;
  void sub.then((r) => (got = r));
  for (let i = 0; i < 40 && got === null; i++) {
    await A(['publish', 'bravo', 'alerts', '--data', 'disk full']);
    await new Promise((res) => setTimeout(res, 250));
  }
  const sr = await sub;
  t.equal(sr.json.status, 'ok', 'subscribe ok');
  t.same((sr.json.data as { events: unknown[] }).events[0], { topic: 'alerts', data: 'disk full' }, 'subscriber got the event');

  // task submit.
  const ts = await A(['task', 'submit', 'bravo', '--task', 'compress logs']);
  t.equal(ts.json.status, 'ok', `task submit ok ${ts.stdout}`);
  const tl = await A(['task', 'list', '--type', 'submitted']);
  t.equal(tl.json.status, 'ok', 'task list ok');

  // bench: echo and one-way (B runs the discard listener).
  const be = await A(['bench', 'bravo', '1']);
  t.equal(be.json.status, 'ok', `bench echo ok ${be.stdout}`);
  t.equal((be.json.data as { verified: boolean; bytes: number }).verified, true, 'bench echo hash verified');
  const serve = B(['bench', '--serve', '--timeout', '20s'], { timeoutMs: 25_000 });
  void serve;
  let ow: Awaited<ReturnType<typeof A>> | null = null;
  for (let i = 0; i < 20; i++) {
    ow = await A(['bench', 'bravo', '2', '--one-way', '--timeout', '10s']);
    if (ow.json.status === 'ok') break;
    await new Promise((res) => setTimeout(res, 250));
  }
  t.equal(ow?.json.status, 'ok', `bench one-way ok ${ow?.stdout}`);
  t.equal((ow?.json.data as { mode: string; verified: boolean }).mode, 'one-way', 'one-way mode');

  // ping, traceroute, daemon status.
  const ping = await A(['ping', 'bravo', '--count', '1']);
  t.equal(ping.json.status, 'ok', `ping ok ${ping.stdout}`);
  const tr = await A(['traceroute', 'bravo']);
  t.equal((tr.json.data as { rtt_ms: number[] }).rtt_ms.length, 3, 'traceroute: 3 samples');
  const st = await A(['daemon', 'status']);
  t.equal((st.json.data as { running: boolean }).running, true, 'daemon status running');

  // untrust → a new dial fails with a connection error.
  const ut = await B(['untrust', String(a.nodeId)]);
  t.equal(ut.json.status, 'ok', 'untrust ok');
  const after = await A(['send', 'bravo', '7', '--data', 'x', '--timeout', '3s'], { timeoutMs: 15_000 });
  t.equal(after.json.status, 'error', 'send after untrust fails');
  t.ok(['timeout', 'connection_failed'].includes(String(after.json.code)), `code ${after.json.code}`);
});
