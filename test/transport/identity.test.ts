import t from 'tap';
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { Identity, verifyEd25519 } from '../../transport/identity.js';

t.test('sign/verify agrees with @noble/curves', async (t) => {
  const id = Identity.generate();
  const msg = Buffer.from('heartbeat:42:1700000000000');
  const sig = id.sign(msg);
  t.ok(ed25519.verify(sig, msg, id.publicKey), 'noble verifies our signature');
  t.ok(verifyEd25519(id.publicKey, msg, sig));
  const tampered = Buffer.from(sig);
  tampered[0] ^= 1;
  t.notOk(verifyEd25519(id.publicKey, msg, tampered));
  t.notOk(verifyEd25519(id.publicKey.subarray(1), msg, sig), 'wrong key length is false, not a throw');
  const seed = Buffer.alloc(32, 7);
  t.ok(Identity.fromSeed(seed).publicKey.equals(Buffer.from(ed25519.getPublicKey(seed))), 'public key derivation matches noble');
});

t.test('v1 identity file: save 0600 in 0700 dir, load, reject mismatch', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilot-id-'));
  const path = join(dir, 'sub', 'identity.key');
  const created = await Identity.load(path, { create: true });
  t.equal((await stat(path)).mode & 0o777, 0o600);
  t.equal((await stat(join(dir, 'sub'))).mode & 0o777, 0o700);
  const json = JSON.parse(await readFile(path, 'utf8'));
  t.equal(Buffer.from(json.private_key, 'base64').length, 64, 'private_key is Go-style seed‖pub');
  t.equal(json.public_key, created.publicKeyB64);
  const loaded = await Identity.load(path);
  t.ok(loaded.publicKey.equals(created.publicKey), 'same key after reload');
  await writeFile(path, JSON.stringify({ ...json, public_key: Identity.generate().publicKeyB64 }));
  await t.rejects(Identity.load(path), { code: 'key_mismatch' });
  await writeFile(path, 'not json');
  await t.rejects(Identity.load(path), { code: 'bad_identity_file' });
  await writeFile(path, JSON.stringify({ private_key: 'AAAA' }));
  await t.rejects(Identity.load(path), { code: 'bad_key' });
  await t.rejects(Identity.load(join(dir, 'missing.key')), { code: 'identity_unreadable' });
});
