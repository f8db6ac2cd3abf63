import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { SignatureVerifier } from '../../registry/auth.js';
import { VerifyPool } from '../../registry/verify-pool.js';

t.test('worker pool verifies batches correctly (valid, wrong key, wrong message, garbage key)', async (t) => {
  const pool = new VerifyPool({ workers: 2 });
  t.teardown(() => pool.close());
  const ids = Array.from({ length: 6 }, () => Identity.generate());
  const jobs: Array<Promise<boolean>> = [];
  const want: boolean[] = [];
  for (let i = 0; i < 200; i++) {
    const id = ids[i % ids.length]!;
    const msg = `heartbeat:${i}:${1000 + i}`;
    const kind = i % 4;
    if (kind === 0) jobs.push(pool.verify(id.publicKeyB64, msg, id.sign(msg)));
    else if (kind === 1) jobs.push(pool.verify(ids[(i + 1) % ids.length]!.publicKeyB64, msg, id.sign(msg)));
    else if (kind === 2) jobs.push(pool.verify(id.publicKeyB64, msg + 'x', id.sign(msg)));
    else jobs.push(pool.verify('AAAA', msg, id.sign(msg)));
    want.push(kind === 0);
  }
  t.same(await Promise.all(jobs), want, '200 jobs over 2 workers with a key cache smaller than the key set');
  const inline = new SignatureVerifier({ async: false, keyCacheSize: 2 });
  const id = ids[0]!;
  t.equal(await inline.verify(id.publicKeyB64, 'm', id.sign('m')), true);
  t.equal(await inline.verify(id.publicKeyB64, 'm', id.sign('n')), false);
});

t.test('pool is bounded and survives a crashed worker', async (t) => {
  const errors: Error[] = [];
  const pool = new VerifyPool({ workers: 1, maxQueued: 3, onError: (e) => errors.push(e) });
  t.teardown(() => pool.close());
  const id = Identity.generate();
  const sig = id.sign('m');
  const first = [1, 2, 3].map(() => pool.verify(id.publicKeyB64, 'm', sig));
  await t.rejects(pool.verify(id.publicKeyB64, 'm', sig), { code: 'unavailable' }, 'queue full → unavailable');
  t.same(await Promise.all(first), [true, true, true]);
  // crash the worker: its batches fail, a new one takes over
  const slot = (pool as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots[0]!;
  await slot.worker.terminate();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(errors.length, 1, 'crash reported');
  t.equal(await pool.verify(id.publicKeyB64, 'm', sig), true, 'replacement worker verifies');
  await pool.close();
  await t.rejects(pool.verify(id.publicKeyB64, 'm', sig), /closed/);
});
