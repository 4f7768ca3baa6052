public import CityMeshCore
import Foundation
public import GRDB
import GRDBSQLite
import Synchronization

/// The node's database: datasets, records as CRDT states, local sequence numbers, tokens.
///
/// One `DatabasePool` (WAL) per file; every invariant lives inside one `write {}` transaction.
/// This is the only place in CityMesh that speaks SQL.
public final class NodeStore: Sendable {
    public let pool: DatabasePool
    public let city: CitySlug
    public let path: String
    /// The node's hybrid logical clock. This process is the node's only writer (the node lock),
    /// so the in-memory clock is authoritative; every write transaction persists it.
    let clock: Mutex<HybridClock>
    /// The ledger secret once read (`ledgerSecret`): it never changes, and every admin write
    /// hashes a record key with a key derived from it.
    let ledgerSecretCache = Mutex<[UInt8]?>(nil)
    /// Writes someone is waiting on (admin requests) in flight: background writers (replication
    /// merges) hold back while there are any, and a merge already running commits after its
    /// current chunk, so a person's write waits for at most one chunk (docs/performance.md).
    let urgentWrites = Atomic<Int>(0)
    /// Set while the checkpointer brings the WAL to its end so that it can start over: background
    /// writers hold back as they do for urgent writes (see `runCheckpointer`).
    let walRestartWanted = Atomic<Bool>(false)
    /// Background transactions running or waiting for a connection (`background`): replication's
    /// merges and cuts, and the bulk reads of its cuts.
    let backgroundTransactions = Atomic<Int>(0)
    /// WAL frames (16 KiB pages) beyond which the checkpointer starts the WAL over from its start.
    public static let walRestartFrames = 1_024
    /// WAL frames (256 MiB) beyond which the checkpointer forces a RESTART, write lock and all,
    /// when pauses of the background work have not let the WAL start over (other readers kept it
    /// busy). Seldom reached: a RESTART that copies holds every write back for its fsyncs.
    public static let walForceRestartFrames = 16 * walRestartFrames

    /// How the checkpointer made the WAL start over: while background writes paused (no one's
    /// write waits), or with a RESTART checkpoint holding the write lock.
    public enum WALRestart: Sendable { case paused, forced }

    /// The WAL and shared-memory files hold recent writes: no one may read them who may not read
    /// the database (files left by older versions were created 0644).
    static func alignSidecarModes(_ path: String) {
        let fm = FileManager.default
        guard let mode = (try? fm.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber else { return }
        for sidecar in [path + "-wal", path + "-shm"] {
            guard let current = (try? fm.attributesOfItem(atPath: sidecar))?[.posixPermissions] as? NSNumber,
                current.intValue & ~mode.intValue & 0o777 != 0 else { continue }
            try? fm.setAttributes([.posixPermissions: current.intValue & mode.intValue & 0o777], ofItemAtPath: sidecar)
        }
    }

    /// Opens (and migrates) the database at `path`. `createFor` makes a new one for that city.
    public init(path: String, createFor newCity: CitySlug? = nil) throws {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .callback(Self.waitBriefly)
        config.prepareDatabase { db in
            // Durable but not paranoid: WAL with synchronous=NORMAL survives process crashes;
            // part 3's ledger adds explicit group commit for what must survive power loss.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Checkpoint the WAL every 256 pages (4 MiB) rather than SQLite's 1,000 (16 MiB): the
            // commit that triggers a checkpoint pays for it, so smaller ones keep every write's
            // worst case short while replication streams batches in (docs/performance.md).
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 256")
            // What a write deletes or overwrites is zeroed in the pages it writes anyway (no
            // extra I/O): an old value does not linger in a page's free space. Compaction turns
            // it fully on for its own transaction (`compactErasures`).
            try db.execute(sql: "PRAGMA secure_delete = FAST")
            // 16 KiB pages: fewer page splits and less per-page work on bulk loads (measured ~8%
            // faster for an import); takes effect only when the database file is created.
            try db.execute(sql: "PRAGMA page_size = 16384")
        }
        if newCity == nil, !FileManager.default.fileExists(atPath: path) {
            throw CityMeshError(.nodeNotInitialized, "no database at \(path): run 'citymesh init' first")
        }
        // A new database is the owner's only from its first byte: SQLite gives the WAL and the
        // shared-memory file it creates the database file's mode, so they are private too.
        if newCity != nil, !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw CityMeshError(.ioError, "cannot create the database \(path): check that its directory exists and is writable")
            }
        }
        let pool: DatabasePool
        do { pool = try DatabasePool(path: path, configuration: config) } catch {
            throw CityMeshError(.ioError, "cannot open the database \(path): \(error)")
        }
        Self.alignSidecarModes(path)
        let migrator = Migrations.make()
        try pool.read { db in
            let applied = try migrator.appliedIdentifiers(db)
            let known = Set(migrator.migrations)
            if let unknown = applied.first(where: { !known.contains($0) }) {
                throw CityMeshError(
                    .storeVersionTooNew,
                    "the database \(path) was written by a newer citymesh (migration '\(unknown)'): upgrade citymesh, or restore a backup made by this version"
                )
            }
        }
        try migrator.migrate(pool)
        let (city, lastHLC): (CitySlug, Int64) = try pool.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT city, last_hlc FROM node_state WHERE id = 1") {
                return (try CitySlug(row["city"]), row["last_hlc"])
            }
            guard let newCity else {
                throw CityMeshError(.nodeNotInitialized, "the database \(path) has no node identity: run 'citymesh init' again with --force")
            }
            try db.execute(sql: "INSERT INTO node_state (id, city, next_seq, last_hlc) VALUES (1, ?, 1, 0)", arguments: [newCity.rawValue])
            return (newCity, 0)
        }
        self.pool = pool
        self.city = city
        self.path = path
        self.clock = Mutex(HybridClock(last: HLC(rawValue: UInt64(bitPattern: lastHLC))))
    }

    /// Closes the database; the store must not be used afterwards.
    public func close() throws { try pool.close() }

    // MARK: Write scheduling

    /// Runs `body` (a write someone waits on) ahead of background writes.
    public func urgent<T>(_ body: () async throws -> T) async rethrows -> T {
        urgentWrites.add(1, ordering: .sequentiallyConsistent)
        defer { urgentWrites.subtract(1, ordering: .sequentiallyConsistent) }
        return try await body()
    }

    /// Whether a background writer should hold back now: urgent writes are in flight, or the
    /// checkpointer is bringing the WAL to its end.
    var backgroundShouldWait: Bool {
        urgentWrites.load(ordering: .relaxed) > 0 || walRestartWanted.load(ordering: .relaxed)
    }

    /// A background writer calls this before each transaction: it waits while urgent writes are
    /// in flight or the checkpointer wants the WAL to start over, for at most `limit` (so a stream
    /// of admin writes slows replication, never stops it).
    public func yieldToUrgentWrites(limit: Duration = .milliseconds(250)) async {
        guard backgroundShouldWait else { return }
        let deadline = ContinuousClock.now + limit
        while backgroundShouldWait, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Runs `body`, one background transaction (a merge or a cut of replication, or a cut's read
    /// of changed records), once no urgent write is in flight and the checkpointer does not want
    /// the WAL to start over (for at most `limit`). The checkpointer waits until no background
    /// transaction is running before it brings the WAL to its end (a long read keeps the frames
    /// it started with in use), so it counts them: a transaction counts itself before it checks,
    /// and the checkpointer sets its flag before it reads the count, so one of the two sees the other.
    public func background<T>(limit: Duration = .milliseconds(250), _ body: () async throws -> T) async rethrows -> T {
        let deadline = ContinuousClock.now + limit
        while true {
            backgroundTransactions.add(1, ordering: .sequentiallyConsistent)
            if !backgroundShouldWait || ContinuousClock.now >= deadline { break }
            backgroundTransactions.subtract(1, ordering: .sequentiallyConsistent)
            await yieldToUrgentWrites(limit: deadline - ContinuousClock.now)
        }
        defer { backgroundTransactions.subtract(1, ordering: .sequentiallyConsistent) }
        return try await body()
    }

    /// While another connection holds a lock (the checkpointer, briefly; or a command run
    /// beside the node), try again every millisecond for up to 10 s. SQLite's own busy timeout
    /// sleeps 1, 2, 5, 10, 15, 20, 25 … ms between tries, so a 20 ms hold cost a writer 33 ms.
    static let waitBriefly: Database.BusyCallback = { tries in
        guard tries < 10_000 else { return false }
        usleep(1_000)
        return true
    }

    /// Writes a file's dirty pages out and waits for them (no metadata, which SQLite's own syncs cover).
    static func flush(_ fd: Int32) -> Int32 {
        #if canImport(Glibc)
        fdatasync(fd)
        #else
        fsync(fd)
        #endif
    }

    /// Checkpoints the WAL from a connection of its own, every `interval`, until cancelled, so that
    /// no commit pays for a checkpoint (SQLite's automatic checkpoint runs inside the commit that
    /// crosses the threshold, holding up every write queued behind it). A PASSIVE checkpoint
    /// copies what it can without blocking anyone.
    ///
    /// Under a stream of writes the WAL never reaches its end, so it would grow without bound.
    /// Once it holds more than `restartAfter` frames, the checkpointer asks the background work
    /// (replication's merges, cuts and cut reads) to hold back, as it does for an admin write, and
    /// checkpoints passively until it has copied every frame; SQLite then syncs the database file,
    /// still without the write lock, and the next write starts the WAL over from its beginning by
    /// itself. No one's write waits for that; the pause costs replication a few milliseconds. A
    /// RESTART checkpoint, which holds the write lock while it copies and syncs (about 20 ms under a
    /// sync's load), is kept for when readers have kept the WAL from starting over until it holds
    /// `forceAfter` frames. It waits for no one: while a write or a reader is in the way it gives up
    /// until the next round. On return the automatic checkpoint is back on.
    public func runCheckpointer(
        interval: Duration = .milliseconds(100), restartAfter: Int = walRestartFrames, forceAfter: Int = walForceRestartFrames,
        onRestart: @Sendable (WALRestart) -> Void = { _ in }, onError: @Sendable (any Error) -> Void = { _ in }
    ) async {
        let checkpointer: DatabaseQueue
        do {
            var config = Configuration()
            // A RESTART holds the write lock for as long as it waits: for the writer to finish and
            // for readers to move on. It waits for neither (and is tried again next time).
            config.busyMode = .immediateError
            checkpointer = try DatabaseQueue(path: path, configuration: config)
            try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        } catch {
            return onError(error)
        }
        // SQLite syncs the database file only when a checkpoint reaches the end of the WAL, which a
        // PASSIVE one under a stream of writes seldom does: the pages it copies would stay dirty in
        // the page cache until a checkpoint that does, whose fsync would then flush up to a WAL's
        // worth of them. Flushing the database file after each passive checkpoint that copied
        // something keeps every flush small (PostgreSQL's checkpoint_flush_after, for the same
        // reason). Only this connection waits for it.
        let file = open(path, O_RDONLY | O_CLOEXEC)
        defer { if file >= 0 { _ = Foundation.close(file) } }
        // And between fsyncs, the WAL's and the database file's new pages go to the disk as they
        // come, so that no fsync (a ledger commit's, a checkpoint's) has a backlog to write.
        let writeback = Writeback(paths: [path, path + "-wal"])
        defer { writeback.stop() }
        var copied = -1
        /// The WAL's length when a pause last brought it to its end: a shorter WAL at the next
        /// round means a write started it over.
        var caughtUpAt: Int?
        func passive() async throws -> (frames: Int, backfilled: Int) {
            let before = copied
            let result = try await checkpointer.writeWithoutTransaction { db in
                let row = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)")
                let result = (row?[1] as Int? ?? 0, row?[2] as Int? ?? 0)
                if file >= 0, result.1 > 0, result.1 != before, result.1 != result.0 { _ = Self.flush(file) }
                return result
            }
            copied = result.1
            return result
        }
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            do {
                let (frames, _) = try await passive()
                if let at = caughtUpAt {
                    if frames < at { onRestart(.paused) }
                    caughtUpAt = nil
                }
                guard frames > restartAfter else { continue }
                // Hold the background work back: it stops after its current transaction (a merge
                // commits after its current chunk). Then checkpoint until every frame is copied,
                // which SQLite follows with a sync of the database file, all without the write lock.
                // The next transaction to write then starts the WAL over by itself, as long as no
                // reader still uses the old frames (readers that begin now do not). At most ~50 ms.
                walRestartWanted.store(true, ordering: .sequentiallyConsistent)
                defer { walRestartWanted.store(false, ordering: .sequentiallyConsistent) }
                for _ in 0..<25 {
                    if backgroundTransactions.load(ordering: .sequentiallyConsistent) == 0 {
                        let (frames, backfilled) = try await passive()
                        if frames == backfilled {
                            caughtUpAt = frames
                            // Short readers that began before the end was reached finish first.
                            try await Task.sleep(for: .milliseconds(2))
                            break
                        }
                    }
                    try await Task.sleep(for: .milliseconds(2))
                }
                walRestartWanted.store(false, ordering: .sequentiallyConsistent)
                if caughtUpAt == nil, frames > forceAfter {
                    let done = try await checkpointer.writeWithoutTransaction { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(RESTART)")?[0] as Int? == 0 }
                    if done { onRestart(.forced) }
                }
            } catch let e as DatabaseError where e.resultCode == .SQLITE_BUSY {
                continue  // readers still on old frames: next time
            } catch is CancellationError {
                break
            } catch {
                onError(error)
            }
        }
        walRestartWanted.store(false, ordering: .sequentiallyConsistent)
        // A new task: this one is cancelled, and GRDB refuses to start work for a cancelled task.
        let pool = pool
        await Task { try? await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 256") } }.value
        try? checkpointer.close()
    }

    // MARK: Datasets

    /// Creates a dataset; `log` (its ledger entry) commits with it, durably (`logged`).
    public func createDataset(_ id: DatasetID, schema: Schema, createdAt: String, log: LedgerEntry? = nil) async throws -> DatasetInfo {
        let json = try Self.encodeSchema(schema)
        try await logged(log.map { [$0] }) { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM datasets WHERE owner = ? AND name = ?", arguments: [id.owner.rawValue, id.name]) != nil {
                throw CityMeshError(.datasetExists, "dataset '\(id)' already exists: choose another name, or see it with 'citymesh dataset show \(id.name)'")
            }
            try db.execute(
                sql: "INSERT INTO datasets (owner, name, schema, created_at) VALUES (?, ?, ?, ?)",
                arguments: [id.owner.rawValue, id.name, json, createdAt]
            )
        }
        return try await dataset(id)
    }

    public func datasets() async throws -> [DatasetInfo] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, owner, name, schema, created_at, live_count, last_seq FROM datasets ORDER BY owner, name").map {
                try Self.info(row: $0, db: db)
            }
        }
    }

    public func dataset(_ id: DatasetID) async throws -> DatasetInfo {
        try await pool.read { db in try Self.info(row: Self.datasetRow(id, db: db), db: db) }
    }

    /// Adds a nullable field. Only the schema changes: existing records read the new field as null.
    public func addField(_ id: DatasetID, name: String, type: FieldType, log: LedgerEntry? = nil) async throws -> DatasetInfo {
        try await logged(log.map { [$0] }) { db in
            let row = try Self.datasetRow(id, db: db)
            var schema = try Self.decodeSchema(row["schema"])
            try schema.addField(name: name, type: type)
            try db.execute(sql: "UPDATE datasets SET schema = ? WHERE id = ?", arguments: [try Self.encodeSchema(schema), row["id"] as Int64])
        }
        return try await dataset(id)
    }

    // MARK: Records

    /// Stamps user inputs with this node's clock and encodes their states: the CPU-heavy half of
    /// a write, done outside the write transaction so a pipeline can overlap it with the previous batch.
    public func prepare(_ inputs: [RecordInput], schema: Schema, physicalMillis: UInt64) -> [PreparedWrite] {
        let stamps: [Stamp] = clock.withLock { clock in
            inputs.map { _ in Stamp(hlc: clock.tick(physicalMillis: physicalMillis), city: city) }
        }
        return zip(inputs, stamps).map { PreparedWrite(input: $0, schema: schema, stamp: $1) }
    }

    /// What a write says about itself in the ledger, given what it changed. Throwing undoes the write.
    public typealias LedgerNote = @Sendable (WriteSummary) throws -> LedgerEntry

    /// Merges prepared writes into the stored records in one transaction; every change that alters
    /// a record takes the next sequence number. With `log`, the write's ledger entry goes in the
    /// same transaction, committed durably (below).
    ///
    /// `settling` marks the open conflicts of one field of one record settled in the same
    /// transaction (a conflict resolved with a value): the count is the summary's `settled`.
    public func apply(
        _ id: DatasetID, _ writes: [PreparedWrite], settling: (key: String, field: String, by: String, at: String)? = nil, log: LedgerNote? = nil
    ) async throws -> WriteSummary {
        let replica = id.owner != city
        return try await write(log: log) { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            var w = try BatchWriter(db: db, dataset: rowid)
            try w.mergeAll(writes[...])
            if replica { try Self.keepInOutbox(db: db, dataset: id, writes) }
            var summary = try w.finish(lastHLC: self.clock.withLock { $0.last })
            if let s = settling { summary.settled = try Self.settle(db: db, dataset: id, key: s.key, field: s.field, by: s.by, at: s.at) }
            return summary
        }
    }

    /// One write transaction. With `log`, it also appends the ledger entry `log` makes of its
    /// result and commits with `synchronous = FULL`: the change and its entry become durable
    /// together, with one fsync, or not at all — a crash or power cut cannot leave a change the
    /// admin API reported without its entry. (Apart, as two transactions, they cost a person's
    /// write a second turn at the writer and a hand-off to the ledger's group-commit task.)
    func write(log: LedgerNote?, _ body: @escaping @Sendable (Database) throws -> WriteSummary) async throws -> WriteSummary {
        guard let log else { return try await pool.write(body) }
        return try await logged({ [try log($0)] }, body)
    }

    /// One write transaction that appends the ledger entries `log` makes of `body`'s result in
    /// the same transaction and commits with `synchronous = FULL`: the change and its entries are
    /// durable together, with one fsync, before the caller acknowledges anything — or neither is.
    /// (In WAL mode the fsync also makes every earlier commit durable.) No entries: nothing is
    /// appended, and the commit is still synced.
    func logged<T: Sendable>(
        _ log: @escaping @Sendable (T) throws -> [LedgerEntry], _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
            var result: T?
            try db.inTransaction {
                let r = try body(db)
                let entries = try log(r)
                if !entries.isEmpty { _ = try LedgerStore.insert(entries, db: db) }
                result = r
                return .commit
            }
            guard let result else { throw CityMeshError(.internalError, "a logged write returned nothing") }
            return result
        }
    }

    /// `logged` with entries fixed in advance (nil: a plain write transaction).
    func logged<T: Sendable>(_ entries: [LedgerEntry]?, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        guard let entries else { return try await pool.write(body) }
        return try await logged({ _ in entries }, body)
    }

    /// Writes user inputs as local changes: each gets a fresh HLC stamp from this node's clock
    /// and merges into the stored state.
    public func write(_ id: DatasetID, inputs: [RecordInput], physicalMillis: UInt64) async throws -> WriteSummary {
        let schema = try await dataset(id).schema
        return try await apply(id, prepare(inputs, schema: schema, physicalMillis: physicalMillis))
    }

    /// Deletes a record (writes a tombstone). Throws `recordNotFound` if it is not live.
    /// With `log`, the deletion's ledger entry commits with it, durably (see `write(log:_:)`).
    public func delete(_ id: DatasetID, key: String, physicalMillis: UInt64, log: LedgerNote? = nil) async throws -> WriteSummary {
        try await write(log: log) { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            guard let existing = try Self.fetchState(db: db, dataset: rowid, key: key), existing.state.isLive else {
                throw CityMeshError(.recordNotFound, "no record '\(key)' in '\(id)': list keys with 'citymesh record list \(id.name)'")
            }
            let stamp = Stamp(hlc: self.clock.withLock { $0.tick(physicalMillis: physicalMillis) }, city: self.city)
            var w = try BatchWriter(db: db, dataset: rowid)
            try w.merge(PreparedWrite(key: key, state: .deletion(at: stamp)))
            // Its old values leave the stored batches with the next compaction pass.
            try Self.noteErasure(db: db, dataset: id, key: key, hlc: stamp.hlc)
            return try w.finish(lastHLC: self.clock.withLock { $0.last })
        }
    }

    /// Erases `keys` (`record erase`): each live one is deleted, and every one noted for the next
    /// compaction pass — all in one transaction, committed durably with one ledger entry per key
    /// (`log(key, deleted)`, deleted 0 for a key already deleted), so 10,000 keys cost one fsync,
    /// not 10,000. Keys that do not exist are the caller's to refuse first. Returns how many were
    /// deleted now.
    public func erase(_ id: DatasetID, keys: [String], physicalMillis: UInt64, log: (@Sendable (String, Int) -> LedgerEntry)?) async throws -> Int {
        let done: [(String, Int)] = try await logged({ done in log.map { l in done.map { l($0.0, $0.1) } } ?? [] }) { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            var w = try BatchWriter(db: db, dataset: rowid)
            var out: [(String, Int)] = []
            for key in keys {
                guard let existing = try Self.fetchState(db: db, dataset: rowid, key: key), existing.state.isLive else {
                    out.append((key, 0))
                    continue
                }
                let stamp = Stamp(hlc: self.clock.withLock { $0.tick(physicalMillis: physicalMillis) }, city: self.city)
                try w.merge(PreparedWrite(key: key, state: .deletion(at: stamp)))
                try Self.noteErasure(db: db, dataset: id, key: key, hlc: stamp.hlc)
                out.append((key, 1))
            }
            _ = try w.finish(lastHLC: self.clock.withLock { $0.last })
            return out
        }
        return done.reduce(0) { $0 + $1.1 }
    }

    public func get(_ id: DatasetID, key: String) async throws -> StoredRecord? {
        try await pool.read { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            return try Self.fetchState(db: db, dataset: rowid, key: key)
        }
    }

    /// The stored records of `keys` (live or deleted) that exist, by key, from one read.
    public func get(_ id: DatasetID, keys: [String]) async throws -> [String: StoredRecord] {
        try await pool.read { db in
            let (rowid, _) = try Self.datasetHandle(id, db: db)
            var out: [String: StoredRecord] = [:]
            for key in keys where out[key] == nil {
                if let r = try Self.fetchState(db: db, dataset: rowid, key: key) { out[key] = r }
            }
            return out
        }
    }

    /// Live records in key order, after `after` (exclusive), at most `limit`.
    public func list(_ id: DatasetID, after: String?, limit: Int) async throws -> [StoredRecord] {
        try await pool.read { db in try Self.page(db: db, id: id, after: after, limit: limit) }
    }

    /// Reads every live record in key order from one consistent snapshot, in pages.
    public func scan(_ id: DatasetID, pageSize: Int = 2000, _ body: ([StoredRecord]) async throws -> Void) async throws {
        let snapshot = try pool.makeSnapshot()
        var after: String?
        while true {
            let cursor = after
            let page = try await snapshot.read { db in try Self.page(db: db, id: id, after: cursor, limit: pageSize) }
            if page.isEmpty { return }
            try await body(page)
            after = page.last?.key
        }
    }

    static func page(db: Database, id: DatasetID, after: String?, limit: Int) throws -> [StoredRecord] {
        let (rowid, _) = try datasetHandle(id, db: db)
        let rows: [Row]
        if let after {
            rows = try Row.fetchAll(
                db, sql: "SELECT key, seq, state FROM records WHERE dataset = ? AND live = 1 AND key > ? ORDER BY key LIMIT ?",
                arguments: [rowid, after, limit])
        } else {
            rows = try Row.fetchAll(
                db, sql: "SELECT key, seq, state FROM records WHERE dataset = ? AND live = 1 ORDER BY key LIMIT ?",
                arguments: [rowid, limit])
        }
        return try rows.map { row in
            let blob: Data = row["state"]
            let key: String = row["key"]
            return StoredRecord(key: key, seq: row["seq"], state: try blob.withUnsafeBytes { try RecordStateCodec.decode(buffer: $0, key: key) })
        }
    }

    // MARK: Tokens

    public func insertToken(id: String, name: String, role: Role, hash: [UInt8], createdAt: String, log: LedgerEntry? = nil) async throws {
        try await logged(log.map { [$0] }) { db in
            try db.execute(
                sql: "INSERT INTO tokens (id, name, role, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [id, name, role.rawValue, Data(hash), createdAt])
        }
    }

    public func tokens() async throws -> [TokenInfo] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY created_at, id").map {
                TokenInfo(id: $0["id"], name: $0["name"], role: Role(rawValue: $0["role"]) ?? .auditor, createdAt: $0["created_at"], revokedAt: $0["revoked_at"])
            }
        }
    }

    public func revokeToken(id: String, at: String, log: LedgerEntry? = nil) async throws {
        try await logged(log.map { [$0] }) { db in
            try db.execute(sql: "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [at, id])
            if db.changesCount == 0 {
                throw CityMeshError(.tokenNotFound, "no active token '\(id)': see the ids with 'citymesh token list'")
            }
        }
    }

    /// The role of an active token with this hash, or nil.
    public func role(forTokenHash hash: [UInt8]) async throws -> Role? {
        try await pool.read { db in
            try String.fetchOne(db, sql: "SELECT role FROM tokens WHERE hash = ? AND revoked_at IS NULL", arguments: [Data(hash)])
                .flatMap(Role.init(rawValue:))
        }
    }

    // MARK: Helpers

    static func encodeSchema(_ s: Schema) throws -> String {
        String(decoding: try JSONEncoder().encode(s), as: UTF8.self)
    }

    static func decodeSchema(_ s: String) throws -> Schema {
        try JSONDecoder().decode(Schema.self, from: Data(s.utf8))
    }

    static func datasetRow(_ id: DatasetID, db: Database) throws -> Row {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT id, owner, name, schema, created_at, live_count, last_seq FROM datasets WHERE owner = ? AND name = ?",
            arguments: [id.owner.rawValue, id.name])
        else {
            throw CityMeshError(.datasetNotFound, "no dataset '\(id)': create it with 'citymesh dataset create \(id.name) …' or list them with 'citymesh dataset list'")
        }
        return row
    }

    static func datasetHandle(_ id: DatasetID, db: Database) throws -> (Int64, Schema) {
        let row = try datasetRow(id, db: db)
        return (row["id"], try decodeSchema(row["schema"]))
    }

    static func info(row: Row, db: Database) throws -> DatasetInfo {
        let count: Int = row["live_count"]
        let lastSeq: Int64 = row["last_seq"]
        return DatasetInfo(
            id: try DatasetID(owner: CitySlug(row["owner"]), name: row["name"]),
            schema: try decodeSchema(row["schema"]),
            createdAt: row["created_at"],
            recordCount: count,
            lastSeq: lastSeq)
    }

    static func fetchState(db: Database, dataset: Int64, key: String) throws -> StoredRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT seq, state FROM records WHERE dataset = ? AND key = ?", arguments: [dataset, key]) else {
            return nil
        }
        let blob: Data = row["state"]
        return StoredRecord(key: key, seq: row["seq"], state: try blob.withUnsafeBytes { try RecordStateCodec.decode(buffer: $0, key: key) })
    }
}

/// A write whose stamp is assigned and whose state is already encoded. The decoded state is
/// only built when the record turns out to exist and must be merged.
public struct PreparedWrite: Sendable {
    enum Source: Sendable {
        case input(RecordInput, schema: Schema, stamp: Stamp)
        case state(RecordState)
    }

    public let key: String
    public let encoded: [UInt8]
    public let live: Bool
    let source: Source

    init(input: RecordInput, schema: Schema, stamp: Stamp) {
        key = input.key
        encoded = RecordStateCodec.encode(input, keyField: schema.key.id, stamp: stamp)
        live = true  // a put always writes the key cell
        source = .input(input, schema: schema, stamp: stamp)
    }

    init(key: String, state: RecordState) {
        self.key = key
        encoded = RecordStateCodec.encode(state, key: key)
        live = state.isLive
        source = .state(state)
    }

    public var state: RecordState {
        switch source {
        case .input(let input, let schema, let stamp): input.state(schema: schema, stamp: stamp)
        case .state(let state): state
        }
    }
}

/// Applies many merges inside one transaction; owns the sequence counter for its duration.
/// New records, the common case of a bulk import, go through SQLite's C API directly: GRDB's
/// argument boxing costs more than the insert itself at a million rows.
struct BatchWriter {
    let db: Database
    let dataset: Int64
    var nextSeq: Int64
    let firstSeq: Int64
    var liveDelta = 0
    var summary = WriteSummary()
    /// Scratch space for one chunk's keys and states, reused across chunks.
    var arena: [UInt8] = []
    var offsets: [(key: Int, blob: Int, end: Int)] = []
    let insert: Statement
    let insertMany: Statement
    let select: Statement
    let update: Statement
    /// Rows per multi-row INSERT: amortises SQLite's per-statement cost over many rows.
    static let chunk = 200
    /// Called with (key, stored, incoming) before a write merges into a record that exists:
    /// replication uses it to find conflicts.
    var observe: ((String, RecordState, RecordState) -> Void)?

    init(db: Database, dataset: Int64) throws {
        self.db = db
        self.dataset = dataset
        guard let seq = try Int64.fetchOne(db, sql: "SELECT next_seq FROM node_state WHERE id = 1") else {
            throw CityMeshError(.nodeNotInitialized, "the database has no node identity: run 'citymesh init' again with --force")
        }
        nextSeq = seq
        firstSeq = seq
        insert = try db.cachedStatement(
            sql: "INSERT INTO records (seq, dataset, key, live, state) VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset, key) DO NOTHING")
        insertMany = try db.cachedStatement(
            sql: "INSERT INTO records (seq, dataset, key, live, state) VALUES "
                + Array(repeating: "(?, ?, ?, ?, ?)", count: Self.chunk).joined(separator: ", ")
                + " ON CONFLICT (dataset, key) DO NOTHING")
        select = try db.cachedStatement(sql: "SELECT seq, state FROM records WHERE dataset = ? AND key = ?")
        update = try db.cachedStatement(sql: "UPDATE records SET seq = ?1, live = ?4, state = ?5 WHERE dataset = ?2 AND key = ?3")
    }

    /// Merges a batch: whole chunks of new records go in with one multi-row INSERT each; a chunk
    /// where some keys already existed (or repeat) has those rows merged one by one afterwards.
    /// Sequence numbers stay strictly increasing; a row that turned out to exist gives up the
    /// number it was offered and takes a later one when merged. `stop` is asked after each chunk
    /// (and each single row after the last whole chunk); when it says yes, the merge ends there.
    /// Returns how many of `writes` were merged.
    @discardableResult
    mutating func mergeAll(_ writes: ArraySlice<PreparedWrite>, stop: () -> Bool = { false }) throws -> Int {
        var i = writes.startIndex
        while writes.endIndex - i >= Self.chunk {
            if i > writes.startIndex, stop() { return i - writes.startIndex }
            let rows = writes[i..<(i + Self.chunk)]
            let firstSeq = nextSeq
            let inserted = try insertChunk(rows, firstSeq: firstSeq)
            // Offered numbers that no row kept are handed out again, so a batch that changes
            // nothing takes none; after a partial chunk the unused ones stay as gaps.
            nextSeq += inserted == 0 ? 0 : Int64(Self.chunk)
            if inserted == Self.chunk {
                summary.written += Self.chunk
                for p in rows where p.live { liveDelta += 1 }
            } else {
                for (offset, p) in rows.enumerated() {
                    let offered = firstSeq + Int64(offset)
                    guard let (seq, stored) = try fetch(key: p.key) else {
                        throw CityMeshError(.internalError, "record '\(p.key)' vanished inside a transaction")
                    }
                    if inserted > 0 && seq == offered {
                        summary.written += 1
                        if p.live { liveDelta += 1 }
                    } else {
                        try mergeExisting(p, stored: stored)
                    }
                }
            }
            i += Self.chunk
        }
        while i < writes.endIndex {
            if i > writes.startIndex, stop() { return i - writes.startIndex }
            try merge(writes[i])
            i += 1
        }
        return writes.count
    }

    /// One multi-row `INSERT … ON CONFLICT DO NOTHING`; returns how many rows were inserted.
    /// Keys and states are first laid out in one buffer and bound without copies (`SQLITE_STATIC`),
    /// since per-row copies cost the writer more than SQLite's own work on a bulk import.
    private mutating func insertChunk(_ rows: ArraySlice<PreparedWrite>, firstSeq: Int64) throws -> Int {
        arena.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        for p in rows {
            let keyStart = arena.count
            arena.append(contentsOf: p.key.utf8)
            let blobStart = arena.count
            arena.append(contentsOf: p.encoded)
            offsets.append((keyStart, blobStart, arena.count))
        }
        let stmt = insertMany.sqliteStatement
        let dataset = self.dataset
        let offsets = self.offsets
        let rc: Int32 = arena.withUnsafeBytes { buffer in
            let base = buffer.baseAddress!  // invariant: the arena holds at least one key byte per row
            sqlite3_reset(stmt)
            for (i, p) in rows.enumerated() {
                let (k, b, e) = offsets[i]
                Self.bind(
                    stmt, from: Int32(1 + 5 * i), seq: firstSeq + Int64(i), dataset: dataset,
                    key: UnsafeRawBufferPointer(start: base + k, count: b - k), live: p.live,
                    state: UnsafeRawBufferPointer(start: base + b, count: e - b))
            }
            return Self.stepOnce(stmt)
        }
        guard rc == SQLITE_DONE else {
            throw CityMeshError(.ioError, "writing records failed: \(String(cString: sqlite3_errmsg(db.sqliteConnection)))")
        }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    mutating func merge(_ p: PreparedWrite) throws {
        let seq = nextSeq
        if try insertIfAbsent(key: p.key, seq: seq, live: p.live, encoded: p.encoded) {
            nextSeq += 1
            summary.written += 1
            if p.live { liveDelta += 1 }
            return
        }
        guard let (_, stored) = try fetch(key: p.key) else {
            throw CityMeshError(.internalError, "record '\(p.key)' vanished inside a transaction")
        }
        try mergeExisting(p, stored: stored)
    }

    /// The stored sequence number and state of a record, read with raw bindings.
    private func fetch(key: String) throws -> (Int64, RecordState)? {
        let stmt = select.sqliteStatement
        var bound = key
        return try bound.withUTF8 { k -> (Int64, RecordState)? in
            sqlite3_reset(stmt)
            sqlite3_bind_int64(stmt, 1, dataset)
            k.withMemoryRebound(to: CChar.self) { _ = sqlite3_bind_text(stmt, 2, $0.baseAddress, Int32($0.count), nil) }
            defer {
                sqlite3_reset(stmt)
                sqlite3_clear_bindings(stmt)
            }
            switch sqlite3_step(stmt) {
            case SQLITE_ROW:
                let seq = sqlite3_column_int64(stmt, 0)
                let n = Int(sqlite3_column_bytes(stmt, 1))
                let state = try RecordStateCodec.decode(buffer: UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, 1), count: n), key: key)
                return (seq, state)
            case SQLITE_DONE:
                return nil
            default:
                throw CityMeshError(.ioError, "reading a record failed: \(String(cString: sqlite3_errmsg(db.sqliteConnection)))")
            }
        }
    }

    /// Merges into a record that exists, taking the next sequence number if anything changed.
    private mutating func mergeExisting(_ p: PreparedWrite, stored: RecordState) throws {
        let seq = nextSeq
        observe?(p.key, stored, p.state)
        var state = stored
        let wasLive = state.isLive
        if state.merge(p.state) {
            liveDelta += (state.isLive ? 1 : 0) - (wasLive ? 1 : 0)
            try store(seq: seq, key: p.key, state: state)
            nextSeq += 1
            summary.written += 1
        } else {
            summary.unchanged += 1
        }
    }

    /// `INSERT … ON CONFLICT DO NOTHING`; true when a row was inserted.
    private func insertIfAbsent(key: String, seq: Int64, live: Bool, encoded: [UInt8]) throws -> Bool {
        try step(insert, seq: seq, key: key, live: live, encoded: encoded, doing: "writing")
        return sqlite3_changes(db.sqliteConnection) == 1
    }

    /// Rewrites a record's state under a new sequence number.
    private func store(seq: Int64, key: String, state: RecordState) throws {
        try step(update, seq: seq, key: key, live: state.isLive, encoded: RecordStateCodec.encode(state, key: key), doing: "updating")
    }

    /// Binds a record as `?1 seq, ?2 dataset, ?3 key, ?4 live, ?5 state` and steps the statement once.
    /// The key and blob are bound without copies (`SQLITE_STATIC`): both outlive the step.
    private func step(_ statement: Statement, seq: Int64, key: String, live: Bool, encoded: [UInt8], doing: String) throws {
        let stmt = statement.sqliteStatement
        var key = key
        let dataset = self.dataset
        let rc: Int32 = key.withUTF8 { k in
            encoded.withUnsafeBytes { blob in
                sqlite3_reset(stmt)
                Self.bind(stmt, from: 1, seq: seq, dataset: dataset, key: UnsafeRawBufferPointer(k), live: live, state: blob)
                return Self.stepOnce(stmt)
            }
        }
        guard rc == SQLITE_DONE else {
            throw CityMeshError(.ioError, "\(doing) record '\(key)' failed: \(String(cString: sqlite3_errmsg(db.sqliteConnection)))")
        }
    }

    /// Binds one record's `seq, dataset, key, live, state` to five parameters starting at `from`,
    /// without copies: the caller keeps the key and state bytes alive until the step.
    private static func bind(
        _ stmt: OpaquePointer, from p: Int32, seq: Int64, dataset: Int64, key: UnsafeRawBufferPointer, live: Bool,
        state: UnsafeRawBufferPointer
    ) {
        sqlite3_bind_int64(stmt, p, seq)
        sqlite3_bind_int64(stmt, p + 1, dataset)
        sqlite3_bind_text(stmt, p + 2, key.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(key.count), nil)
        sqlite3_bind_int(stmt, p + 3, live ? 1 : 0)
        sqlite3_bind_blob(stmt, p + 4, state.baseAddress, Int32(state.count), nil)
    }

    /// Steps a bound statement once and leaves it reset and unbound.
    private static func stepOnce(_ stmt: OpaquePointer) -> Int32 {
        let rc = sqlite3_step(stmt)
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        return rc
    }

    func finish(lastHLC: HLC) throws -> WriteSummary {
        try db.execute(
            sql: "UPDATE node_state SET next_seq = ?, last_hlc = max(last_hlc, ?) WHERE id = 1",
            arguments: [nextSeq, Int64(bitPattern: lastHLC.rawValue)])
        if nextSeq > firstSeq || liveDelta != 0 {
            try db.execute(
                sql: "UPDATE datasets SET live_count = live_count + ?, last_seq = ? WHERE id = ?",
                arguments: [liveDelta, nextSeq - 1, dataset])
        }
        var s = summary
        s.lastSeq = nextSeq - 1
        return s
    }
}
