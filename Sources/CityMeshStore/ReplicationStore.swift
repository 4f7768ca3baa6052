public import CityMeshCore
import Foundation
import GRDB
import Synchronization

/// A batch from a peer, checked by the caller (signature, rights), ready to be merged and kept.
public struct IncomingBatch: Sendable {
    public let share: String
    public let dataset: DatasetID
    public let batch: ChangeBatch
    public let signed: SignedBatch
    /// The states to merge: the batch's records minus any cells the caller refused.
    public let states: [ChangeBatch.Record]
    /// For a replica: the key field's name (the batch's first field).
    public let keyField: String
    public let from: CitySlug
    public let at: String
    /// Keys the owner retracted: dropped from the replica (with their conflicts and pending writes).
    public var retracted: [String] = []
    /// Keys the owner deleted in this batch, at a member: other cities' cells newer than the
    /// deletion, and this node's pending writes to them, go (`WriteRights.afterOwnerDeletion`).
    public var ownerDeletions: [String] = []
    /// The batch's ledger entries (`exchange.received`, and `share.retracted` when it retracts
    /// rows), appended with the batch in one transaction.
    public var entries: [LedgerEntry] = []

    public init(share: String, dataset: DatasetID, batch: ChangeBatch, signed: SignedBatch, states: [ChangeBatch.Record], keyField: String, from: CitySlug, at: String) {
        self.share = share
        self.dataset = dataset
        self.batch = batch
        self.signed = signed
        self.states = states
        self.keyField = keyField
        self.from = from
        self.at = at
    }
}

/// A conflict as stored.
public struct StoredConflict: Sendable, Codable, Equatable {
    public let id: Int64
    public let dataset: String
    public let key: String
    public let field: String
    public let value: String?
    public let stamp: String
    public let city: String
    public let winnerValue: String?
    public let winnerStamp: String
    public let winnerCity: String
    public let foundAt: String
    public let resolvedAt: String?
    public let resolvedBy: String?
}

/// Why a batch was not taken.
public enum TakeRefusal: Error, Sendable, Equatable {
    /// Its number is not the next one for its origin (a race with another relay, or a gap).
    case notNext(expected: UInt64)
    /// Its `prev` does not match the hash of the batch before it: the origin signed two histories.
    case forked(held: [UInt8])
}

extension NodeStore {
    // MARK: Batches

    /// What this node holds of each share: origin → highest batch number.
    public func heldVectors() async throws -> [String: VersionVector] {
        try await pool.read { db in
            var out: [String: VersionVector] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT share, origin, MAX(seq) AS n FROM share_batches GROUP BY share, origin") {
                out[row["share"], default: [:]][try CitySlug(row["origin"])] = UInt64(row["n"] as Int64)
            }
            return out
        }
    }

    /// The signed bytes of `origin`'s batches `seqs` of `share`, in order (those held).
    public func batches(share: String, origin: CitySlug, seqs: ClosedRange<UInt64>) async throws -> [[UInt8]] {
        try await numberedBatches(share: share, origin: origin, seqs: seqs).map(\.bytes)
    }

    /// The batches held of `seqs`, each with its number, hash and record count, in order.
    public func numberedBatches(share: String, origin: CitySlug, seqs: ClosedRange<UInt64>) async throws -> [(seq: UInt64, bytes: [UInt8], hash: [UInt8], records: Int)] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT seq, bytes, hash, records FROM share_batches WHERE share = ? AND origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                arguments: [share, origin.rawValue, Int64(clamping: seqs.lowerBound), Int64(clamping: seqs.upperBound)]
            ).compactMap { row in
                UInt64(exactly: row["seq"] as Int64).map { ($0, Array(row["bytes"] as Data), Array(row["hash"] as Data), row["records"] as Int) }
            }
        }
    }

    /// Hashes of `origin`'s batches `seqs` (those held), in order.
    public func batchHashes(share: String, origin: CitySlug, seqs: ClosedRange<UInt64>) async throws -> [(seq: UInt64, hash: [UInt8], records: Int)] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT seq, hash, records FROM share_batches WHERE share = ? AND origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                arguments: [share, origin.rawValue, Int64(clamping: seqs.lowerBound), Int64(clamping: seqs.upperBound)]
            ).map { (UInt64($0["seq"] as Int64), Array($0["hash"] as Data), $0["records"]) }
        }
    }

    /// Records that batches `seqs` of `origin` in `share` went to `peer`, merged with the runs
    /// already recorded that overlap or touch them (so the table holds one row per gap).
    /// `entries` (the sends' `exchange.sent` ledger entries) are appended in the same transaction,
    /// committed before anything goes out — with the store's normal durability: an fsync per send
    /// made the owner's initial sync of a large share a third slower. A crash keeps them (WAL);
    /// a power cut may lose the last ones together with the record of the send, but never after
    /// the sender countersigned a receipt for those batches (that commit is synced, and syncs the
    /// WAL before it).
    public func recordSent(share: String, peer: CitySlug, origin: CitySlug, seqs: ClosedRange<UInt64>, entries: [LedgerEntry] = []) async throws {
        try await recordSent(share: share, peer: peer, origin: origin, runs: [seqs], entries: entries)
    }

    /// `recordSent` for several runs in one transaction (one fsync).
    public func recordSent(share: String, peer: CitySlug, origin: CitySlug, runs: [ClosedRange<UInt64>], entries: [LedgerEntry]) async throws {
        let bounds = try runs.map { (try Int64.stored($0.lowerBound, "a batch number"), try Int64.stored($0.upperBound, "a batch number")) }
        try await pool.write { db in
            if !entries.isEmpty { _ = try LedgerStore.insert(entries, db: db) }
            let key: StatementArguments = [share, peer.rawValue, origin.rawValue]
            for (first, last) in bounds {
                let touching = try Row.fetchAll(
                    db, sql: "SELECT first, last FROM sent_batches WHERE share = ? AND peer = ? AND origin = ? AND first <= ? AND last >= ?",
                    arguments: key + [last == .max ? last : last + 1, first == 0 ? 0 : first - 1])
                let lo = touching.map { $0["first"] as Int64 }.reduce(first, min), hi = touching.map { $0["last"] as Int64 }.reduce(last, max)
                try db.execute(
                    sql: "DELETE FROM sent_batches WHERE share = ? AND peer = ? AND origin = ? AND first <= ? AND last >= ?",
                    arguments: key + [last == .max ? last : last + 1, first == 0 ? 0 : first - 1])
                try db.execute(sql: "INSERT INTO sent_batches (share, peer, origin, first, last) VALUES (?, ?, ?, ?, ?)", arguments: key + [lo, hi])
            }
        }
    }

    /// Whether every batch in `seqs` of `origin` in `share` was sent to `peer` (`recordSent`).
    public func wasSent(share: String, peer: CitySlug, origin: CitySlug, seqs: ClosedRange<UInt64>) async throws -> Bool {
        let first = Int64(clamping: seqs.lowerBound), last = Int64(clamping: seqs.upperBound)
        guard seqs.upperBound <= UInt64(Int64.max) else { return false }
        return try await pool.read { db in
            // Runs are merged when they touch, so one run covers the whole range or none does.
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM sent_batches WHERE share = ? AND peer = ? AND origin = ? AND first <= ? AND last >= ?)",
                arguments: [share, peer.rawValue, origin.rawValue, first, last]) ?? false
        }
    }

    static func lastBatch(db: Database, share: String, origin: CitySlug) throws -> (UInt64, [UInt8])? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT seq, hash FROM share_batches WHERE share = ? AND origin = ? ORDER BY seq DESC LIMIT 1", arguments: [share, origin.rawValue])
        else { return nil }
        return (UInt64(row["seq"] as Int64), Array(row["hash"] as Data))
    }

    /// The number and hash the next own batch of `share` must chain to.
    public func nextBatchLink(share: String) async throws -> (seq: UInt64, prev: [UInt8]) {
        let me = city
        return try await pool.read { db in
            guard let (n, h) = try Self.lastBatch(db: db, share: share, origin: me) else { return (1, ChangeBatch.zeroHash) }
            return (n + 1, h)
        }
    }

    /// The owner's record sequence up to which `share` has been cut into batches.
    public func cursor(share: String) async throws -> Int64 {
        try await pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT record_seq FROM share_cursors WHERE share = ?", arguments: [share]) ?? 0
        }
    }

    /// Records of `id` changed after local sequence `afterSeq`, in sequence order, at most `limit`.
    /// A background read (see `background`): it holds back for admin writes, and for the
    /// checkpointer, which cannot bring the WAL to its end while a long read keeps old frames in use.
    public func changes(_ id: DatasetID, afterSeq: Int64, limit: Int) async throws -> [StoredRecord] {
        try await background { try await pool.read { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            return try Row.fetchAll(
                // `+dataset` keeps SQLite off the (dataset, key) index: a range scan of the rowid
                // from the cursor reads only what changed, however large the dataset.
                db, sql: "SELECT key, seq, state FROM records WHERE seq > ? AND +dataset = ? ORDER BY seq LIMIT ?", arguments: [afterSeq, rowid, limit]
            ).map { row in
                let key: String = row["key"]
                let blob: Data = row["state"]
                return StoredRecord(key: key, seq: row["seq"], state: try blob.withUnsafeBytes { try RecordStateCodec.decode(buffer: $0, key: key) })
            }
        } }
    }

    /// Of `keys`, those the members of the filtered `share` hold (`ShareView`). The first call for
    /// a share sets its memory up: every live record up to the share's cursor counts as held (what
    /// was sent before the share had a filter, or before this memory existed).
    /// `upTo` is how far records were sent before (the cursor, or where a rescan of changed terms
    /// ends).
    public func visibleKeys(share: String, dataset: DatasetID, among keys: [String], upTo: Int64? = nil) async throws -> Set<String> {
        try await pool.write { db in
            if try !Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM share_visibility WHERE share = ?)", arguments: [share])! {
                let (rowid, _) = try Self.datasetHandle(dataset, db: db)
                let stored = try Int64.fetchOne(db, sql: "SELECT record_seq FROM share_cursors WHERE share = ?", arguments: [share]) ?? 0
                let cursor = max(stored, upTo ?? 0)
                try db.execute(
                    sql: "INSERT OR IGNORE INTO share_visible (share, key) SELECT ?, key FROM records WHERE dataset = ? AND live = 1 AND seq <= ?",
                    arguments: [share, rowid, cursor])
                try db.execute(sql: "INSERT INTO share_visibility (share) VALUES (?)", arguments: [share])
            }
            var out: Set<String> = []
            var start = keys.startIndex
            while start < keys.endIndex {
                let chunk = keys[start..<min(start + 500, keys.endIndex)]
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                out.formUnion(try String.fetchAll(
                    db, sql: "SELECT key FROM share_visible WHERE share = ? AND key IN (\(marks))", arguments: StatementArguments([share] + Array(chunk))))
                start = chunk.endIndex
            }
            return out
        }
    }

    /// What an owned share is cut under now: records up to `rescanUntil` were sent under earlier
    /// terms and are re-judged; `added` are view fields the earlier terms did not have.
    public struct ShareTerms: Sendable, Equatable {
        public var rescanUntil: Int64
        public var added: [String]
        /// The view lost fields since the rescan began: records members hold go out whole under
        /// the new view (their old copies are compacted out of the stored batches).
        public var narrowed: Bool
        public init(rescanUntil: Int64, added: [String], narrowed: Bool = false) {
            self.rescanUntil = rescanUntil
            self.added = added
            self.narrowed = narrowed
        }
    }

    /// Records that `share` is cut under `fields` and `filter` now. The first time, nothing more.
    /// When they differ from the last terms, the share's cursor goes back to 0 and `rescanUntil`
    /// to where it was (or stays further, if a rescan was under way), in one transaction.
    public func shareTerms(share: String, fields: [String], filter: String?) async throws -> ShareTerms {
        let fieldsText = Self.jsonArray(fields.sorted())
        return try await pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT fields, filter, rescan_until, added, narrowed FROM share_terms WHERE share = ?", arguments: [share]) else {
                try db.execute(sql: "INSERT INTO share_terms (share, fields, filter) VALUES (?, ?, ?)", arguments: [share, fieldsText, filter])
                return ShareTerms(rescanUntil: 0, added: [])
            }
            let oldFields = (try? JSONDecoder().decode([String].self, from: Data((row["fields"] as String).utf8))) ?? []
            var added = (try? JSONDecoder().decode([String].self, from: Data((row["added"] as String).utf8))) ?? []
            var rescan: Int64 = row["rescan_until"]
            var narrowed = (row["narrowed"] as Int) == 1
            if row["fields"] as String != fieldsText || row["filter"] as String? != filter {
                let cursor = try Int64.fetchOne(db, sql: "SELECT record_seq FROM share_cursors WHERE share = ?", arguments: [share]) ?? 0
                rescan = max(rescan, cursor)
                added = Array(Set(added).union(Set(fields).subtracting(oldFields)).intersection(fields)).sorted()
                // Fields that left the view: their cells leave the stored batches (the records go
                // out again whole under the new view during the rescan).
                if !Set(oldFields).subtracting(fields).isEmpty {
                    narrowed = true
                    try Self.noteNarrowing(db: db, share: share, keep: fields)
                }
                try db.execute(
                    sql: "UPDATE share_terms SET fields = ?, filter = ?, rescan_until = ?, added = ?, narrowed = ? WHERE share = ?",
                    arguments: [fieldsText, filter, rescan, Self.jsonArray(added), narrowed ? 1 : 0, share])
                try db.execute(sql: "UPDATE share_cursors SET record_seq = 0 WHERE share = ?", arguments: [share])
            }
            return ShareTerms(rescanUntil: rescan, added: added, narrowed: narrowed)
        }
    }

    /// The owner has gone over everything sent under the earlier terms.
    public func finishRescan(share: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE share_terms SET rescan_until = 0, added = '[]', narrowed = 0 WHERE share = ?", arguments: [share])
        }
    }

    /// A member's replica narrowed to the fields its agreement grants now: cells of other fields
    /// leave every record, the fields leave the schema, and conflicts about them go. Returns the
    /// records rewritten (0 when the replica has no field to drop).
    /// `log` makes the ledger entry from the count; it commits with the change (`logged`).
    /// The stored batches of `share` lose the records with cells of the dropped fields with the
    /// next compaction pass.
    public func narrowReplica(_ id: DatasetID, share: String, keep: Set<String>, log: @escaping @Sendable (Int) -> LedgerEntry? = { _ in nil }) async throws -> Int {
        try await background { try await logged({ log($0).map { [$0] } ?? [] }) { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, schema FROM datasets WHERE owner = ? AND name = ?", arguments: [id.owner.rawValue, id.name]) else { return 0 }
            let rowid: Int64 = row["id"]
            let schema = try Self.decodeSchema(row["schema"])
            let dropped = schema.fields.filter { !keep.contains($0.name) && $0.name != schema.keyField }
            guard !dropped.isEmpty else { return 0 }
            let kept = Set(schema.fields.filter { !dropped.contains($0) }.map(\.id))
            var rewritten = 0
            let update = try db.makeStatement(sql: "UPDATE records SET state = ? WHERE dataset = ? AND key = ?")
            for r in try Row.fetchAll(db, sql: "SELECT key, state FROM records WHERE dataset = ?", arguments: [rowid]) {
                let key: String = r["key"]
                let blob: Data = r["state"]
                let state = try blob.withUnsafeBytes { try RecordStateCodec.decode(buffer: $0, key: key) }
                let narrowed = state.projected(onto: kept)
                guard narrowed != state else { continue }
                try update.execute(arguments: [Data(RecordStateCodec.encode(narrowed, key: key)), rowid, key])
                rewritten += 1
            }
            try Self.noteNarrowing(db: db, share: share, keep: Array(keep.union([schema.keyField])))
            let narrowedSchema = try Schema(replicating: schema.fields.filter { kept.contains($0.id) }, keyField: schema.keyField)
            try db.execute(sql: "UPDATE datasets SET schema = ? WHERE id = ?", arguments: [try Self.encodeSchema(narrowedSchema), rowid])
            for f in dropped {
                try db.execute(sql: "DELETE FROM conflicts WHERE dataset = ? AND field = ?", arguments: [id.description, f.name])
            }
            return rewritten
        } }
    }

    /// Forgets which keys the members of `share` hold (its filter was removed: all rows go out).
    public func forgetVisibility(share: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM share_visible WHERE share = ?", arguments: [share])
            try db.execute(sql: "DELETE FROM share_visibility WHERE share = ?", arguments: [share])
        }
    }

    /// Keeps an own batch and moves the cursor past what it covers, in one transaction. When the
    /// cut produced no batch (nothing to send), `signed` is nil and only the cursor moves. `link`
    /// is the batch's sequence number and the hash it chains to (from `nextBatchLink`), checked
    /// again here against what is stored.
    /// `visibility` is what the batch changes in which keys the members hold (filtered shares).
    public func appendOwnBatch(
        share: String, dataset: DatasetID, signed: SignedBatch?, link: (seq: UInt64, prev: [UInt8]) = (0, []), records: Int, cursor: Int64,
        outboxThrough: Int64? = nil, visibility: (shown: [String], hidden: [String]) = ([], []), retracted: [(key: String, hlc: HLC)] = [], at: String
    ) async throws {
        let me = city
        let (seq, prev) = link
        try await background { try await pool.write { db in
            for key in visibility.shown {
                try db.execute(sql: "INSERT OR IGNORE INTO share_visible (share, key) VALUES (?, ?)", arguments: [share, key])
                // Back in view: a retraction's erasure of it ends (its old values are in view again).
                try db.execute(sql: "DELETE FROM share_erasures WHERE share = ? AND key = ?", arguments: [share, key])
            }
            for key in visibility.hidden {
                try db.execute(sql: "DELETE FROM share_visible WHERE share = ? AND key = ?", arguments: [share, key])
            }
            // Rows that left the filter: what the share's stored batches hold of them goes with the next compaction pass.
            for r in retracted { try Self.noteShareErasure(db: db, share: share, key: r.key, hlc: r.hlc) }
            if let outboxThrough {
                try db.execute(sql: "DELETE FROM outbox WHERE dataset = ? AND id <= ?", arguments: [dataset.description, outboxThrough])
            }
            if let signed {
                let (n, h) = try Self.lastBatch(db: db, share: share, origin: me) ?? (0, ChangeBatch.zeroHash)
                guard seq == n + 1 else { throw CityMeshError(.internalError, "own batch \(seq) of \(share) is not the next (\(n + 1))") }
                guard prev == h else { throw CityMeshError(.internalError, "own batch \(seq) of \(share) does not chain to batch \(n)") }
                try db.execute(
                    sql: "INSERT INTO share_batches (share, origin, seq, hash, records, bytes, received_from, received_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                    arguments: [share, me.rawValue, try Int64.stored(seq), Data(signed.hash), records, Data(signed.bytes), at])
            }
            try db.execute(
                sql: """
                    INSERT INTO share_cursors (share, dataset, record_seq, emitted_hlc) VALUES (?, ?, ?, 0)
                    ON CONFLICT (share) DO UPDATE SET record_seq = excluded.record_seq
                    """,
                arguments: [share, dataset.description, cursor])
        } }
    }

    /// Merges a peer's batch and keeps it: it must be the next of its origin and chain to the one
    /// before. A replica dataset is created (or gains fields) from the batch's field list.
    /// `conflicts` is asked, per existing record, what the merge overwrote. Returns the records
    /// changed and the conflicts found.
    ///
    /// Normally one transaction. When an admin write arrives meanwhile (`urgent`), the merge
    /// commits what it has after the current chunk of records, lets the write through and goes
    /// on in a new transaction, so a person's write waits for one chunk, not a whole batch. This
    /// is safe because merging is idempotent: the batch itself (and the `seen` bookkeeping) is
    /// kept only by the transaction that merges its last record, so after a crash in between the
    /// batch is taken again and the records already merged come out unchanged. Every transaction
    /// checks the chain again, so a batch another connection took meanwhile is refused as before.
    public func take(
        _ incoming: IncomingBatch, conflicts find: @escaping @Sendable (_ key: String, _ stored: RecordState, _ incoming: RecordState, _ mySeen: [CitySlug: HLC]) -> [ConflictRule.Conflict]
    ) async throws -> (written: Int, conflicts: Int) {
        let b = incoming.batch
        let maxHLC = ChangeBatch.latestStamp(of: incoming.states)
        clock.withLock { $0.observe(maxHLC) }
        let me = city
        let writes = incoming.states.map { PreparedWrite(key: $0.key, state: $0.state) }
        var from = 0
        var total = (written: 0, conflicts: 0)
        while true {
            let start0 = from
            let step = try await background { try await pool.write { db -> (merged: Int, written: Int, conflicts: Int) in
                let (n, h) = try Self.lastBatch(db: db, share: incoming.share, origin: b.origin) ?? (0, ChangeBatch.zeroHash)
                guard b.seq == n + 1 else { throw TakeRefusal.notNext(expected: n + 1) }
                guard b.prev == h else { throw TakeRefusal.forked(held: h) }
                // The dataset: the owner's own, or this member's replica of it.
                let rowid: Int64
                var schema: Schema
                if let row = try Row.fetchOne(db, sql: "SELECT id, schema FROM datasets WHERE owner = ? AND name = ?", arguments: [incoming.dataset.owner.rawValue, incoming.dataset.name]) {
                    rowid = row["id"]
                    schema = try Self.decodeSchema(row["schema"])
                    if incoming.dataset.owner != me {
                        var changed = false
                        for f in b.fields where try schema.adopt(f) { changed = true }
                        if changed {
                            try db.execute(sql: "UPDATE datasets SET schema = ? WHERE id = ?", arguments: [try Self.encodeSchema(schema), rowid])
                        }
                    }
                } else {
                    guard incoming.dataset.owner != me else { throw CityMeshError(.datasetNotFound, "no dataset '\(incoming.dataset)' here") }
                    schema = try Schema(replicating: b.fields, keyField: incoming.keyField)
                    try db.execute(
                        sql: "INSERT INTO datasets (owner, name, schema, created_at) VALUES (?, ?, ?, ?)",
                        arguments: [incoming.dataset.owner.rawValue, incoming.dataset.name, try Self.encodeSchema(schema), incoming.at])
                    rowid = db.lastInsertedRowID
                }
                var mySeen: [CitySlug: HLC] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT city, hlc FROM seen_clocks WHERE dataset = ?", arguments: [incoming.dataset.description]) {
                    mySeen[try CitySlug(row["city"])] = HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64))
                }
                var found: [(String, ConflictRule.Conflict)] = []
                var w = try BatchWriter(db: db, dataset: rowid)
                let seenBefore = mySeen
                w.observe = { key, stored, state in
                    for c in find(key, stored, state, seenBefore) { found.append((key, c)) }
                }
                let merged = try w.mergeAll(writes[start0...]) { self.backgroundShouldWait }
                let summary = try w.finish(lastHLC: clock.withLock { $0.last })
                for (key, c) in found {
                    func text(_ v: Value?) -> String? { v.map { String(decoding: (try? JSONEncoder().encode($0.json)) ?? Data(), as: UTF8.self) } }
                    try db.execute(
                        sql: """
                            INSERT OR IGNORE INTO conflicts (dataset, key, field, value, stamp, city, winner_value, winner_stamp, winner_city, found_at)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            incoming.dataset.description, key, schema.field(id: c.field)?.name ?? "#\(c.field)", text(c.loser.value), c.loser.stamp.description,
                            c.loser.stamp.city.rawValue, text(c.winner.value), c.winner.stamp.description, c.winner.stamp.city.rawValue, incoming.at,
                        ])
                }
                guard start0 + merged == writes.count else { return (merged, summary.written, found.count) }
                // Retracted keys leave the replica with the batch that retracts them, and what the
                // share's stored batches hold of them with the next compaction pass.
                if !incoming.retracted.isEmpty {
                    for key in incoming.retracted {
                        guard let stored = try Self.fetchState(db: db, dataset: rowid, key: key) else { continue }
                        let newest = stored.state.cells.map(\.stamp.hlc).max() ?? .zero
                        try Self.noteShareErasure(db: db, share: incoming.share, key: key, hlc: Swift.max(newest, stored.state.tombstone?.hlc ?? .zero))
                    }
                    let live = try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM records WHERE dataset = ? AND live = 1 AND key IN (SELECT value FROM json_each(?))",
                        arguments: [rowid, Self.jsonArray(incoming.retracted)]) ?? 0
                    try db.execute(sql: "DELETE FROM records WHERE dataset = ? AND key IN (SELECT value FROM json_each(?))", arguments: [rowid, Self.jsonArray(incoming.retracted)])
                    try db.execute(sql: "UPDATE datasets SET live_count = max(0, live_count - ?) WHERE id = ?", arguments: [live, rowid])
                    try db.execute(
                        sql: "DELETE FROM conflicts WHERE dataset = ? AND key IN (SELECT value FROM json_each(?))",
                        arguments: [incoming.dataset.description, Self.jsonArray(incoming.retracted)])
                    try db.execute(
                        sql: "DELETE FROM outbox WHERE dataset = ? AND key IN (SELECT value FROM json_each(?))",
                        arguments: [incoming.dataset.description, Self.jsonArray(incoming.retracted)])
                }
                // The owner's deletions win over members' concurrent writes (`WriteRights`).
                if !incoming.ownerDeletions.isEmpty {
                    let update = try db.makeStatement(sql: "UPDATE records SET live = ?, state = ? WHERE dataset = ? AND key = ?")
                    for key in incoming.ownerDeletions {
                        guard let stored = try Self.fetchState(db: db, dataset: rowid, key: key) else { continue }
                        let after = WriteRights.afterOwnerDeletion(stored.state, owner: incoming.dataset.owner)
                        try db.execute(sql: "DELETE FROM outbox WHERE dataset = ? AND key = ?", arguments: [incoming.dataset.description, key])
                        guard after != stored.state else { continue }
                        try update.execute(arguments: [after.isLive ? 1 : 0, Data(RecordStateCodec.encode(after, key: key)), rowid, key])
                        if stored.state.isLive && !after.isLive {
                            try db.execute(sql: "UPDATE datasets SET live_count = max(0, live_count - 1) WHERE id = ?", arguments: [rowid])
                        }
                    }
                }
                // Deletions: their old values leave the stored batches with the next compaction pass.
                for r in incoming.states {
                    if let t = r.state.tombstone { try Self.noteErasure(db: db, dataset: incoming.dataset, key: r.key, hlc: t.hlc) }
                }
                // A batch that arrives after a deletion was compacted (another origin's, older) may
                // carry the key again: the next pass looks at it too. Only when the dataset has
                // erasures, so an initial sync pays one lookup per batch.
                if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM erasures WHERE dataset = ? AND done = 1)", arguments: [incoming.dataset.description]) == true {
                    let again = try db.makeStatement(sql: "UPDATE erasures SET done = 0 WHERE dataset = ? AND key = ? AND done = 1")
                    for r in b.records { try again.execute(arguments: [incoming.dataset.description, r.key]) }
                }
                // The same for what left this share's view, and for a narrowed view (any record).
                if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM share_erasures WHERE share = ? AND done = 1)", arguments: [incoming.share]) == true {
                    let again = try db.makeStatement(sql: "UPDATE share_erasures SET done = 0 WHERE share = ? AND key = ? AND done = 1")
                    if let keep = try String.fetchOne(db, sql: "SELECT keep FROM share_erasures WHERE share = ? AND key = '' AND done = 1", arguments: [incoming.share]),
                        incoming.signed.isCompactable, b.fields.contains(where: { !keep.split(separator: ",").contains(Substring($0.name)) })
                    {
                        try again.execute(arguments: [incoming.share, ""])
                    }
                    for r in b.records { try again.execute(arguments: [incoming.share, r.key]) }
                }
                // A row the owner sends live again came back into this share's view (terms widened,
                // or it matches the filter again): its old values are in view again, so the
                // retraction's erasure ends — else the pass would compact the returning record too
                // (unchanged, its stamps are no newer than the retraction's).
                if incoming.batch.origin == incoming.dataset.owner {
                    let back = try db.makeStatement(sql: "DELETE FROM share_erasures WHERE share = ? AND key = ?")
                    for r in incoming.states where !r.state.cells.isEmpty { try back.execute(arguments: [incoming.share, r.key]) }
                }
                // The last records are in: what this node has now seen of each writer, and the batch.
                for r in incoming.states {
                    for c in r.state.cells where !(mySeen[c.stamp.city].map { c.stamp.hlc <= $0 } ?? false) { mySeen[c.stamp.city] = c.stamp.hlc }
                }
                for (c, t) in mySeen {
                    try db.execute(
                        sql: "INSERT INTO seen_clocks (dataset, city, hlc) VALUES (?, ?, ?) ON CONFLICT (dataset, city) DO UPDATE SET hlc = max(hlc, excluded.hlc)",
                        arguments: [incoming.dataset.description, c.rawValue, Int64(bitPattern: t.rawValue)])
                }
                try db.execute(
                    sql: "INSERT INTO origin_seen (share, origin, seen) VALUES (?, ?, ?) ON CONFLICT (share, origin) DO UPDATE SET seen = excluded.seen",
                    arguments: [incoming.share, b.origin.rawValue, Self.seenText(b.seen)])
                try db.execute(
                    sql: "INSERT INTO share_batches (share, origin, seq, hash, records, bytes, received_from, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    arguments: [incoming.share, b.origin.rawValue, try Int64.stored(b.seq), Data(incoming.signed.hash), b.signedCount, Data(incoming.signed.bytes), incoming.from.rawValue, incoming.at])
                if !incoming.entries.isEmpty { _ = try LedgerStore.insert(incoming.entries, db: db) }
                return (merged, summary.written, found.count)
            } }
            total.written += step.written
            total.conflicts += step.conflicts
            from += step.merged
            if from == writes.count { return total }
        }
    }

    static func jsonArray(_ strings: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(strings)) ?? Data("[]".utf8), as: UTF8.self)
    }

    static func seenText(_ seen: [CitySlug: HLC]) -> String {
        seen.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue)=\($0.value.rawValue)" }.joined(separator: ",")
    }

    static func parseSeen(_ text: String) -> [CitySlug: HLC] {
        var out: [CitySlug: HLC] = [:]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=")
            if kv.count == 2, let c = try? CitySlug(String(kv[0])), let n = UInt64(kv[1]) { out[c] = HLC(rawValue: n) }
        }
        return out
    }

    /// The `seen` map of the last batch taken from each origin of `share`.
    public func originSeen(share: String) async throws -> [CitySlug: [CitySlug: HLC]] {
        try await pool.read { db in
            var out: [CitySlug: [CitySlug: HLC]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT origin, seen FROM origin_seen WHERE share = ?", arguments: [share]) {
                out[try CitySlug(row["origin"])] = Self.parseSeen(row["seen"])
            }
            return out
        }
    }

    /// This node's knowledge of each writer's cells in `dataset`, including its own writes.
    public func seenClocks(_ dataset: DatasetID) async throws -> [CitySlug: HLC] {
        let me = city
        let own = clock.withLock { $0.last }
        return try await pool.read { db in
            var out: [CitySlug: HLC] = [me: own]
            for row in try Row.fetchAll(db, sql: "SELECT city, hlc FROM seen_clocks WHERE dataset = ?", arguments: [dataset.description]) {
                let c = try CitySlug(row["city"])
                if c != me { out[c] = HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64)) }
            }
            return out
        }
    }

    // MARK: Outbox (a member's own writes to replicas)

    static func keepInOutbox(db: Database, dataset: DatasetID, _ writes: [PreparedWrite]) throws {
        var seen: [CitySlug: HLC] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT city, hlc FROM seen_clocks WHERE dataset = ?", arguments: [dataset.description]) {
            seen[try CitySlug(row["city"])] = HLC(rawValue: UInt64(bitPattern: row["hlc"] as Int64))
        }
        let text = seenText(seen)
        for w in writes {
            try db.execute(
                sql: "INSERT INTO outbox (dataset, key, state, seen) VALUES (?, ?, ?, ?)",
                arguments: [dataset.description, w.key, Data(RecordStateCodec.encode(w.state)), text])
        }
    }

    /// The oldest own writes to replica `dataset` not yet cut into a batch.
    public func outbox(_ dataset: DatasetID, limit: Int) async throws -> [(id: Int64, key: String, state: RecordState, seen: [CitySlug: HLC])] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, key, state, seen FROM outbox WHERE dataset = ? ORDER BY id LIMIT ?", arguments: [dataset.description, limit]).map {
                ($0["id"], $0["key"], try RecordStateCodec.decode(Array($0["state"] as Data)), Self.parseSeen($0["seen"]))
            }
        }
    }

    // MARK: Tombstones and purges

    /// Removes deleted records of `dataset` whose tombstone is older than `before`: called only
    /// once every party of every share of the dataset has acknowledged everything this node holds.
    /// Returns how many were collected.
    public func collectTombstones(_ id: DatasetID, before: HLC) async throws -> Int {
        try await pool.write { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            var gone: [Int64] = []
            for row in try Row.fetchAll(db, sql: "SELECT seq, key, state FROM records WHERE dataset = ? AND live = 0", arguments: [rowid]) {
                let key: String = row["key"]
                let blob: Data = row["state"]
                let state = try blob.withUnsafeBytes { try RecordStateCodec.decode(buffer: $0, key: key) }
                if SyncSchedule.collects(state, before: before), let t = state.tombstone {
                    gone.append(row["seq"])
                    // Every party holds the deletion now: its own records can go from the batches too.
                    try Self.noteErasure(db: db, dataset: id, key: key, hlc: t.hlc, collected: true)
                }
            }
            for seq in gone { try db.execute(sql: "DELETE FROM records WHERE seq = ?", arguments: [seq]) }
            return gone.count
        }
    }

    /// Deletes a replica and everything kept to replicate it (an agreement ended with
    /// `on_revoke: purge`). Returns the number of records removed.
    public func purgeReplica(_ id: DatasetID, share: String, log: @escaping @Sendable (Int) -> LedgerEntry? = { _ in nil }) async throws -> Int {
        try await logged({ log($0).map { [$0] } ?? [] }) { db in
            guard let rowid = try Int64.fetchOne(db, sql: "SELECT id FROM datasets WHERE owner = ? AND name = ?", arguments: [id.owner.rawValue, id.name]) else { return 0 }
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM records WHERE dataset = ?", arguments: [rowid]) ?? 0
            try db.execute(sql: "DELETE FROM records WHERE dataset = ?", arguments: [rowid])
            try db.execute(sql: "DELETE FROM datasets WHERE id = ?", arguments: [rowid])
            try db.execute(sql: "DELETE FROM share_batches WHERE share = ?", arguments: [share])
            try db.execute(sql: "DELETE FROM share_cursors WHERE share = ?", arguments: [share])
            try db.execute(sql: "DELETE FROM share_rosters WHERE share = ?", arguments: [share])
            try db.execute(sql: "DELETE FROM origin_seen WHERE share = ?", arguments: [share])
            try db.execute(sql: "DELETE FROM seen_clocks WHERE dataset = ?", arguments: [id.description])
            try db.execute(sql: "DELETE FROM conflicts WHERE dataset = ?", arguments: [id.description])
            return count
        }
    }

    // MARK: Receipts

    /// Batches taken from peers that no receipt covers yet, oldest first.
    public func unreceiptedBatches(limit: Int = 4096) async throws -> [(peer: CitySlug, share: String, origin: CitySlug, seq: UInt64, hash: [UInt8], records: Int)] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: """
                    SELECT received_from, share, origin, seq, hash, records FROM share_batches
                    WHERE received_from IS NOT NULL AND receipt IS NULL ORDER BY received_at, share, origin, seq LIMIT ?
                    """, arguments: [limit]
            ).map { (try CitySlug($0["received_from"]), $0["share"], try CitySlug($0["origin"]), UInt64($0["seq"] as Int64), Array($0["hash"] as Data), $0["records"]) }
        }
    }

    /// Keeps a receipt this node signed as receiver and marks the batches it covers, in one
    /// transaction, committed durably: the receipt acknowledges the batches, so the batches and
    /// their `exchange.received` entries (committed before, `synchronous = NORMAL`) are made
    /// durable with it (one fsync of the WAL) before it is sent.
    public func saveIssuedReceipt(id: String, peer: CitySlug, share: String, document: String, batches: [(origin: CitySlug, seq: UInt64)], at: String) async throws {
        let batches = batches
        try await logged([]) { db in
            try db.execute(
                sql: "INSERT INTO receipts (id, peer, share, role, receipt, created_at) VALUES (?, ?, ?, 'received', ?, ?)",
                arguments: [id, peer.rawValue, share, document, at])
            for b in batches {
                try db.execute(
                    sql: "UPDATE share_batches SET receipt = ? WHERE share = ? AND origin = ? AND seq = ?",
                    arguments: [id, share, b.origin.rawValue, try Int64.stored(b.seq)])
            }
        }
    }

    /// A receipt as stored: its document, and the countersignature once there is one.
    public func receipt(id: String) async throws -> (role: String, peer: String, receipt: String, countersign: String?)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT role, peer, receipt, countersign FROM receipts WHERE id = ?", arguments: [id]).map {
                ($0["role"], $0["peer"], $0["receipt"], $0["countersign"])
            }
        }
    }

    /// Keeps a receipt this node countersigned as sender; false if it already had one for it.
    @discardableResult
    /// `log` (the `exchange.receipt` entry) commits with it, durably (`logged`), or not at all.
    public func saveCountersigned(id: String, peer: CitySlug, share: String, receipt: String, countersign: String, at: String, log: LedgerEntry? = nil) async throws -> Bool {
        try await logged({ saved in saved ? (log.map { [$0] } ?? []) : [] }) { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO receipts (id, peer, share, role, receipt, countersign, created_at) VALUES (?, ?, ?, 'sent', ?, ?, ?)",
                arguments: [id, peer.rawValue, share, receipt, countersign, at])
            return db.changesCount > 0
        }
    }

    /// Records the sender's countersignature of a receipt this node issued; false if it already had it.
    @discardableResult
    public func saveCountersign(id: String, countersign: String, log: LedgerEntry? = nil) async throws -> Bool {
        try await logged({ saved in saved ? (log.map { [$0] } ?? []) : [] }) { db in
            try db.execute(sql: "UPDATE receipts SET countersign = ? WHERE id = ? AND role = 'received' AND countersign IS NULL", arguments: [countersign, id])
            return db.changesCount > 0
        }
    }

    /// Receipts this node issued and no sender has countersigned yet, oldest first (at most `limit`, the newest).
    public func openReceipts(limit: Int = ReceiptFlow.maxOpen) async throws -> [(id: String, peer: CitySlug, share: String)] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, peer, share FROM (SELECT id, peer, share, created_at, rowid AS r FROM receipts WHERE role = 'received' AND countersign IS NULL ORDER BY created_at DESC, r DESC LIMIT ?) ORDER BY created_at, r",
                arguments: [limit]
            ).map { (id: $0["id"], peer: try CitySlug($0["peer"]), share: $0["share"]) }
        }
    }

    /// Receipts this node issued that `peer` has not countersigned yet.
    public func uncountersigned(peer: CitySlug) async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(db, sql: "SELECT receipt FROM receipts WHERE peer = ? AND role = 'received' AND countersign IS NULL ORDER BY created_at LIMIT 256", arguments: [peer.rawValue])
        }
    }

    // MARK: Rosters and certificates

    /// Keeps a roster if it is newer than the one held; true if kept.
    @discardableResult
    public func saveRoster(share: String, issued: Int64, document: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: "INSERT INTO share_rosters (share, issued, document) VALUES (?, ?, ?) ON CONFLICT (share) DO UPDATE SET issued = excluded.issued, document = excluded.document WHERE excluded.issued > share_rosters.issued",
                arguments: [share, issued, document])
            return db.changesCount > 0
        }
    }

    public func rosters() async throws -> [String: String] {
        try await pool.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT share, document FROM share_rosters").map { ($0["share"], $0["document"]) })
        }
    }

    public func saveCertificate(city: CitySlug, der: [UInt8], at: String) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "INSERT INTO city_certificates (city, der, updated_at) VALUES (?, ?, ?) ON CONFLICT (city) DO UPDATE SET der = excluded.der, updated_at = excluded.updated_at",
                arguments: [city.rawValue, Data(der), at])
        }
    }

    public func certificates() async throws -> [CitySlug: [UInt8]] {
        try await pool.read { db in
            var out: [CitySlug: [UInt8]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT city, der FROM city_certificates") { out[try CitySlug(row["city"])] = Array(row["der"] as Data) }
            return out
        }
    }

    // MARK: Conflicts

    /// Conflicts in `dataset`, newest first; `open` keeps those not settled.
    public func conflicts(_ dataset: DatasetID, open: Bool) async throws -> [StoredConflict] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM conflicts WHERE dataset = ? \(open ? "AND resolved_at IS NULL" : "") ORDER BY id DESC LIMIT 1000",
                arguments: [dataset.description]
            ).map {
                StoredConflict(
                    id: $0["id"], dataset: $0["dataset"], key: $0["key"], field: $0["field"], value: $0["value"], stamp: $0["stamp"], city: $0["city"],
                    winnerValue: $0["winner_value"], winnerStamp: $0["winner_stamp"], winnerCity: $0["winner_city"], foundAt: $0["found_at"],
                    resolvedAt: $0["resolved_at"], resolvedBy: $0["resolved_by"])
            }
        }
    }

    /// Marks the open conflicts of one field of one record settled; returns how many.
    @discardableResult
    public func settleConflicts(_ dataset: DatasetID, key: String, field: String, by: String, at: String) async throws -> Int {
        try await pool.write { db in try Self.settle(db: db, dataset: dataset, key: key, field: field, by: by, at: at) }
    }

    static func settle(db: Database, dataset: DatasetID, key: String, field: String, by: String, at: String) throws -> Int {
        try db.execute(
            sql: "UPDATE conflicts SET resolved_at = ?, resolved_by = ? WHERE dataset = ? AND key = ? AND field = ? AND resolved_at IS NULL",
            arguments: [at, by, dataset.description, key, field])
        return db.changesCount
    }

    // MARK: Witnessing

    /// Checkpoints kept per peer city (the largest sizes).
    public static let peerCheckpointsKept = 64

    /// Keeps a checkpoint a peer showed; returns the one already held at the same size, if it differs.
    public func savePeerCheckpoint(city: CitySlug, size: UInt64, root: String, note: String, at: String) async throws -> String? {
        try await pool.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT root, note FROM peer_checkpoints WHERE city = ? AND size = ?", arguments: [city.rawValue, Int64(clamping: size)]) {
                return (row["root"] as String) == root ? nil : row["note"]
            }
            try db.execute(
                sql: "INSERT INTO peer_checkpoints (city, size, root, note, received_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [city.rawValue, try Int64.stored(size), root, note, at])
            // A bounded number per city: a city that signs checkpoints at every size (and peers
            // that pass them on) cannot grow the table. Older sizes are covered by the consistency
            // proofs between the ones kept.
            try db.execute(
                sql: """
                    DELETE FROM peer_checkpoints WHERE city = ? AND size NOT IN
                        (SELECT size FROM peer_checkpoints WHERE city = ? ORDER BY size DESC LIMIT \(Self.peerCheckpointsKept))
                    """,
                arguments: [city.rawValue, city.rawValue])
            return nil
        }
    }

    /// The latest checkpoint kept for each peer.
    public func peerCheckpoints() async throws -> [CitySlug: (size: UInt64, note: String)] {
        try await pool.read { db in
            var out: [CitySlug: (UInt64, String)] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT city, MAX(size) AS size, note FROM peer_checkpoints GROUP BY city") {
                out[try CitySlug(row["city"])] = (UInt64(row["size"] as Int64), row["note"])
            }
            return out
        }
    }
}
