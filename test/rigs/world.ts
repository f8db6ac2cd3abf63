/**
 * A ready-made "internet" for NAT tests: two STUN-like echo servers, a public peer and a stranger, plus
 * helpers to add NATed hosts, bind agent sockets and hole-punch. Used by the rig's own NAT tests and a
 * worked example of the library for NAT traversal tests.
 */
import { NetRig, type Host, type NatType } from './netns.js';
import type { Datagram, Endpoint, UdpAgent, UdpSocket } from './agent.js';

export interface PunchResult {
  /** Side a received b's punch (and from where). */
  aHeard: Datagram | undefined;
  bHeard: Datagram | undefined;
}

export class World {
  /** Echo servers ("what's my address") on 203.0.113.10:3478 and 203.0.113.20:3478. */
  readonly S1: Endpoint;
  readonly S2: Endpoint;
  private readonly agents = new Map<Host, Promise<UdpAgent>>();
  private natNo = 0;

  private constructor(
    readonly rig: NetRig,
    readonly stun1: Host,
    readonly stun2: Host,
    /** A public peer, 192.0.2.50. */
    readonly bob: Host,
    /** A public host nobody behind a NAT ever talks to, 192.0.2.66. */
    readonly stranger: Host,
  ) {
    this.S1 = { ip: stun1.ip, port: 3478 };
    this.S2 = { ip: stun2.ip, port: 3478 };
  }

  static async create(prefix: string): Promise<World> {
    const rig = await NetRig.create({ prefix });
    try {
      const [stun1, stun2, bob, stranger] = await Promise.all([
        rig.addPublicHost('stun1', '203.0.113.10'),
        rig.addPublicHost('stun2', '203.0.113.20'),
        rig.addPublicHost('bob', '192.0.2.50'),
        rig.addPublicHost('stranger', '192.0.2.66'),
      ]);
      const w = new World(rig, stun1, stun2, bob, stranger);
      await Promise.all([w.agent(stun1).then((a) => a.bind({ port: 3478, echo: true })),
        w.agent(stun2).then((a) => a.bind({ port: 3478, echo: true }))]);
      return w;
    } catch (err) {
      await rig.close();
      throw err;
    }
  }

  /** The host's UDP agent (started on first use, killed with the rig). */
  agent(h: Host): Promise<UdpAgent> {
    let a = this.agents.get(h);
    if (!a) this.agents.set(h, (a = h.udpAgent()));
    return a;
  }

  async sock(h: Host, port = 0): Promise<UdpSocket> {
    return (await this.agent(h)).bind({ port });
  }

  /** A fresh NAT of `type` (198.51.100.n, LAN 10.n.0.0/24) with one host behind it. */
  async natted(type: NatType, hostName: string): Promise<Host> {
    const n = ++this.natNo;
    const nat = await this.rig.addNat(`nat${n}`, { publicIp: `198.51.100.${n}`, lan: `10.${n}.0.0/24`, type });
    return this.rig.addPrivateHost(hostName, nat);
  }

  /**
   * Simultaneous hole punch: each side sends to the other's reflexive address 8 times, 100 ms apart, and
   * listens for 1.5 s. Repeats are cancelled before returning so nothing trails into later steps.
   */
  async punch(a: UdpSocket, aAddr: Endpoint, b: UdpSocket, bAddr: Endpoint, tag: string): Promise<PunchResult> {
    a.send(bAddr.ip, bAddr.port, `${tag}:from-a`, { repeat: 8, intervalMs: 100 });
    b.send(aAddr.ip, aAddr.port, `${tag}:from-b`, { repeat: 8, intervalMs: 100 });
    const [aHeard, bHeard] = await Promise.all([
      a.maybeRecv((d) => d.data === `${tag}:from-b`, 1500),
      b.maybeRecv((d) => d.data === `${tag}:from-a`, 1500),
    ]);
    await Promise.all([a.stopSending(), b.stopSending()]);
    return { aHeard, bHeard };
  }

  close(): Promise<void> {
    return this.rig.close();
  }
}

/** How long tests listen before concluding a datagram was dropped (veths deliver in well under 1 ms). */
export const SILENCE_MS = 800;
