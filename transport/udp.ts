import { createSocket, type RemoteInfo, type Socket, type SocketType } from 'node:dgram';
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { pino, type Logger } from 'pino';
import { PilotError } from './errors.js';

/**
 * A small wrapper over one node:dgram socket (DESIGN.md: no promise per packet, big buffers, counters).
 *
 * - `send()` is fire-and-forget: frames are queued and handed to the kernel together once the current
 *   callback returns (see `flushQueued`). IP literals skip dgram's DNS step (a custom lookup answers
 *   synchronously instead of a DNS call per datagram); errors are counted, not thrown.
 * - Asks the kernel for 4 MiB receive/send buffers and reports what it granted; if less, warns once
 *   with the sysctl that raises the cap (Linux: net.core.rmem_max / wmem_max).
 * - IPv4 and IPv6: binding "::" gives a dual-stack socket. IPv4 peers then appear as plain dotted
 *   addresses in 'message' (the ::ffff: prefix is stripped) and may be sent to as such.
 */

export class UdpError extends PilotError {}

export const DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024;

export interface UdpEndpointOptions {
  /** Requested SO_RCVBUF / SO_SNDBUF in bytes (default 4 MiB). 0 leaves the OS default. */
  bufferBytes?: number;
  /** With an IPv6 bind address: refuse IPv4 (default false: dual stack). */
  ipv6Only?: boolean;
  log?: Logger;
}

export interface UdpAddress {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

export interface UdpStats {
  packets_sent: number;
  bytes_sent: number;
  packets_received: number;
  bytes_received: number;
  /** Datagrams the socket refused to send (unreachable, too big, bad address…). */
  send_errors: number;
  /** Bytes the kernel granted (Linux reports double the usable size), 0 before bind. */
  recv_buffer_bytes: number;
  send_buffer_bytes: number;
  /** Datagrams the kernel dropped on our socket (full receive buffer), from /proc/net/udp*; null if unavailable. */
  kernel_drops: number | null;
}

export interface UdpEndpointEvents {
  message: [msg: Buffer, rinfo: RemoteInfo];
  error: [err: Error];
  close: [];
}

export class UdpEndpoint extends EventEmitter<UdpEndpointEvents> {
  private socket: Socket | null = null;
  private family: 'IPv4' | 'IPv6' = 'IPv4';
  private readonly bufferBytes: number;
  private readonly ipv6Only: boolean;
  private readonly log: Logger;
  private packetsSent = 0;
  private bytesSent = 0;
  private packetsReceived = 0;
  private bytesReceived = 0;
  private sendErrors = 0;
  private recvBuffer = 0;
  private sendBuffer = 0;
  private inode: string | null = null;
  private closing: Promise<void> | null = null;
  private readonly onSendDone = (err: Error | null): void => {
    if (err) this.countSendError(err);
  };
  // Frames waiting for flushQueued, as parallel arrays (no object per datagram).
  private queuedData: Array<Buffer | readonly Buffer[]> = [];
  private queuedPort: number[] = [];
  private queuedHost: string[] = [];
  private flushScheduled = false;

  constructor(opts: UdpEndpointOptions = {}) {
    super();
    this.bufferBytes = opts.bufferBytes ?? DEFAULT_SOCKET_BUFFER;
    this.ipv6Only = opts.ipv6Only ?? false;
    this.log = opts.log ?? pino({ level: 'silent' });
  }

  /** Bind and resolve with the actual address (port 0 picks a free port). */
  async bind(host = '0.0.0.0', port = 0): Promise<UdpAddress> {
    if (this.socket) throw new UdpError('already_bound', 'UDP endpoint is already bound');
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new UdpError('bad_port', `bad UDP port ${port}`);
    const v = isIP(host);
    if (v === 0) throw new UdpError('bad_address', `bind address must be an IP literal, got ${JSON.stringify(host)}`);
    const type: SocketType = v === 6 ? 'udp6' : 'udp4';
    this.family = v === 6 ? 'IPv6' : 'IPv4';
    const socket = createSocket({
      type,
      ipv6Only: this.ipv6Only,
      // Answer IP literals synchronously (dgram otherwise defers every send through dns.lookup).
      lookup: (hostname: string, options: LookupOneOptions | number, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void) =>
        this.resolve(hostname, options, cb),
    } as Parameters<typeof createSocket>[0]);
    this.socket = socket;
    socket.on('message', (msg, rinfo) => {
      this.packetsReceived++;
      this.bytesReceived += msg.length;
      if (this.family === 'IPv6' && rinfo.family === 'IPv6' && rinfo.address.startsWith('::ffff:') && isIP(rinfo.address.slice(7)) === 4) {
        rinfo.address = rinfo.address.slice(7);
        rinfo.family = 'IPv4';
      }
      this.emit('message', msg, rinfo);
    });
    socket.on('error', (err) => {
      // Async socket errors after bind (e.g. ICMP-driven on some platforms) must not crash the process.
      this.log.warn({ err: err.message }, 'udp: socket error');
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new UdpError('bind_failed', `cannot bind UDP ${host}:${port}: ${err.message}`, { cause: err }));
      };
      socket.once('error', onError);
      socket.bind(port, host, () => {
        socket.off('error', onError);
        resolve();
      });
    }).catch((err: unknown) => {
      this.socket = null;
      try {
        socket.close();
      } catch {
        /* already closed */
      }
      throw err;
    });
    this.applyBuffers(socket);
    this.inode = findInode(socket);
    return this.address();
  }

  address(): UdpAddress {
    if (!this.socket) throw new UdpError('not_bound', 'UDP endpoint is not bound');
    const a = this.socket.address();
    return { address: a.address, port: a.port, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4' };
  }

  /**
   * Send one datagram (a buffer list is sent as one datagram, gathered without copying). Never throws.
   * The caller must not modify the buffers afterwards: they leave when the current callback returns.
   */
  send(data: Buffer | readonly Buffer[], port: number, host: string): void {
    if (!this.socket || this.closing) {
      this.sendErrors++;
      return;
    }
    this.queuedData.push(data);
    this.queuedPort.push(port);
    this.queuedHost.push(host);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flushQueued);
    }
  }

  /**
   * Hand every queued frame to the kernel, back to back. Interleaving each sendmsg with sealing and
   * stream-engine work costs about twice the kernel time per datagram (its UDP path is cold in the CPU
   * caches every time); batching them gave ≈15 % more goodput at 1200-byte payloads (README, transport).
   */
  private readonly flushQueued = (): void => {
    this.flushScheduled = false;
    const data = this.queuedData;
    const ports = this.queuedPort;
    const hosts = this.queuedHost;
    if (data.length === 0) return;
    this.queuedData = [];
    this.queuedPort = [];
    this.queuedHost = [];
    const socket = this.socket;
    if (!socket) {
      this.sendErrors += data.length;
      return;
    }
    for (let i = 0; i < data.length; i++) {
      const d = data[i]!;
      try {
        socket.send(d as Buffer | Buffer[], ports[i]!, hosts[i]!, this.onSendDone);
        this.packetsSent++;
        if (Buffer.isBuffer(d)) this.bytesSent += d.length;
        else for (let j = 0; j < d.length; j++) this.bytesSent += d[j]!.length;
      } catch (err) {
        this.countSendError(err as Error);
      }
    }
  };

  /** Counters; `kernel_drops` is read from /proc/net/udp* now (Linux only). */
  stats(): UdpStats {
    return {
      packets_sent: this.packetsSent,
      bytes_sent: this.bytesSent,
      packets_received: this.packetsReceived,
      bytes_received: this.bytesReceived,
      send_errors: this.sendErrors,
      recv_buffer_bytes: this.recvBuffer,
      send_buffer_bytes: this.sendBuffer,
      kernel_drops: this.kernelDrops(),
    };
  }

  /** Kernel receive drops on this socket (the `drops` column of /proc/net/udp or udp6), or null. */
  kernelDrops(): number | null {
    if (!this.socket || this.inode === null) return null;
    for (const file of this.family === 'IPv6' ? ['/proc/net/udp6', '/proc/net/udp'] : ['/proc/net/udp', '/proc/net/udp6']) {
      let text: string;
      try {
        text = readFileSync(file, 'latin1');
      } catch {
        continue;
      }
      const drops = dropsForInode(text, this.inode);
      if (drops !== null) return drops;
    }
    return null;
  }

  async close(): Promise<void> {
    const socket = this.socket;
    if (!socket) return;
    if (!this.closing) {
      this.flushQueued(); // what was sent before close() still leaves (FINs, deregistrations)
      this.closing = new Promise<void>((resolve) => {
        socket.close(() => {
          this.socket = null;
          this.closing = null;
          this.emit('close');
          resolve();
        });
      });
    }
    return this.closing;
  }

  private applyBuffers(socket: Socket): void {
    if (this.bufferBytes > 0) {
      try {
        socket.setRecvBufferSize(this.bufferBytes);
        socket.setSendBufferSize(this.bufferBytes);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'udp: cannot set socket buffer sizes');
      }
    }
    try {
      this.recvBuffer = socket.getRecvBufferSize();
      this.sendBuffer = socket.getSendBufferSize();
    } catch {
      /* not supported */
    }
    // Linux reports twice the usable size it granted; compare against what we asked for.
    const grantedRecv = process.platform === 'linux' ? this.recvBuffer / 2 : this.recvBuffer;
    const grantedSend = process.platform === 'linux' ? this.sendBuffer / 2 : this.sendBuffer;
    if (this.bufferBytes > 0 && (grantedRecv < this.bufferBytes || grantedSend < this.bufferBytes)) {
      this.log.warn(
        { requested: this.bufferBytes, recv_granted: grantedRecv, send_granted: grantedSend },
        `udp: kernel granted smaller socket buffers than requested; bursts may be dropped. Raise the cap with: ` +
          `sysctl -w net.core.rmem_max=${this.bufferBytes} net.core.wmem_max=${this.bufferBytes}`,
      );
    }
  }

  private resolve(
    hostname: string,
    options: LookupOneOptions | number,
    cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
  ): void {
    const v = isIP(hostname);
    if (v === 4) {
      // A dual-stack IPv6 socket reaches IPv4 peers through mapped addresses.
      if (this.family === 'IPv6') return cb(null, `::ffff:${hostname}`, 6);
      return cb(null, hostname, 4);
    }
    if (v === 6) return cb(null, hostname, 6);
    const family = typeof options === 'number' ? options : (options.family ?? 0);
    dnsLookup(hostname, { family: family as 0 | 4 | 6 }, (err, address, fam) => cb(err, address, fam));
  }

  private countSendError(err: Error): void {
    this.sendErrors++;
    if (this.sendErrors === 1) this.log.warn({ err: err.message }, 'udp: send failed (first failure; see stats().send_errors)');
  }
}

/**
 * The inode of our socket, for the /proc/net/udp drops column (Linux). dgram exposes no descriptor,
 * so: the lines of /proc/net/udp{,6} bound to our local port, intersected with the socket inodes this
 * process holds (/proc/self/fd). Done once at bind.
 */
function findInode(socket: Socket): string | null {
  if (process.platform !== 'linux') return null;
  let port: number;
  try {
    port = socket.address().port;
  } catch {
    return null;
  }
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  const candidates = new Set<string>();
  for (const file of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 13 && cols[1]!.endsWith(`:${portHex}`)) candidates.add(cols[9]!);
    }
  }
  if (candidates.size === 0) return null;
  const ours: string[] = [];
  try {
    for (const fd of readdirSync('/proc/self/fd')) {
      let target: string;
      try {
        target = readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && candidates.has(m[1]!)) ours.push(m[1]!);
    }
  } catch {
    return null;
  }
  // Several of our own sockets on this port (different local addresses): ambiguous, report nothing.
  return ours.length === 1 ? ours[0]! : null;
}

/** Parse /proc/net/udp text: column 10 is the inode, the last column the drop count. */
export function dropsForInode(text: string, inode: string): number | null {
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    const cols = lines[i]!.trim().split(/\s+/);
    if (cols.length >= 13 && cols[9] === inode) {
      const n = Number(cols[cols.length - 1]);
      return Number.isFinite(n) ? n : null;
    }
  }
  return null;
}
