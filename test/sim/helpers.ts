import { createHash } from 'node:crypto';
import { Addr } from '../../transport/address.js';
import type { Connection, ConnectOptions, HostOptions, TransportHost } from '../../transport/host.js';
import type { StreamConfig } from '../../transport/stream/config.js';
import { SimNetwork, type LinkConfig } from './link.js';

/** Two hosts (nodes 1 and 2) on one simulated link. */
export function pair(opts: { seed?: number; link?: Partial<LinkConfig>; config?: Partial<StreamConfig>; a?: Partial<HostOptions>; b?: Partial<HostOptions> } = {}) {
  const net = new SimNetwork({ seed: opts.seed ?? 1, link: opts.link ?? {} });
  const a = net.addHost(1, { config: opts.config, ...(opts.a ?? {}) });
  const b = net.addHost(2, { config: opts.config, ...(opts.b ?? {}) });
  return { net, a, b, clock: net.clock };
}

export const addr = (node: number, network = 0): Addr => new Addr(network, node);

/** Dial and drive the virtual clock until the dial settles. */
export async function dial(net: SimNetwork, from: TransportHost, to: number, port: number, opts?: ConnectOptions): Promise<Connection> {
  let result: Connection | undefined;
  let error: unknown;
  let settled = false;
  from.connect(addr(to), port, opts).then(
    (c) => {
      result = c;
      settled = true;
    },
    (e) => {
      error = e;
      settled = true;
    },
  );
  await net.clock.run(() => settled, 120_000);
  if (error) throw error;
  return result!;
}

/** Incrementally hashes what a readable delivers. */
export class Sink {
  readonly hash = createHash('sha256');
  bytes = 0;
  ended = false;
  error: (Error & { code?: string }) | null = null;
  closed = false;
  constructor(readonly stream: NodeJS.ReadableStream & { on(e: string, f: (...a: any[]) => void): unknown }) {
    stream.on('data', (d: Buffer) => {
      this.hash.update(d);
      this.bytes += d.length;
    });
    stream.on('end', () => (this.ended = true));
    stream.on('error', (e: Error) => (this.error = e));
    stream.on('close', () => (this.closed = true));
  }
  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Deterministic pseudo-random bytes. */
export function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Write `data` in chunks honouring back-pressure ('drain'), then end(). */
export function writeAll(conn: Connection, data: Buffer, chunk = 64 * 1024): void {
  let off = 0;
  const pump = (): void => {
    while (off < data.length) {
      const part = data.subarray(off, Math.min(data.length, off + chunk));
      off += part.length;
      if (!conn.write(part)) {
        conn.once('drain', pump);
        return;
      }
    }
    conn.end();
  };
  pump();
}
