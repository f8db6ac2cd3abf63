import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Addr } from '../../transport/address.js';
import {
  IPC_MAX_MESSAGE,
  IpcError,
  IpcFrameDecoder,
  arg,
  dataFrameHeader,
  decodeIpcMessage,
  encodeIpcBody,
  encodeIpcMessage,
  errorResponse,
  event,
  okResponse,
  request,
  type IpcMessage,
} from '../../daemon/ipc/protocol.js';

const A = Addr.parse('1:0001.00A3.F291'); // 0001 00a3f291
const B = Addr.parse('0:0000.0000.002A'); // 0000 0000002a

/** Wire bytes for a message body given as hex: 4-byte BE length ‖ body. */
function framed(bodyHex: string): string {
  const body = Buffer.from(bodyHex.replace(/\s+/g, ''), 'hex');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]).toString('hex');
}
const hex = (s: string) => Buffer.from(s, 'utf8').toString('hex');

// Known-answer vectors built by hand from the layout table in wire reference §1.13.
const vectors: Array<[string, IpcMessage, string]> = [
  ['0x01 Bind port(2)', { type: 'bind', port: 1001 }, '01 03e9'],
  ['0x02 BindOK port(2)', { type: 'bind_ok', port: 65535 }, '02 ffff'],
  ['0x03 Dial addr(6) port(2)', { type: 'dial', addr: A, port: 7 }, '03 000100a3f291 0007'],
  ['0x04 DialOK conn_id(4)', { type: 'dial_ok', connId: 0xdeadbeef }, '04 deadbeef'],
  [
    '0x05 Accept local port(2) conn_id(4) remote addr(6) remote port(2)',
    { type: 'accept', localPort: 1000, connId: 5, remoteAddr: B, remotePort: 49152 },
    '05 03e8 00000005 00000000002a c000',
  ],
  ['0x06 Send conn_id(4) data', { type: 'send', connId: 2, data: Buffer.from('hi') }, '06 00000002 6869'],
  ['0x06 Send empty data', { type: 'send', connId: 2, data: Buffer.alloc(0) }, '06 00000002'],
  ['0x07 Recv conn_id(4) data', { type: 'recv', connId: 3, data: Buffer.from([0, 255]) }, '07 00000003 00ff'],
  ['0x08 Close conn_id(4)', { type: 'close', connId: 9 }, '08 00000009'],
  ['0x09 CloseOK conn_id(4)', { type: 'close_ok', connId: 9 }, '09 00000009'],
  ['0x0A Error code(2) UTF-8', { type: 'error', code: 1, message: 'port 80 already bound' }, '0a 0001' + hex('port 80 already bound')],
  ['0x0B SendTo addr(6) port(2) data', { type: 'send_to', addr: A, port: 1234, data: Buffer.from('x') }, '0b 000100a3f291 04d2 78'],
  [
    '0x0C RecvFrom src addr(6) src port(2) dst port(2) data',
    { type: 'recv_from', srcAddr: B, srcPort: 49153, dstPort: 1234, data: Buffer.from('yz') },
    '0c 00000000002a c001 04d2 797a',
  ],
  ['0x0D Info', { type: 'info' }, '0d'],
  [
    '0x0E InfoOK JSON',
    { type: 'info_ok', info: { node_id: 42, address: '0:0000.0000.002A', peers: 1 } },
    '0e' + hex('{"node_id":42,"address":"0:0000.0000.002A","peers":1}'),
  ],
  ['0x0F Handshake 0x01 send', { type: 'handshake', command: { sub: 'send', nodeId: 42, justification: 'pls' } }, '0f 01 0000002a' + hex('pls')],
  ['0x0F Handshake 0x02 approve', { type: 'handshake', command: { sub: 'approve', nodeId: 42 } }, '0f 02 0000002a'],
  ['0x0F Handshake 0x03 reject', { type: 'handshake', command: { sub: 'reject', nodeId: 42, reason: 'no' } }, '0f 03 0000002a 6e6f'],
  ['0x0F Handshake 0x04 pending', { type: 'handshake', command: { sub: 'pending' } }, '0f 04'],
  ['0x0F Handshake 0x05 trusted', { type: 'handshake', command: { sub: 'trusted' } }, '0f 05'],
  ['0x0F Handshake 0x06 revoke', { type: 'handshake', command: { sub: 'revoke', nodeId: 0xffffffff } }, '0f 06 ffffffff'],
  ['0x10 HandshakeOK status', { type: 'handshake_ok', result: { status: 'sent', node_id: 42 } }, '10' + hex('{"status":"sent","node_id":42}')],
  [
    '0x10 HandshakeOK pending',
    { type: 'handshake_ok', result: { pending: [{ node_id: 7, public_key: 'k', justification: 'j', received_at: 1700000000 }] } },
    '10' + hex('{"pending":[{"node_id":7,"public_key":"k","justification":"j","received_at":1700000000}]}'),
  ],
  [
    '0x10 HandshakeOK trusted',
    { type: 'handshake_ok', result: { trusted: [{ node_id: 7, public_key: 'k', approved_at: 1700000000, mutual: true, network: 0 }] } },
    '10' + hex('{"trusted":[{"node_id":7,"public_key":"k","approved_at":1700000000,"mutual":true,"network":0}]}'),
  ],
  ['0x11 ResolveHostname', { type: 'resolve_hostname', hostname: 'alpha' }, '11' + hex('alpha')],
  ['0x12 ResolveHostnameOK', { type: 'resolve_hostname_ok', result: { type: 'resolve_hostname_ok', node_id: 3 } }, '12' + hex('{"type":"resolve_hostname_ok","node_id":3}')],
  ['0x13 SetHostname', { type: 'set_hostname', hostname: '' }, '13'],
  ['0x14 SetHostnameOK', { type: 'set_hostname_ok', result: { hostname: 'a' } }, '14' + hex('{"hostname":"a"}')],
  ['0x15 SetVisibility public', { type: 'set_visibility', public: true }, '15 01'],
  ['0x15 SetVisibility private', { type: 'set_visibility', public: false }, '15 00'],
  ['0x16 SetVisibilityOK', { type: 'set_visibility_ok', result: { visibility: 'public' } }, '16' + hex('{"visibility":"public"}')],
  ['0x17 Deregister', { type: 'deregister' }, '17'],
  ['0x18 DeregisterOK', { type: 'deregister_ok', result: { type: 'deregister_ok' } }, '18' + hex('{"type":"deregister_ok"}')],
  ['0x19 SetTags', { type: 'set_tags', tags: ['gpu', 'llm'] }, '19' + hex('["gpu","llm"]')],
  ['0x1A SetTagsOK', { type: 'set_tags_ok', result: { tags: ['gpu'] } }, '1a' + hex('{"tags":["gpu"]}')],
  ['0x1B SetWebhook', { type: 'set_webhook', url: 'http://h/x' }, '1b' + hex('http://h/x')],
  ['0x1C SetWebhookOK', { type: 'set_webhook_ok', result: { webhook: 'http://h/x' } }, '1c' + hex('{"webhook":"http://h/x"}')],
  ['0x1D SetTaskExec', { type: 'set_task_exec', enabled: true }, '1d 01'],
  ['0x1E SetTaskExecOK', { type: 'set_task_exec_ok', result: { task_exec: true } }, '1e' + hex('{"task_exec":true}')],
];

t.test('v1 commands: byte-exact known answers, both directions', async (t) => {
  const seen = new Set<number>();
  for (const [name, msg, bodyHex] of vectors) {
    const wire = framed(bodyHex);
    t.equal(encodeIpcMessage(msg).toString('hex'), wire, `encode ${name}`);
    const body = Buffer.from(wire, 'hex').subarray(4);
    t.same(decodeIpcMessage(body), msg, `decode ${name}`);
    t.equal(encodeIpcBody(msg).toString('hex'), body.toString('hex'), `body-only encode ${name}`);
    seen.add(body[0]!);
  }
  for (let c = 1; c <= 0x1e; c++) t.ok(seen.has(c), `vector exists for command 0x${c.toString(16)}`);
});

t.test('v1 decode rejects wrong lengths and bad contents with typed errors', async (t) => {
  const bad: Array<[string, string, string]> = [
    ['Bind short', '01 03', 'bad_length'],
    ['Bind long', '01 030000', 'bad_length'],
    ['Dial short', '03 000100a3f291 00', 'bad_length'],
    ['Accept v1-SPEC layout without local port', '05 00000005 00000000002a c000', 'bad_length'],
    ['Send without conn id', '06 0000', 'bad_length'],
    ['RecvFrom SPEC layout without dst port (too short)', '0c 00000000002a c0', 'bad_length'],
    ['Info with payload', '0d 00', 'bad_length'],
    ['Error bad UTF-8', '0a 0001 ff', 'bad_utf8'],
    ['InfoOK not JSON', '0e' + hex('{nope'), 'bad_json'],
    ['InfoOK array', '0e' + hex('[1]'), 'bad_json'],
    ['InfoOK missing node_id', '0e' + hex('{"address":"x"}'), 'bad_json'],
    ['Handshake no sub', '0f', 'bad_length'],
    ['Handshake unknown sub', '0f 09', 'unknown_command'],
    ['Handshake approve short', '0f 02 0000', 'bad_length'],
    ['HandshakeOK unknown status', '10' + hex('{"status":"maybe","node_id":1}'), 'bad_json'],
    ['HandshakeOK nothing', '10' + hex('{}'), 'bad_json'],
    ['SetTags not strings', '19' + hex('[1,2]'), 'bad_json'],
    ['SetVisibility empty', '15', 'bad_length'],
    ['unknown command', '1f', 'unknown_command'],
    ['unknown command 0xff', 'ff 00', 'unknown_command'],
    ['Request without map', '20 00000001', 'bad_length'],
    ['Request not msgpack', '20 00000001 c1', 'bad_envelope'],
    ['Request array', '20 00000001 90', 'bad_envelope'],
    ['Request trailing bytes', '20 00000001 80 00', 'bad_msgpack'],
    ['Request without op', '20 00000001 80', 'bad_envelope'],
    ['Request truncated map', '20 00000001 81a26f70', 'bad_msgpack'],
    ['Response without ok', '21 00000001 80', 'bad_envelope'],
    ['Event without name', '22 80', 'bad_envelope'],
  ];
  for (const [name, h, code] of bad) {
    t.throws(() => decodeIpcMessage(Buffer.from(h.replace(/\s+/g, ''), 'hex')), { code, constructor: IpcError }, name);
  }
  t.throws(() => decodeIpcMessage(Buffer.alloc(0)), { code: 'empty_frame' });
  t.throws(() => decodeIpcMessage(Buffer.alloc(IPC_MAX_MESSAGE + 1, 0x0d)), { code: 'frame_too_large' });
});

t.test('encode rejects out-of-range values and oversize messages', async (t) => {
  t.throws(() => encodeIpcMessage({ type: 'bind', port: 70000 }), { code: 'bad_value' });
  t.throws(() => encodeIpcMessage({ type: 'dial_ok', connId: -1 }), { code: 'bad_value' });
  t.throws(() => encodeIpcMessage({ type: 'send', connId: 1, data: Buffer.alloc(IPC_MAX_MESSAGE) }), { code: 'message_too_large' });
  t.ok(encodeIpcMessage({ type: 'send', connId: 1, data: Buffer.alloc(IPC_MAX_MESSAGE - 5) }), 'exactly 1 MiB message is fine');
  t.throws(() => encodeIpcMessage({ type: 'request', id: 1, body: { op: '' } }), { code: 'bad_envelope' });
});

t.test('extension envelopes round-trip (request, ok/error response, event)', async (t) => {
  const data = randomBytes(1000);
  const msgs: IpcMessage[] = [
    request(1, 'dial', { addr: '0:0000.0000.002A', port: 7, timeout_ms: 5000 }),
    request(0xffffffff, 'send', { conn: 3, data }),
    request(0, 'credit', { conn: 3, bytes: 65536 }),
    request(2, 'info', {}),
    okResponse(1, { conn: 9, local_port: 49152, remote_addr: '0:0000.0000.002A', remote_port: 7 }),
    okResponse(2),
    errorResponse(3, 'timeout', 'dial timed out after 30 s', 'is the peer online? try `pilotctl ping`'),
    errorResponse(4, 'refused', 'connection refused'),
    event('data', { conn: 3, data }),
    event('accept', { port: 1000, conn: 4, remote_addr: '1:0001.00A3.F291', remote_port: 49153 }),
    event('closed', { conn: 4, code: 'rst' }),
    { type: 'request', id: 5, body: { op: 'network_join', network: 7, nested: { list: [1, 'a', null, true] } } },
  ];
  for (const m of msgs) {
    const wire = encodeIpcMessage(m);
    const dec = new IpcFrameDecoder();
    const frames = dec.push(wire);
    t.equal(frames.length, 1);
    const back = decodeIpcMessage(frames[0]!);
    t.same(back, m, `${m.type} round trip`);
  }
  // Command byte and request id position are fixed by SPEC §8.
  const wire = encodeIpcMessage(request(0x01020304, 'info', {}));
  t.equal(wire[4], 0x20);
  t.equal(wire.readUInt32BE(5), 0x01020304);
  t.equal(encodeIpcMessage(okResponse(7))[4], 0x21);
  t.equal(encodeIpcMessage(event('eof', { conn: 1 }))[4], 0x22);
  const back = decodeIpcMessage(encodeIpcBody(request(1, 'send', { conn: 1, data: Buffer.from('abc') })));
  t.ok(back.type === 'request' && Buffer.isBuffer(back.body.data), 'binary fields decode as Buffer');
  // msgpackr does not let "__proto__" keys reach the prototype.
  const evil = Buffer.concat([Buffer.from('2000000001', 'hex'), Buffer.from('82a26f70a178a95f5f70726f746f5f5f81a16101', 'hex')]);
  const m = decodeIpcMessage(evil);
  t.equal(({} as Record<string, unknown>).a, undefined);
  t.equal(Object.getPrototypeOf(m.type === 'request' ? m.body : null), Object.prototype);
});

t.test('frame decoder: arbitrary chunking yields the same frames', async (t) => {
  const msgs: IpcMessage[] = [];
  for (let i = 0; i < 200; i++) {
    msgs.push(i % 3 === 0 ? { type: 'recv', connId: i, data: randomBytes(i * 37) } : i % 3 === 1 ? request(i, 'info', {}) : { type: 'close', connId: i });
  }
  msgs.push({ type: 'send', connId: 1, data: randomBytes(IPC_MAX_MESSAGE - 5) });
  const stream = Buffer.concat(msgs.map(encodeIpcMessage));
  for (const maxChunk of [1, 3, 4096, 1 << 20]) {
    const dec = new IpcFrameDecoder();
    const out: IpcMessage[] = [];
    let off = 0;
    let seed = maxChunk;
    while (off < stream.length) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const n = Math.min(stream.length - off, 1 + (seed % maxChunk));
      for (const f of dec.push(stream.subarray(off, off + n))) out.push(decodeIpcMessage(f));
      off += n;
      if (maxChunk === 1 && off > 20000) {
        // byte-at-a-time over the whole 1 MiB would be slow; finish the rest in one go
        for (const f of dec.push(stream.subarray(off))) out.push(decodeIpcMessage(f));
        off = stream.length;
      }
    }
    t.equal(out.length, msgs.length, `chunk ≤ ${maxChunk}: all frames`);
    t.ok(Buffer.concat(out.map(encodeIpcMessage)).equals(stream), `chunk ≤ ${maxChunk}: identical re-encoding`);
    t.same(out.slice(0, 20), msgs.slice(0, 20), `chunk ≤ ${maxChunk}: first messages deep-equal`);
    t.equal(dec.buffered, 0);
  }
});

t.test('data frames (0x23): header layout, and split as slices of the input in order with other frames', async (t) => {
  const payload = randomBytes(200_000);
  const h = dataFrameHeader(0x01020304, payload.length);
  t.same(h, Buffer.concat([Buffer.from([0, 3, 0x0d, 0x45, 0x23]), Buffer.from([1, 2, 3, 4])]), 'length ‖ 0x23 ‖ conn');
  t.same(encodeIpcMessage({ type: 'data', connId: 0x01020304, data: payload }), Buffer.concat([h, payload]), 'the copying encoder writes the same bytes');
  t.same(decodeIpcMessage(encodeIpcBody({ type: 'data', connId: 9, data: Buffer.from('hi') })), { type: 'data', connId: 9, data: Buffer.from('hi') });
  t.throws(() => decodeIpcMessage(Buffer.from([0x23, 0, 0])), { code: 'bad_length' }, 'a Data frame needs its conn');
  t.throws(() => dataFrameHeader(1, 256 * 1024 + 1), { code: 'message_too_large' });

  const stream = Buffer.concat([encodeIpcMessage(event('eof', { conn: 1 })), h, payload, encodeIpcMessage({ type: 'data', connId: 5, data: Buffer.alloc(0) }), encodeIpcMessage(okResponse(3))]);
  for (const chunkSize of [7, 4096, 65536, stream.length]) {
    const dec = new IpcFrameDecoder();
    const chunks: Buffer[] = [];
    for (let off = 0; off < stream.length; off += chunkSize) chunks.push(Buffer.from(stream.subarray(off, off + chunkSize)));
    const out = chunks.flatMap((c) => dec.pushSplittingData(c));
    t.equal(out.length, 4, `chunks of ${chunkSize}: four frames`);
    t.same(decodeIpcMessage(out[0] as Buffer), event('eof', { conn: 1 }), 'the event before the data stays first');
    const d = out[1] as { conn: number; pieces: Buffer[]; length: number };
    t.equal(d.conn, 0x01020304);
    t.equal(d.length, payload.length);
    t.ok(Buffer.concat(d.pieces).equals(payload), 'payload intact');
    t.ok(d.pieces.every((p) => chunks.some((c) => c.buffer === p.buffer)), 'pieces are slices of the received chunks (no copy)');
    t.same(out[2], { conn: 5, pieces: [], length: 0 }, 'an empty Data frame');
    t.same(decodeIpcMessage(out[3] as Buffer), okResponse(3), 'the response after the data stays last');
    t.equal(dec.buffered, 0);
  }
  // push() (no splitting) still returns a Data frame whole, for decodeIpcMessage.
  const whole = new IpcFrameDecoder().push(Buffer.concat([h, payload]));
  t.same(decodeIpcMessage(whole[0]!), { type: 'data', connId: 0x01020304, data: payload });
});

t.test('frame decoder limits: oversize and zero-length frames fail and stay failed', async (t) => {
  const big = Buffer.alloc(4);
  big.writeUInt32BE(IPC_MAX_MESSAGE + 1);
  const dec = new IpcFrameDecoder();
  t.throws(() => dec.push(big), { code: 'frame_too_large' }, 'rejected from the header alone, before buffering 1 MiB');
  t.throws(() => dec.push(encodeIpcMessage({ type: 'info' })), { code: 'frame_too_large' }, 'stays failed');
  const zero = new IpcFrameDecoder();
  t.same(zero.push(encodeIpcMessage({ type: 'info' })).length, 1);
  t.throws(() => zero.push(Buffer.alloc(4)), { code: 'empty_frame' });
  const small = new IpcFrameDecoder(16);
  t.throws(() => small.push(encodeIpcMessage({ type: 'send', connId: 1, data: Buffer.alloc(20) })), { code: 'frame_too_large' });
});

t.test('fuzz: garbage never throws anything but IpcError', async (t) => {
  let decoded = 0;
  let rejected = 0;
  for (let i = 0; i < 20000; i++) {
    const len = 1 + (i % 64);
    const b = randomBytes(len);
    if (i % 2 === 0) b[0] = i % 0x24; // bias towards known commands
    try {
      decodeIpcMessage(b);
      decoded++;
    } catch (err) {
      if (!(err instanceof IpcError)) {
        t.fail(`non-IpcError for ${b.toString('hex')}: ${String(err)}`);
        return;
      }
      rejected++;
    }
  }
  // mutate valid extension messages too: msgpack corruptions must be caught
  const base = encodeIpcBody(request(1, 'dial', { addr: '0:0000.0000.002A', port: 7, timeout_ms: 1000 }));
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(base);
    b[5 + (i % (b.length - 5))] = (i * 31) & 0xff;
    try {
      decodeIpcMessage(b.subarray(0, b.length - (i % 3)));
    } catch (err) {
      if (!(err instanceof IpcError)) {
        t.fail(`non-IpcError for mutated request ${b.toString('hex')}: ${String(err)}`);
        return;
      }
    }
  }
  const dec = new IpcFrameDecoder();
  let failedOk = true;
  for (let i = 0; i < 2000; i++) {
    try {
      for (const f of dec.push(randomBytes(1 + (i % 100)))) {
        try {
          decodeIpcMessage(f);
        } catch (err) {
          if (!(err instanceof IpcError)) failedOk = false;
        }
      }
    } catch (err) {
      if (!(err instanceof IpcError)) failedOk = false;
      break;
    }
  }
  t.ok(failedOk, 'frame decoder + decode on random stream only raise IpcError');
  t.ok(decoded > 0 && rejected > 0, `some garbage decoded (${decoded}) and some rejected (${rejected})`);
});

t.test('argument helpers validate with named errors', async (t) => {
  const m = { conn: 5, port: 70000, s: 'x'.repeat(10), data: Buffer.from('ab'), b: true, a: 'nope' };
  t.equal(arg.int(m, 'conn', 0, 10), 5);
  t.throws(() => arg.int(m, 'port', 0, 65535), { code: 'bad_value', message: /port/ });
  t.equal(arg.int(m, 'missing', 0, 1, 1), 1);
  t.throws(() => arg.string(m, 's', 5), { code: 'bad_value' });
  t.equal(arg.bytes(m, 'data', 10).toString(), 'ab');
  t.throws(() => arg.bytes(m, 's', 10), { code: 'bad_value' });
  t.equal(arg.bool(m, 'b'), true);
  t.throws(() => arg.addr(m, 'a'), { code: 'bad_address' });
  t.equal(arg.addr({ a: '0:0000.0000.002A' }, 'a').node, 42);
});

t.test('flow-control bookkeeping: receive credit and send window', async (t) => {
  const { RecvCredit, SendWindow, IPC_MAX_DATA_CHUNK, IPC_MAX_RECV_CREDIT, IPC_DEFAULT_SEND_WINDOW } = await import('../../daemon/ipc/protocol.js');
  const c = new RecvCredit(100_000);
  t.equal(c.nextChunk(1_000_000), 100_000, 'limited by credit');
  c.consume(100_000);
  t.equal(c.nextChunk(5), 0, 'no credit: daemon stops delivering (and reading that stream)');
  t.throws(() => c.consume(1), { code: 'bad_credit' });
  c.grant(IPC_MAX_DATA_CHUNK * 2);
  t.equal(c.nextChunk(10 * IPC_MAX_DATA_CHUNK), IPC_MAX_DATA_CHUNK, 'limited by the chunk size');
  t.equal(c.nextChunk(10), 10, 'limited by what is buffered');
  t.throws(() => c.grant(0), { code: 'bad_credit' });
  t.throws(() => c.grant(IPC_MAX_RECV_CREDIT), { code: 'bad_credit' }, 'outstanding credit bounded');
  t.throws(() => new RecvCredit(-1), { code: 'bad_credit' });

  const w = new SendWindow();
  t.equal(w.window, IPC_DEFAULT_SEND_WINDOW);
  let sent = 0;
  while (w.canSend(IPC_MAX_DATA_CHUNK)) {
    w.admit(IPC_MAX_DATA_CHUNK);
    sent += IPC_MAX_DATA_CHUNK;
  }
  t.equal(sent, IPC_DEFAULT_SEND_WINDOW, 'window filled exactly');
  t.throws(() => w.admit(1), { code: 'send_window_exceeded' }, 'daemon refuses a client that ignores the window');
  w.release(IPC_MAX_DATA_CHUNK);
  t.ok(w.canSend(IPC_MAX_DATA_CHUNK), 'an answer reopens the window');
  t.throws(() => new SendWindow(10).admit(IPC_MAX_DATA_CHUNK + 1), { code: 'send_window_exceeded' });
  t.ok(new SendWindow(10).canSend(IPC_MAX_DATA_CHUNK), 'an empty window always admits one chunk');
});
