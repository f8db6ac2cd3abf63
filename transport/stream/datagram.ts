import { EventEmitter } from 'node:events';
import type { Addr } from '../address.js';

/**
 * A bound datagram port (protocol 2: unreliable, unordered, wire reference §1.3).
 * Events: 'message' (data: Buffer, src: Addr, srcPort: number, dstPort: number), 'close'.
 */
export class DatagramSocket extends EventEmitter {
  private _closed = false;

  /** @internal */
  constructor(
    readonly port: number,
    private readonly sendFn: (dst: Addr, dstPort: number, data: Uint8Array, srcPort: number) => void,
    private readonly onClose: (s: DatagramSocket) => void,
  ) {
    super();
  }

  get closed(): boolean {
    return this._closed;
  }

  send(dst: Addr, dstPort: number, data: Uint8Array): void {
    if (this._closed) return;
    this.sendFn(dst, dstPort, data, this.port);
  }

  close(): void {
    if (this._closed) return;
    this._closed = true;
    this.onClose(this);
    this.emit('close');
  }
}
