public import CityMeshCore
import Foundation
import GRDB

/// What a database file holds, read without changing it (for `config check`, `backup`, `restore`).
public struct StoreInspection: Sendable {
    public let city: CitySlug?
    /// Migrations this binary knows that the file has not had yet (run at the next start).
    public let pending: [String]
    /// Migrations the file has had that this binary does not know: a newer citymesh wrote it.
    public let unknown: [String]
    public let ledgerEntries: Int
    public let datasets: Int
    /// `PRAGMA quick_check`'s verdict ("ok" when the file is sound).
    public let check: String
}

extension NodeStore {
    /// Opens `path` read-only and reports what it holds; runs no migration and writes nothing.
    public static func inspect(path: String, thorough: Bool = false) throws -> StoreInspection {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CityMeshError(.nodeNotInitialized, "no database at \(path): run 'citymesh init' first")
        }
        let queue = try openReadOnly(path)
        defer { try? queue.close() }
        let migrator = Migrations.make()
        return try queue.read { db in
            let check = try String.fetchOne(db, sql: thorough ? "PRAGMA integrity_check" : "PRAGMA quick_check") ?? "no answer"
            let applied = (try? migrator.appliedIdentifiers(db)) ?? []
            let known = migrator.migrations
            let hasTable = { (name: String) in try db.tableExists(name) }
            return StoreInspection(
                city: try hasTable("node_state") ? String.fetchOne(db, sql: "SELECT city FROM node_state WHERE id = 1").flatMap { try? CitySlug($0) } : nil,
                pending: known.filter { !applied.contains($0) }, unknown: applied.filter { !known.contains($0) }.sorted(),
                ledgerEntries: try hasTable("ledger") ? Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ledger") ?? 0 : 0,
                datasets: try hasTable("datasets") ? Int.fetchOne(db, sql: "SELECT COUNT(*) FROM datasets") ?? 0 : 0,
                check: check)
        }
    }

    /// A read-only connection to the database file at `path` (no migration, no write).
    static func openReadOnly(_ path: String) throws -> DatabaseQueue {
        var config = Configuration()
        config.readonly = true
        config.busyMode = .timeout(10)
        do { return try DatabaseQueue(path: path, configuration: config) } catch {
            throw CityMeshError(.ioError, "cannot open the database \(path): \(error)")
        }
    }

    /// Moves everything in the WAL into the database file and empties the WAL.
    public func foldWAL() async throws {
        try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    /// A consistent copy of the database at `path` — records, ledger, checkpoints, tokens, policy
    /// versions, agreements and replication state, as of one moment — written to `destination`
    /// with `VACUUM INTO`. It reads one snapshot, so it runs while the node is running and does
    /// not hold up its writes. `destination` must not exist.
    public static func backup(path: String, to destination: String) throws -> StoreInspection {
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw CityMeshError(.invalidArgument, "\(destination) already exists: choose another --out, or remove it first")
        }
        let queue = try openReadOnly(path)
        defer { try? queue.close() }
        // The backup holds every record and the token hashes: made 0600 before a byte is in it
        // (VACUUM INTO accepts an empty file).
        guard FileManager.default.createFile(atPath: destination, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw CityMeshError(.ioError, "cannot create \(destination): check the directory exists and is writable")
        }
        do {
            try queue.writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [destination]) }
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw CityMeshError(.ioError, "the backup to \(destination) failed: \(error)")
        }
        return try inspect(path: destination, thorough: true)
    }
}
