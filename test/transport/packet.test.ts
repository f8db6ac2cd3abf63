import t from 'tap';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { decodePacket, encodePacket, Flags, HEADER_LEN, Protocol, type PacketHeader } from '../../transport/packet.js';
import { PacketError } from '../../transport/errors.js';

const header: PacketHeader = {
  flags: Flags.SYN | Flags.ACK,
  protocol: Protocol.STREAM,
  srcNet: 1,
  srcNode: 0x00a3f291,
  dstNet: 1,
  dstNode: 42,
  srcPort: 49152,
  dstPort: 1001,
  seq: 1,
  ack: 0xfffffffe,
  window: 512,
};

t.test('known-answer encoding built field by field from the reference table', async (t) => {
  const payload = Buffer.from('hello');
  const buf = encodePacket(header, payload);
  const expectNoSum = Buffer.from(
    '13' + '01' + '0005' + '000100a3f291' + '00010000002a' + 'c000' + '03e9' + '00000001' + 'fffffffe' + '0200' + '00000000',
    'hex',
  );
  t.equal(buf.length, HEADER_LEN + 5);
  t.equal(buf.subarray(0, 30).toString('hex'), expectNoSum.subarray(0, 30).toString('hex'));
  const sum = crc32(Buffer.concat([expectNoSum, payload])) >>> 0;
  t.equal(buf.readUInt32BE(30), sum, 'CRC-32 over header with zeroed checksum + payload');
  t.equal(buf.subarray(HEADER_LEN).toString(), 'hello');
});

t.test('round trips', async (t) => {
  for (const len of [0, 1, 1166, 4096, 65535]) {
    const payload = randomBytes(len);
    const p = decodePacket(encodePacket(header, payload));
    t.equal(p.version, 1);
    t.match(p, { ...header });
    t.ok(p.payload.equals(payload), `payload ${len}`);
  }
});

t.test('rejects every malformed input with a typed error', async (t) => {
  const good = encodePacket(header, Buffer.from('abc'));
  t.throws(() => decodePacket(good.subarray(0, 33)), { code: 'short_header' });
  t.throws(() => decodePacket(good.subarray(0, good.length - 1)), { code: 'short_payload' });
  t.throws(() => decodePacket(Buffer.concat([good, Buffer.from([0])])), { code: 'trailing_bytes' });
  const corrupt = Buffer.from(good);
  corrupt[HEADER_LEN] ^= 0x01;
  t.throws(() => decodePacket(corrupt), { code: 'bad_checksum' });
  const badVersion = Buffer.from(good);
  badVersion[0] = 0x23;
  t.throws(() => decodePacket(badVersion), { code: 'bad_version' });
  t.throws(() => encodePacket(header, Buffer.alloc(65536)), { code: 'payload_too_large' });
});

t.test('fuzz: garbage never escapes as anything but PacketError', async (t) => {
  let rejected = 0;
  for (let i = 0; i < 20000; i++) {
    const buf = i % 2 ? randomBytes(i % 200) : mutate(encodePacket(header, randomBytes(i % 64)));
    try {
      decodePacket(buf);
    } catch (err) {
      if (!(err instanceof PacketError)) throw err;
      rejected++;
    }
  }
  t.ok(rejected > 19000, `rejected ${rejected} of 20000`);
});

function mutate(buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  out[Math.floor(Math.random() * out.length)] ^= 1 + Math.floor(Math.random() * 255);
  return out;
}
