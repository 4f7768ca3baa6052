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

    @Test("the checkpointer turns SQLite's automatic checkpoint off, backfills the WAL on its own connection, and turns it back on when stopped")
    func checkpointer() async throws {
        let (store, _) = try makeStore()
        let id = try DatasetID(owner: CitySlug("hangzhou"), name: "air")
        let schema = try Schema(keyField: "k", fields: [("k", .string), ("v", .int)])
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        let running = Task { await store.runCheckpointer(interval: .milliseconds(20)) }
        // Until the checkpointer has switched it off, the writer still checkpoints by itself.
        while try await store.pool.write({ db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") }) != 0 { try await Task.sleep(for: .milliseconds(5)) }
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
