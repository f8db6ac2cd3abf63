// The raw ceiling: AES-256-GCM-seal PILS-shaped frames and send them over UDP as fast as node:dgram
// allows, with no reliability, no ACKs and no congestion control. Goodput is counted in the bytes a
// stream segment of the same UDP size would carry (UDP payload − 70 bytes of PILS + header overhead).
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { serveParent } from '../lib/child.js';

const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
let received = 0;
socket.on('message', (msg) => {
  received += msg.length;
});

serveParent(async (m, reply) => {
  switch (m.type) {
    case 'setup':
      await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
      reply({ type: 'ready', port: socket.address().port });
      break;
    case 'run': {
      const udpSize = (m.udpSize as number) ?? 1200;
      const r = await blast(m.port as number, m.bytes as number, udpSize);
      reply({ type: 'sent', ...r });
      break;
    }
    case 'count':
      reply({ type: 'counted', bytes: received });
      break;
  }
});

async function blast(port: number, bytes: number, udpSize: number): Promise<{ appBytes: number; elapsedMs: number }> {
  const overhead = 4 + 4 + 12 + 16 + 34;
  const payloadLen = udpSize - overhead;
  const key = createHash('sha256').update(randomBytes(32)).digest();
  const prefix = Buffer.from('PILS\0\0\0\x01', 'binary');
  const plain = randomBytes(34 + payloadLen);
  const nonce = Buffer.alloc(12);
  randomBytes(4).copy(nonce, 0);
  const packets = Math.ceil(bytes / payloadLen);
  let counter = 0n;
  let inFlight = 0;
  let wake: (() => void) | null = null;
  const onSent = (): void => {
    inFlight--;
    if (wake && inFlight < 64) (wake(), (wake = null));
  };
  const start = process.hrtime.bigint();
  for (let i = 0; i < packets; i++) {
    counter++;
    nonce.writeBigUInt64BE(counter, 4);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    const ct = c.update(plain);
    c.final();
    const head = Buffer.allocUnsafe(20);
    prefix.copy(head, 0);
    nonce.copy(head, 8);
    inFlight++;
    socket.send([head, ct, c.getAuthTag()], port, '127.0.0.1', onSent);
    if (inFlight >= 256) await new Promise<void>((r) => (wake = r));
  }
  while (inFlight > 0) await new Promise<void>((r) => (wake = r));
  const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
  return { appBytes: packets * payloadLen, elapsedMs };
}
