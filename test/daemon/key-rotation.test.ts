// Journaled key rotation (daemon/key-rotation.ts): the identity file only ever holds the key the registry
// holds, whichever step fails or crashes — definite refusals, lost replies, and a journal left behind.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { journalPath, rotateIdentity, settleRotation } from '../../daemon/key-rotation.js';
import { RegistryError } from '../../registry/errors.js';
import { Identity } from '../../transport/identity.js';
import { tempDir } from './daemon-helpers.js';

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ path: string; current: Identity }> {
  const dir = tempDir(t, 'rot-');
  const path = join(dir, 'identity.key');
  const current = await Identity.load(path, { create: true });
  return { path, current };
}

const filePub = (path: string): string => (JSON.parse(readFileSync(path, 'utf8')) as { public_key: string }).public_key;

t.test('success: the identity file holds the new key, the journal is gone', async (t) => {
  const { path, current } = await setup(t);
  let signedBy = '';
  let named = '';
  const next = await rotateIdentity({
    identityPath: path,
    current,
    nodeId: 5,
    rotate: async (pub) => {
      t.ok(existsSync(journalPath(path)), 'the journal is on disk before the registry is asked');
      signedBy = current.publicKeyB64;
      named = pub;
    },
    registryKey: async () => null,
  });
  t.equal(named, next.publicKeyB64, 'the registry was asked for the new key');
  t.equal(signedBy, current.publicKeyB64);
  t.equal(filePub(path), next.publicKeyB64, 'identity file replaced');
  t.notOk(existsSync(journalPath(path)), 'journal removed');
  t.equal((await Identity.load(path)).publicKeyB64, next.publicKeyB64, 'the file loads as the new identity');
});

t.test('a definite refusal leaves the old key in place', async (t) => {
  const { path, current } = await setup(t);
  const err = await rotateIdentity({
    identityPath: path,
    current,
    nodeId: 5,
    rotate: async () => {
      throw new RegistryError('conflict', 'rotated concurrently, retry');
    },
    registryKey: async () => current.publicKeyB64,
  }).catch((e: { code: string }) => e.code);
  t.equal(err, 'conflict');
  t.equal(filePub(path), current.publicKeyB64, 'identity file unchanged');
  t.notOk(existsSync(journalPath(path)), 'journal removed');
});

t.test('a lost reply is settled by asking the registry which key it holds', async (t) => {
  const { path, current } = await setup(t);
  let held = current.publicKeyB64;
  const next = await rotateIdentity({
    identityPath: path,
    current,
    nodeId: 5,
    rotate: async (pub) => {
      held = pub; // applied, but the reply never arrives
      throw new RegistryError('connection_lost', 'connection to the registry was lost with the request in flight');
    },
    registryKey: async () => held,
  });
  t.equal(filePub(path), next.publicKeyB64, 'the registry had applied it: rotation completed');
  t.notOk(existsSync(journalPath(path)));

  const second = await setup(t);
  const code = await rotateIdentity({
    identityPath: second.path,
    current: second.current,
    nodeId: 6,
    rotate: async () => {
      throw new RegistryError('timeout', 'registry did not answer in time');
    },
    registryKey: async () => second.current.publicKeyB64,
  }).catch((e: { code: string }) => e.code);
  t.equal(code, 'timeout', 'not applied: the error is reported');
  t.equal(filePub(second.path), second.current.publicKeyB64, 'old key kept');
  t.notOk(existsSync(journalPath(second.path)), 'journal removed');
});

t.test('a journal left behind (crash, registry unreachable) is settled at start-up', async (t) => {
  for (const applied of [true, false]) {
    const { path, current } = await setup(t);
    let nextPub = '';
    await rotateIdentity({
      identityPath: path,
      current,
      nodeId: 9,
      rotate: async (pub) => {
        nextPub = pub;
        throw new RegistryError('timeout', 'no answer');
      },
      registryKey: async () => {
        throw new RegistryError('connection_lost', 'unreachable');
      },
    }).catch(() => undefined);
    t.ok(existsSync(journalPath(path)), 'outcome unknown: the journal stays');
    t.equal(filePub(path), current.publicKeyB64, 'and the file keeps the old key meanwhile');
    let asked = 0;
    const used = await settleRotation({
      identityPath: path,
      current,
      retryMs: 10,
      registryKey: async (node) => {
        t.equal(node, 9, 'asks about the journal node');
        if (++asked === 1) throw new RegistryError('connection_lost', 'still down');
        return applied ? nextPub : current.publicKeyB64;
      },
    });
    t.equal(asked, 2, 'retried until the registry answered');
    t.equal(used.publicKeyB64, applied ? nextPub : current.publicKeyB64, applied ? 'applied: the new key is used' : 'not applied: the old key is used');
    t.equal(filePub(path), used.publicKeyB64, 'the file matches');
    t.notOk(existsSync(journalPath(path)), 'journal removed');
  }
  const { path, current } = await setup(t);
  t.equal(await settleRotation({ identityPath: path, current, registryKey: async () => 'x' }), current, 'no journal: nothing to do');
});
