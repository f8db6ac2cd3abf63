import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RateLimiter, DEFAULT_RATE_LIMITS } from '../../registry/ratelimit.js';
import { ReplayGuard } from '../../registry/auth.js';
import { NO_LIMITS, RawConn, registerNode, startRegistry, TestClock, waitFor } from './helpers.js';

t.test('token bucket: burst, refill, per key, per category, bounded table', async (t) => {
  const rl = new RateLimiter({ ...NO_LIMITS, register_new: { rate: 1, burst: 3 } }, 2);
  let now = 0;
  t.same([1, 2, 3, 4].map(() => rl.take('register_new', 'a', now)), [true, true, true, false]);
  t.ok(rl.take('register_new', 'b', now), 'other IPs have their own bucket');
  t.ok(rl.take('read', 'a', now), 'unlimited category');
  now += 1000;
  t.ok(rl.take('register_new', 'a', now), 'one token per second');
  t.notOk(rl.take('register_new', 'a', now));
  rl.take('register_new', 'c', now);
  t.equal(rl.evictions, 1, 'table bounded: oldest key evicted');
  t.equal(rl.size, 2);
  rl.sweep(now + 60_000);
  t.equal(rl.size, 0, 'refilled buckets are swept');
});

t.test('default: 10 registrations of unknown keys per minute per IP; known keys are not charged that bucket', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock, config: { rateLimits: DEFAULT_RATE_LIMITS } });
  const nodes = [];
  for (let i = 0; i < 10; i++) nodes.push(await registerNode(h.client));
  const before = h.dump();
  await t.rejects(h.client.register(Identity.generate()), { code: 'rate_limited', message: /register new/ });
  t.same(h.dump(), before, 'refused registration changed nothing');
  t.equal((await h.client.register(nodes[0]!.identity)).node_id, nodes[0]!.nodeId, 'known key re-registers fine');
  clock.advance(6_000);
  t.equal((await h.client.register(Identity.generate())).node_id, 11, 'one token back after 6 s');
  t.ok(Number((await h.server.metrics.text()).match(/pilot_rate_limited_total\{category="register_new"\} (\d+)/)?.[1]) >= 1, 'counted');
});

t.test('rate limits are configurable per category', async (t) => {
  const h = await startRegistry(t, { config: { rateLimits: { ...NO_LIMITS, read: { rate: 0.001, burst: 2 } } } });
  const n = await registerNode(h.client);
  await h.client.lookup(n.nodeId);
  await h.client.lookup(n.nodeId);
  await t.rejects(h.client.lookup(n.nodeId), { code: 'rate_limited' });
  await h.client.heartbeat(n);
});

t.test('connection limits: per IP and total', async (t) => {
  const h = await startRegistry(t, { config: { maxConnectionsPerIp: 3 } });
  // the harness client holds one connection
  const a = await RawConn.open(h.port);
  const b = await RawConn.open(h.port);
  const c = await RawConn.open(h.port);
  t.teardown(() => [a, b, c].forEach((x) => x.close()));
  t.match(await c.next(), { type: 'error', code: 'limit_reached', error: /per-IP/ });
  await c.closedP;
  t.equal((await a.request({ type: 'list_networks' })).type, 'list_networks_ok');
  a.close();
  await a.closedP;
  await waitFor(() => h.server.connectionCount < 3, 15_000, 'server-side cleanup');
  const d = await RawConn.open(h.port);
  t.teardown(() => d.close());
  t.equal((await d.request({ type: 'list_networks' })).type, 'list_networks_ok', 'slot freed after close');
});

t.test('idle connections are closed', async (t) => {
  const h = await startRegistry(t, { config: { idleTimeoutMs: 150 } });
  const a = await RawConn.open(h.port);
  await a.closedP;
  t.ok(a.closed, 'server closed the idle connection');
  await waitFor(() => h.server.connectionCount <= 1, 15_000, 'server-side cleanup');
  t.pass('connection slot released');
});

t.test('replay guard: bounded; overflow raises the floor instead of forgetting', async (t) => {
  const g = new ReplayGuard(60_000, 3);
  const now = 1_000_000;
  const sig = (i: number): string => Buffer.alloc(64, i).toString('base64');
  t.ok(g.record(sig(1), now - 50_000, now));
  t.ok(g.record(sig(2), now - 30_000, now));
  t.ok(g.record(sig(3), now - 10_000, now));
  t.notOk(g.record(sig(3), now - 10_000, now), 'duplicate');
  t.throws(() => g.check(sig(3), now - 10_000, now), { code: 'replayed_signature' });
  t.ok(g.record(sig(4), now, now));
  t.ok(g.size <= 3, 'bounded');
  t.throws(() => g.check(sig(1), now - 50_000, now), { code: 'stale_signature' }, 'older than what the guard retains → refused as stale, not accepted');
  t.throws(() => g.check(sig(9), now - 61_000, now), { code: 'stale_signature' });
  g.record(sig(5), now + 100_000, now + 100_000);
  t.ok(g.size <= 2, 'old buckets pruned as time passes');
});
