import t from 'tap';
import { seqDiff, seqGeq, seqGt, seqLeq, seqLt, seqAdd, unwrapSeq, toWire } from '../../transport/seq.js';
import { decodeSack, encodeSack, sackBlockCount, sackSafeLength } from '../../transport/stream/sack.js';
import { RttEstimator } from '../../transport/stream/rtt.js';
import { BbrController } from '../../transport/stream/bbr.js';
import { RenoController } from '../../transport/stream/reno.js';
import type { AckEvent, RateSample } from '../../transport/stream/cc.js';
import { WindowedMaxFilter } from '../../transport/stream/windowed-filter.js';
import { Scoreboard, SegState } from '../../transport/stream/scoreboard.js';
import { Reassembly, InsertResult } from '../../transport/stream/reassembly.js';
import { SendBuffer } from '../../transport/stream/send-buffer.js';
import { Scheduler, type Timed } from '../../transport/stream/scheduler.js';
import { resolveStreamConfig, DEFAULT_STREAM_CONFIG } from '../../transport/stream/config.js';
import { VirtualClock } from '../sim/virtual-clock.js';
import { bytes } from '../sim/helpers.js';

t.test('seq: wrap-safe comparison and unwrapping', async (t) => {
  t.ok(seqLt(1, 2));
  t.ok(seqLt(0xffffffff, 0), 'max < 0 across the wrap');
  t.ok(seqGt(5, 0xfffffff0), '5 follows 0xfffffff0');
  t.ok(seqLeq(7, 7) && seqGeq(7, 7));
  t.notOk(seqLt(0, 0xffffffff));
  t.equal(seqDiff(2, 0xfffffffe), 4);
  t.equal(seqDiff(0xfffffffe, 2), -4);
  t.equal(seqAdd(0xffffffff, 2), 1);
  t.equal(toWire(2 ** 32 + 5), 5);
  // Absolute numbers near a reference, across the 2^32 boundary.
  t.equal(unwrapSeq(10, 2 ** 32 - 20), 2 ** 32 + 10, 'a small wire value just after the wrap');
  t.equal(unwrapSeq(0xfffffff0, 2 ** 32 + 4), 2 ** 32 - 16, 'a wire value just before the wrap');
  t.equal(unwrapSeq(1000, 500), 1000);
  t.equal(unwrapSeq(100, 3 * 2 ** 32 + 50), 3 * 2 ** 32 + 100);
  for (let i = 0; i < 1000; i++) {
    const ref = Math.floor(Math.random() * 2 ** 40);
    const off = Math.floor(Math.random() * 2 ** 31) - 2 ** 30;
    t.equal(unwrapSeq(toWire(ref + off), ref), ref + off);
  }
});

t.test('SACK codec: round trip and the v1 in-band parse rule', async (t) => {
  const blocks = [
    { left: 1, right: 4097 },
    { left: 0xfffffff0, right: 16 },
  ];
  const enc = encodeSack(blocks);
  t.equal(enc.subarray(0, 4).toString('latin1'), 'SACK');
  t.equal(enc[4], 2);
  t.equal(enc.length, 5 + 16);
  t.same(decodeSack(enc), blocks);
  t.equal(sackBlockCount(Buffer.from('SACK')), 0, 'too short');
  t.equal(sackBlockCount(Buffer.concat([Buffer.from('SACK'), Buffer.from([0])])), 0, 'count 0 is not SACK');
  t.equal(sackBlockCount(Buffer.concat([Buffer.from('SACK'), Buffer.from([5]), Buffer.alloc(40)])), 0, 'count 5 is not SACK');
  t.equal(sackBlockCount(Buffer.concat([Buffer.from('SACK'), Buffer.from([2]), Buffer.alloc(15)])), 0, 'truncated blocks');
  t.equal(sackBlockCount(Buffer.from('sack\x01xxxxxxxx')), 0, 'case matters');
  // The ambiguity: ordinary data that happens to start with SACK + count + enough bytes parses as SACK.
  const data = Buffer.concat([Buffer.from('SACK'), Buffer.from([1]), Buffer.alloc(8), Buffer.from(' and more text')]);
  t.equal(sackBlockCount(data), 1, 'v1 would read this data segment as SACK (trailing bytes ignored)');
  t.equal(sackSafeLength(0x53, 0x41, 0x43, 0x4b, 1, data.length), 4, 'our sender cuts it to 4 bytes');
  t.equal(sackSafeLength(0x53, 0x41, 0x43, 0x4b, 1, 12), 12, '5 + 8 - 1 bytes cannot parse');
  t.equal(sackSafeLength(0x53, 0x41, 0x43, 0x4b, 9, 400), 400, 'count byte out of range');
  t.equal(sackSafeLength(0x53, 0x41, 0x43, 0x4c, 1, 400), 400);
  t.throws(() => encodeSack([]));
  t.equal(decodeSack(encodeSack([{ left: 1, right: 2 }, { left: 3, right: 4 }, { left: 5, right: 6 }, { left: 7, right: 8 }, { left: 9, right: 10 }]))!.length, 4, 'at most 4 blocks');
});

t.test('RTO estimator (RFC 6298 with v1 clamps)', async (t) => {
  const r = new RttEstimator(1000, 200, 10_000, 10);
  t.equal(r.rto, 1000, 'initial RTO before samples');
  r.sample(100);
  t.equal(r.srtt, 100);
  t.equal(r.rttvar, 50);
  t.equal(r.rto, 300, 'SRTT + 4·RTTVAR');
  r.sample(100);
  t.equal(r.srtt, 100);
  t.equal(r.rttvar, 37.5);
  t.equal(r.rto, 250);
  for (let i = 0; i < 50; i++) r.sample(20);
  t.equal(r.rto, 200, 'clamped to the 200 ms minimum');
  r.backOff();
  t.equal(r.rto, 400, 'doubles on timeout');
  for (let i = 0; i < 10; i++) r.backOff();
  t.equal(r.rto, 10_000, 'capped at 10 s');
  r.sample(20);
  t.equal(r.rto, 200, 'a new sample ends the backoff');
  t.equal(r.minRtt, 20);
  const g = new RttEstimator(1000, 1, 10_000, 10);
  for (let i = 0; i < 100; i++) g.sample(5);
  t.equal(g.rto, 15, 'granularity G bounds the variance term');
});

function rs(rate: number, rtt: number, prior: number, appLimited = false): RateSample {
  return { delivered: rate * rtt, interval: rtt, deliveryRate: rate, rtt, priorDelivered: prior, isAppLimited: appLimited };
}

t.test('BBR: ramps up, settles near 2×BDP, and ignores isolated random loss', async (t) => {
  const mss = 1000;
  const bbr = new BbrController({ mss, initialCwnd: 10 * mss, maxCwnd: 1e9, random: () => 0.5 });
  t.equal(bbr.cwnd, 10 * mss);
  bbr.onInitialRtt(20);
  // Fluid model of a path: 1000 bytes/ms bottleneck, 20 ms base RTT, queue builds when sending faster.
  const BW = 1000;
  const BASE = 20;
  let queue = 0;
  let delivered = 0;
  let now = 0;
  const round = (lossBytes = 0): void => {
    const rtt = BASE + queue / BW;
    const sendRate = Math.min(bbr.pacingRate, bbr.cwnd / rtt);
    const dt = rtt;
    const out = Math.min(sendRate, BW) * dt;
    queue = Math.max(0, queue + (sendRate - BW) * dt);
    now += dt;
    const prior = delivered;
    delivered += out - lossBytes;
    const inflight = Math.min(bbr.cwnd, BW * BASE + queue);
    const sample: RateSample = { delivered: out, interval: dt, deliveryRate: out / dt, rtt, priorDelivered: prior, isAppLimited: false };
    const ev: AckEvent = { now, ackedBytes: out - lossBytes, lostBytes: lossBytes, inflight, delivered, rs: sample };
    bbr.onAck(ev);
  };
  for (let i = 0; i < 60; i++) round();
  t.ok(bbr.bandwidth > 900 && bbr.bandwidth <= 1000, `bandwidth estimate ${bbr.bandwidth} close to 1000 B/ms`);
  t.ok(bbr.cwnd >= 35_000 && bbr.cwnd <= 80_000, `cwnd ${bbr.cwnd} ≈ 2×BDP (40 kB) + allowance`);
  t.ok(bbr.pacingRate >= 700 && bbr.pacingRate <= 1300, `pacing ${bbr.pacingRate} ≈ bandwidth`);
  t.equal(bbr.modeName, 'probe_bw');
  const before = bbr.cwnd;
  const paceBefore = bbr.pacingRate;
  // One isolated loss: recovery conserves packets for one round, then the window returns.
  bbr.onEnterRecovery(now, 40_000, delivered);
  round(1000);
  bbr.onExitRecovery(now);
  for (let i = 0; i < 3; i++) round();
  t.ok(bbr.cwnd >= before * 0.9, `no multiplicative decrease: ${bbr.cwnd} vs ${before}`);
  t.ok(bbr.pacingRate >= 0.7 * paceBefore, 'pacing rate essentially unchanged by loss');
  const reno = new RenoController({ mss, initialCwnd: before, maxCwnd: 1e9, random: Math.random });
  reno.onEnterRecovery(now, before, delivered);
  t.ok(reno.cwnd <= before / 2, 'whereas Reno halves');
  bbr.onRto(now);
  t.equal(bbr.cwnd, mss, 'RTO collapses cwnd to one segment');
  t.ok(bbr.inRecovery);
});

t.test('Reno: slow start, additive increase, halving on loss', async (t) => {
  const mss = 1000;
  const r = new RenoController({ mss, initialCwnd: 10 * mss, maxCwnd: 1e9, random: Math.random });
  const ack = (n: number): void => r.onAck({ now: 0, ackedBytes: n, lostBytes: 0, inflight: 0, delivered: 0, rs: null });
  ack(1000);
  t.equal(r.cwnd, 11_000, 'slow start: +acked');
  r.onEnterRecovery(0, 11_000, 0);
  t.equal(r.cwnd, 5500, 'halved');
  t.equal(r.ssthresh, 5500);
  r.onExitRecovery(0);
  ack(5500);
  t.ok(r.cwnd > 5500 && r.cwnd < 7000, 'additive increase in congestion avoidance');
  r.onRto(0);
  t.equal(r.cwnd, mss);
  t.equal(r.pacingRate, Infinity, 'unpaced');
});

t.test('windowed max filter forgets old maxima', async (t) => {
  const f = new WindowedMaxFilter(10);
  f.update(0, 100);
  f.update(1, 50);
  t.equal(f.value, 100);
  f.update(5, 60);
  t.equal(f.value, 100);
  f.update(12, 40);
  t.ok(f.value <= 60, `old max expired: ${f.value}`);
  f.update(13, 200);
  t.equal(f.value, 200);
});

t.test('scoreboard: SACK, loss marking, cumulative ACK, split', async (t) => {
  const sb = new Scoreboard();
  for (let i = 0; i < 5; i++) sb.push(1 + i * 100, 101 + i * 100, i);
  t.equal(sb.inflight, 500);
  const delivered: number[] = [];
  sb.sack(201, 401, (s) => delivered.push(s.start));
  t.same(delivered, [201, 301]);
  t.equal(sb.inflight, 300);
  t.equal(sb.sackedBytes, 200);
  t.equal(sb.oldestInFlight()!.start, 1, 'tx order preserved');
  sb.markLost(sb.first()!);
  t.equal(sb.inflight, 200);
  t.equal(sb.peekLost()!.start, 1);
  sb.split(sb.peekLost()!, 40);
  t.equal(sb.peekLost()!.len, 40, 'lost segment re-sliced');
  sb.retransmitted(sb.peekLost()!, 10);
  t.equal(sb.peekLost()!.start, 41, 'remainder queued right behind');
  sb.retransmitted(sb.peekLost()!, 10);
  t.equal(sb.peekLost(), null);
  const acked: number[] = [];
  const n = sb.ackTo(401, (s) => acked.push(s.start));
  t.same(acked, [1, 41, 101], 'SACKed segments are not delivered twice');
  t.equal(n, 200);
  t.equal(sb.count, 1);
  t.equal(sb.first()!.state, SegState.InFlight);
  t.equal(sb.ackTo(450, () => {}), 49, 'partial ACK trims a segment');
  t.equal(sb.first()!.start, 450);
  sb.markAllLost(false);
  t.equal(sb.inflight, 0);
  t.equal(sb.lostBytes, 51);
});

t.test('reassembly: overlap trimming, in-order drain and SACK ranges', async (t) => {
  const r = new Reassembly(100);
  const d = (n: number, v: number) => Buffer.alloc(n, v);
  t.equal(r.insert(201, d(100, 2)), InsertResult.Stored);
  t.equal(r.insert(401, d(100, 4)), InsertResult.Stored);
  t.equal(r.insert(201, d(100, 2)), InsertResult.Duplicate);
  t.equal(r.insert(250, d(100, 9)), InsertResult.Stored, 'overlap is trimmed to the new bytes');
  t.equal(r.bytes, 249);
  const blocks: number[] = [];
  t.equal(r.sackBlocks(blocks, 4), 2);
  t.same(blocks, [201, 350, 401, 501], 'most recently touched ranges first, merged');
  t.equal(r.shift(101), null, 'hole at 101');
  const first = r.shift(201)!;
  t.equal(first.length, 100);
  t.equal(first[0], 2);
  const second = r.shift(301)!;
  t.equal(second.length, 49, 'the trimmed overlap');
  t.equal(second[0], 9);
  t.equal(r.shift(350), null);
  t.equal(r.rangeCount, 1);
  const full = new Reassembly(2);
  full.insert(10, d(1, 0));
  full.insert(20, d(1, 0));
  t.equal(full.insert(30, d(1, 0)), InsertResult.Full, 'bounded');
});

t.test('send buffer: bytes in, any slice out, trimming', async (t) => {
  const sbuf = new SendBuffer(1);
  const data = bytes(300_000, 3);
  sbuf.append(data, 0, 10);
  sbuf.append(data, 10, 100_000);
  sbuf.append(data, 100_010, 199_990);
  t.equal(sbuf.length, 300_000);
  const out = Buffer.alloc(70_000);
  sbuf.copyOut(1 + 60_000, 70_000, out, 0);
  t.ok(out.equals(data.subarray(60_000, 130_000)), 'slice spanning blocks');
  t.equal(sbuf.byteAt(1 + 123), data[123]);
  sbuf.trimTo(1 + 200_000);
  t.equal(sbuf.length, 100_000);
  sbuf.copyOut(1 + 250_000, 1000, out, 0);
  t.ok(out.subarray(0, 1000).equals(data.subarray(250_000, 251_000)));
  sbuf.trimTo(1 + 300_000);
  t.equal(sbuf.length, 0);
  sbuf.append(data, 0, 5);
  t.equal(sbuf.byteAt(300_001 + 4), data[4]);
});

t.test('scheduler: one timer for many deadlines, lazy reschedule', async (t) => {
  const clock = new VirtualClock(0);
  const s = new Scheduler(clock);
  const fired: string[] = [];
  const mk = (name: string): Timed => ({ wakeAt: Infinity, heapIdx: -1, onWake: () => fired.push(name) });
  const a = mk('a');
  const b = mk('b');
  const c = mk('c');
  s.schedule(a, 30);
  s.schedule(b, 10);
  s.schedule(c, 20);
  s.schedule(c, 5);
  s.remove(a);
  await clock.advance(100);
  t.same(fired, ['c', 'b']);
  t.equal(s.size, 0);
  s.schedule(a, 150);
  s.close();
  await clock.advance(100);
  t.same(fired, ['c', 'b'], 'closed scheduler fires nothing');
});

t.test('config: v1 defaults, overrides, validation', async (t) => {
  t.equal(DEFAULT_STREAM_CONFIG.acceptBacklog, 64);
  t.equal(DEFAULT_STREAM_CONFIG.timeWaitMs, 10_000);
  t.equal(DEFAULT_STREAM_CONFIG.synRateGlobal, 100);
  t.equal(DEFAULT_STREAM_CONFIG.maxConnsPerPort, 1024);
  t.equal(DEFAULT_STREAM_CONFIG.initialUdpPayload, 1200);
  t.equal(DEFAULT_STREAM_CONFIG.maxUdpPayload, 65507);
  t.equal(resolveStreamConfig({ timeWaitMs: 5 }).timeWaitMs, 5);
  t.throws(() => resolveStreamConfig({ recvBuffer: 0 }), RangeError);
});
