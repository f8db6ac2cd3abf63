import { EventEmitter } from 'node:events';
import type { RemoteInfo } from 'node:dgram';
import { pino, type Logger } from 'pino';
import type { Identity } from './identity.js';
import { PilotError } from './errors.js';
import { BROADCAST_NODE } from './address.js';
import { TransportHost, type HostOptions, type RefusedEvent } from './host.js';
import type { StreamConfig } from './stream/index.js';
import { Tunnel, type Endpoint, type TunnelOptions, type RemoteInfoLike } from './tunnel/index.js';
import { UdpEndpoint, type UdpAddress, type UdpStats } from './udp.js';

/**
 * One node's whole transport: a UDP socket, the encrypted tunnel over it and the stream/datagram
 * engine over the tunnel (SPEC §2–4). The daemon, the real-UDP tests and the transport benchmark all
 * use this, so what is measured is what ships.
 *
 * Life cycle: `bind()` the socket (the daemon needs its port before it can register), then `start(node)`
 * once the registry assigned the node ID; `close()` frees everything.
 */

export interface TransportNodeOptions {
  identity: Identity;
  /** The registry's key for a node (cache in the caller); null if unknown. */
  lookupPublicKey: (node: number) => Promise<Uint8Array | null>;
  /** SYN / datagram admission (SPEC §5), run before any connection state exists. */
  admit?: HostOptions['admit'];
  /** Asked at the v1 3rd SYN timeout: switch the peer to a relay and return true if done. */
  relayFallback?: HostOptions['relayFallback'];
  /** A broadcast datagram the engine wants sent (the daemon fans it out to network members). */
  onBroadcast?: (packet: Buffer) => void;
  stream?: Partial<StreamConfig>;
  tunnel?: Pick<TunnelOptions, 'allowPlaintext' | 'allowAnonymous' | 'roaming' | 'limits'>;
  /** Requested kernel socket buffers (default 4 MiB). */
  socketBuffer?: number;
  log?: Logger;
}

export interface TransportNodeEvents {
  /** A beacon message (first byte < 0x10) or STUN reply arrived on our socket. */
  beacon: [msg: Buffer, rinfo: RemoteInfoLike];
  /** Tunnel-level: a peer's authenticated key exchange completed. */
  established: [node: number];
  refused: [info: RefusedEvent];
}

export class TransportNode extends EventEmitter<TransportNodeEvents> {
  readonly udp: UdpEndpoint;
  readonly tunnel: Tunnel;
  private hostRef: TransportHost | null = null;
  private readonly log: Logger;

  constructor(private readonly opts: TransportNodeOptions) {
    super();
    this.log = opts.log ?? pino({ level: 'silent' });
    this.udp = new UdpEndpoint({ bufferBytes: opts.socketBuffer, log: this.log });
    this.tunnel = new Tunnel({
      identity: opts.identity,
      send: (frame, port, host) => this.udp.send(frame, port, host),
      lookupPublicKey: opts.lookupPublicKey,
      log: this.log,
      ...opts.tunnel,
    });
    this.udp.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.tunnel.handleDatagram(msg, rinfo));
    this.udp.on('error', (err) => this.log.warn({ err: err.message }, 'udp socket error'));
    this.tunnel.on('packet', (node, pkt, info) => this.hostRef?.input(pkt, node, info.authenticated));
    this.tunnel.on('beacon', (msg, rinfo) => this.emit('beacon', msg, rinfo));
    this.tunnel.on('established', (node) => this.emit('established', node));
  }

  bind(host = '0.0.0.0', port = 0): Promise<UdpAddress> {
    return this.udp.bind(host, port);
  }

  address(): UdpAddress {
    return this.udp.address();
  }

  /** Start the engine as `localNode` (known after registration). Idempotent for the same node. */
  start(localNode: number): TransportHost {
    if (this.hostRef) {
      if (this.hostRef.localNode !== localNode) throw new PilotError('node_changed', 'transport already started under another node ID');
      return this.hostRef;
    }
    this.tunnel.setLocalNode(localNode);
    const onBroadcast = this.opts.onBroadcast;
    this.hostRef = new TransportHost({
      localNode,
      output: (peer, pkt) => {
        if (peer === BROADCAST_NODE) onBroadcast?.(pkt);
        else this.tunnel.send(peer, pkt);
      },
      // The tunnel seals synchronously into its own frame (or copies what it queues for a key exchange).
      outputIsSynchronous: true,
      tunnelOverhead: (peer) => this.tunnel.overhead(peer),
      admit: this.opts.admit,
      relayFallback: this.opts.relayFallback,
      config: this.opts.stream,
      log: this.log,
    });
    this.hostRef.on('refused', (info: RefusedEvent) => this.emit('refused', info));
    return this.hostRef;
  }

  get host(): TransportHost {
    if (!this.hostRef) throw new PilotError('not_started', 'transport not started: call start(nodeId) first');
    return this.hostRef;
  }

  get started(): boolean {
    return this.hostRef !== null;
  }

  /** Tell the tunnel where a peer is (from a registry resolve). */
  addPeer(node: number, endpoint: Endpoint, relay?: Endpoint): void {
    this.tunnel.addPeer(node, endpoint, relay ? { relay } : undefined);
  }

  stats(): { udp: UdpStats; tunnel: ReturnType<Tunnel['stats']>; host: ReturnType<TransportHost['stats']> | null } {
    return { udp: this.udp.stats(), tunnel: this.tunnel.stats(), host: this.hostRef?.stats() ?? null };
  }

  async close(): Promise<void> {
    await this.hostRef?.close();
    this.tunnel.close();
    await this.udp.close();
  }
}
