// A UDP impairment proxy for benchmarks: side A sends to `portA`, the proxy forwards to B from `portB`
// and back, dropping each datagram with probability `loss` and delaying it by `delayMs` one way
// (RTT = 2 × delay). FIFO per direction, one timer per direction, 4 MiB socket buffers.
import { createSocket, type Socket } from 'node:dgram';
import { serveParent } from './lib/child.js';

interface Direction {
  out: Socket;
  queue: Array<{ at: number; msg: Buffer }>;
  head: number;
  timer: NodeJS.Timeout | null;
  target: { port: number; address: string } | null;
  forwarded: number;
  dropped: number;
}

export class ImpairProxy {
  private readonly a = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  private readonly b = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  private readonly toB: Direction;
  private readonly toA: Direction;

  constructor(
    private readonly bTarget: { port: number; address: string },
    private readonly loss: number,
    private readonly delayMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.toB = { out: this.b, queue: [], head: 0, timer: null, target: bTarget, forwarded: 0, dropped: 0 };
    this.toA = { out: this.a, queue: [], head: 0, timer: null, target: null, forwarded: 0, dropped: 0 };
    this.a.on('message', (msg, rinfo) => {
      this.toA.target = { port: rinfo.port, address: rinfo.address };
      this.enqueue(this.toB, msg);
    });
    this.b.on('message', (msg) => this.enqueue(this.toA, msg));
  }

  async listen(): Promise<{ portA: number; portB: number }> {
    await Promise.all([
      new Promise<void>((r) => this.a.bind(0, '127.0.0.1', r)),
      new Promise<void>((r) => this.b.bind(0, '127.0.0.1', r)),
    ]);
    return { portA: this.a.address().port, portB: this.b.address().port };
  }

  stats(): { forwarded: number; dropped: number } {
    return { forwarded: this.toA.forwarded + this.toB.forwarded, dropped: this.toA.dropped + this.toB.dropped };
  }

  close(): void {
    for (const d of [this.toA, this.toB]) if (d.timer) clearTimeout(d.timer);
    this.a.close();
    this.b.close();
  }

  private enqueue(d: Direction, msg: Buffer): void {
    if (this.loss > 0 && this.random() < this.loss) {
      d.dropped++;
      return;
    }
    if (this.delayMs <= 0) return this.forward(d, msg);
    d.queue.push({ at: performance.now() + this.delayMs, msg });
    if (!d.timer) d.timer = setTimeout(() => this.drain(d), this.delayMs);
  }

  private drain(d: Direction): void {
    d.timer = null;
    const now = performance.now();
    while (d.head < d.queue.length && d.queue[d.head]!.at <= now + 0.5) this.forward(d, d.queue[d.head++]!.msg);
    if (d.head > 4096 && d.head * 2 > d.queue.length) {
      d.queue = d.queue.slice(d.head);
      d.head = 0;
    }
    if (d.head < d.queue.length) d.timer = setTimeout(() => this.drain(d), Math.max(0, d.queue[d.head]!.at - now));
  }

  private forward(d: Direction, msg: Buffer): void {
    if (!d.target) return;
    d.forwarded++;
    d.out.send(msg, d.target.port, d.target.address);
  }
}

// As a bench child process: { type: 'setup', port, loss, delayMs } → { type: 'ready', portA, portB }.
if (process.send) {
  let proxy: ImpairProxy | null = null;
  serveParent(async (m, reply) => {
    if (m.type === 'setup') {
      proxy = new ImpairProxy({ port: m.port as number, address: '127.0.0.1' }, m.loss as number, m.delayMs as number);
      reply({ type: 'ready', ...(await proxy.listen()) });
    } else if (m.type === 'stats') reply({ type: 'stats', ...proxy!.stats() });
  });
}
