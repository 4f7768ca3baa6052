import CityMeshCore
import Foundation
import GRDB
import Synchronization
import Testing
@testable import CityMeshStore

/// How the node schedules its single SQLite writer: admin writes ahead of background merges, and
/// WAL checkpoints on a connection of their own rather than inside someone's commit.
final class Events: Sendable {
    let list = Mutex<[String]>([])
    func add(_ e: String) { list.withLock { $0.append(e) } }
    var all: [String] { list.withLock { $0 } }
}

@Suite("Write scheduling")
struct WriteSchedulingTests {
    static func size(_ path: String) -> Int { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }

    /// A new store with one dataset of a string key and `value`.
    static func storeWithDataset(value: FieldType) async throws -> (NodeStore, DatasetID, Schema) {
        let (store, _) = try makeStore()
        let id = try DatasetID(owner: CitySlug("hangzhou"), name: "air")
        let schema = try Schema(keyField: "k", fields: [("k", .string), (value == .string ? "s" : "v", value)])
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        return (store, id, schema)
    }

    /// Waits until the checkpointer has turned SQLite's automatic checkpoint off.
    static func untilCheckpointerRuns(_ store: NodeStore) async throws {
        while try await store.pool.write({ db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") }) != 0 { try await Task.sleep(for: .milliseconds(5)) }
    }

    @Test("the checkpointer turns SQLite's automatic checkpoint off, backfills the WAL on its own connection, and turns it back on when stopped")
    func checkpointer() async throws {
        let (store, id, schema) = try await Self.storeWithDataset(value: .int)
        let running = Task { await store.runCheckpointer(interval: .milliseconds(20)) }
        // Until the checkpointer has switched it off, the writer still checkpoints by itself.
        try await Self.untilCheckpointerRuns(store)
        // Transactions far below the automatic threshold (256 pages of 16 KiB): only a checkpoint
        // writes to the database file, so only the checkpointer can make it grow.
        let before = Self.size(store.path)
        for i in 0..<20 {
            let inputs = try (0..<100).map { j in try RecordInput.fromText(key: "k\(i)-\(j)", assignments: [("v", "\(j)")], schema: schema) }
            _ = try await store.write(id, inputs: inputs, physicalMillis: 1000)
        }
        #expect(Self.size(store.path + "-wal") < 256 * 16_384, "the WAL stays below SQLite's own threshold")
        for _ in 0..<500 where Self.size(store.path) <= before { try await Task.sleep(for: .milliseconds(20)) }
        #expect(Self.size(store.path) > before, "the checkpointer moved the new pages into the database file")
        running.cancel()
        await running.value
        #expect(try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") } == 256)
        #expect(try await store.get(id, key: "k19-99")?.state.isLive == true)
    }

    @Test("under a stream of background writes the WAL starts over while they pause, without a RESTART holding the write lock")
    func walStartsOverInPauses() async throws {
        let (store, id, schema) = try await Self.storeWithDataset(value: .string)
        let restarts = Mutex<[NodeStore.WALRestart]>([])
        // 32 frames of 16 KiB: the WAL should start over each time it passes 512 KiB; a forced
        // RESTART is never allowed here.
        let running = Task {
            await store.runCheckpointer(
                interval: .milliseconds(10), restartAfter: 32, forceAfter: .max, onRestart: { how in restarts.withLock { $0.append(how) } })
        }
        try await Self.untilCheckpointerRuns(store)
        // Two background writers back to back, as replication's merges are during a sync: the
        // writer is never idle, so a passive checkpoint alone never reaches the WAL's end.
        let padding = String(repeating: "x", count: 300)
        let largest = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<2 {
                group.addTask {
                    var largest = 0
                    for i in 0..<60 {
                        let inputs = try (0..<200).map { j in try RecordInput.fromText(key: "w\(w)-\(i)-\(j)", assignments: [("s", padding)], schema: schema) }
                        _ = try await store.background { try await store.write(id, inputs: inputs, physicalMillis: 1000) }
                        largest = max(largest, Self.size(store.path + "-wal"))
                    }
                    return largest
                }
            }
            return try await group.reduce(0) { max($0, $1) }
        }
        running.cancel()
        await running.value
        let written = 2 * 60 * 200 * padding.utf8.count
        let seen = restarts.withLock { $0 }
        #expect(!seen.isEmpty && seen.allSatisfy { $0 == .paused }, "the WAL started over in pauses only: \(seen)")
        // Without restarts the WAL takes 13–26 MB here (16 KiB pages, indexes); the bound leaves
        // room for a checkpointer that a loaded machine schedules late.
        #expect(largest < written, "the WAL file stayed at \(largest) bytes while \(written) bytes of records were written")
        #expect(store.walRestartWanted.load(ordering: .sequentiallyConsistent) == false, "no pause is left behind")
        #expect(try await store.get(id, key: "w1-59-199")?.state.isLive == true)
    }

    /// The system's dirty page cache, in bytes (`Dirty:` of /proc/meminfo).
    static func dirtyBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Dirty:") }),
            let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return kib * 1024
    }

    /// Whether the kernel leaves 64 MiB of fresh writes in memory for a while by itself: Linux does
    /// until 10% of memory is dirty or the pages are 30 s old, unless the machine is tuned otherwise.
    static var kernelKeepsDirtyPages: Bool {
        func read(_ name: String) -> Int { Int(((try? String(contentsOfFile: "/proc/sys/vm/" + name, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 }
        let memory = Int(ProcessInfo.processInfo.physicalMemory)
        let background = read("dirty_background_bytes") > 0 ? read("dirty_background_bytes") : memory / 100 * read("dirty_background_ratio")
        return Writeback.isAvailable && background >= 512 << 20 && read("dirty_expire_centisecs") >= 500
    }

    @Test("writeback hands a file's new pages to the disk as they come, without an fsync", .enabled(if: kernelKeepsDirtyPages))
    func writebackStartsEarly() async throws {
        let (_, dir) = try makeStore()
        let path = dir + "/pages"
        // The count is the whole system's: first write out what others left dirty, so that none of
        // it reaches its 30 s and leaves memory during the test.
        sync()
        let fd = open(path, O_RDWR | O_CREAT, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        // Left alone, the 64 MiB stay dirty in memory (the control). Another test of this run that
        // syncs its files (a durable commit commits the file system's journal, which can write
        // out other files' pages too) can flush them meanwhile: then the pages are dirtied again,
        // up to five times, before the control is judged.
        var before = 0
        for attempt in 0..<5 {
            let chunk = [UInt8](repeating: UInt8(0x5a + attempt), count: 1 << 20)
            for i in 0..<64 { #expect(pwrite(fd, chunk, chunk.count, off_t(i << 20)) == chunk.count) }
            try await Task.sleep(for: .milliseconds(300))
            before = Self.dirtyBytes()
            if before >= 48 << 20 { break }
        }
        #expect(before >= 48 << 20, "the new pages are still in memory only: \(before) bytes dirty")
        let writeback = Writeback(paths: [path], interval: .milliseconds(10))
        var after = before
        for _ in 0..<200 where before - after < 48 << 20 {
            try await Task.sleep(for: .milliseconds(50))
            after = Self.dirtyBytes()
        }
        writeback.stop()
        #expect(before - after >= 48 << 20, "dirty pages went from \(before) to \(after) bytes")
        // Stopping twice is harmless.
        writeback.stop()
    }

    @Test("a background writer waits for urgent writes in flight, and for no longer than its limit")
    func urgentFirst() async throws {
        let (store, _) = try makeStore()
        let order = Events()
        let started = AsyncStream.makeStream(of: Void.self)
        let release = AsyncStream.makeStream(of: Void.self)
        let urgent = Task {
            await store.urgent { @Sendable in
                started.continuation.yield()
                for await _ in release.stream { break }
                order.add("urgent done")
            }
        }
        for await _ in started.stream { break }
        let background = Task {
            await store.yieldToUrgentWrites(limit: .seconds(60))
            order.add("background goes")
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(order.all.isEmpty, "the background writer is still holding back")
        release.continuation.yield()
        await urgent.value
        await background.value
        #expect(order.all == ["urgent done", "background goes"])

        // An urgent write that does not finish holds a background writer back only for its limit.
        let hold = AsyncStream.makeStream(of: Void.self)
        let stuck = Task { await store.urgent { @Sendable in for await _ in hold.stream {} } }
        while store.urgentWrites.load(ordering: .sequentiallyConsistent) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        await store.yieldToUrgentWrites(limit: .milliseconds(20))
        #expect(store.urgentWrites.load(ordering: .sequentiallyConsistent) == 1, "it went ahead while the urgent write was still in flight")
        hold.continuation.finish()
        await stuck.value
        #expect(store.urgentWrites.load(ordering: .sequentiallyConsistent) == 0)
    }
}
