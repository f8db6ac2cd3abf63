// Drives test/rigs/nat-infra.js (registry + beacon) and test/rigs/nat-peer.js inside rig namespaces.
import { fileURLToPath } from 'node:url';
import { NetRig, type Host, type NatType, type NodeProcess } from '../rigs/netns.js';
import type { PeerPath } from '../../natpunch/index.js';

const script = (name: string): string => fileURLToPath(new URL(`../rigs/${name}`, import.meta.url));

export const INFRA_IP = '203.0.113.10';
/** Short timers so the rigs run in seconds (the defaults are 20 s keepalive, 5 s probing). */
export const FAST_ARGS = ['--keepalive', '1000', '--probe', '700', '--probe-max', '3000', '--direct-timeout', '1500', '--ping-timeout', '800'];

type Json = Record<string, unknown>;

export class PeerProc {
  private constructor(readonly proc: NodeProcess, readonly id: number, readonly registered: string, readonly host: Host) {}

  static async start(host: Host, args: string[] = []): Promise<PeerProc> {
    const proc = host.node(script('nat-peer.js'), [
      '--registry', `${INFRA_IP}:9000`, '--beacon', `${INFRA_IP}:9001`, ...FAST_ARGS, ...args,
    ]);
    const line = await proc.waitForLine((l) => l.includes('"event":"ready"'), 15_000, `${host.name} ready`);
    const m = JSON.parse(line) as { id: number; registered: string };
    return new PeerProc(proc, m.id, m.registered, host);
  }

  /** Send a command and wait for the reply event (or an error event for the same command). */
  async call(cmd: Json, event: string, timeoutMs = 20_000): Promise<Json> {
    const waiting = this.proc.waitForLine(
      (l) => l.includes(`"event":"${event}"`) || (l.includes('"event":"error"') && l.includes(`"cmd":"${String(cmd.cmd)}"`)),
      timeoutMs,
      `${this.host.name}: ${event}`,
    );
    this.proc.writeLine(JSON.stringify(cmd));
    const m = JSON.parse(await waiting) as Json;
    if (m.event === 'error') throw new Error(`${this.host.name} ${String(cmd.cmd)}: ${String(m.message)}`);
    return m;
  }

  async paths(): Promise<{ paths: PeerPath[]; stats: Record<string, number> }> {
    return (await this.call({ cmd: 'paths' }, 'paths')) as unknown as { paths: PeerPath[]; stats: Record<string, number> };
  }

  async pathTo(peer: number): Promise<PeerPath | undefined> {
    return (await this.paths()).paths.find((p) => p.node === peer);
  }

  /** Poll until the path to `peer` satisfies `pred`. */
  async waitPath(peer: number, pred: (p: PeerPath) => boolean, what: string, ms = 15_000): Promise<PeerPath> {
    const end = Date.now() + ms;
    let last: PeerPath | undefined;
    while (Date.now() < end) {
      last = await this.pathTo(peer);
      if (last && pred(last)) return last;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${this.host.name}: timed out waiting for ${what}; last path ${JSON.stringify(last)}`);
  }
}

/** `from` sends `bytes` to `to` over a fresh stream; both hashes. */
export async function transfer(from: PeerProc, to: PeerProc, bytes: number, gapMs?: number): Promise<{ sent: string; received: string; bytes: number }> {
  await to.call({ cmd: 'expect', bytes }, 'expecting');
  const received = to.proc.waitForLine((l) => l.includes('"event":"received"'), 40_000, `${to.host.name} received`);
  const sent = await from.call({ cmd: 'send', peer: to.id, bytes, gapMs }, 'sent', 40_000);
  const r = JSON.parse(await received) as { sha256: string; bytes: number };
  return { sent: sent.sha256 as string, received: r.sha256, bytes: r.bytes };
}

export interface NatWorld {
  rig: NetRig;
  infra: Host;
  infraProc: NodeProcess;
  natNo: number;
  natted(type: NatType, name: string): Promise<Host>;
}

export async function natWorld(prefix: string): Promise<NatWorld> {
  const rig = await NetRig.create({ prefix });
  try {
    const infra = await rig.addPublicHost('infra', INFRA_IP);
    const infraProc = infra.node(script('nat-infra.js'));
    await infraProc.waitForLine((l) => l.includes('"event":"ready"'), 15_000, 'infra ready');
    const w: NatWorld = {
      rig, infra, infraProc, natNo: 0,
      async natted(type, name) {
        const n = ++w.natNo;
        const nat = await rig.addNat(`nat${n}`, { publicIp: `198.51.100.${n}`, lan: `10.${n}.0.0/24`, type });
        return rig.addPrivateHost(name, nat);
      },
    };
    return w;
  } catch (err) {
    await rig.close();
    throw err;
  }
}
