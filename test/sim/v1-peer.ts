import { Flags, Protocol, decodePacket, encodePacket, type Packet } from '../../transport/packet.js';
import type { SimNetwork } from './link.js';

/**
 * A scripted peer that behaves like the v1 (Go) daemon on the wire (wire reference §1.7, §6):
 * answers SYN with SYN|ACK (window 512), ACKs in-order data at once, ignores SACK, answers *every*
 * FIN-flagged packet with FIN|ACK (the v1 storm behaviour), closes with a bare FIN, answers pings.
 * Only what the interop tests need.
 */
export class V1Peer {
  readonly received: Buffer[] = [];
  readonly log: Packet[] = [];
  rcvNxt = 0;
  sndSeq = 0;
  window = 512;
  peerFin = false;
  remotePort = 0;
  localPort = 0;
  remoteNode = 0;
  /** Answer FIN-flagged packets with FIN|ACK (v1 does; set false to observe). */
  answerFins = true;
  finAcksSent = 0;

  constructor(
    private readonly net: SimNetwork,
    readonly node: number,
    readonly listenPort: number,
  ) {
    net.addRaw(node, (pkt, from) => this.onPacket(pkt, from));
  }

  get data(): Buffer {
    return Buffer.concat(this.received);
  }

  private send(flags: number, seq: number, ack: number, payload?: Buffer, protocol: number = Protocol.STREAM, srcPort = this.localPort, dstPort = this.remotePort): void {
    const pkt = encodePacket(
      { flags, protocol, srcNet: 0, srcNode: this.node, dstNet: 0, dstNode: this.remoteNode, srcPort, dstPort, seq: seq >>> 0, ack: ack >>> 0, window: this.window },
      payload,
    );
    this.net.inject(this.node, this.remoteNode, pkt);
  }

  /** Send application data (one segment ≤ 4096 bytes, as v1). */
  write(data: Buffer): void {
    this.send(Flags.ACK, this.sndSeq, this.rcvNxt, data);
    this.sndSeq += data.length;
  }

  /** v1 close: a bare FIN (no ACK flag) at SendSeq. */
  close(): void {
    this.send(Flags.FIN, this.sndSeq, this.rcvNxt);
  }

  /** Start an active open towards `node:port` from `srcPort`. */
  dial(node: number, port: number, srcPort = 50000): void {
    this.remoteNode = node;
    this.remotePort = port;
    this.localPort = srcPort;
    this.send(Flags.SYN, 0, 0);
    this.sndSeq = 1;
  }

  private onPacket(buf: Buffer, from: number): void {
    const p = decodePacket(buf);
    this.log.push(p);
    if (p.protocol === Protocol.CONTROL) {
      if (p.dstPort === 0 && !(p.flags & Flags.ACK)) {
        this.remoteNode = from;
        this.send(Flags.ACK, p.seq, p.seq + 1, Buffer.from(p.payload), Protocol.CONTROL, 0, p.srcPort);
      }
      return;
    }
    if (p.protocol !== Protocol.STREAM) return;
    if (p.flags & Flags.SYN && !(p.flags & Flags.ACK)) {
      this.remoteNode = from;
      this.remotePort = p.srcPort;
      this.localPort = p.dstPort;
      this.rcvNxt = p.seq + 1;
      this.sndSeq = 1;
      this.send(Flags.SYN | Flags.ACK, 0, this.rcvNxt);
      return;
    }
    if (p.flags & Flags.SYN && p.flags & Flags.ACK) {
      this.rcvNxt = p.seq + 1;
      this.send(Flags.ACK, this.sndSeq, this.rcvNxt);
      return;
    }
    if (p.flags & Flags.RST) return;
    const isSack = p.payload.length >= 5 && p.payload.subarray(0, 4).toString('latin1') === 'SACK';
    if (p.payload.length > 0 && !isSack && p.seq === this.rcvNxt) {
      this.received.push(Buffer.from(p.payload));
      this.rcvNxt += p.payload.length;
      this.send(Flags.ACK, this.sndSeq, this.rcvNxt);
    }
    if (p.flags & Flags.FIN) {
      this.peerFin = true;
      this.rcvNxt = p.seq + 1;
      if (this.answerFins) {
        this.finAcksSent++;
        this.send(Flags.FIN | Flags.ACK, this.sndSeq, this.rcvNxt);
      }
    }
  }
}
