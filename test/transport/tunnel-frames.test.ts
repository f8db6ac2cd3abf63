import t from 'tap';
import { randomBytes } from 'node:crypto';
import {
  decodeRelay,
  decodeRelayDeliver,
  decodeTunnelFrame,
  encodeAnonymousKeyExchange,
  encodeAuthKeyExchange,
  encodePlain,
  encodePunch,
  encodeRelay,
  encodeRelayDeliver,
  encodeRelayHeader,
  encodeSealed,
  encodeSealedPrefix,
  FrameError,
  isBeaconMessage,
  MAX_COUNTER,
  PILA_LEN,
  PILK_LEN,
  PILS_MIN_LEN,
  PILS_OVERHEAD,
  type SealedFrame,
} from '../../transport/tunnel/index.js';
import { encodePacket, Protocol } from '../../transport/packet.js';

const packet = encodePacket(
  { flags: 0, protocol: Protocol.DATAGRAM, srcNet: 0, srcNode: 7, dstNet: 0, dstNode: 9, srcPort: 49152, dstPort: 1001, seq: 0, ack: 0, window: 0 },
  Buffer.from('hello'),
);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof FrameError)) throw err;
    return err.code;
  }
  return undefined;
}

t.test('known bytes: the §1.4 layouts', async (t) => {
  const x = Buffer.alloc(32, 0xaa);
  const ed = Buffer.alloc(32, 0xbb);
  const sig = Buffer.alloc(64, 0xcc);
  const pilk = encodeAnonymousKeyExchange(0x01020304, x);
  t.equal(pilk.length, 40);
  t.equal(pilk.toString('hex'), '50494c4b01020304' + 'aa'.repeat(32));
  const pila = encodeAuthKeyExchange(42, x, ed, sig);
  t.equal(pila.length, 136);
  t.equal(pila.subarray(0, 8).toString('hex'), '50494c410000002a');
  t.same(pila.subarray(8, 40), x);
  t.same(pila.subarray(40, 72), ed);
  t.same(pila.subarray(72), sig);
  t.equal(encodePunch().toString('ascii'), 'PILP');
  const prefix = encodeSealedPrefix(5, 0xdeadbeef, 0x0102030405);
  t.equal(prefix.toString('hex'), '50494c53' + '00000005' + 'deadbeef' + '0000000102030405');
  t.equal(Buffer.concat(encodePlain(packet)).subarray(0, 4).toString('ascii'), 'PILT');
  t.equal(encodeRelayHeader(1, 2).toString('hex'), '050000000100000002');
  t.equal(PILS_OVERHEAD, 36, 'PILS adds 36 bytes around the packet (§1.4: 70 + payload)');
});

t.test('round trips', async (t) => {
  const x = randomBytes(32);
  const ed = randomBytes(32);
  const sig = randomBytes(64);
  const pila = decodeTunnelFrame(encodeAuthKeyExchange(0xfffffffe, x, ed, sig));
  t.match(pila, { kind: 'PILA', node: 0xfffffffe });
  if (pila.kind === 'PILA') {
    t.same(pila.x25519, x);
    t.same(pila.ed25519, ed);
    t.same(pila.signature, sig);
  }
  const pilk = decodeTunnelFrame(encodeAnonymousKeyExchange(3, x));
  t.match(pilk, { kind: 'PILK', node: 3 });
  const ct = randomBytes(34 + 100);
  const tag = randomBytes(16);
  for (const counter of [0, 1, 0xffffffff, 0x100000000, MAX_COUNTER]) {
    const f = decodeTunnelFrame(encodeSealed(77, 0x01020304, counter, ct, tag)) as SealedFrame;
    t.equal(f.kind, 'PILS');
    t.equal(f.node, 77);
    t.equal(f.prefix, 0x01020304);
    t.equal(f.counter, counter, `counter ${counter}`);
    t.same(f.ciphertext, ct);
    t.same(f.tag, tag);
    t.equal(f.nonce.length, 12);
  }
  const plain = decodeTunnelFrame(Buffer.concat(encodePlain(packet)));
  t.equal(plain.kind, 'PILT');
  if (plain.kind === 'PILT') t.same(plain.packet, packet);
  t.same(decodeTunnelFrame(encodePunch()), { kind: 'PILP' });

  const inner = encodeAnonymousKeyExchange(3, x);
  const relay = decodeRelay(encodeRelay(10, 20, inner));
  t.equal(relay.sender, 10);
  t.equal(relay.dest, 20);
  t.same(relay.inner, inner);
  const relayList = decodeRelay(encodeRelay(10, 20, [inner.subarray(0, 5), inner.subarray(5)]));
  t.same(relayList.inner, inner, 'buffer-list inner frames are concatenated');
  const deliver = decodeRelayDeliver(encodeRelayDeliver(10, inner));
  t.equal(deliver.sender, 10);
  t.same(deliver.inner, inner);
});

t.test('decoders return views, not copies', async (t) => {
  const frame = encodeSealed(1, 2, 3, Buffer.alloc(50), Buffer.alloc(16));
  const f = decodeTunnelFrame(frame) as SealedFrame;
  frame[20] = 0x55;
  t.equal(f.ciphertext[0], 0x55);
});

t.test('beacon demux rule', async (t) => {
  t.ok(isBeaconMessage(Buffer.from([0x02, 1, 2])));
  t.ok(isBeaconMessage(Buffer.from([0x0f])));
  t.notOk(isBeaconMessage(Buffer.from('PILS')));
  t.notOk(isBeaconMessage(Buffer.alloc(0)));
});

t.test('every rejection path has a typed error with a stable code', async (t) => {
  const x = Buffer.alloc(32);
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.alloc(0))), 'empty');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.from([0x02, 0, 0, 0, 0]))), 'beacon_message');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.from('PIL'))), 'short_frame');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.from('PILX....'))), 'unknown_magic');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.from('XXXX'))), 'unknown_magic');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.concat([Buffer.from('PILT'), Buffer.alloc(33)]))), 'short_frame');
  t.equal(codeOf(() => decodeTunnelFrame(encodeSealed(1, 2, 3, Buffer.alloc(33), Buffer.alloc(16)))), 'short_frame', 'PILS shorter than prefix+header+tag');
  t.equal(PILS_MIN_LEN, 70);
  const overflow = encodeSealed(1, 2, 3, Buffer.alloc(34), Buffer.alloc(16));
  overflow.writeUInt32BE(0x00200000, 12);
  t.equal(codeOf(() => decodeTunnelFrame(overflow)), 'counter_overflow');
  const pilk = encodeAnonymousKeyExchange(1, x);
  t.equal(codeOf(() => decodeTunnelFrame(pilk.subarray(0, PILK_LEN - 1))), 'bad_length');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.concat([pilk, Buffer.alloc(1)]))), 'bad_length');
  const pila = encodeAuthKeyExchange(1, x, x, Buffer.alloc(64));
  t.equal(codeOf(() => decodeTunnelFrame(pila.subarray(0, PILA_LEN - 1))), 'bad_length');
  t.equal(codeOf(() => decodeTunnelFrame(Buffer.concat([pila, Buffer.alloc(1)]))), 'bad_length');

  t.equal(codeOf(() => decodeRelay(Buffer.alloc(0))), 'not_relay');
  t.equal(codeOf(() => decodeRelay(Buffer.from([0x06, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x49, 0x4c, 0x50]))), 'not_relay');
  t.equal(codeOf(() => decodeRelay(Buffer.from([0x05, 0, 0, 0, 1, 0, 0, 0, 2]))), 'short_relay');
  t.equal(codeOf(() => decodeRelay(encodeRelay(1, 2, Buffer.from([0x06, 0, 0, 0, 1, 0x50])))), 'bad_inner', 'no nested relay');
  t.equal(codeOf(() => decodeRelayDeliver(Buffer.from([0x05, 0, 0, 0, 1, 0x50, 0x49, 0x4c, 0x50]))), 'not_relay');
  t.equal(codeOf(() => decodeRelayDeliver(Buffer.from([0x06, 0, 0, 0, 1]))), 'short_relay');
  t.equal(codeOf(() => decodeRelayDeliver(encodeRelayDeliver(1, Buffer.from([0x01, 0, 0, 0, 0])))), 'bad_inner');

  t.equal(codeOf(() => encodeAnonymousKeyExchange(-1, x)), 'bad_node');
  t.equal(codeOf(() => encodeAnonymousKeyExchange(2 ** 32, x)), 'bad_node');
  t.equal(codeOf(() => encodeAnonymousKeyExchange(1.5, x)), 'bad_node');
  t.equal(codeOf(() => encodeAnonymousKeyExchange(1, Buffer.alloc(31))), 'bad_key_length');
  t.equal(codeOf(() => encodeAuthKeyExchange(1, x, x, Buffer.alloc(63))), 'bad_key_length');
  t.equal(codeOf(() => encodeAuthKeyExchange(1, x, Buffer.alloc(33), Buffer.alloc(64))), 'bad_key_length');
  t.equal(codeOf(() => encodeSealedPrefix(1, 2, -1)), 'bad_counter');
  t.equal(codeOf(() => encodeSealedPrefix(1, 2, MAX_COUNTER + 1)), 'bad_counter');
  t.equal(codeOf(() => encodeSealed(1, 2, 3, Buffer.alloc(34), Buffer.alloc(15))), 'bad_key_length');
  t.equal(codeOf(() => encodeRelayHeader(1, -2)), 'bad_node');
  t.equal(codeOf(() => encodeRelayDeliver(2 ** 32, x)), 'bad_node');
});

t.test('fuzz: garbage never throws anything but a FrameError', async (t) => {
  const seeds = [
    encodeAuthKeyExchange(1, randomBytes(32), randomBytes(32), randomBytes(64)),
    encodeAnonymousKeyExchange(1, randomBytes(32)),
    encodeSealed(1, 2, 3, randomBytes(60), randomBytes(16)),
    Buffer.concat(encodePlain(packet)),
    encodeRelay(1, 2, encodePunch()),
    encodeRelayDeliver(1, encodeAnonymousKeyExchange(1, randomBytes(32))),
  ];
  let decoded = 0;
  let rejected = 0;
  const codes = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    let buf: Buffer;
    if (i % 3 === 0) buf = randomBytes(i % 200);
    else {
      // Mutate a valid frame: flip bytes, truncate or extend.
      buf = Buffer.from(seeds[i % seeds.length]!);
      const flips = 1 + (i % 4);
      for (let k = 0; k < flips; k++) buf[(i * 7 + k * 13) % buf.length] ^= 1 << (k % 8);
      if (i % 5 === 0) buf = buf.subarray(0, i % buf.length);
      if (i % 7 === 0) buf = Buffer.concat([buf, randomBytes(i % 9)]);
    }
    for (const decode of [decodeTunnelFrame, decodeRelay, decodeRelayDeliver]) {
      try {
        decode(buf);
        decoded++;
      } catch (err) {
        if (!(err instanceof FrameError)) {
          t.fail(`non-FrameError ${String(err)} for ${buf.toString('hex')}`);
          return;
        }
        codes.add(err.code);
        rejected++;
      }
    }
  }
  t.ok(decoded > 0 && rejected > 0, `decoded ${decoded}, rejected ${rejected}`);
  t.ok([...codes].every((c) => typeof c === 'string' && c.length > 0), `codes seen: ${[...codes].sort().join(', ')}`);
});
