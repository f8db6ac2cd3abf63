import { AddressError } from './errors.js';

/** 16-bit network ID + 32-bit node ID (wire reference §1.1). Immutable value object. */
export class Addr {
  readonly network: number;
  readonly node: number;

  constructor(network: number, node: number) {
    if (!Number.isInteger(network) || network < 0 || network > 0xffff) {
      throw new AddressError('invalid_network', `network out of range: ${network}`);
    }
    if (!Number.isInteger(node) || node < 0 || node > 0xffffffff) {
      throw new AddressError('invalid_node', `node out of range: ${node}`);
    }
    this.network = network;
    this.node = node;
  }

  static readonly ZERO = new Addr(0, 0);

  /** `N:NNNN.HHHH.LLLL`, upper-case hex, first group = network. */
  toString(): string {
    return `${this.network}:${hex4(this.network)}.${hex4(this.node >>> 16)}.${hex4(this.node & 0xffff)}`;
  }

  equals(other: Addr): boolean {
    return this.network === other.network && this.node === other.node;
  }

  isBroadcast(): boolean {
    return this.node === BROADCAST_NODE;
  }

  isZero(): boolean {
    return this.network === 0 && this.node === 0;
  }

  /** The same node on another network. */
  withNetwork(network: number): Addr {
    return new Addr(network, this.node);
  }

  /** 6 bytes BE: network(2) node(4). */
  toBytes(): Buffer {
    const b = Buffer.allocUnsafe(ADDR_LEN);
    this.write(b, 0);
    return b;
  }

  write(buf: Buffer, offset: number): void {
    buf.writeUInt16BE(this.network, offset);
    buf.writeUInt32BE(this.node, offset + 2);
  }

  static read(buf: Uint8Array, offset = 0): Addr {
    if (buf.length - offset < ADDR_LEN) {
      throw new AddressError('short_address', `address needs ${ADDR_LEN} bytes, got ${Math.max(0, buf.length - offset)}`);
    }
    const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    return new Addr(b.readUInt16BE(offset), b.readUInt32BE(offset + 2));
  }

  /** Parse `N:NNNN.HHHH.LLLL` with the v1 rules (hex case-insensitive, first group must equal N). */
  static parse(text: string): Addr {
    if (typeof text !== 'string') throw new AddressError('invalid_address', 'address must be a string');
    const colon = text.indexOf(':');
    if (colon <= 0) throw new AddressError('invalid_address', `invalid address "${clip(text)}": expected N:NNNN.HHHH.LLLL`);
    const netText = text.slice(0, colon);
    if (!/^[0-9]{1,5}$/.test(netText)) throw new AddressError('invalid_address', `invalid network "${clip(netText)}"`);
    const network = Number(netText);
    if (network > 0xffff) throw new AddressError('invalid_address', `network ${network} exceeds 65535`);
    const groups = text.slice(colon + 1).split('.');
    if (groups.length !== 3 || !groups.every((g) => /^[0-9a-fA-F]{4}$/.test(g))) {
      throw new AddressError('invalid_address', `invalid address "${clip(text)}": expected three groups of 4 hex digits`);
    }
    const [g1, g2, g3] = groups.map((g) => parseInt(g, 16)) as [number, number, number];
    if (g1 !== network) throw new AddressError('network_mismatch', `network mismatch in "${clip(text)}": ${network} vs ${hex4(g1)}`);
    return new Addr(network, ((g2 << 16) >>> 0) + g3);
  }

  /**
   * Accepts what users type for a peer: full address text, or a bare decimal node ID (backbone).
   * Returns null when the text is neither (callers then try it as a hostname).
   */
  static parseLoose(text: string): Addr | null {
    if (/^[0-9]{1,10}$/.test(text)) {
      const n = Number(text);
      return n <= 0xffffffff ? new Addr(0, n) : null;
    }
    if (text.includes(':')) {
      try {
        return Addr.parse(text);
      } catch {
        return null;
      }
    }
    return null;
  }
}

/** An address plus a 16-bit port; text form `addr:port` (split at the last colon). */
export class SocketAddr {
  constructor(readonly addr: Addr, readonly port: number) {
    assertPort(port);
  }

  toString(): string {
    return `${this.addr.toString()}:${this.port}`;
  }

  static parse(text: string): SocketAddr {
    if (typeof text !== 'string') throw new AddressError('invalid_address', 'socket address must be a string');
    const last = text.lastIndexOf(':');
    if (last <= 0) throw new AddressError('invalid_address', `invalid socket address "${clip(text)}": expected addr:port`);
    const portText = text.slice(last + 1);
    if (!/^[0-9]{1,5}$/.test(portText)) throw new AddressError('invalid_port', `invalid port "${clip(portText)}"`);
    return new SocketAddr(Addr.parse(text.slice(0, last)), Number(portText));
  }
}

export const ADDR_LEN = 6;
export const BROADCAST_NODE = 0xffffffff;
export const REGISTRY_NODE = 1;
export const BEACON_NODE = 2;
export const NAMESERVER_NODE = 3;

/** Well-known virtual ports (wire reference §1.2). */
export const Ports = {
  PING: 0,
  CONTROL: 1,
  ECHO: 7,
  NAMESERVER: 53,
  HTTP: 80,
  SECURE: 443,
  HANDSHAKE: 444,
  STDIO: 1000,
  DATA_EXCHANGE: 1001,
  EVENT_STREAM: 1002,
  TASK_SUBMIT: 1003,
  EPHEMERAL_FIRST: 49152,
  EPHEMERAL_LAST: 65535,
} as const;

export function assertPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new AddressError('invalid_port', `port out of range: ${port}`);
  }
}

export function broadcastAddr(network: number): Addr {
  return new Addr(network, BROADCAST_NODE);
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
