import { RegistryError } from '../errors.js';
import type { AdminStatsOk, BeaconListOk, BeaconRegisterOk } from '../protocol/messages.js';
import { optBool, parseHostPort, reqInt, reqString } from '../protocol/validate.js';
import type { Handler } from './context.js';

/** Beacon cluster discovery (wire reference §1.9/§1.10) and the admin API (SPEC §6). */

export const MAX_BEACONS = 256;

const beaconRegister: Handler = {
  category: 'write',
  handle(ctx, m): BeaconRegisterOk {
    const id = reqInt(m, 'beacon_id', 1, 0xffffffff);
    const addr = reqString(m, 'addr', 300);
    parseHostPort(addr, 'addr');
    const now = ctx.nowMs();
    if (!ctx.beacons.has(id) && ctx.beacons.size >= MAX_BEACONS) {
      for (const [bid, b] of ctx.beacons) if (now - b.seenMs > ctx.settings.beaconTtlMs) ctx.beacons.delete(bid);
      if (ctx.beacons.size >= MAX_BEACONS) throw new RegistryError('limit_reached', `beacon table is full (${MAX_BEACONS})`);
    }
    ctx.beacons.delete(id); // keep insertion order = recency
    ctx.beacons.set(id, { addr, seenMs: now });
    return { type: 'beacon_register_ok', beacon_id: id };
  },
};

const beaconList: Handler = {
  category: 'read',
  handle(ctx): BeaconListOk {
    const now = ctx.nowMs();
    const beacons: Array<{ id: number; addr: string }> = [];
    for (const [id, b] of ctx.beacons) if (now - b.seenMs <= ctx.settings.beaconTtlMs) beacons.push({ id, addr: b.addr });
    return { type: 'beacon_list_ok', beacons };
  },
};

const adminStats: Handler = {
  category: 'admin',
  handle(ctx, m): AdminStatsOk {
    ctx.requireAdmin(m, 'admin_stats');
    // `gc: true` lets the load benchmark measure memory per node after a collection (needs --expose-gc).
    const gc = (globalThis as { gc?: () => void }).gc;
    const runGc = optBool(m, 'gc') === true && typeof gc === 'function';
    if (runGc) gc!();
    const mem = process.memoryUsage();
    const c = ctx.state.counters;
    const s = ctx.stats();
    return {
      type: 'admin_stats_ok',
      nodes_total: c.total,
      nodes_online: c.online,
      nodes_deregistered: c.deregistered,
      trust_links: c.mutualLinks,
      networks: ctx.state.networks.size,
      connections: Number(s.connections ?? 0),
      subscriptions: Number(s.subscriptions ?? 0),
      replay_cache_entries: ctx.replayEntries(),
      uptime_s: Number(s.uptime_s ?? 0),
      memory: { rss: mem.rss, heap_used: mem.heapUsed, external: mem.external },
      event_loop_delay: (s.event_loop as AdminStatsOk['event_loop_delay']) ?? null,
      gc_ran: runGc,
    };
  },
};

export const adminHandlers: ReadonlyArray<readonly [string, Handler]> = [
  ['beacon_register', beaconRegister],
  ['beacon_list', beaconList],
  ['admin_stats', adminStats],
];
