import { createHmac, randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';
import { crc32 } from 'node:zlib';
import type { Endpoint } from './beacon-wire.js';
import { StunError } from './errors.js';
import { ipFromBytes, ipToBytes } from './ip.js';

/**
 * STUN (RFC 8489) Binding for reflexive-address discovery (SPEC §7): message codec and a client
 * transaction with the RFC's retransmission schedule. Only what a NAT-traversal client needs:
 * no credentials, no TURN.
 */

export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_LEN = 20;
export const STUN_DEFAULT_PORT = 3478;
/** RFC 8489 §14.7: CRC-32 of the message XOR this constant ("STUN"). */
const FINGERPRINT_XOR = 0x5354554e;

export const StunMethod = { BINDING: 0x001 } as const;
export const StunClass = { REQUEST: 0, INDICATION: 1, SUCCESS: 2, ERROR: 3 } as const;

export const StunAttr = {
  MAPPED_ADDRESS: 0x0001,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  REALM: 0x0014,
  NONCE: 0x0015,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  XOR_MAPPED_ADDRESS: 0x0020,
  PASSWORD_ALGORITHMS: 0x8002,
  ALTERNATE_DOMAIN: 0x8003,
  SOFTWARE: 0x8022,
  ALTERNATE_SERVER: 0x8023,
  FINGERPRINT: 0x8028,
  RESPONSE_ORIGIN: 0x802b,
  OTHER_ADDRESS: 0x802c,
} as const;

/**
 * Comprehension-required attributes (0x0000–0x7FFF) we understand or may safely ignore in a Binding
 * response: RFC 8489, the RFC 3489 legacy set, RFC 5780 and TURN (RFC 8656). Anything else in that range
 * makes a success response invalid (RFC 8489 §7.3.3).
 */
const KNOWN_REQUIRED = new Set<number>([
  0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008, 0x0009, 0x000a, 0x000b, 0x000c, 0x000d, 0x0012,
  0x0013, 0x0014, 0x0015, 0x0016, 0x0017, 0x0018, 0x0019, 0x001a, 0x001c, 0x001d, 0x001e, 0x0020, 0x0022, 0x0026,
  0x0027, 0x002a,
]);

export interface StunAttribute {
  type: number;
  /** View into the message (not a copy), without padding. */
  value: Buffer;
}

export interface StunMessage {
  method: number;
  /** One of `StunClass`. */
  cls: number;
  transactionId: Buffer;
  attributes: StunAttribute[];
  /** A FINGERPRINT attribute was present (and valid: invalid ones are rejected). */
  fingerprint: boolean;
}

/** Cheap demux test (e.g. on the tunnel socket, where STUN shares first bytes with beacon messages). */
export function isStunMessage(buf: Uint8Array): boolean {
  if (buf.length < STUN_HEADER_LEN || (buf[0]! & 0xc0) !== 0) return false;
  const len = (buf[2]! << 8) | buf[3]!;
  if ((len & 3) !== 0 || STUN_HEADER_LEN + len !== buf.length) return false;
  return buf[4] === 0x21 && buf[5] === 0x12 && buf[6] === 0xa4 && buf[7] === 0x42;
}

/** RFC 8489 §5: method and class interleave in the 14-bit message type. */
export function stunMessageType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

export interface EncodeStunOptions {
  method?: number;
  cls?: number;
  attributes?: ReadonlyArray<{ type: number; value: Uint8Array }>;
  /** Append FINGERPRINT (default true for requests we send: lets the server tell STUN from other traffic). */
  fingerprint?: boolean;
}

/** Encode a STUN message. Attribute values are padded to 4 bytes with zeros. */
export function encodeStunMessage(transactionId: Uint8Array, o: EncodeStunOptions = {}): Buffer {
  if (transactionId.length !== 12) throw new StunError('bad_attribute', 'transaction ID must be 12 bytes');
  const attrs = o.attributes ?? [];
  let bodyLen = 0;
  for (const a of attrs) {
    if (a.value.length > 0xffff) throw new StunError('bad_attribute', 'attribute value too long');
    bodyLen += 4 + pad4(a.value.length);
  }
  const withFp = o.fingerprint ?? false;
  const total = STUN_HEADER_LEN + bodyLen + (withFp ? 8 : 0);
  if (total - STUN_HEADER_LEN > 0xffff) throw new StunError('bad_length', 'STUN message too long');
  const b = Buffer.alloc(total);
  b.writeUInt16BE(stunMessageType(o.method ?? StunMethod.BINDING, o.cls ?? StunClass.REQUEST), 0);
  b.writeUInt16BE(total - STUN_HEADER_LEN, 2);
  b.writeUInt32BE(STUN_MAGIC_COOKIE, 4);
  b.set(transactionId, 8);
  let off = STUN_HEADER_LEN;
  for (const a of attrs) {
    b.writeUInt16BE(a.type, off);
    b.writeUInt16BE(a.value.length, off + 2);
    b.set(a.value, off + 4);
    off += 4 + pad4(a.value.length);
  }
  if (withFp) {
    b.writeUInt16BE(StunAttr.FINGERPRINT, off);
    b.writeUInt16BE(4, off + 2);
    b.writeUInt32BE((crc32(b.subarray(0, off)) ^ FINGERPRINT_XOR) >>> 0, off + 4);
  }
  return b;
}

/** A Binding request (RFC 8489 §6.1), with FINGERPRINT by default and optional SOFTWARE. */
export function encodeBindingRequest(transactionId: Uint8Array, o: { fingerprint?: boolean; software?: string } = {}): Buffer {
  const attributes = o.software ? [{ type: StunAttr.SOFTWARE, value: Buffer.from(o.software.slice(0, 127), 'utf8') }] : [];
  return encodeStunMessage(transactionId, { attributes, fingerprint: o.fingerprint ?? true });
}

/** Decode and validate a STUN message. Throws only `StunError`. Attribute values are views. */
export function decodeStunMessage(buf: Uint8Array): StunMessage {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < STUN_HEADER_LEN) throw new StunError('too_short', `STUN message needs ${STUN_HEADER_LEN} bytes, got ${b.length}`);
  const type = b.readUInt16BE(0);
  if ((type & 0xc000) !== 0) throw new StunError('not_stun', 'top two bits of a STUN message must be zero');
  if (b.readUInt32BE(4) !== STUN_MAGIC_COOKIE) throw new StunError('not_stun', 'missing STUN magic cookie (RFC 3489 servers are not supported)');
  const len = b.readUInt16BE(2);
  if ((len & 3) !== 0) throw new StunError('bad_length', `STUN length ${len} is not a multiple of 4`);
  if (STUN_HEADER_LEN + len !== b.length) throw new StunError('bad_length', `STUN length ${len} does not match datagram size ${b.length}`);
  const attributes: StunAttribute[] = [];
  let fingerprint = false;
  let afterIntegrity = false;
  let off = STUN_HEADER_LEN;
  while (off < b.length) {
    if (fingerprint) throw new StunError('bad_attribute', 'FINGERPRINT must be the last attribute');
    if (b.length - off < 4) throw new StunError('bad_attribute', 'truncated attribute header');
    const at = b.readUInt16BE(off);
    const alen = b.readUInt16BE(off + 2);
    if (off + 4 + pad4(alen) > b.length) throw new StunError('bad_attribute', `attribute 0x${at.toString(16)} overruns the message`);
    const value = b.subarray(off + 4, off + 4 + alen);
    if (at === StunAttr.FINGERPRINT) {
      if (alen !== 4) throw new StunError('bad_attribute', 'FINGERPRINT must be 4 bytes');
      const expect = (crc32(b.subarray(0, off)) ^ FINGERPRINT_XOR) >>> 0;
      if (value.readUInt32BE(0) !== expect) throw new StunError('bad_fingerprint', 'STUN FINGERPRINT does not match');
      fingerprint = true;
    } else if (!afterIntegrity) {
      // RFC 8489 §14.5/14.6: attributes after MESSAGE-INTEGRITY (except FINGERPRINT) are ignored.
      attributes.push({ type: at, value });
      if (at === StunAttr.MESSAGE_INTEGRITY || at === StunAttr.MESSAGE_INTEGRITY_SHA256) afterIntegrity = true;
    }
    off += 4 + pad4(alen);
  }
  return {
    method: (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80),
    cls: ((type >> 4) & 1) | ((type >> 7) & 2),
    transactionId: b.subarray(8, 20),
    attributes,
    fingerprint,
  };
}

/** First occurrence of an attribute (RFC 8489 §14: later duplicates are ignored). */
export function findAttribute(m: StunMessage, type: number): Buffer | undefined {
  for (const a of m.attributes) if (a.type === type) return a.value;
  return undefined;
}

/** Decode MAPPED-ADDRESS-style value (also ALTERNATE-SERVER, RESPONSE-ORIGIN, OTHER-ADDRESS). */
export function decodeMappedAddress(value: Buffer): Endpoint {
  return decodeAddress(value, null);
}

/** Decode XOR-MAPPED-ADDRESS (RFC 8489 §14.2): port ^ cookie>>16, address ^ cookie (‖ transaction ID for IPv6). */
export function decodeXorMappedAddress(value: Buffer, transactionId: Uint8Array): Endpoint {
  return decodeAddress(value, transactionId);
}

/** Encode XOR-MAPPED-ADDRESS (for tests and test servers). */
export function encodeXorMappedAddress(ep: Endpoint, transactionId: Uint8Array): Buffer {
  return encodeAddress(ep, transactionId);
}

export function encodeMappedAddress(ep: Endpoint): Buffer {
  return encodeAddress(ep, null);
}

export interface StunErrorCode {
  code: number;
  reason: string;
}

export function decodeErrorCode(value: Buffer): StunErrorCode {
  if (value.length < 4) throw new StunError('bad_attribute', 'ERROR-CODE needs 4 bytes');
  const cls = value[2]! & 0x07;
  const num = value[3]!;
  if (cls < 3 || cls > 6 || num > 99) throw new StunError('bad_attribute', `ERROR-CODE out of range: class ${cls} number ${num}`);
  return { code: cls * 100 + num, reason: value.subarray(4).toString('utf8') };
}

export function encodeErrorCode(code: number, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const v = Buffer.alloc(4 + r.length);
  v[2] = Math.floor(code / 100) & 0x07;
  v[3] = code % 100;
  r.copy(v, 4);
  return v;
}

/**
 * Interpret a Binding response: the reflexive endpoint from XOR-MAPPED-ADDRESS (preferred) or
 * MAPPED-ADDRESS; an error response becomes `StunError('error_response')` carrying code and reason.
 */
export function parseBindingResponse(m: StunMessage): Endpoint {
  if (m.method !== StunMethod.BINDING) throw new StunError('bad_response', `not a Binding response (method 0x${m.method.toString(16)})`);
  if (m.cls === StunClass.ERROR) {
    const ec = findAttribute(m, StunAttr.ERROR_CODE);
    const { code, reason } = ec ? decodeErrorCode(ec) : { code: 0, reason: 'error response without ERROR-CODE' };
    throw new StunError('error_response', `STUN server answered ${code} ${reason}`.trim(), { stunCode: code, reason });
  }
  if (m.cls !== StunClass.SUCCESS) throw new StunError('bad_response', 'not a response');
  for (const a of m.attributes) {
    if (a.type < 0x8000 && !KNOWN_REQUIRED.has(a.type)) {
      throw new StunError('unknown_required_attribute', `response carries unknown comprehension-required attribute 0x${a.type.toString(16).padStart(4, '0')}`);
    }
  }
  const xor = findAttribute(m, StunAttr.XOR_MAPPED_ADDRESS);
  if (xor) return decodeXorMappedAddress(xor, m.transactionId);
  const plain = findAttribute(m, StunAttr.MAPPED_ADDRESS);
  if (plain) return decodeMappedAddress(plain);
  throw new StunError('no_mapped_address', 'Binding response has neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS');
}

/**
 * Short-term-credential MESSAGE-INTEGRITY check (RFC 8489 §14.5): HMAC-SHA1 over the message up to the
 * attribute, with the header length adjusted to end just after it. False when absent or wrong.
 */
export function checkMessageIntegrity(buf: Uint8Array, key: Uint8Array): boolean {
  let b: Buffer;
  let m: StunMessage;
  try {
    b = Buffer.from(buf);
    m = decodeStunMessage(b);
  } catch {
    return false;
  }
  const mi = m.attributes.find((a) => a.type === StunAttr.MESSAGE_INTEGRITY);
  if (!mi || mi.value.length !== 20) return false;
  const attrStart = mi.value.byteOffset - b.byteOffset - 4;
  const covered = Buffer.from(b.subarray(0, attrStart));
  covered.writeUInt16BE(attrStart + 24 - STUN_HEADER_LEN, 2);
  const mac = createHmac('sha1', key).update(covered).digest();
  return mac.equals(mi.value);
}

// ---------------------------------------------------------------- client transaction

/** Anything that can send datagrams and report received ones (e.g. the daemon's tunnel socket demux). */
export interface StunTransport {
  send(msg: Buffer, port: number, address: string): void;
  /** Register a listener for received datagrams; returns the unsubscribe function. */
  subscribe(listener: (msg: Buffer, from: Endpoint) => void): () => void;
  /** Address family of the socket (6 = dual-stack IPv6 socket); default 4. */
  family?: 4 | 6;
}

export interface StunDiscoverOptions {
  /** Overall deadline (default 5000 ms, the v1 STUN discover timeout). */
  timeoutMs?: number;
  /** Retransmissions after the first request (default 6: Rc = 7 transmissions, RFC 8489 §6.2.1). */
  retries?: number;
  /** Initial retransmission timeout, doubled each time (default 500 ms, the RFC's minimum). */
  rtoMs?: number;
  signal?: AbortSignal;
  randomBytes?: (n: number) => Buffer;
  software?: string;
}

export interface StunResult extends Endpoint {
  /** The server address actually used. */
  server: Endpoint;
  transmissions: number;
}

/** Rm (RFC 8489 §6.2.1): after the last request, wait this many RTOs for the response. */
const LAST_WAIT_RTO_FACTOR = 16;

/**
 * Learn our reflexive (public) endpoint from a STUN server. `via` is the socket whose NAT mapping we
 * want (a `dgram.Socket`, or a `StunTransport` over a shared socket). Retransmits with doubling RTO,
 * bounded by `retries` and `timeoutMs`. Rejects with `StunError`: timeout, error_response, resolve_failed,
 * closed, aborted, bad_server.
 */
export async function stunDiscover(
  via: Socket | StunTransport,
  server: { host: string; port?: number } | string,
  o: StunDiscoverOptions = {},
): Promise<StunResult> {
  const transport = isDgramSocket(via) ? socketTransport(via) : via;
  const { host, port } = parseServer(server);
  const timeoutMs = o.timeoutMs ?? 5000;
  const retries = Math.max(0, Math.min(o.retries ?? 6, 16));
  const rto0 = Math.max(1, o.rtoMs ?? 500);
  if (o.signal?.aborted) throw new StunError('aborted', 'STUN discover aborted');
  const address = await resolveServer(host, transport.family ?? 4);
  const txid = (o.randomBytes ?? nodeRandomBytes)(12);
  const request = encodeBindingRequest(txid, o.software ? { software: o.software } : {});

  return new Promise<StunResult>((resolve, reject) => {
    let transmissions = 0;
    let timer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    let rto = rto0;
    const finish = (err: StunError | null, result?: StunResult): void => {
      clearTimeout(timer);
      clearTimeout(deadline);
      unsubscribe();
      o.signal?.removeEventListener('abort', onAbort);
      if (closeOff) closeOff();
      if (err) reject(err);
      else resolve(result!);
    };
    const onAbort = (): void => finish(new StunError('aborted', 'STUN discover aborted'));
    const unsubscribe = transport.subscribe((msg) => {
      if (!isStunMessage(msg)) return;
      let m: StunMessage;
      try {
        m = decodeStunMessage(msg);
      } catch {
        return; // not a valid STUN message: ignore it, keep waiting for ours
      }
      if (!m.transactionId.equals(txid) || (m.cls !== StunClass.SUCCESS && m.cls !== StunClass.ERROR)) return;
      try {
        const ep = parseBindingResponse(m);
        finish(null, { ...ep, server: { address, port }, transmissions });
      } catch (err) {
        finish(err as StunError);
      }
    });
    const closeOff = isDgramSocket(via) ? onSocketClose(via, () => finish(new StunError('closed', 'socket closed during STUN discover'))) : null;
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const transmit = (): void => {
      try {
        transport.send(request, port, address);
      } catch (err) {
        finish(new StunError('closed', `cannot send STUN request: ${(err as Error).message}`, { cause: err }));
        return;
      }
      transmissions++;
      if (transmissions <= retries) {
        timer = setTimeout(transmit, rto);
        rto *= 2;
      } else {
        // Last request: wait Rm × the initial RTO (RFC 8489 §6.2.1), still bounded by the deadline.
        timer = setTimeout(() => finish(timeoutError(transmissions, host, port)), LAST_WAIT_RTO_FACTOR * rto0);
      }
    };
    deadline = setTimeout(() => finish(timeoutError(transmissions, host, port)), timeoutMs);
    transmit();
  });
}

function timeoutError(transmissions: number, host: string, port: number): StunError {
  return new StunError('timeout', `no STUN response from ${host}:${port} after ${transmissions} request(s)`);
}

function parseServer(server: { host: string; port?: number } | string): { host: string; port: number } {
  if (typeof server === 'string') {
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(server) ?? /^([^:]+)(?::(\d+))?$/.exec(server);
    if (m) return validServer(m[1]!, m[2] === undefined ? STUN_DEFAULT_PORT : Number(m[2]));
    if (isIP(server) === 6) return validServer(server, STUN_DEFAULT_PORT);
    throw new StunError('bad_server', `bad STUN server "${server.slice(0, 64)}": expected host[:port]`);
  }
  return validServer(server.host, server.port ?? STUN_DEFAULT_PORT);
}

function validServer(host: string, port: number): { host: string; port: number } {
  if (typeof host !== 'string' || host.length === 0) throw new StunError('bad_server', 'STUN server host is empty');
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) throw new StunError('bad_server', `bad STUN server port ${port}`);
  return { host, port };
}

function resolveServer(host: string, family: 4 | 6): Promise<string> {
  return new Promise((resolve, reject) => {
    dnsLookup(host, { family: family === 6 ? 0 : 4 }, (err, address, fam) => {
      if (err) reject(new StunError('resolve_failed', `cannot resolve STUN server ${host}: ${err.message}`, { cause: err }));
      else resolve(family === 6 && fam === 4 ? `::ffff:${address}` : address);
    });
  });
}

function isDgramSocket(v: Socket | StunTransport): v is Socket {
  return typeof (v as Socket).bind === 'function' && typeof (v as Socket).on === 'function';
}

function socketTransport(s: Socket): StunTransport {
  let family: 4 | 6 = 4;
  try {
    family = s.address().family === 'IPv6' ? 6 : 4;
  } catch {
    family = (s as unknown as { type?: string }).type === 'udp6' ? 6 : 4;
  }
  return {
    family,
    send: (msg, port, address) => s.send(msg, port, address),
    subscribe: (listener) => {
      const h = (msg: Buffer, rinfo: { address: string; port: number }): void => listener(msg, { address: rinfo.address, port: rinfo.port });
      s.on('message', h);
      return () => s.off('message', h);
    },
  };
}

function onSocketClose(s: Socket, f: () => void): () => void {
  s.once('close', f);
  return () => s.off('close', f);
}

function decodeAddress(value: Buffer, txid: Uint8Array | null): Endpoint {
  if (value.length < 4) throw new StunError('bad_attribute', 'address attribute too short');
  const family = value[1];
  const ipLen = family === 0x01 ? 4 : family === 0x02 ? 16 : 0;
  if (ipLen === 0) throw new StunError('bad_family', `unknown address family 0x${(family ?? 0).toString(16)}`);
  if (value.length !== 4 + ipLen) throw new StunError('bad_attribute', `address attribute must be ${4 + ipLen} bytes, got ${value.length}`);
  let port = value.readUInt16BE(2);
  const ip = Buffer.from(value.subarray(4, 4 + ipLen));
  if (txid) {
    port ^= STUN_MAGIC_COOKIE >>> 16;
    const mask = xorMask(txid);
    for (let i = 0; i < ipLen; i++) ip[i]! ^= mask[i]!;
  }
  return { address: ipLen === 4 ? ipFromBytes(ip) : ipv6Text(ip), port };
}

function encodeAddress(ep: Endpoint, txid: Uint8Array | null): Buffer {
  const ip = ipToBytes(ep.address);
  if (ip === null) throw new StunError('bad_attribute', `not an IP address: ${String(ep.address).slice(0, 64)}`);
  const v = Buffer.alloc(4 + ip.length);
  v[1] = ip.length === 4 ? 0x01 : 0x02;
  let port = ep.port;
  if (txid) {
    port ^= STUN_MAGIC_COOKIE >>> 16;
    const mask = xorMask(txid);
    for (let i = 0; i < ip.length; i++) ip[i]! ^= mask[i]!;
  }
  v.writeUInt16BE(port & 0xffff, 2);
  ip.copy(v, 4);
  return v;
}

function xorMask(txid: Uint8Array): Buffer {
  const m = Buffer.allocUnsafe(16);
  m.writeUInt32BE(STUN_MAGIC_COOKIE, 0);
  m.set(txid.subarray(0, 12), 4);
  return m;
}

/** IPv6 family keeps IPv6 text even for mapped addresses (STUN says what family the server saw). */
function ipv6Text(ip: Buffer): string {
  const text = ipFromBytes(ip);
  return text.includes(':') ? text : `::ffff:${text}`;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}
