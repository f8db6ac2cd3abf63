import { crc32 } from 'node:zlib';
import { HEADER_LEN, PROTOCOL_VERSION } from '../packet.js';

/**
 * Hot-path packet writer for one 4-tuple: the constant header bytes (protocol, addresses, ports) are
 * prepared once; per packet we copy them, fill flags/len/seq/ack/window, and compute the CRC-32 in one
 * pass over the whole buffer with the checksum field zeroed — byte-identical to transport/packet.ts.
 */
export class HeaderTemplate {
  private readonly protocol: number;
  private readonly srcNet: number;
  private readonly srcNode: number;
  private readonly dstNet: number;
  private readonly dstNode: number;
  private readonly ports: number;

  /**
   * `scratch`: when set, packets are built in this one reused buffer instead of a fresh allocation per
   * packet — valid only if the consumer of `output` is done with a packet when the call returns.
   */
  constructor(
    protocol: number, srcNet: number, srcNode: number, dstNet: number, dstNode: number, srcPort: number, dstPort: number,
    private readonly scratch: Buffer | null = null,
  ) {
    this.protocol = protocol;
    this.srcNet = srcNet;
    this.srcNode = srcNode >>> 0;
    this.dstNet = dstNet;
    this.dstNode = dstNode >>> 0;
    this.ports = ((srcPort << 16) | dstPort) >>> 0;
  }

  /** A packet buffer with the header filled except the checksum; payload space left at HEADER_LEN. */
  alloc(flags: number, payloadLen: number, seq: number, ack: number, window: number): Buffer {
    const size = HEADER_LEN + payloadLen;
    const b = this.scratch !== null && size <= this.scratch.length ? this.scratch.subarray(0, size) : Buffer.allocUnsafe(size);
    b[1] = this.protocol;
    b.writeUInt16BE(this.srcNet, 4);
    b.writeUInt32BE(this.srcNode, 6);
    b.writeUInt16BE(this.dstNet, 10);
    b.writeUInt32BE(this.dstNode, 12);
    b.writeUInt32BE(this.ports, 16);
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
