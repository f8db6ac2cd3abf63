import t from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { Identity } from '../../transport/identity.js';
import {
  BeaconType,
  BeaconWireError,
  SIGNED_DISCOVER_LEN,
  SYNC_MAX_IDS,
  decodeBeaconMessage,
  decodeDiscover,
  decodeDiscoverReply,
  decodePunchCommand,
  decodeRelayDeliver,
  decodeSync,
  discoverChallenge,
  encodeDiscover,
  encodeDiscoverReply,
  encodePunchCommand,
  encodePunchRequest,
  encodeRelay,
  encodeRelayDeliver,
  encodeRelayHeader,
  encodeSignedDiscover,
  encodeSignedDiscoverRaw,
  encodeSync,
  encodeSyncChunks,
  ipFromBytes,
  ipToBytes,
  isBeaconDatagram,
  unmapIPv4,
} from '../../natpunch/index.js';

const hex = (b: Buffer): string => b.toString('hex');

t.test('known-answer encodings built from the §1.9 table', async (t) => {
  t.equal(hex(encodeDiscover(42)), '01' + '0000002a');
  t.equal(hex(encodeDiscover(0)), '0100000000', 'startup probe is node 0');
  t.equal(hex(encodeDiscoverReply({ address: '1.2.3.4', port: 9001 })), '02' + '04' + '01020304' + '2329');
  t.equal(hex(encodeDiscoverReply({ address: '::ffff:10.0.0.7', port: 1 })), '02040a0000070001', 'IPv4-mapped goes out as 4 bytes');
  t.equal(hex(encodePunchCommand({ address: '2001:db8::1', port: 65535 })), '04' + '10' + '20010db8000000000000000000000001' + 'ffff');
  t.equal(hex(encodePunchRequest(7, 0xfffffffe)), '03' + '00000007' + 'fffffffe');
  t.equal(hex(encodeRelay(1, 2, Buffer.from('PILP'))), '05' + '00000001' + '00000002' + '50494c50');
  t.equal(hex(encodeRelayHeader(1, 2)), '050000000100000002');
  t.equal(hex(encodeRelayDeliver(9, Buffer.from([0xaa]))), '06' + '00000009' + 'aa');
  t.equal(hex(encodeSync(0xdeadbeef, [1, 2])), '07' + 'deadbeef' + '0002' + '00000001' + '00000002');
  t.equal(hex(encodeSync(5, [])), '07000000050000');
});

t.test('decoders return what the encoders wrote', async (t) => {
  for (let i = 0; i < 200; i++) {
    const a = randomInt(0, 2 ** 32);
    const b = randomInt(0, 2 ** 32);
    const port = randomInt(0, 65536);
    const v4 = `${randomInt(256)}.${randomInt(256)}.${randomInt(256)}.${randomInt(256)}`;
    const v6 = ipFromBytes(Buffer.concat([Buffer.from([0x20, 0x01]), randomBytes(14)]));
    const payload = randomBytes(randomInt(0, 1500));
    t.same(decodeBeaconMessage(encodeDiscover(a)), { type: BeaconType.DISCOVER, nodeId: a });
    t.same(decodeDiscoverReply(encodeDiscoverReply({ address: v4, port })), { address: v4, port });
    t.same(decodePunchCommand(encodePunchCommand({ address: v6, port })), { address: v6, port });
    t.same(decodeBeaconMessage(encodePunchRequest(a, b)), { type: BeaconType.PUNCH_REQUEST, requesterId: a, targetId: b });
    const r = decodeBeaconMessage(encodeRelay(a, b, payload));
    t.ok(r.type === BeaconType.RELAY && r.senderId === a && r.destId === b && r.payload.equals(payload));
    const d = decodeRelayDeliver(encodeRelayDeliver(a, payload));
    t.ok(d.senderId === a && d.payload.equals(payload));
    const ids = Array.from({ length: randomInt(0, 50) }, () => randomInt(0, 2 ** 32));
    t.same(decodeSync(encodeSync(b, ids)), { type: BeaconType.SYNC, beaconId: b, nodeIds: ids });
  }
  t.end();
});

t.test('relay payloads are views into the datagram, not copies', async (t) => {
  const buf = encodeRelay(1, 2, Buffer.from('hello'));
  const m = decodeBeaconMessage(buf);
  t.equal(m.type, BeaconType.RELAY);
  if (m.type === BeaconType.RELAY) t.equal(m.payload.buffer, buf.buffer);
});

t.test('signed discover: layout, signature, and v1 readers see a plain discover', async (t) => {
  const id = Identity.generate();
  const ts = 1_700_000_000_123;
  const buf = encodeSignedDiscover(id, 4242, ts);
  t.equal(buf.length, SIGNED_DISCOVER_LEN);
  t.equal(SIGNED_DISCOVER_LEN, 77);
  t.equal(hex(buf.subarray(0, 5)), hex(encodeDiscover(4242)), 'first 5 bytes are the v1 discover');
  t.equal(buf.readBigUInt64BE(5), BigInt(ts), 'ts is 8 bytes BE unix ms');
  t.equal(discoverChallenge(4242, ts), 'discover:4242:1700000000123');
  t.ok(ed25519.verify(buf.subarray(13), Buffer.from('discover:4242:1700000000123'), id.publicKey), 'noble verifies the signature over the ASCII challenge');
  const d = decodeDiscover(buf);
  t.equal(d.nodeId, 4242);
  t.equal(d.signed?.ts, ts);
  t.ok(d.signed?.signature.equals(buf.subarray(13)));
  t.same(decodeDiscover(encodeDiscover(9)), { type: BeaconType.DISCOVER, nodeId: 9 }, 'unsigned has no signed part');
  t.ok(encodeSignedDiscoverRaw(4242, ts, buf.subarray(13)).equals(buf));
  t.throws(() => encodeSignedDiscover(id, 1, 1.5), { code: 'bad_timestamp' });
  t.throws(() => encodeSignedDiscover(id, 1, -1), { code: 'bad_timestamp' });
  t.throws(() => encodeSignedDiscoverRaw(1, 1, Buffer.alloc(63)), { code: 'bad_signature' });
});

t.test('rejection paths carry stable codes', async (t) => {
  const cases: Array<[string, Buffer, string]> = [
    ['empty', Buffer.alloc(0), 'empty'],
    ['type 0x00', Buffer.from([0x00, 1, 2]), 'unknown_type'],
    ['type 0x08', Buffer.from([0x08]), 'unknown_type'],
    ['type 0x0f', Buffer.from([0x0f, 0, 0, 0, 0]), 'unknown_type'],
    ['tunnel magic', Buffer.from('PILT'), 'unknown_type'],
    ['discover 4 bytes', Buffer.from([1, 0, 0, 0]), 'bad_length'],
    ['discover 6 bytes', Buffer.from([1, 0, 0, 0, 1, 0]), 'bad_length'],
    ['discover 76 bytes', Buffer.concat([Buffer.from([1]), Buffer.alloc(75)]), 'bad_length'],
    ['discover 78 bytes', Buffer.concat([Buffer.from([1]), Buffer.alloc(77)]), 'bad_length'],
    ['discover ts > 2^53', Buffer.concat([Buffer.from([1, 0, 0, 0, 1]), Buffer.alloc(8, 0xff), Buffer.alloc(64)]), 'bad_timestamp'],
    ['reply no iplen', Buffer.from([2]), 'bad_length'],
    ['reply iplen 0', Buffer.from([2, 0, 0, 0]), 'bad_ip_length'],
    ['reply iplen 5', Buffer.from([2, 5, 1, 2, 3, 4, 5, 0, 1]), 'bad_ip_length'],
    ['reply truncated', Buffer.from([2, 4, 1, 2, 3, 4, 0]), 'bad_length'],
    ['reply trailing', Buffer.from([2, 4, 1, 2, 3, 4, 0, 1, 9]), 'bad_length'],
    ['punch cmd v6 truncated', Buffer.concat([Buffer.from([4, 16]), Buffer.alloc(16)]), 'bad_length'],
    ['punch req 8 bytes', Buffer.alloc(8, 3).fill(3, 0, 1), 'bad_length'],
    ['punch req 10 bytes', Buffer.concat([Buffer.from([3]), Buffer.alloc(9)]), 'bad_length'],
    ['relay 8 bytes', Buffer.concat([Buffer.from([5]), Buffer.alloc(7)]), 'bad_length'],
    ['deliver 4 bytes', Buffer.from([6, 0, 0, 0]), 'bad_length'],
    ['sync 6 bytes', Buffer.from([7, 0, 0, 0, 1, 0]), 'bad_length'],
    ['sync count too big', Buffer.from([7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 1]), 'bad_length'],
    ['sync trailing', Buffer.from([7, 0, 0, 0, 1, 0, 0, 9]), 'bad_length'],
  ];
  for (const [name, buf, code] of cases) {
    t.throws(() => decodeBeaconMessage(buf), new BeaconWireError(code, ''), name);
    try {
      decodeBeaconMessage(buf);
    } catch (err) {
      t.equal((err as BeaconWireError).code, code, `${name}: code ${code}`);
      t.ok(err instanceof BeaconWireError, `${name}: BeaconWireError`);
    }
  }
  t.throws(() => decodeDiscoverReply(encodePunchCommand({ address: '1.1.1.1', port: 1 })), { code: 'unknown_type' }, 'typed decoder checks the type byte');
  t.throws(() => decodeRelayDeliver(Buffer.alloc(0)), { code: 'empty' });
  t.throws(() => encodeDiscover(-1), { code: 'bad_node_id' });
  t.throws(() => encodeDiscover(2 ** 32), { code: 'bad_node_id' });
  t.throws(() => encodePunchRequest(1.5, 2), { code: 'bad_node_id' });
  t.throws(() => encodeDiscoverReply({ address: 'example.com', port: 1 }), { code: 'bad_endpoint' });
  t.throws(() => encodeDiscoverReply({ address: '1.2.3.4', port: 70000 }), { code: 'bad_endpoint' });
  t.throws(() => encodeSync(1, new Array(SYNC_MAX_IDS + 1).fill(1)), { code: 'bad_length' });
});

t.test('fuzz: decoders throw only BeaconWireError on garbage and mutated messages', async (t) => {
  const id = Identity.generate();
  const seeds = [
    encodeDiscover(5),
    encodeSignedDiscover(id, 5, Date.now()),
    encodeDiscoverReply({ address: '8.8.4.4', port: 53 }),
    encodePunchCommand({ address: 'fe80::1', port: 4000 }),
    encodePunchRequest(1, 2),
    encodeRelay(1, 2, randomBytes(40)),
    encodeRelayDeliver(3, randomBytes(10)),
    encodeSync(9, [1, 2, 3]),
  ];
  const decoders = [decodeBeaconMessage, decodeDiscover, decodeDiscoverReply, decodePunchCommand, decodeRelayDeliver, decodeSync];
  let ok = 0;
  let rejected = 0;
  for (let i = 0; i < 20_000; i++) {
    let buf: Buffer;
    if (i % 2 === 0) {
      buf = randomBytes(randomInt(0, 96));
      if (buf.length > 0) buf[0] = randomInt(0, 16);
    } else {
      const s = Buffer.from(seeds[i % seeds.length]!);
      const mode = randomInt(3);
      if (mode === 0 && s.length > 0) s[randomInt(s.length)]! ^= 1 << randomInt(8);
      buf = mode === 1 ? s.subarray(0, randomInt(s.length + 1)) : mode === 2 ? Buffer.concat([s, randomBytes(randomInt(1, 8))]) : s;
    }
    for (const dec of decoders) {
      try {
        dec(buf);
        ok++;
      } catch (err) {
        if (!(err instanceof BeaconWireError)) {
          t.fail(`non-typed error ${(err as Error).name}: ${(err as Error).message} on ${hex(buf)}`);
          return;
        }
        rejected++;
      }
    }
  }
  t.ok(ok > 0 && rejected > 0, `accepted ${ok}, rejected ${rejected}`);
});

t.test('sync chunks split large node sets and reassemble', async (t) => {
  const ids = Array.from({ length: 1000 }, (_, i) => i + 1);
  const chunks = encodeSyncChunks(77, ids, 298);
  t.equal(chunks.length, 4);
  t.ok(chunks.every((c) => c.length <= 7 + 4 * 298 && c.length <= 1200), 'each chunk fits 1200 bytes');
  t.same(chunks.flatMap((c) => decodeSync(c).nodeIds), ids);
  t.equal(encodeSyncChunks(77, []).length, 1, 'an empty set still announces the beacon');
  t.equal(decodeSync(encodeSyncChunks(77, [])[0]!).nodeIds.length, 0);
});

t.test('demux and IP helpers', async (t) => {
  t.ok(isBeaconDatagram(encodeDiscover(1)));
  t.notOk(isBeaconDatagram(Buffer.from('PILS')));
  t.notOk(isBeaconDatagram(Buffer.alloc(0)));
  const ipCases: Array<[string, string | null]> = [
    ['127.0.0.1', '7f000001'],
    ['::1', '00000000000000000000000000000001'],
    ['::', '00000000000000000000000000000000'],
    ['::ffff:192.0.2.1', 'c0000201'],
    ['::FFFF:c000:0201', 'c0000201'],
    ['2001:db8::ff00:42:8329', '20010db8000000000000ff0000428329'],
    ['fe80::1%eth0', 'fe800000000000000000000000000001'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1.2.3', null],
    ['256.1.1.1', null],
    ['localhost', null],
    ['::g', null],
    ['', null],
  ];
  for (const [text, want] of ipCases) {
    const b = ipToBytes(text);
    t.equal(b === null ? null : hex(b), want, `ipToBytes(${text})`);
  }
  t.equal(ipFromBytes(Buffer.from('20010db8000000000000000000000001', 'hex')), '2001:db8::1');
  t.equal(ipFromBytes(Buffer.from('20010db8000000010000000000000001', 'hex')), '2001:db8:0:1::1', 'RFC 5952: longest zero run');
  t.equal(ipFromBytes(Buffer.from('20010db8000000000001000000000001', 'hex')), '2001:db8::1:0:0:1', 'RFC 5952: first run on ties');
  t.equal(ipFromBytes(Buffer.from('20010db8000100010001000100010001', 'hex')), '2001:db8:1:1:1:1:1:1', 'no single-group compression');
  t.equal(ipFromBytes(Buffer.alloc(16)), '::');
  t.equal(ipFromBytes(Buffer.from('00000000000000000000ffff01020304', 'hex')), '1.2.3.4');
  for (let i = 0; i < 500; i++) {
    const raw = randomBytes(16);
    if (i % 3 === 0) raw.fill(0, randomInt(16), randomInt(16));
    const text = ipFromBytes(raw);
    const back = ipToBytes(text)!;
    t.ok(back.equals(raw) || (back.length === 4 && raw.subarray(12).equals(back)), `round trip ${text}`);
  }
  t.throws(() => ipFromBytes(Buffer.alloc(5)), RangeError);
  t.equal(unmapIPv4('::ffff:1.2.3.4'), '1.2.3.4');
  t.equal(unmapIPv4('::1'), '::1');
});
