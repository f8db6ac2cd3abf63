import { createSocket, type Socket } from 'node:dgram';
import { Identity } from '../../transport/identity.js';
import { BeaconServer, type BeaconOptions, type BeaconCounter } from '../../natpunch/beacon-server.js';
import { encodeDiscover, encodeSignedDiscover, type Endpoint } from '../../natpunch/beacon-wire.js';

/** The part of a tap test the helpers need. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A mutable virtual clock (unix ms) shared by a beacon and the test. */
export class TestClock {
  t = Date.now();
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A real UDP client socket on loopback with an inbox. */
export class UdpClient {
  readonly inbox: Buffer[] = [];
  private waiters: Array<{ pred: (b: Buffer) => boolean; resolve: (b: Buffer) => void }> = [];

  private constructor(readonly socket: Socket) {
    socket.on('message', (msg) => {
      const i = this.waiters.findIndex((w) => w.pred(msg));
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(msg);
      else this.inbox.push(msg);
    });
  }

  static async open(host = '127.0.0.1'): Promise<UdpClient> {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve) => s.bind(0, host, resolve));
    return new UdpClient(s);
  }

  get port(): number {
    return this.socket.address().port;
  }

  get endpoint(): Endpoint {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  send(buf: Buffer, to: Endpoint): void {
    this.socket.send(buf, to.port, to.address);
  }

  /** The next datagram matching `pred` (from the inbox or as it arrives). Rejects after `ms`. */
  next(pred: (b: Buffer) => boolean = () => true, ms = 3000): Promise<Buffer> {
    const i = this.inbox.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (b: Buffer) => {
          clearTimeout(timer);
          resolve(b);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no matching datagram within ${ms} ms`));
      }, ms);
      this.waiters.push(w);
    });
  }

  /**
   * Round-trip barrier: a node-0 discover and its reply. The beacon handles datagrams in order, so any
   * synchronous reaction to what this client sent earlier has arrived once the reply is here.
   */
  async barrier(beacon: Endpoint): Promise<void> {
    this.send(encodeDiscover(0), beacon);
    await this.next((b) => b[0] === 0x02);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/** A node: identity + node ID + UDP client. */
export interface TestNode {
  id: number;
  identity: Identity;
  client: UdpClient;
}

/** Keys the beacon's publicKeyOf answers from. */
export class KeyBook {
  readonly keys = new Map<number, Buffer>();
  publicKeyOf = (nodeId: number): Buffer | null => this.keys.get(nodeId) ?? null;
  async node(id: number, host = '127.0.0.1'): Promise<TestNode> {
    const identity = Identity.generate();
    this.keys.set(id, identity.publicKey);
    return { id, identity, client: await UdpClient.open(host) };
  }
}

export async function startBeacon(t: Teardown, o: Partial<BeaconOptions> & Pick<BeaconOptions, 'publicKeyOf'>): Promise<{ beacon: BeaconServer; ep: Endpoint }> {
  const beacon = new BeaconServer({ listen: { host: '127.0.0.1', port: 0 }, ...o });
  const addr = await beacon.listen();
  t.teardown(() => beacon.close());
  return { beacon, ep: { address: addr.address, port: addr.port } };
}

/** Send a signed discover and wait for the beacon to finish processing it (its reply has arrived). */
export async function discoverSigned(node: TestNode, beacon: Endpoint, nowMs: number): Promise<void> {
  node.client.send(encodeSignedDiscover(node.identity, node.id, nowMs), beacon);
  await node.client.next((b) => b[0] === 0x02);
}

/** Poll until a counter reaches `value` (for asynchronous checks). Rejects after `ms`. */
export async function waitCounter(beacon: BeaconServer, name: BeaconCounter, value: number, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (beacon.stats().counters[name] < value) {
    if (Date.now() > end) throw new Error(`${name} stayed at ${beacon.stats().counters[name]} (< ${value})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function closeAll(t: Teardown, ...clients: Array<UdpClient | TestNode>): void {
  t.teardown(() => Promise.all(clients.map((c) => ('client' in c ? c.client : c).close())).then(() => undefined));
}
