/**
 * The rig library itself: validation, commands inside namespaces, isolation of parallel rigs, cleanup
 * (normal, crash, signal, SIGKILL + sweepStale), per-namespace UDP mapping timeouts, link impairment.
 * Needs root + iproute2/nftables/conntrack; skips with the reason otherwise.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  NetRig,
  impairmentSupport,
  listRigNamespaces,
  rigAvailable,
  run,
  sweepStale,
} from './netns.js';
import { RigError } from './errors.js';
import { LineReader } from './lines.js';

const avail = await rigAvailable();
if (!avail.ok) {
  t.plan(0, avail.reason);
} else {
  await main();
}

/** Alive and not a zombie (orphans are reaped by init, but a container's init may be slow to). */
function alive(pid: number): boolean {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat)) return false;
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(stat, 'utf8'));
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const fixture = fileURLToPath(new URL('./fixtures/crash-rig.js', import.meta.url));

/** Starts the crash fixture and reads its first line ({"id","namespaces","pid"}). */
async function startFixture(prefix: string, mode: 'throw' | 'wait') {
  const child = spawn(process.execPath, [fixture, prefix, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new LineReader(child.stdout, 'fixture stdout');
  new LineReader(child.stderr, 'fixture stderr'); // drain
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const info = JSON.parse(await out.next((l) => l.startsWith('{'), 20_000)) as { id: string; namespaces: string[]; pid: number };
  return { child, info, exited };
}

async function main(): Promise<void> {
  t.test('rejects bad topology requests with typed errors', async (t) => {
    await t.rejects(NetRig.create({ prefix: 'Bad-Prefix' }), { code: 'invalid_name' });
    const rig = await NetRig.create({ prefix: 'rigt' });
    t.teardown(() => rig.close());
    await rig.addPublicHost('srv', '203.0.113.10');
    await t.rejects(rig.addPublicHost('bad name', '203.0.113.11'), { code: 'invalid_name' });
    await t.rejects(rig.addPublicHost('srv', '203.0.113.12'), { code: 'duplicate' }, 'names are unique');
    await t.rejects(rig.addPublicHost('srv2', '203.0.113.10'), { code: 'duplicate' }, 'public addresses are unique');
    await t.rejects(rig.addPublicHost('lo', '127.0.0.1'), { code: 'invalid_address' });
    await t.rejects(rig.addPublicHost('x', '203.0.113.300'), { code: 'invalid_address' });
    await t.rejects(rig.addNat('n1', { publicIp: '198.51.100.1', lan: '10.1.0.0', type: 'cone' }), { code: 'invalid_address' });
    await t.rejects(rig.addNat('n2', { publicIp: '198.51.100.2', lan: '10.2.0.0/24', type: 'weird' as 'cone' }), { code: 'invalid_name' });
    await t.rejects(rig.addPrivateHost('pc', 'nosuchnat'), { code: 'unknown' });
    const nat = await rig.addNat('n3', { publicIp: '198.51.100.3', lan: '10.3.0.9/30', type: 'cone' });
    t.equal(nat.lan, '10.3.0.8/30', 'LAN subnet is normalised');
    t.equal(nat.gateway, '10.3.0.9');
    t.equal((await rig.addPrivateHost('pc1', nat)).ip, '10.3.0.10');
    await t.rejects(rig.addPrivateHost('pc2', nat), { code: 'invalid_address' }, 'a /30 has room for one host');
    await t.rejects(nat.setUdpTimeout(0), RigError);
  });

  t.test('hosts run commands and processes inside their own namespace', async (t) => {
    const rig = await NetRig.create({ prefix: 'rigt' });
    t.teardown(() => rig.close());
    const srv = await rig.addPublicHost('srv', '203.0.113.10');
    const nat = await rig.addNat('gw', { publicIp: '198.51.100.1', lan: '192.168.7.0/24', type: 'port-restricted' });
    const pc = await rig.addPrivateHost('pc', nat);
    t.equal(pc.ip, '192.168.7.2');
    t.equal(pc.nat, nat);
    t.match((await pc.exec('ip', ['-4', 'addr', 'show', 'dev', 'eth0'])).stdout, 'inet 192.168.7.2/24');
    t.match((await srv.exec('ip', ['route'])).stdout, /default dev eth0/);
    t.match((await pc.exec('ip', ['route'])).stdout, 'default via 192.168.7.1');
    await t.rejects(pc.exec('false'), { code: 'command_failed' });
    t.equal((await pc.exec('cat', [], { input: 'piped' })).stdout, 'piped', 'stdin input reaches the command');

    const sleeper = pc.spawn('sleep', ['60'], { stdio: 'ignore' });
    t.ok(sleeper.pid);
    // `ip netns exec` enters the namespace just before it execs the command: poll briefly.
    const inNs = async () => (await run('ip', ['netns', 'pids', pc.ns])).stdout.split(/\s+/).includes(String(sleeper.pid));
    t.ok(await eventually(inNs), 'the spawned process lives in the host namespace');

    const node = pc.node(fileURLToPath(new URL('./udp-agent.js', import.meta.url)));
    t.match(await node.waitForLine('"ready"'), '{"ev":"ready"}');
    await rig.close();
    t.ok(await eventually(() => !alive(sleeper.pid!)), 'close() killed the spawned process');
    await node.exited;
    t.ok(node.child.exitCode !== null || node.child.signalCode !== null, 'and the node process');
    t.same((await listRigNamespaces('rigt')).filter((n) => n.startsWith(rig.id)), [], 'close() removed every namespace');
    t.throws(() => pc.spawn('true'), { code: 'closed' });
  });

  t.test('parallel rigs get distinct names and are isolated from each other', async (t) => {
    const [a, b] = await Promise.all([NetRig.create({ prefix: 'rigt' }), NetRig.create({ prefix: 'rigt' })]);
    t.teardown(() => Promise.all([a.close(), b.close()]));
    t.not(a.id, b.id);
    // Same member names and addresses in both rigs.
    const [aSrv, bSrv] = await Promise.all([a.addPublicHost('srv', '203.0.113.10'), b.addPublicHost('srv', '203.0.113.10')]);
    const [aCli, bCli] = await Promise.all([a.addPublicHost('cli', '203.0.113.11'), b.addPublicHost('cli', '203.0.113.11')]);
    t.not(aSrv.ns, bSrv.ns);
    for (const n of [...a.namespaceNames(), ...b.namespaceNames()]) t.ok(n.length < 64 && n.startsWith('rigt-'), n);
    const echo = await (await aSrv.udpAgent()).bind({ port: 3478, echo: true });
    t.ok(echo.port === 3478);
    const aSock = await (await aCli.udpAgent()).bind();
    t.same(await aSock.whoami({ ip: '203.0.113.10', port: 3478 }), { ip: '203.0.113.11', port: aSock.port }, 'rig a answers');
    const bSock = await (await bCli.udpAgent()).bind();
    await t.rejects(bSock.whoami({ ip: '203.0.113.10', port: 3478 }, 800), { code: 'agent_failed' },
      'the same address in rig b does not reach rig a');
    t.ok(bSrv);
  });

  t.test('a test process that crashes midway leaves nothing behind', async (t) => {
    const { child, info, exited } = await startFixture('natcrash', 'throw');
    t.equal(info.namespaces.length, 4, 'internet + public host + router + private host');
    await exited;
    t.equal(child.exitCode, 1, 'the fixture died of its uncaught exception');
    const left = (await listRigNamespaces('natcrash')).filter((n) => n.startsWith(info.id));
    t.same(left, [], 'its exit hook deleted every namespace');
    t.ok(await eventually(() => !alive(info.pid)), 'and killed the process it ran inside');
  });

  t.test('SIGTERM cleans up, SIGKILL leftovers are removed by sweepStale', async (t) => {
    const term = await startFixture('natcrash', 'wait');
    term.child.kill('SIGTERM');
    await term.exited;
    t.equal(term.child.signalCode, 'SIGTERM', 'the fixture still dies of SIGTERM');
    t.same((await listRigNamespaces('natcrash')).filter((n) => n.startsWith(term.info.id)), [], 'SIGTERM: namespaces deleted');
    t.ok(await eventually(() => !alive(term.info.pid)), 'SIGTERM: inside process killed');

    const killed = await startFixture('natcrash', 'wait');
    killed.child.kill('SIGKILL');
    await killed.exited;
    const left = (await listRigNamespaces('natcrash')).filter((n) => n.startsWith(killed.info.id));
    t.same(left.sort(), [...killed.info.namespaces].sort(), 'SIGKILL leaves the namespaces behind');
    t.ok(alive(killed.info.pid), 'and the process inside');
    const live = await NetRig.create({ prefix: 'natcrash', sweep: false });
    t.teardown(() => live.close());
    const removed = await sweepStale('natcrash');
    t.same(removed.sort(), [...killed.info.namespaces].sort(), 'sweepStale removes exactly the dead run\'s namespaces');
    t.ok((await listRigNamespaces('natcrash')).includes(live.internet.ns), 'a live rig of this process is left alone');
    t.ok(await eventually(() => !alive(killed.info.pid)), 'sweepStale killed the orphaned process');
  });

  t.test('UDP mapping timeouts are per router namespace', async (t) => {
    const rootTimeout = readFileSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout', 'utf8').trim();
    const rig = await NetRig.create({ prefix: 'rigt' });
    t.teardown(() => rig.close());
    const srv = await rig.addPublicHost('srv', '203.0.113.10');
    const quick = await rig.addNat('quick', { publicIp: '198.51.100.1', lan: '10.1.0.0/24', type: 'cone', udpTimeoutSec: 2 });
    const slow = await rig.addNat('slow', { publicIp: '198.51.100.2', lan: '10.2.0.0/24', type: 'cone' });
    const [q, s] = await Promise.all([rig.addPrivateHost('q', quick), rig.addPrivateHost('s', slow)]);
    await (await srv.udpAgent()).bind({ port: 3478, echo: true });
    const [qs, ss] = await Promise.all([q.udpAgent().then((a) => a.bind()), s.udpAgent().then((a) => a.bind())]);
    await qs.whoami({ ip: srv.ip, port: 3478 });
    await ss.whoami({ ip: srv.ip, port: 3478 });
    t.equal((await quick.exec('cat', ['/proc/sys/net/netfilter/nf_conntrack_udp_timeout'])).stdout.trim(), '2');
    t.equal(readFileSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout', 'utf8').trim(), rootTimeout,
      'the machine\'s own conntrack timeout is untouched');
    t.equal((await quick.mappings()).length, 1, 'mapping present on the quick router');
    t.ok(await eventually(async () => (await quick.mappings()).length === 0, 6000), 'the idle mapping expires after ~2 s');
    t.equal((await slow.mappings()).length, 1, 'the other router (30 s default) still holds its mapping');

    await quick.setUdpTimeout(5);
    t.equal(quick.udpTimeoutSec, 5);
    t.equal((await quick.exec('cat', ['/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream'])).stdout.trim(), '5');
    t.match((await quick.exec('nft', ['list', 'chain', 'ip', 'natrig', 'learn'])).stdout, 'timeout 5s',
      'learned cone mappings follow the new timeout');
  });

  const support = await impairmentSupport();
  const noImpair = !support.netem && !support.nftLoss && 'neither sch_netem nor nftables numgen on this kernel';
  t.test('link impairment: loss (netem or nftables), delay only with netem', { skip: noImpair }, async (t) => {
    t.comment(`impairment support: ${JSON.stringify(support)}`);
    const rig = await NetRig.create({ prefix: 'rigt' });
    t.teardown(() => rig.close());
    const [p1, p2] = await Promise.all([rig.addPublicHost('p1', '203.0.113.1'), rig.addPublicHost('p2', '203.0.113.2')]);
    const [s1, s2] = await Promise.all([p1.udpAgent().then((a) => a.bind()), p2.udpAgent().then((a) => a.bind())]);
    const count = async (tag: string, n: number): Promise<number> => {
      s2.send(p1.ip, s1.port, tag, { repeat: n, intervalMs: 2 });
      let got = 0;
      while (await s1.maybeRecv((d) => d.data === tag, 500)) got++;
      return got;
    };
    t.equal(await count('clean', 50), 50, 'no loss without impairment');

    await p2.impair({ lossPct: 100, direction: 'out' });
    t.equal(await count('lost-out', 20), 0, '100 % outbound loss drops everything p2 sends');
    s1.send(p2.ip, s2.port, 'inbound-ok');
    t.ok(await s2.maybeRecv((d) => d.data === 'inbound-ok', 2000), 'direction out leaves inbound traffic alone');

    await p2.impair({ lossPct: 100, direction: 'in' });
    s1.send(p2.ip, s2.port, 'inbound-lost', { repeat: 5, intervalMs: 20 });
    t.equal(await s2.maybeRecv((d) => d.data === 'inbound-lost', 600), undefined, 'direction in drops what p2 receives');
    t.equal(await count('outbound-ok', 20), 20, 'and leaves what it sends alone');

    await p2.impair({ lossPct: 50 });
    const half = await count('half', 200);
    t.ok(half > 40 && half < 160, `50 % loss delivers roughly half (${half}/200)`);

    await p2.clearImpairment();
    t.equal(await count('cleared', 50), 50, 'clearImpairment restores the link');

    if (support.netem) {
      await t.resolves(p2.impair({ delayMs: 20, jitterMs: 2 }), 'delay via netem');
      await p2.clearImpairment();
    } else {
      await t.rejects(p2.impair({ delayMs: 20 }), { code: 'unsupported' }, 'delay needs netem, which this kernel lacks');
    }
  });
}
