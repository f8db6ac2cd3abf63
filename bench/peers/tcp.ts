// Baseline peer: Node TCP over loopback (the upper bound for a stream on this machine).
import { createConnection, createServer, type Socket } from 'node:net';
import { serveParent } from '../lib/child.js';
import { pumpWrites } from './pump.js';

let expected = 0;
let received = 0;
let conn: Socket | null = null;
let onDone: ((r: { bytes: number }) => void) | null = null;

serveParent(async (m, reply) => {
  switch (m.type) {
    case 'setup': {
      const server = createServer((s) => {
        s.on('data', (d: Buffer) => {
          received += d.length;
          if (received >= expected && onDone) onDone({ bytes: received }), (onDone = null);
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      reply({ type: 'ready', port: (server.address() as { port: number }).port });
      break;
    }
    case 'connect': {
      conn = createConnection({ port: m.port as number, host: '127.0.0.1', noDelay: true });
      await new Promise<void>((r) => conn!.once('connect', () => r()));
      reply({ type: 'connected' });
      break;
    }
    case 'expect':
      expected = received + (m.bytes as number);
      onDone = (r) => reply({ type: 'done', ...r });
      reply({ type: 'expecting' });
      break;
    case 'run':
      await pumpWrites(conn!, m.bytes as number);
      reply({ type: 'sent' });
      break;
  }
});
