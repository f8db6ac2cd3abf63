import t from 'tap';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Connection } from '../../transport/host.js';
import { Flags, Protocol, decodePacket } from '../../transport/packet.js';
import { sackBlockCount } from '../../transport/stream/sack.js';
import { Sink, bytes, dial, pair, sha256, writeAll } from '../sim/helpers.js';

/** Accept the next connection on `port` of host b. */
function nextConnection(l: { once(e: 'connection', f: (c: Connection) => void): unknown }): { conn?: Connection } {
  const box: { conn?: Connection } = {};
  l.once('connection', (c: Connection) => (box.conn = c));
  return box;
}

/** Listen on port 1000 of b, dial it from a (node 2 is b) and return both ends once accepted; the
 * simulated network closes at teardown. */
async function connectPair(t: { teardown(f: () => void): void }, sim: ReturnType<typeof pair>): Promise<{ ca: Connection; cb: Connection }> {
  t.teardown(() => sim.net.closeAll());
  const box = nextConnection(sim.b.listen(1000));
  const ca = await dial(sim.net, sim.a, 2, 1000);
  await sim.clock.run(() => !!box.conn);
  return { ca, cb: box.conn! };
}

for (const loss of [0, 0.01, 0.05]) {
  t.test(`byte-exact in both directions at once: ${loss * 100}% loss, jitter, reordering, duplication`, async (t) => {
    const { net, a, b, clock } = pair({
      seed: 11 + loss * 1000,
      link: { delayMs: 10, jitterMs: 3, loss, duplicate: 0.02, reorder: 0.03, reorderDelayMs: 15, bandwidth: 4000, queueBytes: 200_000, mtu: 9000 },
    });
    const { ca, cb } = await connectPair(t, { net, a, b, clock });
    const up = bytes(1_500_000, 1);
    const down = bytes(1_200_000, 2);
    const sinkAtB = new Sink(cb);
    const sinkAtA = new Sink(ca);
    let finishedA = false;
    let finishedB = false;
    ca.on('finish', () => (finishedA = true));
    cb.on('finish', () => (finishedB = true));
    writeAll(ca, up);
    writeAll(cb, down);
    await clock.run(() => sinkAtA.ended && sinkAtB.ended && finishedA && finishedB, 300_000);
    t.equal(sinkAtB.bytes, up.length);
    t.equal(sinkAtB.digest(), sha256(up), 'A→B SHA-256 matches');
    t.equal(sinkAtA.bytes, down.length);
    t.equal(sinkAtA.digest(), sha256(down), 'B→A SHA-256 matches');
    t.equal(sinkAtA.error, null);
    t.equal(sinkAtB.error, null);
    const ia = ca.info();
    if (loss > 0) t.ok(ia.retransmits > 0, `losses were repaired (${ia.retransmits} retransmissions)`);
    t.ok(net.linkStats(1, 2).duplicated > 0, 'duplicates were injected');
    await clock.run(() => sinkAtA.closed && sinkAtB.closed);
    t.pass('both Duplexes closed cleanly');
  });
}

t.test('32-bit sequence wrap mid-transfer (both directions, loss, SACK across the wrap)', async (t) => {
  const { net, a, b, clock } = pair({
    seed: 21,
    link: { delayMs: 5, loss: 0.03, reorder: 0.02, reorderDelayMs: 8, bandwidth: 5000, mtu: 1500 },
    config: { initialSequence: 2 ** 32 - 400_000 },
  });
  const { ca, cb } = await connectPair(t, { net, a, b, clock });
  const up = bytes(1_000_000, 31);
  const down = bytes(800_000, 32);
  const atB = new Sink(cb);
  const atA = new Sink(ca);
  writeAll(ca, up);
  writeAll(cb, down);
  await clock.run(() => atA.ended && atB.ended, 300_000);
  t.equal(atB.digest(), sha256(up), 'A→B intact across the wrap');
  t.equal(atA.digest(), sha256(down), 'B→A intact across the wrap');
  t.ok(ca.info().retransmits > 0 && cb.info().sack_sent > 0, 'loss recovery with SACK happened');
});

t.test('a reader that stops reading: zero window, probes, then resume without loss', async (t) => {
  const { net, a, b, clock } = pair({ seed: 5, link: { delayMs: 10, loss: 0.01, bandwidth: 4000, mtu: 1500 }, config: { recvBuffer: 256 * 1024, sendBuffer: 256 * 1024 } });
  const { ca, cb } = await connectPair(t, { net, a, b, clock });
  cb.pause(); // the application is not reading
  const data = bytes(2_000_000, 9);
  let sawBackPressure = false;
  let off = 0;
  const pump = (): void => {
    while (off < data.length) {
      const part = data.subarray(off, off + 32 * 1024);
      off += part.length;
      if (!ca.write(part)) {
        sawBackPressure = true;
        ca.once('drain', pump);
        return;
      }
    }
    ca.end();
  };
  pump();
  // Let the receive buffer fill and the sender hit the zero window, then probe for a while.
  await clock.run(() => ca.info().peer_recv_win === 0 && ca.info().in_flight === 0, 60_000);
  t.equal(ca.info().peer_recv_win, 0, 'the peer advertised a zero window');
  const heldAtStall = cb.readableLength;
  t.ok(heldAtStall <= 256 * 1024 + 128 * 1024, `receiver holds ${heldAtStall} bytes: bounded by its buffer`);
  const sentAtStall = ca.info().bytes_sent;
  await clock.advance(8000);
  t.ok(ca.info().zero_window_probes >= 2, `zero-window probes sent with backoff (${ca.info().zero_window_probes})`);
  t.ok(ca.info().bytes_sent - sentAtStall <= 16, 'the sender stopped: only probe bytes went out while the window was zero');
  t.ok(sawBackPressure, 'write() returned false while the window was closed');
  t.equal(ca.destroyed, false, 'no timeout while waiting on a zero window');
  const sink = new Sink(cb);
  cb.resume(); // the application reads again
  await clock.run(() => sink.ended, 120_000);
  t.equal(sink.bytes, data.length);
  t.equal(sink.digest(), sha256(data), 'data intact after the stall');
});

t.test('a reader that drains a full buffer reopens the window at once (no wait for a zero-window probe)', async (t) => {
  // Probes far away: only a window update sent when the application reads can restart the sender in time.
  const config = { recvBuffer: 256 * 1024, sendBuffer: 256 * 1024, zeroWindowProbeMs: 60_000, zeroWindowProbeMaxMs: 60_000 };
  const { net, a, b, clock } = pair({ seed: 7, link: { delayMs: 10, bandwidth: 4000, mtu: 1500 }, config });
  const { ca, cb } = await connectPair(t, { net, a, b, clock });
  const sink = new Sink(cb); // flowing, as a daemon bridge or pipe() reads
  cb.pause();
  const data = bytes(1_000_000, 10);
  writeAll(ca, data);
  await clock.run(() => ca.info().peer_recv_win === 0 && ca.info().in_flight === 0, 60_000);
  t.equal(ca.info().zero_window_probes, 0, 'stalled on a zero window, no probe yet');
  cb.resume();
  await clock.run(() => sink.ended, 10_000);
  t.equal(sink.digest(), sha256(data), 'all data arrived well before the first probe was due');
  t.equal(ca.info().zero_window_probes, 0, 'restarted by window updates, not probes');
});

t.test('a slow reader on one connection does not stall another connection', async (t) => {
  const { net, a, b, clock } = pair({ seed: 6, link: { delayMs: 5, bandwidth: 8000 }, config: { recvBuffer: 128 * 1024 } });
  t.teardown(() => net.closeAll());
  const slowL = b.listen(1000);
  const fastL = b.listen(1001);
  const slowBox = nextConnection(slowL);
  const fastBox = nextConnection(fastL);
  const slowA = await dial(net, a, 2, 1000);
  const fastA = await dial(net, a, 2, 1001);
  await clock.run(() => !!slowBox.conn && !!fastBox.conn);
  slowBox.conn!.pause();
  const slowData = bytes(1_000_000, 3);
  const fastData = bytes(3_000_000, 4);
  writeAll(slowA, slowData);
  const fastSink = new Sink(fastBox.conn!);
  writeAll(fastA, fastData);
  await clock.run(() => fastSink.ended, 120_000);
  t.equal(fastSink.digest(), sha256(fastData), 'the other connection completed');
  t.ok(slowBox.conn!.readableLength < slowData.length, 'while the paused one is still stalled');
  t.equal(slowA.info().peer_recv_win, 0);
  const slowSink = new Sink(slowBox.conn!);
  slowBox.conn!.resume();
  await clock.run(() => slowSink.ended, 120_000);
  t.equal(slowSink.digest(), sha256(slowData), 'and the stalled one completes once read');
});

t.test('MTU-limited path: PMTU settles below the limit and data is intact', async (t) => {
  const { net, a, b, clock } = pair({ seed: 8, link: { delayMs: 10, mtu: 1400, bandwidth: 4000, loss: 0.01 } });
  const { ca, cb } = await connectPair(t, { net, a, b, clock });
  const sink = new Sink(cb);
  const data = bytes(3_000_000, 12);
  writeAll(ca, data);
  await clock.run(() => sink.ended && a.pathInfo(2)!.searching === false, 300_000);
  const path = a.pathInfo(2)!;
  t.ok(path.udp_payload <= 1400, `PMTU ${path.udp_payload} does not exceed the path limit`);
  t.ok(path.udp_payload >= 1400 * 0.98, `PMTU ${path.udp_payload} is within 2% of the limit`);
  t.equal(path.mss, path.udp_payload - 36 - 34, 'segment payload = PMTU − tunnel overhead − header');
  t.equal(sink.digest(), sha256(data), 'data intact');
  t.ok(net.linkStats(1, 2).droppedMtu > 0, 'oversized probes were dropped by the path');
  const inB = b.pathInfo(1)!;
  t.ok(inB.udp_payload <= 1400, 'the other side found it too');
});

t.test('black hole: the path shrinks mid-transfer, segments fall back to the base size', async (t) => {
  const { net, a, b, clock } = pair({ seed: 9, link: { delayMs: 5, bandwidth: 20_000 } });
  t.teardown(() => net.closeAll());
  const l = b.listen(1000);
  const box = nextConnection(l);
  const ca = await dial(net, a, 2, 1000);
  await clock.run(() => !!box.conn && a.pathInfo(2)!.searching === false);
  t.equal(a.pathInfo(2)!.udp_payload, 65507, 'an unlimited path reaches the maximum UDP payload');
  const sink = new Sink(box.conn!);
  const data = bytes(4_000_000, 13);
  writeAll(ca, data);
  await clock.run(() => sink.bytes > 500_000);
  net.setLink(1, 2, { mtu: 1500 }); // e.g. a route change to a path that drops large packets
  await clock.run(() => sink.ended, 600_000);
  t.equal(sink.digest(), sha256(data), 'data intact');
  t.ok(a.stats().pmtuBlackHoles >= 1, 'black hole detected');
  t.ok(a.pathInfo(2)!.udp_payload <= 1500, `PMTU now ${a.pathInfo(2)!.udp_payload}`);
});

t.test('works with stream.pipeline and for await', async (t) => {
  const { net, a, b, clock } = pair({ seed: 3, link: { delayMs: 2, loss: 0.02 } });
  t.teardown(() => net.closeAll());
  const l = b.listen(2000);
  const chunks: Buffer[] = [];
  let done = false;
  (async () => {
    for await (const conn of l) {
      for await (const chunk of conn as AsyncIterable<Buffer>) chunks.push(chunk);
      done = true;
      break;
    }
  })();
  const ca = await dial(net, a, 2, 2000);
  const parts = Array.from({ length: 200 }, (_, i) => bytes(1000 + i * 37, i + 1));
  let piped = false;
  pipeline(Readable.from(parts), ca).then(() => (piped = true));
  await clock.run(() => done && piped, 120_000);
  t.equal(sha256(Buffer.concat(chunks)), sha256(Buffer.concat(parts)));
});

t.test('pipeline into a slow writable back-pressures the sender', async (t) => {
  const { net, a, b, clock } = pair({ seed: 4, link: { delayMs: 3 }, config: { recvBuffer: 64 * 1024 } });
  t.teardown(() => net.closeAll());
  const l = b.listen(2001);
  const box = nextConnection(l);
  const ca = await dial(net, a, 2, 2001);
  await clock.run(() => !!box.conn);
  const received: Buffer[] = [];
  let sinkDone = false;
  const slow = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _e, cb) {
      received.push(chunk);
      clock.setTimer(cb, 5); // 5 ms per chunk: much slower than the link
    },
  });
  pipeline(box.conn!, slow).then(() => (sinkDone = true));
  const data = bytes(600_000, 21);
  writeAll(ca, data);
  let maxHeld = 0;
  await clock.run(() => {
    maxHeld = Math.max(maxHeld, box.conn!.readableLength);
    return sinkDone;
  }, 600_000);
  t.equal(sha256(Buffer.concat(received)), sha256(data));
  t.ok(maxHeld <= 64 * 1024 + 128 * 1024, `receiver buffering stayed bounded (${maxHeld})`);
});

t.test('data that looks like a v1 SACK option is never sent as an ambiguous segment', async (t) => {
  const { net, a, b, clock } = pair({ seed: 2, link: { delayMs: 1, mtu: 1200 }, config: { pmtuProbing: false } });
  t.teardown(() => net.closeAll());
  let ambiguous = 0;
  let dataPackets = 0;
  net.taps.push((from, _to, pkt) => {
    if (from !== 1) return;
    const p = decodePacket(pkt);
    if (p.protocol === Protocol.STREAM && p.flags & Flags.ACK && p.payload.length > 0) {
      dataPackets++;
      if (sackBlockCount(p.payload) > 0) ambiguous++;
    }
  });
  const l = b.listen(1000);
  const box = nextConnection(l);
  const ca = await dial(net, a, 2, 1000);
  ca.setNoDelay(true);
  await clock.run(() => !!box.conn);
  const sink = new Sink(box.conn!);
  // Messages that each start with "SACK" + count 1..4 + enough bytes: every write boundary is a trap.
  const msgs: Buffer[] = [];
  for (let i = 0; i < 300; i++) {
    const n = 1 + (i % 4);
    msgs.push(Buffer.concat([Buffer.from('SACK'), Buffer.from([n]), bytes(8 * n + (i % 50), i + 100)]));
  }
  const all = Buffer.concat(msgs);
  for (const m of msgs) ca.write(m);
  ca.end();
  await clock.run(() => sink.ended, 60_000);
  t.equal(sink.digest(), sha256(all), 'every byte arrived');
  t.ok(dataPackets > 0);
  t.equal(ambiguous, 0, 'no data segment from A parses as SACK');
});

t.test('segments that arrive in one turn reach the reader as one chunk, in order, before EOF', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5 }, config: { initialUdpPayload: 1200, maxUdpPayload: 1200 } });
  t.teardown(() => net.closeAll());
  const box = nextConnection(b.listen(30));
  const client = await dial(net, a, 2, 30, { noDelay: true });
  await net.clock.run(() => !!box.conn);
  const server = box.conn!;
  const chunks: number[] = [];
  let endedAfter = -1;
  server.on('data', (d: Buffer) => chunks.push(d.length));
  server.on('end', () => (endedAfter = chunks.length));
  const sink = new Sink(server);
  const data = bytes(200_000, 7);
  client.end(data);
  await net.clock.run(() => sink.ended);
  t.equal(sink.digest(), sha256(data), 'every byte, in order');
  t.equal(endedAfter, chunks.length, "'end' only after the last chunk");
  const segments = server.info().segs_recv;
  t.ok(chunks.length < segments / 4, `${chunks.length} chunks for ${segments} segments received`);
});
