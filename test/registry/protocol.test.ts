import { randomBytes } from 'node:crypto';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { ErrorCodes, RegistryError } from '../../registry/errors.js';
import { challenges } from '../../registry/protocol/challenges.js';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, parseFrameObject } from '../../registry/protocol/framing.js';
import { ADMIN, RawConn, registerNode, sign, startRegistry, TestClock } from './helpers.js';

t.test('FrameDecoder: split, coalesced and empty frames', async (t) => {
  const d = new FrameDecoder();
  const a = encodeFrame({ type: 'a' });
  const b = encodeFrame({ type: 'b', x: 'é' });
  const both = Buffer.concat([a, b]);
  const out: string[] = [];
  for (let i = 0; i < both.length; i++) for (const f of d.push(both.subarray(i, i + 1))) out.push(f.toString());
  t.same(out, ['{"type":"a"}', '{"type":"b","x":"é"}'], 'byte-by-byte');
  t.same(
    d.push(Buffer.concat([both, both])).map((f) => f.toString()),
    ['{"type":"a"}', '{"type":"b","x":"é"}', '{"type":"a"}', '{"type":"b","x":"é"}'],
  );
  t.equal(d.push(Buffer.from([0, 0, 0, 0]))[0]!.length, 0, 'zero-length frame is a frame');
  t.equal(d.pendingBytes, 0);
});

t.test('FrameDecoder: length above 1 MiB is too_large; exactly 1 MiB is accepted', async (t) => {
  const d = new FrameDecoder();
  const h = Buffer.alloc(4);
  h.writeUInt32BE(MAX_FRAME_BYTES + 1);
  t.throws(() => d.push(h), { code: 'too_large' });
  const ok = new FrameDecoder();
  h.writeUInt32BE(MAX_FRAME_BYTES);
  t.same(ok.push(h), []);
  t.equal(ok.push(Buffer.alloc(MAX_FRAME_BYTES, 0x20))[0]!.length, MAX_FRAME_BYTES);
});

t.test('fuzz: decoder and parser only ever raise RegistryError', async (t) => {
  let frames = 0;
  for (let i = 0; i < 2000; i++) {
    const d = new FrameDecoder(4096);
    const garbage = randomBytes(1 + (i % 64));
    if (i % 3 === 0 && garbage.length >= 4) garbage.writeUInt32BE(garbage.length - 4, 0);
    try {
      for (const f of d.push(garbage)) {
        frames++;
        try {
          parseFrameObject(f);
        } catch (err) {
          if (!(err instanceof RegistryError) || err.code !== 'bad_request') throw err;
        }
      }
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
    }
  }
  t.ok(frames > 0, 'some garbage formed frames');
  for (const body of ['', '[]', '1', '"x"', 'null', '{', '{"type":']) t.throws(() => parseFrameObject(Buffer.from(body)), { code: 'bad_request' }, JSON.stringify(body));
  t.throws(() => parseFrameObject(Buffer.from([0x7b, 0xff, 0x7d])), { code: 'bad_request', message: /UTF-8/ });
});

t.test('server: malformed input gets a clear error, keeps the connection, changes nothing', async (t) => {
  const h = await startRegistry(t);
  await registerNode(h.client);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const before = h.dump();
  const cases: Array<[string | Buffer, string, RegExp]> = [
    ['not json', 'bad_request', /not valid JSON/],
    ['[1,2]', 'bad_request', /JSON object/],
    ['', 'bad_request', /empty frame/],
    [Buffer.from([0x7b, 0xc3, 0x7d]), 'bad_request', /UTF-8/],
    ['{}', 'bad_request', /missing field "type"/],
    ['{"type":42}', 'bad_request', /type must be a string/],
    ['{"type":"teleport"}', 'unknown_type', /unknown request type "teleport"/],
    ['{"type":"subscribe_replication","token":"x"}', 'unknown_type', /replication/],
    ['{"type":"lookup","node_id":"1"}', 'bad_request', /node_id must be an integer/],
    ['{"type":"lookup"}', 'bad_request', /missing field "node_id"/],
    ['{"type":"set_hostname","node_id":1,"hostname":7,"ts":1,"signature":"x"}', 'bad_request', /hostname must be a string/],
    ['{"type":"heartbeat","node_id":1}', 'bad_signature', /missing field "signature"/],
    ['{"type":"heartbeat","node_id":1,"signature":"x","ts":"now"}', 'bad_request', /ts must be an integer/],
    ['{"type":"heartbeat","node_id":1,"signature":"!!","ts":1}', 'bad_signature', /64 bytes/],
  ];
  for (const [body, code, msg] of cases) {
    raw.sendBody(body);
    const r = await raw.next();
    t.match(r, { type: 'error', code, error: msg }, String(body));
  }
  t.same(h.dump(), before, 'state unchanged');
  t.equal((await raw.request({ type: 'lookup', node_id: 1 })).type, 'lookup_ok', 'connection still usable');
});

t.test('server: a frame above 1 MiB is refused with too_large and the connection closed', async (t) => {
  const h = await startRegistry(t);
  const raw = await RawConn.open(h.port);
  const before = h.dump();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(MAX_FRAME_BYTES + 1);
  raw.sendBytes(header);
  raw.sendBytes(Buffer.alloc(64 * 1024, 0x20));
  const r = await raw.next();
  t.match(r, { type: 'error', code: 'too_large', error: /exceeds/ });
  await raw.closedP;
  t.ok(raw.closed, 'connection closed');
  t.same(h.dump(), before);
  const again = await RawConn.open(h.port);
  t.teardown(() => again.close());
  t.equal((await again.request({ type: 'list_networks' })).type, 'list_networks_ok', 'server still serves others');
});

t.test('pipelining: replies come back in request order, also mixing slow (signed) and fast requests', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const now = Date.now();
  const reqs: unknown[] = [];
  for (let i = 0; i < 40; i++) {
    if (i % 2 === 0) reqs.push({ type: 'heartbeat', node_id: n.nodeId, ...sign(n.identity, challenges.heartbeat(n.nodeId), now + i) });
    else reqs.push({ type: 'lookup', node_id: i % 4 === 1 ? n.nodeId : 999 });
  }
  raw.sendBytes(Buffer.concat(reqs.map((r) => encodeFrame(r))));
  for (let i = 0; i < 40; i++) {
    const r = await raw.next();
    const want = i % 2 === 0 ? 'heartbeat_ok' : i % 4 === 1 ? 'lookup_ok' : 'error';
    t.equal(r?.type, want, `reply ${i}`);
  }
});

t.test('fresh signatures: forged, stale (past and future), replayed, missing ts', async (t) => {
  const clock = new TestClock();
  const h = await startRegistry(t, { clock });
  const n = await registerNode(h.client);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const hb = (fields: object): Promise<Record<string, unknown>> => raw.request({ type: 'heartbeat', node_id: n.nodeId, ...fields });
  const now = clock.now();
  const before = h.dump();

  t.match(await hb(sign(Identity.generate(), challenges.heartbeat(n.nodeId), now)), { code: 'bad_signature', error: /does not verify/ }, 'wrong key');
  t.match(await hb(sign(n.identity, challenges.heartbeat(n.nodeId + 1), now)), { code: 'bad_signature' }, 'signature for another challenge');
  const good = sign(n.identity, challenges.heartbeat(n.nodeId), now);
  t.match(await hb({ ts: now + 1, signature: good.signature }), { code: 'bad_signature' }, 'ts not covered by the signature');
  t.match(await hb({ ...good, signature: good.signature.slice(0, -4) + 'AAA=' }), { code: 'bad_signature' });
  t.match(await hb({ ...good, signature: 'not base64!' }), { code: 'bad_signature' });
  t.match(await hb(sign(n.identity, challenges.heartbeat(n.nodeId), now - 61_000)), { code: 'stale_signature', error: /past/ });
  t.match(await hb(sign(n.identity, challenges.heartbeat(n.nodeId), now + 61_000)), { code: 'stale_signature', error: /future/ });
  t.match(await hb({ signature: n.identity.signB64(challenges.heartbeat(n.nodeId)) }), { code: 'bad_signature', error: /missing ts.*legacy/ });
  t.same(h.dump(), before, 'nothing changed so far');

  t.match(await hb(good), { type: 'heartbeat_ok' }, 'fresh signature accepted');
  t.match(await hb(good), { code: 'replayed_signature' }, 'same signature again → replay');
  t.match(await hb(sign(n.identity, challenges.heartbeat(n.nodeId), now - 59_000)), { type: 'heartbeat_ok' }, 'within the window');

  // a replayed mutation changes nothing
  const vis = { type: 'set_visibility', node_id: n.nodeId, public: true, ...sign(n.identity, challenges.setVisibility(n.nodeId), now) };
  t.match(await raw.request(vis), { type: 'set_visibility_ok', visibility: 'public' });
  await h.client.setVisibility(n, false);
  t.match(await raw.request(vis), { code: 'replayed_signature' });
  t.equal((await h.client.lookup(n.nodeId)).public, false, 'replay did not flip visibility back');
  clock.advance(120_000);
  t.match(await raw.request(vis), { code: 'stale_signature' }, 'and after the window it is stale');
});

t.test('--legacy-signatures accepts bare v1 challenges (and unsigned re-registration); fresh ones still work', async (t) => {
  const h = await startRegistry(t, { config: { legacySignatures: true } });
  const n = await registerNode(h.client);
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const v1 = { type: 'heartbeat', node_id: n.nodeId, signature: n.identity.signB64(challenges.heartbeat(n.nodeId)) };
  t.match(await raw.request(v1), { type: 'heartbeat_ok' });
  t.match(await raw.request(v1), { type: 'heartbeat_ok' }, 'v1 signatures are replayable by nature');
  t.match(await raw.request({ ...v1, signature: Identity.generate().signB64(challenges.heartbeat(n.nodeId)) }), { code: 'bad_signature' }, 'still verified');
  t.match(await raw.request({ type: 'register', public_key: n.identity.publicKeyB64, listen_addr: ':4001' }), { type: 'register_ok', node_id: n.nodeId });
  await h.client.heartbeat(n);
});

t.test('one connection per node is not required; many clients share the server', async (t) => {
  const h = await startRegistry(t);
  const conns = await Promise.all(Array.from({ length: 10 }, () => RawConn.open(h.port)));
  t.teardown(() => conns.forEach((c) => c.close()));
  const replies = await Promise.all(conns.map((c, i) => c.request({ type: 'register', public_key: Identity.generate().publicKeyB64, listen_addr: `:${5000 + i}` })));
  t.same(replies.map((r) => r.node_id).sort((a, b) => Number(a) - Number(b)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

t.test('fuzz: random field values for every message type never crash a handler (no internal errors)', async (t) => {
  const h = await startRegistry(t);
  const n = await registerNode(h.client);
  await h.client.createNetwork(ADMIN, { name: 'fuzz', joinRule: 'open' });
  const raw = await RawConn.open(h.port);
  t.teardown(() => raw.close());
  const types = [
    'register', 'lookup', 'resolve', 'heartbeat', 'deregister', 'set_visibility', 'set_hostname', 'set_tags', 'set_task_exec',
    'resolve_hostname', 'report_trust', 'revoke_trust', 'request_handshake', 'poll_handshakes', 'respond_handshake', 'punch',
    'rotate_key', 'get_polo_score', 'set_polo_score', 'update_polo_score', 'list_networks', 'list_nodes', 'create_network',
    'join_network', 'leave_network', 'delete_network', 'rename_network', 'kick_member', 'get_network_policy', 'set_network_policy',
    'beacon_register', 'beacon_list', 'admin_stats', 'subscribe',
  ];
  const fields = ['node_id', 'requester_id', 'peer_id', 'from_node_id', 'to_node_id', 'node_a', 'node_b', 'network_id', 'public_key', 'new_public_key',
    'listen_addr', 'hostname', 'tags', 'public', 'enabled', 'accept', 'delta', 'polo_score', 'name', 'join_rule', 'token', 'allowed_ports',
    'max_members', 'beacon_id', 'addr', 'justification', 'owner', 'signature', 'ts', 'admin_token', 'gc'];
  let seed = 12345;
  const rnd = (k: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % k);
  const values = (): unknown => {
    const pool: unknown[] = [0, 1, n.nodeId, -1, 2 ** 32, 1.5, 1e308, NaN, '', 'x', 'a'.repeat(300), '1', true, false, null, [], [1, 'a'], ['gpu'], {}, { a: 1 },
      n.identity.publicKeyB64, Date.now(), ADMIN, 'AAAA', n.identity.signB64('x'), [80, 80], 'open', 'token', 'invite', '127.0.0.1:9'];
    return pool[rnd(pool.length)];
  };
  let internal = 0;
  let replies = 0;
  let oks = 0;
  const badCodes = new Set<string>();
  for (let i = 0; i < 1500; i++) {
    const msg: Record<string, unknown> = { type: types[rnd(types.length)] };
    for (let f = rnd(6); f > 0; f--) msg[fields[rnd(fields.length)]!] = values();
    if (msg.type === 'subscribe') continue; // would turn the connection into a push channel
    const r = await raw.request(msg);
    replies++;
    if (r.type === 'error') {
      if (!ErrorCodes.includes(r.code as never) || typeof r.error !== 'string') badCodes.add(String(r.code));
      if (r.code === 'internal') {
        internal++;
        t.fail(`internal error for ${JSON.stringify(msg)}`);
      }
    } else if (/_ok$/.test(String(r.type))) oks++;
    else badCodes.add(`reply type ${String(r.type)}`);
  }
  t.same([...badCodes], [], 'every error has a known code and a reason');
  t.equal(internal, 0, `${replies} random requests (${oks} succeeded), no internal errors`);
  t.equal((await raw.request({ type: 'lookup', node_id: n.nodeId })).type, 'lookup_ok', 'server still healthy');
});
