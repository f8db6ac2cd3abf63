import t from 'tap';
import { Identity } from '../../transport/identity.js';
import {
  LookupCache,
  decodePunchCommand,
  encodeDiscover,
  encodePunchRequest,
  encodeSignedDiscover,
  startStandaloneBeacon,
  type LookupRecord,
  type RegistryLookup,
} from '../../natpunch/index.js';
import { TestClock, UdpClient, closeAll, waitCounter } from './helpers.js';

const isPunch = (b: Buffer): boolean => b[0] === 0x04;

class FakeRegistry implements RegistryLookup {
  readonly records = new Map<number, LookupRecord>();
  calls = 0;
  async lookup(nodeId: number): Promise<LookupRecord | null> {
    this.calls++;
    await new Promise((r) => setTimeout(r, 1));
    return this.records.get(nodeId) ?? null;
  }
}

t.test('standalone beacon: keys from registry lookup (cached), public-only disclosure by default', async (t) => {
  const clock = new TestClock();
  const reg = new FakeRegistry();
  const a = Identity.generate();
  const b = Identity.generate();
  reg.records.set(1, { public_key: a.publicKeyB64, public: false });
  reg.records.set(2, { public_key: b.publicKeyB64, public: true });
  reg.records.set(3, { public_key: 'not base64!!' });
  const beacon = await startStandaloneBeacon({ listen: { host: '127.0.0.1', port: 0 }, registry: reg, clock });
  t.teardown(() => beacon.close());
  const ep = beacon.address()!;
  const ca = await UdpClient.open();
  const cb = await UdpClient.open();
  closeAll(t, ca, cb);

  ca.send(encodeSignedDiscover(a, 1, clock.t), ep);
  cb.send(encodeSignedDiscover(b, 2, clock.t), ep);
  ca.send(encodeSignedDiscover(a, 3, clock.t), ep); // registry has a malformed key for node 3
  await waitCounter(beacon, 'discover_ok', 2);
  await waitCounter(beacon, 'discover_unknown_node', 1);
  t.equal(beacon.bindings(), 2);
  const callsAfterFirst = reg.calls;
  clock.advance(1000);
  ca.send(encodeSignedDiscover(a, 1, clock.t), ep);
  await waitCounter(beacon, 'discover_ok', 3);
  t.equal(reg.calls, callsAfterFirst, 'second discover served from the cache');

  // 1 → 2: target public → allowed. 2 → 1: target private, no registry rule → denied.
  ca.send(encodePunchRequest(1, 2), ep);
  t.same(decodePunchCommand(await ca.next(isPunch)), { address: '127.0.0.1', port: cb.port });
  t.same(decodePunchCommand(await cb.next(isPunch)), { address: '127.0.0.1', port: ca.port });
  cb.send(encodePunchRequest(2, 1), ep);
  await waitCounter(beacon, 'punch_denied_policy', 1);
});

t.test('standalone beacon: registry disclosure rule and registered endpoints for v1 daemons', async (t) => {
  const clock = new TestClock();
  const reg = new FakeRegistry();
  const v1 = await UdpClient.open();
  const c = await UdpClient.open();
  closeAll(t, v1, c);
  const id = Identity.generate();
  reg.records.set(7, { public_key: Identity.generate().publicKeyB64, public: true, real_addr: `127.0.0.1:${v1.port}` });
  reg.records.set(8, { public_key: id.publicKeyB64, public: false });
  const asked: string[] = [];
  const registry: RegistryLookup = {
    lookup: (n) => reg.lookup(n),
    canDisclose: async (x, y) => {
      asked.push(`${x}>${y}`);
      return true;
    },
  };
  const beacon = await startStandaloneBeacon({ listen: { host: '127.0.0.1', port: 0 }, registry, clock });
  t.teardown(() => beacon.close());
  const ep = beacon.address()!;
  v1.send(encodeDiscover(7), ep); // unsigned, from the registered endpoint
  await waitCounter(beacon, 'discover_registry_bound', 1);
  c.send(encodeSignedDiscover(id, 8, clock.t), ep);
  await waitCounter(beacon, 'discover_ok', 1);
  c.send(encodePunchRequest(8, 7), ep);
  t.same(decodePunchCommand(await v1.next(isPunch)), { address: '127.0.0.1', port: c.port });
  t.same(asked, ['8>7'], 'the registry rule decided');
});

t.test('LookupCache: TTL, negative TTL, coalescing, bound, errors not cached', async (t) => {
  const clock = new TestClock();
  let calls = 0;
  let fail = false;
  const reg = {
    lookup: async (n: number): Promise<LookupRecord | null> => {
      calls++;
      await new Promise((r) => setTimeout(r, 1));
      if (fail) throw new Error('down');
      return n === 0 ? null : { public_key: 'k' };
    },
  };
  const cache = new LookupCache(reg, { ttlMs: 1000, negativeTtlMs: 100, maxEntries: 2, clock });
  const [x, y] = await Promise.all([cache.get(1), cache.get(1)]);
  t.equal(calls, 1, 'concurrent look-ups coalesce');
  t.same(x, y);
  await cache.get(1);
  t.equal(calls, 1);
  clock.advance(1001);
  await cache.get(1);
  t.equal(calls, 2, 'expired after TTL');
  t.equal(await cache.get(0), null);
  clock.advance(101);
  await cache.get(0);
  t.equal(calls, 4, 'negative entries expire sooner');
  await cache.get(5);
  t.ok(cache.size <= 2, 'bounded');
  fail = true;
  clock.advance(5000);
  await t.rejects(cache.get(9), { message: 'down' });
  fail = false;
  t.same(await cache.get(9), { public_key: 'k' }, 'a failure is not cached');
});
