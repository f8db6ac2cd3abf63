/** Shared set-up for the tunnel tests: real UDP nodes on 127.0.0.1 and a hand-driven "Go-like" peer. */
import type { Test } from 'tap';
import type { RemoteInfo } from 'node:dgram';
import { Identity } from '../../transport/identity.js';
import { decodePacket, encodePacket, Protocol } from '../../transport/packet.js';
import {
  AeadKey,
  authSignedMessage,
  decodeTunnelFrame,
  encodeAuthKeyExchange,
  encodeSealed,
  Tunnel,
  UdpEndpoint,
  X25519KeyPair,
  type PacketInfo,
  type TunnelOptions,
} from '../../transport/tunnel/index.js';

/** The registry's node → Ed25519 key map, with a count of look-ups (each one precedes crypto work). */
export class FakeRegistry {
  readonly keys = new Map<number, Buffer>();
  lookups = 0;
  readonly lookup = async (node: number): Promise<Buffer | null> => {
    this.lookups++;
    return this.keys.get(node) ?? null;
  };
}

export interface Received {
  node: number;
  packet: Buffer;
  info: PacketInfo;
}

export interface TestNode {
  node: number;
  identity: Identity;
  ep: UdpEndpoint;
  /** The socket the tunnel sends through (swap it to simulate the node moving to a new address). */
  out: UdpEndpoint;
  tunnel: Tunnel;
  port: number;
  /** Every datagram this node put on the wire (buffer lists joined). */
  wire: Array<{ frame: Buffer; port: number; host: string }>;
  received: Received[];
}

export async function makeNode(t: Test, registry: FakeRegistry, node: number, opts: Partial<TunnelOptions> = {}): Promise<TestNode> {
  const identity = Identity.generate();
  registry.keys.set(node, identity.publicKey);
  const ep = new UdpEndpoint(); // 4 MiB: bursts of small frames in the flood tests must not hit kernel drops
  const { port } = await ep.bind('127.0.0.1', 0);
  const wire: TestNode['wire'] = [];
  let self: TestNode;
  const tunnel = new Tunnel({
    identity,
    localNode: node,
    lookupPublicKey: registry.lookup,
    send: (frame, p, host) => {
      wire.push({ frame: Array.isArray(frame) ? Buffer.concat(frame) : Buffer.from(frame), port: p, host });
      self.out.send(frame, p, host);
    },
    ...opts,
  });
  const received: Received[] = [];
  tunnel.on('packet', (n, packet, info) => received.push({ node: n, packet: Buffer.from(packet), info }));
  ep.on('message', (msg, rinfo) => tunnel.handleDatagram(msg, rinfo));
  t.teardown(async () => {
    tunnel.close();
    await ep.close();
  });
  self = { node, identity, ep, out: ep, tunnel, port, wire, received };
  return self;
}

export function packet(src: number, dst: number, payload: string | Buffer, seq = 0): Buffer {
  return encodePacket(
    { flags: 0, protocol: Protocol.DATAGRAM, srcNet: 0, srcNode: src, dstNet: 0, dstNode: dst, srcPort: 49152, dstPort: 1001, seq, ack: 0, window: 0 },
    typeof payload === 'string' ? Buffer.from(payload) : payload,
  );
}

export function payloadOf(pkt: Buffer): string {
  return decodePacket(pkt).payload.toString();
}

/** Resolve when `pred()` holds (polled on every turn of the event loop), or fail after `ms`. */
export async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export async function settle(ms = 30): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * A peer driven by hand, behaving like a v1 Go daemon where the tests need it: it rebuilds its
 * context (new random prefix, counter from 1) every time it processes an exchange frame, uses the
 * same key both directions, and lets the test forge any frame.
 */
export class RawPeer {
  readonly x25519 = X25519KeyPair.generate();
  readonly ep = new UdpEndpoint({ bufferBytes: 0 });
  port = 0;
  key: AeadKey | null = null;
  prefix = 0;
  counter = 0;
  contextsBuilt = 0;
  readonly inbox: Array<{ msg: Buffer; rinfo: RemoteInfo }> = [];

  constructor(
    readonly node: number,
    readonly identity: Identity = Identity.generate(),
  ) {}

  async start(t: Test, registry?: FakeRegistry): Promise<this> {
    if (registry) registry.keys.set(this.node, this.identity.publicKey);
    this.port = (await this.ep.bind('127.0.0.1', 0)).port;
    this.ep.on('message', (msg, rinfo) => {
      this.inbox.push({ msg, rinfo });
      this.process(msg);
    });
    t.teardown(() => this.ep.close());
    return this;
  }

  /** Go: every processed PILA builds a fresh context (new prefix, counter restarts at 1). */
  private process(msg: Buffer): void {
    if (msg.length === 0 || msg[0]! < 0x10) return;
    let f;
    try {
      f = decodeTunnelFrame(msg);
    } catch {
      return;
    }
    if (f.kind === 'PILA') this.buildContext(f.x25519);
  }

  buildContext(peerX25519: Buffer): void {
    this.key = AeadKey.fromSharedSecret(this.x25519.sharedSecret(peerX25519));
    this.prefix = (Math.random() * 0x1_0000_0000) >>> 0;
    this.counter = 0;
    this.contextsBuilt++;
  }

  exchangeFrame(node = this.node, identity = this.identity): Buffer {
    return encodeAuthKeyExchange(node, this.x25519.publicKey, identity.publicKey, identity.sign(authSignedMessage(node, this.x25519.publicKey)));
  }

  sendTo(port: number, frame: Buffer | Buffer[]): void {
    this.ep.send(frame, port, '127.0.0.1');
  }

  /** A sealed frame under the current context (counter pre-incremented, as Go). */
  seal(pkt: Buffer, counter = ++this.counter, prefix = this.prefix): Buffer {
    if (!this.key) throw new Error('no context');
    const nonce = Buffer.alloc(12);
    nonce.writeUInt32BE(prefix >>> 0, 0);
    nonce.writeUInt32BE(Math.floor(counter / 0x1_0000_0000), 4);
    nonce.writeUInt32BE(counter >>> 0, 8);
    const { ciphertext, tag } = this.key.seal(nonce, pkt);
    return encodeSealed(this.node, prefix, counter, ciphertext, tag);
  }

  /** Decrypt a PILS frame we received (same key both directions, as v1). */
  open(frame: Buffer): Buffer | null {
    const f = decodeTunnelFrame(frame);
    if (f.kind !== 'PILS' || !this.key) return null;
    return this.key.open(f.nonce, f.ciphertext, f.tag);
  }

  frames(kind: string): Buffer[] {
    return this.inbox.map((m) => m.msg).filter((m) => m.length >= 4 && m.subarray(0, 4).toString('latin1') === kind);
  }
}

/** Collect events of one kind from an emitter into an array (for assertions after the fact). */
export function collect<T extends unknown[]>(emitter: NodeJS.EventEmitter, event: string): T[] {
  const out: T[] = [];
  emitter.on(event, (...args: unknown[]) => out.push(args as T));
  return out;
}
