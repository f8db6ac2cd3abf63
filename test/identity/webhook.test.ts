/**
 * Webhook join rule against a node:http verifier: verified, refused, oversize, timeout, non-JSON,
 * HMAC signature, and the private-URL guard.
 */
import t from 'tap';
import { createHmac } from 'node:crypto';
import { IdentityVerifier, parseIdentityRule, isPrivateAddress, type WebhookRule } from '../../registry/identity/index.js';
import { startHttpServer, json } from './fixtures/http.js';
import { refused, joinContext } from './fixtures/assert.js';

t.test('identity webhook', async (t) => {
  const srv = await startHttpServer(t);
  const v = new IdentityVerifier({ allowPrivateUrls: true, allowHttp: true });
  t.teardown(() => v.close());
  const ctx = joinContext(Date.now(), 9, 77);
  const rule = (path: string, extra: Record<string, unknown> = {}) => parseIdentityRule({ kind: 'webhook', url: `${srv.url}${path}`, ...extra }) as WebhookRule;
  let seen: { body: Record<string, unknown>; sig: string | undefined } | undefined;
  srv.routes.set('/ok', (req, body, res) => {
    seen = { body: JSON.parse(body.toString()) as Record<string, unknown>, sig: req.headers['x-pilot-signature-256'] as string | undefined };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ verified: true, external_id: 'emp-1234', groups: ['eng'] }));
  });

  const id = await v.verify(rule('/ok'), { webhook_token: 'tok-abc' }, ctx);
  t.equal(id.externalId, 'webhook:emp-1234');
  t.same(id.groups, ['eng']);
  t.equal(seen?.body.token, 'tok-abc', 'token forwarded');
  t.equal(seen?.body.node_id, 77);
  t.equal(seen?.body.network_id, 9);
  t.equal(seen?.body.node_public_key, ctx.nodePublicKey.toString('base64'));
  t.equal(seen?.sig, undefined, 'no signature header without a secret');

  await v.verify(rule('/ok', { secret: 'hmac-key' }), { webhook_token: 'tok-abc' }, ctx);
  const expected = createHmac('sha256', 'hmac-key').update(JSON.stringify(seen!.body)).digest('hex');
  t.equal(seen?.sig, expected, 'X-Pilot-Signature-256 = hex HMAC-SHA256 of the body');

  srv.routes.set('/no', json({ verified: false, error: 'user disabled' }));
  const e = await refused(t, v.verify(rule('/no'), { webhook_token: 'x' }, ctx), 'webhook_refused', 'verified false');
  t.match(e?.message, /user disabled/, 'the verifier reason is passed on');
  srv.routes.set('/empty-id', json({ verified: true, external_id: '' }));
  await refused(t, v.verify(rule('/empty-id'), { webhook_token: 'x' }, ctx), 'webhook_reply_invalid', 'empty external_id');
  srv.routes.set('/truthy', json({ verified: 'true', external_id: 'a' }));
  await refused(t, v.verify(rule('/truthy'), { webhook_token: 'x' }, ctx), 'webhook_refused', '"true" string is not true');
  srv.routes.set('/html', (_r, _b, res) => res.end('<html>ok</html>'));
  await refused(t, v.verify(rule('/html'), { webhook_token: 'x' }, ctx), 'webhook_reply_invalid', 'non-JSON reply');
  srv.routes.set('/big', json({ verified: true, external_id: 'a', pad: 'x'.repeat(5000) }));
  await refused(t, v.verify(rule('/big'), { webhook_token: 'x' }, ctx), 'fetch_too_large', 'reply over 4 KiB');
  srv.routes.set('/500', json({ verified: true, external_id: 'a' }, 500));
  await refused(t, v.verify(rule('/500'), { webhook_token: 'x' }, ctx), 'fetch_http_status', 'HTTP 500 with a "verified" body');
  srv.routes.set('/redirect', (_r, _b, res) => {
    res.statusCode = 302;
    res.setHeader('location', 'http://169.254.169.254/');
    res.end();
  });
  await refused(t, v.verify(rule('/redirect'), { webhook_token: 'x' }, ctx), 'fetch_http_status', 'redirects are not followed');
  srv.routes.set('/slow', () => undefined);
  await refused(t, v.verify(rule('/slow', { timeout_ms: 300 }), { webhook_token: 'x' }, ctx), 'fetch_timeout', 'no answer within the timeout');
  await refused(t, v.verify(rule('/ok'), {}, ctx), 'proof_missing', 'no token');

  const strict = new IdentityVerifier({ allowHttp: true });
  t.teardown(() => strict.close());
  const before = srv.hitCount('/ok');
  await refused(t, strict.verify(rule('/ok'), { webhook_token: 'x' }, ctx), 'url_not_allowed', 'loopback webhook refused by default');
  await refused(t, strict.verify(parseIdentityRule({ kind: 'webhook', url: 'http://localhost:1/x' }) as WebhookRule, { webhook_token: 'x' }, ctx), 'url_not_allowed', 'localhost refused');
  await refused(t, strict.verify(parseIdentityRule({ kind: 'webhook', url: 'http://[::ffff:127.0.0.1]:1/x' }) as WebhookRule, { webhook_token: 'x' }, ctx), 'url_not_allowed', 'IPv4-mapped loopback refused');
  t.equal(srv.hitCount('/ok'), before, 'nothing was sent');
  const httpsOnly = new IdentityVerifier({ allowPrivateUrls: true });
  t.teardown(() => httpsOnly.close());
  await refused(t, httpsOnly.verify(rule('/ok'), { webhook_token: 'x' }, ctx), 'url_not_allowed', 'plain http refused by default');
});

t.test('private address classification', async (t) => {
  for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '::ffff:7f00:1', '224.0.0.1', 'not-an-ip']) {
    t.ok(isPrivateAddress(a), `${a} is private`);
  }
  for (const a of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '::ffff:808:808']) t.notOk(isPrivateAddress(a), `${a} is public`);
});
