// Two private daemons: handshake relayed through the registry push; built-in services over real streams
// (echo, data exchange, event stream, task submission); network port policy refusal.
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Addr } from '../../transport/address.js';
import { RegistryClient } from '../../registry/client.js';
import { encodeDataFrame } from '../../daemon/services/dataexchange.js';
import { encodeEvent } from '../../daemon/services/eventstream.js';
import { encodeTypedFrame } from '../../daemon/services/frames.js';
import { ADMIN, RawIpc, startDaemon, startRegistry, until } from './daemon-helpers.js';

t.test('private nodes: relayed handshake, services, port policy', async (t) => {
  const reg = await startRegistry(t);
  // Heartbeats every 60 s: the relayed request can only arrive this fast by push.
  const a = await startDaemon(t, reg.port, { extra: ['--keepalive', '60s'] });
  const b = await startDaemon(t, reg.port, { extra: ['--keepalive', '60s'] });
  const ia = await RawIpc.connect(t, a.config.socket);
  const ib = await RawIpc.connect(t, b.config.socket);

  // B is private and untrusted: A cannot resolve it, so the request goes through the registry relay and
  // reaches B by push (well before the 1 s heartbeat would have polled it: we check within the window).
  const sent = await ia.ok('handshake_send', { node: b.nodeId, justification: 'relay me' });
  t.equal(sent.status, 'sent');
  t.ok(a.peers.stats.resolveFailures >= 1, 'direct path failed (private node), relay used');
  await until(async () => ((await ib.ok('handshake_pending', {})).pending as unknown[]).length === 1, 5000, 'pending at B');
  const pend = ((await ib.ok('handshake_pending', {})).pending as Array<Record<string, unknown>>)[0]!;
  t.equal(pend.node_id, a.nodeId);
  t.equal(pend.justification, 'relay me');
  await ib.ok('handshake_approve', { node: a.nodeId });
  await until(() => a.trustStore.isTrusted(b.nodeId), 10_000, 'A trusts B');
  const trusted = (await ia.ok('handshake_trusted', {})).trusted as Array<Record<string, unknown>>;
  t.equal(trusted[0]!.node_id, b.nodeId);
  t.equal(trusted[0]!.mutual, true);

  // Data exchange (1001): a message and a file, each acknowledged, saved under B's data dir.
  const dx = (await ia.ok('dial', { addr: b.address, port: 1001 })).conn as number;
  await ia.ok('send', { conn: dx, data: encodeDataFrame({ type: 'TEXT', text: 'hi there' }) });
  const ack1 = await readFrame(ia, dx);
  t.match(ack1.toString(), /^ACK TEXT 8 bytes/);
  const file = randomBytes(300_000);
  const frame = encodeDataFrame({ type: 'FILE', filename: 'report.bin', data: file });
  for (let off = 0; off < frame.length; off += 200_000) await ia.ok('send', { conn: dx, data: frame.subarray(off, off + 200_000) });
  const ack2 = await readFrame(ia, dx);
  t.match(ack2.toString(), /^ACK FILE/);
  const received = await readdir(b.dataDir.receivedDir);
  t.equal(received.length, 1);
  const saved = await readFile(join(b.dataDir.receivedDir, received[0]!));
  t.equal(createHash('sha256').update(saved).digest('hex'), createHash('sha256').update(file).digest('hex'), 'file saved intact');
  const inbox = await readdir(b.dataDir.inboxDir);
  t.equal(inbox.length, 1, 'message saved in the inbox');
  await ia.ok('close', { conn: dx });

  // Event stream (1002): subscriber and publisher on A, broker on B.
  const sub = (await ia.ok('dial', { addr: b.address, port: 1002 })).conn as number;
  await ia.ok('send', { conn: sub, data: encodeEvent('news', Buffer.alloc(0)) });
  const pub = (await ia.ok('dial', { addr: b.address, port: 1002 })).conn as number;
  await ia.ok('send', { conn: pub, data: encodeEvent('other', Buffer.alloc(0)) });
  await until(() => (b.services.eventStream?.stats.subscribed ?? 0) >= 2, 5000, 'two subscriptions');
  await ia.ok('send', { conn: pub, data: encodeEvent('news', Buffer.from('extra!')) });
  const ev = await ia.readBytes(sub, 2 + 4 + 4 + 6);
  t.equal(ev.subarray(2, 6).toString(), 'news');
  t.equal(ev.subarray(10).toString(), 'extra!', 'subscriber got the event');

  // Task submission (1003): one Submit frame → a JSON reply with status 200.
  const tk = (await ia.ok('dial', { addr: b.address, port: 1003 })).conn as number;
  const body = { task_id: 'task-1', task_description: 'do it', from_addr: a.address, to_addr: b.address };
  await ia.ok('send', { conn: tk, data: encodeTypedFrame(1, Buffer.from(JSON.stringify(body))) });
  const reply = JSON.parse((await readFrame(ia, tk)).toString()) as { status: number; task_id: string };
  t.equal(reply.status, 200, 'task accepted for review');
  t.equal(reply.task_id, 'task-1');

  // Network port policy: fellow members without trust reach only allowed ports.
  const c = await startDaemon(t, reg.port);
  const ic = await RawIpc.connect(t, c.config.socket);
  const admin = await RegistryClient.connect({ host: '127.0.0.1', port: reg.port });
  t.teardown(() => admin.close());
  const net = await admin.createNetwork(ADMIN, { name: 'lab', joinRule: 'open', allowedPorts: [7] });
  await ia.ok('network_join', { network_id: net.network_id });
  await ic.ok('network_join', { network_id: net.network_id });
  const na = new Addr(net.network_id, a.nodeId).toString();
  const okEcho = await ic.call('dial', { addr: na, port: 7, timeout_ms: 5000 });
  t.equal(okEcho.ok, true, `member reaches an allowed port (${okEcho.code ?? ''} ${okEcho.message ?? ''})`);
  const denied = await ic.call('dial', { addr: na, port: 1001, timeout_ms: 1500 });
  t.equal(denied.code, 'timeout', 'port outside allowed_ports: silence');
  t.ok((a.host.stats().refused.port_policy ?? 0) >= 1, 'refusal counted as port_policy');
  const backbone = await ic.call('dial', { addr: a.address, port: 7, timeout_ms: 1500 });
  t.equal(backbone.ok, false, 'the backbone address still needs trust');
});

/** Read one 8-byte-header typed frame from a connection's data events; returns the payload. */
async function readFrame(c: RawIpc, conn: number): Promise<Buffer> {
  const head = await c.readBytes(conn, 8);
  const len = head.readUInt32BE(4);
  const rest = head.length > 8 ? head.subarray(8) : Buffer.alloc(0);
  if (rest.length >= len) return rest.subarray(0, len);
  return Buffer.concat([rest, await c.readBytes(conn, len - rest.length)]);
}
