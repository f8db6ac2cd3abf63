// Real UDP on loopback between two processes (issue 2): a whole TransportNode on each side, encrypted
// tunnel + stream engine, bytes verified with SHA-256 on both ends.
import t from 'tap';
import { runStream } from '../../bench/transport.js';

const MiB = 1 << 20;

t.test('encrypted 64 MiB transfer between two processes, hash verified', async (t) => {
  const r = await runStream('pilot', 64 * MiB, { hash: true });
  t.equal(r.bytes, 64 * MiB, 'every byte arrived, no more');
  t.match(r.sentSha256, /^[0-9a-f]{64}$/);
  t.equal(r.recvSha256, r.sentSha256, 'received bytes hash to what was sent');
});

t.test('1200-byte UDP payloads through 2% loss and 10 ms RTT, hash verified', async (t) => {
  const r = await runStream('pilot', 4 * MiB, { hash: true, args: ['--udp-payload', '1200'], impair: { loss: 0.02, delayMs: 5 } });
  t.equal(r.bytes, 4 * MiB);
  t.equal(r.recvSha256, r.sentSha256, 'loss was repaired byte-exactly');
});
