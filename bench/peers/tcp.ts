// Baseline peer: Node TCP over loopback (the upper bound for a stream on this machine). With `--unix` the
// same over a Unix socket: one bare hop between two Node processes, what each IPC hop costs at least.
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveParent } from '../lib/child.js';
import { pumpWrites } from './pump.js';

const unix = process.argv.includes('--unix');
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
      if (unix) {
        const dir = mkdtempSync(join(tmpdir(), 'pilot-bench-'));
        process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
        const path = join(dir, 'hop.sock');
        await new Promise<void>((r) => server.listen(path, r));
        reply({ type: 'ready', path });
      } else {
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
        reply({ type: 'ready', port: (server.address() as { port: number }).port });
      }
      break;
    }
    case 'connect': {
      conn = unix ? createConnection({ path: m.path as string }) : createConnection({ port: m.port as number, host: '127.0.0.1', noDelay: true });
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
