/**
 * Ordered schema migrations for the SQLite store. `schema_version` holds the number of the last applied
 * migration; each migration runs in its own transaction. Append only: never edit a shipped migration.
 * The SQL sticks to what PostgreSQL also accepts where practical, so the PG store can share it.
 */
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    description: 'nodes, networks, memberships, trust, handshake inboxes',
    sql: `
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
      );
      CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        public_key TEXT NOT NULL,
        owner TEXT,
        real_addr TEXT NOT NULL,
        public INTEGER NOT NULL,
        hostname TEXT,
        tags TEXT NOT NULL,
        task_exec INTEGER NOT NULL,
        polo_score INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        deregistered INTEGER NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE networks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        join_rule TEXT NOT NULL,
        token_hash TEXT,
        allowed_ports TEXT NOT NULL,
        max_members INTEGER NOT NULL,
        owner_id INTEGER,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE memberships (
        network_id INTEGER NOT NULL,
        node_id INTEGER NOT NULL,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (network_id, node_id)
      ) WITHOUT ROWID;
      CREATE TABLE trust (
        a INTEGER NOT NULL,
        b INTEGER NOT NULL,
        a_consents INTEGER NOT NULL,
        b_consents INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (a, b)
      ) WITHOUT ROWID;
      CREATE TABLE handshake_requests (
        to_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        justification TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (to_id, from_id)
      ) WITHOUT ROWID;
      CREATE TABLE handshake_responses (
        to_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        accept INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (to_id, from_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    description: 'enterprise: network settings, member roles/external IDs/tags, RBAC pre-assignment, invites, key lifecycle',
    sql: `
      CREATE TABLE network_ext (
        network_id INTEGER PRIMARY KEY,
        enterprise INTEGER NOT NULL,
        identity_rule TEXT,
        admin_token_hash TEXT,
        group_networks TEXT
      );
      CREATE TABLE member_ext (
        network_id INTEGER NOT NULL,
        node_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        external_id TEXT,
        tags TEXT NOT NULL,
        PRIMARY KEY (network_id, node_id)
      ) WITHOUT ROWID;
      CREATE TABLE role_preassign (
        network_id INTEGER NOT NULL,
        external_id TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (network_id, external_id)
      ) WITHOUT ROWID;
      CREATE TABLE invites (
        to_id INTEGER NOT NULL,
        network_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (to_id, network_id)
      ) WITHOUT ROWID;
      CREATE TABLE node_keys (
        node_id INTEGER PRIMARY KEY,
        key_created_at INTEGER NOT NULL,
        rotated_at INTEGER,
        rotate_count INTEGER NOT NULL,
        expires_at INTEGER
      );
    `,
  },
];
