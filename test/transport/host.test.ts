import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Addr } from '../../transport/address.js';
import { VirtualClock } from '../sim/virtual-clock.js';
import { TransportHost, type Connection } from '../../transport/host.js';
import { Flags, HEADER_LEN, Protocol, decodePacket, encodePacket } from '../../transport/packet.js';
import { rng } from '../sim/link.js';
import { Sink, addr, bytes, dial, pair, sha256 } from '../sim/helpers.js';
import { V1Peer } from '../sim/v1-peer.js';

t.test('datagrams: bound sockets, unbound ports, broadcast hand-off', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 3 } });
  t.teardown(() => net.closeAll());
  const sock = b.bindDatagram(5000);
  const got: { data: string; src: string; srcPort: number; dstPort: number }[] = [];
  sock.on('message', (data: Buffer, src: Addr, srcPort: number, dstPort: number) => got.push({ data: data.toString(), src: src.toString(), srcPort, dstPort }));
  const mine = a.bindDatagram(6000);
  mine.send(new Addr(1, 2), 5000, Buffer.from('hello'));
  a.sendDatagram(addr(2), 5000, Buffer.from('anon'));
  await net.clock.advance(20);
  t.same(got[0], { data: 'hello', src: '1:0001.0000.0001', srcPort: 6000, dstPort: 5000 }, 'source address keeps the network of the destination');
  t.equal(got[1]!.data, 'anon');
  t.ok(got[1]!.srcPort >= 49152, 'an ephemeral source port when unbound');
  const stray: string[] = [];
  b.on('datagram', (d: Buffer, _src: Addr, _sp: number, dp: number) => stray.push(`${dp}:${d.toString()}`));
  a.sendDatagram(addr(2), 5001, Buffer.from('nobody'));
  await net.clock.advance(20);
  t.same(stray, ['5001:nobody'], "unbound port → host 'datagram' event");
  t.equal(b.stats().datagramsNoListener, 1);
  t.throws(() => b.bindDatagram(5000), { code: 'port_in_use' });
  sock.close();
  t.doesNotThrow(() => b.bindDatagram(5000), 'port free again after close');
  // Broadcast: the host hands the packet to output with peer 0xFFFFFFFF; the daemon fans it out.
  const outs: number[] = [];
  const clock = new VirtualClock();
  const h = new TransportHost({ localNode: 9, clock, output: (peer) => outs.push(peer) });
  h.sendDatagram(new Addr(3, 0xffffffff), 77, Buffer.from('all'));
  t.same(outs, [0xffffffff]);
  // Inbound broadcast datagrams are delivered locally.
  const bs = h.bindDatagram(77);
  let bc = '';
  bs.on('message', (d: Buffer) => (bc = d.toString()));
  h.input(encodePacket({ flags: 0, protocol: Protocol.DATAGRAM, srcNet: 3, srcNode: 5, dstNet: 3, dstNode: 0xffffffff, srcPort: 1, dstPort: 77, seq: 0, ack: 0, window: 0 }, Buffer.from('bcast')), 5);
  t.equal(bc, 'bcast');
  t.throws(() => h.sendDatagram(addr(1), 1, Buffer.alloc(70_000)), { code: 'invalid_argument' });
  await h.close();
});

t.test('ping: RTT over the control protocol, sized payloads, timeouts, v1 pong format', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 10 } });
  t.teardown(() => net.closeAll());
  const rtt = await new Promise<number>((resolve, reject) => {
    a.ping(2).then(resolve, reject);
    net.clock.run(() => false, 100).catch(() => {});
  });
  t.equal(rtt, 20, 'RTT of a 10 ms each-way link');
  let sized = 0;
  a.ping(2, 60_000).then((r) => (sized = r));
  await net.clock.run(() => sized > 0);
  t.ok(sized >= 20, 'large ping answered');
  t.equal(b.stats().pingsAnswered >= 2, true);
  // The pong has the v1 shape: ACK flag, src port 0, seq echoed, ack = seq + 1, same payload.
  const raw: Buffer[] = [];
  const clock = new VirtualClock();
  const h = new TransportHost({ localNode: 2, clock, output: (_p, pkt) => raw.push(pkt) });
  const payload = Buffer.from('probe-payload');
  h.input(encodePacket({ flags: 0, protocol: Protocol.CONTROL, srcNet: 0, srcNode: 1, dstNet: 0, dstNode: 2, srcPort: 1234, dstPort: 0, seq: 0xfffffffe, ack: 0, window: 0 }, payload), 1);
  const pong = decodePacket(raw[0]!);
  t.match(pong, { flags: Flags.ACK, protocol: Protocol.CONTROL, srcPort: 0, dstPort: 1234, seq: 0xfffffffe, ack: 0xffffffff, srcNode: 2, dstNode: 1 });
  t.ok(pong.payload.equals(payload));
  await h.close();
  // No answer → ping_timeout.
  net.setLink(1, 2, { loss: 1 });
  let err = '';
  a.ping(2).catch((e: { code: string }) => (err = e.code));
  await net.clock.run(() => err !== '', 10_000);
  t.equal(err, 'ping_timeout');
});

t.test('PMTU probing settles at the maximum on an unlimited path and on a v1 peer', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 1 } });
  t.teardown(() => net.closeAll());
  b.listen(1).on('connection', () => {});
  await dial(net, a, 2, 1);
  await net.clock.run(() => a.pathInfo(2)?.searching === false);
  t.equal(a.pathInfo(2)!.udp_payload, 65507);
  t.equal(a.pathInfo(2)!.mss, 65507 - 36 - 34);
  // A v1 peer answers pings with the same payload, so probing works against it too.
  const v1 = new V1Peer(net, 3, 7);
  const conn = await dial(net, a, 3, 7);
  await net.clock.run(() => a.pathInfo(3)?.searching === false);
  t.equal(a.pathInfo(3)!.udp_payload, 65507, 'v1 peer: probes answered');
  const data = bytes(200_000, 5);
  conn.end(data);
  await net.clock.run(() => v1.data.length === data.length && v1.peerFin, 60_000);
  t.equal(sha256(v1.data), sha256(data), 'large segments accepted by the v1 peer emulation');
  // Probing disabled: the initial size stays.
  const q = pair({ config: { pmtuProbing: false } });
  t.teardown(() => q.net.closeAll());
  q.b.listen(1).on('connection', () => {});
  await dial(q.net, q.a, 2, 1);
  t.equal(q.a.pathInfo(2)!.mss, 1200 - 36 - 34, 'segments fit a 1200-byte UDP payload');
  // A custom tunnel overhead (e.g. relayed) shrinks segments accordingly.
  const r = pair({ config: { pmtuProbing: false }, a: { tunnelOverhead: () => 45 } });
  t.teardown(() => r.net.closeAll());
  r.b.listen(1).on('connection', () => {});
  await dial(r.net, r.a, 2, 1);
  t.equal(r.a.pathInfo(2)!.mss, 1200 - 45 - 34);
});

t.test('v1 peer interop: dial it, accept from it, zero window from it', async (t) => {
  const { net, a } = pair({ link: { delayMs: 2 }, config: { pmtuProbing: false } });
  t.teardown(() => net.closeAll());
  const v1 = new V1Peer(net, 3, 80);
  const conn = await dial(net, a, 3, 80);
  t.equal(conn.info().peer_recv_win, 512 * 4096, 'v1 window of 512 slots');
  conn.write(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
  await net.clock.run(() => v1.data.length > 0);
  t.equal(v1.data.toString(), 'GET / HTTP/1.0\r\n\r\n');
  // The v1 peer's window goes to 0 (its queue is full): we stop and probe, then continue.
  v1.window = 0;
  v1.write(Buffer.from('x')); // carries window 0
  await net.clock.advance(10);
  conn.write(bytes(50_000, 1));
  await net.clock.advance(2000);
  const stalled = v1.data.length;
  t.ok(stalled < 18 + 50_000, 'no data beyond the zero window except probes');
  t.ok(conn.info().zero_window_probes >= 1, 'probing');
  v1.window = 512;
  await net.clock.run(() => v1.data.length === 18 + 50_000, 60_000);
  t.pass('resumed once the v1 peer reported a window again');
  // Inbound from a v1 peer, including segments of v1's 4096-byte size.
  const l = a.listen(1001);
  let server: Connection | undefined;
  l.on('connection', (c: Connection) => (server = c));
  const v1b = new V1Peer(net, 4, 0);
  v1b.dial(1, 1001);
  await net.clock.run(() => !!server);
  const sink = new Sink(server!);
  const payload = bytes(4096 * 5, 8);
  for (let i = 0; i < 5; i++) v1b.write(payload.subarray(i * 4096, (i + 1) * 4096));
  v1b.close();
  await net.clock.run(() => sink.ended);
  t.equal(sink.digest(), sha256(payload));
});

t.test('garbage into host.input never throws and is counted', async (t) => {
  const clock = new VirtualClock();
  const outs: Buffer[] = [];
  const h = new TransportHost({ localNode: 2, clock, output: (_p, pkt) => outs.push(pkt), config: { synRateGlobal: 1e6, synRatePerSource: 1e6 } });
  const l = h.listen(80);
  l.on('connection', (c: Connection) => {
    c.on('error', () => {});
    c.resume();
  });
  h.bindDatagram(53).on('message', () => {});
  const r = rng(42);
  const rand = (n: number): number => Math.floor(r() * n);
  let thrown = 0;
  const feed = (b: Buffer, from: number): void => {
    try {
      h.input(b, from);
    } catch {
      thrown++;
    }
  };
  // 1. Random bytes of every length class.
  for (let i = 0; i < 3000; i++) {
    const len = [0, 1, 33, 34, 35, 100, 2000][i % 7]! + rand(3);
    feed(randomBytes(len), rand(5));
  }
  // 2. Well-formed packets (valid CRC) with random header fields and payloads: exercises every path.
  for (let i = 0; i < 20_000; i++) {
    const protocol = [1, 1, 1, 2, 3, 7][rand(6)]!;
    const pkt = encodePacket(
      {
        flags: rand(16), protocol, srcNet: rand(3), srcNode: 1 + rand(3), dstNet: rand(3), dstNode: [2, 2, 2, 0xffffffff, 7][rand(5)]!,
        srcPort: [80, 1000, 49152, rand(65536)][rand(4)]!, dstPort: [80, 0, 53, rand(65536)][rand(4)]!,
        seq: [0, 1, 2, rand(2 ** 32), 0xffffffff][rand(5)]!, ack: [0, 1, 2, rand(2 ** 32)][rand(4)]!, window: rand(65536),
      },
      r() < 0.2 ? Buffer.concat([Buffer.from('SACK'), Buffer.from([rand(6)]), randomBytes(rand(40))]) : randomBytes(rand(300)),
    );
    const from = r() < 0.9 ? pkt.readUInt32BE(6) : rand(9);
    feed(pkt, from);
    if (i % 500 === 0) await clock.advance(50);
  }
  // 3. Bit flips of valid packets (bad CRC) and truncations.
  const good = encodePacket({ flags: Flags.SYN, protocol: 1, srcNet: 0, srcNode: 1, dstNet: 0, dstNode: 2, srcPort: 5, dstPort: 80, seq: 0, ack: 0, window: 10 }, Buffer.from('x'));
  for (let i = 0; i < good.length * 8; i++) {
    const b = Buffer.from(good);
    b[i >> 3]! ^= 1 << (i & 7);
    feed(b, 1);
  }
  for (let i = 0; i < good.length; i++) feed(good.subarray(0, i), 1);
  t.equal(thrown, 0, 'input() never threw');
  await clock.advance(200_000);
  const s = h.stats();
  t.ok((s.malformed['bad_checksum'] ?? 0) > 0, 'bad checksums counted');
  t.ok((s.malformed['short_header'] ?? 0) > 0, 'short packets counted');
  t.ok(s.spoofedSource > 0, 'source ≠ tunnel peer counted');
  t.ok(s.notForUs > 0, 'wrong destination counted');
  t.equal(s.internalErrors, 0, 'no internal error while handling garbage');
  t.ok(outs.length > 0, 'still answered what deserved an answer');
  await h.close();
  t.pass(`host survived; ${h.stats().packetsIn} packets in`);
});

t.test('API misuse gives typed errors', async (t) => {
  const { net, a } = pair();
  t.teardown(() => net.closeAll());
  a.listen(100);
  t.throws(() => a.listen(100), { code: 'port_in_use' });
  t.throws(() => a.listen(0), { code: 'invalid_argument' });
  t.throws(() => a.listen(70_000), { code: 'invalid_port' });
  await t.rejects(a.connect(new Addr(0, 0xffffffff), 1), { code: 'invalid_argument' });
  await t.rejects(a.connect(addr(2), -1), { code: 'invalid_port' });
  await t.rejects(a.ping(2, 1e6), { code: 'invalid_argument' });
  t.throws(() => new TransportHost({ localNode: -1, output: () => {} }), { code: 'invalid_argument' });
});

t.test('connection info carries the v1 conn_list fields', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5, loss: 0.02 }, seed: 4, config: { pmtuProbing: false } });
  t.teardown(() => net.closeAll());
  let server: Connection | undefined;
  b.listen(3).on('connection', (c: Connection) => (server = c));
  const c = await dial(net, a, 2, 3);
  await net.clock.run(() => !!server);
  const sink = new Sink(server!);
  c.end(bytes(500_000));
  await net.clock.run(() => sink.ended);
  const info = a.connections()[0]!;
  for (const k of ['id', 'local_port', 'remote_addr', 'remote_port', 'state', 'cong_win', 'ssthresh', 'in_flight', 'srtt_ms', 'rttvar_ms', 'unacked', 'ooo_buf', 'peer_recv_win', 'recv_win', 'in_recovery', 'bytes_sent', 'bytes_recv', 'segs_sent', 'segs_recv', 'retransmits', 'fast_retx', 'sack_recv', 'sack_sent', 'dup_acks']) {
    t.ok(k in info, k);
  }
  t.equal(info.remote_addr, '0:0000.0000.0002');
  t.equal(info.remote_port, 3);
  t.equal(info.bytes_sent >= 500_000, true);
  t.ok(info.srtt_ms >= 10, `srtt ${info.srtt_ms}`);
  const sinfo = b.connections()[0]!;
  t.equal(sinfo.bytes_recv, 500_000);
  t.ok(sinfo.sack_sent > 0, 'the receiver sent SACKs under loss');
  t.ok(info.sack_recv > 0);
  t.equal(HEADER_LEN, 34);
});

t.test('a host can connect to its own node (in-process loopback)', async (t) => {
  const clock = new VirtualClock();
  const h = new TransportHost({ localNode: 5, clock, output: () => t.fail('loopback must not reach the tunnel') });
  t.teardown(() => h.close());
  h.listen(7).on('connection', (c: Connection) => c.pipe(c));
  let conn: Connection | undefined;
  h.connect(new Addr(0, 5), 7).then((c) => (conn = c));
  await clock.run(() => !!conn);
  const sink = new Sink(conn!);
  const data = bytes(2_000_000, 77);
  conn!.end(data);
  await clock.run(() => sink.ended);
  t.equal(sink.digest(), sha256(data), 'echoed intact');
  let rtt = -1;
  h.ping(5).then((r) => (rtt = r));
  await clock.run(() => rtt >= 0);
  t.equal(rtt, 0);
});

t.test('Nagle coalesces small writes while data is in flight; setNoDelay sends at once', async (t) => {
  const run = async (noDelay: boolean): Promise<{ segs: number; bytes: number }> => {
    const { net, a, b, clock } = pair({ link: { delayMs: 10 }, config: { pmtuProbing: false } });
    t.teardown(() => net.closeAll());
    let server: Connection | undefined;
    b.listen(1).on('connection', (c: Connection) => (server = c));
    const c = await dial(net, a, 2, 1);
    c.setNoDelay(noDelay);
    await clock.run(() => !!server);
    const sink = new Sink(server!);
    for (let i = 0; i < 100; i++) {
      c.write(Buffer.from('0123456789'));
      await clock.advance(1);
    }
    c.end();
    await clock.run(() => sink.ended);
    return { segs: c.info().segs_sent, bytes: sink.bytes };
  };
  const nagle = await run(false);
  const nodelay = await run(true);
  t.equal(nagle.bytes, 1000);
  t.equal(nodelay.bytes, 1000);
  t.ok(nodelay.segs >= 100, `noDelay: one segment per write (${nodelay.segs})`);
  t.ok(nagle.segs <= 20, `Nagle: writes coalesced while unacknowledged (${nagle.segs} segments)`);
});

t.test('delayed ACKs: a bulk receiver sends far fewer ACKs than it gets segments', async (t) => {
  const { net, a, b, clock } = pair({ link: { delayMs: 5, bandwidth: 5000 }, config: { pmtuProbing: false } });
  t.teardown(() => net.closeAll());
  let server: Connection | undefined;
  b.listen(1).on('connection', (c: Connection) => (server = c));
  const c = await dial(net, a, 2, 1);
  await clock.run(() => !!server);
  const sink = new Sink(server!);
  c.end(bytes(2_000_000, 3));
  await clock.run(() => sink.ended);
  const data = c.info().segs_sent;
  const acks = net.linkStats(2, 1).sent;
  t.ok(acks <= data * 0.55, `${acks} ACK packets for ${data} data segments (at most one per two)`);
});
