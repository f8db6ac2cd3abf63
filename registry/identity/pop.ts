/**
 * The proof-of-possession challenge a node signs with its certificate's private key (X.509-SVID and
 * enterprise-CA rules). It binds everything that makes a join unique, so a signature cannot be replayed into
 * another network, for another node or Pilot key, or (with the registry's ±60 s `ts` window and replay
 * check on the signed join request) at another time.
 *
 * Format (UTF-8, lines joined by "\n", no trailing newline):
 *   pilot-join-pop:v1
 *   network:<networkId decimal>
 *   node:<nodeId decimal>
 *   key:<node's Ed25519 public key, standard base64>
 *   ts:<unix ms decimal>
 */
import type { KeyObject } from 'node:crypto';
import { refuse } from './errors.js';
import { verifyPop } from './x509.js';

export interface PopContext {
  networkId: number;
  nodeId: number;
  nodePublicKey: Buffer;
  ts: number;
}

export const POP_DOMAIN = 'pilot-join-pop:v1';

export function popChallenge(ctx: PopContext): string {
  return [POP_DOMAIN, `network:${ctx.networkId}`, `node:${ctx.nodeId}`, `key:${Buffer.from(ctx.nodePublicKey).toString('base64')}`, `ts:${ctx.ts}`].join('\n');
}

/** Refuse unless `signature` is the certificate key's signature over popChallenge(ctx) and ts is fresh. */
export function checkPop(key: KeyObject, signature: unknown, ctx: PopContext, now: number, maxSkewMs: number): void {
  if (typeof signature !== 'string' || signature.length === 0) refuse('pop_missing', 'a certificate proof needs pop_signature: a signature by the certificate key over the join challenge');
  if (!Number.isSafeInteger(ctx.ts) || Math.abs(now - ctx.ts) > maxSkewMs) refuse('pop_stale', `join timestamp is more than ${maxSkewMs / 1000} s away from the registry clock`);
  if (!verifyPop(key, popChallenge(ctx), signature)) refuse('pop_invalid', 'pop_signature does not verify with the certificate key (wrong key or wrong challenge)');
}
