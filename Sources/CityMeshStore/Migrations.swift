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
        m.registerMigration("v5-replication") { db in
            try db.execute(sql: """
                -- Every change batch of every share this node is party to, as signed by its origin
                -- (docs/protocol.md §8): numbered per (share, origin), chained by hash, kept to be
                -- relayed to other members.
                CREATE TABLE share_batches (
                    share TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    hash BLOB NOT NULL,
                    records INTEGER NOT NULL,
                    bytes BLOB NOT NULL,
                    received_from TEXT,
                    received_at TEXT NOT NULL,
                    -- For a batch taken from a peer: the receipt that covers it (NULL until issued).
                    receipt TEXT,
                    PRIMARY KEY (share, origin, seq)
                ) WITHOUT ROWID;
                -- Deleted records, for tombstone collection without scanning live ones.
                CREATE INDEX records_dead ON records (dataset) WHERE live = 0;
                CREATE INDEX share_batches_unreceipted ON share_batches (received_at) WHERE received_from IS NOT NULL AND receipt IS NULL;
                -- Bilateral receipts this node is party to: as receiver (it signed the receipt) or
                -- as sender (it countersigned). A receipt is in the ledger once countersigned.
                CREATE TABLE receipts (
                    id TEXT PRIMARY KEY NOT NULL,
                    peer TEXT NOT NULL,
                    share TEXT NOT NULL,
                    role TEXT NOT NULL,
                    receipt TEXT NOT NULL,
                    countersign TEXT,
                    created_at TEXT NOT NULL
                );
                -- Where cutting this node's own batches of a share has got to: the last local
                -- record sequence number read, and the clock of the last own cell sent.
                CREATE TABLE share_cursors (
                    share TEXT PRIMARY KEY NOT NULL,
                    dataset TEXT NOT NULL,
                    record_seq INTEGER NOT NULL,
                    emitted_hlc INTEGER NOT NULL  -- unused since the outbox (always 0)
                );
                -- A member's own writes to replicas, as written, until cut into a batch: a write a
                -- concurrent one overwrites here must still reach the others (as a conflict).
                -- `seen` is what this node had merged of each city when it wrote.
                CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY,
                    dataset TEXT NOT NULL,
                    key TEXT NOT NULL,
                    state BLOB NOT NULL,
                    seen TEXT NOT NULL
                );
                -- The owner's latest signed roster of each share this node is a member of.
                CREATE TABLE share_rosters (
                    share TEXT PRIMARY KEY NOT NULL,
                    issued INTEGER NOT NULL,
                    document TEXT NOT NULL
                );
                -- Certificates (DER) of cities whose signatures this node has to check, learnt
                -- from mTLS handshakes and from relays; each verified against the federation CA.
                CREATE TABLE city_certificates (
                    city TEXT PRIMARY KEY NOT NULL,
                    der BLOB NOT NULL,
                    updated_at TEXT NOT NULL
                );
                -- Per dataset and writing city: the greatest clock of that city's cells merged
                -- here (the `seen` map a batch carries).
                CREATE TABLE seen_clocks (
                    dataset TEXT NOT NULL,
                    city TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    PRIMARY KEY (dataset, city)
                ) WITHOUT ROWID;
                -- Per share and origin: the `seen` map of the last batch taken from it.
                CREATE TABLE origin_seen (
                    share TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    seen TEXT NOT NULL,
                    PRIMARY KEY (share, origin)
                ) WITHOUT ROWID;
                -- Overwritten concurrent writes, kept for an admin to see and settle.
                CREATE TABLE conflicts (
                    id INTEGER PRIMARY KEY,
                    dataset TEXT NOT NULL,
                    key TEXT NOT NULL,
                    field TEXT NOT NULL,
                    value TEXT,
                    stamp TEXT NOT NULL,
                    city TEXT NOT NULL,
                    winner_value TEXT,
                    winner_stamp TEXT NOT NULL,
                    winner_city TEXT NOT NULL,
                    found_at TEXT NOT NULL,
                    resolved_at TEXT,
                    resolved_by TEXT,
                    UNIQUE (dataset, key, field, stamp)
                );
                -- Checkpoints peers showed us (witnessing): the latest per city, and any pair
                -- that proves a fork.
                CREATE TABLE peer_checkpoints (
                    city TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    root TEXT NOT NULL,
                    note TEXT NOT NULL,
                    received_at TEXT NOT NULL,
                    PRIMARY KEY (city, size)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v6-cosignatures") { db in
            try db.execute(sql: """
                -- Witnesses' cosignatures (C2SP tlog-cosignature/v1) of this node's checkpoints:
                -- the newest per checkpoint size and witness, with the certificate the witness
                -- connected with, so a bundle can carry what an auditor needs to check them.
                CREATE TABLE ledger_cosignatures (
                    size INTEGER NOT NULL,
                    witness TEXT NOT NULL,
                    city TEXT NOT NULL,
                    timestamp INTEGER NOT NULL,
                    line TEXT NOT NULL,
                    certificate TEXT NOT NULL,
                    PRIMARY KEY (size, witness)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v7-sent-batches") { db in
            try db.execute(sql: """
                -- Which batches this node sent to which peer, as runs of batch numbers per share and
                -- origin (adjacent runs merged): a receipt is countersigned only for batches sent.
                CREATE TABLE sent_batches (
                    share TEXT NOT NULL,
                    peer TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    first INTEGER NOT NULL,
                    last INTEGER NOT NULL,
                    PRIMARY KEY (share, peer, origin, first)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v8-share-visibility") { db in
            try db.execute(sql: """
                -- The owner's memory of which keys of a filtered share its members hold (sent live
                -- and not retracted or deleted since), so a row that leaves the filter is retracted
                -- and the deletion of a row they never saw is not sent. A share is listed in
                -- share_visibility once its keys were set up (shares without a filter need none).
                CREATE TABLE share_visible (
                    share TEXT NOT NULL,
                    key TEXT NOT NULL,
                    PRIMARY KEY (share, key)
                ) WITHOUT ROWID;
                CREATE TABLE share_visibility (
                    share TEXT PRIMARY KEY
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v9-share-terms") { db in
            try db.execute(sql: """
                -- The terms (view and filter) each owned share was last cut under. When they change,
                -- the owner goes over what it sent under the old ones: the cursor goes back to 0 and
                -- records up to rescan_until are re-judged (retracted, sent whole, or sent the cells
                -- of `added` fields) instead of sent again.
                CREATE TABLE share_terms (
                    share TEXT PRIMARY KEY,
                    fields TEXT NOT NULL,
                    filter TEXT,
                    rescan_until INTEGER NOT NULL DEFAULT 0,
                    added TEXT NOT NULL DEFAULT '[]'
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v10-node-secrets") { db in
            try db.execute(sql: """
                -- Secrets of this node that never leave it: `ledger` (32 random bytes), from which the
                -- keys of the ledger's keyed hashes are derived (LedgerKey).
                CREATE TABLE node_secrets (
                    name TEXT PRIMARY KEY,
                    value BLOB NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v11-erasures") { db in
            try db.execute(sql: """
                -- Keys deleted here whose old values may still be in stored batches (docs/protocol.md §8
                -- "Compaction"): records of the key no newer than `hlc` are compacted out of every
                -- stored batch of the dataset's shares; with `collected` (the tombstone was collected:
                -- every party holds it) the deletion's own records too, and then the row goes.
                CREATE TABLE erasures (
                    dataset TEXT NOT NULL,
                    key TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    collected INTEGER NOT NULL DEFAULT 0,
                    done INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (dataset, key)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v12-share-erasures") { db in
            try db.execute(sql: """
                -- What left one share's view whose old values may still be in its stored batches
                -- (docs/protocol.md §7d "Compaction"): a retracted key (records of it no newer than
                -- `hlc` are compacted), or, with key '' and `keep`, a narrowed view (records with a
                -- cell of a field not in `keep`, comma-separated names, are compacted).
                CREATE TABLE share_erasures (
                    share TEXT NOT NULL,
                    key TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    keep TEXT,
                    done INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (share, key)
                ) WITHOUT ROWID;
                -- The owner's rescan under narrowed terms sends held records whole.
                ALTER TABLE share_terms ADD COLUMN narrowed INTEGER NOT NULL DEFAULT 0;
                """)
        }
        m.registerMigration("v13-pending-erasures") { db in
            try db.execute(sql: """
                -- A send reads what waits for compaction in its share (`NodeStore.sendScreen`): only
                -- the pending rows, however many erasures are done.
                CREATE INDEX erasures_pending ON erasures (dataset) WHERE done = 0;
                CREATE INDEX share_erasures_pending ON share_erasures (share) WHERE done = 0;
                """)
        }
        m.registerMigration("v14-address-records") { db in
            try db.execute(sql: """
                -- The signed address records this node holds (docs/protocol.md §7c.1), its own
                -- included, each with the certificate it was checked against: after a restart the
                -- node dials the cities it shares with where they last said they were, and signs its
                -- own next record above the last one.
                CREATE TABLE address_records (
                    city TEXT PRIMARY KEY,
                    version INTEGER NOT NULL,
                    record BLOB NOT NULL,
                    certificate BLOB NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        return m
    }
}
