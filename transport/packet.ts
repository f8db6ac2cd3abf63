import { crc32 } from 'node:zlib';
import { PacketError } from './errors.js';

/** Wire reference §1.3: the 34-byte big-endian Pilot packet header, CRC-32 over header(zeroed sum)+payload. */
export const HEADER_LEN = 34;
export const MAX_PAYLOAD = 0xffff;
export const PROTOCOL_VERSION = 1;

export const Flags = { SYN: 0x1, ACK: 0x2, FIN: 0x4, RST: 0x8 } as const;
export const Protocol = { STREAM: 0x01, DATAGRAM: 0x02, CONTROL: 0x03 } as const;

export interface PacketHeader {
  flags: number;
  protocol: number;
  srcNet: number;
  srcNode: number;
  dstNet: number;
  dstNode: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Receiver's free receive window in 4096-byte units (v1 semantics). */
  window: number;
}

export interface Packet extends PacketHeader {
  version: number;
  /** A view into the decoded buffer (not a copy). */
  payload: Buffer;
}

const ZERO4 = Buffer.alloc(4);

/** Encode header + payload into a fresh buffer. */
export function encodePacket(h: PacketHeader, payload?: Uint8Array): Buffer {
  const len = payload ? payload.length : 0;
  const buf = Buffer.allocUnsafe(HEADER_LEN + len);
  encodePacketInto(buf, 0, h, payload);
  return buf;
}

/** Encode into `buf` at `offset` (lets the tunnel reserve room for its own prefix). Returns bytes written. */
export function encodePacketInto(buf: Buffer, offset: number, h: PacketHeader, payload?: Uint8Array): number {
  const len = payload ? payload.length : 0;
  if (len > MAX_PAYLOAD) throw new PacketError('payload_too_large', `payload ${len} bytes exceeds ${MAX_PAYLOAD}`);
  if (buf.length - offset < HEADER_LEN + len) throw new PacketError('buffer_too_small', 'output buffer too small');
  buf[offset] = (PROTOCOL_VERSION << 4) | (h.flags & 0x0f);
  buf[offset + 1] = h.protocol;
  buf.writeUInt16BE(len, offset + 2);
  buf.writeUInt16BE(h.srcNet, offset + 4);
  buf.writeUInt32BE(h.srcNode >>> 0, offset + 6);
  buf.writeUInt16BE(h.dstNet, offset + 10);
  buf.writeUInt32BE(h.dstNode >>> 0, offset + 12);
  buf.writeUInt16BE(h.srcPort, offset + 16);
  buf.writeUInt16BE(h.dstPort, offset + 18);
  buf.writeUInt32BE(h.seq >>> 0, offset + 20);
  buf.writeUInt32BE(h.ack >>> 0, offset + 24);
  buf.writeUInt16BE(Math.min(0xffff, Math.max(0, h.window)), offset + 28);
  if (len > 0) buf.set(payload!, offset + HEADER_LEN);
  const sum = checksum(buf, offset, len);
  buf.writeUInt32BE(sum, offset + 30);
  return HEADER_LEN + len;
}

export interface DecodeOptions {
  /**
   * Default true. Pass false only for packets whose integrity is already guaranteed (e.g. decrypted
   * from an AES-GCM tunnel frame): the CRC then protects nothing and costs ~19 µs per 64 KiB.
   */
  verifyChecksum?: boolean;
}

/**
 * Decode a complete packet. `buf` must hold exactly one packet (header + declared payload).
 * Every malformed input raises a PacketError with a stable code; nothing else is thrown.
 */
export function decodePacket(buf: Buffer, opts?: DecodeOptions): Packet {
  if (buf.length < HEADER_LEN) throw new PacketError('short_header', `packet ${buf.length} bytes < header ${HEADER_LEN}`);
  const version = buf[0]! >> 4;
  if (version !== PROTOCOL_VERSION) throw new PacketError('bad_version', `unsupported packet version ${version}`);
  const len = buf.readUInt16BE(2);
  if (buf.length < HEADER_LEN + len) {
    throw new PacketError('short_payload', `declared payload ${len} bytes, have ${buf.length - HEADER_LEN}`);
  }
  if (buf.length > HEADER_LEN + len) {
    throw new PacketError('trailing_bytes', `${buf.length - HEADER_LEN - len} bytes after the declared payload`);
  }
  if (opts?.verifyChecksum !== false) {
    const want = buf.readUInt32BE(30);
    if (checksum(buf, 0, len) !== want) throw new PacketError('bad_checksum', 'CRC-32 mismatch');
  }
  return {
    version,
    flags: buf[0]! & 0x0f,
    protocol: buf[1]!,
    srcNet: buf.readUInt16BE(4),
    srcNode: buf.readUInt32BE(6),
    dstNet: buf.readUInt16BE(10),
    dstNode: buf.readUInt32BE(12),
    srcPort: buf.readUInt16BE(16),
    dstPort: buf.readUInt16BE(18),
    seq: buf.readUInt32BE(20),
    ack: buf.readUInt32BE(24),
    window: buf.readUInt16BE(28),
    payload: buf.subarray(HEADER_LEN, HEADER_LEN + len),
  };
}

/** CRC-32 (IEEE) over header bytes 0..29, four zero bytes in place of the sum, then the payload. */
function checksum(buf: Buffer, offset: number, payloadLen: number): number {
  let c = crc32(buf.subarray(offset, offset + 30));
  c = crc32(ZERO4, c);
  if (payloadLen > 0) c = crc32(buf.subarray(offset + HEADER_LEN, offset + HEADER_LEN + payloadLen), c);
  return c >>> 0;
}

export function flagsToString(flags: number): string {
  const names: string[] = [];
  if (flags & Flags.SYN) names.push('SYN');
  if (flags & Flags.ACK) names.push('ACK');
  if (flags & Flags.FIN) names.push('FIN');
  if (flags & Flags.RST) names.push('RST');
  return names.join('|') || '-';
}
