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

    @Test("bulk writes: chunks with existing and repeated keys merge correctly and keep seq increasing")
    func bulkChunks() async throws {
        let (store, _) = try makeStore()
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        // 200 new keys, then a batch that mixes 150 existing keys, 100 new ones and in-chunk repeats.
        let first = try (0..<200).map { try input("K-\(String(format: "%04d", $0))", [("pm25", "1")]) }
        let s1 = try await store.write(id, inputs: first, physicalMillis: 10)
        #expect(s1.written == 200 && s1.lastSeq == 200)
        var second: [RecordInput] = []
        for i in 0..<250 {
            let k = i < 150 ? i * 1 : 200 + i  // 0..149 exist; 350..449 are new
            second.append(try input("K-\(String(format: "%04d", k))", [("district", "D\(i)")]))
            if i % 10 == 0 { second.append(try input("K-\(String(format: "%04d", k))", [("pm25", "2")])) }
        }
        let s2 = try await store.write(id, inputs: second, physicalMillis: 20)
        #expect(s2.written == second.count && s2.lastSeq > s1.lastSeq)
        #expect(try await store.dataset(id).recordCount == 300)
        let k0 = try #require(try await store.get(id, key: "K-0000"))
        #expect(k0.state.cell(field: 2)?.value == .string("D0"), "the existing record got the new field")
        #expect(k0.state.cell(field: 3)?.value == .double(2), "the repeat later in the batch wins")
        let k360 = try #require(try await store.get(id, key: "K-0360"))
        #expect(k360.state.cell(field: 3)?.value == .double(2) && k360.state.cell(field: 2)?.value == .string("D160"))
        let untouched = try #require(try await store.get(id, key: "K-0199"))
        #expect(untouched.state.cell(field: 2) == nil && untouched.seq <= s1.lastSeq)
        // Sequence numbers are unique and every record's is at most the last one handed out.
        var seqs = Set<Int64>()
        try await store.scan(id) { page in for r in page { seqs.insert(r.seq); #expect(r.seq <= s2.lastSeq) } }
        #expect(seqs.count == 300)
        // Re-applying the same states (as a replica receiving a batch twice would) changes nothing
        // and takes no sequence number, through the bulk path as through the single one.
        let batch = store.prepare(try (0..<70).map { try input("R-\($0)", [("pm25", "3")]) }, schema: schema, physicalMillis: 30)
        let once = try await store.apply(id, batch)
        let twice = try await store.apply(id, batch)
        #expect(once.written == 70)
        #expect(twice.written == 0 && twice.unchanged == 70 && twice.lastSeq == once.lastSeq)
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
