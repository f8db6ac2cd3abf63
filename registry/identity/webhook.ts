/**
 * Webhook join rule (v1's identity webhook, made a join rule): POST {token, node_id, network_id, ...} to
 * an external verifier and accept only {"verified": true, "external_id": "..."}. Reply capped at 4 KiB,
 * 5 s timeout, no redirects, private URLs refused unless allowed, optional HMAC-SHA256 body signature in
 * X-Pilot-Signature-256 (hex, like v1's event webhooks). External ID: "webhook:<external_id>".
 */
import { createHmac } from 'node:crypto';
import { refuse } from './errors.js';
import { boundedFetch, type FetchPolicy } from './fetch.js';
import type { WebhookRule } from './rules.js';
import type { JoinContext, VerifiedIdentity } from './types.js';

export const WEBHOOK_MAX_REPLY = 4096;
export const WEBHOOK_TIMEOUT_MS = 5000;

export async function verifyWebhook(rule: WebhookRule, token: string, ctx: JoinContext, policy: FetchPolicy): Promise<VerifiedIdentity> {
  if (typeof token !== 'string' || token.length === 0 || token.length > 16 * 1024) refuse('bad_proof', 'webhook_token must be a string of 1..16384 characters');
  const body = Buffer.from(
    JSON.stringify({ token, node_id: ctx.nodeId, network_id: ctx.networkId, node_public_key: Buffer.from(ctx.nodePublicKey).toString('base64'), ts: ctx.ts }),
  );
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'pilot-registry-identity' };
  if (rule.secret) headers['x-pilot-signature-256'] = createHmac('sha256', rule.secret).update(body).digest('hex');
  const res = await boundedFetch(rule.url, { method: 'POST', headers, body }, { ...policy, timeoutMs: Math.min(rule.timeout_ms ?? WEBHOOK_TIMEOUT_MS, policy.timeoutMs, WEBHOOK_TIMEOUT_MS), maxBytes: WEBHOOK_MAX_REPLY });
  if (res.status < 200 || res.status > 299) refuse('fetch_http_status', `identity webhook answered HTTP ${res.status}`);
  let reply: unknown;
  try {
    reply = JSON.parse(res.body.toString('utf8'));
  } catch {
    refuse('webhook_reply_invalid', 'identity webhook reply is not JSON');
  }
  if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) refuse('webhook_reply_invalid', 'identity webhook reply is not a JSON object');
  const r = reply as Record<string, unknown>;
  if (r.verified !== true) {
    const why = typeof r.error === 'string' ? `: ${r.error.slice(0, 200)}` : '';
    refuse('webhook_refused', `identity webhook did not verify the token${why}`);
  }
  const id = r.external_id;
  // eslint-disable-next-line no-control-regex
  if (typeof id !== 'string' || id.length === 0 || id.length > 256 || /[\u0000-\u001f\u007f]/.test(id)) refuse('webhook_reply_invalid', 'identity webhook reply needs a non-empty external_id (≤ 256 printable characters)');
  let groups: string[] = [];
  if (r.groups !== undefined) {
    if (!Array.isArray(r.groups) || r.groups.length > 256 || !r.groups.every((g) => typeof g === 'string' && g.length <= 256)) refuse('webhook_reply_invalid', 'groups must be a list of at most 256 strings');
    groups = r.groups as string[];
  }
  return { externalId: `webhook:${id}`, kind: 'webhook', subject: id, issuer: new URL(rule.url).host, groups };
}
