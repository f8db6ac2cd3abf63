// Real `pilot-daemon`s behind real NATs (issue 5 rigs 1–5 with the shipped binaries): the registry +
// beacon (`pilot-registry`) on a public namespace host, daemons behind nftables NAT routers, driven
// through their IPC sockets with the SDK. Each scenario: trust via the registry (handshake by node ID,
// approve), then the path the daemons chose (IPC `peers`, what `pilotctl peers` prints) and a
// hash-verified stream transfer. Root + iproute2/nftables/conntrack; skips with the reason otherwise.
import t from 'tap';
import { rigAvailable, type Host } from '../rigs/netns.js';
import { DaemonWorld, trust, transfer } from './rig-daemon-helpers.js';

const MiB = 1 << 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const avail = await rigAvailable();
if (!avail.ok) t.plan(0, `NAT rig unavailable: ${avail.reason}`);
else await main();

async function main(): Promise<void> {
  const w = await DaemonWorld.create('ncld');
  t.teardown(() => w.close());

  t.test('1 + 5: cone NATs: punched direct path; mappings flushed mid-session, the path comes back', async (t) => {
    const [ah, bh] = [await w.natted('cone', 'alice'), await w.natted('cone', 'bob')];
    const [a, b] = await Promise.all([w.daemon(ah, 'alice'), w.daemon(bh, 'bob')]);
    await trust(a, b);
    const r = await transfer(a, b, 4 * MiB);
    t.equal(r.received.bytes, 4 * MiB);
    t.equal(r.received.sha256, r.sent, 'hash-verified transfer');
    const pa = await a.waitPeer(b.id, (p) => p.encrypted, 'established');
    t.equal(pa.path, 'punched', 'alice reaches bob through a punched hole');
    t.match(pa.endpoint, new RegExp(`^${bh.nat!.publicIp.replace(/\./g, '\\.')}:`), 'at bob\'s NAT');
    const pb = await b.waitPeer(a.id, (p) => p.encrypted, 'established');
    t.not(pb.path, 'relayed', `bob reaches alice ${pb.path}`);
    t.match(pb.endpoint, new RegExp(`^${ah.nat!.publicIp.replace(/\./g, '\\.')}:`), 'at alice\'s NAT');
    // What a user sees: `pilotctl peers` inside alice's host.
    const cli = (await a.pilotctl('peers')).peers as Array<Record<string, unknown>>;
    t.match(cli.find((p) => p.node_id === b.id), { path: 'punched', relay: false, endpoint: pa.endpoint }, 'pilotctl peers shows the punched path');

    // 5: both routers forget every mapping (as after a NAT timeout); then bob (who never dialled) sends.
    await ah.nat!.flushMappings();
    await bh.nat!.flushMappings();
    await sleep(2500);
    const back = await transfer(b, a, 4 * MiB);
    t.equal(back.received.bytes, 4 * MiB);
    t.equal(back.received.sha256, back.sent, 'hash-verified transfer after the flush');
    const pb2 = await b.waitPeer(a.id, (p) => p.path !== 'relayed', 'direct again');
    t.match(pb2.endpoint, new RegExp(`^${ah.nat!.publicIp.replace(/\./g, '\\.')}:`), 'bob reaches alice directly again');
    const pa2 = await a.waitPeer(b.id, (p) => p.path !== 'relayed', 'direct again');
    t.match(pa2.endpoint, new RegExp(`^${bh.nat!.publicIp.replace(/\./g, '\\.')}:`), 'alice reaches bob directly again');
    await Promise.all([a.stop(), b.stop()]);
  });

  t.test('2: a public daemon and one behind a port-restricted NAT talk directly', async (t) => {
    const ph = await w.rig.addPublicHost('pub', '192.0.2.50');
    const ih = await w.natted('port-restricted', 'inside');
    const [p, i] = await Promise.all([w.daemon(ph, 'pub', ['--public']), w.daemon(ih, 'inside')]);
    await trust(i, p);
    const r = await transfer(p, i, 4 * MiB);
    t.equal(r.received.sha256, r.sent, 'hash-verified transfer public → inside');
    const pp = await p.waitPeer(i.id, (x) => x.encrypted, 'established');
    t.not(pp.path, 'relayed', `public → inside is ${pp.path}`);
    t.match(pp.endpoint, new RegExp(`^${ih.nat!.publicIp.replace(/\./g, '\\.')}:`));
    const back = await transfer(i, p, MiB);
    t.equal(back.received.sha256, back.sent, 'and back');
    const ip = await i.waitPeer(p.id, (x) => x.encrypted, 'established');
    t.not(ip.path, 'relayed', `inside → public is ${ip.path}`);
    t.match(ip.endpoint, /^192\.0\.2\.50:/);
    await Promise.all([p.stop(), i.stop()]);
  });

  t.test('3: both behind symmetric NATs: relayed through the beacon, data intact', async (t) => {
    const [ch, dh] = [await w.natted('symmetric', 'carol'), await w.natted('symmetric', 'dave')];
    const [c, d] = await Promise.all([w.daemon(ch, 'carol'), w.daemon(dh, 'dave')]);
    await trust(c, d);
    const r = await transfer(c, d, 4 * MiB);
    t.equal(r.received.bytes, 4 * MiB);
    t.equal(r.received.sha256, r.sent, 'hash-verified transfer through the relay');
    const pc = await c.peer(d.id);
    t.equal(pc?.path, 'relayed', 'carol is relayed');
    t.equal(pc?.relay, true, 'through the beacon');
    const pd = await d.peer(c.id);
    t.equal(pd?.path, 'relayed', 'dave too');
    t.equal(pd?.relay, true);
    const info = await c.pilotctl('info');
    t.match((info.peer_list as Array<Record<string, unknown>>).find((p) => p.node_id === d.id), { path: 'relayed' }, 'pilotctl info shows the relayed path');
    t.ok(Number((await c.natStats()).relay_fallbacks) + Number((await d.natStats()).relay_fallbacks) >= 1, 'after the direct attempt failed');
    await Promise.all([c.stop(), d.stop()]);
  });

  t.test('4: relayed while a firewall blocks the direct path; lifted mid-stream: upgrades to direct, stream intact', async (t) => {
    // erin behind a cone NAT, finn behind a symmetric one: finn's packets to erin leave from a port nobody
    // announced (a fresh mapping per destination), so erin must take that port from finn's probes.
    const [eh, fh] = [await w.natted('cone', 'erin'), await w.natted('symmetric', 'finn')];
    await block(eh, fh.nat!.publicIp);
    const [e, f] = await Promise.all([w.daemon(eh, 'erin'), w.daemon(fh, 'finn')]);
    await trust(e, f);
    // 6 MiB paced over ~6 s: one stream that lives through the change.
    const total = 6 * MiB;
    let finished = false;
    const sending = transfer(e, f, total, { gapMs: 60 }).finally(() => (finished = true));
    sending.catch(() => {});
    const relayed = await e.waitPeer(f.id, (p) => p.path === 'relayed' && p.encrypted, 'relayed');
    t.equal(relayed.relay, true, 'the stream starts on the relay');
    await unblock(eh);
    const up = await e.waitPeer(f.id, (p) => p.path !== 'relayed', 'upgrade', 20_000);
    t.notOk(finished, 'the upgrade happened while the stream was still transferring');
    const r = await sending;
    t.equal(r.received.bytes, total, 'every byte arrived');
    t.equal(r.received.sha256, r.sent, 'the stream survived the relay → direct switch byte-exactly');
    t.equal(up.path, 'punched', 'the new path was punched');
    t.match(up.endpoint, new RegExp(`^${fh.nat!.publicIp.replace(/\./g, '\\.')}:`), 'straight to finn\'s NAT');
    t.not(up.endpoint, (await f.natStats()).reflexive, 'at the port finn\'s NAT opened towards erin, not the one the beacon saw');
    const pf = await f.waitPeer(e.id, (p) => p.path !== 'relayed', 'finn direct too');
    t.match(pf.endpoint, new RegExp(`^${eh.nat!.publicIp.replace(/\./g, '\\.')}:`), 'finn went direct too');
    await Promise.all([e.stop(), f.stop()]);
  });
}

/** A host firewall dropping UDP to and from `ip` (the direct path to a peer), as a blocking middlebox would. */
async function block(host: Host, ip: string): Promise<void> {
  await host.exec('nft', ['-f', '-'], {
    input: [
      'table inet rigblock {',
      `  chain out { type filter hook output priority filter; policy accept; ip daddr ${ip} meta l4proto udp drop; }`,
      `  chain in { type filter hook input priority filter; policy accept; ip saddr ${ip} meta l4proto udp drop; }`,
      '}',
    ].join('\n') + '\n',
  });
}

async function unblock(host: Host): Promise<void> {
  await host.exec('nft', ['delete', 'table', 'inet', 'rigblock']);
}
