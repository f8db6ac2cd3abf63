/** Tiny IPv4 helpers for laying out rig subnets (dotted quads and CIDRs only; no IPv6 in the rigs). */
import { RigError } from './errors.js';

const QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function ipToInt(ip: string): number {
  const m = QUAD.exec(ip);
  if (!m) throw new RigError('invalid_address', `not a dotted-quad IPv4 address: ${JSON.stringify(ip)}`);
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const b = Number(m[i]);
    if (b > 255) throw new RigError('invalid_address', `IPv4 octet out of range in ${ip}`);
    n = n * 256 + b;
  }
  return n;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr {
  /** Network address (host bits zero). */
  base: number;
  prefix: number;
  /** Number of usable host addresses (excludes network and broadcast). */
  hosts: number;
}

/** Parses `a.b.c.d/n` for LAN subnets; n must leave room for a router and at least one host (8..30). */
export function parseCidr(cidr: string): Cidr {
  const [ip, len, ...rest] = cidr.split('/');
  const prefix = Number(len);
  if (rest.length || ip === undefined || !/^\d+$/.test(len ?? '') || prefix < 8 || prefix > 30) {
    throw new RigError('invalid_address', `not an IPv4 CIDR with prefix 8..30: ${JSON.stringify(cidr)}`);
  }
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const base = (ipToInt(ip) & mask) >>> 0;
  return { base, prefix, hosts: 2 ** (32 - prefix) - 2 };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.prefix}`;
}

/** The n-th host address in a subnet (1-based: 1 is the router). */
export function nthHost(c: Cidr, n: number): string {
  if (n < 1 || n > c.hosts) throw new RigError('invalid_address', `subnet ${formatCidr(c)} has no host #${n}`);
  return intToIp(c.base + n);
}

/** Usable unicast host address outside loopback, multicast, broadcast and 0/8. */
export function assertUnicast(ip: string): void {
  const n = ipToInt(ip);
  const first = n >>> 24;
  if (first === 0 || first === 127 || first >= 224) {
    throw new RigError('invalid_address', `${ip} is not a usable unicast address for a rig host`);
  }
}
