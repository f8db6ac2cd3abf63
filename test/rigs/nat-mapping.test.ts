/**
 * NAT rigs, mapping and filtering: each NAT type maps and filters like the NAT it models, proven with
 * plain UDP sockets (the test agent) and STUN-like echo servers on public hosts. Needs root +
 * iproute2/nftables/conntrack; skips with the reason otherwise.
 */
import t from 'tap';
import { NodeProcess, rigAvailable, type NatType } from './netns.js';
import { SILENCE_MS, World } from './world.js';

const avail = await rigAvailable();
if (!avail.ok) {
  t.plan(0, avail.reason);
} else {
  await main();
}

async function main(): Promise<void> {
  const w = await World.create('natm');
  t.teardown(() => w.close());

  t.test('cone NAT: one mapping for every destination, holes open only to whom the inside talked', async (t) => {
    const alice = await w.natted('cone', 'alice');
    const s = await w.sock(alice);
    const seen1 = await s.whoami(w.S1);
    const seen2 = await s.whoami(w.S2);
    t.equal(seen1.ip, alice.nat!.publicIp, 'seen from the NAT public address');
    t.equal(seen1.port, seen2.port, 'both public hosts see the same external port');
    const m = await alice.nat!.mappings();
    t.same(new Set(m.filter((x) => x.inside.port === s.port).map((x) => x.external.port)), new Set([seen1.port]),
      'the router holds one external port for the inside endpoint towards both destinations');

    const stranger1 = await w.sock(w.stranger);
    stranger1.send(seen1.ip, seen1.port, 'unsolicited-before');
    t.equal(await s.maybeRecv((d) => d.data === 'unsolicited-before', SILENCE_MS), undefined,
      'an unsolicited sender cannot reach the inside host');

    const b = await w.sock(w.bob, 5000);
    s.send(w.bob.ip, 5000, 'hello-bob');
    const got = await b.recv((d) => d.data === 'hello-bob');
    t.same({ ip: got.from, port: got.port }, seen1, 'bob sees the same mapping the echo servers saw');
    b.send(got.from, got.port, 'hello-alice');
    t.match(await s.recv((d) => d.data === 'hello-alice'), { from: w.bob.ip, port: 5000 }, 'bob can reach back: hole punched');

    stranger1.send(seen1.ip, seen1.port, 'unsolicited-after');
    t.equal(await s.maybeRecv((d) => d.data === 'unsolicited-after', SILENCE_MS), undefined,
      'the hole is open to bob only, not to a stranger');
  });

  t.test('each NAT type filters inbound traffic like its RFC 4787 model', async (t) => {
    // full-cone: anyone; cone (address-restricted): any port of an address contacted;
    // port-restricted and symmetric: only the exact address and port contacted.
    const expect: Record<NatType, { samePort: boolean; otherPort: boolean; otherHost: boolean }> = {
      'full-cone': { samePort: true, otherPort: true, otherHost: true },
      cone: { samePort: true, otherPort: true, otherHost: false },
      'port-restricted': { samePort: true, otherPort: false, otherHost: false },
      symmetric: { samePort: true, otherPort: false, otherHost: false },
    };
    const bob1 = await w.sock(w.bob);
    const bob2 = await w.sock(w.bob);
    const str = await w.sock(w.stranger);
    await Promise.all(
      (Object.keys(expect) as NatType[]).map(async (type) => {
        const h = await w.natted(type, `filter_${type.replace('-', '_')}`);
        const s = await w.sock(h);
        s.send(w.bob.ip, bob1.port, `${type}:out`);
        const mapped = await bob1.recv((d) => d.data === `${type}:out`);
        bob1.send(mapped.from, mapped.port, `${type}:same-port`);
        bob2.send(mapped.from, mapped.port, `${type}:other-port`);
        str.send(mapped.from, mapped.port, `${type}:other-host`);
        const [samePort, otherPort, otherHost] = await Promise.all(
          ['same-port', 'other-port', 'other-host'].map(
            async (k) => (await s.maybeRecv((d) => d.data === `${type}:${k}`, SILENCE_MS)) !== undefined,
          ),
        );
        t.same({ samePort, otherPort, otherHost }, expect[type], `${type}: who gets through`);
      }),
    );
  });

  t.test('two hosts behind one NAT on the same local port keep distinct endpoint-independent mappings', async (t) => {
    // Plain masquerade would give both the same external port (towards different destinations) and then
    // fail or remap when their destinations cross; a real EIM NAT gives the second host another port.
    const lea = await w.natted('port-restricted', 'lea');
    const max = await w.rig.addPrivateHost('max', lea.nat!);
    const l = await w.sock(lea, 40000);
    const m = await w.sock(max, 40000);
    const l1 = await l.whoami(w.S1);
    const m2 = await m.whoami(w.S2);
    const m1 = await m.whoami(w.S1);
    const l2 = await l.whoami(w.S2);
    t.equal(l1.port, 40000, 'the first host keeps its port');
    t.equal(l2.port, l1.port, 'first host: same external port towards both servers');
    t.equal(m1.port, m2.port, 'second host: same external port towards both servers');
    t.not(m1.port, l1.port, 'the two hosts do not share an external port');
  });

  t.test('TCP from a private host to a public server works through every NAT type (registry traffic)', async (t) => {
    const server = new NodeProcess(w.bob.spawn(process.execPath, ['-e', `
      require('net').createServer((c) => c.end('registry says hi to ' + c.remoteAddress + '\\n'))
        .listen(7000, '0.0.0.0', () => console.log('listening'));`]), 'bob tcp server');
    await server.waitForLine('listening');
    for (const type of ['symmetric', 'port-restricted', 'cone', 'full-cone'] as const) {
      const h = await w.natted(type, `tcp_${type.replace('-', '_')}`);
      const client = new NodeProcess(h.spawn(process.execPath, ['-e', `
        const c = require('net').connect(7000, '${w.bob.ip}');
        c.on('data', (d) => process.stdout.write(d)); c.on('error', (e) => console.log('error ' + e.message));`]), `${type} client`);
      t.equal(await client.waitForLine(/registry|error/), `registry says hi to ${h.nat!.publicIp}`, `${type}: connected, seen from the NAT address`);
      await client.kill();
    }
    await server.kill();
  });

}
