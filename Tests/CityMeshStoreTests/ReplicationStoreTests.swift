import CityMeshCore
import Crypto
import Foundation
import Synchronization
import GRDB
import Testing
@testable import CityMeshStore

/// Replication state on a real SQLite file: taking batches in order and only in order, the chain
/// check, replicas created from a batch's fields, conflicts kept, the outbox, receipts, tombstone
/// collection and purging.
@Suite("Replication store")
struct ReplicationStoreTests {
    static let hz = try! CitySlug("hangzhou")
    static let sh = try! CitySlug("shanghai")
    static let sz = try! CitySlug("suzhou")
    static let dataset = try! DatasetID(owner: hz, name: "registry")
    static let share = "hangzhou/registry-rw"
    static let fields = [
        Schema.Field(id: 1, name: "id", type: .string, nullable: false), Schema.Field(id: 2, name: "status", type: .string, nullable: true),
    ]
    static let key = Agreement.Key.ed25519(Curve25519.Signing.PrivateKey())

    static func stamp(_ ms: UInt64, _ c: CitySlug) -> Stamp { Stamp(hlc: HLC(millis: ms, logical: 0), city: c) }

    static func batch(origin: CitySlug, seq: UInt64, prev: [UInt8], _ records: [(String, String, UInt64)], fields: [Schema.Field] = fields, seen: [CitySlug: HLC] = [:])
        throws -> (ChangeBatch, SignedBatch)
    {
        let recs = records.map { k, status, ms in
            ChangeBatch.Record(key: k, state: RecordState(cells: [Cell(field: 1, value: .string(k), stamp: stamp(ms, origin)), Cell(field: 2, value: .string(status), stamp: stamp(ms, origin))]))
        }
        let b = ChangeBatch(share: share, dataset: dataset.description, origin: origin, seq: seq, prev: prev, fields: fields, seen: seen, records: recs)
        return (b, try b.signed(with: key))
    }

    static func incoming(_ b: ChangeBatch, _ s: SignedBatch, from: CitySlug) -> IncomingBatch {
        IncomingBatch(share: share, dataset: dataset, batch: b, signed: s, states: b.records, keyField: "id", from: from, at: "2026-11-29T08:00:00Z")
    }

    static let noConflicts: @Sendable (String, RecordState, RecordState, [CitySlug: HLC]) -> [ConflictRule.Conflict] = { _, _, _, _ in [] }

    @Test("a member takes batches only in order and on the right chain; the replica is created, then gains fields")
    func takeInOrder() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "active", 1000), ("E-2", "active", 1000)])
        let (b2, s2) = try Self.batch(origin: Self.hz, seq: 2, prev: s1.hash, [("E-1", "closed", 2000)])
        await #expect(throws: TakeRefusal.notNext(expected: 1)) { try await store.take(Self.incoming(b2, s2, from: Self.hz), conflicts: Self.noConflicts) }
        let first = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        #expect(first.written == 2)
        #expect(try await store.dataset(Self.dataset).schema.fields.map(\.name) == ["id", "status"])
        await #expect(throws: TakeRefusal.notNext(expected: 2)) { try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts) }
        // A batch 2 on another history (prev does not match) is a fork, and changes nothing.
        let (fork, sfork) = try Self.batch(origin: Self.hz, seq: 2, prev: [UInt8](repeating: 7, count: 32), [("E-1", "forged", 3000)])
        await #expect(throws: TakeRefusal.forked(held: s1.hash)) { try await store.take(Self.incoming(fork, sfork, from: Self.sz), conflicts: Self.noConflicts) }
        // A new field in the owner's next batch is added to the replica without a resync.
        let wider = Self.fields + [Schema.Field(id: 5, name: "district", type: .string, nullable: true)]
        let (b2w, s2w) = try Self.batch(origin: Self.hz, seq: 2, prev: s1.hash, [("E-1", "closed", 2000)], fields: wider)
        _ = try await store.take(Self.incoming(b2w, s2w, from: Self.hz), conflicts: Self.noConflicts)
        #expect(try await store.dataset(Self.dataset).schema.fields.map(\.id) == [1, 2, 5])
        #expect(try await store.heldVectors() == [Self.share: [Self.hz: 2]])
        #expect(try await store.batches(share: Self.share, origin: Self.hz, seqs: 1...5) == [s1.bytes, s2w.bytes])
        #expect(try await store.get(Self.dataset, key: "E-1")?.state.value(field: 2) == .string("closed"))
        _ = (b2, s2)
    }

    @Test("peer checkpoints: a bounded number per city, the largest kept; sizes at or above 2^63 are never stored; lookups beyond it find nothing")
    func peerCheckpointsBounded() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        for size in 1...200 {
            #expect(try await store.savePeerCheckpoint(city: Self.hz, size: UInt64(size), root: "r\(size)", note: "n\(size)", at: "t") == nil)
        }
        let count = try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM peer_checkpoints WHERE city = 'hangzhou'") }
        #expect(count == NodeStore.peerCheckpointsKept)
        #expect(try await store.peerCheckpoints()[Self.hz]?.size == 200)
        // The same size with another root is reported (a fork), not stored twice.
        #expect(try await store.savePeerCheckpoint(city: Self.hz, size: 200, root: "other", note: "m", at: "t") == "n200")
        await #expect(throws: CityMeshError.self) { try await store.savePeerCheckpoint(city: Self.hz, size: 1 << 63, root: "x", note: "x", at: "t") }
        #expect(try await store.batches(share: Self.share, origin: Self.hz, seqs: (1 << 63)...UInt64.max).isEmpty)
    }

    @Test("batches sent: runs per share, peer and origin merge when they touch; only fully sent ranges count; numbers beyond 2^63 are refused")
    func sentBatches() async throws {
        let (store, _) = try makeStore(city: "hangzhou")
        let sz = try CitySlug("suzhou")
        try await store.recordSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 1...3)
        try await store.recordSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 7...9)
        #expect(try await store.wasSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 2...3))
        #expect(try await !store.wasSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 3...7), "4–6 were never sent")
        #expect(try await !store.wasSent(share: Self.share, peer: sz, origin: Self.hz, seqs: 1...1), "sent to shanghai, not to suzhou")
        #expect(try await !store.wasSent(share: "hangzhou/other", peer: Self.sh, origin: Self.hz, seqs: 1...1), "another share")
        #expect(try await !store.wasSent(share: Self.share, peer: Self.sh, origin: sz, seqs: 1...1), "another origin")
        // Filling the gap (touching both sides) leaves one run.
        try await store.recordSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 4...6)
        try await store.recordSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 2...2)
        #expect(try await store.wasSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 1...9))
        let rows = try await store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sent_batches") }
        #expect(rows == 1)
        await #expect(throws: CityMeshError.self) { try await store.recordSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 1...(1 << 63)) }
        #expect(try await !store.wasSent(share: Self.share, peer: Self.sh, origin: Self.hz, seqs: 1...UInt64.max))
    }

    @Test("a batch merge commits between chunks while an admin write waits, lets it through, and the batch still lands whole")
    func takeYieldsToUrgentWrites() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let records = (0..<1_000).map { (String(format: "E-%04d", $0), "active", UInt64(1000 + $0)) }
        let (b, s) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, records)
        let probe = try DatasetID(owner: Self.sh, name: "probe")
        let probeSchema = try Schema(keyField: "k", fields: [("k", .string), ("v", .int)])
        _ = try await store.createDataset(probe, schema: probeSchema, createdAt: "t")

        // An admin write is in flight for the whole merge: the merge goes ahead after its limit,
        // but stops after each chunk and commits, so the write lock is free between chunks.
        let release = AsyncStream.makeStream(of: Void.self)
        let seen = Events()
        let admin = Task {
            try await store.urgent { @Sendable in
                // Wait until part of the batch is committed, as a reader sees it.
                // (The replica does not exist until the merge's first transaction creates it.)
                while ((try? await store.dataset(Self.dataset).recordCount) ?? 0) == 0 { try await Task.sleep(for: .milliseconds(5)) }
                let partial = try await store.dataset(Self.dataset).recordCount
                seen.add("partial \(partial < 1_000)")
                seen.add("batch held \(try await store.heldVectors()[Self.share] != nil)")
                let input = try RecordInput.fromText(key: "p1", assignments: [("v", "1")], schema: probeSchema)
                _ = try await store.write(probe, inputs: [input], physicalMillis: 5000)
                seen.add("admin write done")
                for await _ in release.stream { break }
            }
        }
        let take = Task { try await store.take(Self.incoming(b, s, from: Self.hz), conflicts: Self.noConflicts) }
        for _ in 0..<6_000 where !seen.all.contains("admin write done") { try await Task.sleep(for: .milliseconds(5)) }
        #expect(seen.all == ["partial true", "batch held false", "admin write done"], "the write went through mid-batch, before the batch was kept")
        release.continuation.yield()
        try await admin.value
        let outcome = try await take.value
        #expect(outcome.written == 1_000)
        #expect(try await store.heldVectors() == [Self.share: [Self.hz: 1]])
        #expect(try await store.batches(share: Self.share, origin: Self.hz, seqs: 1...1) == [s.bytes])
        #expect(try await store.dataset(Self.dataset).recordCount == 1_000)
        #expect(try await store.seenClocks(Self.dataset)[Self.hz] == HLC(millis: 1999, logical: 0))

        // A node stopped between two of those transactions (here: the merge cancelled) leaves
        // some records merged and the batch not kept: it is taken again, and what was merged
        // comes out unchanged.
        let (again, _) = try makeStore(city: "shanghai")
        let hold = AsyncStream.makeStream(of: Void.self)
        let holding = Task { await again.urgent { @Sendable in for await _ in hold.stream { break } } }
        while again.urgentWrites.load(ordering: .sequentiallyConsistent) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        let interrupted = Task { try await again.take(Self.incoming(b, s, from: Self.hz), conflicts: Self.noConflicts) }
        var partial = 0
        for _ in 0..<15_000 where partial == 0 {
            try await Task.sleep(for: .milliseconds(2))
            partial = (try? await again.dataset(Self.dataset).recordCount) ?? 0
        }
        interrupted.cancel()
        await #expect(throws: CancellationError.self) { try await interrupted.value }
        hold.continuation.yield()
        await holding.value
        #expect(partial > 0 && partial < 1_000)
        #expect(try await again.dataset(Self.dataset).recordCount == partial, "the merge stopped where it was")
        #expect(try await again.heldVectors()[Self.share] == nil)
        let retaken = try await again.take(Self.incoming(b, s, from: Self.hz), conflicts: Self.noConflicts)
        #expect(retaken.written == 1_000 - partial, "the records merged before the stop are unchanged")
        for key in ["E-0000", "E-0299", "E-0300", "E-0999"] {
            #expect(try await again.get(Self.dataset, key: key)?.state == store.get(Self.dataset, key: key)?.state)
        }
        #expect(try await again.dataset(Self.dataset).recordCount == 1_000)
        #expect(try await again.heldVectors() == [Self.share: [Self.hz: 1]])
    }

    @Test("conflicts found during a merge are kept with both values; settling marks them")
    func conflicts() async throws {
        let (store, _) = try makeStore(city: "hangzhou")
        let schema = try Schema(keyField: "id", fields: [("id", .string), ("status", .string)])
        _ = try await store.createDataset(Self.dataset, schema: schema, createdAt: "t")
        let (a, sa) = try Self.batch(origin: Self.sh, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "suspended", 1000)])
        _ = try await store.take(Self.incoming(a, sa, from: Self.sh), conflicts: Self.noConflicts)
        let (b, sb) = try Self.batch(origin: Self.sz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "closed", 1100)])
        let me = Self.hz
        let outcome = try await store.take(Self.incoming(b, sb, from: Self.sz)) { _, stored, incoming, mySeen in
            ConflictRule.find(stored: stored, incoming: incoming, origin: Self.sz, originSeen: [:], me: me, mySeen: mySeen, latestSeen: { _ in nil })
        }
        #expect(outcome.conflicts == 1)
        let open = try await store.conflicts(Self.dataset, open: true)
        #expect(open.count == 1 && open[0].value == #""suspended""# && open[0].winnerValue == #""closed""# && open[0].city == "shanghai" && open[0].field == "status")
        #expect(try await store.settleConflicts(Self.dataset, key: "E-1", field: "status", by: "token:x", at: "t2") == 1)
        #expect(try await store.conflicts(Self.dataset, open: true).isEmpty)
        #expect(try await store.conflicts(Self.dataset, open: false).first?.resolvedBy == "token:x")
        #expect(try await store.seenClocks(Self.dataset)[Self.sz] == HLC(millis: 1100, logical: 0))
    }

    @Test("a member's writes to a replica wait in the outbox, as written, with what it had seen")
    func outbox() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "active", 1000)])
        _ = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        let schema = try await store.dataset(Self.dataset).schema
        let input = try RecordInput.fromText(key: "E-1", assignments: [("status", "audited")], schema: schema)
        _ = try await store.write(Self.dataset, inputs: [input], physicalMillis: 5000)
        let pending = try await store.outbox(Self.dataset, limit: 10)
        #expect(pending.count == 1 && pending[0].key == "E-1" && pending[0].seen[Self.hz] == HLC(millis: 1000, logical: 0))
        #expect(pending[0].state.cell(field: 2)?.value == .string("audited") && pending[0].state.cell(field: 2)?.stamp.city == Self.sh)
        // Cutting the batch empties the outbox in the same transaction.
        try await store.appendOwnBatch(share: Self.share, dataset: Self.dataset, signed: nil, records: 0, cursor: 0, outboxThrough: pending[0].id, at: "t")
        #expect(try await store.outbox(Self.dataset, limit: 10).isEmpty)
    }

    @Test("receipts: batches taken are receipted once; a countersignature is kept once")
    func receipts() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "active", 1000)])
        _ = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        let due = try await store.unreceiptedBatches()
        #expect(due.count == 1 && due[0].peer == Self.hz && due[0].seq == 1 && due[0].hash == s1.hash)
        try await store.saveIssuedReceipt(id: "r1", peer: Self.hz, share: Self.share, document: "{}", batches: [(Self.hz, 1)], at: "t")
        #expect(try await store.unreceiptedBatches().isEmpty)
        #expect(try await store.uncountersigned(peer: Self.hz) == ["{}"])
        #expect(try await store.saveCountersign(id: "r1", countersign: "{c}"))
        #expect(try await !store.saveCountersign(id: "r1", countersign: "{other}"))
        #expect(try await store.uncountersigned(peer: Self.hz).isEmpty)
        #expect(try await store.saveCountersigned(id: "r2", peer: Self.sz, share: Self.share, receipt: "{r}", countersign: "{c}", at: "t"))
        #expect(try await !store.saveCountersigned(id: "r2", peer: Self.sz, share: Self.share, receipt: "{r}", countersign: "{c2}", at: "t"))
        #expect(try await store.receipt(id: "r2")?.countersign == "{c}")
    }

    @Test("what leaves a member's view leaves its stored batches: a retracted key's records, then records with a field the view lost; the batches keep their hash and order")
    func compactsRetractedAndNarrowed() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let wide = Self.fields + [Schema.Field(id: 5, name: "district", type: .string, nullable: true)]
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "gone-value", 1000), ("E-2", "kept-value", 1000)], fields: wide)
        _ = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        // The owner retracts E-1 (a record with no cells and no tombstone).
        let b2 = ChangeBatch(
            share: Self.share, dataset: Self.dataset.description, origin: Self.hz, seq: 2, prev: s1.hash, fields: wide, seen: [:],
            records: [.init(key: "E-1", state: ShareView.retraction)])
        let s2 = try b2.signed(with: Self.key)
        var retraction = Self.incoming(b2, s2, from: Self.hz)
        retraction.retracted = ["E-1"]
        _ = try await store.take(retraction, conflicts: Self.noConflicts)
        #expect(try await store.get(Self.dataset, key: "E-1") == nil)
        #expect(try await store.shareErasure(share: Self.share, key: "E-1")?.hlc == HLC(millis: 1000, logical: 0))
        #expect(try await store.pendingErasures() == 1)
        // Until the pass runs, a send leaves the retracted key's values out (the send screen).
        var screen = try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil)
        #expect(screen == Erasure.Screen(retracted: ["E-1": HLC(millis: 1000, logical: 0)]))
        let sent = try #require(screen.apply(to: s1))
        #expect(Data(sent.bytes).range(of: Data("gone-value".utf8)) == nil && Data(sent.bytes).range(of: Data("kept-value".utf8)) != nil && sent.hash == s1.hash)
        func stored(_ seq: UInt64) async throws -> (bytes: [UInt8], hash: [UInt8]) {
            let b = try #require(try await store.numberedBatches(share: Self.share, origin: Self.hz, seqs: seq...seq).first)
            return (b.bytes, b.hash)
        }
        func holds(_ bytes: [UInt8], _ text: String) -> Bool { Data(bytes).range(of: Data(text.utf8)) != nil }
        var r = try await store.compactErasures(shares: [Self.share: Self.dataset])
        #expect(r[Self.dataset]?.records == 1 && r[Self.dataset]?.batches == 1)
        var one = try await stored(1)
        #expect(!holds(one.bytes, "gone-value") && holds(one.bytes, "kept-value"))
        #expect(try SignedBatch(bytes: one.bytes[...]).hash == s1.hash && one.hash == s1.hash, "the batch's hash (and so its signature and the chain) is unchanged")
        #expect(holds(try await stored(2).bytes, "E-1"), "the retraction itself stays: parties that have not taken it yet still need it")
        #expect(try await store.pendingErasures() == 0)
        #expect(try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).isEmpty, "once compacted, sends read nothing to leave out")
        // The view loses `status`: the replica drops it, and records carrying it leave the batches.
        _ = try await store.narrowReplica(Self.dataset, share: Self.share, keep: ["id", "district"])
        #expect(try await store.shareErasure(share: Self.share, key: "")?.keep == ["district", "id"])
        screen = try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil)
        #expect(screen.keep == ["district", "id"])
        r = try await store.compactErasures(shares: [Self.share: Self.dataset])
        #expect(r[Self.dataset]?.records == 1)
        one = try await stored(1)
        #expect(!holds(one.bytes, "kept-value") && one.hash == s1.hash)
        // A share this pass is not told of keeps its erasures pending.
        _ = try await store.narrowReplica(Self.dataset, share: Self.share, keep: ["id"])
        #expect(try await store.compactErasures(shares: [:]).isEmpty)
        #expect(try await store.pendingErasures() == 1, "the narrowing to id alone waits for a pass that covers the share")
        #expect(try await store.compactErasures(shares: [Self.share: Self.dataset])[Self.dataset]?.records == 0)
        #expect(try await store.pendingErasures() == 0)
        #expect(try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).keep == ["id"], "a narrowed view stays in the screen after its pass")
        #expect(
            try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: ["id", "status"]).keep == ["id", "status"],
            "the view in force decides: terms widened again bring their fields back")
        // A deletion waits for its pass in the screen of every share of the dataset.
        let del = ChangeBatch(
            share: Self.share, dataset: Self.dataset.description, origin: Self.hz, seq: 3, prev: s2.hash, fields: wide, seen: [:],
            records: [.init(key: "E-2", state: .deletion(at: Self.stamp(3000, Self.hz)))])
        let s3 = try del.signed(with: Self.key)
        _ = try await store.take(Self.incoming(del, s3, from: Self.hz), conflicts: Self.noConflicts)
        #expect(try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).deleted == ["E-2": .init(hlc: HLC(millis: 3000, logical: 0), collected: false)])
        _ = try await store.compactErasures(shares: [Self.share: Self.dataset])
        // Terms widen again: a batch with `status` taken now is not compacted by the old narrowing
        // when the pass is told the view in force (without it, the narrowing's fields would apply).
        let (b4, s4) = try Self.batch(origin: Self.hz, seq: 4, prev: s3.hash, [("E-3", "back-value", 4000)], fields: wide)
        _ = try await store.take(Self.incoming(b4, s4, from: Self.hz), conflicts: Self.noConflicts)
        #expect(try await store.compactErasures(shares: [Self.share: Self.dataset], views: [Self.share: ["id", "status", "district"]])[Self.dataset]?.records == 0)
        #expect(holds(try await stored(4).bytes, "back-value"))
        _ = try await store.narrowReplica(Self.dataset, share: Self.share, keep: ["id"])
        #expect(try await store.compactErasures(shares: [Self.share: Self.dataset])[Self.dataset]?.records == 1, "the control: by the narrowing's own fields it goes")
    }

    @Test("a retracted row that comes back into view unchanged (terms widened: its old stamps) is not compacted again, at the member or at the owner")
    func returnedRowKept() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "first-value", 1000)])
        _ = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        let b2 = ChangeBatch(
            share: Self.share, dataset: Self.dataset.description, origin: Self.hz, seq: 2, prev: s1.hash, fields: Self.fields, seen: [:],
            records: [.init(key: "E-1", state: ShareView.retraction)])
        let s2 = try b2.signed(with: Self.key)
        var retraction = Self.incoming(b2, s2, from: Self.hz)
        retraction.retracted = ["E-1"]
        _ = try await store.take(retraction, conflicts: Self.noConflicts)
        _ = try await store.compactErasures(shares: [Self.share: Self.dataset])
        // The owner sends the row whole again: the same cells, stamped 1000 as before.
        let (b3, s3) = try Self.batch(origin: Self.hz, seq: 3, prev: s2.hash, [("E-1", "first-value", 1000)])
        _ = try await store.take(Self.incoming(b3, s3, from: Self.hz), conflicts: Self.noConflicts)
        #expect(try await store.get(Self.dataset, key: "E-1") != nil)
        #expect(try await store.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).isEmpty, "a send leaves nothing of it out")
        _ = try await store.compactErasures(shares: [Self.share: Self.dataset])
        let stored = try #require(try await store.numberedBatches(share: Self.share, origin: Self.hz, seqs: 3...3).first)
        #expect(Data(stored.bytes).range(of: Data("first-value".utf8)) != nil, "the returned row stays in the batch a late joiner pulls")

        // The owner: a retraction noted, then the row shown again before any pass ran.
        let (owner, _) = try makeStore(city: "hangzhou")
        try await owner.appendOwnBatch(share: Self.share, dataset: Self.dataset, signed: nil, records: 0, cursor: 0, retracted: [("E-1", HLC(millis: 1000, logical: 0))], at: "t")
        #expect(try await owner.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).retracted.keys.sorted() == ["E-1"])
        try await owner.appendOwnBatch(share: Self.share, dataset: Self.dataset, signed: nil, records: 0, cursor: 0, visibility: (["E-1"], []), at: "t")
        #expect(try await owner.sendScreen(share: Self.share, dataset: Self.dataset, view: nil).isEmpty, "its batch back to the members is not screened")
    }

    @Test("tombstones older than the cutoff are collected, live records and newer tombstones stay; a purge removes the replica")
    func collectAndPurge() async throws {
        let (store, _) = try makeStore(city: "shanghai")
        let (b1, s1) = try Self.batch(origin: Self.hz, seq: 1, prev: ChangeBatch.zeroHash, [("E-1", "active", 1000), ("E-2", "active", 1000), ("E-3", "active", 1000)])
        _ = try await store.take(Self.incoming(b1, s1, from: Self.hz), conflicts: Self.noConflicts)
        let deletions = [ChangeBatch.Record(key: "E-1", state: .deletion(at: Self.stamp(2000, Self.hz))), ChangeBatch.Record(key: "E-2", state: .deletion(at: Self.stamp(9000, Self.hz)))]
        let b2 = ChangeBatch(share: Self.share, dataset: Self.dataset.description, origin: Self.hz, seq: 2, prev: s1.hash, fields: Self.fields, seen: [:], records: deletions)
        let s2 = try b2.signed(with: Self.key)
        _ = try await store.take(Self.incoming(b2, s2, from: Self.hz), conflicts: Self.noConflicts)
        #expect(try await store.collectTombstones(Self.dataset, before: HLC(millis: 5000, logical: 0)) == 1)
        let keys = try await store.pool.read { db in try String.fetchAll(db, sql: "SELECT key FROM records ORDER BY key") }
        #expect(keys == ["E-2", "E-3"])
        #expect(try await store.purgeReplica(Self.dataset, share: Self.share) == 2)
        await #expect(throws: CityMeshError.self) { try await store.dataset(Self.dataset) }
        #expect(try await store.heldVectors().isEmpty)
    }
}
