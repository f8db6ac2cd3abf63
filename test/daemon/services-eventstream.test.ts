import t from 'tap';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { EventDecoder, EventStreamService, encodeEvent, type StreamEvent } from '../../daemon/services/eventstream.js';
import { closed, duplexPair, until } from './duplex-pair.js';

interface Client {
  conn: Duplex;
  got: StreamEvent[];
  done: Promise<void>;
}

function connect(broker: EventStreamService, topic: string, node: number, opts: { read?: boolean; highWaterMark?: number } = {}): Client {
  const [client, server] = duplexPair(opts.highWaterMark === undefined ? {} : { highWaterMark: opts.highWaterMark });
  const done = broker.handle(server, { remote: `0:0000.0000.${node.toString(16).toUpperCase().padStart(4, '0')}`, remoteNode: node });
  const got: StreamEvent[] = [];
  if (opts.read !== false) {
    const dec = new EventDecoder();
    client.on('data', (c: Buffer) => got.push(...dec.push(c)));
  }
  client.on('error', () => {});
  client.write(encodeEvent(topic, Buffer.alloc(0)));
  return { conn: client, got, done };
}

const pub = (c: Client, topic: string, payload: string | Buffer) => c.conn.write(encodeEvent(topic, typeof payload === 'string' ? Buffer.from(payload) : payload));

t.test('pub/sub: topic, wildcard, isolation between topics, no echo to the publisher, ordering', async (t) => {
  const events: string[] = [];
  const broker = new EventStreamService({ emit: (e) => events.push(e) });
  t.teardown(() => broker.close());
  const a = connect(broker, 'alerts', 1);
  const star = connect(broker, '*', 2);
  const other = connect(broker, 'metrics', 3);
  const p = connect(broker, 'alerts', 4); // subscribed to alerts and publishes to alerts
  await until(() => broker.subscriberCount === 4);
  for (let i = 0; i < 50; i++) pub(p, 'alerts', `a${i}`);
  pub(p, 'metrics', 'm0');
  await until(() => a.got.length === 50 && star.got.length === 51 && other.got.length === 1);
  t.same(a.got.map((e) => e.payload.toString()), Array.from({ length: 50 }, (_, i) => `a${i}`), 'in order');
  t.equal(star.got.length, 51, 'wildcard receives every topic');
  t.same(other.got.map((e) => e.topic), ['metrics']);
  t.equal(p.got.length, 0, 'never delivered back to the publisher');
  // A wildcard subscriber publishing does not get its own event either, others do.
  pub(star, 'alerts', 'from-star');
  await until(() => a.got.length === 51);
  t.equal(star.got.length, 51);
  t.equal(p.got.at(-1)?.payload.toString(), 'from-star');
  // Local publish from the daemon itself.
  t.equal(broker.publish('metrics', Buffer.from('local')), 2, 'metrics subscriber + wildcard');
  t.ok(events.includes('pubsub.subscribed') && events.includes('pubsub.published'));
  a.conn.end();
  await a.done;
  await until(() => broker.subscriberCount === 3);
  t.ok(events.includes('pubsub.unsubscribed'));
});

t.test('slow subscriber: bounded backlog, then dropped; publisher and fast subscribers unaffected', async (t) => {
  const broker = new EventStreamService({ maxSubscriberBacklog: 256 * 1024 });
  t.teardown(() => broker.close());
  const slow = connect(broker, 'feed', 1, { read: false, highWaterMark: 16 * 1024 });
  const fast = connect(broker, 'feed', 2);
  const p = connect(broker, 'x', 3);
  await until(() => broker.subscriberCount === 3);
  const payload = randomBytes(8 * 1024);
  const N = 400; // 3.2 MiB total: far more than the slow subscriber may queue
  for (let i = 0; i < N; i++) pub(p, 'feed', payload);
  await until(() => fast.got.length === N);
  t.equal(fast.got.length, N, 'fast subscriber got every event');
  t.ok(fast.got.every((e) => e.payload.equals(payload)));
  t.equal(broker.stats.slowDropped, 1, 'slow subscriber dropped once');
  await closed(slow.conn);
  t.ok(slow.conn.destroyed, 'slow subscriber connection closed');
  t.equal(broker.stats.published, N, 'publisher never stalled: every publish processed');
});

t.test('malformed events close only that connection', async (t) => {
  const broker = new EventStreamService();
  t.teardown(() => broker.close());
  const good = connect(broker, 't', 1);
  // topic length over 1024
  const [c1, s1] = duplexPair();
  c1.on('error', () => {});
  const d1 = broker.handle(s1, { remote: 'x', remoteNode: 9 });
  const h = Buffer.alloc(2);
  h.writeUInt16BE(1025);
  c1.write(h);
  await d1;
  t.ok(s1.destroyed, 'oversize topic → closed');
  // payload length over 16 MiB, rejected from the length field
  const [c2, s2] = duplexPair();
  c2.on('error', () => {});
  const d2 = broker.handle(s2, { remote: 'y', remoteNode: 10 });
  const f = Buffer.alloc(2 + 1 + 4);
  f.writeUInt16BE(1, 0);
  f.write('t', 2);
  f.writeUInt32BE(16 * 1024 * 1024 + 1, 3);
  c2.write(f);
  await d2;
  t.ok(s2.destroyed, 'oversize payload → closed');
  t.equal(broker.stats.malformed, 2);
  const p = connect(broker, 'z', 3);
  await until(() => broker.subscriberCount === 2);
  pub(p, 't', 'still works');
  await until(() => good.got.length === 1);
  t.equal(good.got[0]!.payload.toString(), 'still works');
});

t.test('event codec: round trip, empty payload, wildcard, limits, chunking', async (t) => {
  const evs: StreamEvent[] = [
    { topic: 'a', payload: Buffer.from('x') },
    { topic: '*', payload: Buffer.alloc(0) },
    { topic: 'ü/topic', payload: randomBytes(70000) },
    { topic: 't'.repeat(1024), payload: Buffer.from('max topic') },
  ];
  const wire = Buffer.concat(evs.map((e) => encodeEvent(e.topic, e.payload)));
  t.equal(wire.subarray(0, 2).toString('hex'), '0001');
  t.equal(wire.subarray(3, 7).toString('hex'), '00000001');
  for (const step of [1, 5, 4096, wire.length]) {
    const dec = new EventDecoder();
    const out: StreamEvent[] = [];
    for (let off = 0; off < wire.length; off += step) out.push(...dec.push(wire.subarray(off, off + step)));
    t.same(out, evs, `chunk ${step}`);
  }
  t.throws(() => encodeEvent('t'.repeat(1025), Buffer.alloc(0)), { code: 'topic_too_large' });
  const dec = new EventDecoder(10);
  t.throws(() => dec.push(encodeEvent('a', Buffer.alloc(11))), { code: 'frame_too_large' });
  t.throws(() => dec.push(Buffer.alloc(0)), { code: 'frame_too_large' }, 'stays failed');
});
