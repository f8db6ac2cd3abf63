import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { encodeDiscover, encodeRelay } from '../../natpunch/index.js';
import { KeyBook, TestClock, closeAll, discoverSigned, startBeacon, waitCounter } from './helpers.js';

/**
 * Relay queue overflow with a real backlog. On loopback a UDP send never blocks (the kernel hands the
 * packet over synchronously), so the destination node sits in a network namespace behind a veth whose
 * egress is shaped with `tbf`: relayed frames pile up in the qdisc, fill the beacon's socket send buffer,
 * then the socket's own send queue, and the beacon must drop (and count) instead of queueing without
 * bound. Needs root and iproute2; skips otherwise.
 */

interface Rig {
  ns: string;
  hostIp: string;
  nsIp: string;
}

/** Build the namespace rig, or say why not (the test then skips with that reason). */
function buildRig(): Rig | string {
  if (process.getuid?.() !== 0) return 'needs root (network namespace + tc)';
  for (const bin of ['ip', 'tc']) {
    if (spawnSync(bin, ['-V']).error) return `needs ${bin} (Debian package iproute2)`;
  }
  const tag = `pbq${process.pid % 100000}${randomInt(10)}`;
  const ns = `${tag}ns`;
  const hostIf = `${tag}a`;
  const nsIf = `${tag}b`;
  const net = `10.${randomInt(200, 250)}.${randomInt(0, 256)}`;
  const rig = { ns, hostIp: `${net}.1`, nsIp: `${net}.2` };
  const sh = (...args: string[]): void => {
    execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' });
  };
  t.teardown(() => {
    spawnSync('ip', ['link', 'del', hostIf]);
    spawnSync('ip', ['netns', 'del', ns]);
  });
  try {
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns);
    sh('ip', 'addr', 'add', `${rig.hostIp}/30`, 'dev', hostIf);
    sh('ip', 'link', 'set', hostIf, 'up');
    sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${rig.nsIp}/30`, 'dev', nsIf);
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    // 8 Mbit/s egress towards the namespace with a deep qdisc: the socket buffer fills before tbf drops.
    sh('tc', 'qdisc', 'add', 'dev', hostIf, 'root', 'tbf', 'rate', '8mbit', 'burst', '16kb', 'limit', '20mb');
  } catch (err) {
    return `cannot build the namespace rig: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
  return rig;
}

const rig = buildRig();

t.test('relay queue overflow drops and counts (real backlog behind a shaped veth)', { skip: typeof rig === 'string' ? rig : false }, async (t) => {
  const { ns, hostIp, nsIp } = rig as Rig;
  const clock = new TestClock();
  const keys = new KeyBook();
  const { beacon, ep } = await startBeacon(t, {
    listen: { host: hostIp, port: 0 },
    publicKeyOf: keys.publicKeyOf,
    clock,
    legacy: true, // the namespace side is a one-shot v1-style discover from bash
    limits: { relayQueue: 32, socketBufferBytes: 256 * 1024 },
  });
  // Node 2 lives in the namespace: bind it with an unsigned (legacy) discover sent by bash's /dev/udp.
  const discover = [...encodeDiscover(2)].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');
  execFileSync('ip', ['netns', 'exec', ns, 'bash', '-c', `exec 3<>/dev/udp/${ep.address}/${ep.port}; printf '${discover}' >&3`]);
  await waitCounter(beacon, 'discover_legacy_bound', 1);
  t.equal(beacon.bindingOf(2)?.address, nsIp, 'namespace node bound');

  const src = await keys.node(1, hostIp);
  closeAll(t, src);
  await discoverSigned(src, ep, clock.t);

  const frame = encodeRelay(1, 2, Buffer.alloc(8192, 0x5a));
  const total = 3000;
  for (let i = 0; i < total; i++) {
    src.client.send(frame, ep);
    if (i % 32 === 31) await new Promise((r) => setImmediate(r)); // let the beacon read: overflow its send side, not its receive buffer
  }
  // Wait for the backlog to drain (bounded by the shaped link), then read the counters.
  const end = Date.now() + 20_000;
  while ((beacon.stats().sendQueue > 0 || beacon.stats().counters.relay_received + beacon.stats().counters.relay_dropped_malformed < 1) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await src.client.barrier(ep);
  const s = beacon.stats();
  t.ok(s.counters.relay_dropped_queue_full > 0, `dropped ${s.counters.relay_dropped_queue_full} frames with a full queue`);
  t.ok(s.counters.relay_delivered > 0, `delivered ${s.counters.relay_delivered}`);
  t.equal(s.counters.relay_delivered + s.counters.relay_dropped_queue_full, s.counters.relay_received, 'every received frame was either sent or counted as dropped');
  t.ok(s.counters.relay_received <= total);
  t.equal(s.sendQueue, 0, 'queue drained');
  t.equal(s.counters.socket_errors, 0);
  t.ok(beacon.healthy());
});
