/**
 * `pilotctl network …` and `pilotctl key …` (issue 6): networks, identity joins, enterprise administration
 * (signed by this daemon's node as the acting node) and the key lifecycle. Registry errors keep their
 * stable codes in `--json` envelopes (`enterprise_required`, `identity_refused` + `reason`, `forbidden`,
 * `key_expired`, …) with a hint.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { JoinOptions } from '../sdk/networks.js';
import type { Pilot } from '../sdk/pilot.js';
import { action, CliError, formatHuman, parseDuration, parseIntArg, table, type Ctx } from './common.js';

type Row = Record<string, unknown>;

/** A network given by ID or by name (looked up with `network list`). */
async function networkId(pilot: Pilot, text: string): Promise<number> {
  const t = String(text).trim();
  if (/^\d+$/.test(t)) return parseIntArg(t, 'network', 1, 65535);
  const list = ((await pilot.network.list()).networks as Array<{ id: number; name: string }> | undefined) ?? [];
  const hit = list.find((n) => n.name === t);
  if (!hit) throw new CliError('not_found', `no network named "${t.slice(0, 64)}"`, { hint: 'pilotctl network list shows networks and their IDs' });
  return hit.id;
}

function readJsonFile(path: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = path === '-' ? readFileSync(0, 'utf8') : readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError('invalid_argument', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new CliError('invalid_argument', `${what} ${path} is not valid JSON`, { hint: 'see registry/identity/README.md for the rule format' });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CliError('invalid_argument', `${what} ${path} must hold a JSON object`);
  return v as Record<string, unknown>;
}

function ports(list: string): number[] {
  return list
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((p) => parseIntArg(p, 'port', 1, 65535));
}

function membersTable(d: Row): string {
  const members = (d.members as Row[] | undefined) ?? [];
  const rows = members.map((m) => ({
    node_id: m.node_id,
    address: m.address,
    role: m.role ?? '',
    external_id: m.external_id ?? '',
    tags: Array.isArray(m.member_tags) ? (m.member_tags as string[]).join(',') : '',
    online: m.online,
    hostname: m.hostname ?? '',
  }));
  return `network ${String(d.network_id)}${d.enterprise ? ' (enterprise)' : ''}\n${table(rows)}`;
}

interface JoinFlags {
  token?: string;
  oidcToken?: string;
  oidcTokenCommand?: string;
  jwtSvid?: string;
  svid?: string;
  svidKey?: string;
  cert?: string;
  certKey?: string;
  ldapUser?: string;
  ldapPasswordFile?: string;
  ldapPasswordEnv?: string;
  webhookCredential?: string;
  webhookCredentialFile?: string;
  keep?: boolean;
}

/** Flags → SDK join options. Secrets never travel on the command line except a webhook credential. */
export function joinOptionsFromFlags(o: JoinFlags, env: NodeJS.ProcessEnv = process.env, stdin: () => string = () => readFileSync(0, 'utf8')): JoinOptions {
  const opts: JoinOptions = {};
  if (o.token) opts.token = o.token;
  if (o.oidcToken) {
    if (o.oidcToken === '-') opts.oidcToken = stdin().trim();
    else opts.oidcTokenFile = o.oidcToken;
  }
  if (o.oidcTokenCommand) opts.oidcTokenCommand = o.oidcTokenCommand;
  if (o.jwtSvid) opts.jwtSvidFile = o.jwtSvid;
  if (o.svid || o.svidKey) {
    if (!o.svid || !o.svidKey) throw new CliError('invalid_argument', '--svid and --svid-key go together (SVID chain and its private key)');
    opts.svid = { cert: o.svid, key: o.svidKey };
  }
  if (o.cert || o.certKey) {
    if (!o.cert || !o.certKey) throw new CliError('invalid_argument', '--cert and --cert-key go together (certificate chain and its private key)');
    opts.cert = { cert: o.cert, key: o.certKey };
  }
  if (o.ldapUser || o.ldapPasswordFile || o.ldapPasswordEnv) {
    if (!o.ldapUser) throw new CliError('invalid_argument', '--ldap-user is required with an LDAP password');
    if (o.ldapPasswordFile) opts.ldap = { user: o.ldapUser, passwordFile: o.ldapPasswordFile };
    else if (o.ldapPasswordEnv) {
      const pw = env[o.ldapPasswordEnv];
      if (!pw) throw new CliError('invalid_argument', `environment variable ${o.ldapPasswordEnv} is empty or unset`);
      opts.ldap = { user: o.ldapUser, password: pw };
    } else throw new CliError('invalid_argument', '--ldap-user needs --ldap-password-file FILE or --ldap-password-env VAR', { hint: 'passwords are never given on the command line' });
  }
  if (o.webhookCredentialFile) opts.webhook = { tokenFile: o.webhookCredentialFile };
  else if (o.webhookCredential) opts.webhook = o.webhookCredential;
  if (o.keep) opts.keep = true;
  return opts;
}

/** `30d`, `12h`, `2026-01-01T00:00:00Z`, a unix time in seconds, or `never` → unix seconds | null. */
export function parseExpiry(text: string, now = Date.now()): number | null {
  const t = String(text).trim();
  if (t === 'never' || t === 'none' || t === '') return null;
  const rel = /^(\d+)\s*(d|w)$/.exec(t);
  if (rel) return Math.floor(now / 1000) + Number(rel[1]) * (rel[2] === 'w' ? 7 : 1) * 86_400;
  if (/^\d+(\.\d+)?(ms|s|m|h)$/.test(t)) return Math.floor((now + parseDuration(t)) / 1000);
  if (/^\d{9,}$/.test(t)) return Number(t);
  const ms = Date.parse(t);
  if (!Number.isFinite(ms)) throw new CliError('invalid_argument', `bad expiry "${t.slice(0, 64)}"`, { hint: 'use e.g. 30d, 12h, 2030-01-01T00:00:00Z, a unix time, or never' });
  return Math.floor(ms / 1000);
}

export function registerNetworkCommands(program: Command): void {
  const net = program
    .command('network')
    .description('networks: create, join (also with OIDC, SPIFFE, certificates, LDAP, webhook), members, roles, invites, policy');

  net
    .command('list')
    .description('list networks')
    .action(action(async (ctx: Ctx) => ctx.ok(await (await ctx.pilot()).network.list())));

  net
    .command('create <name>')
    .description('create a network (needs the registry admin token); this node becomes its owner')
    .option('--join-rule <rule>', 'open | token | invite | oidc | spiffe | ca | ldap | webhook', 'open')
    .option('--token <t>', 'join token (join rule "token")')
    .option('--admin-token <t>', 'registry admin token (default $PILOT_ADMIN_TOKEN)')
    .option('--ports <list>', 'allowed ports, comma separated (the daemons refuse other ports on this network)')
    .option('--max-members <n>', 'membership cap (0 = none)')
    .option('--enterprise', 'enterprise network: roles, invites, identity rules, key policy')
    .option('--identity-rule <file>', 'identity rule JSON for oidc/spiffe/ca/ldap/webhook (registry/identity/README.md); - reads stdin')
    .option('--group-networks <file>', 'JSON {group: [network IDs]}: networks an admitted identity joins by its groups')
    .option('--network-admin-token <t>', "the network's own admin token (enterprise, ≥ 16 characters)")
    .action(
      action(
        async (
          ctx: Ctx,
          name: string,
          o: { joinRule: string; token?: string; adminToken?: string; ports?: string; maxMembers?: string; enterprise?: boolean; identityRule?: string; groupNetworks?: string; networkAdminToken?: string },
        ) => {
          const adminToken = o.adminToken ?? process.env.PILOT_ADMIN_TOKEN;
          const r = await (await ctx.pilot()).network.create(name, {
            joinRule: o.joinRule,
            ...(o.token ? { token: o.token } : {}),
            ...(adminToken ? { adminToken } : {}),
            ...(o.ports ? { allowedPorts: ports(o.ports) } : {}),
            ...(o.maxMembers !== undefined ? { maxMembers: parseIntArg(o.maxMembers, '--max-members', 0, 10_000) } : {}),
            ...(o.enterprise ? { enterprise: true } : {}),
            ...(o.identityRule ? { identityRule: readJsonFile(o.identityRule, 'identity rule') } : {}),
            ...(o.groupNetworks ? { groupNetworks: readJsonFile(o.groupNetworks, 'group mapping') as Record<string, number[]> } : {}),
            ...(o.networkAdminToken ? { networkAdminToken: o.networkAdminToken } : {}),
          });
          ctx.ok(r, `created network ${String(r.network_id)} "${name}" (join rule ${String(r.join_rule)}${r.enterprise ? ', enterprise' : ''})`);
        },
      ),
    );

  net
    .command('join <network>')
    .description('join a network (ID or name); identity networks need one proof')
    .option('--token <t>', 'join token (join rule "token")')
    .option('--oidc-token <file>', 'OIDC JWT in FILE (the daemon reads it); - reads it from stdin')
    .option('--oidc-token-command <cmd>', 'command printing an OIDC JWT (the daemon runs it, also to renew)')
    .option('--jwt-svid <file>', 'SPIFFE JWT-SVID in FILE')
    .option('--svid <cert>', 'SPIFFE X.509-SVID chain (PEM, leaf first)')
    .option('--svid-key <key>', 'private key of the SVID (PEM)')
    .option('--cert <cert>', 'certificate chain from the enterprise CA (PEM, leaf first)')
    .option('--cert-key <key>', 'private key of the certificate (PEM)')
    .option('--ldap-user <user>', 'LDAP user name')
    .option('--ldap-password-file <file>', 'file holding the LDAP password')
    .option('--ldap-password-env <var>', 'environment variable holding the LDAP password')
    .option('--webhook-credential <x>', 'credential for a webhook join rule')
    .option('--webhook-credential-file <file>', 'file holding the webhook credential')
    .option('--keep', 'the daemon keeps the proof source (files/command), renews tokens and re-joins after a registry restart')
    .addHelpText(
      'after',
      '\nExamples:\n  pilotctl network join 7 --oidc-token /run/secrets/token\n  pilotctl network join agents --svid svid.pem --svid-key svid.key\n  pilotctl network join corp --ldap-user alice --ldap-password-file ~/.ldap-pw\n',
    )
    .action(
      action(async (ctx: Ctx, id: string, o: JoinFlags) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        const r = await pilot.network.join(n, joinOptionsFromFlags(o));
        const ext = typeof r.external_id === 'string' ? ` as ${r.external_id}` : '';
        const role = typeof r.role === 'string' ? ` (role ${r.role})` : '';
        ctx.ok(r, `joined network ${n}${ext}${role}`);
      }),
    );

  net
    .command('leave <network>')
    .description('leave a network')
    .action(
      action(async (ctx: Ctx, id: string) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        ctx.ok(await pilot.network.leave(n), `left network ${n}`);
      }),
    );

  net
    .command('members <network>')
    .description('list members with role (enterprise), external ID (identity joins), tags and online state')
    .action(
      action(async (ctx: Ctx, id: string) => {
        const pilot = await ctx.pilot();
        ctx.ok(await pilot.network.members(await networkId(pilot, id)), membersTable);
      }),
    );

  const memberOp = (name: string, desc: string, run: (p: Pilot, n: number, node: string) => Promise<Row>, human: (r: Row, n: number) => string): void => {
    net
      .command(`${name} <network> <node>`)
      .description(desc)
      .action(
        action(async (ctx: Ctx, id: string, node: string) => {
          const pilot = await ctx.pilot();
          const n = await networkId(pilot, id);
          const r = await run(pilot, n, node);
          ctx.ok(r, human(r, n));
        }),
      );
  };
  memberOp('promote', 'make a member an admin (owner only; enterprise networks)', (p, n, node) => p.network.promote(n, node), (r, n) => `node ${String(r.node_id)} is now ${String(r.role)} of network ${n}`);
  memberOp('demote', 'make an admin a member (owner only; enterprise networks)', (p, n, node) => p.network.demote(n, node), (r, n) => `node ${String(r.node_id)} is now ${String(r.role)} of network ${n}`);
  net
    .command('kick <network> <node>')
    .description('remove a member (owner/admin, or --admin-token); its sessions on the network close at once')
    .option('--admin-token <t>', 'act with the registry admin token instead of this node\'s role')
    .action(
      action(async (ctx: Ctx, id: string, node: string, o: { adminToken?: string }) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        const r = await pilot.network.kick(n, node, o.adminToken ? { adminToken: o.adminToken } : {});
        ctx.ok(r, `node ${String(r.node_id)} removed from network ${n}`);
      }),
    );
  memberOp('transfer', 'hand ownership to a member (owner only; you become admin)', (p, n, node) => p.network.transfer(n, node), (r, n) => `node ${String(r.owner_id)} now owns network ${n}; node ${String(r.previous_owner_id)} is admin`);
  net
    .command('role <network> [node]')
    .description("show this node's (or a member's) role on an enterprise network")
    .action(
      action(async (ctx: Ctx, id: string, node?: string) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        const r = await pilot.network.role(n, node);
        ctx.ok(r, `node ${String(r.node_id)}: ${String(r.role)}`);
      }),
    );

  net
    .command('invite <network> <node>')
    .description('invite a node to an enterprise network (owner/admin); it accepts or rejects')
    .option('--ttl <duration>', 'invite lifetime, e.g. 1h, 7d (default 7 days)')
    .action(
      action(async (ctx: Ctx, id: string, node: string, o: { ttl?: string }) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        let ttlS: number | undefined;
        if (o.ttl) {
          const d = /^(\d+)d$/.exec(o.ttl.trim());
          ttlS = d ? Number(d[1]) * 86_400 : Math.round(parseDuration(o.ttl) / 1000);
        }
        const r = await pilot.network.invite(n, node, ttlS !== undefined ? { ttlS } : {});
        ctx.ok(r, `invite to network ${n} for node ${String(r.node_id)}: ${String(r.status)} (expires ${new Date(Number(r.expires_at) * 1000).toISOString()})`);
      }),
    );
  net
    .command('invites')
    .description('list invites waiting for this node')
    .action(
      action(async (ctx: Ctx) => {
        const invites = await (await ctx.pilot()).network.invites();
        ctx.ok({ invites }, () => table(invites as Row[]));
      }),
    );
  net
    .command('accept <network>')
    .description('accept an invite (joins as member)')
    .action(
      action(async (ctx: Ctx, id: string) => {
        const n = parseIntArg(id, 'network', 1, 65535);
        ctx.ok(await (await ctx.pilot()).network.acceptInvite(n), `joined network ${n}`);
      }),
    );
  net
    .command('reject <network>')
    .description('reject an invite')
    .action(
      action(async (ctx: Ctx, id: string) => {
        const n = parseIntArg(id, 'network', 1, 65535);
        ctx.ok(await (await ctx.pilot()).network.rejectInvite(n), `invite to network ${n} rejected`);
      }),
    );

  net
    .command('tags <network> <node> [tags...]')
    .description("set a member's per-network tags (owner/admin); no tags clears them")
    .action(
      action(async (ctx: Ctx, id: string, node: string, tags: string[] = []) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        const r = await pilot.network.setMemberTags(n, node, tags);
        ctx.ok(r, `tags of node ${String(r.node_id)} on network ${n}: ${((r.tags as string[] | undefined) ?? []).join(', ') || '(none)'}`);
      }),
    );

  net
    .command('enterprise <network> <on|off>')
    .description('turn enterprise on or off (owner, or --admin-token); off erases roles and invites')
    .option('--admin-token <t>', 'act with the registry admin token')
    .action(
      action(async (ctx: Ctx, id: string, state: string, o: { adminToken?: string }) => {
        if (state !== 'on' && state !== 'off') throw new CliError('invalid_argument', 'say on or off');
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        ctx.ok(await pilot.network.setEnterprise(n, state === 'on', o.adminToken ? { adminToken: o.adminToken } : {}), `network ${n}: enterprise ${state}`);
      }),
    );

  net
    .command('join-rule <network> <rule>')
    .description('change the join rule (owner/admin of an enterprise network): open | token | invite | oidc | spiffe | ca | ldap | webhook')
    .option('--token <t>', 'join token (rule "token")')
    .option('--identity-rule <file>', 'identity rule JSON (registry/identity/README.md); - reads stdin')
    .option('--group-networks <file>', 'JSON {group: [network IDs]}')
    .action(
      action(async (ctx: Ctx, id: string, rule: string, o: { token?: string; identityRule?: string; groupNetworks?: string }) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        const r = await pilot.network.setJoinRule(n, rule, {
          ...(o.token ? { token: o.token } : {}),
          ...(o.identityRule ? { identityRule: readJsonFile(o.identityRule, 'identity rule') } : {}),
          ...(o.groupNetworks ? { groupNetworks: readJsonFile(o.groupNetworks, 'group mapping') as Record<string, number[]> } : {}),
        });
        ctx.ok(r, `network ${n}: join rule ${String(r.join_rule)}`);
      }),
    );

  net
    .command('policy <network>')
    .description('show the network policy, or set it (owner/admin) with --ports / --max-members; daemons apply port changes at once')
    .option('--ports <list>', 'allowed ports, comma separated ("" = all)')
    .option('--max-members <n>', 'membership cap (0 = none)')
    .action(
      action(async (ctx: Ctx, id: string, o: { ports?: string; maxMembers?: string }) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        if (o.ports === undefined && o.maxMembers === undefined) return ctx.ok(await pilot.network.policy(n));
        const r = await pilot.network.setPolicy(n, {
          ...(o.ports !== undefined ? { allowedPorts: ports(o.ports) } : {}),
          ...(o.maxMembers !== undefined ? { maxMembers: parseIntArg(o.maxMembers, '--max-members', 0, 10_000) } : {}),
        });
        ctx.ok(r);
      }),
    );

  net
    .command('preassign <network> <external_id> <role>')
    .description('give the node later admitted with this external ID a role: admin | member | none (removes)')
    .action(
      action(async (ctx: Ctx, id: string, ext: string, role: string) => {
        if (!['admin', 'member', 'none'].includes(role)) throw new CliError('invalid_argument', 'role must be admin, member or none');
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        ctx.ok(await pilot.network.preassign(n, ext, role === 'none' ? null : (role as 'admin' | 'member')));
      }),
    );

  net
    .command('admin-token <network> <token>')
    .description('set ("" clears) the network\'s own admin token (owner; ≥ 16 characters)')
    .action(
      action(async (ctx: Ctx, id: string, token: string) => {
        const pilot = await ctx.pilot();
        const n = await networkId(pilot, id);
        ctx.ok(await pilot.network.setAdminToken(n, token), token ? `network ${n}: admin token set` : `network ${n}: admin token cleared`);
      }),
    );

  net
    .command('kept')
    .description('memberships the daemon keeps (joined with --keep): proof source and token expiry')
    .action(
      action(async (ctx: Ctx) => {
        const kept = await (await ctx.pilot()).network.kept();
        ctx.ok({ kept }, () => table(kept as Row[]));
      }),
    );

  // ----- key ---------------------------------------------------------------------------------------
  const key = program.command('key').description("this node's Ed25519 key: info, rotate (keeps the node ID), expiry");
  key
    .command('info')
    .description('created, rotated, rotate count, expiry, age')
    .action(
      action(async (ctx: Ctx) => {
        const r = await (await ctx.pilot()).key.info();
        ctx.ok(r, (d: Row) => {
          const out = { ...d };
          for (const k of ['created_at', 'rotated_at', 'expires_at']) if (typeof out[k] === 'number') out[k] = new Date((out[k] as number) * 1000).toISOString();
          return formatHuman(out);
        });
      }),
    );
  key
    .command('rotate')
    .description('new key, same node ID: the old key signs the change; the identity file is replaced atomically; sessions re-key')
    .action(
      action(async (ctx: Ctx) => {
        const r = await (await ctx.pilot()).key.rotate();
        ctx.ok(r, `key rotated: node ${String(r.node_id)} now has public key ${String(r.public_key)}`);
      }),
    );
  key
    .command('expire <when>')
    .description('set the key expiry: 30d, 12h, an RFC 3339 time, a unix time, or never (clearing needs --admin-token)')
    .option('--admin-token <t>', 'registry admin token (needed to clear or extend)')
    .action(
      action(async (ctx: Ctx, when: string, o: { adminToken?: string }) => {
        const at = parseExpiry(when);
        const adminToken = o.adminToken ?? (at === null ? process.env.PILOT_ADMIN_TOKEN : undefined);
        const r = await (await ctx.pilot()).key.setExpiry(at, adminToken ? { adminToken } : {});
        ctx.ok(r, at === null ? 'key expiry cleared' : `key expires at ${new Date(at * 1000).toISOString()}`);
      }),
    );
}

