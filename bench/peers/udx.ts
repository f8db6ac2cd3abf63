// Baseline peer: udx-native reliable streams + @hyperswarm/secret-stream (Noise handshake, libsodium
// secretstream AEAD) — the best encrypted stream stack available to Node programs today.
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { serveParent } from '../lib/child.js';
import { pumpWrites } from './pump.js';

const require = createRequire(import.meta.url);
/* eslint-disable @typescript-eslint/no-explicit-any */
const UDX = require('udx-native') as any;
const SecretStream = require('@hyperswarm/secret-stream') as any;

const role = process.argv[2] === 'send' ? 'send' : 'recv';
const udx = new UDX();
const socket = udx.createSocket();
const raw = udx.createStream(role === 'recv' ? 1 : 2);
let secure: Duplex | null = null;
let expected = 0;
let received = 0;
let onDone: ((r: { bytes: number }) => void) | null = null;

serveParent(async (m, reply) => {
  switch (m.type) {
    case 'setup':
      socket.bind(0, '127.0.0.1');
      reply({ type: 'ready', port: socket.address().port, id: raw.id });
      break;
    case 'connect': {
      raw.connect(socket, m.id as number, m.port as number, '127.0.0.1');
      secure = new SecretStream(role === 'send', raw) as Duplex;
      secure.on('data', (d: Buffer) => {
        received += d.length;
        if (received >= expected && onDone) onDone({ bytes: received }), (onDone = null);
      });
      secure.on('error', () => {});
      if (role === 'send') await new Promise<void>((r) => secure!.once('connect', () => r()));
      reply({ type: 'connected' });
      break;
    }
    case 'expect':
      expected = received + (m.bytes as number);
      onDone = (r) => reply({ type: 'done', ...r });
      reply({ type: 'expecting' });
      break;
    case 'run':
      await pumpWrites(secure!, m.bytes as number);
      reply({ type: 'sent' });
      break;
  }
});
