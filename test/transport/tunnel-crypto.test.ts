import t from 'tap';
import { randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { gcm } from '@noble/ciphers/aes.js';
// @noble/hashes is @noble/curves' own dependency: an independent SHA-256 for the KDF cross-check.
import { sha256 } from '@noble/hashes/sha2.js';
import { Identity } from '../../transport/identity.js';
import {
  AeadKey,
  authSignedMessage,
  decodeTunnelFrame,
  deriveAeadKey,
  encodeAuthKeyExchange,
  X25519KeyPair,
} from '../../transport/tunnel/index.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

t.test('X25519: RFC 7748 §6.1 vector and agreement with @noble/curves', async (t) => {
  const alice = X25519KeyPair.fromPrivate(hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'));
  const bob = X25519KeyPair.fromPrivate(hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'));
  t.equal(alice.publicKey.toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  t.equal(bob.publicKey.toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  t.equal(alice.sharedSecret(bob.publicKey).toString('hex'), shared);
  t.equal(bob.sharedSecret(alice.publicKey).toString('hex'), shared);

  for (let i = 0; i < 20; i++) {
    const a = randomBytes(32);
    const b = randomBytes(32);
    const ours = X25519KeyPair.fromPrivate(a);
    t.equal(ours.publicKey.toString('hex'), Buffer.from(x25519.getPublicKey(a)).toString('hex'));
    const nobleShared = Buffer.from(x25519.getSharedSecret(b, ours.publicKey));
    t.same(ours.sharedSecret(x25519.getPublicKey(b)), nobleShared, 'same shared secret as noble');
  }
  const generated = X25519KeyPair.generate();
  t.equal(generated.publicKey.length, 32);
});

t.test('X25519 rejects low-order and malformed peer keys', async (t) => {
  const me = X25519KeyPair.generate();
  const lowOrder = [
    Buffer.alloc(32), // u = 0
    Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]), // u = 1
    hex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'), // order 8
  ];
  for (const k of lowOrder) {
    t.throws(() => me.sharedSecret(k), { code: 'weak_key', name: 'TunnelCryptoError' }, `low-order ${k.toString('hex').slice(0, 8)}…`);
  }
  t.throws(() => me.sharedSecret(Buffer.alloc(31, 1)), { code: 'bad_key', name: 'TunnelCryptoError' });
  t.throws(() => X25519KeyPair.fromPrivate(Buffer.alloc(16)), { code: 'bad_key' });
});

t.test('AEAD key = SHA-256("pilot-tunnel-v1:" ‖ shared), checked with @noble/hashes', async (t) => {
  for (let i = 0; i < 10; i++) {
    const shared = randomBytes(32);
    const expect = Buffer.from(sha256(Buffer.concat([Buffer.from('pilot-tunnel-v1:'), shared])));
    t.same(deriveAeadKey(shared), expect);
  }
});

t.test('AES-256-GCM: NIST vector, seal/open agree with @noble/ciphers both ways', async (t) => {
  // GCM spec test case 14: 256-bit zero key, zero IV, one zero block, no AAD.
  const zero = new AeadKey(Buffer.alloc(32));
  const s = zero.seal(Buffer.alloc(12), Buffer.alloc(16));
  t.equal(s.ciphertext.toString('hex'), 'cea7403d4d606b6e074ec5d3baf39d18');
  t.equal(s.tag.toString('hex'), 'd0d1c8a799996bf0265b98b5d48ab919');

  for (const size of [34, 35, 1200, 4130, 65569]) {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const pt = randomBytes(size);
    const aead = new AeadKey(key);
    const { ciphertext, tag } = aead.seal(nonce, pt);
    const noble = Buffer.from(gcm(key, nonce).encrypt(pt));
    t.same(Buffer.concat([ciphertext, tag]), noble, `seal matches noble at ${size} bytes`);
    t.same(Buffer.from(gcm(key, nonce).decrypt(noble)), pt, 'noble opens ours');
    t.same(aead.open(nonce, noble.subarray(0, size), noble.subarray(size)), pt, 'we open noble');
  }
});

t.test('AEAD open returns null (never throws) on any tampering', async (t) => {
  const key = randomBytes(32);
  const aead = new AeadKey(key);
  const nonce = randomBytes(12);
  const pt = randomBytes(100);
  const { ciphertext, tag } = aead.seal(nonce, pt);
  t.same(aead.open(nonce, ciphertext, tag), pt);
  const flip = (b: Buffer, i: number): Buffer => {
    const c = Buffer.from(b);
    c[i]! ^= 1;
    return c;
  };
  t.equal(aead.open(nonce, flip(ciphertext, 5), tag), null, 'ciphertext bit flip');
  t.equal(aead.open(nonce, ciphertext, flip(tag, 0)), null, 'tag bit flip');
  t.equal(aead.open(flip(nonce, 11), ciphertext, tag), null, 'nonce (counter) changed');
  t.equal(aead.open(nonce, ciphertext.subarray(0, 99), tag), null, 'truncated');
  t.equal(new AeadKey(randomBytes(32)).open(nonce, ciphertext, tag), null, 'wrong key');
  t.equal(aead.open(nonce, ciphertext, tag.subarray(0, 12)), null, 'short tag refused (no truncated-tag forgeries)');
  t.equal(aead.open(nonce.subarray(0, 8), ciphertext, tag), null, 'short nonce');
  t.throws(() => new AeadKey(Buffer.alloc(16)), { code: 'bad_key' });
});

t.test('PILA signature: the exact bytes v1 signs, cross-checked with @noble/curves', async (t) => {
  const seed = randomBytes(32);
  const id = Identity.fromSeed(seed);
  const kp = X25519KeyPair.generate();
  const node = 0x00a3f291;
  const msg = authSignedMessage(node, kp.publicKey);
  t.equal(msg.length, 40);
  t.equal(msg.subarray(0, 8).toString('hex'), Buffer.from('auth').toString('hex') + '00a3f291', '"auth" (no colon) ‖ node BE');
  t.same(msg.subarray(8), kp.publicKey);
  const sig = id.sign(msg);
  t.same(sig, Buffer.from(ed25519.sign(msg, seed)), 'deterministic Ed25519: same bytes as noble');
  const frame = encodeAuthKeyExchange(node, kp.publicKey, id.publicKey, sig);
  const f = decodeTunnelFrame(frame);
  if (f.kind !== 'PILA') throw new Error('not a PILA');
  t.ok(ed25519.verify(f.signature, authSignedMessage(f.node, f.x25519), f.ed25519), 'noble verifies the frame');
  t.notOk(ed25519.verify(f.signature, Buffer.concat([Buffer.from('auth:'), msg.subarray(4)]), f.ed25519), 'the colon form does not verify');
});
