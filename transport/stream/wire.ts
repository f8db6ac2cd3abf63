import { crc32 } from 'node:zlib';
import { HEADER_LEN, PROTOCOL_VERSION } from '../packet.js';

/**
 * Hot-path packet writer for one 4-tuple: the constant header bytes (protocol, addresses, ports) are
 * prepared once; per packet we copy them, fill flags/len/seq/ack/window, and compute the CRC-32 in one
 * pass over the whole buffer with the checksum field zeroed — byte-identical to transport/packet.ts.
 */
export class HeaderTemplate {
  private readonly tpl = Buffer.alloc(HEADER_LEN);

  constructor(protocol: number, srcNet: number, srcNode: number, dstNet: number, dstNode: number, srcPort: number, dstPort: number) {
    const b = this.tpl;
    b[1] = protocol;
    b.writeUInt16BE(srcNet, 4);
    b.writeUInt32BE(srcNode >>> 0, 6);
    b.writeUInt16BE(dstNet, 10);
    b.writeUInt32BE(dstNode >>> 0, 12);
    b.writeUInt16BE(srcPort, 16);
    b.writeUInt16BE(dstPort, 18);
  }

  /** A packet buffer with the header filled except the checksum; payload space left at HEADER_LEN. */
  alloc(flags: number, payloadLen: number, seq: number, ack: number, window: number): Buffer {
    const b = Buffer.allocUnsafe(HEADER_LEN + payloadLen);
    this.tpl.copy(b, 0, 0, 20);
    b[0] = (PROTOCOL_VERSION << 4) | (flags & 0x0f);
    b[2] = payloadLen >>> 8;
    b[3] = payloadLen & 0xff;
    b.writeUInt32BE(seq >>> 0, 20);
    b.writeUInt32BE(ack >>> 0, 24);
    b.writeUInt16BE(window > 0xffff ? 0xffff : window < 0 ? 0 : window, 28);
    b.writeUInt32BE(0, 30);
    return b;
  }
}

/** Write the CRC-32 of a packet built by HeaderTemplate.alloc (checksum field must still be zero). */
export function seal(b: Buffer): Buffer {
  b.writeUInt32BE(crc32(b) >>> 0, 30);
  return b;
}
