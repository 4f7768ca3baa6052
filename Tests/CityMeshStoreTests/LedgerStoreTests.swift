@testable import CityMeshCore
import Crypto
import Foundation
import GRDB
import Synchronization
import Testing
@testable import CityMeshStore

/// The ledger on a real SQLite file: group commit, verification, and tampering by hand.
@Suite("Ledger store")
struct LedgerStoreTests {
    static func makeStore() throws -> NodeStore {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-ledger-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return try NodeStore(path: dir + "/citymesh.db", createFor: try CitySlug("hangzhou"))
    }

    /// Runs the writer while `body` appends; returns after the writer drained.
    static func withWriter<T: Sendable>(_ ledger: LedgerStore, _ body: @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { await ledger.runWriter(); return nil }
            let result = try await body()
            ledger.finish()
            try await group.waitForAll()
            return result
        }
    }

    static func entry(_ i: Int) -> LedgerEntry {
        LedgerEntry(time: "2026-11-29T08:00:00.\(String(format: "%06d", i))Z", kind: LedgerEntry.Kind.recordWritten, actor: "token:test", dataset: "hangzhou/air", counts: ["written": 1])
    }

    /// Signs a checkpoint of everything stored, as the node's publisher does.
    static func checkpoint(_ ledger: LedgerStore, _ signer: NoteSigner) async throws {
        let leaves = try await ledger.leafHashes(from: 0)
        let cp = Checkpoint(origin: signer.verifier.name, size: UInt64(leaves.count), root: Merkle.root(leaves))
        try await ledger.saveCheckpoint(size: cp.size, note: try signer.sign(cp.text), createdAt: "t")
    }

    @Test("a record write and its ledger entry commit in one transaction: both or neither, indices shared with group commit")
    func writeWithItsEntry() async throws {
        let store = try Self.makeStore()
        let ledger = LedgerStore(store: store)
        let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        let id = try DatasetID(owner: CitySlug("hangzhou"), name: "air")
        let schema = try Schema(keyField: "k", fields: [("k", .string), ("v", .int)])
        _ = try await store.createDataset(id, schema: schema, createdAt: "t")
        func put(_ key: String, _ v: Int) throws -> [PreparedWrite] {
            store.prepare([try RecordInput.fromText(key: key, assignments: [("v", "\(v)")], schema: schema)], schema: schema, physicalMillis: 1000)
        }
        let note: NodeStore.LedgerNote = { s in
            LedgerEntry(time: "t", kind: LedgerEntry.Kind.recordWritten, actor: "token:a", dataset: "hangzhou/air", counts: ["written": s.written, "unchanged": s.unchanged])
        }
        // An entry through the group-commit writer, then one inside a write: one sequence of indices.
        let first = try await Self.withWriter(ledger) { try await ledger.append(Self.entry(0)) }
        #expect(first == 0)
        let written = try await store.apply(id, try put("a", 1), log: note)
        #expect(written.written == 1)
        let again = try await store.apply(id, try put("a", 2), log: note)
        #expect(again.written == 1)
        _ = try await store.delete(id, key: "a", physicalMillis: 2000, log: { s in
            LedgerEntry(time: "t", kind: LedgerEntry.Kind.recordDeleted, actor: "token:a", dataset: "hangzhou/air", counts: ["deleted": s.written])
        })
        let entries = try await ledger.entries()
        #expect(entries.map(\.index) == [0, 1, 2, 3])
        #expect(entries[1].counts == ["written": 1, "unchanged": 0])
        #expect(try await store.get(id, key: "a")?.state.isLive == false)
        #expect(entries[3].kind == LedgerEntry.Kind.recordDeleted && entries[3].counts == ["deleted": 1])
        // A write whose entry cannot be made is undone: no record without its entry.
        struct Refused: Error {}
        await #expect(throws: Refused.self) { _ = try await store.apply(id, try put("b", 2), log: { _ in throw Refused() }) }
        #expect(try await store.get(id, key: "b") == nil)
        #expect(try await ledger.count() == 4)
        // A deletion that fails (no such record) logs nothing either.
        await #expect(throws: CityMeshError.self) { _ = try await store.delete(id, key: "missing", physicalMillis: 3000, log: note) }
        #expect(try await ledger.count() == 4)
        // The entries written inside record writes are ordinary leaves of the signed tree.
        try await Self.checkpoint(ledger, signer)
        let report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.ok && report.entries == 4, "\(report.problem ?? "")")
        // The connection is back to NORMAL for the writes that follow (only ledger commits pay an fsync).
        #expect(try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 1)
    }

    @Test("concurrent appends get distinct, dense indices; the audit recomputes the signed tree")
    func groupCommit() async throws {
        let store = try Self.makeStore()
        let ledger = LedgerStore(store: store)
        let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        let indices = try await Self.withWriter(ledger) {
            try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for t in 0..<8 {
                    group.addTask { var out: [UInt64] = []; for i in 0..<125 { out.append(try await ledger.append(Self.entry(t * 1000 + i))) }; return out }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        }
        #expect(indices.sorted() == Array(0..<1000))
        #expect(try await ledger.count() == 1000)
        try await Self.checkpoint(ledger, signer)
        let report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.ok, "\(report.problem ?? "")")
        #expect(report.entries == 1000)
        #expect(report.checkpointsVerified == 1)
        // Each stored entry carries its own index.
        let stored = try await ledger.entries(limit: 5)
        #expect(stored.map(\.index) == [0, 1, 2, 3, 4])
    }

    @Test("editing, deleting or reordering entries by hand is found, with the first bad index")
    func tampering() async throws {
        let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        func fresh() async throws -> (NodeStore, LedgerStore) {
            let store = try Self.makeStore()
            let ledger = LedgerStore(store: store)
            try await Self.withWriter(ledger) { for i in 0..<20 { _ = try await ledger.append(Self.entry(i)) } }
            try await Self.checkpoint(ledger, signer)
            return (store, ledger)
        }

        // An entry's bytes edited (as with the sqlite3 shell): its recorded leaf hash gives it away.
        var (store, ledger) = try await fresh()
        try await store.pool.write { db in
            try db.execute(sql: "UPDATE ledger SET entry = CAST(replace(CAST(entry AS TEXT), 'written\":1', 'written\":9') AS BLOB) WHERE idx = 7")
        }
        var report = try await ledger.audit(verifier: signer.verifier)
        #expect(!report.ok)
        #expect(report.firstBadIndex == 7)

        // Entry and leaf hash both rewritten: the signed checkpoint still catches it.
        (store, ledger) = try await fresh()
        let forged = try Self.entry(99).encodedAt(index: 7)
        try await store.pool.write { db in
            try db.execute(sql: "UPDATE ledger SET entry = ?, leaf = ? WHERE idx = 7", arguments: [Data(forged), Data(Merkle.leafHash(forged).bytes)])
        }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(!report.ok)
        #expect(report.firstBadIndex == 0)
        #expect(report.problem?.contains("signed checkpoint") == true)

        // The last entries deleted.
        (store, ledger) = try await fresh()
        try await store.pool.write { db in try db.execute(sql: "DELETE FROM ledger WHERE idx >= 18") }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(!report.ok)
        #expect(report.problem?.contains("deleted") == true)

        // An entry in the middle deleted.
        (store, ledger) = try await fresh()
        try await store.pool.write { db in try db.execute(sql: "DELETE FROM ledger WHERE idx = 4") }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.firstBadIndex == 4)

        // Two entries swapped.
        (store, ledger) = try await fresh()
        try await store.pool.write { db in
            try db.execute(sql: "UPDATE ledger SET idx = -1 WHERE idx = 3; UPDATE ledger SET idx = 3 WHERE idx = 5; UPDATE ledger SET idx = 5 WHERE idx = -1")
        }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.firstBadIndex == 3)
        #expect(report.problem?.contains("moved") == true)

        // A checkpoint signed by another key.
        (store, ledger) = try await fresh()
        let other = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        let cp = Checkpoint(origin: other.verifier.name, size: 20, root: Merkle.root(try await ledger.leafHashes(from: 0)))
        try await store.pool.write { db in try db.execute(sql: "UPDATE ledger_checkpoints SET note = ? WHERE size = 20", arguments: [try other.sign(cp.text)]) }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(!report.ok)
        #expect(report.problem?.contains("does not verify") == true)
    }

    @Test("a log large enough to be audited in parallel parts: the first bad index is still the smallest")
    func parallelAudit() async throws {
        let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        let store = try Self.makeStore()
        let ledger = LedgerStore(store: store)
        let n = 150_000
        // Written directly (the writer's fsync per batch is not what this test is about).
        try await store.pool.write { db in
            let insert = try db.makeStatement(sql: "INSERT INTO ledger (idx, entry, leaf, kind, time) VALUES (?, ?, ?, ?, ?)")
            for i in 0..<n {
                let bytes = try Self.entry(i % 1000).encodedAt(index: UInt64(i))
                try insert.execute(arguments: [i, Data(bytes), Data(Merkle.leafHash(bytes).bytes), "record.written", "t"])
            }
        }
        // Checkpoints at three sizes, one in each half.
        let leaves = try await ledger.leafHashes(from: 0)
        for size in [1_000, 80_000, n] {
            let cp = Checkpoint(origin: signer.verifier.name, size: UInt64(size), root: Merkle.root(leaves.prefix(size)))
            try await ledger.saveCheckpoint(size: cp.size, note: try signer.sign(cp.text), createdAt: "t")
        }
        var progress: [UInt64] = []
        let seen = Mutex<[UInt64]>([])
        var report = try await ledger.audit(verifier: signer.verifier) { done in seen.withLock { $0.append(done) } }
        progress = seen.withLock { $0 }
        #expect(report.ok, "\(report.problem ?? "")")
        #expect(report.entries == UInt64(n))
        #expect(report.checkpointsVerified == 3)
        #expect(report.root == Merkle.root(leaves).base64)
        #expect(progress.first == 0 && progress.last == UInt64(n) && progress.count > 2)

        // Two edits, one in each part: the lower index is named.
        try await store.pool.write { db in
            for idx in [140_000, 90_000] {
                try db.execute(sql: "UPDATE ledger SET entry = CAST(replace(CAST(entry AS TEXT), 'written\":1', 'written\":7') AS BLOB) WHERE idx = ?", arguments: [idx])
            }
        }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.firstBadIndex == 90_000)
        #expect(report.checkpointsVerified == 2)

        // A forged entry with its leaf below the first bad one: the checkpoint after it fails first.
        let forged = try Self.entry(5).encodedAt(index: 50_000)
        try await store.pool.write { db in
            try db.execute(sql: "UPDATE ledger SET entry = ?, leaf = ? WHERE idx = 50000", arguments: [Data(forged), Data(Merkle.leafHash(forged).bytes)])
        }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.firstBadIndex == 1_000)
        #expect(report.problem?.contains("signed checkpoint") == true)

        // A row moved past the end of the log: a hole where it was.
        try await store.pool.write { db in try db.execute(sql: "UPDATE ledger SET idx = 999999 WHERE idx = 10") }
        report = try await ledger.audit(verifier: signer.verifier)
        #expect(report.firstBadIndex == 10)
        #expect(report.problem?.contains("missing") == true)
    }
}

extension LedgerStoreTests {
    static func kinds(_ store: NodeStore) async throws -> [String] {
        try await store.pool.read { db in try String.fetchAll(db, sql: "SELECT kind FROM ledger ORDER BY idx") }
    }

    @Test("admin and agreement actions commit with their entries: a refused action leaves no entry, a repeated document none more (G10)")
    func actionsWithTheirEntries() async throws {
        let store = try Self.makeStore()
        let hz = try CitySlug("hangzhou"), sh = try CitySlug("shanghai")
        let id = try DatasetID(owner: hz, name: "air")
        let schema = try Schema(keyField: "k", fields: [("k", .string), ("v", .int)])
        func e(_ kind: String) -> LedgerEntry { LedgerEntry(time: "t", kind: kind, actor: "token:a") }
        _ = try await store.createDataset(id, schema: schema, createdAt: "t", log: e(LedgerEntry.Kind.datasetCreated))
        // The same name again is refused, and its entry goes nowhere.
        await #expect(throws: CityMeshError.self) { _ = try await store.createDataset(id, schema: schema, createdAt: "t", log: e(LedgerEntry.Kind.datasetCreated)) }
        _ = try await store.addField(id, name: "w", type: .string, log: e(LedgerEntry.Kind.fieldAdded))
        await #expect(throws: CityMeshError.self) { _ = try await store.addField(id, name: "w", type: .string, log: e(LedgerEntry.Kind.fieldAdded)) }
        try await store.insertToken(id: "t1", name: "ops", role: .operator, hash: Array(repeating: 1, count: 32), createdAt: "t", log: e(LedgerEntry.Kind.tokenCreated))
        try await store.revokeToken(id: "t1", at: "t", log: e(LedgerEntry.Kind.tokenRevoked))
        await #expect(throws: CityMeshError.self) { try await store.revokeToken(id: "t1", at: "t", log: e(LedgerEntry.Kind.tokenRevoked)) }
        #expect(try await Self.kinds(store) == [LedgerEntry.Kind.datasetCreated, LedgerEntry.Kind.fieldAdded, LedgerEntry.Kind.tokenCreated, LedgerEntry.Kind.tokenRevoked])

        // An agreement: each document's entry is written once, with the document.
        let key = Agreement.Key.ed25519(Curve25519.Signing.PrivateKey())
        let offer = Agreement.Offer(
            owner: hz, member: sh, share: Policy.Share(
                id: "air-sh", dataset: "air", to: [sh], fields: ["k", "v"], filter: nil, write: [], purpose: "p", legalBasis: "b", validFrom: nil,
                validUntil: RFC3339.parse("2030-01-01T00:00:00Z")!, validUntilText: "2030-01-01", onRevoke: .keep),
            policyVersion: 1, issuedAt: "t", nonce: nil)
        let signed = try key.sign(offer, as: hz)
        #expect(try await store.saveOffer(signed, offer, at: "t", log: e(LedgerEntry.Kind.agreementOffered)))
        #expect(try await !store.saveOffer(signed, offer, at: "t", log: e(LedgerEntry.Kind.agreementOffered)))
        let response = try key.sign(Agreement.Response(offer: signed.id, owner: "hangzhou", share: "air-sh", member: "shanghai", accept: true, at: "t"), as: sh)
        #expect(try await store.saveResponse(response, offer: signed.id, log: e(LedgerEntry.Kind.agreementAccepted)))
        #expect(try await !store.saveResponse(response, offer: signed.id, log: e(LedgerEntry.Kind.agreementAccepted)))
        let revocation = try key.sign(Agreement.Revocation(offer: signed.id, owner: "hangzhou", share: "air-sh", member: "shanghai", reason: "r", at: "t"), as: hz)
        #expect(try await store.saveRevocation(revocation, offer: signed.id, log: e(LedgerEntry.Kind.agreementRevoked)))
        #expect(try await !store.saveRevocation(revocation, offer: "no-such-offer", log: e(LedgerEntry.Kind.agreementRevoked)))
        let kinds = try await Self.kinds(store)
        #expect(Array(kinds.suffix(3)) == [LedgerEntry.Kind.agreementOffered, LedgerEntry.Kind.agreementAccepted, LedgerEntry.Kind.agreementRevoked], "\(kinds)")

        // A write whose entry cannot be made is undone: no change without its entry.
        struct NoEntry: Error {}
        let input = store.prepare([try RecordInput.fromText(key: "a", assignments: [("v", "1")], schema: schema)], schema: schema, physicalMillis: 1000)
        await #expect(throws: NoEntry.self) { _ = try await store.apply(id, input, log: { _ in throw NoEntry() }) }
        #expect(try await store.get(id, key: "a") == nil)
        #expect(try await Self.kinds(store).count == kinds.count)
    }
}

extension LedgerEntry {
    func encodedAt(index: UInt64) throws -> [UInt8] {
        var e = self
        e.index = index
        return try e.encoded()
    }
}
