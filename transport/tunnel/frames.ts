import { FrameError } from './errors.js';

/**
 * Tunnel frame codecs (wire reference §1.4) and the beacon relay wrappers (§1.8).
 *
 * Decoders return views into the input buffer (no copies) and reject every malformed input with a
 * FrameError carrying a stable code: `empty`, `beacon_message`, `unknown_magic`, `short_frame`,
 * `bad_length`, `counter_overflow`, `not_relay`, `short_relay`, `bad_inner`. They never throw
 * anything else. Encoders validate their arguments (`bad_node`, `bad_key_length`, `bad_counter`).
 */

export const MAGIC_PILT = 0x50494c54; // "PILT" plaintext packet
export const MAGIC_PILS = 0x50494c53; // "PILS" encrypted packet
export const MAGIC_PILK = 0x50494c4b; // "PILK" anonymous key exchange
export const MAGIC_PILA = 0x50494c41; // "PILA" authenticated key exchange
export const MAGIC_PILP = 0x50494c50; // "PILP" NAT punch probe

/** First byte below this ⇒ beacon message, not a tunnel frame (§1.4). */
export const BEACON_TYPE_LIMIT = 0x10;
export const BEACON_RELAY = 0x05;
export const BEACON_RELAY_DELIVER = 0x06;

export const X25519_KEY_LEN = 32;
export const ED25519_KEY_LEN = 32;
export const ED25519_SIG_LEN = 64;
export const NONCE_LEN = 12;
export const NONCE_PREFIX_LEN = 4;
export const TAG_LEN = 16;
/** Bytes of a Pilot packet header (transport/packet.ts); the smallest plaintext a sealed frame may carry. */
const PACKET_HEADER_LEN = 34;

/** `PILS` ‖ sender node ‖ nonce: the part of a sealed frame before the ciphertext. */
export const PILS_PREFIX_LEN = 4 + 4 + NONCE_LEN;
/** Smallest valid PILS frame: prefix + a 34-byte header sealed + tag. */
export const PILS_MIN_LEN = PILS_PREFIX_LEN + PACKET_HEADER_LEN + TAG_LEN;
/** Bytes a sealed frame adds around the packet (prefix + tag = 36). */
export const PILS_OVERHEAD = PILS_PREFIX_LEN + TAG_LEN;
export const PILT_MIN_LEN = 4 + PACKET_HEADER_LEN;
export const PILK_LEN = 4 + 4 + X25519_KEY_LEN;
export const PILA_LEN = 4 + 4 + X25519_KEY_LEN + ED25519_KEY_LEN + ED25519_SIG_LEN;
export const PILP_LEN = 4;
/** `0x05` ‖ sender ‖ destination. */
export const RELAY_HEADER_LEN = 9;
/** `0x06` ‖ sender. */
export const RELAY_DELIVER_HEADER_LEN = 5;

/** Largest counter we encode or accept: 2^53 − 1 (an honest sender needs centuries to get there). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

export interface PlainFrame {
  kind: 'PILT';
  /** The complete Pilot packet (view). */
  packet: Buffer;
}

export interface SealedFrame {
  kind: 'PILS';
  node: number;
  /** The 12-byte nonce (view). */
  nonce: Buffer;
  /** First 4 nonce bytes as an unsigned integer. */
  prefix: number;
  /** Last 8 nonce bytes, big-endian. */
  counter: number;
  /** Ciphertext without the tag (view). */
  ciphertext: Buffer;
  /** 16-byte GCM tag (view). */
  tag: Buffer;
}

export interface AnonymousKeyExchangeFrame {
  kind: 'PILK';
  node: number;
  x25519: Buffer;
}

export interface AuthKeyExchangeFrame {
  kind: 'PILA';
  node: number;
  x25519: Buffer;
  ed25519: Buffer;
  signature: Buffer;
}

export interface PunchFrame {
  kind: 'PILP';
}

export type TunnelFrame = PlainFrame | SealedFrame | AnonymousKeyExchangeFrame | AuthKeyExchangeFrame | PunchFrame;

export interface RelayFrame {
  sender: number;
  dest: number;
  /** The wrapped tunnel frame (view). */
  inner: Buffer;
}

export interface RelayDeliverFrame {
  sender: number;
  /** The wrapped tunnel frame (view). */
  inner: Buffer;
}

/** True when the datagram is a beacon message by the §1.4 demux rule (first byte < 0x10). */
export function isBeaconMessage(buf: Buffer): boolean {
  return buf.length > 0 && buf[0]! < BEACON_TYPE_LIMIT;
}

/** Decode one tunnel frame (PILT/PILS/PILK/PILA/PILP). */
export function decodeTunnelFrame(buf: Buffer): TunnelFrame {
  if (buf.length === 0) throw new FrameError('empty', 'empty datagram');
  if (buf[0]! < BEACON_TYPE_LIMIT) throw new FrameError('beacon_message', `type byte 0x${buf[0]!.toString(16)} is a beacon message`);
  if (buf.length < 4) throw new FrameError('short_frame', `frame of ${buf.length} bytes has no magic`);
  const magic = buf.readUInt32BE(0);
  switch (magic) {
    case MAGIC_PILS:
      return decodeSealed(buf);
    case MAGIC_PILT:
      if (buf.length < PILT_MIN_LEN) throw new FrameError('short_frame', `PILT frame ${buf.length} bytes < ${PILT_MIN_LEN}`);
      return { kind: 'PILT', packet: buf.subarray(4) };
    case MAGIC_PILK:
      if (buf.length !== PILK_LEN) throw new FrameError('bad_length', `PILK frame is ${buf.length} bytes, must be ${PILK_LEN}`);
      return { kind: 'PILK', node: buf.readUInt32BE(4), x25519: buf.subarray(8, 40) };
    case MAGIC_PILA:
      if (buf.length !== PILA_LEN) throw new FrameError('bad_length', `PILA frame is ${buf.length} bytes, must be ${PILA_LEN}`);
      return {
        kind: 'PILA',
        node: buf.readUInt32BE(4),
        x25519: buf.subarray(8, 40),
        ed25519: buf.subarray(40, 72),
        signature: buf.subarray(72, 136),
      };
    case MAGIC_PILP:
      // v1 sends exactly 4 bytes and ignores the frame; be lenient about padding since it carries nothing.
      return { kind: 'PILP' };
    default:
      throw new FrameError('unknown_magic', `unknown frame magic 0x${magic.toString(16).padStart(8, '0')}`);
  }
}

function decodeSealed(buf: Buffer): SealedFrame {
  if (buf.length < PILS_MIN_LEN) throw new FrameError('short_frame', `PILS frame ${buf.length} bytes < ${PILS_MIN_LEN}`);
  const hi = buf.readUInt32BE(12);
  if (hi > 0x1fffff) throw new FrameError('counter_overflow', 'nonce counter beyond 2^53');
  return {
    kind: 'PILS',
    node: buf.readUInt32BE(4),
    nonce: buf.subarray(8, 20),
    prefix: buf.readUInt32BE(8),
    counter: hi * 0x1_0000_0000 + buf.readUInt32BE(16),
    ciphertext: buf.subarray(PILS_PREFIX_LEN, buf.length - TAG_LEN),
    tag: buf.subarray(buf.length - TAG_LEN),
  };
}

/** Decode a `0x05` relay frame (node → beacon). The inner bytes must be a tunnel frame. */
export function decodeRelay(buf: Buffer): RelayFrame {
  if (buf.length === 0 || buf[0] !== BEACON_RELAY) throw new FrameError('not_relay', 'not a 0x05 relay frame');
  if (buf.length < RELAY_HEADER_LEN + 4) throw new FrameError('short_relay', `relay frame of ${buf.length} bytes`);
  const inner = buf.subarray(RELAY_HEADER_LEN);
  checkInner(inner);
  return { sender: buf.readUInt32BE(1), dest: buf.readUInt32BE(5), inner };
}

/** Decode a `0x06` relay-deliver frame (beacon → node). The inner bytes must be a tunnel frame. */
export function decodeRelayDeliver(buf: Buffer): RelayDeliverFrame {
  if (buf.length === 0 || buf[0] !== BEACON_RELAY_DELIVER) throw new FrameError('not_relay', 'not a 0x06 relay-deliver frame');
  if (buf.length < RELAY_DELIVER_HEADER_LEN + 4) throw new FrameError('short_relay', `relay-deliver frame of ${buf.length} bytes`);
  const inner = buf.subarray(RELAY_DELIVER_HEADER_LEN);
  checkInner(inner);
  return { sender: buf.readUInt32BE(1), inner };
}

/** A relay may only wrap a tunnel frame: no nested relay or beacon message (no loops, no smuggling). */
function checkInner(inner: Buffer): void {
  if (inner[0]! < BEACON_TYPE_LIMIT) throw new FrameError('bad_inner', 'relay wraps a beacon message, not a tunnel frame');
}

// ---------------------------------------------------------------------------------------------- encoders

function checkNode(node: number, what = 'node'): void {
  if (!Number.isInteger(node) || node < 0 || node > 0xffffffff) throw new FrameError('bad_node', `${what} id ${node} is not a uint32`);
}

function checkLen(b: Uint8Array, len: number, what: string): void {
  if (b.length !== len) throw new FrameError('bad_key_length', `${what} must be ${len} bytes, got ${b.length}`);
}

/** `PILT` ‖ packet, as a buffer list for a gather send (no copy of the packet). */
export function encodePlain(packet: Buffer): Buffer[] {
  const magic = Buffer.allocUnsafe(4);
  magic.writeUInt32BE(MAGIC_PILT, 0);
  return [magic, packet];
}

/**
 * Write the 20-byte sealed-frame prefix (`PILS` ‖ sender ‖ nonce prefix ‖ counter) into `out` at `offset`.
 * The nonce is then `out.subarray(offset + 8, offset + 20)`.
 */
export function writeSealedPrefix(out: Buffer, offset: number, node: number, noncePrefix: number, counter: number): void {
  if (!Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) throw new FrameError('bad_counter', `counter ${counter} out of range`);
  out.writeUInt32BE(MAGIC_PILS, offset);
  out.writeUInt32BE(node >>> 0, offset + 4);
  out.writeUInt32BE(noncePrefix >>> 0, offset + 8);
  out.writeUInt32BE(Math.floor(counter / 0x1_0000_0000), offset + 12);
  out.writeUInt32BE(counter >>> 0, offset + 16);
}

/** A fresh 20-byte sealed-frame prefix. */
export function encodeSealedPrefix(node: number, noncePrefix: number, counter: number): Buffer {
  checkNode(node);
  const out = Buffer.allocUnsafe(PILS_PREFIX_LEN);
  writeSealedPrefix(out, 0, node, noncePrefix, counter);
  return out;
}

/** A complete `PILS` frame from its parts (tests, tools; the tunnel's hot path sends the parts as a list). */
export function encodeSealed(node: number, noncePrefix: number, counter: number, ciphertext: Uint8Array, tag: Uint8Array): Buffer {
  checkLen(tag, TAG_LEN, 'GCM tag');
  return Buffer.concat([encodeSealedPrefix(node, noncePrefix, counter), ciphertext, tag]);
}

export function encodeAnonymousKeyExchange(node: number, x25519: Uint8Array): Buffer {
  checkNode(node);
  checkLen(x25519, X25519_KEY_LEN, 'X25519 public key');
  const out = Buffer.allocUnsafe(PILK_LEN);
  out.writeUInt32BE(MAGIC_PILK, 0);
  out.writeUInt32BE(node, 4);
  out.set(x25519, 8);
  return out;
}

export function encodeAuthKeyExchange(node: number, x25519: Uint8Array, ed25519: Uint8Array, signature: Uint8Array): Buffer {
  checkNode(node);
  checkLen(x25519, X25519_KEY_LEN, 'X25519 public key');
  checkLen(ed25519, ED25519_KEY_LEN, 'Ed25519 public key');
  checkLen(signature, ED25519_SIG_LEN, 'Ed25519 signature');
  const out = Buffer.allocUnsafe(PILA_LEN);
  out.writeUInt32BE(MAGIC_PILA, 0);
  out.writeUInt32BE(node, 4);
  out.set(x25519, 8);
  out.set(ed25519, 40);
  out.set(signature, 72);
  return out;
}

export function encodePunch(): Buffer {
  const out = Buffer.allocUnsafe(PILP_LEN);
  out.writeUInt32BE(MAGIC_PILP, 0);
  return out;
}

/** The 9-byte `0x05` header to put in front of an inner frame (gather send). */
export function encodeRelayHeader(sender: number, dest: number): Buffer {
  checkNode(sender, 'sender');
  checkNode(dest, 'destination');
  const out = Buffer.allocUnsafe(RELAY_HEADER_LEN);
  out[0] = BEACON_RELAY;
  out.writeUInt32BE(sender, 1);
  out.writeUInt32BE(dest, 5);
  return out;
}

/** `0x05` ‖ sender ‖ dest ‖ inner frame, as one buffer. */
export function encodeRelay(sender: number, dest: number, inner: Buffer | readonly Buffer[]): Buffer {
  return Buffer.concat([encodeRelayHeader(sender, dest), ...(Buffer.isBuffer(inner) ? [inner] : inner)]);
}

/** `0x06` ‖ sender ‖ inner frame, as one buffer (what a beacon delivers). */
export function encodeRelayDeliver(sender: number, inner: Buffer | readonly Buffer[]): Buffer {
  checkNode(sender, 'sender');
  const head = Buffer.allocUnsafe(RELAY_DELIVER_HEADER_LEN);
  head[0] = BEACON_RELAY_DELIVER;
  head.writeUInt32BE(sender, 1);
  return Buffer.concat([head, ...(Buffer.isBuffer(inner) ? [inner] : inner)]);
}
