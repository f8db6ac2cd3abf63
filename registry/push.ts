import { encodeFrame } from './protocol/framing.js';
import type { PushEvent } from './protocol/messages.js';

/**
 * Push subscriptions (SPEC §6 "push, not poll").
 *
 * Semantics: a push is a prompt, the inbox is the record. Handshake requests and responses stay in the
 * node's inbox until `poll_handshakes` returns (and clears) them, whether or not a push went out, so a
 * daemon that was disconnected, or whose push was dropped, loses nothing: after every (re)subscribe it
 * should poll once (`subscribe_ok.pending` says whether anything is waiting). Trust revocations and
 * network membership/policy changes are also visible through `lookup`, `resolve`, `list_nodes` and
 * `get_network_policy`. Events are sent after the change is durable.
 */
export interface PushSink {
  /** false = the sink is overloaded and was closed */
  send(frame: Buffer): boolean;
  close(reason: string): void;
}

export class PushHub {
  private readonly byNode = new Map<number, Set<PushSink>>();
  private count = 0;
  dropped = 0;

  constructor(
    private readonly maxPerNode = 4,
    private readonly onDrop: () => void = () => {},
  ) {}

  get size(): number {
    return this.count;
  }

  /** Add a subscription; beyond `maxPerNode` the oldest one for that node is closed. */
  add(nodeId: number, sink: PushSink): void {
    let set = this.byNode.get(nodeId);
    if (!set) this.byNode.set(nodeId, (set = new Set()));
    while (set.size >= this.maxPerNode) {
      const oldest = set.values().next().value!;
      this.remove(nodeId, oldest);
      oldest.close('superseded by a newer subscription for the same node');
    }
    set.add(sink);
    this.count++;
  }

  remove(nodeId: number, sink: PushSink): void {
    const set = this.byNode.get(nodeId);
    if (set?.delete(sink)) {
      this.count--;
      if (set.size === 0) this.byNode.delete(nodeId);
    }
  }

  publish(nodeId: number, event: PushEvent): void {
    const set = this.byNode.get(nodeId);
    if (!set) return;
    const frame = encodeFrame(event);
    for (const sink of [...set]) {
      if (!sink.send(frame)) {
        this.dropped++;
        this.onDrop();
        this.remove(nodeId, sink);
      }
    }
  }

  keepalive(nowMs: number): void {
    if (this.count === 0) return;
    const frame = encodeFrame({ type: 'push', event: 'keepalive', time: Math.floor(nowMs / 1000) } satisfies PushEvent);
    for (const [nodeId, set] of this.byNode) {
      for (const sink of [...set]) {
        if (!sink.send(frame)) {
          this.dropped++;
          this.onDrop();
          this.remove(nodeId, sink);
        }
      }
    }
  }

  closeAll(reason: string): void {
    for (const [nodeId, set] of [...this.byNode]) {
      for (const sink of [...set]) {
        this.remove(nodeId, sink);
        sink.close(reason);
      }
    }
  }
}
