import Crypto
import Foundation
import Testing
import X509
@testable import CityMeshCore

/// The compactable batch layout (CMB2) and the erasure rule: a record replaced by its salted
/// digest leaves the signature, the hash and the count as they were, so a compacted batch still
/// verifies and relays; any other change to the records is caught; hostile layouts are refused.
@Suite("Compaction")
struct CompactionTests {
    static let hz = ReplicationCoreTests.hz

    static func signedPair() throws -> (SignedBatch, Certificate, ChangeBatch) {
        let key = Curve25519.Signing.PrivateKey()
        let cert = try AgreementCoreTests.certificate(Certificate.PrivateKey(key), ed25519: true)
        let b = ReplicationCoreTests.batch(records: 4)
        return (try b.signed(with: .ed25519(key)), cert, b)
    }

    @Test("a batch is cut in the compactable layout; compacting records keeps its signature, hash and count; the rest of it is intact")
    func compactKeepsTheChain() throws {
        let (signed, cert, b) = try Self.signedPair()
        #expect(signed.isCompactable)
        let wire = try SignedBatch(bytes: signed.bytes[...])
        #expect(wire == signed)
        #expect(try wire.decode() == b)
        let compacted = try #require(try signed.compacted { key, _ in key == "E-1" || key == "E-3" })
        #expect(compacted.hash == signed.hash, "the chain's link does not change")
        try compacted.verify(certificate: cert)
        let again = try SignedBatch(bytes: compacted.bytes[...])
        let decoded = try again.decode()
        #expect(decoded.records.map(\.key) == ["E-0", "E-2"] && decoded.erased == 2 && decoded.signedCount == 4)
        #expect(decoded.records == b.records.filter { $0.key == "E-0" || $0.key == "E-2" })
        // The values are gone from the bytes; the salts kept no trace of them.
        let bytes = Data(compacted.bytes)
        #expect(bytes.range(of: Data("E-1".utf8)) == nil && bytes.range(of: Data("E-3".utf8)) == nil, "neither key nor values of an erased record remain")
        #expect(bytes.range(of: Data("E-2".utf8)) != nil)
        // Compacting again picks nothing new; compacting the rest keeps the batch verifiable.
        #expect(try compacted.compacted { key, _ in key == "E-1" } == nil)
        let empty = try #require(try compacted.compacted { _, _ in true })
        #expect(try empty.decode().records.isEmpty && empty.hash == signed.hash)
        // Two cuts of the same records have different salts: a digest reveals nothing across batches.
        let key = Curve25519.Signing.PrivateKey()
        #expect(try b.signed(with: .ed25519(key)).records != (try b.signed(with: .ed25519(key)).records))
    }

    @Test("a relay cannot change, drop, add, reorder or un-compact a record: the signed digest no longer matches")
    func tampering() throws {
        let (signed, _, _) = try Self.signedPair()
        let compacted = try #require(try signed.compacted { key, _ in key == "E-1" })
        func refused(_ records: [UInt8], _ why: String) {
            let forged = SignedBatch(body: signed.body, algorithm: signed.algorithm, signature: signed.signature, records: records)
            #expect(throws: WireError.self, "\(why)") { try SignedBatch(bytes: forged.bytes[...]).decode() }
        }
        // Every byte of the section matters.
        for i in stride(from: 0, to: signed.records.count, by: 7) {
            var r = signed.records
            r[i] ^= 0x01
            refused(r, "byte \(i) flipped")
        }
        refused(Array(signed.records.dropLast()), "truncated")
        refused(signed.records + [0], "a byte added")
        refused(signed.records + [1] + [UInt8](repeating: 0, count: 32), "a record added")
        refused([], "every record dropped")
        // A key length no record has (over 256 bytes, and not the compacted marker).
        var r = compacted.records
        r[0] = 0x02
        refused(r, "a key of 512+ bytes")
        var marker = compacted.records
        let at = try #require((0..<(marker.count - 1)).first { marker[$0] == 0xFF && marker[$0 + 1] == 0xFF })
        marker[at + 1] = 0xFE
        refused(marker, "a compacted slot's marker changed")
        // A body length beyond the bytes, and the largest one.
        var w = WireWriter()
        w.u8(signed.algorithm); w.u16(UInt16(signed.signature.count)); w.raw(signed.signature); w.u32(UInt32.max); w.raw(signed.body)
        #expect(throws: WireError.self) { try SignedBatch(bytes: w.bytes[...]) }
        // A record count that does not match the section (2^31 and UInt32.max records claimed).
        for n: UInt32 in [0, 5, 1 << 31, .max] {
            var body = signed.body
            let at = body.count - 36
            body[at] = UInt8(n >> 24); body[at + 1] = UInt8(truncatingIfNeeded: n >> 16); body[at + 2] = UInt8(truncatingIfNeeded: n >> 8); body[at + 3] = UInt8(truncatingIfNeeded: n)
            #expect(throws: WireError.self, "\(n) records claimed") {
                try ChangeBatch.decode(body: body[...], records: signed.records[...])
            }
        }
    }

    @Test("the erasure rule, as a table")
    func rule() {
        func s(_ ms: UInt64) -> Stamp { Stamp(hlc: HLC(millis: ms, logical: 0), city: Self.hz) }
        let t = HLC(millis: 100, logical: 0)
        let old = RecordState(cells: [Cell(field: 2, value: .string("x"), stamp: s(50))])
        let newer = RecordState(cells: [Cell(field: 2, value: .string("y"), stamp: s(150))])
        let mixed = RecordState(cells: [Cell(field: 1, value: .string("a"), stamp: s(50)), Cell(field: 2, value: .string("b"), stamp: s(150))])
        let deletion = RecordState.deletion(at: s(100))
        let laterDeletion = RecordState.deletion(at: s(200))
        let retraction = RecordState()
        let rows: [(RecordState, Bool, Bool, String)] = [
            (old, false, true, "values older than the deletion go at once"),
            (newer, false, false, "a write after the deletion is not erased"),
            (mixed, true, false, "a record with one newer cell stays whole"),
            (deletion, false, false, "the deletion stays until every party holds it"),
            (deletion, true, true, "then it goes too"),
            (laterDeletion, true, false, "a later deletion is another erasure's"),
            (retraction, false, false, "a bare key stays until collected"),
            (retraction, true, true, "and goes with the deletion"),
        ]
        for (state, collected, expected, why) in rows {
            #expect(Erasure.compacts(state, deletedAt: t, tombstoneCollected: collected) == expected, "\(why)")
        }
        #expect(Erasure.nextPass(after: 10) == 2_000 && Erasure.nextPass(after: 1_000) == 20_000 && Erasure.nextPass(after: .max) == .max)
    }

    @Test("the send screen, as a table: what waits for the pass goes out as digests — deletions, retractions, rows outside the filter, fields outside a narrowed view")
    func screen() throws {
        func s(_ ms: UInt64) -> Stamp { Stamp(hlc: HLC(millis: ms, logical: 0), city: Self.hz) }
        let name: (Int) -> String? = { [1: "id", 2: "status", 4: "score"][$0] }
        let old = RecordState(cells: [Cell(field: 2, value: .string("x"), stamp: s(50))])
        let newer = RecordState(cells: [Cell(field: 2, value: .string("y"), stamp: s(150))])
        let score = RecordState(cells: [Cell(field: 4, value: .double(1), stamp: s(50))])
        let bare = RecordState()
        let deletion = RecordState.deletion(at: s(100))
        let screen = Erasure.Screen(
            deleted: ["D": .init(hlc: HLC(millis: 100, logical: 0), collected: false), "C": .init(hlc: HLC(millis: 100, logical: 0), collected: true)],
            retracted: ["R": HLC(millis: 100, logical: 0)], outside: ["O"], keep: ["id", "status"])
        let rows: [(String, RecordState, Bool, String)] = [
            ("D", old, true, "a deleted key's older values"),
            ("D", newer, false, "a write after the deletion"),
            ("D", deletion, false, "the deletion itself, until collected"),
            ("C", deletion, true, "a collected deletion"),
            ("R", old, true, "a retracted key's values up to the retraction"),
            ("R", newer, false, "a write after the retraction (the owner judges it again)"),
            ("R", bare, false, "the retraction itself"),
            ("O", newer, true, "any values of a row outside the filter now"),
            ("O", bare, false, "a bare key of it"),
            ("K", old, false, "another key within the view"),
            ("K", score, true, "a cell of a field the view lost"),
        ]
        for (key, state, expected, why) in rows {
            #expect(screen.erases(key, state, name: name) == expected, "\(why)")
        }
        #expect(Erasure.Screen().isEmpty && !Erasure.Screen(outside: ["O"]).isEmpty && !Erasure.Screen(keep: []).isEmpty)

        // Applied to a signed batch: the screened records become digests; hash, signature and count stay.
        let (signed, cert, batch) = try Self.signedPair()
        #expect(Erasure.Screen().apply(to: signed) == nil, "an empty screen sends the batch as stored")
        #expect(Erasure.Screen(retracted: ["E-9": .zero]).apply(to: signed) == nil, "a screen that touches nothing sends it as stored")
        let cut = try #require(Erasure.Screen(retracted: ["E-1": HLC(millis: 5000, logical: 0)], outside: ["E-2"]).apply(to: signed))
        #expect(cut.hash == signed.hash)
        try cut.verify(certificate: cert)
        let kept = try cut.decode()
        #expect(kept.signedCount == batch.records.count)
        #expect(kept.records.map(\.key) == ["E-0", "E-3"])
        // A narrowed view reads the batch's field names: every record carries a `score` cell (E-0's is null).
        let narrowed = try #require(Erasure.Screen(keep: ["id", "status"]).apply(to: signed))
        #expect(try narrowed.decode().records.isEmpty && narrowed.hash == signed.hash)
        #expect(Erasure.Screen(keep: ["id", "status", "score"]).apply(to: signed) == nil, "a view that still holds every field leaves the batch whole")
    }
}
