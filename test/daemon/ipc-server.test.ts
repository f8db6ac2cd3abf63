// The IPC server against a real daemon pair: v1 commands byte-exact, no head-of-line blocking, and
// fuzzed input (garbage, truncated/oversized frames, bad msgpack, unknown ops) never hurts the daemon.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { Packr } from 'msgpackr';
import { Addr } from '../../transport/address.js';
import { dataFrameHeader, encodeIpcMessage, IpcFrameDecoder, request, type IpcMessage } from '../../daemon/ipc/protocol.js';
import { frame, RawIpc, startDaemon, startRegistry, trustPair, until } from './daemon-helpers.js';

t.test('ipc server', async (t) => {
  const reg = await startRegistry(t);
  const a = await startDaemon(t, reg.port, { extra: ['--public'] });
  const b = await startDaemon(t, reg.port, { extra: ['--public'] });
  const ia = await RawIpc.connect(t, a.config.socket);
  const ib = await RawIpc.connect(t, b.config.socket);
  await trustPair(ia, ib, a.nodeId, b.nodeId);

  await t.test('v1 commands byte-exact', async (t) => {
    const v = await RawIpc.connect(t, a.config.socket);
    const raw = rawReader(v);
    // Bind 5000 → BindOK 5000
    v.raw(Buffer.from([0, 0, 0, 3, 0x01, 0x13, 0x88]));
    t.same(await raw.next(), Buffer.from([0, 0, 0, 3, 0x02, 0x13, 0x88]), 'BindOK');
    // Bind again → Error code 1 "port 5000 already bound"
    v.raw(Buffer.from([0, 0, 0, 3, 0x01, 0x13, 0x88]));
    const msg = Buffer.from('port 5000 already bound');
    t.same(await raw.next(), Buffer.concat([Buffer.from([0, 0, 0, 3 + msg.length, 0x0a, 0, 1]), msg]), 'Error for a bound port');
    // Unknown command 0x7f
    v.raw(Buffer.from([0, 0, 0, 1, 0x7f]));
    const unk = Buffer.from('unknown command: 0x7f');
    t.same(await raw.next(), Buffer.concat([Buffer.from([0, 0, 0, 3 + unk.length, 0x0a, 0, 1]), unk]), 'Error for an unknown command');
    // Info → InfoOK JSON with the v1 keys
    v.raw(Buffer.from([0, 0, 0, 1, 0x0d]));
    const info = await raw.next();
    t.equal(info[4], 0x0e);
    const j = JSON.parse(info.subarray(5).toString()) as Record<string, unknown>;
    for (const k of ['node_id', 'address', 'hostname', 'uptime_secs', 'connections', 'ports', 'peers', 'encrypted_peers', 'authenticated_peers', 'encrypt', 'identity', 'public_key', 'owner', 'bytes_sent', 'bytes_recv', 'pkts_sent', 'pkts_recv', 'peer_list', 'conn_list']) {
      t.ok(k in j, `InfoOK has ${k}`);
    }
    t.equal(j.node_id, a.nodeId);
    // Dial B:7 → DialOK conn(4); Send → Recv echo; Close → CloseOK
    const addr = new Addr(0, b.nodeId).toBytes();
    v.raw(frame(Buffer.concat([Buffer.from([0x03]), addr, Buffer.from([0x00, 0x07])])));
    const dialOk = await raw.next();
    t.equal(dialOk.readUInt32BE(0), 5);
    t.equal(dialOk[4], 0x04, 'DialOK');
    const conn = dialOk.subarray(5, 9);
    v.raw(frame(Buffer.concat([Buffer.from([0x06]), conn, Buffer.from('v1 echo')])));
    const recv = await raw.next();
    t.same(recv, frame(Buffer.concat([Buffer.from([0x07]), conn, Buffer.from('v1 echo')])), 'Recv carries the echo');
    v.raw(frame(Buffer.concat([Buffer.from([0x08]), conn])));
    t.same(await raw.next(), frame(Buffer.concat([Buffer.from([0x09]), conn])), 'CloseOK');
    // Accept on a v1-bound port: local port(2) ‖ conn(4) ‖ remote addr(6) ‖ remote port(2)
    const d = await ib.ok('dial', { addr: a.address, port: 5000 });
    const acc = await raw.next();
    t.equal(acc[4], 0x05, 'Accept ' + acc.toString('hex'));
    t.equal(acc.length, 4 + 1 + 14);
    t.equal(acc.readUInt16BE(5), 5000, 'local port first');
    t.same(acc.subarray(11, 17), new Addr(0, b.nodeId).toBytes(), 'remote address');
    t.equal(acc.readUInt16BE(17), d.local_port, 'remote port');
    // Handshake 0x0F sub 0x05 (trusted list) → HandshakeOK JSON
    v.raw(Buffer.from([0, 0, 0, 2, 0x0f, 0x05]));
    const hs = await raw.next();
    t.equal(hs[4], 0x10);
    const trusted = (JSON.parse(hs.subarray(5).toString()) as { trusted: Array<{ node_id: number }> }).trusted;
    t.same(trusted.map((x) => x.node_id), [b.nodeId]);
  });

  await t.test('registry passthroughs and ping', async (t) => {
    const c = await RawIpc.connect(t, b.config.socket);
    const sh = await c.ok('set_hostname', { hostname: 'bravo-node' });
    t.equal(sh.hostname, 'bravo-node');
    t.notOk('type' in sh, 'extension results carry no registry message type');
    const r = await ia.ok('resolve', { addr: 'bravo-node' });
    t.equal(r.node_id, b.nodeId, 'hostname resolves to the node');
    const p = await ia.ok('ping', { addr: 'bravo-node' });
    t.ok(typeof p.rtt_ms === 'number' && (p.rtt_ms as number) >= 0, 'ping through the tunnel');
    // v1 SetHostname (0x13) → SetHostnameOK (0x14) with the registry's JSON
    const v = await RawIpc.connect(t, b.config.socket);
    const raw = rawReader(v);
    v.raw(frame(Buffer.concat([Buffer.from([0x13]), Buffer.from('bravo2')])));
    const ok = await raw.next();
    t.equal(ok[4], 0x14);
    t.match(JSON.parse(ok.subarray(5).toString()), { type: 'set_hostname_ok', hostname: 'bravo2' });
    const bad = await c.call('set_hostname', { hostname: 'Not Valid!' });
    t.equal(bad.ok, false, 'registry refusal surfaces as an error response');
  });

  await t.test('no head-of-line blocking', async (t) => {
    const c = await RawIpc.connect(t, a.config.socket);
    const order: string[] = [];
    // A dial to an unbound-then-silent target: node 999999 is unknown, so use an untrusted but real node:
    const slow = c.call('dial', { addr: b.address, port: 9, timeout_ms: 1 }).then(() => order.push('dial'));
    const third = await startDaemon(t, reg.port, { extra: ['--public'] });
    const blocked = c.call('dial', { addr: third.address, port: 7, timeout_ms: 3000 }).then((r) => (order.push('blocked-dial'), r));
    const info = await c.ok('info', {});
    order.push('info');
    t.equal(info.node_id, a.nodeId);
    const r = await blocked;
    await slow;
    t.equal(r.code, 'timeout', 'the untrusted dial timed out');
    t.ok(order.indexOf('info') < order.indexOf('blocked-dial'), 'info answered while a dial was blocked');
    // A blocked v1 Dial on the same client does not delay extension requests either.
    c.raw(frame(Buffer.concat([Buffer.from([0x03]), new Addr(0, third.nodeId).toBytes(), Buffer.from([0, 7])])));
    const info2 = await c.ok('info', {}, 2000);
    t.equal(info2.node_id, a.nodeId, 'extension request answered during a blocked v1 dial');
  });

  await t.test('data frames (0x23): both ways without msgpack, acknowledged, failures typed', async (t) => {
    const c = await RawIpc.connect(t, a.config.socket);
    t.equal((await c.ok('hello', { version: 1, data_frames: true, send_window: 256 * 1024 })).data_frames, true, 'daemon agrees');
    const conn = (await c.ok('dial', { addr: b.address, port: 7, recv_credit: 1 << 20 })).conn as number;
    const payload = randomBytes(300_000);
    c.raw(Buffer.concat([dataFrameHeader(conn, 256 * 1024), payload.subarray(0, 256 * 1024)]));
    t.equal((await c.event('sent', (e) => e.conn === conn)).bytes, 256 * 1024, 'first frame acknowledged');
    c.send({ type: 'data', connId: conn, data: payload.subarray(256 * 1024) });
    t.equal((await c.event('sent', (e) => e.conn === conn)).bytes, payload.length - 256 * 1024, 'second frame acknowledged');
    const echoed: Buffer[] = [];
    for (let got = 0; got < payload.length; ) {
      const m = (await c.next((x) => x.type === 'data' && x.connId === conn)) as Extract<IpcMessage, { type: 'data' }>;
      echoed.push(Buffer.from(m.data));
      got += m.data.length;
    }
    t.ok(Buffer.concat(echoed).equals(payload), 'the echo comes back as Data frames, byte-exact');
    t.equal(c.messages.filter((m) => m.type === 'event' && m.body.event === 'data').length, 0, 'no msgpack data events once negotiated');

    c.send({ type: 'data', connId: 999_999, data: Buffer.from('x') });
    t.match(await c.event('error', (e) => e.op === 'data'), { code: 'not_found', conn: 999_999 }, 'unknown connection: typed error event, not silence');

    // A peer that never reads: once a frame stays unacknowledged, one more exceeds the 256 KiB window.
    const sink = await RawIpc.connect(t, b.config.socket);
    await sink.ok('listen', { port: 4100, recv_credit: 0 });
    const stuck = (await c.ok('dial', { addr: b.address, port: 4100 })).conn as number;
    const block = Buffer.alloc(256 * 1024, 1);
    for (let i = 0; i < 400; i++) {
      c.raw(Buffer.concat([dataFrameHeader(stuck, block.length), block]));
      const acked = await c.event('sent', (e) => e.conn === stuck, 1000).then(
        () => true,
        () => false,
      );
      if (!acked) break;
    }
    c.raw(Buffer.concat([dataFrameHeader(stuck, 1), Buffer.from([2])]));
    t.match(await c.event('error', (e) => e.conn === stuck), { op: 'data', code: 'send_window_exceeded' }, 'beyond the window: typed error');
    t.equal((await c.call('info', {})).ok, true, 'client still served');
    c.send(request(0, 'close', { conn: stuck, abort: true }));
  });

  await t.test('fuzz: bad input never crashes the daemon', async (t) => {
    const packr = new Packr({ useRecords: false });
    // Bad msgpack in a request with a readable id → typed error response.
    const c = await RawIpc.connect(t, a.config.socket);
    c.raw(frame(Buffer.concat([Buffer.from([0x20, 0, 0, 0, 7]), Buffer.from([0xc1, 0xff, 0x00])])));
    const bad = await c.next((m) => m.type === 'response' && m.id === 7);
    t.match((bad as Extract<IpcMessage, { type: 'response' }>).body, { ok: false, code: 'bad_request' });
    // Unknown op → unknown_op; wrong argument types → bad_request; the client stays usable.
    c.raw(frame(Buffer.concat([Buffer.from([0x20, 0, 0, 0, 8]), packr.pack({ op: 'no_such_op' })])));
    t.match((await c.call('info', {})).ok, true);
    const unk = await c.next((m) => m.type === 'response' && m.id === 8);
    t.match((unk as Extract<IpcMessage, { type: 'response' }>).body, { ok: false, code: 'unknown_op' });
    const badArgs = await c.call('dial', { addr: 42 as unknown as string, port: 7 });
    t.match(badArgs, { ok: false, code: 'bad_request' });
    const badPort = await c.call('listen', { port: 70000 });
    t.match(badPort, { ok: false, code: 'bad_request' });
    const noConn = await c.call('send', { conn: 123456, data: Buffer.from('x') });
    t.match(noConn, { ok: false, code: 'not_found' });
    const badCredit = await c.call('credit', { conn: 123456, bytes: -5 });
    t.equal(badCredit.ok, false);
    t.equal((await c.call('info', {})).ok, true, 'client survives bad requests');

    // Oversized frame → that client is dropped, others unaffected.
    const big = await RawIpc.connect(t, a.config.socket);
    big.raw(Buffer.from([0x7f, 0xff, 0xff, 0xff, 0x20]));
    await big.closedP;
    t.ok(big.closed, 'oversized frame: client dropped');
    // Empty frame → dropped.
    const empty = await RawIpc.connect(t, a.config.socket);
    empty.raw(Buffer.from([0, 0, 0, 0]));
    await empty.closedP;
    t.ok(empty.closed, 'empty frame: client dropped');
    // Truncated frame then disconnect.
    const trunc = await RawIpc.connect(t, a.config.socket);
    trunc.raw(Buffer.from([0, 0, 0, 50, 0x0d, 1, 2]));
    trunc.close();

    // Random frames: random command bytes and payloads, many clients.
    for (let round = 0; round < 20; round++) {
      const f = await RawIpc.connect(t, a.config.socket);
      const parts: Buffer[] = [];
      for (let i = 0; i < 50; i++) {
        const len = 1 + Math.floor(Math.random() * 40);
        const body = randomBytes(len);
        // Bias towards real command bytes so the decoders get exercised, minus Close/Dial/Send that act.
        const cmds = [0x01, 0x02, 0x04, 0x05, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x19, 0x1b, 0x20, 0x21, 0x22, 0x33];
        body[0] = cmds[Math.floor(Math.random() * cmds.length)]!;
        if (body[0] === 0x1b) body[0] = 0x19; // never change the webhook
        if (body[0] === 0x0f && body.length > 1) body[1] = 0x04 + (body[1]! % 2); // handshake: only list sub-commands
        parts.push(frame(body));
      }
      // And raw garbage afterwards (may break framing: the client is then dropped).
      if (round % 2 === 0) parts.push(randomBytes(64));
      f.raw(Buffer.concat(parts));
      f.close();
    }
    // Random msgpack maps with real op names and junk arguments.
    const ops = ['hello', 'dial', 'listen', 'unlisten', 'send', 'credit', 'end', 'close', 'datagram_bind', 'datagram_unbind', 'datagram_send', 'peers', 'disconnect', 'handshake_pending', 'network_members', 'stats', 'resolve'];
    const junk = (): unknown => [null, true, -1, 1.5, 2 ** 40, 'x'.repeat(500), Buffer.alloc(3), [1, 2], { a: 1 }][Math.floor(Math.random() * 9)];
    const g = await RawIpc.connect(t, a.config.socket);
    for (let i = 0; i < 200; i++) {
      const op = ops[i % ops.length]!;
      const body: Record<string, unknown> = { op };
      for (const k of ['addr', 'port', 'conn', 'data', 'bytes', 'version', 'id', 'network_id', 'timeout_ms']) if (Math.random() < 0.5) body[k] = junk();
      if (op === 'dial' || op === 'datagram_send' || op === 'resolve') body.timeout_ms = 1;
      g.raw(frame(Buffer.concat([Buffer.from([0x20, 0, 1, (i >> 8) & 0xff, i & 0xff]), packr.pack(body)])));
    }
    const gi = await g.call('info', {}, 15_000).catch((e: Error) => ({ ok: false, message: e.message + ' closed=' + g.closed }));
    t.equal(gi.ok, true, 'client still answered after 200 junk requests ' + JSON.stringify(gi.message));

    // A client's ports and connections go away with it.
    const owner = await RawIpc.connect(t, a.config.socket);
    await owner.ok('listen', { port: 7100 });
    await owner.ok('datagram_bind', { port: 7100 });
    const held = await owner.ok('dial', { addr: b.address, port: 7 });
    owner.close();
    const next = await RawIpc.connect(t, a.config.socket);
    await until(async () => (await next.call('listen', { port: 7100 })).ok, 5000, 'port 7100 freed');
    t.equal((await next.call('datagram_bind', { port: 7100 })).ok, true, 'datagram port freed');
    await until(() => !a.host.connections().some((c) => c.id === held.conn && c.state === 'ESTABLISHED'), 5000, 'connection closed');
    t.equal((await next.call('listen', { port: 7 })).code, 'port_in_use', 'service ports cannot be taken');

    // The daemon is alive and serving.
    const fresh = await RawIpc.connect(t, a.config.socket);
    const info = await fresh.ok('info', {});
    t.equal(info.node_id, a.nodeId, 'daemon alive after the fuzzing');
    const e = await fresh.ok('dial', { addr: b.address, port: 7 });
    await fresh.ok('send', { conn: e.conn as number, data: Buffer.from('still here') });
    t.equal((await fresh.readBytes(e.conn as number, 10)).toString(), 'still here', 'streams still work');
    await until(() => a.ipc.clientCount <= 6, 5000, 'fuzz clients cleaned up');
  });
});

/** Read whole raw frames (length prefix included) from a RawIpc's socket, bypassing its decoder. */
function rawReader(c: RawIpc): { next(): Promise<Buffer> } {
  const frames: Buffer[] = [];
  const waiters: Array<(b: Buffer) => void> = [];
  const dec = new IpcFrameDecoder();
  c.socket.removeAllListeners('data');
  c.socket.on('data', (chunk: Buffer) => {
    for (const body of dec.push(chunk)) {
      const f = frame(body);
      const w = waiters.shift();
      if (w) w(f);
      else frames.push(f);
    }
  });
  return {
    next: () =>
      frames.length > 0
        ? Promise.resolve(frames.shift()!)
        : new Promise<Buffer>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('no frame')), 10_000);
            waiters.push((b) => (clearTimeout(timer), resolve(b)));
          }),
  };
}

void encodeIpcMessage;
