import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RegistryClient, type NodeAuth } from '../../registry/client.js';
import { decodeDiscoverReply, decodePunchCommand, encodeDiscover, encodePunchRequest, encodeSignedDiscover, type Endpoint } from '../../natpunch/index.js';
import { UdpClient } from '../natpunch/helpers.js';
import { startRegistryProcess, type RegistryProcess } from './proc.js';

/**
 * `pilot-registry` with its beacon (SPEC §1, §7), as an operator runs it: a real process, real UDP.
 * A node's signed discover binds it; forged, unregistered and stray unsigned discovers bind nothing.
 */

const isReply = (b: Buffer): boolean => b[0] === 0x02;
const isPunch = (b: Buffer): boolean => b[0] === 0x04;

let ts = Date.now();
/** Signed discover with a strictly increasing timestamp (the beacon keeps the highest per node). */
const signedDiscover = (id: Identity, nodeId: number): Buffer => encodeSignedDiscover(id, nodeId, ++ts);

function beaconPort(p: RegistryProcess): number {
  const m = /beacon on udp [^\s]+:(\d+)/.exec(p.stdout());
  if (!m) throw new Error(`no beacon line in: ${p.stdout()}`);
  return Number(m[1]);
}

function httpBase(p: RegistryProcess): string {
  const m = /metrics on (http:\/\/[^\s]+)\/metrics/.exec(p.stdout());
  if (!m) throw new Error(`no metrics line in: ${p.stdout()}`);
  return m[1]!;
}

/** A `pilot_beacon_events_total{event=…}` (or any un-labelled) sample from /metrics. */
function sample(text: string, name: string, labels = ''): number {
  const re = new RegExp(`^${name}${labels ? `\\{${labels.replace(/[{}]/g, '')}\\}` : ''} (\\S+)$`, 'm');
  const m = re.exec(text);
  return m ? Number(m[1]) : NaN;
}

async function register(c: RegistryClient, listenPort?: number): Promise<NodeAuth & { id: Identity }> {
  const id = Identity.generate();
  const r = await c.register(id, listenPort === undefined ? {} : { listenAddr: `:${listenPort}` });
  return { identity: id, id, nodeId: r.node_id };
}

/** Free UDP port on loopback (bound and released). */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return port;
}

t.test('registry + beacon in one process: signed discover binds, forgeries do not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-regbeacon-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const reg = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--beacon', '127.0.0.1:0', '--http', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--log-level', 'warn']);
  const ep: Endpoint = { address: '127.0.0.1', port: beaconPort(reg) };
  const http = httpBase(reg);
  const client = await RegistryClient.connect({ host: '127.0.0.1', port: reg.port });
  t.teardown(() => client.close());

  const ca = await UdpClient.open();
  const cb = await UdpClient.open();
  const cx = await UdpClient.open();
  const cv1 = await UdpClient.open();
  t.teardown(() => Promise.all([ca, cb, cx, cv1].map((u) => new Promise<void>((r) => u.socket.close(() => r())))));

  const a = await register(client);
  const b = await register(client);
  const c = await register(client);
  const v1 = await register(client, cv1.port); // a v1 daemon: registered from 127.0.0.1 with its UDP port
  await client.setVisibility(b, true);

  // signed discover → the reply carries the sender's reflexive address, and the node is bound
  ca.send(signedDiscover(a.id, a.nodeId), ep);
  t.same(decodeDiscoverReply(await ca.next(isReply)), { address: '127.0.0.1', port: ca.port }, 'reflexive address of node A');
  cb.send(signedDiscover(b.id, b.nodeId), ep);
  t.same(decodeDiscoverReply(await cb.next(isReply)), { address: '127.0.0.1', port: cb.port });
  ca.send(encodePunchRequest(a.nodeId, b.nodeId), ep);
  t.same(decodePunchCommand(await ca.next(isPunch)), { address: '127.0.0.1', port: cb.port }, 'A learns public B’s endpoint');
  t.same(decodePunchCommand(await cb.next(isPunch)), { address: '127.0.0.1', port: ca.port }, 'B is told to punch towards A');

  // privacy rule of the registry: B may not learn private A's endpoint... unless they trust each other
  cb.send(encodePunchRequest(b.nodeId, a.nodeId), ep);
  await cb.barrier(ep);
  t.equal(cb.inbox.filter(isPunch).length, 0, 'no punch command towards a private node for a stranger');

  // forged: node C's ID signed with someone else's key; unregistered: an ID the registry never issued
  const stranger = Identity.generate();
  cx.send(signedDiscover(stranger, c.nodeId), ep);
  cx.send(signedDiscover(stranger, 999_999), ep);
  // unsigned v1 discover for A from an endpoint A did not register: ignored
  cx.send(encodeDiscover(a.nodeId), ep);
  await cx.barrier(ep);
  ca.send(encodePunchRequest(a.nodeId, c.nodeId), ep);
  ca.send(encodePunchRequest(a.nodeId, 999_999), ep);
  await ca.barrier(ep);
  t.equal(ca.inbox.filter(isPunch).length, 0, 'forged and unregistered discovers bound nothing');
  ca.send(encodePunchRequest(a.nodeId, b.nodeId), ep);
  t.same(decodePunchCommand(await ca.next(isPunch)), { address: '127.0.0.1', port: cb.port }, 'A is still bound at its own endpoint');

  // a v1 daemon's unsigned discover from the endpoint it registered binds (the registry's record is the proof)
  cv1.send(encodeDiscover(v1.nodeId), ep);
  await cv1.barrier(ep);

  const metrics = await (await fetch(`${http}/metrics`)).text();
  t.equal(sample(metrics, 'pilot_beacon_up'), 1);
  t.equal(sample(metrics, 'pilot_beacon_bindings'), 3, 'A, B and the v1 node');
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="discover_ok"'), 2);
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="discover_bad_signature"'), 1);
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="discover_unknown_node"'), 1);
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="discover_registry_bound"'), 1);
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="unsigned_discover_ignored"'), 1);
  t.equal(sample(metrics, 'pilot_beacon_events_total', 'event="punch_denied_policy"'), 1);
  t.equal(sample(metrics, 'pilot_beacon_relayed_total'), 0);
  t.match(metrics, /pilot_beacon_dropped_total/);

  const health = await fetch(`${http}/healthz`);
  t.equal(health.status, 200);
  t.same(await health.json(), { status: 'ok', nodes_online: 4, beacon: { status: 'ok', bindings: 3 } });

  t.same((await client.beaconList()).beacons.map((x) => x.addr), [`127.0.0.1:${ep.port}`], 'the beacon lists itself in beacon_list');

  // beacon-only mode against this registry: keys from its lookup, announced in its beacon_list
  const solo = await startRegistryProcess(t, ['beacon', '--beacon', '127.0.0.1:0', '--registry', `127.0.0.1:${reg.port}`, '--log-level', 'warn']);
  const sep: Endpoint = { address: '127.0.0.1', port: solo.port };
  t.not(sep.port, ep.port);
  ca.send(signedDiscover(a.id, a.nodeId), sep);
  t.same(decodeDiscoverReply(await ca.next(isReply)), { address: '127.0.0.1', port: ca.port });
  cb.send(signedDiscover(b.id, b.nodeId), sep);
  await cb.next(isReply);
  // the look-up is asynchronous: retry the punch until both bindings are in
  let cmd: Buffer | null = null;
  for (let i = 0; i < 50 && !cmd; i++) {
    ca.send(encodePunchRequest(a.nodeId, b.nodeId), sep);
    cmd = await ca.next(isPunch, 100).catch(() => null);
  }
  t.ok(cmd, 'standalone beacon bound A and B with keys from the registry');
  t.same(decodePunchCommand(cmd!), { address: '127.0.0.1', port: cb.port });
  cx.send(signedDiscover(stranger, c.nodeId), sep);
  await cx.next(isReply);
  let listed: string[] = [];
  for (let i = 0; i < 50 && listed.length < 2; i++) {
    listed = (await client.beaconList()).beacons.map((x) => x.addr).sort();
    if (listed.length < 2) await new Promise((r) => setTimeout(r, 100));
  }
  t.same(listed, [`127.0.0.1:${ep.port}`, `127.0.0.1:${sep.port}`].sort(), 'beacon-only mode announced itself to the registry');
  for (let i = 0; i < 50 && ca.inbox.filter(isPunch).length > 0; i++) ca.inbox.shift();
  ca.inbox.length = 0;
  ca.send(encodePunchRequest(a.nodeId, c.nodeId), sep);
  await ca.barrier(sep);
  t.equal(ca.inbox.filter(isPunch).length, 0, 'the forged discover bound nothing on the standalone beacon either');

  solo.proc.kill('SIGTERM');
  t.equal((await solo.exited).code, 0);
  reg.proc.kill('SIGTERM');
  t.equal((await reg.exited).code, 0, 'clean exit with the beacon');
});

t.test('--no-beacon leaves the UDP port closed', async (t) => {
  const port = await freeUdpPort();
  const dir = mkdtempSync(join(tmpdir(), 'pilot-nobeacon-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // the beacon address is configured (env), the flag turns the beacon off
  const reg = await startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--no-beacon', '--http', '127.0.0.1:0', '--data-dir', dir], { PILOT_BEACON: `127.0.0.1:${port}` });
  t.notMatch(reg.stdout(), /beacon on udp/);
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve());
  });
  t.pass('the beacon port is free: nothing listens on it');
  await new Promise<void>((r) => s.close(r));
  t.same(await (await fetch(`${httpBase(reg)}/healthz`)).json(), { status: 'ok', nodes_online: 0, beacon: { status: 'off' } });
  t.notMatch(await (await fetch(`${httpBase(reg)}/metrics`)).text(), /pilot_beacon_/);
});

t.test('a beacon port already taken is a clear startup error', async (t) => {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind({ port: 0, address: '127.0.0.1', exclusive: true }, () => r()));
  t.teardown(() => new Promise<void>((r) => s.close(r)));
  const dir = mkdtempSync(join(tmpdir(), 'pilot-busybeacon-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await t.rejects(startRegistryProcess(t, ['--listen', '127.0.0.1:0', '--beacon', `127.0.0.1:${s.address().port}`, '--data-dir', dir]), /cannot start the beacon[^\n]*--no-beacon/);
});
