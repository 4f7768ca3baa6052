public import CityMeshCore
import Foundation
import GRDB

/// What one compaction pass did to one dataset's stored batches.
public struct CompactionResult: Sendable, Equatable {
    /// Records replaced by their digests.
    public var records = 0
    /// Batches rewritten.
    public var batches = 0
    /// Batches in the first layout (CMB1) that hold an erased record and cannot be compacted.
    public var legacy = 0
    /// Erasures the pass completed (keys).
    public var keys = 0
    public init() {}
}

extension NodeStore {
    /// Notes that `key` of `dataset` was deleted at `hlc` (inside the deletion's transaction).
    static func noteErasure(db: Database, dataset: DatasetID, key: String, hlc: HLC, collected: Bool = false) throws {
        try db.execute(
            sql: """
                INSERT INTO erasures (dataset, key, hlc, collected, done) VALUES (?, ?, ?, ?, 0)
                ON CONFLICT (dataset, key) DO UPDATE SET hlc = max(hlc, excluded.hlc), collected = max(collected, excluded.collected), done = 0
                """,
            arguments: [dataset.description, key, Int64(bitPattern: hlc.rawValue), collected ? 1 : 0])
    }

    /// Checkpoints the WAL and truncates it to nothing, so no earlier image of a page (with a
    /// value a compaction erased) is left in it. False when a reader kept it from finishing: try
    /// again later (`ReplicationService` does, every tick, until it succeeds).
    public func truncateWAL() async -> Bool {
        let row = try? await pool.writeWithoutTransaction { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        guard let row, let busy = row[0] as Int? else { return false }
        return busy == 0
    }

    /// Notes that `key` left `share`'s view (a retraction) holding stamps up to `hlc`: its records
    /// no newer than that leave the share's stored batches with the next pass.
    static func noteShareErasure(db: Database, share: String, key: String, hlc: HLC) throws {
        try db.execute(
            sql: """
                INSERT INTO share_erasures (share, key, hlc, done) VALUES (?, ?, ?, 0)
                ON CONFLICT (share, key) DO UPDATE SET hlc = max(hlc, excluded.hlc), done = 0
                """,
            arguments: [share, key, Int64(bitPattern: hlc.rawValue)])
    }

    /// Notes that `share`'s view narrowed to `keep`: records with a cell of another field leave its
    /// stored batches with the next pass.
    static func noteNarrowing(db: Database, share: String, keep: [String]) throws {
        try db.execute(
            sql: """
                INSERT INTO share_erasures (share, key, hlc, keep, done) VALUES (?, '', 0, ?, 0)
                ON CONFLICT (share, key) DO UPDATE SET keep = excluded.keep, done = 0
                """,
            arguments: [share, keep.sorted().joined(separator: ",")])
    }

    /// Erasures not compacted yet (deletions, and what left a share's view).
    public func pendingErasures() async throws -> Int {
        try await pool.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM erasures WHERE done = 0") ?? 0)
                + (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM share_erasures WHERE done = 0") ?? 0)
        }
    }

    /// What waits for compaction in `share` (nil: nothing known): a retracted key's clock, or with
    /// key '' a narrowing's kept fields.
    public func shareErasure(share: String, key: String) async throws -> (hlc: HLC, keep: [String]?, done: Bool)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT hlc, keep, done FROM share_erasures WHERE share = ? AND key = ?", arguments: [share, key]).map {
                (HLC(rawValue: UInt64(bitPattern: $0["hlc"] as Int64)), ($0["keep"] as String?).map { $0.split(separator: ",").map(String.init) }, ($0["done"] as Int) == 1)
            }
        }
    }

    /// What a send of `share`'s stored batches leaves out until the compaction pass has run
    /// (`Erasure.Screen`): deletions of `dataset` and retractions of `share` that wait for the
    /// pass, and the view a narrowing kept (also once its pass is done: a batch cut under the
    /// wider view may still arrive from a party that has not narrowed yet). A batch taken after
    /// a pass marks its erasures pending again in the transaction that keeps it, so a send never
    /// reads a screen older than the batches it sends. `view` is the share's view in force (field
    /// names): after a narrowing it decides which fields stay, so terms widened again later bring
    /// their fields back instead of having them screened out by the old narrowing.
    public func sendScreen(share: String, dataset: DatasetID, view: Set<String>?) async throws -> Erasure.Screen {
        try await pool.read { db in
            var screen = Erasure.Screen()
            let deleted = try Row.fetchCursor(db, sql: "SELECT key, hlc, collected FROM erasures WHERE dataset = ? AND done = 0", arguments: [dataset.description])
            while let row = try deleted.next() {
                screen.deleted[row["key"]] = .init(hlc: HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64)), collected: (row["collected"] as Int) == 1)
            }
            let retracted = try Row.fetchCursor(db, sql: "SELECT key, hlc FROM share_erasures WHERE share = ? AND done = 0 AND key <> ''", arguments: [share])
            while let row = try retracted.next() { screen.retracted[row["key"]] = HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64)) }
            if let keep = try String.fetchOne(db, sql: "SELECT keep FROM share_erasures WHERE share = ? AND key = ''", arguments: [share]) {
                screen.keep = view ?? Set(keep.split(separator: ",").map(String.init))
            }
            return screen
        }
    }

    /// Whether `key` of `dataset` waits for compaction (nil: no erasure is known for it).
    public func erasure(_ dataset: DatasetID, key: String) async throws -> (hlc: HLC, collected: Bool, done: Bool)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT hlc, collected, done FROM erasures WHERE dataset = ? AND key = ?", arguments: [dataset.description, key]).map {
                (HLC(rawValue: UInt64(bitPattern: $0["hlc"] as Int64)), ($0["collected"] as Int) == 1, ($0["done"] as Int) == 1)
            }
        }
    }

    /// One compaction pass over the stored batches of `shares` (share → its dataset; `views`: the
    /// view in force of the active ones, which a narrowing's fields yield to) for every
    /// pending erasure of their datasets (`Erasure.compacts` decides each record). The batches
    /// are read outside any write transaction (a pass over a large share's history must not
    /// hold up writes); the rewritten ones, the conflicts and pending writes of the erased keys,
    /// and `log`'s ledger entries are written in one short transaction with `secure_delete` on,
    /// so the old values' pages are overwritten, then the WAL is checkpointed and truncated, so
    /// no copy of them is left in the database's files.
    public func compactErasures(
        shares: [String: DatasetID], views: [String: Set<String>] = [:], log: @escaping @Sendable ([DatasetID: CompactionResult]) -> [LedgerEntry] = { _ in [] }
    ) async throws -> [DatasetID: CompactionResult] {
        struct Pending { let key: String; let hlc: HLC; let collected: Bool }
        struct SharePending { var keys: [String: HLC] = [:]; var keep: Set<String>?; var rows: [(key: String, hlc: Int64, keep: String?)] = [] }
        let (pending, sharePending): ([String: [String: Pending]], [String: SharePending]) = try await pool.read { db in
            var out: [String: [String: Pending]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT dataset, key, hlc, collected FROM erasures WHERE done = 0") {
                let p = Pending(key: row["key"], hlc: HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64)), collected: (row["collected"] as Int) == 1)
                out[row["dataset"], default: [:]][p.key] = p
            }
            var byShare: [String: SharePending] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT share, key, hlc, keep FROM share_erasures WHERE done = 0") {
                let share: String = row["share"], key: String = row["key"], hlc: Int64 = row["hlc"], keep: String? = row["keep"]
                var p = byShare[share] ?? SharePending()
                if key.isEmpty {
                    // The view in force when the share is active (terms may have widened since).
                    p.keep = views[share] ?? Set((keep ?? "").split(separator: ",").map(String.init))
                } else {
                    p.keys[key] = HLC(rawValue: UInt64(bitPattern: hlc))
                }
                p.rows.append((key, hlc, keep))
                byShare[share] = p
            }
            return (out, byShare)
        }
        guard !pending.isEmpty || !sharePending.isEmpty else { return [:] }
        var results: [DatasetID: CompactionResult] = [:]
        var rewrites: [(share: String, origin: String, seq: Int64, hash: Data, bytes: Data)] = []
        // Every share with something to compact: those of a dataset with deletions, and those
        // with a retraction or a narrowing of their own.
        var datasets: [String: DatasetID] = [:]
        for datasetText in pending.keys { if let d = try? DatasetID(parsing: datasetText, localCity: city) { datasets[datasetText] = d } }
        let visit = shares.filter { share, dataset in datasets[dataset.description] != nil || sharePending[share] != nil }
        for (share, dataset) in visit.sorted(by: { $0.key < $1.key }) {
            let keys = pending[dataset.description] ?? [:]
            let own = sharePending[share] ?? SharePending()
            var result = results[dataset] ?? CompactionResult()
            // The pass and a send leave out the same records (`Erasure.Screen`).
            let screen = Erasure.Screen(
                deleted: keys.mapValues { .init(hlc: $0.hlc, collected: $0.collected) }, retracted: own.keys, keep: own.keep)
            let found: [(String, Int64, Data, Data, Int, Bool)] = try await background {
                try await self.pool.read { db in
                    var out: [(String, Int64, Data, Data, Int, Bool)] = []
                    let rows = try Row.fetchCursor(db, sql: "SELECT origin, seq, hash, bytes FROM share_batches WHERE share = ? AND bytes IS NOT NULL", arguments: [share])
                    while let row = try rows.next() {
                        let stored: Data = row["bytes"]
                        guard let signed = try? SignedBatch(bytes: Array(stored)[...]) else { continue }
                        // A narrowing reads the batch's field names (a full decode; narrowings are rare).
                        let names: [Int: String] = own.keep == nil ? [:] : Dictionary(((try? signed.decode().fields) ?? []).map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
                        func erases(_ key: String, _ state: RecordState) -> Bool { screen.erases(key, state, name: { names[$0] }) }
                        var erased = 0
                        let compacted = try? signed.compacted { key, state in
                            guard erases(key, state) else { return false }
                            erased += 1
                            return true
                        }
                        if let compacted {
                            out.append((row["origin"], row["seq"], row["hash"], Data(compacted.bytes), erased, false))
                        } else if !signed.isCompactable, let batch = try? signed.decode(), batch.records.contains(where: { erases($0.key, $0.state) }) {
                            out.append((row["origin"], row["seq"], row["hash"], Data(), 0, true))
                        }
                    }
                    return out
                }
            }
            for (origin, seq, hash, bytes, erased, legacy) in found {
                if legacy {
                    result.legacy += 1
                } else {
                    rewrites.append((share, origin, seq, hash, bytes))
                    result.records += erased
                    result.batches += 1
                }
            }
            result.keys += own.keys.count
            results[dataset] = result
        }
        for (datasetText, keys) in pending {
            guard let d = datasets[datasetText] else { continue }
            results[d, default: CompactionResult()].keys += keys.count
        }
        // A dataset no share carries has no stored batches: its erasures are done at once.
        let done = pending.filter { d, _ in datasets[d] != nil }
        let doneShares = sharePending.filter { share, _ in shares[share] != nil }
        let entries = log(results.filter { $0.value.records > 0 || $0.value.legacy > 0 })
        let rewritten = rewrites
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "PRAGMA synchronous = FULL")
            defer {
                try? db.execute(sql: "PRAGMA secure_delete = FAST")
                try? db.execute(sql: "PRAGMA synchronous = NORMAL")
            }
            try db.inTransaction {
                for r in rewritten {
                    // Only the batch as read: a batch purged meanwhile stays purged.
                    try db.execute(
                        sql: "UPDATE share_batches SET bytes = ? WHERE share = ? AND origin = ? AND seq = ? AND hash = ?",
                        arguments: [r.bytes, r.share, r.origin, r.seq, r.hash])
                }
                for (dataset, keys) in done {
                    for p in keys.values {
                        try db.execute(sql: "DELETE FROM conflicts WHERE dataset = ? AND key = ?", arguments: [dataset, p.key])
                        try db.execute(sql: "DELETE FROM outbox WHERE dataset = ? AND key = ?", arguments: [dataset, p.key])
                        // A deletion noted again meanwhile (a later clock) waits for the next pass.
                        let args: StatementArguments = [dataset, p.key, Int64(bitPattern: p.hlc.rawValue), p.collected ? 1 : 0]
                        if p.collected {
                            try db.execute(sql: "DELETE FROM erasures WHERE dataset = ? AND key = ? AND hlc = ? AND collected = ?", arguments: args)
                        } else {
                            try db.execute(sql: "UPDATE erasures SET done = 1 WHERE dataset = ? AND key = ? AND hlc = ? AND collected = ?", arguments: args)
                        }
                    }
                }
                for (share, p) in doneShares {
                    for r in p.rows {
                        // Noted again meanwhile (a later clock, other fields): waits for the next pass.
                        try db.execute(
                            sql: "UPDATE share_erasures SET done = 1 WHERE share = ? AND key = ? AND hlc = ? AND keep IS ?",
                            arguments: [share, r.key, r.hlc, r.keep])
                    }
                }
                if !entries.isEmpty { _ = try LedgerStore.insert(entries, db: db) }
                return .commit
            }
            // The WAL still holds the pages as they were: write them back and empty it.
            _ = try? Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
        return results
    }
}
