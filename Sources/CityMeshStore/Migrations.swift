import GRDB

/// The store's migrations. A migration is never modified once it has shipped; each is named by a
/// string and uses no app types, so an old database always upgrades the same way.
enum Migrations {
    static func make() -> DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-initial") { db in
            try db.execute(sql: """
                CREATE TABLE node_state (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    city TEXT NOT NULL,
                    next_seq INTEGER NOT NULL,
                    last_hlc INTEGER NOT NULL
                );
                CREATE TABLE datasets (
                    id INTEGER PRIMARY KEY,
                    owner TEXT NOT NULL,
                    name TEXT NOT NULL,
                    schema TEXT NOT NULL,
                    created_at TEXT NOT NULL,
                    live_count INTEGER NOT NULL DEFAULT 0,
                    last_seq INTEGER NOT NULL DEFAULT 0,
                    UNIQUE (owner, name)
                );
                -- seq is the rowid: the table is ordered by change (the replication cursor) and
                -- appends at its end; (dataset, key) finds a record.
                CREATE TABLE records (
                    seq INTEGER PRIMARY KEY,
                    dataset INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
                    key TEXT NOT NULL,
                    live INTEGER NOT NULL,
                    state BLOB NOT NULL
                );
                CREATE UNIQUE INDEX records_by_key ON records (dataset, key);
                CREATE TABLE tokens (
                    id TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    hash BLOB NOT NULL UNIQUE,
                    created_at TEXT NOT NULL,
                    revoked_at TEXT
                );
                """)
        }
        m.registerMigration("v2-ledger") { db in
            try db.execute(sql: """
                -- The accountability ledger: append-only. idx is the entry's index in the Merkle
                -- tree; entry holds its exact bytes; leaf is SHA-256(0x00 || entry) as computed
                -- when it was appended. kind/time/peer/dataset are copies for filtering only.
                CREATE TABLE ledger (
                    idx INTEGER PRIMARY KEY,
                    entry BLOB NOT NULL,
                    leaf BLOB NOT NULL,
                    kind TEXT NOT NULL,
                    time TEXT NOT NULL,
                    peer TEXT,
                    dataset TEXT
                );
                CREATE INDEX ledger_by_time ON ledger (time);
                -- Signed checkpoints (C2SP signed notes), one per published tree size.
                CREATE TABLE ledger_checkpoints (
                    size INTEGER PRIMARY KEY,
                    note TEXT NOT NULL,
                    created_at TEXT NOT NULL
                );
                """)
        }
        m.registerMigration("v3-policy") { db in
            try db.execute(sql: """
                -- Every applied version of the sharing policy (docs/policy.md), kept: the YAML as
                -- applied, its SHA-256, who applied it and when, and the node's signed note over them.
                CREATE TABLE policy_versions (
                    version INTEGER PRIMARY KEY,
                    document TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    applied_by TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    signed_note TEXT
                );
                """)
        }
        m.registerMigration("v4-agreements") { db in
            try db.execute(sql: """
                -- Sharing agreements, on both sides: the owner's signed offer, the member's signed
                -- response, the owner's signed revocation (each the JSON of Agreement.Signed).
                CREATE TABLE agreements (
                    offer_id TEXT PRIMARY KEY,
                    owner TEXT NOT NULL,
                    share TEXT NOT NULL,
                    member TEXT NOT NULL,
                    dataset TEXT NOT NULL,
                    offer TEXT NOT NULL,
                    response TEXT,
                    revocation TEXT,
                    received_at TEXT NOT NULL
                );
                CREATE INDEX agreements_by_pair ON agreements (owner, share, member);
                """)
        }
        return m
    }
}
