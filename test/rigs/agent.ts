/**
 * Driver for the UDP test agent (udp-agent.ts) running inside a rig namespace: bind sockets, send, wait
 * for datagrams, ask a STUN-like echo server for the reflexive address.
 */
import { RigError } from './errors.js';
import type { NodeProcess } from './netns.js';

export interface Datagram {
  from: string;
  port: number;
  data: string;
}

export interface Endpoint {
  ip: string;
  port: number;
}

interface AgentEvent {
  ev: string;
  id?: string;
  port?: number;
  from?: string;
  data?: string;
  error?: string;
}

function parse(line: string): AgentEvent | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' && typeof (v as AgentEvent).ev === 'string' ? (v as AgentEvent) : undefined;
  } catch {
    return undefined;
  }
}

export class UdpAgent {
  private nextId = 1;

  private constructor(readonly proc: NodeProcess, readonly label: string) {}

  /** @internal use `host.udpAgent()`. */
  static async start(proc: NodeProcess, label: string): Promise<UdpAgent> {
    await proc.waitForLine((l) => parse(l)?.ev === 'ready', 15_000);
    return new UdpAgent(proc, label);
  }

  /** Binds a UDP socket on 0.0.0.0:`port` (0 = any). `echo: true` makes it a "what's my address" server. */
  async bind(opts: { port?: number; echo?: boolean } = {}): Promise<UdpSocket> {
    const id = `s${this.nextId++}`;
    this.command({ cmd: 'bind', id, port: opts.port ?? 0, echo: opts.echo ?? false });
    const line = await this.proc.waitForLine((l) => {
      const e = parse(l);
      return e?.id === id && (e.ev === 'bound' || e.ev === 'error');
    }, 10_000);
    const e = parse(line)!;
    if (e.ev === 'error') throw new RigError('agent_failed', `${this.label}: bind ${opts.port ?? 0}: ${e.error}`);
    return new UdpSocket(this, id, e.port!);
  }

  /** @internal */
  command(c: Record<string, unknown>): void {
    this.proc.writeLine(JSON.stringify(c));
  }

  /** Asks the agent to exit; kills it if it does not. */
  async close(): Promise<void> {
    if (this.proc.child.exitCode === null && this.proc.child.signalCode === null) {
      this.command({ cmd: 'exit' });
      this.proc.child.stdin?.end();
    }
    const t = setTimeout(() => void this.proc.kill(500), 2000);
    await this.proc.exited;
    clearTimeout(t);
  }
}

export class UdpSocket {
  /** @internal */
  constructor(
    private readonly agent: UdpAgent,
    readonly id: string,
    /** Local (inside) port. */
    readonly port: number,
  ) {}

  /** Sends `data` to ip:port, `repeat` times every `intervalMs` (sends are fire-and-forget, as UDP is). */
  send(ip: string, port: number, data: string, opts: { repeat?: number; intervalMs?: number } = {}): void {
    this.agent.command({ cmd: 'send', id: this.id, ip, port, data, repeat: opts.repeat ?? 1, intervalMs: opts.intervalMs ?? 50 });
  }

  /** Waits for a datagram on this socket matching `match` (e.g. from a given peer); rejects after `timeoutMs`. */
  async recv(match: (d: Datagram) => boolean = () => true, timeoutMs = 5000): Promise<Datagram> {
    const line = await this.agent.proc.waitForLine((l) => {
      const e = parse(l);
      return e?.ev === 'recv' && e.id === this.id && match({ from: e.from!, port: e.port!, data: e.data! });
    }, timeoutMs, `matching datagram on socket ${this.id} (port ${this.port})`);
    const e = parse(line)!;
    return { from: e.from!, port: e.port!, data: e.data! };
  }

  /** Like recv() but resolves `undefined` instead of rejecting when nothing matching arrives in `ms`. */
  async maybeRecv(match: (d: Datagram) => boolean, ms: number): Promise<Datagram | undefined> {
    try {
      return await this.recv(match, ms);
    } catch (err) {
      if (err instanceof RigError && err.code === 'line_wait_failed') return undefined;
      throw err;
    }
  }

  /**
   * STUN-like reflexive address: asks an echo server (a socket bound with `echo: true`) which address this
   * socket's datagrams arrive from. Retries a few times (UDP may lose the first datagram while ARP resolves).
   */
  async whoami(server: Endpoint, timeoutMs = 5000): Promise<Endpoint> {
    const nonce = `whoami-${Math.random().toString(36).slice(2)}`;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.send(server.ip, server.port, nonce);
      const wait = Math.min(500, deadline - Date.now());
      const d = await this.maybeRecv((d) => d.from === server.ip && d.port === server.port && d.data.includes(nonce), wait);
      if (d) return (JSON.parse(d.data) as { observed: Endpoint }).observed;
      if (Date.now() >= deadline) {
        throw new RigError('agent_failed', `no answer from echo server ${server.ip}:${server.port} within ${timeoutMs} ms`);
      }
    }
  }

  /** Cancels this socket's pending repeated sends; resolves once the agent confirmed (nothing more goes out). */
  async stopSending(): Promise<void> {
    this.agent.command({ cmd: 'stop', id: this.id });
    await this.agent.proc.waitForLine((l) => {
      const e = parse(l);
      return e?.ev === 'stopped' && e.id === this.id;
    }, 10_000, `stop confirmation for socket ${this.id}`);
  }

  close(): void {
    this.agent.command({ cmd: 'close', id: this.id });
  }
}
