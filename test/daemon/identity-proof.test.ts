// The daemon's identity-proof builder (daemon/identity-proof.ts): argument parsing, secret sources (file,
// command), token expiry and renewal times, certificate + key loading, and proofs of possession checked
// by the registry's own verifier for every key type.
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  jwtExpiry,
  loadCertMaterial,
  parseProofSpec,
  persistableSpec,
  popChallenge,
  prepareProof,
  readSecretFile,
  runSecretCommand,
  signPop,
  TokenSource,
} from '../../daemon/identity-proof.js';
import { popChallenge as registryPopChallenge } from '../../registry/identity/index.js';
import { checkPop } from '../../registry/identity/pop.js';
import { issue, makeRoot, type KeyAlg } from '../identity/fixtures/pki.js';
import { tempDir } from './daemon-helpers.js';

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? 'no-code';
  }
}

function jwt(payload: Record<string, unknown>): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256', kid: 'k' })}.${b(payload)}.c2lnbmF0dXJl`;
}

t.test('parseProofSpec: one proof per join, paired fields, absolute paths', async (t) => {
  t.equal(parseProofSpec({ network_id: 3, token: 'x' }), null, 'no proof fields: a plain join');
  t.same(parseProofSpec({ oidc_token_file: '/run/t' }), { kind: 'oidc', token: { file: '/run/t' } });
  t.same(parseProofSpec({ oidc_token_command: 'get-token' }), { kind: 'oidc', token: { command: 'get-token' } });
  t.same(parseProofSpec({ svid_cert: '/a.pem', svid_key: '/a.key' }), { kind: 'svid', cert: '/a.pem', key: '/a.key' });
  t.same(parseProofSpec({ ldap_user: 'alice', ldap_password_file: '/pw' }), { kind: 'ldap', user: 'alice', password: { file: '/pw' } });
  t.equal(await code(() => parseProofSpec({ oidc_token: 'a', cert: '/c', cert_key: '/k' })), 'bad_value', 'two proofs refused');
  t.equal(await code(() => parseProofSpec({ oidc_token: 'a', oidc_token_file: '/f' })), 'bad_value', 'one token given twice refused');
  t.equal(await code(() => parseProofSpec({ svid_cert: '/c' })), 'bad_value', 'certificate without key refused');
  t.equal(await code(() => parseProofSpec({ ldap_user: 'alice' })), 'bad_value', 'LDAP user without password refused');
  t.equal(await code(() => parseProofSpec({ oidc_token_file: 'relative/token' })), 'bad_value', 'relative paths refused (the daemon has another cwd)');
  t.equal(await code(() => parseProofSpec({ oidc_token: 42 })), 'bad_value', 'non-strings refused');
  t.equal(persistableSpec({ kind: 'oidc', token: { inline: 'secret' } }), null, 'inline secrets are never kept');
  t.ok(persistableSpec({ kind: 'ldap', user: 'a', password: { file: '/pw' } }), 'files are kept');
});

t.test('secret sources: files and commands, bounded, contents never in errors', async (t) => {
  const dir = tempDir(t, 'proof-');
  const f = join(dir, 'token');
  writeFileSync(f, '  s3cret-token-value\n');
  t.equal(await readSecretFile(f), 's3cret-token-value', 'trimmed');
  writeFileSync(join(dir, 'empty'), '\n');
  t.equal(await code(readSecretFile(join(dir, 'empty'))), 'proof_source_unreadable', 'empty file refused');
  writeFileSync(join(dir, 'big'), 'x'.repeat(20_000));
  t.equal(await code(readSecretFile(join(dir, 'big'))), 'proof_source_unreadable', 'oversize file refused');
  const missing = await readSecretFile(join(dir, 'nope')).catch((e: Error) => e.message);
  t.match(missing, /ENOENT/, 'a missing file names the error');
  writeFileSync(join(dir, 'locked'), 'hidden-value');
  chmodSync(join(dir, 'locked'), 0o000);
  if (process.getuid?.() !== 0) t.equal(await code(readSecretFile(join(dir, 'locked'))), 'proof_source_unreadable', 'unreadable file refused');

  t.equal(await runSecretCommand("printf 'tok-from-command\\n'"), 'tok-from-command', 'command stdout is the secret');
  const failed = await runSecretCommand('echo leaked-secret >&2; exit 3').catch((e: { code: string; message: string }) => e);
  t.match(failed, { code: 'token_command_failed', message: /status 3/ }, 'a failing command says how it failed');
  t.notOk((failed as { message: string }).message.includes('leaked-secret'), "its stderr is not repeated");
  t.equal(await code(runSecretCommand('true')), 'token_command_failed', 'empty output refused');
  t.equal(await code(runSecretCommand('sleep 5', 200)), 'token_command_failed', 'a hanging command times out');
});

t.test('TokenSource: cached until near expiry, renewed from its source', async (t) => {
  const dir = tempDir(t, 'tok-');
  const f = join(dir, 'token.jwt');
  let now = 1_000_000_000_000;
  const first = jwt({ sub: 'a', exp: now / 1000 + 3600 });
  writeFileSync(f, first);
  const src = new TokenSource({ file: f }, () => now);
  t.equal(await src.get(), first);
  t.equal(src.expiresAt, now + 3_600_000, 'exp read from the token');
  t.equal(src.renewAt(), now + 3_600_000 - 360_000, 'renew a tenth of the lifetime before expiry');
  const second = jwt({ sub: 'a', exp: now / 1000 + 7200 });
  writeFileSync(f, second);
  t.equal(await src.get(), first, 'a fresh token is served from the cache');
  now += 3_600_000 - 30_000;
  t.equal(await src.get(), second, 'within 60 s of expiry the file is read again');
  t.equal(jwtExpiry('not-a-jwt'), null);
  t.equal(jwtExpiry(jwt({ sub: 'x' })), null, 'no exp, no renewal time');
  t.equal(new TokenSource({ inline: first }, () => now).renewAt(), null, 'inline tokens are not renewed');
});

t.test('certificates: chain + key loaded, mismatches and garbage refused without echoing keys', async (t) => {
  const dir = tempDir(t, 'cert-');
  const root = await makeRoot({ name: 'CN=Test Root' });
  const leaf = await issue(root, { name: 'CN=node' });
  const other = await issue(root, { name: 'CN=other' });
  const pem = (k: typeof leaf) => k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  writeFileSync(join(dir, 'leaf.pem'), leaf.pem + '\n' + root.pem);
  writeFileSync(join(dir, 'leaf.key'), pem(leaf));
  writeFileSync(join(dir, 'other.key'), pem(other));
  writeFileSync(join(dir, 'garbage.key'), 'not a key at all');
  writeFileSync(join(dir, 'garbage.pem'), 'no certificate here');
  const m = await loadCertMaterial(join(dir, 'leaf.pem'), join(dir, 'leaf.key'));
  t.match(m.subject, /CN=node/);
  t.ok(m.chainPem.includes(root.pem.trim()), 'the whole chain is sent');
  t.equal(await code(loadCertMaterial(join(dir, 'leaf.pem'), join(dir, 'other.key'))), 'cert_key_mismatch');
  t.equal(await code(loadCertMaterial(join(dir, 'garbage.pem'), join(dir, 'leaf.key'))), 'bad_certificate');
  const bad = await loadCertMaterial(join(dir, 'leaf.pem'), join(dir, 'garbage.key')).catch((e: { code: string; message: string }) => e);
  t.equal((bad as { code: string }).code, 'bad_key');
  t.notOk((bad as { message: string }).message.includes('not a key at all'), 'key contents are not echoed');
  t.ok(await loadCertMaterial(leaf.pem, pem(leaf)), 'PEM text works as well as paths');
});

t.test('proof of possession: the registry verifier accepts our signatures for every key type', async (t) => {
  const ctx = { networkId: 9, nodeId: 77, nodePublicKey: Buffer.alloc(32, 7), ts: Date.now() };
  t.equal(popChallenge(ctx), registryPopChallenge(ctx), 'same challenge text as the registry');
  const root = await makeRoot({ name: 'CN=PoP Root' });
  for (const alg of ['p256', 'p384', 'rsa', 'ed25519'] as KeyAlg[]) {
    const leaf = await issue(root, { name: `CN=${alg}`, alg });
    const sig = signPop(leaf.privateKey, ctx);
    t.doesNotThrow(() => checkPop(createPublicKey(leaf.privateKey), sig, ctx, ctx.ts, 120_000), `${alg}: verified by the registry`);
    t.throws(() => checkPop(createPublicKey(leaf.privateKey), sig, { ...ctx, networkId: 10 }, ctx.ts, 120_000), `${alg}: bound to the network`);
  }
  const p521 = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
  t.doesNotThrow(() => checkPop(p521.publicKey, signPop(p521.privateKey, ctx), ctx, ctx.ts, 120_000), 'P-521 with SHA-512');

  const leaf = await issue(root, { name: 'CN=proof' });
  const build = await prepareProof({ kind: 'svid', cert: leaf.pem, key: leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }, ctx);
  const proof = build(ctx.ts + 5);
  t.equal(proof.svid_chain, leaf.pem, 'SVID chain in svid_chain');
  t.doesNotThrow(() => checkPop(createPublicKey(leaf.privateKey), proof.pop_signature, { ...ctx, ts: ctx.ts + 5 }, ctx.ts, 120_000), "the PoP is bound to the request's ts");
  const ldap = await prepareProof({ kind: 'ldap', user: 'alice', password: { inline: 'pw' } }, ctx);
  t.same(ldap(1), { ldap_user: 'alice', ldap_password: 'pw' });
});
