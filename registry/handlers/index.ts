import { adminHandlers } from './admin.js';
import { enterpriseHandlers } from './enterprise.js';
import type { Handler, HandlerTable } from './context.js';
import { networkHandlers } from './networks.js';
import { nodeHandlers } from './nodes.js';
import { trustHandlers } from './trust.js';

export { HandlerContext, addressOf } from './context.js';
export type { Clock, ConnInfo, Handler, HandlerTable, Reply } from './context.js';

/**
 * The dispatch table: the v1 catalogue (wire reference §1.10) plus networks, push subscription and the
 * admin API. Extensions (the enterprise layer) pass extra entries to `RegistryServer` (`handlers`);
 * an extension may not silently replace a built-in type.
 */
export function buildHandlerTable(extra: ReadonlyArray<readonly [string, Handler]> = []): HandlerTable {
  const table: HandlerTable = new Map();
  for (const [type, h] of [...nodeHandlers, ...trustHandlers, ...networkHandlers, ...adminHandlers, ...enterpriseHandlers]) table.set(type, h);
  for (const [type, h] of extra) {
    if (table.has(type)) throw new Error(`handler for "${type}" already exists`);
    table.set(type, h);
  }
  return table;
}

/** Types that v1 had but this registry deliberately does not serve, with the reason given to callers. */
export const UNSUPPORTED_TYPES: ReadonlyMap<string, string> = new Map([
  ['subscribe_replication', 'hot-standby replication is not supported by this registry (use the store\'s own replication)'],
]);
