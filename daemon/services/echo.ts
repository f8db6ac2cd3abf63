import type { Duplex } from 'node:stream';
import { Ports } from '../../transport/address.js';
import { ConnectionSet } from './conns.js';
import { silentLogger, type Service, type ServiceContext, type ServiceLogger } from './types.js';

export interface EchoServiceOptions {
  maxConnections?: number;
  logger?: ServiceLogger;
}

/**
 * Port 7: echoes every chunk back (wire reference §1.14). Back-pressure comes from pipe(): when the
 * remote stops reading our replies, we stop reading its data, so nothing grows without bound.
 */
export class EchoService implements Service {
  readonly name = 'echo';
  readonly port = Ports.ECHO;
  private readonly conns: ConnectionSet;
  private readonly log: ServiceLogger;
  bytesEchoed = 0;

  constructor(opts: EchoServiceOptions = {}) {
    this.conns = new ConnectionSet(opts.maxConnections ?? 256);
    this.log = opts.logger ?? silentLogger;
  }

  handle(conn: Duplex, ctx: ServiceContext): Promise<void> {
    return new Promise((resolve) => {
      if (!this.conns.add(conn)) {
        this.log.warn({ remote: ctx.remote }, 'echo: too many connections, dropping');
        conn.destroy();
        return resolve();
      }
      conn.on('data', (c: Buffer) => {
        this.bytesEchoed += c.length;
      });
      conn.on('error', (err) => this.log.debug({ remote: ctx.remote, err: err.message }, 'echo connection error'));
      conn.once('close', () => resolve());
      conn.pipe(conn);
    });
  }

  async close(): Promise<void> {
    this.conns.closeAll();
  }
}
