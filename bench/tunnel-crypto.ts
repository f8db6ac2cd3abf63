/**
 * Tunnel crypto micro-benchmark: AES-256-GCM seal+open (node:crypto vs @noble/ciphers), the full
 * Tunnel send→handleDatagram path in memory, and the ways to put a sealed frame on a UDP socket.
 *
 *   npx tsc -p . && node dist/bench/tunnel-crypto.js [--quick] [--json]
 *
 * Figures are per core on whatever machine runs it; compare rows within one run.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { gcm } from '@noble/ciphers/aes.js';
import { Identity } from '../transport/identity.js';
import { encodePacket, Protocol } from '../transport/packet.js';
import { AeadKey } from '../transport/tunnel/crypto.js';
import { PILS_PREFIX_LEN, writeSealedPrefix } from '../transport/tunnel/frames.js';
import { Tunnel } from '../transport/tunnel/tunnel.js';
import { UdpEndpoint } from '../transport/udp.js';

const quick = process.argv.includes('--quick');
const asJson = process.argv.includes('--json');
const MIN_MS = quick ? 150 : 600;

interface Row {
  id: string;
  size: number;
  us_per_packet: number;
  mb_per_s: number;
}
const rows: Row[] = [];

/** Run `fn` (one packet of `size` bytes) in batches until MIN_MS elapsed; report µs/packet and MB/s. */
function measure(id: string, size: number, fn: () => void): Row {
  for (let i = 0; i < 50; i++) fn(); // warm up
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  const batch = size > 10_000 ? 16 : 256;
  while (elapsed < MIN_MS) {
    for (let i = 0; i < batch; i++) fn();
    n += batch;
    elapsed = performance.now() - start;
  }
  const row = { id, size, us_per_packet: (elapsed * 1000) / n, mb_per_s: (n * size) / 1e6 / (elapsed / 1000) };
  rows.push(row);
  return row;
}

async function measureAsync(id: string, size: number, count: number, fn: (i: number) => void): Promise<Row> {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    fn(i);
    if ((i & 255) === 255) await new Promise((r) => setImmediate(r)); // let I/O and nextTicks run
  }
  await new Promise((r) => setImmediate(r));
  const elapsed = performance.now() - start;
  const row = { id, size, us_per_packet: (elapsed * 1000) / count, mb_per_s: (count * size) / 1e6 / (elapsed / 1000) };
  rows.push(row);
  return row;
}

function aeadRows(size: number): void {
  const key = randomBytes(32);
  const nonce = randomBytes(12);
  const pt = randomBytes(size);
  const ours = new AeadKey(key);
  measure('aead.seal_open.node_keyobject', size, () => {
    const s = ours.seal(nonce, pt);
    if (!ours.open(nonce, s.ciphertext, s.tag)) throw new Error('open failed');
  });
  measure('aead.seal_open.node_rawkey', size, () => {
    const c = createCipheriv('aes-256-gcm', key, nonce);
    const ct = c.update(pt);
    c.final();
    const tag = c.getAuthTag();
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  });
  measure('aead.seal_open.noble', size, () => {
    const sealed = gcm(key, nonce).encrypt(pt);
    gcm(key, nonce).decrypt(sealed);
  });
  // Frame assembly: the copy a contiguous frame costs on top of sealing.
  measure('frame.seal_gather_list', size, () => {
    const head = Buffer.allocUnsafe(PILS_PREFIX_LEN);
    writeSealedPrefix(head, 0, 1, 2, 3);
    const s = ours.seal(head.subarray(8, 20), pt);
    void [head, s.ciphertext, s.tag];
  });
  measure('frame.seal_concat', size, () => {
    const head = Buffer.allocUnsafe(PILS_PREFIX_LEN);
    writeSealedPrefix(head, 0, 1, 2, 3);
    const s = ours.seal(head.subarray(8, 20), pt);
    Buffer.concat([head, s.ciphertext, s.tag]);
  });
}

/** Two tunnels wired in memory: Tunnel.send → frame → Tunnel.handleDatagram → 'packet'. */
async function tunnelRows(size: number): Promise<void> {
  const idA = Identity.generate();
  const idB = Identity.generate();
  const keys = new Map([[1, idA.publicKey], [2, idB.publicKey]]);
  const lookupPublicKey = async (n: number): Promise<Buffer | null> => keys.get(n) ?? null;
  let a!: Tunnel;
  let b!: Tunnel;
  const deliver = (to: () => Tunnel, port: number) => (frame: Buffer | Buffer[]) => {
    const buf = Array.isArray(frame) ? Buffer.concat(frame) : frame; // stands in for the kernel's copy
    to().handleDatagram(buf, { address: '127.0.0.1', port });
  };
  a = new Tunnel({ identity: idA, localNode: 1, lookupPublicKey, send: deliver(() => b, 1000) });
  b = new Tunnel({ identity: idB, localNode: 2, lookupPublicKey, send: deliver(() => a, 2000) });
  let received = 0;
  b.on('packet', () => received++);
  await new Promise<void>((resolve) => {
    a.once('established', () => resolve());
    a.addPeer(2, { host: '127.0.0.1', port: 2000 });
  });
  await new Promise((r) => setTimeout(r, 10));
  const pkt = encodePacket(
    { flags: 0, protocol: Protocol.DATAGRAM, srcNet: 0, srcNode: 1, dstNet: 0, dstNode: 2, srcPort: 1, dstPort: 2, seq: 0, ack: 0, window: 0 },
    randomBytes(size - 34),
  );
  measure('tunnel.send_receive_in_memory', size, () => a.send(2, pkt));
  if (received === 0) throw new Error('tunnel bench delivered nothing');
  a.close();
  b.close();
}

async function udpRows(size: number): Promise<void> {
  const sink = createSocket('udp4');
  await new Promise<void>((r) => sink.bind(0, '127.0.0.1', () => r()));
  sink.on('message', () => {});
  const port = sink.address().port;
  const count = quick ? 20_000 : 100_000;
  const head = Buffer.alloc(PILS_PREFIX_LEN);
  const ct = randomBytes(size - PILS_PREFIX_LEN - 16);
  const tag = randomBytes(16);

  const ours = new UdpEndpoint({ bufferBytes: 0 });
  await ours.bind('127.0.0.1', 0);
  await measureAsync('udp.endpoint_send_list', size, count, () => ours.send([head, ct, tag], port, '127.0.0.1'));
  await measureAsync('udp.endpoint_send_concat', size, count, () => ours.send(Buffer.concat([head, ct, tag]), port, '127.0.0.1'));
  await ours.close();

  const plain = createSocket('udp4');
  await new Promise<void>((r) => plain.bind(0, '127.0.0.1', () => r()));
  const frame = Buffer.concat([head, ct, tag]);
  await measureAsync('udp.dgram_default_lookup_no_cb', size, count, () => plain.send(frame, port, '127.0.0.1'));
  await measureAsync('udp.dgram_default_lookup_cb', size, count, () => plain.send(frame, port, '127.0.0.1', () => {}));
  plain.close();
  sink.close();
}

async function main(): Promise<void> {
  for (const size of [1200, 65536]) aeadRows(size);
  for (const size of [1200, 65536]) await tunnelRows(size);
  await udpRows(1200);
  if (asJson) {
    console.log(JSON.stringify({ runAt: new Date().toISOString(), results: rows }, null, 2));
    return;
  }
  const pad = (s: string, n: number): string => s.padEnd(n);
  console.log(`${pad('benchmark', 36)} ${pad('size', 7)} ${pad('µs/packet', 11)} MB/s`);
  for (const r of rows) {
    console.log(`${pad(r.id, 36)} ${pad(String(r.size), 7)} ${pad(r.us_per_packet.toFixed(2), 11)} ${r.mb_per_s.toFixed(1)}`);
  }
  const ratio = (a: string, b: string, size: number): string => {
    const x = rows.find((r) => r.id === a && r.size === size)!;
    const y = rows.find((r) => r.id === b && r.size === size)!;
    return (x.mb_per_s / y.mb_per_s).toFixed(1);
  };
  for (const size of [1200, 65536]) {
    console.log(`node:crypto / noble seal+open at ${size}: ${ratio('aead.seal_open.node_keyobject', 'aead.seal_open.noble', size)}×`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
