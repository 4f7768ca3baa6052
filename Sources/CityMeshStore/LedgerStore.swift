public import CityMeshCore
import Foundation
import GRDB
import Synchronization

/// The ledger's table, with durable group commit: `append` returns only once its entry is in a
/// transaction committed with `synchronous = FULL` (fsync'd). Concurrent appends share one
/// transaction and one fsync, written by `runWriter()` (a service of the node).
public final class LedgerStore: Sendable {
    let pool: DatabasePool
    typealias Waiter = CheckedContinuation<UInt64, any Error>
    let pending = Mutex<[(LedgerEntry, Waiter)]>([])
    let wakeups: AsyncStream<Void>
    let wake: AsyncStream<Void>.Continuation
    /// Most entries written in one transaction.
    public static let maxBatch = 4096

    public init(store: NodeStore) {
        pool = store.pool
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Appends `entry` (its index is assigned here) and returns its index once durable.
    public func append(_ entry: LedgerEntry) async throws -> UInt64 {
        try await withCheckedThrowingContinuation { (waiter: Waiter) in
            pending.withLock { $0.append((entry, waiter)) }
            wake.yield()
        }
    }

    /// Writes pending appends in batches until cancelled; then fails whatever is still pending.
    public func runWriter() async {
        for await _ in wakeups {
            while true {
                let batch: [(LedgerEntry, Waiter)] = pending.withLock { p in
                    let n = min(p.count, Self.maxBatch)
                    defer { p.removeFirst(n) }
                    return Array(p.prefix(n))
                }
                if batch.isEmpty { break }
                do {
                    let first = try await write(batch.map(\.0))
                    for (i, item) in batch.enumerated() { item.1.resume(returning: first + UInt64(i)) }
                } catch {
                    for item in batch { item.1.resume(throwing: error) }
                }
            }
        }
        let left = pending.withLock { p in defer { p.removeAll() }; return p }
        for item in left { item.1.resume(throwing: CityMeshError(.nodeNotRunning, "the node is shutting down; the entry was not logged")) }
    }

    /// Stops `runWriter` after it has written what is pending.
    public func finish() { wake.finish() }

    func write(_ entries: [LedgerEntry]) async throws -> UInt64 {
        try await pool.writeWithoutTransaction { db in
            // FULL: the WAL is fsync'd at commit, so a logged entry survives power loss too.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
            var first: UInt64 = 0
            try db.inTransaction {
                first = UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger") ?? 0)
                let insert = try db.makeStatement(sql: "INSERT INTO ledger (idx, entry, leaf, kind, time, peer, dataset) VALUES (?, ?, ?, ?, ?, ?, ?)")
                for (i, var entry) in entries.enumerated() {
                    entry.index = first + UInt64(i)
                    let bytes = try entry.encoded()
                    try insert.execute(arguments: [
                        Int64(entry.index), Data(bytes), Data(Merkle.leafHash(bytes).bytes), entry.kind, entry.time, entry.peer, entry.dataset,
                    ])
                }
                return .commit
            }
            return first
        }
    }

    // MARK: Reading

    public func count() async throws -> UInt64 {
        try await pool.read { db in UInt64(try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM ledger") ?? 0) }
    }

    /// Every stored row in index order, read from one snapshot: (idx, entry bytes, stored leaf).
    /// The entry bytes are SQLite's own buffer (no copy), valid only during the call.
    public func forEachRow(_ body: @Sendable (UInt64, Data, Data?) throws -> Void) async throws {
        try await pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT idx, entry, leaf FROM ledger ORDER BY idx")
            while let row = try rows.next() {
                let idx: Int64 = row[0]
                let entry = row.dataNoCopy(atIndex: 1) ?? Data()
                let leaf = row.dataNoCopy(atIndex: 2)
                try body(UInt64(idx), entry, leaf)
            }
        }
    }

    /// The leaf hashes of the first `size` entries, recomputed from the entries.
    public func leaves(size: UInt64) async throws -> [MerkleHash] {
        try await pool.read { db in
            var out: [MerkleHash] = []
            out.reserveCapacity(Int(size))
            let rows = try Row.fetchCursor(db, sql: "SELECT entry FROM ledger WHERE idx < ? ORDER BY idx", arguments: [Int64(size)])
            while let row = try rows.next() {
                let entry: Data = row[0]
                out.append(Merkle.leafHash(entry))
            }
            return out
        }
    }

    /// Leaf hashes of the entries from index `from` on, recomputed from their stored bytes.
    public func leafHashes(from: UInt64) async throws -> [MerkleHash] {
        try await pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT entry FROM ledger WHERE idx >= ? ORDER BY idx", arguments: [Int64(from)])
            var out: [MerkleHash] = []
            while let row = try rows.next() {
                let entry: Data = row[0]
                out.append(Merkle.leafHash(entry))
            }
            return out
        }
    }

    /// Entries matching the filters, oldest first.
    public func entries(since: String? = nil, peer: String? = nil, kind: String? = nil, dataset: String? = nil, limit: Int = 1000) async throws -> [LedgerEntry] {
        try await pool.read { db in
            var sql = "SELECT entry FROM ledger WHERE 1"
            var args: [any DatabaseValueConvertible] = []
            if let since { sql += " AND time >= ?"; args.append(since) }
            if let peer { sql += " AND peer = ?"; args.append(peer) }
            if let kind { sql += " AND (kind = ? OR kind LIKE ?)"; args.append(kind); args.append(kind + ".%") }
            if let dataset { sql += " AND dataset = ?"; args.append(dataset) }
            sql += " ORDER BY idx LIMIT ?"
            args.append(limit)
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map { row in
                let data: Data = row[0]
                return try LedgerEntry.decode(data)
            }
        }
    }

    /// (index, bytes) of the entries below `size`, from `since` (RFC 3339 prefix) on if given.
    public func entryRows(size: UInt64, since: String?) async throws -> [(UInt64, [UInt8])] {
        try await pool.read { db in
            var sql = "SELECT idx, entry FROM ledger WHERE idx < ?"
            var args: [any DatabaseValueConvertible] = [Int64(size)]
            if let since { sql += " AND time >= ?"; args.append(since) }
            return try Row.fetchAll(db, sql: sql + " ORDER BY idx", arguments: StatementArguments(args)).map { row in
                let data: Data = row[1]
                return (UInt64(row[0] as Int64), Array(data))
            }
        }
    }

    /// The stored bytes of entry `index`.
    public func entryBytes(_ index: UInt64) async throws -> [UInt8]? {
        try await pool.read { db in
            try Data.fetchOne(db, sql: "SELECT entry FROM ledger WHERE idx = ?", arguments: [Int64(index)]).map { Array($0) }
        }
    }

    /// The signed checkpoint published at exactly `size`, if any.
    public func checkpoint(size: UInt64) async throws -> String? {
        try await pool.read { db in try String.fetchOne(db, sql: "SELECT note FROM ledger_checkpoints WHERE size = ?", arguments: [Int64(size)]) }
    }

    public func saveCheckpoint(size: UInt64, note: String, createdAt: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO ledger_checkpoints (size, note, created_at) VALUES (?, ?, ?)", arguments: [Int64(size), note, createdAt])
        }
    }

    /// All signed checkpoints, smallest first.
    public func checkpoints() async throws -> [(size: UInt64, note: String)] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT size, note FROM ledger_checkpoints ORDER BY size").map { (UInt64($0[0] as Int64), $0[1]) }
        }
    }

    public func latestCheckpoint() async throws -> (size: UInt64, note: String)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1").map { (UInt64($0[0] as Int64), $0[1]) }
        }
    }
}

/// The outcome of re-checking the stored log.
public struct LedgerAuditReport: Sendable, Codable {
    public var ok: Bool
    public var entries: UInt64
    public var root: String
    public var checkpointsVerified: Int
    public var latestCheckpointSize: UInt64?
    public var firstBadIndex: UInt64?
    public var problem: String?
}

extension LedgerStore {
    /// Recomputes the whole tree from the stored entries and checks every stored checkpoint's
    /// signature (with `verifier`) and root. `progress` is called with the entries done so far.
    public func audit(verifier: NoteVerifier, progress: @escaping @Sendable (UInt64) -> Void = { _ in }) async throws -> LedgerAuditReport {
        var checkpoints: [Checkpoint] = []
        for (size, note) in try await self.checkpoints() {
            do {
                let cp = try Checkpoint.verify(signedNote: note, key: verifier)
                guard cp.size == size else { throw NoteError("stored as size \(size) but signed for size \(cp.size)") }
                checkpoints.append(cp)
            } catch {
                return LedgerAuditReport(
                    ok: false, entries: 0, root: "", checkpointsVerified: 0, latestCheckpointSize: size, firstBadIndex: nil,
                    problem: "the checkpoint stored for size \(size) does not verify with the log's key: \(error)")
            }
        }
        let state = Mutex(LedgerAudit(checkpoints: checkpoints))
        var failure: LedgerAudit.Failure?
        do {
            try await forEachRow { idx, bytes, leaf in
                try bytes.withUnsafeBytes { raw in
                    if let leaf {
                        try leaf.withUnsafeBytes { stored in
                            try state.withLock { a throws(LedgerAudit.Failure) in try a.add(index: idx, bytes: raw, storedLeaf: stored) }
                        }
                    } else {
                        try state.withLock { a throws(LedgerAudit.Failure) in try a.add(index: idx, bytes: raw, storedLeaf: nil) }
                    }
                }
                if idx % 65_536 == 0 { progress(idx) }
            }
            try state.withLock { a throws(LedgerAudit.Failure) in try a.finish() }
        } catch let f as LedgerAudit.Failure {
            failure = f
        }
        let audit = state.withLock { $0 }
        progress(audit.count)
        return LedgerAuditReport(
            ok: failure == nil, entries: audit.count, root: audit.root.base64, checkpointsVerified: audit.checkpointsMatched,
            latestCheckpointSize: checkpoints.last?.size, firstBadIndex: failure?.index, problem: failure?.reason)
    }
}
