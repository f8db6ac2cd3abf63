/**
 * Key rotation for the daemon's identity (issue 6 "key lifecycle"; registry `rotate_key`, registry/ENTERPRISE.md).
 *
 * The registry maps a node ID to one Ed25519 key, and the identity file is the only copy of the private
 * key, so the order of steps decides whether a crash can lock the node out:
 *   1. generate the new identity and write a journal `<identity>.rotating` (0600, fsynced) holding the node
 *      ID, the old public key and the new key pair;
 *   2. ask the registry to rotate (signed by the old key over `rotate:<node>:<new key>`);
 *   3. on success replace the identity file atomically (temp file, fsync, rename) and delete the journal;
 *      on a definite refusal delete the journal; on an unknown outcome (timeout, lost connection) ask the
 *      registry which key it now holds and finish accordingly.
 * A journal found at start-up is settled the same way before the daemon registers (`settleRotation`), so
 * the node ID is kept whichever step a crash interrupted.
 */
import { readFile, unlink } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Identity } from '../transport/identity.js';
import { PilotError } from '../transport/errors.js';
import { writeFileAtomic } from './datadir.js';

export class KeyRotationError extends PilotError {}

export interface RotationJournal {
  node_id: number;
  old_public_key: string;
  next: { private_key: string; public_key: string };
}

export function journalPath(identityPath: string): string {
  return `${identityPath}.rotating`;
}

/** The identity file's bytes (v1 JSON, as Identity.save writes it). */
export function identityFileText(id: Identity): string {
  return JSON.stringify(id.toJSON(), null, 2) + '\n';
}

/** Codes after which we cannot know whether the registry applied the rotation. */
const UNKNOWN_OUTCOME = new Set(['timeout', 'connection_lost', 'closed', 'queue_full']);

export interface RotateOptions {
  identityPath: string;
  current: Identity;
  nodeId: number;
  /** Registry rotate_key signed by `current` (rejects with a coded error). */
  rotate: (newPublicKeyB64: string) => Promise<unknown>;
  /** The public key the registry holds for a node (unsigned lookup); null if unknown. */
  registryKey: (nodeId: number) => Promise<string | null>;
  generate?: () => Identity;
  log?: Logger;
}

/** Rotate and persist; resolves with the identity now registered (the new one). */
export async function rotateIdentity(o: RotateOptions): Promise<Identity> {
  const next = (o.generate ?? Identity.generate)();
  const journal: RotationJournal = { node_id: o.nodeId, old_public_key: o.current.publicKeyB64, next: next.toJSON() };
  const jPath = journalPath(o.identityPath);
  await writeFileAtomic(jPath, JSON.stringify(journal) + '\n', 0o600);
  try {
    await o.rotate(next.publicKeyB64);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && UNKNOWN_OUTCOME.has(code)) {
      // Did the registry apply it before the connection failed? Ask; if we cannot tell, keep the journal
      // (the next start settles it) and report.
      const held = await o.registryKey(o.nodeId).catch(() => undefined);
      if (held === next.publicKeyB64) {
        await commit(o.identityPath, next, jPath);
        o.log?.warn({ node_id: o.nodeId }, 'key rotation: reply lost, but the registry holds the new key; rotation completed');
        return next;
      }
      if (held === o.current.publicKeyB64) await unlink(jPath).catch(() => undefined);
    } else await unlink(jPath).catch(() => undefined);
    throw err;
  }
  await commit(o.identityPath, next, jPath);
  return next;
}

async function commit(identityPath: string, next: Identity, jPath: string): Promise<void> {
  await writeFileAtomic(identityPath, identityFileText(next), 0o600);
  await unlink(jPath).catch(() => undefined);
}

async function readJournal(path: string): Promise<RotationJournal | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KeyRotationError('journal_unreadable', `cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    const j = JSON.parse(text) as RotationJournal;
    if (!Number.isInteger(j.node_id) || typeof j.old_public_key !== 'string' || typeof j.next?.private_key !== 'string') throw new Error('shape');
    Identity.fromJSON(j.next); // validates the key pair
    return j;
  } catch {
    throw new KeyRotationError('journal_corrupt', `${path} is not a valid rotation journal; move it away after checking which key the registry holds`);
  }
}

/**
 * Finish or discard an interrupted rotation before registering. Returns the identity to use. Retries
 * the registry look-up (via `registryKey`'s own failures) until it answers, unless `stop()` says so.
 */
export async function settleRotation(o: {
  identityPath: string;
  current: Identity;
  registryKey: (nodeId: number) => Promise<string | null>;
  log?: Logger;
  stop?: () => boolean;
  retryMs?: number;
}): Promise<Identity> {
  const jPath = journalPath(o.identityPath);
  const j = await readJournal(jPath);
  if (!j) return o.current;
  const next = Identity.fromJSON(j.next);
  let delay = o.retryMs ?? 500;
  for (;;) {
    let held: string | null | undefined;
    try {
      held = await o.registryKey(j.node_id);
    } catch (err) {
      if (o.stop?.()) throw new KeyRotationError('closed', 'stopped while settling an interrupted key rotation');
      o.log?.warn({ err: (err as Error).message, retry_ms: delay }, 'key rotation journal: registry unreachable, retrying');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
      continue;
    }
    if (held === next.publicKeyB64) {
      await commit(o.identityPath, next, jPath);
      o.log?.warn({ node_id: j.node_id }, 'key rotation journal: the registry holds the new key; identity file updated');
      return next;
    }
    // The registry kept the old key (or does not know the node): the rotation never happened.
    await unlink(jPath).catch(() => undefined);
    o.log?.warn({ node_id: j.node_id }, 'key rotation journal: the registry kept the old key; interrupted rotation discarded');
    return o.current;
  }
}
