import t from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { crc32 } from 'node:zlib';
import {
  StunAttr,
  StunClass,
  StunError,
  checkMessageIntegrity,
  decodeStunMessage,
  encodeBindingRequest,
  encodeErrorCode,
  encodeMappedAddress,
  encodeStunMessage,
  encodeXorMappedAddress,
  findAttribute,
  isStunMessage,
  parseBindingResponse,
  stunDiscover,
  type StunTransport,
} from '../../natpunch/index.js';

const vec = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 5769 §2.1–2.3 test vectors (short-term credential password below).
const PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';
const RFC5769_REQUEST = vec(`
  00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
  00 24 00 04 6e 00 01 ff
  80 29 00 08 93 2f f9 b1 51 26 3b 36
  00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
  00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
  80 28 00 04 e5 7a 3b cf`);
const RFC5769_IPV4_RESPONSE = vec(`
  01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 08 00 01 a1 47 e1 12 a6 43
  00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
  80 28 00 04 c0 7d 4c 96`);
const RFC5769_IPV6_RESPONSE = vec(`
  01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
  00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
  80 28 00 04 c8 fb 0b 4c`);

/** A valid FINGERPRINT followed by another attribute (CRC computed with the final length). */
function fingerprintThenMore(): Buffer {
  const b = Buffer.alloc(20 + 8 + 8);
  b.writeUInt16BE(0x0101, 0);
  b.writeUInt16BE(16, 2);
  b.writeUInt32BE(0x2112a442, 4);
  randomBytes(12).copy(b, 8);
  b.writeUInt16BE(StunAttr.FINGERPRINT, 20);
  b.writeUInt16BE(4, 22);
  b.writeUInt32BE((crc32(b.subarray(0, 20)) ^ 0x5354554e) >>> 0, 24);
  b.writeUInt16BE(StunAttr.SOFTWARE, 28);
  b.writeUInt16BE(4, 30);
  return b;
}

const NO_FINGERPRINT = encodeStunMessage(Buffer.alloc(12, 7), {
  cls: StunClass.SUCCESS,
  attributes: [{ type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '192.0.2.1', port: 1 }, Buffer.alloc(12, 7)) }],
});

t.test('RFC 5769 vectors: fingerprints, integrity and mapped addresses', async (t) => {
  const req = decodeStunMessage(RFC5769_REQUEST);
  t.equal(req.cls, StunClass.REQUEST);
  t.equal(req.method, 1);
  t.ok(req.fingerprint, 'request FINGERPRINT verified');
  t.equal(findAttribute(req, StunAttr.USERNAME)?.toString(), 'evtj:h6vY');
  t.equal(findAttribute(req, StunAttr.SOFTWARE)?.toString(), 'STUN test client');
  t.ok(checkMessageIntegrity(RFC5769_REQUEST, Buffer.from(PASSWORD)), 'request MESSAGE-INTEGRITY verified');

  const v4 = decodeStunMessage(RFC5769_IPV4_RESPONSE);
  t.equal(v4.cls, StunClass.SUCCESS);
  t.ok(v4.fingerprint);
  t.ok(checkMessageIntegrity(RFC5769_IPV4_RESPONSE, Buffer.from(PASSWORD)));
  t.same(parseBindingResponse(v4), { address: '192.0.2.1', port: 32853 });
  t.equal(findAttribute(v4, StunAttr.SOFTWARE)?.toString(), 'test vector');

  const v6 = decodeStunMessage(RFC5769_IPV6_RESPONSE);
  t.ok(v6.fingerprint);
  t.ok(checkMessageIntegrity(RFC5769_IPV6_RESPONSE, Buffer.from(PASSWORD)));
  t.same(parseBindingResponse(v6), { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });

  t.notOk(checkMessageIntegrity(RFC5769_IPV4_RESPONSE, Buffer.from('wrong')), 'wrong key fails');
  const flipped = Buffer.from(RFC5769_IPV4_RESPONSE);
  flipped[flipped.length - 1]! ^= 1;
  t.throws(() => decodeStunMessage(flipped), { code: 'bad_fingerprint' });

  // Our encoder reproduces the XOR-MAPPED-ADDRESS bytes of both vectors.
  const txid = RFC5769_IPV4_RESPONSE.subarray(8, 20);
  t.equal(encodeXorMappedAddress({ address: '192.0.2.1', port: 32853 }, txid).toString('hex'), '0001a147e112a643');
  t.equal(
    encodeXorMappedAddress({ address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 }, txid).toString('hex'),
    '0002a1470113a9faa5d3f179bc25f4b5bed2b9d9',
  );
});

t.test('binding request encoding: header, cookie, fingerprint; type bits interleave', async (t) => {
  const txid = randomBytes(12);
  const req = encodeBindingRequest(txid, { software: 'pilot' });
  t.equal(req.readUInt16BE(0), 0x0001);
  t.equal(req.readUInt32BE(4), 0x2112a442);
  t.ok(req.subarray(8, 20).equals(txid));
  t.ok(isStunMessage(req));
  const m = decodeStunMessage(req);
  t.ok(m.fingerprint);
  t.equal(findAttribute(m, StunAttr.SOFTWARE)?.toString(), 'pilot');
  t.equal(encodeStunMessage(txid, { cls: StunClass.SUCCESS }).readUInt16BE(0), 0x0101);
  t.equal(encodeStunMessage(txid, { cls: StunClass.ERROR }).readUInt16BE(0), 0x0111);
  t.equal(encodeStunMessage(txid, { cls: StunClass.INDICATION }).readUInt16BE(0), 0x0011);
  t.equal(encodeBindingRequest(txid, { fingerprint: false }).length, 20);
  t.notOk(isStunMessage(Buffer.from([0x01, 0, 0, 0, 1, 2, 3, 4])), 'beacon discover is not STUN');
});

t.test('responses: MAPPED-ADDRESS fallback, error codes, unknown required attributes', async (t) => {
  const txid = randomBytes(12);
  const plain = encodeStunMessage(txid, { cls: StunClass.SUCCESS, attributes: [{ type: StunAttr.MAPPED_ADDRESS, value: encodeMappedAddress({ address: '203.0.113.9', port: 4242 }) }] });
  t.same(parseBindingResponse(decodeStunMessage(plain)), { address: '203.0.113.9', port: 4242 });
  const both = encodeStunMessage(txid, {
    cls: StunClass.SUCCESS,
    attributes: [
      { type: StunAttr.MAPPED_ADDRESS, value: encodeMappedAddress({ address: '10.0.0.1', port: 1 }) },
      { type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '198.51.100.1', port: 3000 }, txid) },
      { type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '198.51.100.2', port: 3001 }, txid) },
    ],
  });
  t.same(parseBindingResponse(decodeStunMessage(both)), { address: '198.51.100.1', port: 3000 }, 'XOR preferred; first occurrence wins');
  const err = encodeStunMessage(txid, { cls: StunClass.ERROR, attributes: [{ type: StunAttr.ERROR_CODE, value: encodeErrorCode(420, 'Unknown Attribute') }] });
  try {
    parseBindingResponse(decodeStunMessage(err));
    t.fail('error response must throw');
  } catch (e) {
    t.ok(e instanceof StunError);
    t.match(e, { code: 'error_response', stunCode: 420, reason: 'Unknown Attribute' });
  }
  const unknownRequired = encodeStunMessage(txid, {
    cls: StunClass.SUCCESS,
    attributes: [
      { type: 0x7777, value: Buffer.alloc(3) },
      { type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '198.51.100.1', port: 3000 }, txid) },
    ],
  });
  t.throws(() => parseBindingResponse(decodeStunMessage(unknownRequired)), { code: 'unknown_required_attribute' });
  const unknownOptional = encodeStunMessage(txid, {
    cls: StunClass.SUCCESS,
    attributes: [
      { type: 0xc001, value: Buffer.alloc(5) },
      { type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '198.51.100.1', port: 3000 }, txid) },
    ],
    fingerprint: true,
  });
  t.same(parseBindingResponse(decodeStunMessage(unknownOptional)), { address: '198.51.100.1', port: 3000 }, 'comprehension-optional ignored');
  const empty = encodeStunMessage(txid, { cls: StunClass.SUCCESS });
  t.throws(() => parseBindingResponse(decodeStunMessage(empty)), { code: 'no_mapped_address' });
  const badFamily = encodeStunMessage(txid, { cls: StunClass.SUCCESS, attributes: [{ type: StunAttr.XOR_MAPPED_ADDRESS, value: Buffer.from([0, 3, 0, 0, 1, 2, 3, 4]) }] });
  t.throws(() => parseBindingResponse(decodeStunMessage(badFamily)), { code: 'bad_family' });
  const afterMi = encodeStunMessage(txid, {
    cls: StunClass.SUCCESS,
    attributes: [
      { type: StunAttr.MESSAGE_INTEGRITY, value: Buffer.alloc(20) },
      { type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress({ address: '198.51.100.1', port: 3000 }, txid) },
    ],
  });
  t.throws(() => parseBindingResponse(decodeStunMessage(afterMi)), { code: 'no_mapped_address' }, 'attributes after MESSAGE-INTEGRITY are ignored');
});

t.test('decoder rejection paths and fuzz', async (t) => {
  const good = Buffer.from(RFC5769_IPV6_RESPONSE);
  const cases: Array<[string, Buffer, string]> = [
    ['short', good.subarray(0, 19), 'too_short'],
    ['top bits', Buffer.concat([Buffer.from([0xc1]), good.subarray(1)]), 'not_stun'],
    ['no cookie', (() => { const b = Buffer.from(good); b[4] = 0; return b; })(), 'not_stun'],
    ['length not /4', (() => { const b = Buffer.from(good); b.writeUInt16BE(0x47, 2); return b; })(), 'bad_length'],
    ['length mismatch', good.subarray(0, good.length - 4), 'bad_length'],
    ['attr overrun', (() => { const b = Buffer.from(good); b.writeUInt16BE(0xff, 22); return b; })(), 'bad_attribute'],
    ['fingerprint wrong', encodeStunMessage(randomBytes(12), { attributes: [{ type: StunAttr.FINGERPRINT, value: Buffer.alloc(4) }] }), 'bad_fingerprint'],
    ['fingerprint not last', fingerprintThenMore(), 'bad_attribute'],
    ['fingerprint size', encodeStunMessage(randomBytes(12), { attributes: [{ type: StunAttr.FINGERPRINT, value: Buffer.alloc(8) }] }), 'bad_attribute'],
  ];
  for (const [name, buf, code] of cases) t.throws(() => decodeStunMessage(buf), { code }, name);

  const seeds = [RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE, NO_FINGERPRINT];
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let buf: Buffer;
    if (i % 2 === 0) {
      buf = randomBytes(randomInt(0, 80));
      if (buf.length >= 8 && i % 4 === 0) {
        buf.writeUInt32BE(0x2112a442, 4);
        buf[0]! &= 0x3f;
        buf.writeUInt16BE(buf.length - 20 >= 0 ? (buf.length - 20) & ~3 : 0, 2);
      }
    } else {
      buf = Buffer.from(seeds[i % seeds.length]!);
      const n = randomInt(1, 4);
      for (let k = 0; k < n; k++) buf[randomInt(buf.length)]! ^= 1 << randomInt(8);
      if (i % 5 === 0) buf = buf.subarray(0, randomInt(buf.length));
    }
    try {
      const m = decodeStunMessage(buf);
      accepted++;
      try {
        parseBindingResponse(m);
      } catch (err) {
        if (!(err instanceof StunError)) throw err;
      }
    } catch (err) {
      if (!(err instanceof StunError)) {
        t.fail(`non-StunError ${(err as Error).name}: ${(err as Error).message} on ${buf.toString('hex')}`);
        return;
      }
    }
  }
  t.ok(accepted > 0, `20,000 garbage and mutated inputs: ${accepted} decoded, the rest rejected with StunError only`);
});

/** A scripted STUN server on loopback: `answer(n, req)` decides what the n-th request gets. */
async function fakeServer(t: { teardown(f: () => unknown): void }, answer: (n: number, req: Buffer, from: { address: string; port: number }) => Buffer | null): Promise<{ port: number; received: Buffer[] }> {
  const s = createSocket('udp4');
  const received: Buffer[] = [];
  s.on('message', (msg, rinfo) => {
    received.push(msg);
    const out = answer(received.length, msg, rinfo);
    if (out) s.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return { port: s.address().port, received };
}

function success(req: Buffer, from: { address: string; port: number }): Buffer {
  const txid = req.subarray(8, 20);
  return encodeStunMessage(txid, { cls: StunClass.SUCCESS, attributes: [{ type: StunAttr.XOR_MAPPED_ADDRESS, value: encodeXorMappedAddress(from, txid) }], fingerprint: true });
}

async function clientSocket(t: { teardown(f: () => unknown): void }): Promise<Socket> {
  const c = createSocket('udp4');
  await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => c.close(() => r())));
  return c;
}

t.test('stunDiscover: retransmits the same transaction until answered', async (t) => {
  const srv = await fakeServer(t, (n, req, from) => (n < 3 ? null : success(req, from)));
  const c = await clientSocket(t);
  const r = await stunDiscover(c, { host: '127.0.0.1', port: srv.port }, { rtoMs: 20, timeoutMs: 5000 });
  t.same({ address: r.address, port: r.port }, { address: '127.0.0.1', port: c.address().port });
  t.equal(r.transmissions, 3);
  t.equal(srv.received.length, 3);
  t.ok(srv.received.every((b) => b.subarray(8, 20).equals(srv.received[0]!.subarray(8, 20))), 'one transaction ID for all retransmissions');
  t.equal(c.listenerCount('message'), 0, 'listener removed afterwards');
});

t.test('stunDiscover: ignores foreign transactions and non-STUN datagrams', async (t) => {
  const srv = await fakeServer(t, (_n, req, from) => {
    const other = success(Buffer.concat([req.subarray(0, 8), randomBytes(12)]), { address: '6.6.6.6', port: 6 });
    s2.send(other, from.port, from.address);
    s2.send(Buffer.from([1, 2, 3]), from.port, from.address);
    return success(req, from);
  });
  const s2 = createSocket('udp4');
  t.teardown(() => s2.close());
  const c = await clientSocket(t);
  const r = await stunDiscover(c, `127.0.0.1:${srv.port}`, { rtoMs: 50 });
  t.equal(r.address, '127.0.0.1');
  t.equal(r.port, c.address().port);
});

t.test('stunDiscover: bounded retries, then a typed timeout; error responses and aborts are typed', async (t) => {
  const silent = await fakeServer(t, () => null);
  const c = await clientSocket(t);
  await t.rejects(stunDiscover(c, { host: '127.0.0.1', port: silent.port }, { rtoMs: 10, retries: 2, timeoutMs: 5000 }), { code: 'timeout' });
  t.equal(silent.received.length, 3, 'first request + 2 retransmissions');

  const before = silent.received.length;
  await t.rejects(stunDiscover(c, { host: '127.0.0.1', port: silent.port }, { rtoMs: 1000, timeoutMs: 50 }), { code: 'timeout' }, 'overall deadline bounds the schedule');
  t.equal(silent.received.length - before, 1);

  const refusing = await fakeServer(t, (_n, req) =>
    encodeStunMessage(req.subarray(8, 20), { cls: StunClass.ERROR, attributes: [{ type: StunAttr.ERROR_CODE, value: encodeErrorCode(400, 'Bad Request') }] }),
  );
  await t.rejects(stunDiscover(c, { host: '127.0.0.1', port: refusing.port }, { rtoMs: 50 }), { code: 'error_response', stunCode: 400 });

  const ac = new AbortController();
  const p = stunDiscover(c, { host: '127.0.0.1', port: silent.port }, { rtoMs: 50, signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  await t.rejects(p, { code: 'aborted' });
  await t.rejects(stunDiscover(c, 'no-such-host.invalid:3478', { rtoMs: 50 }), { code: 'resolve_failed' });
  await t.rejects(stunDiscover(c, { host: '127.0.0.1', port: 0 }), { code: 'bad_server' });
  t.equal(c.listenerCount('message'), 0, 'no listener leaks after failures');

  const closing = createSocket('udp4');
  await new Promise<void>((r) => closing.bind(0, '127.0.0.1', r));
  const pending = stunDiscover(closing, { host: '127.0.0.1', port: silent.port }, { rtoMs: 50 });
  setTimeout(() => closing.close(), 20);
  await t.rejects(pending, { code: 'closed' }, 'socket closed mid-transaction');
  await t.rejects(stunDiscover(closing, { host: '127.0.0.1', port: silent.port }), { code: 'closed' }, 'already closed socket');
});

t.test('stunDiscover over a custom transport (a shared socket demux)', async (t) => {
  const srv = await fakeServer(t, (_n, req, from) => success(req, from));
  const c = await clientSocket(t);
  const listeners = new Set<(m: Buffer, f: { address: string; port: number }) => void>();
  c.on('message', (m, r) => {
    if (isStunMessage(m)) for (const l of listeners) l(m, r);
  });
  const transport: StunTransport = {
    send: (m, port, address) => c.send(m, port, address),
    subscribe: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const r = await stunDiscover(transport, { host: 'localhost', port: srv.port }, { rtoMs: 50 });
  t.equal(r.port, c.address().port);
  t.equal(listeners.size, 0);
});
