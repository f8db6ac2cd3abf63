/**
 * Key lifecycle over a real registry: rotation naming the new key, concurrent rotations (one wins, the
 * other gets a clear conflict), enforced key expiry (heartbeat, join, resolve, lookup refused with
 * key_expired), the heartbeat warning ahead of expiry, key info, and durability of every enterprise table
 * across a registry restart (file-backed SQLite, migration 2).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Identity } from '../../transport/identity.js';
import { RegistryClient } from '../../registry/client.js';
import { challenges } from '../../registry/protocol/challenges.js';
import { RegistryServer } from '../../registry/server.js';
import { ADMIN, code, NO_LIMITS, RawConn, registerNode, startRegistry, TestClock } from './helpers.js';


t.test('rotation: the old key signs a statement naming the new key; concurrent rotations are detected', async (t) => {
  const clock = new TestClock(Date.now());
  const { client, port } = await startRegistry(t, { clock });
  const a = await registerNode(client);
  const peer = await registerNode(client);
  const net = (await client.createNetwork(ADMIN, { name: 'k', joinRule: 'open', nodeId: a.nodeId })).network_id;
  await client.joinNetwork(peer, net);
  const events: unknown[] = [];
  let ready!: () => void;
  const subscribed = new Promise<void>((r) => (ready = r));
  const sub = client.subscribe(peer, (e) => events.push(e), { onSubscribed: () => ready() });
  t.teardown(() => sub.close());
  await subscribed;

  const next = Identity.generate();
  const r = await client.rotateKey(a, next.publicKeyB64);
  t.equal(r.public_key, next.publicKeyB64);
  for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
  t.match(events, [{ event: 'key_rotated', node_id: a.nodeId, public_key: next.publicKeyB64 }], 'members of its networks learn the new key');
  const info = await client.getKeyInfo(a.nodeId);
  t.match(info, { rotate_count: 1, public_key: next.publicKeyB64, expires_at: null, expired: false });
  t.equal(await code(client.heartbeat(a)), 'bad_signature', 'the old key no longer works');
  const a2 = { identity: next, nodeId: a.nodeId };
  t.ok((await client.heartbeat(a2)).time);

  // a statement naming one key cannot install another
  const raw = await RawConn.open(port);
  t.teardown(() => raw.socket.destroy());
  const x = Identity.generate();
  const y = Identity.generate();
  const ts = clock.now();
  raw.send({ type: 'rotate_key', node_id: a.nodeId, new_public_key: y.publicKeyB64, ts, signature: next.signB64(`${challenges.rotateKeyTo(a.nodeId, x.publicKeyB64)}:${ts}`) });
  t.match(await raw.next(), { code: 'bad_signature' }, 'signature names another key');

  // two rotations signed by the same current key, sent together: one wins, the other gets conflict
  const [p1, p2] = [client.rotateKey(a2, x.publicKeyB64), client.rotateKey(a2, y.publicKeyB64)];
  const codes = [await code(p1), await code(p2)].sort();
  t.same(codes, ['conflict', 'ok'], 'exactly one concurrent rotation wins');
  const now = (await client.getKeyInfo(a.nodeId)).public_key;
  t.ok(now === x.publicKeyB64 || now === y.publicKeyB64);
  t.equal((await client.getKeyInfo(a.nodeId)).rotate_count, 2);
});

t.test('key expiry is enforced: warning ahead, then no heartbeat, join, resolve or lookup', async (t) => {
  const clock = new TestClock(Date.now());
  const { client } = await startRegistry(t, { clock });
  const a = await registerNode(client);
  const b = await registerNode(client);
  const net = (await client.createNetwork(ADMIN, { name: 'exp', joinRule: 'open', nodeId: b.nodeId })).network_id;
  const net2 = (await client.createNetwork(ADMIN, { name: 'exp2', joinRule: 'open' })).network_id;
  await client.joinNetwork(a, net);
  const nowS = Math.floor(clock.now() / 1000);

  t.equal(await code(client.setKeyExpiry(a, nowS - 10)), 'bad_request', 'expiry must be in the future');
  t.equal(await code(client.setKeyExpiry(a, nowS + 11 * 365 * 86_400)), 'bad_request', 'at most 10 years');
  await client.setKeyExpiry(a, nowS + 2 * 86_400);
  t.equal(await code(client.setKeyExpiry(a, nowS + 3 * 86_400)), 'forbidden', 'a node cannot extend its own expiry');
  t.equal(await code(client.setKeyExpiry(a, null)), 'forbidden', 'nor clear it');
  const hb = await client.heartbeat(a);
  t.equal(hb.key_expires_soon, undefined, 'no warning two days ahead');
  t.equal(hb.key_expires_at, nowS + 2 * 86_400);
  await client.setKeyExpiry(a, nowS + 3600);
  t.match(await client.heartbeat(a), { key_expires_soon: true, key_expires_at: nowS + 3600 }, 'warning within 24 h');
  t.match(await client.getKeyInfo(a.nodeId), { expires_soon: true, expired: false });

  clock.advance(3601_000);
  t.equal(await code(client.heartbeat(a)), 'key_expired', 'expired key cannot heartbeat');
  t.equal(await code(client.joinNetwork(a, net2)), 'key_expired', 'nor join');
  t.equal(await code(client.resolve(a, b.nodeId)), 'key_expired', 'nor resolve');
  await client.heartbeat(b);
  t.equal(await code(client.lookup(a.nodeId)), 'key_expired', 'lookup does not hand out the expired key');
  t.equal(await code(client.resolve(b, a.nodeId)), 'key_expired', 'nor resolve it for others');
  t.equal(await code(client.rotateKey(a, Identity.generate().publicKeyB64)), 'key_expired', 'an expired key cannot rotate itself');
  t.match(await client.getKeyInfo(a.nodeId), { expired: true });
  try {
    await client.heartbeat(a);
  } catch (err) {
    t.match((err as Error).message, /expired at .*rotate/, 'the error says why and what to do');
  }

  // the admin revives it; then it can rotate
  await client.setKeyExpiry({ adminToken: ADMIN, nodeId: a.nodeId }, null);
  t.ok((await client.heartbeat(a)).time, 'admin cleared the expiry');
  await client.setKeyExpiry(a, Math.floor(clock.now() / 1000) + 7200);
  const before = await client.getKeyInfo(a.nodeId);
  const lifetime = before.expires_at! - before.created_at;
  const next = Identity.generate();
  await client.rotateKey(a, next.publicKeyB64);
  const info = await client.getKeyInfo(a.nodeId);
  t.equal(info.created_at, Math.floor(clock.now() / 1000), 'new key starts now');
  t.equal(info.expires_at, info.created_at + lifetime, 'the new key inherits the old key\'s lifetime');
});

t.test('enterprise tables survive a restart (SQLite migration 2)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-ent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = new TestClock(Date.now());
  const start = async (): Promise<{ server: RegistryServer; client: RegistryClient }> => {
    const server = new RegistryServer({
      logger: pino({ level: 'silent' }),
      manualMaintenance: true,
      clock,
      config: { dataDir: dir, listen: '127.0.0.1:0', adminToken: ADMIN, rateLimits: NO_LIMITS, storeSync: 'normal' },
    });
    const info = await server.listen();
    const client = await RegistryClient.connect({ host: '127.0.0.1', port: info.registry.port, clock });
    return { server, client };
  };
  let { server, client } = await start();
  const owner = await registerNode(client);
  const m = await registerNode(client);
  const guest = await registerNode(client);
  const net = (await client.createNetwork(ADMIN, { name: 'durable', joinRule: 'open', nodeId: owner.nodeId, enterprise: true, networkAdminToken: 'durable-net-token-0123' })).network_id;
  await client.joinNetwork(m, net);
  await client.promoteMember(owner, net, m.nodeId);
  await client.setMemberTags(owner, net, m.nodeId, ['db']);
  await client.setRolePreassignment(owner, net, 'oidc:https://idp#Alice', 'admin');
  await client.inviteToNetwork(owner, net, guest.nodeId);
  const exp = Math.floor(clock.now() / 1000) + 86_400 * 5;
  await client.setKeyExpiry(m, exp);
  const next = Identity.generate();
  await client.rotateKey(guest, next.publicKeyB64);
  await client.close();
  await server.close();

  ({ server, client } = await start());
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  const members = await client.listMembers(owner, net);
  t.same(
    members.members.map((x) => [x.node_id, x.role, x.member_tags]),
    [
      [owner.nodeId, 'owner', []],
      [m.nodeId, 'admin', ['db']],
    ],
    'roles and member tags',
  );
  t.equal((await client.listMembers({ networkAdminToken: 'durable-net-token-0123' }, net)).enterprise, true, 'network admin token');
  t.match((await client.pollInvites({ identity: next, nodeId: guest.nodeId })).invites, [{ network_id: net }], 'invite');
  t.match(await client.getKeyInfo(m.nodeId), { expires_at: exp }, 'key expiry');
  t.match(await client.getKeyInfo(guest.nodeId), { rotate_count: 1, public_key: next.publicKeyB64 }, 'rotation info');
  t.equal((await client.setRolePreassignment(owner, net, 'oidc:https://idp#alice', null)).role, null, 'pre-assignment present (removal acknowledged)');
});
