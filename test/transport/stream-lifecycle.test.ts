import t from 'tap';
import type { Connection } from '../../transport/host.js';
import { Flags, Protocol, decodePacket } from '../../transport/packet.js';
import { StreamError } from '../../transport/stream/errors.js';
import { Sink, addr, bytes, dial, pair, sha256 } from '../sim/helpers.js';
import { SimNetwork } from '../sim/link.js';
import { V1Peer } from '../sim/v1-peer.js';

/** Count stream packets per direction with given flags (exact match on the flag nibble). */
function counter(net: SimNetwork) {
  const seen: { from: number; to: number; flags: number; len: number; protocol: number }[] = [];
  net.taps.push((from, to, pkt) => {
    const p = decodePacket(pkt);
    seen.push({ from, to, flags: p.flags, len: p.payload.length, protocol: p.protocol });
  });
  return {
    seen,
    count: (from: number, pred: (x: { flags: number; len: number; protocol: number }) => boolean) => seen.filter((x) => x.from === from && pred(x)).length,
    reset: () => (seen.length = 0),
  };
}

async function expectDialError(p: Promise<Connection>, net: SimNetwork, code: string): Promise<{ err: StreamError | null; at: number }> {
  let err: StreamError | null = null;
  let done = false;
  p.then(
    () => (done = true),
    (e: StreamError) => {
      err = e;
      done = true;
    },
  );
  await net.clock.run(() => done, 200_000);
  t.equal((err as StreamError | null)?.code, code, `dial fails with ${code}`);
  return { err, at: net.clock.now() };
}

t.test('RST on a closed port: dial is refused at once', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5 } });
  t.teardown(() => net.closeAll());
  const t0 = net.clock.now();
  const { at } = await expectDialError(a.connect(addr(2), 4242), net, 'connection_refused');
  t.ok(at - t0 < 100, 'within one round trip');
  t.equal(b.stats().rstNoListener, 1);
  t.equal(a.connections().length, 0, 'no state left behind');
});

t.test('dial timeout: v1 SYN schedule, relay fallback hook, explicit timeout', async (t) => {
  const relayAsked: number[] = [];
  const { net, a } = pair({ link: { delayMs: 5, loss: 1 }, a: { relayFallback: (peer) => (relayAsked.push(peer), false) } });
  t.teardown(() => net.closeAll());
  const c = counter(net);
  const t0 = net.clock.now();
  const { at } = await expectDialError(a.connect(addr(2), 80), net, 'dial_timeout');
  const elapsed = at - t0;
  t.ok(elapsed >= 38_000 && elapsed <= 40_000, `gives up at the 7th SYN timeout (~39 s), took ${elapsed} ms`);
  t.equal(c.count(1, (x) => x.protocol === Protocol.STREAM && x.flags === Flags.SYN), 7, 'one SYN plus six retransmissions');
  t.same(relayAsked, [2], 'relay fallback offered at the 3rd timeout');
  const t1 = net.clock.now();
  const r = await expectDialError(a.connect(addr(2), 80, { timeoutMs: 3000 }), net, 'dial_timeout');
  t.ok(r.at - t1 >= 3000 && r.at - t1 < 3100, 'timeoutMs honoured');
  const ac = new AbortController();
  const p = a.connect(addr(2), 80, { signal: ac.signal });
  net.clock.setTimer(() => ac.abort(), 500);
  await expectDialError(p, net, 'dial_aborted');
  t.equal(a.connections().length, 0);
});

t.test('relay fallback returning true restarts the SYN backoff', async (t) => {
  const { net, a } = pair({ link: { loss: 1 }, a: { relayFallback: () => true } });
  t.teardown(() => net.closeAll());
  const t0 = net.clock.now();
  const { at } = await expectDialError(a.connect(addr(2), 80), net, 'dial_timeout');
  // 1+2+4 s, switch, then 1+2+4+8 s → 22 s (v1: ~29 s with the beacon's 8 s cap path).
  t.ok(at - t0 < 38_000, `shorter schedule after switching to relay (${at - t0} ms)`);
});

t.test('accept queue overflow answers RST; queued connections are usable', async (t) => {
  const { net, a, b } = pair({ config: { synRatePerSource: 1000, synRateGlobal: 1000 } });
  t.teardown(() => net.closeAll());
  const l = b.listen(7000); // nobody accepts: connections queue up to the backlog (64)
  const results: (Connection | string)[] = [];
  for (let i = 0; i < 66; i++) {
    a.connect(addr(2), 7000).then(
      (c) => {
        c.on('error', () => {}); // the unaccepted ones are reset when the listener closes
        results.push(c);
      },
      (e: StreamError) => results.push(e.code),
    );
  }
  await net.clock.run(() => results.length === 66);
  t.equal(results.filter((r) => typeof r !== 'string').length, 64, '64 established');
  t.equal(results.filter((r) => r === 'connection_refused').length, 2, 'the rest refused');
  t.equal(b.stats().acceptQueueFull, 2);
  t.equal(l.pending, 64);
  const first = await l.accept();
  t.ok(first, 'accept() hands out a queued connection');
  const sink = new Sink(first!);
  const client = results.find((r): r is Connection => typeof r !== 'string' && r.localPort === first!.remotePort)!;
  client.end(Buffer.from('hello'));
  await net.clock.run(() => sink.ended);
  t.equal(sink.bytes, 5);
  l.close();
  await net.clock.advance(100);
  t.equal(b.connections().filter((c) => c.state === 'ESTABLISHED').length, 0, 'closing the listener resets the unaccepted ones');
  t.equal(a.connections().filter((c) => c.state === 'ESTABLISHED').length, 0, 'and their clients see the reset');
});

t.test('connection caps per port and in total answer RST', async (t) => {
  const { net, a, b } = pair({ config: { maxConnsPerPort: 3, maxConnsTotal: 5, synRatePerSource: 1000 } });
  t.teardown(() => net.closeAll());
  b.listen(1).on('connection', () => {});
  b.listen(2).on('connection', () => {});
  const codes: string[] = [];
  const go = (port: number) => a.connect(addr(2), port).then(() => codes.push('ok'), (e: StreamError) => codes.push(e.code));
  for (let i = 0; i < 4; i++) go(1);
  await net.clock.run(() => codes.length === 4);
  t.same(codes.sort(), ['connection_refused', 'ok', 'ok', 'ok'], 'per-port cap');
  t.equal(b.stats().connCapPort, 1);
  codes.length = 0;
  for (let i = 0; i < 3; i++) go(2);
  await net.clock.run(() => codes.length === 3);
  t.same(codes.sort(), ['connection_refused', 'ok', 'ok'], 'total cap');
  t.equal(b.stats().connCapTotal, 1);
});

t.test('SYN rate limits drop silently; retransmitted SYNs get through later', async (t) => {
  const { net, a, b } = pair({ config: { synRatePerSource: 10 } });
  t.teardown(() => net.closeAll());
  const c = counter(net);
  b.listen(9).on('connection', () => {});
  let ok = 0;
  for (let i = 0; i < 15; i++) a.connect(addr(2), 9).then(() => ok++, () => {});
  await net.clock.advance(500);
  t.equal(ok, 10, '10 per second per source');
  t.equal(b.stats().synRateLimitedSource, 5);
  t.equal(c.count(2, (x) => (x.flags & Flags.RST) !== 0), 0, 'no RST for rate-limited SYNs');
  await net.clock.run(() => ok === 15, 10_000);
  t.pass('the rest connect after their SYN retransmission');

  const g = pair({ config: { synRateGlobal: 3, synRatePerSource: 100 } });
  t.teardown(() => g.net.closeAll());
  g.b.listen(9).on('connection', () => {});
  let gok = 0;
  for (let i = 0; i < 5; i++) g.a.connect(addr(2), 9).then(() => gok++, () => {});
  await g.net.clock.advance(500);
  t.equal(gok, 3);
  t.equal(g.b.stats().synRateLimited, 2, 'global bucket');
});

t.test('admission refusal is silent: no RST, no SYN-ACK, counted per reason, reported', async (t) => {
  const refusedEvents: string[] = [];
  const { net, a, b } = pair({
    link: { delayMs: 2 },
    b: { admit: (p) => (p.srcNode === 1 && p.dstPort !== 80 ? 'not_trusted' : true) },
  });
  t.teardown(() => net.closeAll());
  b.on('refused', (ev: { reason: string }) => refusedEvents.push(ev.reason));
  const c = counter(net);
  b.listen(1001).on('connection', () => t.fail('no connection may be created'));
  await expectDialError(a.connect(addr(2), 1001, { timeoutMs: 5000 }), net, 'dial_timeout');
  await expectDialError(a.connect(addr(2), 1002, { timeoutMs: 2500 }), net, 'dial_timeout'); // closed port: still silent
  t.equal(c.count(2, (x) => x.protocol === Protocol.STREAM), 0, 'B sent no stream packet at all');
  t.ok(b.stats().refused['not_trusted']! >= 3, `counted (${b.stats().refused['not_trusted']}) including SYN retransmissions`);
  t.equal(b.stats().rstNoListener, 0);
  t.equal(b.connections().length, 0, 'no state created');
  t.ok(refusedEvents.length >= 3 && refusedEvents.every((r) => r === 'not_trusted'));
  // Datagrams are gated too.
  const sock = b.bindDatagram(5000);
  let got = 0;
  sock.on('message', () => got++);
  a.sendDatagram(addr(2), 5000, Buffer.from('x'));
  await net.clock.advance(50);
  t.equal(got, 0, 'refused datagram not delivered');
  // An allowed port works.
  b.listen(80).on('connection', () => {});
  const conn = await dial(net, a, 2, 80);
  t.equal(conn.remotePort, 80);
});

t.test('closePeer resets every connection with that peer', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 3 } });
  t.teardown(() => net.closeAll());
  const serverSide: Connection[] = [];
  b.listen(10).on('connection', (c: Connection) => {
    serverSide.push(c);
    c.on('error', () => {});
  });
  const c1 = await dial(net, a, 2, 10);
  const c2 = await dial(net, a, 2, 10);
  await net.clock.run(() => serverSide.length === 2);
  const errsB: string[] = [];
  const errsA: string[] = [];
  for (const c of serverSide) c.on('error', (e: StreamError) => errsB.push(e.code));
  for (const c of [c1, c2]) c.on('error', (e: StreamError) => errsA.push(e.code));
  c1.write(bytes(100_000));
  b.closePeer(1, 'trust revoked');
  await net.clock.advance(100);
  t.same(errsB, ['peer_closed', 'peer_closed'], 'local apps see peer_closed');
  t.same(errsA.sort(), ['connection_reset', 'connection_reset'], 'the peer got RSTs');
  t.equal(b.connections().length, 0);
  t.equal(a.connections().length, 0);
});

t.test('FIN, half-close both ways, TIME_WAIT always expires', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5, loss: 0.05 }, seed: 3 });
  t.teardown(() => net.closeAll());
  let server: Connection | undefined;
  b.listen(20, { allowHalfOpen: true }).on('connection', (c: Connection) => (server = c));
  const client = await dial(net, a, 2, 20, { allowHalfOpen: true });
  await net.clock.run(() => !!server);
  const atServer = new Sink(server!);
  const atClient = new Sink(client);
  const request = bytes(50_000, 1);
  client.end(request); // half-close: client is done writing, still reading
  await net.clock.run(() => atServer.ended);
  t.equal(atServer.digest(), sha256(request), 'server got the request and EOF');
  t.equal(client.info().state, 'FIN_WAIT', 'client waits for the server');
  const response = bytes(300_000, 2);
  server!.end(response); // the server writes after the client's FIN
  await net.clock.run(() => atClient.ended && atClient.closed && atServer.closed);
  t.equal(atClient.digest(), sha256(response), 'client received the whole response after its own FIN');
  t.ok(['TIME_WAIT'].includes(a.connections()[0]?.state ?? 'gone') || a.connections().length === 0);
  await net.clock.advance(10_500);
  t.equal(a.connections().length, 0, 'TIME_WAIT expired on the client');
  t.equal(b.connections().length, 0, 'and on the server');
});

t.test('no FIN|ACK ping-pong, also against a v1 peer that answers every FIN', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 2 } });
  t.teardown(() => net.closeAll());
  const c = counter(net);
  let server: Connection | undefined;
  b.listen(30).on('connection', (x: Connection) => (server = x));
  const client = await dial(net, a, 2, 30);
  await net.clock.run(() => !!server);
  const s1 = new Sink(server!);
  const s2 = new Sink(client);
  client.end(Buffer.from('bye'));
  server!.end();
  await net.clock.run(() => s1.closed && s2.closed);
  c.reset();
  await net.clock.advance(30_000);
  t.equal(c.seen.filter((x) => x.protocol === Protocol.STREAM).length, 0, 'silence after close');
  t.equal(a.connections().length + b.connections().length, 0);

  // Against the v1 storm behaviour: the emulated Go peer answers every FIN-flagged packet with FIN|ACK.
  const v1 = new V1Peer(net, 3, 40);
  const conn = await dial(net, a, 3, 40);
  conn.on('error', () => {});
  const sink = new Sink(conn);
  conn.end(Buffer.from('hello v1'));
  await net.clock.run(() => sink.ended && v1.peerFin);
  c.reset();
  await net.clock.advance(20_000);
  const finAcksFromUs = c.count(1, (x) => (x.flags & (Flags.FIN | Flags.ACK)) === (Flags.FIN | Flags.ACK));
  t.equal(finAcksFromUs, 0, 'we never answered its FIN|ACK with a FIN|ACK');
  t.ok(v1.finAcksSent <= 2, `the v1 peer sent ${v1.finAcksSent} FIN|ACK in total`);
  t.equal(v1.data.toString(), 'hello v1', 'data arrived before our FIN');
});

t.test('a v1 peer closing with a bare FIN: EOF after all data; truncated data is reported', async (t) => {
  const { net, a } = pair({ link: { delayMs: 2 } });
  t.teardown(() => net.closeAll());
  const c = counter(net);
  const v1 = new V1Peer(net, 3, 0);
  const l = a.listen(50);
  let conn: Connection | undefined;
  l.on('connection', (x: Connection) => (conn = x));
  v1.dial(1, 50);
  await net.clock.run(() => !!conn);
  const sink = new Sink(conn!);
  v1.write(Buffer.from('abc'));
  v1.write(Buffer.from('def'));
  v1.close();
  await net.clock.run(() => sink.ended);
  t.equal(sink.bytes, 6, 'all data, then EOF');
  const replies = c.seen.filter((x) => x.from === 1 && x.protocol === Protocol.STREAM && (x.flags & Flags.FIN) !== 0);
  t.ok(replies.every((x) => x.flags !== (Flags.FIN | Flags.ACK) || true), 'our FIN (if any) comes from our own close');

  // FIN overtakes lost data: the v1 sender never retransmits after FIN → bounded wait, then an error.
  const l2 = a.listen(51);
  let conn2: Connection | undefined;
  l2.on('connection', (x: Connection) => (conn2 = x));
  const v1b = new V1Peer(net, 4, 0);
  v1b.dial(1, 51);
  await net.clock.run(() => !!conn2);
  const sink2 = new Sink(conn2!);
  v1b.write(Buffer.from('first'));
  v1b.sndSeq += 5; // a segment "lost" on the way
  v1b.close();
  await net.clock.run(() => sink2.error !== null || sink2.ended, 10_000);
  t.equal(sink2.error?.code, 'stream_truncated', 'the application learns the stream is incomplete');
  t.equal(sink2.bytes, 5);
});

t.test('keepalive keeps an idle connection up; a dead peer is detected by the idle timeout', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5 } });
  t.teardown(() => net.closeAll());
  const c = counter(net);
  let server: Connection | undefined;
  b.listen(60).on('connection', (x: Connection) => {
    server = x;
    x.on('error', () => {});
  });
  const client = await dial(net, a, 2, 60);
  await net.clock.run(() => !!server);
  const errs: string[] = [];
  client.on('error', (e: StreamError) => errs.push(e.code));
  c.reset();
  await net.clock.advance(200_000);
  const probes = c.count(1, (x) => x.protocol === Protocol.STREAM && x.flags === Flags.ACK && x.len === 1) + c.count(2, (x) => x.protocol === Protocol.STREAM && x.flags === Flags.ACK && x.len === 1);
  t.ok(probes >= 4, `keepalive probes sent while idle (${probes})`);
  t.same(errs, [], 'a healthy idle connection survives 200 s');
  t.equal(client.info().state, 'ESTABLISHED');
  net.setLink(1, 2, { loss: 1 }); // the peer vanishes
  await net.clock.run(() => errs.length > 0, 200_000);
  t.same(errs, ['idle_timeout']);
  t.equal(a.connections().length, 0);
});

t.test('unacknowledged data to a vanished peer ends with max_retransmits and RST', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5 } });
  t.teardown(() => net.closeAll());
  let server: Connection | undefined;
  b.listen(70).on('connection', (x: Connection) => {
    server = x;
    x.on('error', () => {});
  });
  const client = await dial(net, a, 2, 70);
  await net.clock.run(() => !!server);
  const errs: string[] = [];
  client.on('error', (e: StreamError) => errs.push(e.code));
  net.setLink(1, 2, { loss: 1 });
  client.write(bytes(10_000));
  await net.clock.run(() => errs.length > 0, 300_000);
  t.same(errs, ['max_retransmits']);
  t.ok(client.info().rto_timeouts >= 8, `${client.info().rto_timeouts} timeouts with backoff`);
  t.equal(a.connections().length, 0);
});

t.test('destroy() resets the peer; host.close() ends connections quietly', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 2 } });
  t.teardown(() => net.closeAll());
  let server: Connection | undefined;
  b.listen(90).on('connection', (x: Connection) => (server = x));
  const client = await dial(net, a, 2, 90);
  await net.clock.run(() => !!server);
  const serverErr: string[] = [];
  server!.on('error', (e: StreamError) => serverErr.push(e.code));
  client.write(bytes(5000));
  client.destroy();
  await net.clock.run(() => serverErr.length > 0);
  t.same(serverErr, ['connection_reset']);

  const client2 = await dial(net, a, 2, 90);
  const sink = new Sink(client2);
  await a.close();
  await net.clock.advance(10);
  t.equal(sink.error, null, 'no error event on host shutdown');
  t.ok(sink.closed, 'closed');
  await t.rejects(a.connect(addr(2), 90), { code: 'host_closed' });
});

t.test('handshake losses: duplicate SYN gets the SYN-ACK again; a missing final ACK is tolerated', async (t) => {
  const { net, a, b } = pair({ link: { delayMs: 5 } });
  t.teardown(() => net.closeAll());
  let dropSynAck = 1;
  let dropFinalAck = 1;
  net.taps.push((from, _to, pkt) => {
    const p = decodePacket(pkt);
    if (p.protocol !== Protocol.STREAM) return;
    if (from === 2 && p.flags === (Flags.SYN | Flags.ACK) && dropSynAck > 0) return (dropSynAck--, false);
    if (from === 1 && p.flags === Flags.ACK && p.payload.length === 0 && dropFinalAck > 0) return (dropFinalAck--, false);
  });
  const accepted: Connection[] = [];
  b.listen(5).on('connection', (c: Connection) => accepted.push(c));
  const t0 = net.clock.now();
  const client = await dial(net, a, 2, 5);
  t.ok(net.clock.now() - t0 >= 1000, 'established after the SYN retransmission');
  t.equal(accepted.length, 1, 'one connection despite two SYNs');
  t.equal(b.connections().length, 1);
  // The responder is ESTABLISHED without the final ACK and can send first.
  const sink = new Sink(client);
  accepted[0]!.end(Buffer.from('server speaks first'));
  await net.clock.run(() => sink.ended);
  t.equal(sink.bytes, 19);
});
