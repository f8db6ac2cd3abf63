// pilotctl end to end: registry + two daemon processes, every command spawned with --json.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ctl, startNetwork, tempDir, until } from './helpers.js';

t.test('pilotctl against real daemons', async (t) => {
  const { a, b } = await startNetwork(t);
  const A = (args: string[], opts = {}) => ctl(t, a.socket, args, opts);
  const B = (args: string[], opts = {}) => ctl(t, b.socket, args, opts);

  // info / error envelope for an unknown peer before any trust exists.
  const info = await A(['info']);
  t.equal(info.code, 0, 'info exits 0');
  t.equal(info.json.status, 'ok', 'info envelope ok');
  t.equal((info.json.data as { node_id: number }).node_id, a.nodeId, 'info node id');

  const bad = await A(['send', 'no-such-peer', '7', '--data', 'x', '--timeout', '5s']);
  t.equal(bad.code, 1, 'bad peer exits 1');
  t.equal(bad.json.status, 'error', 'error envelope');
  t.equal(bad.json.code, 'not_found', 'unknown hostname → not_found');
  t.ok(bad.json.hint && bad.json.hint.length > 0, 'error has a hint');

  const badArg = await A(['recv', 'notaport']);
  t.equal(badArg.json.code, 'invalid_argument', 'bad port → invalid_argument');

  // Trust by hostname: handshake, pending, approve, trust.
  const hs = await A(['handshake', 'bravo', 'e2e test']);
  t.equal(hs.json.status, 'ok', `handshake ok ${hs.stdout}`);
  await until(async () => ((await B(['pending'])).json.data as { pending: unknown[] }).pending.length > 0, 10_000, 'pending at B');
  const ap = await B(['approve', String(a.nodeId)]);
  t.equal(ap.json.status, 'ok', 'approve ok');
  await until(async () => ((await A(['trust'])).json.data as { trusted: Array<{ node_id: number }> }).trusted.some((x) => x.node_id === b.nodeId), 10_000, 'A trusts B');

  const peers = await A(['peers']);
  t.equal(peers.json.status, 'ok', 'peers ok');

  // send to echo, connect --message.
  const s = await A(['send', 'bravo', '7', '--data', 'hello echo']);
  t.equal((s.json.data as { response: string }).response, 'hello echo', 'send → echo reply');
  const c = await A(['connect', String(b.nodeId), '7', '--message', 'via connect']);
  t.equal((c.json.data as { response: string }).response, 'via connect', 'connect --message → echo reply');

  // recv on B, send from A.
  const recv = B(['recv', '4000', '--count', '1', '--timeout', '15s']);
  await until(async () => ((await B(['connections'])).json.status === 'ok'), 2000);
  let sent = false;
  for (let i = 0; i < 20 && !sent; i++) {
    const r = await A(['send', 'bravo', '4000', '--data', 'to recv', '--timeout', '2s']);
    sent = r.json.status === 'ok' || r.json.code === 'timeout';
    if (!sent) await new Promise((res) => setTimeout(res, 300));
  }
  const rr = await recv;
  t.equal(rr.json.status, 'ok', `recv ok ${rr.stdout}`);
  t.equal((rr.json.data as { messages: Array<{ data: string }> }).messages[0]?.data, 'to recv', 'recv got the message');

  // send-file with SHA-256 verification on the receiver's disk; send-message; received/inbox.
  const dir = tempDir(t, 'pilotctl-f-');
  const path = join(dir, 'report.bin');
  const blob = randomBytes(1024 * 1024 + 3);
  writeFileSync(path, blob);
  const sf = await A(['send-file', 'bravo', path]);
  t.equal(sf.json.status, 'ok', 'send-file ok');
  const sha = createHash('sha256').update(blob).digest('hex');
  t.equal((sf.json.data as { sha256: string }).sha256, sha, 'send-file reports the file hash');
  const saved = readdirSync(join(b.dir, 'received')).filter((n) => n.startsWith('report'));
  t.equal(createHash('sha256').update(readFileSync(join(b.dir, 'received', saved[0]!))).digest('hex'), sha, 'received file hash matches');
  const rec = await B(['received']);
  t.ok((rec.json.data as { files: Array<{ name: string }> }).files.some((f) => f.name.startsWith('report')), 'received lists the file');
  const sm = await A(['send-message', 'bravo', '--data', '{"k":1}', '--type', 'json']);
  t.equal((sm.json.data as { type: string }).type, 'JSON', 'send-message json ACK');
  const inbox = await B(['inbox']);
  t.ok((inbox.json.data as { messages: unknown[] }).messages.length >= 1, 'inbox lists the message');

});
