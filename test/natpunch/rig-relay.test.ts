// Real NATs: symmetric NATs fall back to the beacon relay; a relayed stream upgrades to a direct path
// when the NATs become punchable mid-stream (issue 5, rigs 3–4). Root only; skips otherwise.
import t from 'tap';
import { rigAvailable } from '../rigs/netns.js';
import { natWorld, PeerProc, transfer, INFRA_IP } from './rig-helpers.js';

const MiB = 1 << 20;
const avail = await rigAvailable();
if (!avail.ok) t.plan(0, `NAT rig unavailable: ${avail.reason}`);
else await main();

async function main(): Promise<void> {
  const w = await natWorld('nclr');
  t.teardown(() => w.rig.close());

  t.test('3: both peers behind symmetric NATs: relayed through the beacon, data intact', async (t) => {
    const carol = await w.natted('symmetric', 'carol');
    const dave = await w.natted('symmetric', 'dave');
    const [c, d] = await Promise.all([PeerProc.start(carol), PeerProc.start(dave)]);
    await c.call({ cmd: 'connect', peer: d.id }, 'connected');
    const r = await transfer(c, d, 4 * MiB);
    t.equal(r.bytes, 4 * MiB);
    t.equal(r.received, r.sent, 'hash-verified transfer through the relay');
    const pc = await c.pathTo(d.id);
    t.equal(pc?.path, 'relayed', 'carol is relayed');
    t.same(pc?.endpoint, { host: INFRA_IP, port: 9001 }, 'through the beacon');
    t.equal((await d.pathTo(c.id))?.path, 'relayed', 'dave too');
  });

  t.test('4: a relayed stream upgrades to direct when the NATs become punchable; stream intact', async (t) => {
    const erin = await w.natted('symmetric', 'erin');
    const finn = await w.natted('symmetric', 'finn');
    const [e, f] = await Promise.all([PeerProc.start(erin), PeerProc.start(finn)]);
    await e.call({ cmd: 'connect', peer: f.id }, 'connected');
    // ~6 MiB paced over ~6 s: one stream that lives through the change.
    const total = 6 * MiB;
    let finished = false;
    const sending = transfer(e, f, total, 64).finally(() => (finished = true));
    await e.waitPath(f.id, (p) => p.path === 'relayed' && p.established, 'relayed');
    await erin.nat!.setType('cone');
    await finn.nat!.setType('cone');
    const up = await e.waitPath(f.id, (p) => p.path !== 'relayed', 'upgrade', 20_000);
    t.notOk(finished, 'the upgrade happened while the stream was still transferring');
    const r = await sending;
    t.equal(r.bytes, total, 'every byte arrived');
    t.equal(r.received, r.sent, 'the stream survived the relay → direct switch byte-exactly');
    t.equal(up.path, 'punched', 'the new path was punched');
    t.equal(up.endpoint?.host, finn.nat!.publicIp, 'straight to finn\'s NAT');
    const { stats } = await e.paths();
    const fs = (await f.paths()).stats;
    t.ok(stats.upgrades! + fs.upgrades! >= 1, 'confirmed by an authenticated ping on the new path');
    const after = await e.pathTo(f.id);
    t.not(after?.path, 'relayed', 'and it stays direct');
  });
}
