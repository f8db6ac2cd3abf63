import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { WalCheckpointer } from './checkpointer.js';
import { migrations, type Migration } from './migrations.js';
import type {
  EnterpriseSnapshot,
  HandshakeRequestRow,
  InviteRow,
  MemberExtRow,
  NetworkExtRow,
  NodeKeyRow,
  PreassignRow,
  Role,
  HandshakeResponseRow,
  JoinRuleName,
  MembershipRow,
  Mutation,
  NetworkRow,
  NodeRow,
  RegistryStore,
  StoreMeta,
  StoreSnapshot,
  TrustRow,
} from './types.js';

export interface SqliteStoreOptions {
  /** database file, or ':memory:' (tests) */
  path: string;
  /**
   * `full` (default): fsync the WAL on every commit, so acknowledged writes survive power loss.
   * `normal`: no fsync per commit; acknowledged writes survive a process crash (kill -9) but the last
   * ones may be lost on power loss.
   */
  sync?: 'full' | 'normal';
  /** rows per last-seen flush transaction (the flush yields to the event loop between chunks) */
  lastSeenChunk?: number;
  /**
   * WAL checkpoint period on a worker thread (checkpointer.ts; default 1000 ms). 0: SQLite's automatic
   * checkpoint, inside the commits on the event loop.
   */
  checkpointIntervalMs?: number;
  /** told when the checkpoint worker fails (SQLite's automatic checkpoint then takes over) */
  onCheckpointFailure?: (err: Error) => void;
}

interface Pending {
  mutations: readonly Mutation[];
  resolve: () => void;
  reject: (err: Error) => void;
}

type Statement = Database.Statement;

/** The WAL file is truncated back to this size when it restarts after a burst (bytes). */
const WAL_SIZE_LIMIT = 64 * 1024 * 1024;

/**
 * Embedded SQLite store (WAL mode). Group commit: commits requested in the same event-loop turn are
 * written in one transaction (one fsync) on the next `setImmediate`, in request order.
 */
export class SqliteStore implements RegistryStore {
  readonly description: string;
  private db: Database.Database | null = null;
  private queue: Pending[] = [];
  private flushScheduled = false;
  private closed = false;
  /** null for ':memory:' or with `checkpointIntervalMs: 0` */
  checkpointer: WalCheckpointer | null = null;
  private stmts!: Record<Mutation['kind'] | 'lastSeen' | 'preassign_clear' | 'invite_clear', Statement>;
  private applyTx!: (batches: Pending[]) => void;

  constructor(private readonly opts: SqliteStoreOptions) {
    this.description = `sqlite:${opts.path}`;
  }

  async open(): Promise<void> {
    if (this.opts.path !== ':memory:') mkdirSync(dirname(this.opts.path), { recursive: true, mode: 0o700 });
    const db = new Database(this.opts.path);
    this.db = db;
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${this.opts.sync === 'normal' ? 'NORMAL' : 'FULL'}`);
    db.pragma('foreign_keys = OFF');
    runMigrations(db, migrations);
    this.prepare(db);
    const interval = this.opts.checkpointIntervalMs ?? 1000;
    if (this.opts.path !== ':memory:' && interval > 0) {
      db.pragma('wal_autocheckpoint = 0');
      db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT}`);
      this.checkpointer = new WalCheckpointer(this.opts.path, interval, (err) => {
        this.db?.pragma('wal_autocheckpoint = 1000');
        this.opts.onCheckpointFailure?.(err);
      });
    }
  }

  private prepare(db: Database.Database): void {
    this.stmts = {
      meta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      node: db.prepare(
        `INSERT INTO nodes (id, public_key, owner, real_addr, public, hostname, tags, task_exec, polo_score, last_seen, deregistered, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, owner = excluded.owner, real_addr = excluded.real_addr,
           public = excluded.public, hostname = excluded.hostname, tags = excluded.tags, task_exec = excluded.task_exec,
           polo_score = excluded.polo_score, last_seen = excluded.last_seen, deregistered = excluded.deregistered,
           created_at = excluded.created_at`,
      ),
      network: db.prepare(
        `INSERT INTO networks (id, name, join_rule, token_hash, allowed_ports, max_members, owner_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, join_rule = excluded.join_rule, token_hash = excluded.token_hash,
           allowed_ports = excluded.allowed_ports, max_members = excluded.max_members, owner_id = excluded.owner_id,
           created_at = excluded.created_at`,
      ),
      network_delete: db.prepare('DELETE FROM networks WHERE id = ?'),
      member: db.prepare('INSERT INTO memberships (network_id, node_id, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      member_delete: db.prepare('DELETE FROM memberships WHERE network_id = ? AND node_id = ?'),
      trust: db.prepare(
        `INSERT INTO trust (a, b, a_consents, b_consents, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (a, b) DO UPDATE SET a_consents = excluded.a_consents, b_consents = excluded.b_consents`,
      ),
      trust_delete: db.prepare('DELETE FROM trust WHERE a = ? AND b = ?'),
      hs_request: db.prepare(
        `INSERT INTO handshake_requests (to_id, from_id, justification, ts) VALUES (?, ?, ?, ?)
         ON CONFLICT (to_id, from_id) DO UPDATE SET justification = excluded.justification, ts = excluded.ts`,
      ),
      hs_request_delete: db.prepare('DELETE FROM handshake_requests WHERE to_id = ? AND (? IS NULL OR from_id = ?)'),
      hs_response: db.prepare(
        `INSERT INTO handshake_responses (to_id, from_id, accept, ts) VALUES (?, ?, ?, ?)
         ON CONFLICT (to_id, from_id) DO UPDATE SET accept = excluded.accept, ts = excluded.ts`,
      ),
      hs_response_delete: db.prepare('DELETE FROM handshake_responses WHERE to_id = ?'),
      lastSeen: db.prepare('UPDATE nodes SET last_seen = ? WHERE id = ?'),
      net_ext: db.prepare(
        `INSERT INTO network_ext (network_id, enterprise, identity_rule, admin_token_hash, group_networks) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (network_id) DO UPDATE SET enterprise = excluded.enterprise, identity_rule = excluded.identity_rule,
           admin_token_hash = excluded.admin_token_hash, group_networks = excluded.group_networks`,
      ),
      net_ext_delete: db.prepare('DELETE FROM network_ext WHERE network_id = ?'),
      member_ext: db.prepare(
        `INSERT INTO member_ext (network_id, node_id, role, external_id, tags) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (network_id, node_id) DO UPDATE SET role = excluded.role, external_id = excluded.external_id, tags = excluded.tags`,
      ),
      member_ext_delete: db.prepare('DELETE FROM member_ext WHERE network_id = ? AND node_id = ?'),
      member_ext_clear: db.prepare('DELETE FROM member_ext WHERE network_id = ?'),
      preassign: db.prepare(
        `INSERT INTO role_preassign (network_id, external_id, role) VALUES (?, ?, ?)
         ON CONFLICT (network_id, external_id) DO UPDATE SET role = excluded.role`,
      ),
      preassign_delete: db.prepare('DELETE FROM role_preassign WHERE network_id = ? AND external_id = ?'),
      preassign_clear: db.prepare('DELETE FROM role_preassign WHERE network_id = ?'),
      invite: db.prepare(
        `INSERT INTO invites (to_id, network_id, from_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (to_id, network_id) DO UPDATE SET from_id = excluded.from_id, created_at = excluded.created_at, expires_at = excluded.expires_at`,
      ),
      invite_delete: db.prepare('DELETE FROM invites WHERE to_id = ? AND network_id = ?'),
      invite_clear: db.prepare('DELETE FROM invites WHERE network_id = ?'),
      node_key: db.prepare(
        `INSERT INTO node_keys (node_id, key_created_at, rotated_at, rotate_count, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (node_id) DO UPDATE SET key_created_at = excluded.key_created_at, rotated_at = excluded.rotated_at,
           rotate_count = excluded.rotate_count, expires_at = excluded.expires_at`,
      ),
    };
    this.applyTx = db.transaction((batches: Pending[]) => {
      for (const b of batches) for (const m of b.mutations) this.applyOne(m);
    });
  }

  private applyOne(m: Mutation): void {
    const s = this.stmts;
    switch (m.kind) {
      case 'meta':
        s.meta.run('next_node', m.meta.nextNodeId);
        s.meta.run('next_net', m.meta.nextNetworkId);
        return;
      case 'node': {
        const r = m.row;
        s.node.run(r.id, r.publicKey, r.owner, r.realAddr, +r.isPublic, r.hostname, JSON.stringify(r.tags), +r.taskExec, r.poloScore, r.lastSeen, +r.deregistered, r.createdAt);
        return;
      }
      case 'network': {
        const r = m.row;
        s.network.run(r.id, r.name, r.joinRule, r.tokenHash, JSON.stringify(r.allowedPorts), r.maxMembers, r.ownerId, r.createdAt);
        return;
      }
      case 'network_delete':
        s.network_delete.run(m.id);
        return;
      case 'member':
        s.member.run(m.row.networkId, m.row.nodeId, m.row.joinedAt);
        return;
      case 'member_delete':
        s.member_delete.run(m.networkId, m.nodeId);
        return;
      case 'trust':
        s.trust.run(m.row.a, m.row.b, +m.row.aConsents, +m.row.bConsents, m.row.createdAt);
        return;
      case 'trust_delete':
        s.trust_delete.run(m.a, m.b);
        return;
      case 'hs_request':
        s.hs_request.run(m.row.toId, m.row.fromId, m.row.justification, m.row.ts);
        return;
      case 'hs_request_delete':
        s.hs_request_delete.run(m.toId, m.fromId ?? null, m.fromId ?? null);
        return;
      case 'hs_response':
        s.hs_response.run(m.row.toId, m.row.fromId, +m.row.accept, m.row.ts);
        return;
      case 'hs_response_delete':
        s.hs_response_delete.run(m.toId);
        return;
      case 'net_ext': {
        const r = m.row;
        s.net_ext.run(r.networkId, +r.enterprise, r.identityRule, r.adminTokenHash, r.groupNetworks === null ? null : JSON.stringify(r.groupNetworks));
        return;
      }
      case 'net_ext_delete':
        s.net_ext_delete.run(m.networkId);
        s.member_ext_clear.run(m.networkId);
        s.preassign_clear.run(m.networkId);
        s.invite_clear.run(m.networkId);
        return;
      case 'member_ext':
        s.member_ext.run(m.row.networkId, m.row.nodeId, m.row.role, m.row.externalId, JSON.stringify(m.row.tags));
        return;
      case 'member_ext_delete':
        s.member_ext_delete.run(m.networkId, m.nodeId);
        return;
      case 'member_ext_clear':
        s.member_ext_clear.run(m.networkId);
        return;
      case 'preassign':
        s.preassign.run(m.row.networkId, m.row.externalId, m.row.role);
        return;
      case 'preassign_delete':
        s.preassign_delete.run(m.networkId, m.externalId);
        return;
      case 'invite':
        s.invite.run(m.row.toId, m.row.networkId, m.row.fromId, m.row.createdAt, m.row.expiresAt);
        return;
      case 'invite_delete':
        s.invite_delete.run(m.toId, m.networkId);
        return;
      case 'node_key':
        s.node_key.run(m.row.nodeId, m.row.keyCreatedAt, m.row.rotatedAt, m.row.rotateCount, m.row.expiresAt);
        return;
    }
  }

  async load(): Promise<StoreSnapshot> {
    const db = this.requireDb();
    const meta = new Map((db.prepare('SELECT key, value FROM meta').all() as Array<{ key: string; value: number }>).map((r) => [r.key, r.value]));
    const nodes = (db.prepare('SELECT * FROM nodes ORDER BY id').all() as Array<Record<string, unknown>>).map(nodeFromRow);
    const networks = (db.prepare('SELECT * FROM networks ORDER BY id').all() as Array<Record<string, unknown>>).map(networkFromRow);
    const memberships = (db.prepare('SELECT network_id, node_id, joined_at FROM memberships').all() as Array<Record<string, number>>).map(
      (r): MembershipRow => ({ networkId: r.network_id!, nodeId: r.node_id!, joinedAt: r.joined_at! }),
    );
    const trust = (db.prepare('SELECT * FROM trust').all() as Array<Record<string, number>>).map(
      (r): TrustRow => ({ a: r.a!, b: r.b!, aConsents: r.a_consents === 1, bConsents: r.b_consents === 1, createdAt: r.created_at! }),
    );
    const handshakeRequests = (db.prepare('SELECT * FROM handshake_requests ORDER BY ts').all() as Array<Record<string, unknown>>).map(
      (r): HandshakeRequestRow => ({ toId: r.to_id as number, fromId: r.from_id as number, justification: r.justification as string, ts: r.ts as number }),
    );
    const handshakeResponses = (db.prepare('SELECT * FROM handshake_responses ORDER BY ts').all() as Array<Record<string, number>>).map(
      (r): HandshakeResponseRow => ({ toId: r.to_id!, fromId: r.from_id!, accept: r.accept === 1, ts: r.ts! }),
    );
    const m: StoreMeta = { nextNodeId: meta.get('next_node') ?? 1, nextNetworkId: meta.get('next_net') ?? 1 };
    return { meta: m, nodes, networks, memberships, trust, handshakeRequests, handshakeResponses, enterprise: loadEnterprise(db) };
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.closed || !this.db) return Promise.reject(new Error('store is closed'));
    if (mutations.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ mutations, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batches = this.queue;
    this.queue = [];
    if (batches.length === 0) return;
    try {
      this.applyTx(batches);
    } catch (err) {
      for (const b of batches) b.reject(err as Error);
      return;
    }
    for (const b of batches) b.resolve();
  }

  /**
   * Last-seen values are not acknowledged state, so their transactions skip the fsync (synchronous
   * NORMAL); the next acknowledged commit's fsync covers them. Chunks of `lastSeenChunk` rows (64: a
   * 500-row chunk held the event loop ≈10 ms under load) with a yield between keep request latency low
   * while a big batch is written.
   */
  async flushLastSeen(unsorted: ReadonlyArray<readonly [number, number]>): Promise<void> {
    const db = this.requireDb();
    // in node-ID (rowid) order a chunk's rows share a few B-tree pages instead of touching one page
    // each (25,000 of 100,000 rows: ≈ 110 ms of event-loop time instead of ≈ 250 ms)
    const entries = [...unsorted].sort((a, b) => a[0] - b[0]);
    const chunk = this.opts.lastSeenChunk ?? 64;
    const full = this.opts.sync !== 'normal';
    const tx = db.transaction((rows: ReadonlyArray<readonly [number, number]>) => {
      for (const [id, seen] of rows) this.stmts.lastSeen.run(seen, id);
    });
    for (let i = 0; i < entries.length; i += chunk) {
      if (i > 0) await new Promise<void>((r) => setImmediate(r));
      if (!this.db) return;
      if (full) db.pragma('synchronous = NORMAL');
      try {
        tx(entries.slice(i, i + chunk));
      } finally {
        if (full) db.pragma('synchronous = FULL');
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.queue.length > 0) this.flush();
    await this.checkpointer?.stop();
    this.db?.close();
    this.db = null;
  }

  private requireDb(): Database.Database {
    if (!this.db) throw new Error('store is not open');
    return this.db;
  }
}

export function runMigrations(db: Database.Database, list: readonly Migration[]): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
  let current = row?.version ?? 0;
  if (!row) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
  const latest = list.length ? list[list.length - 1]!.version : 0;
  if (current > latest) throw new Error(`database schema version ${current} is newer than this build (${latest})`);
  for (const m of list) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('UPDATE schema_version SET version = ?').run(m.version);
    })();
    current = m.version;
  }
  return current;
}

type Row = Record<string, unknown>;

function loadEnterprise(db: Database.Database): EnterpriseSnapshot {
  const all = (sql: string): Row[] => db.prepare(sql).all() as Row[];
  return {
    networks: all('SELECT * FROM network_ext ORDER BY network_id').map(
      (r): NetworkExtRow => ({
        networkId: r.network_id as number,
        enterprise: r.enterprise === 1,
        identityRule: (r.identity_rule as string | null) ?? null,
        adminTokenHash: (r.admin_token_hash as string | null) ?? null,
        groupNetworks: r.group_networks === null ? null : (JSON.parse(r.group_networks as string) as Record<string, number[]>),
      }),
    ),
    members: all('SELECT * FROM member_ext').map(
      (r): MemberExtRow => ({
        networkId: r.network_id as number,
        nodeId: r.node_id as number,
        role: r.role as Role,
        externalId: (r.external_id as string | null) ?? null,
        tags: JSON.parse(r.tags as string) as string[],
      }),
    ),
    preassign: all('SELECT * FROM role_preassign').map(
      (r): PreassignRow => ({ networkId: r.network_id as number, externalId: r.external_id as string, role: r.role as PreassignRow['role'] }),
    ),
    invites: all('SELECT * FROM invites ORDER BY created_at').map(
      (r): InviteRow => ({ toId: r.to_id as number, networkId: r.network_id as number, fromId: r.from_id as number, createdAt: r.created_at as number, expiresAt: r.expires_at as number }),
    ),
    keys: all('SELECT * FROM node_keys').map(
      (r): NodeKeyRow => ({
        nodeId: r.node_id as number,
        keyCreatedAt: r.key_created_at as number,
        rotatedAt: (r.rotated_at as number | null) ?? null,
        rotateCount: r.rotate_count as number,
        expiresAt: (r.expires_at as number | null) ?? null,
      }),
    ),
  };
}

function nodeFromRow(r: Record<string, unknown>): NodeRow {
  return {
    id: r.id as number,
    publicKey: r.public_key as string,
    owner: (r.owner as string | null) ?? null,
    realAddr: r.real_addr as string,
    isPublic: r.public === 1,
    hostname: (r.hostname as string | null) ?? null,
    tags: JSON.parse(r.tags as string) as string[],
    taskExec: r.task_exec === 1,
    poloScore: r.polo_score as number,
    lastSeen: r.last_seen as number,
    deregistered: r.deregistered === 1,
    createdAt: r.created_at as number,
  };
}

function networkFromRow(r: Record<string, unknown>): NetworkRow {
  return {
    id: r.id as number,
    name: r.name as string,
    joinRule: r.join_rule as JoinRuleName,
    tokenHash: (r.token_hash as string | null) ?? null,
    allowedPorts: JSON.parse(r.allowed_ports as string) as number[],
    maxMembers: r.max_members as number,
    ownerId: (r.owner_id as number | null) ?? null,
    createdAt: r.created_at as number,
  };
}
