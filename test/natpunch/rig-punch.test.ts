// Real NATs (network namespaces + nftables): NatTraversal punches direct paths (issue 5, rigs 1–2).
// Root + iproute2/nftables/conntrack; skips with the reason otherwise.
import t from 'tap';
import { rigAvailable } from '../rigs/netns.js';
import { natWorld, PeerProc, transfer } from './rig-helpers.js';

const MiB = 1 << 20;
const avail = await rigAvailable();
if (!avail.ok) t.plan(0, `NAT rig unavailable: ${avail.reason}`);
else await main();

async function main(): Promise<void> {
  const w = await natWorld('nclp');
  t.teardown(() => w.rig.close());

  t.test('1: both peers behind cone NATs get a punched direct path', async (t) => {
    const alice = await w.natted('cone', 'alice');
    const bob = await w.natted('cone', 'bob');
    const [a, b] = await Promise.all([PeerProc.start(alice), PeerProc.start(bob)]);
    t.match(a.registered, /^198\.51\.100\.\d+:\d+$/, `alice registered her reflexive endpoint (${a.registered})`);
    await a.call({ cmd: 'connect', peer: b.id }, 'connected');
    const r = await transfer(a, b, 4 * MiB);
    t.equal(r.received, r.sent, 'hash-verified transfer');
    const pa = await a.waitPath(b.id, (p) => p.established, 'established');
    t.equal(pa.path, 'punched', 'alice reaches bob through a punched hole');
    t.equal(pa.endpoint?.host, bob.nat!.publicIp, 'at bob\'s NAT');
    const pb = await b.waitPath(a.id, (p) => p.established, 'established');
    t.not(pb.path, 'relayed', `bob reaches alice ${pb.path}`);
    t.equal(pb.endpoint?.host, alice.nat!.publicIp);
  });

  t.test('2: a public peer and a port-restricted peer talk directly', async (t) => {
    const pub = await w.rig.addPublicHost('pub', '192.0.2.50');
    const inside = await w.natted('port-restricted', 'inside');
    const [p, i] = await Promise.all([PeerProc.start(pub), PeerProc.start(inside)]);
    t.equal(p.registered.split(':')[0], '192.0.2.50', 'the public peer registers its own address');
    // The public side dials: its exchange gets in only after the punch opened the inside peer's NAT.
    await p.call({ cmd: 'connect', peer: i.id }, 'connected');
    const r = await transfer(p, i, 4 * MiB);
    t.equal(r.received, r.sent, 'hash-verified transfer');
    const pp = await p.waitPath(i.id, (x) => x.established, 'established');
    t.not(pp.path, 'relayed', `public → inside is ${pp.path}`);
    t.equal(pp.endpoint?.host, inside.nat!.publicIp);
    const back = await transfer(i, p, MiB);
    t.equal(back.received, back.sent, 'and back');
    const ip = await i.waitPath(p.id, (x) => x.established, 'established');
    t.not(ip.path, 'relayed', `inside → public is ${ip.path}`);
    t.same(ip.endpoint, { host: '192.0.2.50', port: Number(p.registered.split(':')[1]) });
  });
}
