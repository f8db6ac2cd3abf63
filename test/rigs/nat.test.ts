/**
 * The NAT rigs behave like the NATs they model, proven with plain UDP sockets (the test agent) and a
 * STUN-like "what's my address" echo server on public hosts. Needs root + iproute2/nftables/conntrack;
 * skips with the reason otherwise.
 */
import t from 'tap';
import { NetRig, rigAvailable, type Host, type NatType } from './netns.js';
import type { Endpoint, UdpAgent, UdpSocket } from './agent.js';

const avail = await rigAvailable();
if (!avail.ok) {
  t.plan(0, avail.reason);
} else {
  await main();
}

/** How long we listen before concluding a datagram was dropped (veths deliver in well under 1 ms). */
const SILENCE_MS = 800;

async function main(): Promise<void> {
  const rig = await NetRig.create({ prefix: 'natt' });
  t.teardown(() => rig.close());

  const stun1 = await rig.addPublicHost('stun1', '203.0.113.10');
  const stun2 = await rig.addPublicHost('stun2', '203.0.113.20');
  const bob = await rig.addPublicHost('bob', '192.0.2.50');
  const stranger = await rig.addPublicHost('stranger', '192.0.2.66');
  const S1: Endpoint = { ip: stun1.ip, port: 3478 };
  const S2: Endpoint = { ip: stun2.ip, port: 3478 };

  const agents = new Map<Host, Promise<UdpAgent>>();
  const agent = (h: Host): Promise<UdpAgent> => {
    let a = agents.get(h);
    if (!a) agents.set(h, (a = h.udpAgent()));
    return a;
  };
  const sock = async (h: Host, port = 0): Promise<UdpSocket> => (await agent(h)).bind({ port });

  await (await agent(stun1)).bind({ port: 3478, echo: true });
  await (await agent(stun2)).bind({ port: 3478, echo: true });

  /** One fresh NAT of `type` with one host behind it. */
  let natNo = 0;
  const natted = async (type: NatType, hostName: string): Promise<Host> => {
    natNo++;
    const nat = await rig.addNat(`nat${natNo}`, { publicIp: `198.51.100.${natNo}`, lan: `10.${natNo}.0.0/24`, type });
    return rig.addPrivateHost(hostName, nat);
  };

  /** Both sides send to each other's reflexive address at once; resolves which side heard the other. */
  const punch = async (a: UdpSocket, aAddr: Endpoint, b: UdpSocket, bAddr: Endpoint, tag: string) => {
    a.send(bAddr.ip, bAddr.port, `${tag}:from-a`, { repeat: 8, intervalMs: 100 });
    b.send(aAddr.ip, aAddr.port, `${tag}:from-b`, { repeat: 8, intervalMs: 100 });
    const [aHeard, bHeard] = await Promise.all([
      a.maybeRecv((d) => d.data === `${tag}:from-b`, 1500),
      b.maybeRecv((d) => d.data === `${tag}:from-a`, 1500),
    ]);
    return { aHeard: aHeard !== undefined, bHeard: bHeard !== undefined, aFrom: aHeard, bFrom: bHeard };
  };

  t.test('cone NAT: one mapping for every destination, holes open only to whom the inside talked', async (t) => {
    const alice = await natted('cone', 'alice');
    const s = await sock(alice);
    const seen1 = await s.whoami(S1);
    const seen2 = await s.whoami(S2);
    t.equal(seen1.ip, alice.nat!.publicIp, 'seen from the NAT public address');
    t.equal(seen1.port, seen2.port, 'both public hosts see the same external port');
    const m = await alice.nat!.mappings();
    t.same(new Set(m.filter((x) => x.inside.port === s.port).map((x) => x.external.port)), new Set([seen1.port]),
      'the router holds one external port for the inside endpoint towards both destinations');

    const stranger1 = await sock(stranger);
    stranger1.send(seen1.ip, seen1.port, 'unsolicited-before');
    t.equal(await s.maybeRecv((d) => d.data === 'unsolicited-before', SILENCE_MS), undefined,
      'an unsolicited sender cannot reach the inside host');

    const b = await sock(bob, 5000);
    s.send(bob.ip, 5000, 'hello-bob');
    const got = await b.recv((d) => d.data === 'hello-bob');
    t.same({ ip: got.from, port: got.port }, seen1, 'bob sees the same mapping the echo servers saw');
    b.send(got.from, got.port, 'hello-alice');
    t.match(await s.recv((d) => d.data === 'hello-alice'), { from: bob.ip, port: 5000 }, 'bob can reach back: hole punched');

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
    const bob1 = await sock(bob);
    const bob2 = await sock(bob);
    const str = await sock(stranger);
    await Promise.all(
      (Object.keys(expect) as NatType[]).map(async (type) => {
        const h = await natted(type, `filter_${type.replace('-', '_')}`);
        const s = await sock(h);
        s.send(bob.ip, bob1.port, `${type}:out`);
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
    const lea = await natted('port-restricted', 'lea');
    const max = await rig.addPrivateHost('max', lea.nat!);
    const l = await sock(lea, 40000);
    const m = await sock(max, 40000);
    const l1 = await l.whoami(S1);
    const m2 = await m.whoami(S2);
    const m1 = await m.whoami(S1);
    const l2 = await l.whoami(S2);
    t.equal(l1.port, 40000, 'the first host keeps its port');
    t.equal(l2.port, l1.port, 'first host: same external port towards both servers');
    t.equal(m1.port, m2.port, 'second host: same external port towards both servers');
    t.not(m1.port, l1.port, 'the two hosts do not share an external port');
  });

  t.test('symmetric NAT: a new external port per destination; two symmetric peers cannot punch', async (t) => {
    const carol = await natted('symmetric', 'carol');
    const dave = await natted('symmetric', 'dave');
    const c = await sock(carol);
    const seen1 = await c.whoami(S1);
    const seen2 = await c.whoami(S2);
    t.equal(seen1.ip, carol.nat!.publicIp);
    t.not(seen1.port, seen2.port, 'the two public hosts see different external ports');

    const d = await sock(dave);
    const dSeen = await d.whoami(S1);
    const r = await punch(c, seen1, d, dSeen, 'sym');
    t.same({ aHeard: r.aHeard, bHeard: r.bHeard }, { aHeard: false, bHeard: false }, 'hole punching fails both ways');
  });

  for (const type of ['cone', 'port-restricted'] as const) {
    t.test(`two peers behind ${type} NATs hole-punch each other and exchange data`, async (t) => {
      const n = type === 'cone' ? 'c' : 'pr';
      const eve = await natted(type, `eve_${n}`);
      const frank = await natted(type, `frank_${n}`);
      const e = await sock(eve);
      const f = await sock(frank);
      const eSeen = await e.whoami(S1);
      const fSeen = await f.whoami(S1);
      const r = await punch(e, eSeen, f, fSeen, `punch-${n}`);
      t.ok(r.aHeard && r.bHeard, 'both sides hear each other after simultaneous sends');
      t.match(r.aFrom, { from: fSeen.ip, port: fSeen.port }, 'eve hears frank from his reflexive address');
      e.send(fSeen.ip, fSeen.port, 'data: 1+1?');
      t.equal((await f.recv((d) => d.data.startsWith('data:'))).data, 'data: 1+1?');
      f.send(eSeen.ip, eSeen.port, 'answer: 2');
      t.equal((await e.recv((d) => d.data.startsWith('answer:'))).data, 'answer: 2');
    });
  }

  t.test('public peer + port-restricted peer: direct path works once the inside peer sent first', async (t) => {
    const gina = await natted('port-restricted', 'gina');
    const g = await sock(gina);
    const gSeen = await g.whoami(S1);
    const b = await sock(bob);
    b.send(gSeen.ip, gSeen.port, 'too-early');
    t.equal(await g.maybeRecv((d) => d.data === 'too-early', SILENCE_MS), undefined,
      'the public peer cannot reach the inside peer before it sent anything to it');
    g.send(bob.ip, b.port, 'gina-first');
    const got = await b.recv((d) => d.data === 'gina-first');
    t.same({ ip: got.from, port: got.port }, gSeen, 'endpoint-independent mapping: same port as seen by the echo server');
    b.send(gSeen.ip, gSeen.port, 'bob-reply');
    t.match(await g.recv((d) => d.data === 'bob-reply'), { from: bob.ip, port: b.port }, 'and now bob gets through');
  });

  t.test('a NAT changed from symmetric to cone at runtime becomes punchable', async (t) => {
    const hank = await natted('symmetric', 'hank');
    const ivy = await natted('symmetric', 'ivy');
    const h = await sock(hank);
    const i = await sock(ivy);
    const before = await punch(h, await h.whoami(S1), i, await i.whoami(S1), 'mut-before');
    t.ok(!before.aHeard && !before.bHeard, 'punching fails while both are symmetric');

    await hank.nat!.setType('cone');
    await ivy.nat!.setType('cone');
    t.equal(hank.nat!.type, 'cone');
    const hSeen = await h.whoami(S1);
    const iSeen = await i.whoami(S1);
    t.equal(hSeen.port, h.port, 'the cone NAT preserves the inside port');
    const after = await punch(h, hSeen, i, iSeen, 'mut-after');
    t.ok(after.aHeard && after.bHeard, 'the same sockets punch through after the change');
  });

  t.test('flushing conntrack breaks a punched path until both sides send again', async (t) => {
    const jack = await natted('cone', 'jack');
    const kim = await natted('cone', 'kim');
    const j = await sock(jack);
    const k = await sock(kim);
    const jSeen = await j.whoami(S1);
    const kSeen = await k.whoami(S1);
    const r = await punch(j, jSeen, k, kSeen, 'fl');
    t.ok(r.aHeard && r.bHeard, 'punched');

    await jack.nat!.flushMappings();
    await kim.nat!.flushMappings();
    t.same(await jack.nat!.mappings(), [], 'jack\'s router forgot every mapping');

    k.send(jSeen.ip, jSeen.port, 'after-flush-1');
    t.equal(await j.maybeRecv((d) => d.data === 'after-flush-1', SILENCE_MS), undefined,
      'kim cannot reach jack any more (jack\'s NAT dropped the mapping)');
    j.send(kSeen.ip, kSeen.port, 'after-flush-2');
    t.ok(await k.maybeRecv((d) => d.data === 'after-flush-2', 3000),
      'jack reaches kim: kim\'s failed send re-opened her side, jack\'s send re-opens his');
    k.send(jSeen.ip, jSeen.port, 'after-flush-3');
    t.ok(await j.maybeRecv((d) => d.data === 'after-flush-3', 3000), 'the path works both ways again');
  });
}
