/**
 * NAT rigs, hole punching: who can punch whom, runtime NAT changes and mapping loss, with plain UDP
 * sockets (the test agent) and STUN-like echo servers on public hosts. Needs root +
 * iproute2/nftables/conntrack; skips with the reason otherwise.
 */
import t from 'tap';
import { rigAvailable } from './netns.js';
import { SILENCE_MS, World } from './world.js';

const avail = await rigAvailable();
if (!avail.ok) {
  t.plan(0, avail.reason);
} else {
  await main();
}

async function main(): Promise<void> {
  const w = await World.create('natp');
  t.teardown(() => w.close());

  t.test('symmetric NAT: a new external port per destination; two symmetric peers cannot punch', async (t) => {
    const carol = await w.natted('symmetric', 'carol');
    const dave = await w.natted('symmetric', 'dave');
    const c = await w.sock(carol);
    const seen1 = await c.whoami(w.S1);
    const seen2 = await c.whoami(w.S2);
    t.equal(seen1.ip, carol.nat!.publicIp);
    t.not(seen1.port, seen2.port, 'the two public hosts see different external ports');

    const d = await w.sock(dave);
    const dSeen = await d.whoami(w.S1);
    const r = await w.punch(c, seen1, d, dSeen, 'sym');
    t.same({ aHeard: r.aHeard, bHeard: r.bHeard }, { aHeard: undefined, bHeard: undefined }, 'hole punching fails both ways');
  });

  for (const type of ['cone', 'port-restricted'] as const) {
    t.test(`two peers behind ${type} NATs hole-punch each other and exchange data`, async (t) => {
      const n = type === 'cone' ? 'c' : 'pr';
      const eve = await w.natted(type, `eve_${n}`);
      const frank = await w.natted(type, `frank_${n}`);
      const e = await w.sock(eve);
      const f = await w.sock(frank);
      const eSeen = await e.whoami(w.S1);
      const fSeen = await f.whoami(w.S1);
      const r = await w.punch(e, eSeen, f, fSeen, `punch-${n}`);
      t.ok(r.aHeard && r.bHeard, 'both sides hear each other after simultaneous sends');
      t.match(r.aHeard, { from: fSeen.ip, port: fSeen.port }, 'eve hears frank from his reflexive address');
      e.send(fSeen.ip, fSeen.port, 'data: 1+1?');
      t.equal((await f.recv((d) => d.data.startsWith('data:'))).data, 'data: 1+1?');
      f.send(eSeen.ip, eSeen.port, 'answer: 2');
      t.equal((await e.recv((d) => d.data.startsWith('answer:'))).data, 'answer: 2');
    });
  }

  t.test('public peer + port-restricted peer: direct path works once the inside peer sent first', async (t) => {
    const gina = await w.natted('port-restricted', 'gina');
    const g = await w.sock(gina);
    const gSeen = await g.whoami(w.S1);
    const b = await w.sock(w.bob);
    b.send(gSeen.ip, gSeen.port, 'too-early');
    t.equal(await g.maybeRecv((d) => d.data === 'too-early', SILENCE_MS), undefined,
      'the public peer cannot reach the inside peer before it sent anything to it');
    g.send(w.bob.ip, b.port, 'gina-first');
    const got = await b.recv((d) => d.data === 'gina-first');
    t.same({ ip: got.from, port: got.port }, gSeen, 'endpoint-independent mapping: same port as seen by the echo server');
    b.send(gSeen.ip, gSeen.port, 'bob-reply');
    t.match(await g.recv((d) => d.data === 'bob-reply'), { from: w.bob.ip, port: b.port }, 'and now bob gets through');
  });

  t.test('a NAT changed from symmetric to cone at runtime becomes punchable', async (t) => {
    const hank = await w.natted('symmetric', 'hank');
    const ivy = await w.natted('symmetric', 'ivy');
    const h = await w.sock(hank);
    const i = await w.sock(ivy);
    const before = await w.punch(h, await h.whoami(w.S1), i, await i.whoami(w.S1), 'mut-before');
    t.ok(!before.aHeard && !before.bHeard, 'punching fails while both are symmetric');

    await hank.nat!.setType('cone');
    await ivy.nat!.setType('cone');
    t.equal(hank.nat!.type, 'cone');
    const hSeen = await h.whoami(w.S1);
    const iSeen = await i.whoami(w.S1);
    t.equal(hSeen.port, h.port, 'the cone NAT preserves the inside port');
    const after = await w.punch(h, hSeen, i, iSeen, 'mut-after');
    t.ok(after.aHeard && after.bHeard, 'the same sockets punch through after the change');
  });

  t.test('flushing conntrack breaks a punched path until both sides send again', async (t) => {
    const jack = await w.natted('cone', 'jack');
    const kim = await w.natted('cone', 'kim');
    const j = await w.sock(jack);
    const k = await w.sock(kim);
    const jSeen = await j.whoami(w.S1);
    const kSeen = await k.whoami(w.S1);
    const r = await w.punch(j, jSeen, k, kSeen, 'fl');
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
