// The raw ceiling: AES-256-GCM-seal PILS-shaped frames and send them over UDP as fast as node:dgram
// allows, with no reliability, no ACKs and no congestion control. Goodput is counted in the bytes a
// stream segment of the same UDP size would carry (UDP payload − 70 bytes of PILS + header overhead).
// With `open` the receiver also authenticates and decrypts every datagram (and nothing else), which
// prices the receive side of an encrypted transport the same way: CPU per datagram.
import { createCipheriv, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { AeadKey, DEFAULT_TUNNEL_OVERHEAD, HEADER_LEN } from '../../transport/index.js';
import { serveParent } from '../lib/child.js';

const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
let received = 0;
let packets = 0;
let opened = 0;
let openKey: AeadKey | null = null;
let cpuAtFirst: NodeJS.CpuUsage | null = null;
socket.on('message', (msg) => {
  cpuAtFirst ??= process.cpuUsage();
  received += msg.length;
  packets++;
  // A PILS frame: 8-byte prefix, 12-byte nonce, ciphertext, 16-byte tag; opened as the tunnel opens it.
  if (openKey?.open(msg.subarray(8, 20), msg.subarray(20, msg.length - 16), msg.subarray(msg.length - 16))) opened++;
});

serveParent(async (m, reply) => {
  switch (m.type) {
    case 'setup':
      if (m.openKey) openKey = new AeadKey(Buffer.from(m.openKey as string, 'base64'));
      await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
      reply({ type: 'ready', port: socket.address().port });
      break;
    case 'run': {
      const udpSize = (m.udpSize as number) ?? 1200;
      const key = m.key ? Buffer.from(m.key as string, 'base64') : randomBytes(32);
      const r = await blast(m.port as number, m.bytes as number, udpSize, key);
      reply({ type: 'sent', ...r });
      break;
    }
    case 'count': {
      const cpu = cpuAtFirst ? process.cpuUsage(cpuAtFirst) : { user: 0, system: 0 };
      reply({ type: 'counted', bytes: received, packets, opened, cpuUs: cpu.user + cpu.system });
      break;
    }
  }
});

async function blast(port: number, bytes: number, udpSize: number, key: Buffer): Promise<{ appBytes: number; packets: number; elapsedMs: number; cpuUs: number }> {
  const payloadLen = udpSize - DEFAULT_TUNNEL_OVERHEAD - HEADER_LEN;
  const prefix = Buffer.from('PILS\0\0\0\x01', 'binary');
  const plain = randomBytes(HEADER_LEN + payloadLen);
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
  const cpu0 = process.cpuUsage();
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
  const cpu = process.cpuUsage(cpu0);
  return { appBytes: packets * payloadLen, packets, elapsedMs, cpuUs: cpu.user + cpu.system };
}
