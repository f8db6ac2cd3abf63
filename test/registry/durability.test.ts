import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Identity } from '../../transport/identity.js';
import { RegistryClient } from '../../registry/client.js';
import { startRegistryProcess } from './proc.js';

/**
 * SPEC §6 "durable": every acknowledged mutation survives kill -9. A real `pilot-registry` process takes
 * a mixed write load from several clients; every acknowledged reply is recorded; the process is killed
 * with SIGKILL at an arbitrary moment, restarted on the same data dir, and every acknowledged write
 * must be there. Each field is written at most once per node, so "acknowledged" has one expected value.
 */

const ADMIN = 'durability-admin';
const WORKERS = 6;

interface Acked {
  identity: Identity;
  nodeId: number;
  hostname?: string;
  tags?: string[];
  isPublic?: boolean;
  networks: number[];
  /** nodes this node consented to (report_trust acknowledged) */
  consents: number[];
}

t.test('kill -9 mid-load loses no acknowledged write', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pilot-kill9-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ rate_limits: false, 'log-level': 'warn' }));
  const args = ['--listen', '127.0.0.1:0', '--no-beacon', '--data-dir', join(dir, 'data'), '--admin-token', ADMIN, '--config', join(dir, 'config.json')];
  const first = await startRegistryProcess(t, args);

  const setup = await RegistryClient.connect({ host: '127.0.0.1', port: first.port });
  const nets: number[] = [];
  for (let i = 0; i < 3; i++) nets.push((await setup.createNetwork(ADMIN, { name: `net-${i}`, joinRule: 'open' })).network_id);
  await setup.close();

  const acked: Acked[] = [];
  let stop = false;
  let acks = 0;
  const worker = async (w: number): Promise<void> => {
    const c = new RegistryClient({ host: '127.0.0.1', port: first.port, requestTimeoutMs: 3000, reconnectMinMs: 60_000 });
    try {
      let prev: Acked | null = null;
      for (let i = 0; !stop; i++) {
        const identity = Identity.generate();
        const reg = await c.register(identity, { listenAddr: `:${4000 + i}` });
        const node: Acked = { identity, nodeId: reg.node_id, networks: [], consents: [] };
        acked.push(node);
        acks++;
        const auth = { identity, nodeId: node.nodeId };
        const hostname = `w${w}-n${i}`;
        await c.setHostname(auth, hostname);
        node.hostname = hostname;
        acks++;
        const tags = [`w${w}`, `i${i % 5}`];
        await c.setTags(auth, tags);
        node.tags = tags;
        acks++;
        if (i % 2 === 0) {
          await c.setVisibility(auth, true);
          node.isPublic = true;
          acks++;
        }
        const net = nets[i % nets.length]!;
        await c.joinNetwork(auth, net);
        node.networks.push(net);
        acks++;
        if (prev) {
          await c.reportTrust(auth, prev.nodeId);
          node.consents.push(prev.nodeId);
          acks++;
          await c.reportTrust({ identity: prev.identity, nodeId: prev.nodeId }, node.nodeId);
          prev.consents.push(node.nodeId);
          acks++;
        }
        prev = node;
      }
    } catch {
      // the kill: the request in flight is simply not acknowledged
    } finally {
      await c.close();
    }
  };
  const workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
  // kill at an arbitrary moment once some load has been acknowledged
  const killAfter = 400 + Math.floor(Math.random() * 1200);
  const start = Date.now();
  while (acks < 200 || Date.now() - start < killAfter) await new Promise((r) => setTimeout(r, 10));
  first.proc.kill('SIGKILL');
  const exit = await first.exited;
  stop = true;
  await Promise.all(workers);
  t.equal(exit.signal, 'SIGKILL', 'registry was killed hard');
  t.ok(acks >= 200, `acknowledged writes before the kill: ${acks}`);

  const second = await startRegistryProcess(t, args);
  const c = await RegistryClient.connect({ host: '127.0.0.1', port: second.port });
  t.teardown(() => c.close());
  let missing = 0;
  const lookups = await Promise.all(acked.map((n) => c.lookup(n.nodeId).catch((e: Error) => e)));
  for (const [i, n] of acked.entries()) {
    const l = lookups[i]!;
    if (l instanceof Error) {
      missing++;
      t.fail(`node ${n.nodeId} lost: ${l.message}`);
      continue;
    }
    const ok =
      l.public_key === n.identity.publicKeyB64 &&
      (n.hostname === undefined || l.hostname === n.hostname) &&
      (n.tags === undefined || JSON.stringify(l.tags) === JSON.stringify(n.tags)) &&
      (n.isPublic === undefined || l.public === true) &&
      n.networks.every((net) => l.networks.includes(net));
    if (!ok) {
      missing++;
      t.fail(`node ${n.nodeId}: acknowledged state missing: ${JSON.stringify({ want: { ...n, identity: undefined }, got: l })}`);
    }
  }
  // trust: both consents acknowledged → the pair resolves
  const byId = new Map(acked.map((n) => [n.nodeId, n]));
  const checks: Array<Promise<unknown>> = [];
  for (const n of acked) {
    for (const peer of n.consents) {
      const p = byId.get(peer);
      if (!p || !p.consents.includes(n.nodeId) || n.nodeId > peer) continue;
      checks.push(
        c.resolve({ identity: n.identity, nodeId: n.nodeId }, peer).catch((e: Error) => {
          missing++;
          t.fail(`trust ${n.nodeId}↔${peer} lost: ${e.message}`);
        }),
      );
    }
  }
  await Promise.all(checks);
  t.equal(missing, 0, `all ${acks} acknowledged writes on ${acked.length} nodes (${checks.length} mutual trust pairs) survived kill -9`);
  second.proc.kill('SIGTERM');
  t.equal((await second.exited).code, 0, 'clean shutdown on SIGTERM');
});
