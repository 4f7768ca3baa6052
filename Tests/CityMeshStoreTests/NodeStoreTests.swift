import CityMeshCore
import Foundation
import GRDB
import Testing
@testable import CityMeshStore

/// A fresh node database in a temporary directory (a real SQLite file in WAL mode).
func makeStore(city: String = "hangzhou") throws -> (NodeStore, String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-store-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return (try NodeStore(path: dir + "/citymesh.db", createFor: try CitySlug(city)), dir)
}

@Suite("Node store")
struct NodeStoreTests {
    let schema = try! Schema(keyField: "station", fields: [("station", .string), ("district", .string), ("pm25", .double)])
    let id = try! DatasetID(owner: CitySlug("hangzhou"), name: "air-quality")

    func input(_ key: String, _ assignments: [(String, String)]) throws -> RecordInput {
        try RecordInput.fromText(key: key, assignments: assignments, schema: schema)
    }

    @Test("datasets are created once, listed and found")
    func datasets() async throws {
        let (store, _) = try makeStore()
        let info = try await store.createDataset(id, schema: schema, createdAt: "2026-11-29T00:00:00Z")
        #expect(info.recordCount == 0)
        await #expect(throws: CityMeshError(.datasetExists, "")) { try await store.createDataset(id, schema: schema, createdAt: "x") }
        #expect(try await store.datasets().map(\.id) == [id])
        await #expect(throws: CityMeshError(.datasetNotFound, "")) {
            try await store.dataset(DatasetID(owner: CitySlug("hangzhou"), name: "nope"))
        }
    }

    @Test("writes merge per field and take increasing sequence numbers")
    func writes() async throws {
        let (store, _) = try makeStore()
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        let s1 = try await store.write(id, inputs: [try input("S-1", [("pm25", "41.5"), ("district", "Xihu")])], physicalMillis: 1000)
        let s2 = try await store.write(id, inputs: [try input("S-1", [("pm25", "50")])], physicalMillis: 1000)
        #expect(s2.lastSeq > s1.lastSeq)
        let r = try #require(try await store.get(id, key: "S-1"))
        #expect(r.state.cell(field: 3)?.value == .double(50))
        #expect(r.state.cell(field: 2)?.value == .string("Xihu"), "a put leaves fields it does not name alone")
        #expect(r.seq == s2.lastSeq)
        // The clock never goes backwards across writes, even when the wall clock does.
        let s3 = try await store.write(id, inputs: [try input("S-1", [("pm25", "60")])], physicalMillis: 10)
        #expect(try await store.get(id, key: "S-1")?.state.cell(field: 3)?.value == .double(60))
        #expect(s3.lastSeq == s2.lastSeq + 1)
    }

    @Test("delete writes a tombstone; the record leaves listings and can be put again")
    func deletes() async throws {
        let (store, _) = try makeStore()
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        _ = try await store.write(id, inputs: [try input("S-1", [("pm25", "1")]), try input("S-2", [])], physicalMillis: 5)
        _ = try await store.delete(id, key: "S-1", physicalMillis: 6)
        #expect(try await store.list(id, after: nil, limit: 10).map(\.key) == ["S-2"])
        #expect(try await store.get(id, key: "S-1")?.state.isLive == false)
        await #expect(throws: CityMeshError(.recordNotFound, "")) { try await store.delete(id, key: "S-1", physicalMillis: 7) }
        _ = try await store.write(id, inputs: [try input("S-1", [("district", "Binjiang")])], physicalMillis: 8)
        let back = try #require(try await store.get(id, key: "S-1"))
        #expect(back.state.isLive && back.state.cell(field: 3) == nil)
        #expect(try await store.dataset(id).recordCount == 2)
    }

    @Test("listing pages in key order and scanning sees every live record")
    func paging() async throws {
        let (store, _) = try makeStore()
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        let inputs = try (0..<4500).map { try input(String(format: "S-%05d", $0), [("pm25", "\($0)")]) }
        _ = try await store.write(id, inputs: inputs, physicalMillis: 1)
        let first = try await store.list(id, after: nil, limit: 2)
        #expect(first.map(\.key) == ["S-00000", "S-00001"])
        #expect(try await store.list(id, after: "S-00001", limit: 1).map(\.key) == ["S-00002"])
        var seen = 0
        try await store.scan(id, pageSize: 1000) { seen += $0.count }
        #expect(seen == 4500)
    }

    @Test("adding a nullable field rewrites no record")
    func addField() async throws {
        let (store, _) = try makeStore()
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        _ = try await store.write(id, inputs: [try input("S-1", [("pm25", "1")])], physicalMillis: 1)
        let before = try #require(try await store.get(id, key: "S-1"))
        let info = try await store.addField(id, name: "no2", type: .double)
        #expect(info.schema.field(named: "no2")?.id == 4)
        let after = try #require(try await store.get(id, key: "S-1"))
        #expect(after.seq == before.seq && after.state == before.state)
    }

    @Test("tokens: stored as hashes, revocable")
    func tokens() async throws {
        let (store, _) = try makeStore()
        try await store.insertToken(id: "abcd1234", name: "audit", role: .auditor, hash: [1, 2, 3], createdAt: "t")
        #expect(try await store.role(forTokenHash: [1, 2, 3]) == .auditor)
        #expect(try await store.role(forTokenHash: [9]) == nil)
        try await store.revokeToken(id: "abcd1234", at: "t2")
        #expect(try await store.role(forTokenHash: [1, 2, 3]) == nil)
        await #expect(throws: CityMeshError(.tokenNotFound, "")) { try await store.revokeToken(id: "abcd1234", at: "t3") }
    }

    @Test("the database reopens with its city, and a newer schema is refused")
    func reopen() async throws {
        let (store, dir) = try makeStore(city: "suzhou")
        try store.close()
        let again = try NodeStore(path: dir + "/citymesh.db")
        #expect(again.city.rawValue == "suzhou")
        try await again.pool.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        try again.close()
        #expect(throws: CityMeshError(.storeVersionTooNew, "")) { try NodeStore(path: dir + "/citymesh.db") }
        #expect(throws: CityMeshError(.nodeNotInitialized, "")) { try NodeStore(path: dir + "/missing.db") }
    }
}
