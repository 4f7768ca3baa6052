import Crypto
import Foundation
import Testing
@testable import CityMeshCore

/// Values any member (or any API caller) can send, fed to the decoders and state machines that
/// take them: each of these trapped the process before it was fixed (threat model §6, issue 18).
/// A test here fails by crashing the test process, so each asserts the refusal, not just survival.
@Suite("Hostile input: no trap from outside")
struct HostileInputTests {
    static let hz = try! CitySlug("hangzhou")
    static let sh = try! CitySlug("shanghai")
    static let sz = try! CitySlug("suzhou")

    // MARK: RFC 3339 (auditors' ?since=, record values, policy dates, peers' offers)

    @Test("an RFC 3339 time with more than 6 fraction digits parses to microseconds instead of trapping")
    func longFractions() {
        let micro = RFC3339.parse("2026-01-01T00:00:00.123456Z")
        #expect(micro != nil)
        #expect(RFC3339.parse("2026-01-01T00:00:00.1234567Z") == micro)
        #expect(RFC3339.parse("2026-01-01T00:00:00.123456999999999999999999Z") == micro)
        #expect(RFC3339.parse("2026-01-01T00:00:00.1Z") == RFC3339.parse("2026-01-01T00:00:00.100000Z"))
        #expect(RFC3339.parse("2026-01-01T00:00:00.1234567") == nil, "no zone")
        #expect(RFC3339.parse("2026-01-01T00:00:00.Z") == nil, "no digits")
        // Reached through a row filter's date literal and a policy's dates too.
        let schema = try! Schema(keyField: "id", fields: [("id", .string), ("at", .timestamp)])
        #expect((try? RowFilter("at >= '2026-01-01T00:00:00.1234567Z'", schema: schema)) != nil)
    }

    // MARK: SWIM membership

    @Test("an update about the receiver at incarnation UInt64.max is refused by the decoder and cannot overflow a refutation")
    func incarnationMax() throws {
        let bytes = Membership.Message.ping(seq: 1, updates: [.init(city: Self.hz, status: .dead, incarnation: .max)]).encoded()
        #expect(throws: WireError.self) { try Membership.Message.decode(bytes[...]) }
        let atBound = Membership.Message.ping(seq: 1, updates: [.init(city: Self.hz, status: .dead, incarnation: Membership.maxIncarnation)]).encoded()
        #expect(try Membership.Message.decode(atBound[...]).updates.first?.incarnation == Membership.maxIncarnation)
        // In-process (the simulator builds updates directly): the receiver does not trap and does
        // not go past the bound.
        var m = Membership(me: Self.hz, seeds: [Self.sh], seed: 1)
        for inc: UInt64 in [.max, Membership.maxIncarnation, Membership.maxIncarnation - 1] {
            _ = m.onMessage(from: Self.sh, .ping(seq: 1, updates: [.init(city: Self.hz, status: .dead, incarnation: inc)]), now: 1)
        }
        #expect(m.incarnation == Membership.maxIncarnation, "refuted the last plausible one")
    }

    @Test("hearsay about cities never heard from is ignored once restricted; tables stay bounded under floods")
    func membershipBounded() throws {
        var m = Membership(me: Self.hz, seeds: [Self.sh], seed: 1)
        m.admitOnlyKnown()
        let ghosts = try (0..<5000).map { try CitySlug("ghost-\($0)") }
        for chunk in stride(from: 0, to: ghosts.count, by: 60) {
            let updates = ghosts[chunk..<min(chunk + 60, ghosts.count)].map { Membership.Update(city: $0, status: .alive, incarnation: 1) }
            _ = m.onMessage(from: Self.sh, .ping(seq: 1, updates: updates), now: 1)
        }
        #expect(m.members.keys.sorted() == [Self.sh], "only the seed: \(m.members.count)")
        // A city that talks to this node directly (authenticated by the transport) is a member.
        _ = m.onMessage(from: Self.sz, .ping(seq: 2, updates: []), now: 2)
        #expect(Set(m.members.keys) == [Self.sh, Self.sz])
        // Unrestricted (the simulator) it learns by hearsay, up to maxMembers.
        var config = Membership.Config()
        config.maxMembers = 100
        var open = Membership(me: Self.hz, seeds: [Self.sh], config: config, seed: 1)
        for chunk in stride(from: 0, to: ghosts.count, by: 60) {
            _ = open.onMessage(from: Self.sh, .ping(seq: 1, updates: ghosts[chunk..<min(chunk + 60, ghosts.count)].map { .init(city: $0, status: .alive, incarnation: 1) }), now: 1)
        }
        #expect(open.members.count == 100)
        // PING-REQs for targets that never answer: the relay table is bounded.
        for i in 0..<5000 { _ = open.onMessage(from: Self.sh, .pingReq(seq: UInt32(i), target: ghosts[i], updates: []), now: 3) }
        #expect(open.relays.count <= Membership.maxRelays)
    }

    // MARK: Anti-entropy summaries

    @Test("summaries with batch numbers near UInt64.max: the decoder refuses them, the state machine saturates")
    func summaryNearMax() throws {
        for seq: UInt64 in [.max, 1 << 63, ReplicationWire.maxSeq + 1] {
            let bytes = ReplicationWire.encode(.summary(share: "hangzhou/air", vector: [Self.hz: seq], reply: false))
            #expect(throws: WireError.self, "\(seq)") { try ReplicationWire.decode(bytes[...]) }
        }
        // Duplicate origins: encoded by hand, since a dictionary cannot hold them.
        var w = WireWriter()
        w.u8(1); w.str8("hangzhou/air"); w.u16(2)
        for n: UInt64 in [1, 2] { w.str8("hangzhou"); w.u64(n) }
        #expect(throws: WireError.self) { try ReplicationWire.decode(w.bytes[...]) }

        var ae = AntiEntropy(me: Self.hz, config: .init(fanout: 3, window: 256), seed: 1)
        ae.setParties(share: "hangzhou/air", parties: [Self.sh, Self.sz], held: [Self.hz: 10, Self.sz: .max - 1])
        ae.setConnected([Self.sh, Self.sz])
        // A party claims to hold everything of every origin, then nearly everything.
        #expect(ae.onSummary(from: Self.sh, share: "hangzhou/air", vector: [Self.hz: .max, Self.sz: .max], reply: false).isEmpty == false)
        let d = ae.onSummary(from: Self.sz, share: "hangzhou/air", vector: [Self.hz: .max - 2, Self.sz: .max - 3], reply: true)
        for case .send(_, _, _, let seqs) in d { #expect(seqs.lowerBound >= 1 && seqs.upperBound <= .max - 1) }
        #expect(ae.onBatch(share: "hangzhou/air", origin: Self.sz, seq: .max, from: Self.sh) == .take)
        #expect(ae.onBatch(share: "hangzhou/air", origin: Self.hz, seq: .max, from: Self.sh) == .gap(expected: 11))
        _ = ae.accepted(share: "hangzhou/air", origin: Self.sz, seq: .max, from: Self.sh)
        // Announcements and requests at the edges: nothing traps, nothing beyond 2^62 is asked for,
        // and an answer never runs past what is held or past `window` batches.
        #expect(ae.onAnnounce(from: Self.sh, share: "hangzhou/air", origin: Self.hz, seq: .max).isEmpty)
        #expect(ae.onAnnounce(from: Self.sh, share: "hangzhou/air", origin: Self.sz, seq: ReplicationWire.maxSeq).isEmpty)
        for case .want(_, _, _, let seqs) in ae.onAnnounce(from: Self.sh, share: "hangzhou/air", origin: Self.hz, seq: ReplicationWire.maxSeq) {
            #expect(seqs == 11...266)
        }
        for case .send(_, _, _, let seqs) in ae.onWant(from: Self.sh, share: "hangzhou/air", origin: Self.sz, seqs: (.max - 5)...(.max)) {
            #expect(seqs == (.max - 5)...(.max - 1), "at most one window, within what is held")
        }
        #expect(ae.onWant(from: Self.sh, share: "hangzhou/air", origin: Self.hz, seqs: 11...(.max)).isEmpty)
        #expect(ae.onGap(share: "hangzhou/air", origin: Self.sz, seq: .max, from: Self.sh).isEmpty)
        #expect(ae.onGap(share: "hangzhou/air", origin: Self.hz, seq: 12, from: Self.sh).count == 1, "batch 11 was asked of sh; 12 came first")
        #expect(ae.isParty(Self.sh, of: "hangzhou/air") && !ae.isParty(Self.hz, of: "hangzhou/air") && !ae.isParty(Self.sh, of: "other"))
    }

    // MARK: Batches

    static func batch(fields: [Schema.Field], seen: [CitySlug: HLC] = [:], seq: UInt64 = 1) -> ChangeBatch {
        let s = Stamp(hlc: HLC(millis: 1000, logical: 0), city: hz)
        return ChangeBatch(
            share: "hangzhou/reg", dataset: "hangzhou/reg", origin: hz, seq: seq, prev: ChangeBatch.zeroHash, fields: fields, seen: seen,
            records: [.init(key: "k", state: RecordState(cells: [Cell(field: 1, value: .string("k"), stamp: s)]))])
    }

    @Test("a batch naming a field id or name twice, a seen city twice, or a seq above 2^62 is refused")
    func batchDuplicates() throws {
        let id = Schema.Field(id: 1, name: "id", type: .string, nullable: false)
        let good = Self.batch(fields: [id, .init(id: 2, name: "status", type: .string, nullable: true)])
        #expect(try ChangeBatch.decode(good.encoded()[...]) == good)
        let sameID = Self.batch(fields: [id, .init(id: 1, name: "status", type: .string, nullable: true)])
        #expect { try ChangeBatch.decode(sameID.encoded()[...]) } throws: { "\($0)".contains("field id 1 twice") }
        let sameName = Self.batch(fields: [id, .init(id: 2, name: "id", type: .string, nullable: true)])
        #expect { try ChangeBatch.decode(sameName.encoded()[...]) } throws: { "\($0)".contains("field") && "\($0)".contains("id") && "\($0)".contains("twice") }
        for seq: UInt64 in [.max, 1 << 63, ReplicationWire.maxSeq + 1] {
            #expect(throws: WireError.self) { try ChangeBatch.decode(Self.batch(fields: [id], seq: seq).encoded()[...]) }
        }
        // The seen map's city twice: patch the second of two seen entries to name the first city.
        let two = Self.batch(fields: [id], seen: [Self.sh: HLC(millis: 1, logical: 0), Self.sz: HLC(millis: 2, logical: 0)])
        var bytes = two.encoded()
        let suzhou = Array("\u{6}suzhou".utf8)
        let at = try #require(bytes.indices.first { Array(bytes[$0..<min($0 + suzhou.count, bytes.count)]) == suzhou })
        bytes.replaceSubrange(at..<(at + suzhou.count), with: Array("\u{8}shanghai".utf8))
        #expect { try ChangeBatch.decode(bytes[...]) } throws: { "\($0)".contains("twice") }
    }

    @Test("a cutter with more than 4,096 cities in its seen map keeps the newest 4,096 and the batch encodes and decodes")
    func seenCapped() throws {
        var seen: [CitySlug: HLC] = [:]
        for i in 0..<70_000 { seen[try CitySlug("c\(i)")] = HLC(millis: UInt64(i), logical: 0) }
        let b = Self.batch(fields: [.init(id: 1, name: "id", type: .string, nullable: false)], seen: seen)
        #expect(b.seen.count == ChangeBatch.maxSeen)
        #expect(b.seen.values.min() == HLC(millis: UInt64(70_000 - ChangeBatch.maxSeen), logical: 0))
        #expect(try ChangeBatch.decode(b.encoded()[...]).seen.count == ChangeBatch.maxSeen)
    }

    /// A stored-state blob with one cell whose field id (or string length) is the varint `value`.
    static func stateBlob(fieldVarint: [UInt8], stringLength: [UInt8]? = nil) -> [UInt8] {
        var out: [UInt8] = [RecordStateCodec.formatVersion, 1]  // one stamp
        out += [UInt8](repeating: 0, count: 7) + [1]  // HLC
        out += [8] + Array("hangzhou".utf8)
        out += [0]  // no tombstone
        out += [1]  // one cell
        out += fieldVarint
        out += [0]  // stamp index
        if let stringLength {
            out += [1] + stringLength + Array("x".utf8)
        } else {
            out += [0]  // null
        }
        return out
    }

    @Test("record-state varints at or above 2^63 (field ids, string lengths) are refused as corrupt")
    func varints() throws {
        let two63: [UInt8] = [UInt8](repeating: 0x80, count: 9) + [0x01]
        let max: [UInt8] = [UInt8](repeating: 0xFF, count: 9) + [0x01]
        #expect(try RecordStateCodec.decode(Self.stateBlob(fieldVarint: [3])).cells.first?.field == 3)
        for v in [two63, max] {
            #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(Self.stateBlob(fieldVarint: v)) }
            #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(Self.stateBlob(fieldVarint: [3], stringLength: v)) }
        }
    }

    // MARK: Receipts, checkpoints, cosignatures

    @Test("receipt runs, checkpoint sizes and cosignature timestamps beyond what can exist are refused")
    func sizes() throws {
        #expect(ExchangeReceipt.parseRun("hangzhou:1-\(ReplicationWire.maxSeq)")?.seqs.count == Int(ReplicationWire.maxSeq))
        for bad in ["hangzhou:1-9223372036854775808", "hangzhou:1-18446744073709551615", "hangzhou:9223372036854775807-9223372036854775808"] {
            #expect(ExchangeReceipt.parseRun(bad) == nil, "\(bad)")
        }
        let root = Merkle.emptyRoot.base64
        #expect(try Checkpoint(text: "o\n9223372036854775807\n\(root)\n").size == UInt64(Int64.max))
        for size in ["9223372036854775808", "18446744073709551615"] {
            #expect(throws: NoteError.self) { try Checkpoint(text: "o\n\(size)\n\(root)\n") }
        }
        for t in [Cosignature.maxTimestamp + 1, UInt64(Int64.max), .max] {
            let c = Cosignature(witness: "shanghai", keyID: 7, timestamp: t, signature: [UInt8](repeating: 1, count: 64))
            #expect(throws: NoteError.self, "\(t)") { try Cosignature(line: c.line) }
        }
        let ok = Cosignature(witness: "shanghai", keyID: 7, timestamp: Cosignature.maxTimestamp, signature: [UInt8](repeating: 1, count: 64))
        #expect(try Cosignature(line: ok.line).timestamp == Cosignature.maxTimestamp)
    }

    @Test("saturating arithmetic for counts from outside")
    func saturating() {
        #expect(UInt64.max.saturatingAdd(1) == .max)
        #expect(UInt64(3).saturatingSubtract(5) == 0)
        #expect(Int.min.saturatingAdd(-1) == .min)
        #expect(Int.max.saturatingMultiply(2) == .max && Int.max.saturatingMultiply(-2) == .min)
        var n = Int.max - 1
        n.addSaturating(10)
        #expect(n == .max)
    }

    // MARK: Agreement documents in another city's name

    static let share = Policy.Share(
        id: "reg-rw", dataset: "registry", to: [sh, sz], fields: ["id", "status"], filter: nil, write: ["status"], purpose: "p",
        legalBasis: "MoU", validFrom: nil, validUntil: RFC3339.parse("2028-01-01T00:00:00Z")!, validUntilText: "2027-12-31", onRevoke: .purge)

    @Test("offer ids are unpredictable: the same terms planned twice get different nonces and ids")
    func offerNonce() throws {
        var rng = SystemRandomNumberGenerator()
        let policy = Policy(shares: [Self.share])
        let a = Agreement.plan(owner: Self.hz, policy: policy, version: 1, current: [], issuedAt: "t", using: &rng).offer
        let b = Agreement.plan(owner: Self.hz, policy: policy, version: 1, current: [], issuedAt: "t", using: &rng).offer
        #expect(a.count == 2 && b.count == 2)
        #expect(a[0].sameTerms(b[0]) && a[0] != b[0])
        #expect(a.allSatisfy { ($0.nonce?.count ?? 0) == 32 })
        let key = Agreement.Key.ed25519(Curve25519.Signing.PrivateKey())
        #expect(try key.sign(a[0], as: Self.hz).id != key.sign(b[0], as: Self.hz).id)
        // A co-member that knows its own offer cannot derive the other member's: the nonces differ.
        #expect(a[0].nonce != a[1].nonce)
    }

    @Test("a revocation, response or offer is checked against its sender and the stored offer it names")
    func documentsInAnotherName() throws {
        var offer = Agreement.Offer(owner: Self.hz, member: Self.sh, share: Self.share, policyVersion: 1, issuedAt: "t", nonce: "ab")
        let id = "offer-id"
        func revocation(owner: CitySlug, member: CitySlug, share: String = "reg-rw", offer: String = id) -> Agreement.Revocation {
            .init(offer: offer, owner: owner.rawValue, share: share, member: member.rawValue, reason: "r", at: "t")
        }
        // The owner revoking its offer to shanghai, at shanghai: accepted.
        try Agreement.check(revocation(owner: Self.hz, member: Self.sh), revokes: offer, offerID: id, from: Self.hz, to: Self.sh)
        // Suzhou (a co-member) revoking shanghai's agreement at shanghai, in its own name or hangzhou's.
        #expect(throws: Agreement.SignatureError.self) {
            try Agreement.check(revocation(owner: Self.sz, member: Self.sh), revokes: offer, offerID: id, from: Self.sz, to: Self.sh)
        }
        #expect(throws: Agreement.SignatureError.self) {
            try Agreement.check(revocation(owner: Self.hz, member: Self.sh), revokes: offer, offerID: id, from: Self.sz, to: Self.sh)
        }
        // Any city revoking at the owner (hangzhou) "as owner", naming the owner as member.
        #expect(throws: Agreement.SignatureError.self) {
            try Agreement.check(revocation(owner: Self.sh, member: Self.hz), revokes: offer, offerID: id, from: Self.sh, to: Self.hz)
        }
        // Another share's name, another offer's id.
        #expect(throws: Agreement.SignatureError.self) {
            try Agreement.check(revocation(owner: Self.hz, member: Self.sh, share: "other"), revokes: offer, offerID: id, from: Self.hz, to: Self.sh)
        }
        #expect(throws: Agreement.SignatureError.self) {
            try Agreement.check(revocation(owner: Self.hz, member: Self.sh, offer: "x"), revokes: offer, offerID: id, from: Self.hz, to: Self.sh)
        }

        let yes = Agreement.Response(offer: id, owner: "hangzhou", share: "reg-rw", member: "shanghai", accept: true, at: "t")
        try Agreement.check(yes, answers: offer, offerID: id, from: Self.sh, to: Self.hz)
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(yes, answers: offer, offerID: id, from: Self.sz, to: Self.hz) }
        var wrongShare = yes
        wrongShare.share = "other"
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(wrongShare, answers: offer, offerID: id, from: Self.sh, to: Self.hz) }
        var maybe = yes
        maybe.decision = "accept-all"
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(maybe, answers: offer, offerID: id, from: Self.sh, to: Self.hz) }

        try Agreement.check(offer, from: Self.hz, to: Self.sh)
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(offer, from: Self.sz, to: Self.sh) }
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(offer, from: Self.hz, to: Self.sz) }
        offer.validUntil = "2027-12-31T00:00:00.1234567Z"
        try Agreement.check(offer, from: Self.hz, to: Self.sh)
        offer.validUntil = "soon"
        #expect(throws: Agreement.SignatureError.self) { try Agreement.check(offer, from: Self.hz, to: Self.sh) }
    }

    // MARK: Peers and certificates

    @Test("a peer whose certificate is for this node's own city is refused at HELLO")
    func ownCity() {
        let hello = Hello(versions: 1...1, city: "hangzhou", software: "t", listen: "127.0.0.1:7001", maxFrameLength: 70_000, capabilities: [])
        var s = PeerSession(configuration: .init(hello: hello, handshakeTimeout: 10, keepaliveInterval: 100, idleTimeout: 300), now: 0)
        _ = s.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        let d = s.onMessage(.hello(hello), now: 1)
        #expect(d.contains { if case .close(.wrongCity, let text) = $0 { text.contains("own city") } else { false } })
        #expect(s.isClosed)
    }

    @Test("a relayed certificate never stands in for this node's own or a directly connected city's")
    func relayedCertificates() {
        #expect(PeerTrust.refusesRelayed(origin: Self.hz, from: Self.sh, me: Self.hz, connectedDirectly: false) != nil)
        #expect(PeerTrust.refusesRelayed(origin: Self.sz, from: Self.sh, me: Self.hz, connectedDirectly: true) != nil)
        #expect(PeerTrust.refusesRelayed(origin: Self.sh, from: Self.sh, me: Self.hz, connectedDirectly: false) != nil)
        #expect(PeerTrust.refusesRelayed(origin: Self.sz, from: Self.sh, me: Self.hz, connectedDirectly: false) == nil)
    }

    // MARK: Refusals in the ledger

    @Test("refusals are ledgered once per peer, kind and reason an interval, at most 20 per peer and kind; the next entry counts what was left out")
    func refusalThrottle() {
        var t = RefusalThrottle(interval: 60_000_000, perPeer: 20, capacity: 100)
        #expect(t.admit(peer: "suzhou", kind: "exchange.refused", reason: "batch suzhou:17 refused", now: 0) == 0)
        // The same reason with other numbers, within the interval: counted only.
        for i in 18..<1018 { #expect(t.admit(peer: "suzhou", kind: "exchange.refused", reason: "batch suzhou:\(i) refused", now: 1_000) == nil) }
        // Another peer, another kind: their own entries.
        #expect(t.admit(peer: "shanghai", kind: "exchange.refused", reason: "batch suzhou:17 refused", now: 1_000) == 0)
        #expect(t.admit(peer: "suzhou", kind: "agreement.refused", reason: "batch suzhou:17 refused", now: 1_000) == 0)
        // Reasons that differ each time (invented share names): 20 an interval, then counted.
        var ledgered = 0
        for i in 0..<10_000 where t.admit(peer: "suzhou", kind: "exchange.refused", reason: "share x\(String(i, radix: 26)) is unknown", now: 2_000) != nil { ledgered += 1 }
        #expect(ledgered == 19, "one of the 20 went to the first reason")
        #expect(t.slots.count <= 100 && t.budgets.count <= 100, "bounded tables")
        // The next interval: the first entry says how many were left out since the last entry
        // (each ledgered one reports those before it).
        let pending = t.suppressed - 0
        #expect(pending > 9_000)
        #expect(t.admit(peer: "suzhou", kind: "exchange.refused", reason: "batch suzhou:2000 refused", now: 61_000_000) == pending)
        #expect(t.admit(peer: "suzhou", kind: "exchange.refused", reason: "batch suzhou:2001 refused", now: 61_000_001) == nil)
        // Many peers (a port scan from many addresses): the tables stay bounded.
        for i in 0..<1000 { _ = t.admit(peer: "10.0.\(i / 256).\(i % 256)", kind: "peer.refused", reason: "no_client_certificate", now: 62_000_000) }
        #expect(t.slots.count <= 100 && t.budgets.count <= 100)
    }

    @Test("rate limits per peer and channel: bursts, then the configured rate; each peer and channel on its own; bounded tables")
    func rateLimits() throws {
        var l = PeerRateLimiter(limits: ["agreements": .init(perSecond: 10, burst: 20)], capacity: 64)
        var admitted = 0
        for _ in 0..<100 where l.admit(Self.sz, channel: Agreement.channel, now: 0) { admitted += 1 }
        #expect(admitted == 20, "the burst")
        #expect(l.refused[Self.sz]?["agreements"] == 80)
        // Another channel and another peer are untouched.
        let otherChannel = l.admit(Self.sz, channel: ReplicationWire.channel, now: 0)
        let otherPeer = l.admit(Self.sh, channel: Agreement.channel, now: 0)
        #expect(otherChannel && otherPeer)
        // Half a second later, 5 more.
        admitted = 0
        for _ in 0..<100 where l.admit(Self.sz, channel: Agreement.channel, now: 500_000) { admitted += 1 }
        #expect(admitted == 5)
        // A clock that goes back neither traps nor refills.
        let backwards = l.admit(Self.sz, channel: Agreement.channel, now: -1_000_000_000)
        #expect(!backwards)
        // Unknown channels share the small 'other' limit.
        admitted = 0
        for _ in 0..<100 where l.admit(Self.sz, channel: 999, now: 0) { admitted += 1 }
        #expect(admitted == PeerRateLimiter.defaults["other"]?.burst)
        // Many peers: the tables stay bounded.
        for i in 0..<1000 { _ = l.admit(try CitySlug("c\(i)"), channel: 1, now: Int64(i)) }
        #expect(l.buckets.count <= 64 && l.refused.count <= 64)
    }

    // MARK: Policy and config YAML

    @Test("policies with anchors and aliases, non-scalar keys, base-60 numbers or huge lists are refused with a line")
    func yaml() throws {
        let schema = try Schema(keyField: "id", fields: [("id", .string), ("status", .string)])
        let context = PolicyContext(city: Self.hz, datasets: ["registry": schema], now: RFC3339.parse("2026-11-29T08:00:00Z")!)
        func issues(_ text: String) -> [PolicyIssue] {
            do { _ = try Policy.load(yaml: text, context: context); return [] } catch { return error.issues }
        }
        let laughs = """
            shares:
              - &s
                id: a
                dataset: registry
                to: [shanghai]
                fields: [id]
                purpose: p
                legal_basis: l
                valid_until: 2027-12-31
            \(String(repeating: "  - *s\n", count: 1000))
            """
        #expect(issues(laughs).first.map { $0.message.contains("anchors and aliases") && $0.line >= 2 } == true)
        #expect(issues("shares:\n  - ? [a, b]\n    : 1\n").first?.message.contains("plain name") == true)
        #expect(issues("shares:\n  - id: 1:2:3:4:5:6:7:8:9:10:11:12\n").first?.message.contains("base-60") == true)
        let many = "shares:\n  - id: a\n    to: [\(Array(repeating: "x", count: UntrustedYAML.maxItems + 1).joined(separator: ","))]\n"
        #expect(issues(many).first?.message.contains("at most") == true)
    }
}
