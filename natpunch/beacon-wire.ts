import type { Identity } from '../transport/identity.js';
import { BeaconWireError } from './errors.js';
import { ipFromBytes, ipToBytes } from './ip.js';

/**
 * Beacon datagrams (wire reference §1.9): one type byte < 0x10, integers big-endian, IPs as
 * `iplen(1: 4|16) ‖ IP ‖ port(2)`. Plus this project's signed discover (SPEC §7), which v1 beacons still
 * understand because they read only the first 5 bytes.
 */
export const BeaconType = {
  DISCOVER: 0x01,
  DISCOVER_REPLY: 0x02,
  PUNCH_REQUEST: 0x03,
  PUNCH_COMMAND: 0x04,
  RELAY: 0x05,
  RELAY_DELIVER: 0x06,
  SYNC: 0x07,
} as const;

/** A UDP endpoint. `address` is IP text (IPv4 dotted quad or IPv6). */
export interface Endpoint {
  address: string;
  port: number;
}

export const DISCOVER_LEN = 5;
/** type ‖ nodeID(4) ‖ ts(8, BE unix ms) ‖ Ed25519 signature(64). */
export const SIGNED_DISCOVER_LEN = 77;
export const PUNCH_REQUEST_LEN = 9;
export const RELAY_HEADER_LEN = 9;
export const RELAY_DELIVER_HEADER_LEN = 5;
export const SYNC_HEADER_LEN = 7;
/** Largest node list one sync datagram can carry (count is 16 bits; UDP payload ≤ 65,507). */
export const SYNC_MAX_IDS = Math.floor((65_507 - SYNC_HEADER_LEN) / 4);

export interface DiscoverMsg {
  type: typeof BeaconType.DISCOVER;
  nodeId: number;
  /** Present only for a signed (77-byte) discover. */
  signed?: { ts: number; signature: Buffer };
}
export interface DiscoverReplyMsg {
  type: typeof BeaconType.DISCOVER_REPLY;
  endpoint: Endpoint;
}
export interface PunchRequestMsg {
  type: typeof BeaconType.PUNCH_REQUEST;
  requesterId: number;
  targetId: number;
}
export interface PunchCommandMsg {
  type: typeof BeaconType.PUNCH_COMMAND;
  endpoint: Endpoint;
}
export interface RelayMsg {
  type: typeof BeaconType.RELAY;
  senderId: number;
  destId: number;
  /** View into the datagram (not a copy): the inner tunnel frame. */
  payload: Buffer;
}
export interface RelayDeliverMsg {
  type: typeof BeaconType.RELAY_DELIVER;
  senderId: number;
  /** View into the datagram (not a copy). */
  payload: Buffer;
}
export interface SyncMsg {
  type: typeof BeaconType.SYNC;
  beaconId: number;
  nodeIds: number[];
}
export type BeaconMessage = DiscoverMsg | DiscoverReplyMsg | PunchRequestMsg | PunchCommandMsg | RelayMsg | RelayDeliverMsg | SyncMsg;

/** True when the first byte marks a beacon message (§1.4 demux: first byte < 0x10). */
export function isBeaconDatagram(buf: Uint8Array): boolean {
  return buf.length > 0 && buf[0]! < 0x10;
}

/** The bytes a signed discover's signature covers: ASCII `discover:<nodeId>:<ts>`. */
export function discoverChallenge(nodeId: number, ts: number): string {
  return `discover:${nodeId}:${ts}`;
}

// ---------------------------------------------------------------- encoders

/** v1 discover (also the daemon's node-ID-0 startup probe). */
export function encodeDiscover(nodeId: number): Buffer {
  const b = Buffer.allocUnsafe(DISCOVER_LEN);
  b[0] = BeaconType.DISCOVER;
  b.writeUInt32BE(u32(nodeId, 'nodeId'), 1);
  return b;
}

/** Signed discover (SPEC §7): proves the sender holds `identity`, the key the registry has for `nodeId`. */
export function encodeSignedDiscover(identity: Pick<Identity, 'sign'>, nodeId: number, nowMs: number): Buffer {
  const ts = timestamp(nowMs);
  const b = Buffer.allocUnsafe(SIGNED_DISCOVER_LEN);
  b[0] = BeaconType.DISCOVER;
  b.writeUInt32BE(u32(nodeId, 'nodeId'), 1);
  b.writeBigUInt64BE(BigInt(ts), 5);
  const sig = identity.sign(discoverChallenge(nodeId, ts));
  if (sig.length !== 64) throw new BeaconWireError('bad_signature', 'Ed25519 signature must be 64 bytes');
  sig.copy(b, 13);
  return b;
}

/** Build a signed discover from parts (for tests and tools that sign elsewhere). */
export function encodeSignedDiscoverRaw(nodeId: number, ts: number, signature: Uint8Array): Buffer {
  if (signature.length !== 64) throw new BeaconWireError('bad_signature', 'Ed25519 signature must be 64 bytes');
  const b = Buffer.allocUnsafe(SIGNED_DISCOVER_LEN);
  b[0] = BeaconType.DISCOVER;
  b.writeUInt32BE(u32(nodeId, 'nodeId'), 1);
  b.writeBigUInt64BE(BigInt(timestamp(ts)), 5);
  b.set(signature, 13);
  return b;
}

export function encodeDiscoverReply(endpoint: Endpoint): Buffer {
  return encodeEndpointMsg(BeaconType.DISCOVER_REPLY, endpoint);
}

export function encodePunchRequest(requesterId: number, targetId: number): Buffer {
  const b = Buffer.allocUnsafe(PUNCH_REQUEST_LEN);
  b[0] = BeaconType.PUNCH_REQUEST;
  b.writeUInt32BE(u32(requesterId, 'requesterId'), 1);
  b.writeUInt32BE(u32(targetId, 'targetId'), 5);
  return b;
}

export function encodePunchCommand(endpoint: Endpoint): Buffer {
  return encodeEndpointMsg(BeaconType.PUNCH_COMMAND, endpoint);
}

/** The 9-byte relay header; send it with the inner frame as a buffer list to avoid a copy. */
export function encodeRelayHeader(senderId: number, destId: number): Buffer {
  const b = Buffer.allocUnsafe(RELAY_HEADER_LEN);
  b[0] = BeaconType.RELAY;
  b.writeUInt32BE(u32(senderId, 'senderId'), 1);
  b.writeUInt32BE(u32(destId, 'destId'), 5);
  return b;
}

export function encodeRelay(senderId: number, destId: number, payload: Uint8Array): Buffer {
  return Buffer.concat([encodeRelayHeader(senderId, destId), payload]);
}

export function encodeRelayDeliverHeader(senderId: number): Buffer {
  const b = Buffer.allocUnsafe(RELAY_DELIVER_HEADER_LEN);
  b[0] = BeaconType.RELAY_DELIVER;
  b.writeUInt32BE(u32(senderId, 'senderId'), 1);
  return b;
}

export function encodeRelayDeliver(senderId: number, payload: Uint8Array): Buffer {
  return Buffer.concat([encodeRelayDeliverHeader(senderId), payload]);
}

export function encodeSync(beaconId: number, nodeIds: readonly number[]): Buffer {
  if (nodeIds.length > SYNC_MAX_IDS) {
    throw new BeaconWireError('bad_length', `sync carries at most ${SYNC_MAX_IDS} node IDs, got ${nodeIds.length}`);
  }
  const b = Buffer.allocUnsafe(SYNC_HEADER_LEN + 4 * nodeIds.length);
  b[0] = BeaconType.SYNC;
  b.writeUInt32BE(u32(beaconId, 'beaconId'), 1);
  b.writeUInt16BE(nodeIds.length, 5);
  for (let i = 0; i < nodeIds.length; i++) b.writeUInt32BE(u32(nodeIds[i]!, 'nodeId'), SYNC_HEADER_LEN + 4 * i);
  return b;
}

/** Split a node list into as many sync datagrams as needed, at most `maxIds` IDs each (at least one datagram). */
export function encodeSyncChunks(beaconId: number, nodeIds: readonly number[], maxIds = SYNC_MAX_IDS): Buffer[] {
  const per = Math.max(1, Math.min(SYNC_MAX_IDS, Math.floor(maxIds)));
  if (nodeIds.length === 0) return [encodeSync(beaconId, [])];
  const out: Buffer[] = [];
  for (let i = 0; i < nodeIds.length; i += per) out.push(encodeSync(beaconId, nodeIds.slice(i, i + per)));
  return out;
}

// ---------------------------------------------------------------- decoders

/** Decode any beacon datagram. Throws only `BeaconWireError`. Relay payloads are views, not copies. */
export function decodeBeaconMessage(buf: Uint8Array): BeaconMessage {
  const b = asBuffer(buf);
  if (b.length === 0) throw new BeaconWireError('empty', 'empty beacon datagram');
  switch (b[0]) {
    case BeaconType.DISCOVER:
      return decodeDiscover(b);
    case BeaconType.DISCOVER_REPLY:
      return { type: BeaconType.DISCOVER_REPLY, endpoint: decodeEndpointBody(b, 'discover reply') };
    case BeaconType.PUNCH_REQUEST:
      exactLength(b, PUNCH_REQUEST_LEN, 'punch request');
      return { type: BeaconType.PUNCH_REQUEST, requesterId: b.readUInt32BE(1), targetId: b.readUInt32BE(5) };
    case BeaconType.PUNCH_COMMAND:
      return { type: BeaconType.PUNCH_COMMAND, endpoint: decodeEndpointBody(b, 'punch command') };
    case BeaconType.RELAY:
      minLength(b, RELAY_HEADER_LEN, 'relay');
      return { type: BeaconType.RELAY, senderId: b.readUInt32BE(1), destId: b.readUInt32BE(5), payload: b.subarray(RELAY_HEADER_LEN) };
    case BeaconType.RELAY_DELIVER:
      return decodeRelayDeliver(b);
    case BeaconType.SYNC:
      return decodeSync(b);
    default:
      throw new BeaconWireError('unknown_type', `unknown beacon message type 0x${b[0]!.toString(16).padStart(2, '0')}`);
  }
}

/** 5-byte v1 discover or 77-byte signed discover. Other lengths are rejected. */
export function decodeDiscover(buf: Uint8Array): DiscoverMsg {
  const b = asBuffer(buf);
  expectType(b, BeaconType.DISCOVER, 'discover');
  if (b.length === DISCOVER_LEN) return { type: BeaconType.DISCOVER, nodeId: b.readUInt32BE(1) };
  if (b.length !== SIGNED_DISCOVER_LEN) {
    throw new BeaconWireError('bad_length', `discover must be ${DISCOVER_LEN} or ${SIGNED_DISCOVER_LEN} bytes, got ${b.length}`);
  }
  const ts = b.readBigUInt64BE(5);
  if (ts > BigInt(Number.MAX_SAFE_INTEGER)) throw new BeaconWireError('bad_timestamp', 'discover timestamp out of range');
  return {
    type: BeaconType.DISCOVER,
    nodeId: b.readUInt32BE(1),
    signed: { ts: Number(ts), signature: b.subarray(13, 77) },
  };
}

export function decodeDiscoverReply(buf: Uint8Array): Endpoint {
  const b = asBuffer(buf);
  expectType(b, BeaconType.DISCOVER_REPLY, 'discover reply');
  return decodeEndpointBody(b, 'discover reply');
}

export function decodePunchCommand(buf: Uint8Array): Endpoint {
  const b = asBuffer(buf);
  expectType(b, BeaconType.PUNCH_COMMAND, 'punch command');
  return decodeEndpointBody(b, 'punch command');
}

export function decodeRelayDeliver(buf: Uint8Array): RelayDeliverMsg {
  const b = asBuffer(buf);
  expectType(b, BeaconType.RELAY_DELIVER, 'relay deliver');
  minLength(b, RELAY_DELIVER_HEADER_LEN, 'relay deliver');
  return { type: BeaconType.RELAY_DELIVER, senderId: b.readUInt32BE(1), payload: b.subarray(RELAY_DELIVER_HEADER_LEN) };
}

export function decodeSync(buf: Uint8Array): SyncMsg {
  const b = asBuffer(buf);
  expectType(b, BeaconType.SYNC, 'sync');
  minLength(b, SYNC_HEADER_LEN, 'sync');
  const count = b.readUInt16BE(5);
  exactLength(b, SYNC_HEADER_LEN + 4 * count, 'sync');
  const nodeIds = new Array<number>(count);
  for (let i = 0; i < count; i++) nodeIds[i] = b.readUInt32BE(SYNC_HEADER_LEN + 4 * i);
  return { type: BeaconType.SYNC, beaconId: b.readUInt32BE(1), nodeIds };
}

// ---------------------------------------------------------------- helpers

function encodeEndpointMsg(type: number, endpoint: Endpoint): Buffer {
  const ip = ipToBytes(endpoint.address);
  if (ip === null) throw new BeaconWireError('bad_endpoint', `not an IP address: ${String(endpoint.address).slice(0, 64)}`);
  if (!Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 0xffff) {
    throw new BeaconWireError('bad_endpoint', `port out of range: ${endpoint.port}`);
  }
  const b = Buffer.allocUnsafe(2 + ip.length + 2);
  b[0] = type;
  b[1] = ip.length;
  ip.copy(b, 2);
  b.writeUInt16BE(endpoint.port, 2 + ip.length);
  return b;
}

function decodeEndpointBody(b: Buffer, what: string): Endpoint {
  minLength(b, 2, what);
  const ipLen = b[1]!;
  if (ipLen !== 4 && ipLen !== 16) throw new BeaconWireError('bad_ip_length', `${what}: IP length must be 4 or 16, got ${ipLen}`);
  exactLength(b, 2 + ipLen + 2, what);
  return { address: ipFromBytes(b.subarray(2, 2 + ipLen)), port: b.readUInt16BE(2 + ipLen) };
}

function expectType(b: Buffer, type: number, what: string): void {
  if (b.length === 0) throw new BeaconWireError('empty', `empty ${what}`);
  if (b[0] !== type) throw new BeaconWireError('unknown_type', `expected ${what} (0x0${type}), got type 0x${b[0]!.toString(16).padStart(2, '0')}`);
}

function minLength(b: Buffer, n: number, what: string): void {
  if (b.length < n) throw new BeaconWireError('bad_length', `${what} needs at least ${n} bytes, got ${b.length}`);
}

function exactLength(b: Buffer, n: number, what: string): void {
  if (b.length !== n) throw new BeaconWireError('bad_length', `${what} must be ${n} bytes, got ${b.length}`);
}

function asBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

function u32(n: number, field: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new BeaconWireError('bad_node_id', `${field} out of range: ${n}`);
  return n;
}

function timestamp(ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new BeaconWireError('bad_timestamp', `timestamp must be a non-negative integer (ms), got ${ms}`);
  return ms;
}
