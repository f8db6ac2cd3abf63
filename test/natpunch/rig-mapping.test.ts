// Real NATs: mapping loss (conntrack flushed) and short UDP timeouts: keepalive / re-punch keep or
// restore the direct path (issue 5, rig 5). Root only; skips otherwise.
import t from 'tap';
import { rigAvailable } from '../rigs/netns.js';
import { natWorld, PeerProc, transfer } from './rig-helpers.js';

const MiB = 1 << 20;
const avail = await rigAvailable();
if (!avail.ok) t.plan(0, `NAT rig unavailable: ${avail.reason}`);
else await main();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const w = await natWorld('nclm');
  t.teardown(() => w.rig.close());

  t.test('5: NAT mappings flushed on both routers: the path comes back direct', async (t) => {
    const gus = await w.natted('cone', 'gus');
    const hal = await w.natted('cone', 'hal');
    const [g, h] = await Promise.all([PeerProc.start(gus), PeerProc.start(hal)]);
    await g.call({ cmd: 'connect', peer: h.id }, 'connected');
    const first = await transfer(g, h, 2 * MiB);
    t.equal(first.received, first.sent);
    t.equal((await g.waitPath(h.id, (p) => p.established, 'established')).path, 'punched');

    await gus.nat!.flushMappings();
    await hal.nat!.flushMappings();
    // Idle: nothing but NatTraversal's keepalive / re-punch runs now. Then hal (the side that never
    // dialled) opens a stream back to gus.
    await sleep(3000);
    const back = await transfer(h, g, 2 * MiB);
    t.equal(back.received, back.sent, 'hash-verified transfer after the flush');
    const pg = await g.waitPath(h.id, (p) => p.path !== 'relayed', 'direct again');
    t.equal(pg.endpoint?.host, hal.nat!.publicIp, 'gus reaches hal directly');
    const ph = await h.waitPath(g.id, (p) => p.path !== 'relayed', 'direct again');
    t.equal(ph.endpoint?.host, gus.nat!.publicIp, 'hal reaches gus directly');
    const gs = (await g.paths()).stats;
    const hs = (await h.paths()).stats;
    t.comment(`gus: keepalive failures ${gs.keepalive_failures}, re-punches ${gs.repunches}, relay fallbacks ${gs.relay_fallbacks}, upgrades ${gs.upgrades}; ` +
      `hal: keepalive failures ${hs.keepalive_failures}, re-punches ${hs.repunches}, relay fallbacks ${hs.relay_fallbacks}, upgrades ${hs.upgrades}`);
  });

  t.test('5b: a 3 s UDP mapping timeout: keepalives hold the idle direct path open', async (t) => {
    const ida = await w.natted('port-restricted', 'ida');
    const jon = await w.natted('port-restricted', 'jon');
    await ida.nat!.setUdpTimeout(3);
    await jon.nat!.setUdpTimeout(3);
    const [i, j] = await Promise.all([PeerProc.start(ida), PeerProc.start(jon)]);
    await i.call({ cmd: 'connect', peer: j.id }, 'connected');
    const first = await transfer(i, j, MiB);
    t.equal(first.received, first.sent);
    const before = await i.waitPath(j.id, (p) => p.established && p.path !== 'relayed', 'direct');
    await sleep(7000); // > 2 mapping lifetimes with no application traffic
    const pj = await j.pathTo(i.id);
    t.not(pj?.path, 'relayed', 'still direct after the idle period');
    const back = await transfer(j, i, MiB);
    t.equal(back.received, back.sent, 'the quiet side reaches the dialler');
    const after = await i.pathTo(j.id);
    t.same(after?.endpoint, before.endpoint, 'same endpoint: the mapping never expired');
    t.equal(after?.changedAt, before.changedAt, 'no path change at all');
  });

  t.test('5c: mappings lost during an outage: keepalive fails, re-punch / relay, then direct again', async (t) => {
    const kay = await w.natted('cone', 'kay');
    const lee = await w.natted('cone', 'lee');
    const [k, l] = await Promise.all([PeerProc.start(kay), PeerProc.start(lee)]);
    await k.call({ cmd: 'connect', peer: l.id }, 'connected');
    const first = await transfer(k, l, MiB);
    t.equal(first.received, first.sent);
    await k.waitPath(l.id, (p) => p.established && p.path === 'punched', 'punched');
    await kay.impair({ lossPct: 100 });
    await kay.nat!.flushMappings();
    await lee.nat!.flushMappings();
    await sleep(4000); // keepalive pings fail meanwhile
    await kay.clearImpairment();
    const back = await transfer(l, k, 2 * MiB);
    t.equal(back.received, back.sent, 'hash-verified transfer after the outage');
    const pk = await k.waitPath(l.id, (p) => p.path !== 'relayed', 'direct again', 20_000);
    t.equal(pk.endpoint?.host, lee.nat!.publicIp);
    const pl = await l.waitPath(k.id, (p) => p.path !== 'relayed', 'direct again', 20_000);
    t.equal(pl.endpoint?.host, kay.nat!.publicIp);
    const ks = (await k.paths()).stats;
    const ls = (await l.paths()).stats;
    t.ok(ks.keepalive_failures! + ls.keepalive_failures! >= 1, 'the dead path was noticed by the keepalive');
    t.ok(ks.repunches! + ls.repunches! >= 1, 'and re-punched');
    t.comment(`kay: fallbacks ${ks.relay_fallbacks}, upgrades ${ks.upgrades}; lee: fallbacks ${ls.relay_fallbacks}, upgrades ${ls.upgrades}`);
  });
}
