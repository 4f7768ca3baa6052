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

    /// Checks, read-only, that a database file someone hands in (a backup to restore) has exactly
    /// the tables, indexes and triggers citymesh's migrations make — none added, none changed —
    /// and that every column holds values of its declared type (SQLite stores any type in any
    /// column), with no negative number where citymesh reads a count, size or sequence number.
    /// The store reads rows trusting that shape; a crafted file without it is refused here, with
    /// what is wrong, instead of trapping a node later.
    public static func checkShape(path: String) throws {
        let queue = try openReadOnly(path)
        defer { try? queue.close() }
        let migrator = Migrations.make()
        let expected = try DatabaseQueue()
        let objects = "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != 'grdb_migrations' ORDER BY type, name"
        func refuse(_ why: String) -> CityMeshError {
            CityMeshError(.malformedInput, "\(path) is not a database citymesh made: \(why); use a backup made by 'citymesh backup'")
        }
        try queue.read { db in
            let applied = try migrator.appliedIdentifiers(db)
            guard let last = migrator.migrations.last(where: { applied.contains($0) }) else { throw refuse("it has no citymesh migrations") }
            try migrator.migrate(expected, upTo: last)
            let want = try expected.read { try Row.fetchAll($0, sql: objects).map { "\($0[0] as String) \($0[1] as String) \($0[2] as String): \($0[3] as String)" } }
            let have = try Row.fetchAll(db, sql: objects).map { row -> String in
                let parts = (0..<4).map { (row[$0] as String?) ?? "" }
                return "\(parts[0]) \(parts[1]) \(parts[2]): \(parts[3])"
            }
            if let extra = Set(have).subtracting(want).sorted().first { throw refuse("it has a schema object citymesh does not make (\(extra.prefix(200)))") }
            if let missing = Set(want).subtracting(have).sorted().first { throw refuse("it lacks \(missing.prefix(200))") }
            for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'grdb_migrations'") {
                for column in try Row.fetchAll(db, sql: "SELECT name, type, \"notnull\" FROM pragma_table_info(?)", arguments: [table]) {
                    let name: String = column[0], declared = (column[1] as String).uppercased()
                    let types: [String]
                    switch declared {
                    case "INTEGER": types = ["integer"]
                    case "TEXT": types = ["text"]
                    case "BLOB": types = ["blob"]
                    case "REAL": types = ["real", "integer"]
                    default: continue
                    }
                    let quoted = "\"\(name.replacingOccurrences(of: "\"", with: "\"\""))\""
                    let bad = try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM \"\(table)\" WHERE \(quoted) IS NOT NULL AND typeof(\(quoted)) NOT IN (\(types.map { "'\($0)'" }.joined(separator: ",")))") ?? 0
                    guard bad == 0 else { throw refuse("\(bad) value(s) in \(table).\(name) are not \(declared)") }
                    // Hybrid clocks are stored as bit patterns; every other integer is a count, size,
                    // number or flag, never negative.
                    if declared == "INTEGER", !name.hasSuffix("hlc"), name != "hlc" {
                        let negative = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \"\(table)\" WHERE \(quoted) < 0") ?? 0
                        guard negative == 0 else { throw refuse("\(negative) value(s) in \(table).\(name) are negative") }
                    }
                }
            }
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
