// Our peer: a whole TransportNode (UDP socket + encrypted tunnel + stream engine), as the daemon uses it.
// Used by the transport benchmark and by the real-UDP test (which asks for SHA-256 of the bytes).
// Args: send|recv [--udp-payload N] (caps UDP payloads, e.g. 1200 for the "capped" figure).
import { createHash, randomBytes } from 'node:crypto';
import { Addr } from '../../transport/address.js';
import { Identity } from '../../transport/identity.js';
import { TransportNode } from '../../transport/node.js';
import type { Connection } from '../../transport/stream/index.js';
import { serveParent } from '../lib/child.js';
import { pumpWrites } from './pump.js';

const role = process.argv[2] === 'send' ? 'send' : 'recv';
const capIdx = process.argv.indexOf('--udp-payload');
const udpCap = capIdx > 0 ? Number(process.argv[capIdx + 1]) : undefined;
const PORT = 7000;
const myNode = role === 'recv' ? 1 : 2;

const identity = Identity.generate();
const keys = new Map<number, Uint8Array>();
const node = new TransportNode({
  identity,
  lookupPublicKey: async (n) => keys.get(n) ?? null,
  stream: udpCap ? { maxUdpPayload: udpCap, initialUdpPayload: Math.min(1200, udpCap) } : {},
});

let conn: Connection | null = null;
let expected = 0;
let received = 0;
let hash: ReturnType<typeof createHash> | null = null;
let onDone: (() => void) | null = null;

function onData(d: Buffer): void {
  received += d.length;
  hash?.update(d);
  if (received >= expected && onDone) (onDone(), (onDone = null));
}

serveParent(async (m, reply) => {
  switch (m.type) {
    case 'setup': {
      const addr = await node.bind('127.0.0.1', 0);
      const host = node.start(myNode);
      if (role === 'recv') {
        host.listen(PORT).on('connection', (c: Connection) => {
          conn = c;
          c.on('data', onData);
        });
      }
      reply({ type: 'ready', port: addr.port, key: identity.publicKey.toString('base64'), node: myNode });
      break;
    }
    case 'connect': {
      const peer = m.node as number;
      keys.set(peer, Buffer.from(m.key as string, 'base64'));
      node.addPeer(peer, { host: '127.0.0.1', port: (m.via as number | undefined) ?? (m.port as number) });
      if (role === 'send') conn = await node.host.connect(new Addr(0, peer), PORT, { noDelay: true, timeoutMs: 30_000 });
      reply({ type: 'connected' });
      break;
    }
    case 'expect':
      expected = received + (m.bytes as number);
      hash = m.hash ? createHash('sha256') : null;
      onDone = () => reply({ type: 'done', bytes: received, ...(hash ? { sha256: hash.digest('hex') } : {}) });
      reply({ type: 'expecting' });
      break;
    case 'run': {
      const bytes = m.bytes as number;
      if (!m.hash) {
        await pumpWrites(conn!, bytes);
        reply({ type: 'sent' });
        break;
      }
      // Varied data, each MiB stamped with its index, so loss, reordering or duplication changes the hash.
      const h = createHash('sha256');
      const block = randomBytes(1 << 20);
      for (let off = 0, i = 0; off < bytes; off += block.length, i++) {
        block.writeUInt32BE(i, 0);
        const chunk = Buffer.from(block.subarray(0, Math.min(block.length, bytes - off)));
        h.update(chunk);
        await pumpWrites(conn!, chunk.length, chunk);
      }
      reply({ type: 'sent', sha256: h.digest('hex') });
      break;
    }
    case 'stats':
      reply({ type: 'stats', ...node.stats(), connection: conn?.info() ?? null });
      break;
  }
});
