import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { migrations, type Migration } from './migrations.js';
import type {
  HandshakeRequestRow,
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
}

interface Pending {
  mutations: readonly Mutation[];
  resolve: () => void;
  reject: (err: Error) => void;
}

type Statement = Database.Statement;

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
  private stmts!: Record<Mutation['kind'] | 'lastSeen', Statement>;
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
    return { meta: m, nodes, networks, memberships, trust, handshakeRequests, handshakeResponses };
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
   * NORMAL); the next acknowledged commit's fsync covers them. Chunks of `lastSeenChunk` rows (≈2 ms
   * each) with a yield between keep request latency low while a big batch is written.
   */
  async flushLastSeen(entries: ReadonlyArray<readonly [number, number]>): Promise<void> {
    const db = this.requireDb();
    const chunk = this.opts.lastSeenChunk ?? 500;
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
