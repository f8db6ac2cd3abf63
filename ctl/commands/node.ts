/** Node, registry-facing and trust commands (wire reference §2); networks and keys are in network.ts. */
import type { Command } from 'commander';
import { action, CliError, formatHuman, parseIntArg, table, type Ctx } from './common.js';

type Row = Record<string, unknown>;

export function registerNodeCommands(program: Command): void {
  program
    .command('info')
    .description('show this node: ID, address, hostname, peers, connections, traffic counters')
    .action(
      action(async (ctx: Ctx) => {
        const info = await (await ctx.pilot()).info();
        ctx.ok(info, (d: Row) => {
          const keys = ['node_id', 'address', 'hostname', 'public', 'uptime_secs', 'connections', 'ports', 'peers', 'encrypted_peers', 'bytes_sent', 'bytes_recv', 'data_dir'];
          return keys.filter((k) => d[k] !== undefined).map((k) => `${k}: ${String(d[k])}`).join('\n');
        });
      }),
    );

  program
    .command('peers')
    .description('list peers with a tunnel')
    .option('--search <q>', 'filter by node ID, address or endpoint')
    .action(
      action(async (ctx: Ctx, o: { search?: string }) => {
        const peers = await (await ctx.pilot()).peers(o.search);
        ctx.ok({ peers }, () => table(peers as Row[]));
      }),
    );

  program
    .command('connections')
    .description('list open stream connections')
    .action(
      action(async (ctx: Ctx) => {
        const connections = await (await ctx.pilot()).connections();
        ctx.ok({ connections }, () => table(connections as Row[]));
      }),
    );

  program
    .command('disconnect <conn_id>')
    .description('close a connection by its ID (see pilotctl connections)')
    .action(
      action(async (ctx: Ctx, id: string) => {
        const n = parseIntArg(id, 'conn_id', 0, 0xffffffff);
        await (await ctx.pilot()).disconnect(n);
        ctx.ok({ disconnected: n }, `connection ${n} closed`);
      }),
    );

  program
    .command('find <hostname>')
    .description('resolve a hostname through the registry')
    .action(
      action(async (ctx: Ctx, h: string) => {
        const r = await (await ctx.pilot()).findHostname(h);
        ctx.ok(r);
      }),
    );

  const simple = (name: string, desc: string, run: (ctx: Ctx, ...a: string[]) => Promise<unknown>, human?: (r: Row, ...a: string[]) => string, args = ''): void => {
    program
      .command(`${name}${args ? ` ${args}` : ''}`)
      .description(desc)
      .action(
        action(async (ctx: Ctx, ...a: unknown[]) => {
          const strs = a.filter((x) => typeof x === 'string' || Array.isArray(x)) as string[];
          const r = ((await run(ctx, ...strs)) ?? {}) as Row;
          ctx.ok(r, human ? human(r, ...strs) : formatHuman(r));
        }),
      );
  };
  simple('set-hostname', 'register a hostname for this node', async (ctx, h) => (await ctx.pilot()).setHostname(h!), (_r, h) => `hostname set to ${h}`, '<name>');
  simple('clear-hostname', 'remove this node\'s hostname', async (ctx) => (await ctx.pilot()).setHostname(''), () => 'hostname cleared');
  program
    .command('set-tags <tags...>')
    .description('set up to 3 capability tags')
    .action(
      action(async (ctx: Ctx, tags: string[]) => {
        if (tags.length > 3) throw new CliError('invalid_argument', 'at most 3 tags');
        ctx.ok(await (await ctx.pilot()).setTags(tags), `tags set: ${tags.join(', ')}`);
      }),
    );
  simple('clear-tags', 'remove all tags', async (ctx) => (await ctx.pilot()).setTags([]), () => 'tags cleared');
  simple('set-public', 'make this node\'s endpoint visible to everyone', async (ctx) => (await ctx.pilot()).setVisibility(true), () => 'node is public');
  simple('set-private', 'hide this node\'s endpoint (reachable after a handshake)', async (ctx) => (await ctx.pilot()).setVisibility(false), () => 'node is private');
  simple('enable-tasks', 'accept task submissions', async (ctx) => (await ctx.pilot()).setTaskExec(true), () => 'task execution enabled');
  simple('disable-tasks', 'refuse task submissions', async (ctx) => (await ctx.pilot()).setTaskExec(false), () => 'task execution disabled');
  simple('set-webhook', 'POST daemon events to a URL', async (ctx, u) => (await ctx.pilot()).setWebhook(u!), (_r, u) => `webhook set to ${u}`, '<url>');
  simple('clear-webhook', 'stop posting events', async (ctx) => (await ctx.pilot()).setWebhook(''), () => 'webhook cleared');
  simple('deregister', 'remove this node from the registry (until the daemon restarts)', async (ctx) => (await ctx.pilot()).deregister(), () => 'deregistered');

  // ----- trust ---------------------------------------------------------------------------------
  program
    .command('handshake <peer> [justification]')
    .description('ask a peer to trust this node (peer = node ID, address or hostname)')
    .action(
      action(async (ctx: Ctx, peer: string, why?: string) => {
        const r = await (await ctx.pilot()).handshake(peer, why ?? '');
        ctx.ok(r, `handshake ${String(r.status)} (node ${String(r.node_id)})`);
      }),
    );
  program
    .command('approve <node>')
    .description('approve a pending handshake')
    .action(
      action(async (ctx: Ctx, node: string) => {
        const r = await (await ctx.pilot()).approve(node);
        ctx.ok(r, `approved node ${String(r.node_id)}`);
      }),
    );
  program
    .command('reject <node> [reason]')
    .description('reject a pending handshake')
    .action(
      action(async (ctx: Ctx, node: string, reason?: string) => {
        const r = await (await ctx.pilot()).reject(node, reason ?? '');
        ctx.ok(r, `rejected node ${String(r.node_id)}`);
      }),
    );
  program
    .command('untrust <node>')
    .description('revoke trust (closes open sessions with that peer)')
    .action(
      action(async (ctx: Ctx, node: string) => {
        const r = await (await ctx.pilot()).untrust(node);
        ctx.ok(r, `revoked node ${String(r.node_id)}`);
      }),
    );
  program
    .command('pending')
    .description('list handshake requests waiting for approval')
    .action(
      action(async (ctx: Ctx) => {
        const pending = await (await ctx.pilot()).pending();
        ctx.ok({ pending }, () => table(pending as Row[]));
      }),
    );
  program
    .command('trust')
    .description('list trusted peers')
    .action(
      action(async (ctx: Ctx) => {
        const trusted = await (await ctx.pilot()).trusted();
        ctx.ok({ trusted }, () => table(trusted as Row[]));
      }),
    );
}
