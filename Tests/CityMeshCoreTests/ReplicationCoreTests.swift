import Crypto
import Foundation
import Testing
import X509
@testable import CityMeshCore

/// Change batches (encoding, signatures, chaining, malformed input), the conflict rule, view
/// projection, receipts and the reconciliation of two ledgers.
@Suite("Replication core")
struct ReplicationCoreTests {
    static let hz = try! CitySlug("hangzhou")
    static let sh = try! CitySlug("shanghai")
    static let sz = try! CitySlug("suzhou")

    static func stamp(_ millis: UInt64, _ city: CitySlug) -> Stamp { Stamp(hlc: HLC(millis: millis, logical: 0), city: city) }

    static func batch(seq: UInt64 = 1, prev: [UInt8] = ChangeBatch.zeroHash, records: Int = 3) -> ChangeBatch {
        let fields = [
            Schema.Field(id: 1, name: "id", type: .string, nullable: false), Schema.Field(id: 2, name: "status", type: .string, nullable: true),
            Schema.Field(id: 4, name: "score", type: .double, nullable: true),
        ]
        var recs: [ChangeBatch.Record] = []
        for i in 0..<records {
            let s = stamp(1000 + UInt64(i), hz)
            let score: Value? = i == 0 ? nil : .double(Double(i) / 3)
            let cells = [Cell(field: 1, value: .string("E-\(i)"), stamp: s), Cell(field: 2, value: .string("active"), stamp: s), Cell(field: 4, value: score, stamp: s)]
            recs.append(ChangeBatch.Record(key: "E-\(i)", state: RecordState(cells: cells)))
        }
        return ChangeBatch(
            share: "hangzhou/registry-rw", dataset: "hangzhou/registry", origin: hz, seq: seq, prev: prev, fields: fields, seen: [hz: HLC(millis: 1002, logical: 0), sh: HLC(millis: 7, logical: 1)],
            records: recs)
    }

    @Test("a batch stamped more than 60 s ahead of the receiver's clock is held back, by cells or by a tombstone; up to 60 s it is not")
    func clockBound() {
        var b = Self.batch(records: 3)
        #expect(b.latestStamp == HLC(millis: 1002, logical: 0))
        // Records stamped 1000–1002 ms: a receiver at 0 ms is 1 s behind, well within the bound.
        #expect(b.aheadOfClock(nowMillis: 0) == nil)
        #expect(b.aheadOfClock(nowMillis: 1002) == nil)
        // A receiver whose clock reads 60,001 ms less than the newest stamp holds it back.
        b.records.append(.init(key: "E-late", state: RecordState(cells: [Cell(field: 2, value: .string("x"), stamp: Self.stamp(200_000, Self.hz))])))
        #expect(b.aheadOfClock(nowMillis: 140_000) == nil, "exactly 60 s ahead is allowed")
        #expect(b.aheadOfClock(nowMillis: 139_999) == 60_001)
        // A tombstone counts as much as a cell.
        var t = Self.batch(records: 1)
        t.records.append(.init(key: "E-gone", state: RecordState(cells: [], tombstone: Self.stamp(500_000, Self.sh))))
        #expect(t.latestStamp == HLC(millis: 500_000, logical: 0))
        #expect(t.aheadOfClock(nowMillis: 1_000) == 499_000)
    }

    @Test("a batch round-trips byte for byte; signed with Ed25519 or P-256 it verifies; any changed byte breaks it")
    func batchesSign() throws {
        let b = Self.batch()
        #expect(try ChangeBatch.decode(b.encoded()[...]) == b)
        let ed = Curve25519.Signing.PrivateKey(), p = P256.Signing.PrivateKey()
        let edCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(ed), ed25519: true)
        let pCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(p), ed25519: false)
        for (key, cert, other) in [(Agreement.Key.ed25519(ed), edCert, pCert), (.p256(p), pCert, edCert)] {
            let signed = try b.signed(with: key)
            try signed.verify(certificate: cert)
            let again = try SignedBatch(bytes: signed.bytes[...])
            let decoded = try again.decode()
            #expect(again == signed && again.hash == signed.hash && decoded == b)
            #expect(throws: Agreement.SignatureError.self) { try signed.verify(certificate: other) }
            // Flip one byte anywhere in the body: the signature no longer verifies.
            for i in stride(from: 0, to: signed.body.count, by: 37) {
                var body = signed.body
                body[i] ^= 0x01
                #expect(throws: Agreement.SignatureError.self) { try SignedBatch(body: body, algorithm: signed.algorithm, signature: signed.signature).verify(certificate: cert) }
            }
        }
        // Chaining: the next batch names this one's hash; a different history has a different hash.
        let first = try b.signed(with: .ed25519(ed))
        let second = Self.batch(seq: 2, prev: first.hash)
        #expect(second.prev == first.hash && second.prev != ChangeBatch.zeroHash)
        var forked = b
        forked.records.removeLast()
        #expect(try forked.signed(with: .ed25519(ed)).hash != first.hash)
    }

    @Test("malformed batches and messages are refused with a reason, never a crash")
    func malformed() throws {
        let bytes = Self.batch().encoded()
        for cut in [0, 3, 4, 20, bytes.count / 2, bytes.count - 1] {
            #expect(throws: WireError.self) { try ChangeBatch.decode(bytes[..<cut]) }
        }
        #expect(throws: WireError.self) { try ChangeBatch.decode((bytes + [0])[...]) }
        var wrongMagic = bytes
        wrongMagic[0] = UInt8(ascii: "X")
        #expect(throws: WireError.malformed("not a CityMesh change batch (bad magic)")) { try ChangeBatch.decode(wrongMagic[...]) }
        var zero = Self.batch()
        zero.seq = 0
        #expect(throws: WireError.malformed("batch seq must start at 1")) { try ChangeBatch.decode(zero.encoded()[...]) }
        // Random bytes never crash the decoders.
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            var junk = bytes
            for _ in 0..<3 { junk[Int(rng.next() % UInt64(junk.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? ChangeBatch.decode(junk[...])
            _ = try? ReplicationWire.decode(junk[...])
        }
        #expect(throws: WireError.unknownType(10)) { try ReplicationWire.decode([10, 0][...]) }
        let summary = ReplicationWire.Message.summary(share: "hangzhou/registry-rw", vector: [Self.hz: 12, Self.sh: 3], reply: true)
        let encoded = ReplicationWire.encode(summary)
        #expect(try ReplicationWire.decode(encoded[...]) == summary)
        #expect(encoded.count < 80, "an idle summary of a share with two origins is \(encoded.count) bytes")
        #expect(throws: WireError.self) { try ReplicationWire.decode((encoded + [1])[...]) }
    }

    @Test("conflicts: a concurrent overwrite is reported wherever it is merged; a later edit, a duplicate or an equal value is not", arguments: [
        // (stored writer, stored ms, incoming writer, incoming ms, winner knew loser?, expect conflict)
        ("shanghai", 2000, "suzhou", 2100, false, true),  // suzhou overwrote shanghai without seeing it
        ("shanghai", 2000, "suzhou", 2100, true, false),  // suzhou saw it: a later edit
        ("shanghai", 2100, "suzhou", 2000, false, true),  // suzhou's older write loses; shanghai never saw it
        ("shanghai", 2100, "suzhou", 2000, true, false),  // shanghai had seen suzhou's: knowingly overwritten
    ])
    func conflicts(stored: String, storedAt: Int, incoming: String, incomingAt: Int, knew: Bool, expected: Bool) throws {
        let a = try CitySlug(stored), b = try CitySlug(incoming)
        let mine = RecordState(cells: [Cell(field: 2, value: .string("suspended"), stamp: Self.stamp(UInt64(storedAt), a))])
        let theirs = RecordState(cells: [Cell(field: 2, value: .string("closed"), stamp: Self.stamp(UInt64(incomingAt), b))])
        let winnerIsIncoming = incomingAt > storedAt
        // The winner's knowledge of the loser's writer.
        let loserClock = HLC(millis: UInt64(winnerIsIncoming ? storedAt : incomingAt), logical: 0)
        let knowledge: [CitySlug: HLC] = knew ? [winnerIsIncoming ? a : b: loserClock] : [:]
        let found = ConflictRule.find(
            stored: mine, incoming: theirs, origin: b, originSeen: winnerIsIncoming ? knowledge : [:], me: Self.hz, mySeen: [:],
            latestSeen: { $0 == a && !winnerIsIncoming ? knowledge : nil })
        #expect(found.count == (expected ? 1 : 0), "\(found)")
        if let c = found.first {
            #expect(c.winner.stamp.city == (winnerIsIncoming ? b : a) && c.loser.stamp.city == (winnerIsIncoming ? a : b))
            #expect(c.field == 2)
        }
        // The same value is never a conflict; nor is a cell of the same city.
        let same = RecordState(cells: [Cell(field: 2, value: .string("suspended"), stamp: Self.stamp(UInt64(incomingAt), b))])
        #expect(ConflictRule.find(stored: mine, incoming: same, origin: b, originSeen: [:], me: Self.hz, mySeen: [:], latestSeen: { _ in [:] }).isEmpty)
        let ownCity = RecordState(cells: [Cell(field: 2, value: .string("x"), stamp: Self.stamp(UInt64(incomingAt), a))])
        #expect(ConflictRule.find(stored: mine, incoming: ownCity, origin: a, originSeen: [:], me: Self.hz, mySeen: [:], latestSeen: { _ in [:] }).isEmpty)
    }

    @Test("a relayed loser this node already merged once is not reported twice")
    func relayedDuplicate() {
        let mine = RecordState(cells: [Cell(field: 2, value: .string("closed"), stamp: Self.stamp(3000, Self.hz))])
        let old = RecordState(cells: [Cell(field: 2, value: .string("suspended"), stamp: Self.stamp(2000, Self.sh))])
        // hangzhou wrote after seeing shanghai's cell; the owner relays shanghai's cell back later.
        let found = ConflictRule.find(
            stored: mine, incoming: old, origin: Self.sz, originSeen: [:], me: Self.hz, mySeen: [Self.sh: HLC(millis: 2000, logical: 0)], latestSeen: { _ in nil })
        #expect(found.isEmpty)
    }

    @Test("projection keeps only the view's cells; a replica's schema adopts the owner's new fields")
    func projection() {
        let s = RecordState(cells: [
            Cell(field: 1, value: .string("E-1"), stamp: Self.stamp(1000, Self.hz)), Cell(field: 2, value: .string("audited"), stamp: Self.stamp(3000, Self.sh)),
            Cell(field: 5, value: .string("secret"), stamp: Self.stamp(1000, Self.hz)),
        ])
        #expect(s.projected(onto: [1, 2]).cells.map(\.field) == [1, 2])
        #expect(s.projected(onto: [5]).cells.map(\.value) == [.string("secret")])
        #expect(s.projected(onto: []).cells.isEmpty)
        var schema = try! Schema(replicating: [Schema.Field(id: 1, name: "id", type: .string, nullable: false)], keyField: "id")
        #expect(try! schema.adopt(Schema.Field(id: 3, name: "status", type: .string, nullable: true)))
        #expect(try! !schema.adopt(Schema.Field(id: 3, name: "status", type: .string, nullable: true)))
        #expect(throws: CityMeshError.self) { try schema.adopt(Schema.Field(id: 3, name: "renamed", type: .string, nullable: true)) }
        #expect(throws: CityMeshError.self) { try schema.adopt(Schema.Field(id: 9, name: "status", type: .string, nullable: true)) }
        #expect(throws: CityMeshError.self) { try Schema(replicating: [Schema.Field(id: 2, name: "x", type: .string, nullable: true)], keyField: "id") }
    }

    @Test("receipt runs and digests")
    func receiptRuns() {
        let runs = ExchangeReceipt.runs([(Self.hz, 1), (Self.hz, 2), (Self.hz, 3), (Self.sh, 7), (Self.hz, 5)])
        #expect(runs == ["hangzhou:1-3", "shanghai:7-7", "hangzhou:5-5"])
        #expect(ExchangeReceipt.parseRun("hangzhou:1-3")?.seqs == 1...3)
        for bad in ["hangzhou", "hangzhou:3-1", "hangzhou:0-2", "Bad City:1-2", "hangzhou:a-b"] { #expect(ExchangeReceipt.parseRun(bad) == nil, "\(bad)") }
        #expect(ExchangeReceipt.digest([[1], [2]]) != ExchangeReceipt.digest([[2], [1]]))
    }

    @Test("reconcile: matched receipts, one missing on a side, and a forged countersignature")
    func reconcile() throws {
        let hzKey = Curve25519.Signing.PrivateKey(), shKey = Curve25519.Signing.PrivateKey()
        let hzCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(hzKey), ed25519: true)
        let shCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(shKey), ed25519: true)
        func pair(_ n: Int, signer: Curve25519.Signing.PrivateKey = hzKey) throws -> [Agreement.Signed] {
            let r = ExchangeReceipt(
                share: "hangzhou/registry-rw", sender: Self.hz, receiver: Self.sh, batches: ["hangzhou:\(n)-\(n)"], records: 10, batchesSHA256: "ab", receiverLedgerSize: UInt64(n),
                at: "2026-11-29T08:00:0\(n)Z")
            let rs = try Agreement.Key.ed25519(shKey).sign(r, as: Self.sh)
            let c = try Agreement.Key.ed25519(signer).sign(ReceiptCountersign(receipt: rs.id, sender: Self.hz, senderLedgerSize: 9, at: "t"), as: Self.hz)
            return [rs, c]
        }
        func entry(_ i: UInt64, _ docs: [Agreement.Signed]) -> LedgerEntry {
            LedgerEntry(index: i, time: "t", kind: LedgerEntry.Kind.exchangeReceipt, actor: "peer:x", documents: docs)
        }
        let p1 = try pair(1), p2 = try pair(2), p3 = try pair(3)
        let clean = Reconciliation.compare(a: (Self.hz, [entry(0, p1), entry(1, p2)], hzCert), b: (Self.sh, [entry(5, p2), entry(4, p1)], shCert))
        #expect(clean.isClean && clean.matched.count == 2)
        let gap = Reconciliation.compare(a: (Self.hz, [entry(0, p1), entry(1, p2), entry(2, p3)], hzCert), b: (Self.sh, [entry(4, p1)], shCert))
        #expect(!gap.isClean && gap.onlyInA.map(\.batches) == [["hangzhou:2-2"], ["hangzhou:3-3"]] && gap.onlyInB.isEmpty)
        let forged = try pair(4, signer: Curve25519.Signing.PrivateKey())
        let bad = Reconciliation.compare(a: (Self.hz, [entry(0, forged)], hzCert), b: (Self.sh, [entry(0, forged)], shCert))
        #expect(!bad.isClean && bad.invalid.count == 1 && bad.matched.isEmpty, "\(bad.invalid)")
        let stripped = LedgerEntry(index: 3, time: "t", kind: LedgerEntry.Kind.exchangeReceipt, actor: "peer:x")
        #expect(Reconciliation.compare(a: (Self.hz, [stripped], hzCert), b: (Self.sh, [], shCert)).invalid.count == 1)
        #expect(clean.unnamed == 2, "receipts that name no agreement are counted, not judged")
    }

    @Test("reconcile, batch by batch: a batch one city received that the other's ledger never sent is a gap (complete bundles); a sent batch never received is not")
    func reconcileBatches() throws {
        let hzCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(Curve25519.Signing.PrivateKey()), ed25519: true)
        let shCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(Curve25519.Signing.PrivateKey()), ed25519: true)
        func entry(_ kind: String, _ peer: CitySlug, _ hash: String) -> LedgerEntry {
            LedgerEntry(time: "2026-11-29T08:00:00Z", kind: kind, actor: "node", peer: peer.rawValue, hashes: ["batch.sha256": hash])
        }
        let hz = [entry(LedgerEntry.Kind.exchangeSent, Self.sh, "h1"), entry(LedgerEntry.Kind.exchangeSent, Self.sh, "h2"), entry(LedgerEntry.Kind.exchangeReceived, Self.sh, "m1")]
        let sh = [entry(LedgerEntry.Kind.exchangeReceived, Self.hz, "h1"), entry(LedgerEntry.Kind.exchangeReceived, Self.hz, "h3"), entry(LedgerEntry.Kind.exchangeSent, Self.hz, "m1")]
        let r = Reconciliation.compare(a: (Self.hz, hz, hzCert), b: (Self.sh, sh, shCert), complete: true)
        #expect(r.receivedNotSent == ["shanghai received batch h3 from hangzhou, whose ledger never sent it"] && !r.isClean, "\(r.receivedNotSent)")
        #expect(r.batchesReceived == 2, "h1 and m1; h2 was sent and not (yet) received, which is no gap")
        #expect(Reconciliation.compare(a: (Self.hz, hz, hzCert), b: (Self.sh, sh, shCert), complete: false).receivedNotSent.isEmpty)
    }

    @Test("reconcile under which agreement: accepted before → inside; revoked more than the clock bound before → outside; never accepted (complete bundles) → outside")
    func reconcileAgreements() throws {
        let hzKey = Curve25519.Signing.PrivateKey(), shKey = Curve25519.Signing.PrivateKey()
        let hzCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(hzKey), ed25519: true)
        let shCert = try AgreementCoreTests.certificate(Certificate.PrivateKey(shKey), ed25519: true)
        func exchange(_ n: Int, agreement: String, at: String) throws -> LedgerEntry {
            let r = ExchangeReceipt(
                share: "hangzhou/registry-rw", sender: Self.hz, receiver: Self.sh, batches: ["hangzhou:\(n)-\(n)"], records: 1, batchesSHA256: "ab",
                receiverLedgerSize: 1, at: at, agreement: agreement, purpose: "registry upkeep")
            let rs = try Agreement.Key.ed25519(shKey).sign(r, as: Self.sh)
            let c = try Agreement.Key.ed25519(hzKey).sign(ReceiptCountersign(receipt: rs.id, sender: Self.hz, senderLedgerSize: 9, at: "t"), as: Self.hz)
            return LedgerEntry(index: UInt64(n), time: at, kind: LedgerEntry.Kind.exchangeReceipt, actor: "peer:x", documents: [rs, c])
        }
        func agreement(_ kind: String, _ offer: String, at: String) -> LedgerEntry {
            LedgerEntry(time: at, kind: kind, actor: "node", hashes: ["offer.sha256": offer])
        }
        let accepted = agreement(LedgerEntry.Kind.agreementAccepted, "A1", at: "2026-11-29T08:00:00Z")
        let revoked = agreement(LedgerEntry.Kind.agreementRevoked, "A1", at: "2026-11-29T09:00:00Z")
        let during = try exchange(1, agreement: "A1", at: "2026-11-29T08:30:00Z")
        let justAfter = try exchange(2, agreement: "A1", at: "2026-11-29T09:00:30Z")  // within the clock bound
        let longAfter = try exchange(3, agreement: "A1", at: "2026-11-29T10:00:00Z")
        let unknown = try exchange(4, agreement: "B2", at: "2026-11-29T08:30:00Z")
        let all = [accepted, revoked, during, justAfter, longAfter, unknown]
        let r = Reconciliation.compare(a: (Self.hz, all, hzCert), b: (Self.sh, all, shCert), complete: true)
        #expect(r.matched.count == 4 && !r.isClean)
        // In time order: the unknown agreement's exchange (08:30), then the one long after the revocation.
        #expect(r.outsideAgreement.map(\.exchange.batches) == [["hangzhou:4-4"], ["hangzhou:3-3"]], "\(r.outsideAgreement.map(\.why))")
        #expect(r.outsideAgreement[0].why.contains("accepted in neither ledger") && r.outsideAgreement[1].why.contains("was revoked"))
        // Bundles exported --since may not hold the acceptance: only the revocation counts then.
        let partial = Reconciliation.compare(a: (Self.hz, all, hzCert), b: (Self.sh, all, shCert), complete: false)
        #expect(partial.outsideAgreement.map(\.exchange.batches) == [["hangzhou:3-3"]])
    }
}
