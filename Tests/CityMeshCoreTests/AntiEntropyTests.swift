import Testing
@testable import CityMeshCore

/// The anti-entropy state machine on its own: what it answers to each event, table by table.
@Suite("Anti-entropy (state machine)")
struct AntiEntropyTests {
    static let share = "hz/air"
    let me: CitySlug, b: CitySlug, c: CitySlug, d: CitySlug, x: CitySlug, y: CitySlug

    init() throws {
        me = try CitySlug("hz")
        b = try CitySlug("sh")
        c = try CitySlug("nj")
        d = try CitySlug("wx")
        x = try CitySlug("ox")
        y = try CitySlug("oy")
    }

    /// A node party to `share` with `parties`, holding `held`, all parties connected.
    func node(holding held: VersionVector, parties: Set<CitySlug>? = nil, fanout: Int = 3, window: UInt64 = 64) -> AntiEntropy {
        var ae = AntiEntropy(me: me, config: .init(fanout: fanout, window: window), seed: 1)
        let all = parties ?? [b, c, d]
        ae.setParties(share: Self.share, parties: all, held: held)
        ae.setConnected(all)
        return ae
    }

    /// The batch sends among `directives`, in order.
    func sends(_ directives: [AntiEntropy.Directive]) -> [(CitySlug, CitySlug, ClosedRange<UInt64>)] {
        directives.compactMap {
            if case .send(let to, _, let origin, let seqs) = $0 { (to, origin, seqs) } else { nil }
        }
    }

    func summaries(_ directives: [AntiEntropy.Directive]) -> [(to: CitySlug, reply: Bool)] {
        directives.compactMap {
            if case .summary(let to, _, _, let reply) = $0 { (to, reply) } else { nil }
        }
    }

    @Test("a summary is answered with exactly the ranges it lacks, per origin, and nothing it holds")
    func missingRanges() {
        let cases: [(held: VersionVector, theirs: VersionVector, expected: [(CitySlug, ClosedRange<UInt64>)])] = [
            ([x: 5, y: 3], [x: 2], [(x, 3...5), (y, 1...3)]),
            ([x: 5, y: 3], [x: 5, y: 3], []),
            ([x: 5], [x: 7], []),
            ([x: 1], [:], [(x, 1...1)]),
            ([x: 4, y: 9], [x: 4, y: 8], [(y, 9...9)]),
        ]
        for (held, theirs, expected) in cases {
            var ae = node(holding: held)
            let out = sends(ae.onSummary(from: b, share: Self.share, vector: theirs, reply: false))
            #expect(out.map(\.0) == Array(repeating: b, count: expected.count))
            #expect(out.map(\.1) == expected.map(\.0), "held \(held), theirs \(theirs)")
            #expect(out.map(\.2) == expected.map(\.1), "held \(held), theirs \(theirs)")
        }
    }

    @Test("one answer carries at most `window` batches per origin; the rest go in the next answer")
    func window() {
        var ae = node(holding: [x: 200, y: 10], window: 64)
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [1...64, 1...10])
        // The same stale summary again: what was sent counts as held (optimistically), so the next window follows.
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [65...128])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [x: 128], reply: false)).map(\.2) == [129...192])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [x: 192], reply: false)).map(\.2) == [193...200])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [x: 200, y: 10], reply: false)).isEmpty)
    }

    @Test("a summary showing the peer holds more is answered with ours, marked as a reply; a reply is never answered so")
    func replies() {
        var ae = node(holding: [x: 3])
        let first = ae.onSummary(from: b, share: Self.share, vector: [x: 5], reply: false)
        #expect(summaries(first).map(\.to) == [b])
        #expect(summaries(first).map(\.reply) == [true])
        #expect(first.contains(.summary(to: b, share: Self.share, vector: [x: 3], reply: true)))
        #expect(summaries(ae.onSummary(from: c, share: Self.share, vector: [x: 5], reply: true)).isEmpty, "a reply to a reply would ping-pong")
        #expect(summaries(ae.onSummary(from: d, share: Self.share, vector: [x: 3], reply: false)).isEmpty, "nothing to ask for")
        #expect(summaries(ae.onSummary(from: d, share: Self.share, vector: [y: 1], reply: false)).count == 1, "an origin we do not hold at all")
    }

    @Test("verdicts: the next batch is taken, an old one is a duplicate, one ahead is a gap, a stranger's is refused")
    func verdicts() throws {
        var ae = node(holding: [x: 4])
        let stranger = try CitySlug("zz")
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 5, from: b) == .take)
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 4, from: b) == .duplicate)
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 1, from: c) == .duplicate)
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 7, from: b) == .gap(expected: 5))
        #expect(ae.onBatch(share: Self.share, origin: y, seq: 1, from: b) == .take, "a new origin starts at 1")
        #expect(ae.onBatch(share: Self.share, origin: y, seq: 2, from: b) == .gap(expected: 1))
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 5, from: stranger) == .notParty)
        #expect(ae.onBatch(share: "hz/other", origin: x, seq: 5, from: b) == .notParty)
        _ = ae.accepted(share: Self.share, origin: x, seq: 5, from: b)
        #expect(ae.held(Self.share) == [x: 5])
        #expect(ae.onBatch(share: Self.share, origin: x, seq: 5, from: c) == .duplicate)
        // Summaries from strangers change nothing and get no answer.
        #expect(ae.onSummary(from: stranger, share: Self.share, vector: [:], reply: false).isEmpty)
    }

    @Test("a fresh batch is pushed only to connected parties known to hold its predecessor, never back to its sender or origin")
    func push() throws {
        let e = try CitySlug("ee"), f = try CitySlug("ff")
        var ae = node(holding: [x: 1], parties: [b, c, d, e, f, x], fanout: 10)
        ae.setConnected([b, c, d, e, x])  // f is away
        _ = ae.onSummary(from: b, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: d, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: f, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: x, share: Self.share, vector: [x: 1], reply: true)
        // Batch 2 of x arrives from d: b holds 1 and can take 2 next; c and e said nothing (so may lack 1);
        // f is away; x wrote it. (A summary from c would have been answered with batch 1, after which
        // c counts as holding it.)
        let out = sends(ae.accepted(share: Self.share, origin: x, seq: 2, from: d))
        #expect(out.map(\.0) == [b])
        #expect(out.map(\.2) == [2...2])
        // Pushed once: b is now known to hold 2, so the duplicate arriving from c is not pushed again.
        #expect(sends(ae.accepted(share: Self.share, origin: x, seq: 2, from: c)).isEmpty)
        // Batch 1 of a new origin goes to parties that said nothing of it, at most `fanout` of them.
        var small = node(holding: [:], parties: [b, c, d], fanout: 2)
        let first = sends(small.accepted(share: Self.share, origin: me, seq: 1, from: me))
        #expect(first.count == 2)
        #expect(Set(first.map(\.0)).isSubset(of: [b, c, d]))
        #expect(small.held(Self.share) == [me: 1])
    }

    @Test("a disconnect forgets what we assumed the peer got: a stale summary is answered in full again")
    func disconnectForgets() {
        var ae = node(holding: [x: 3])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [1...3])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).isEmpty, "assumed delivered")
        ae.setConnected([c, d])
        ae.setConnected([b, c, d])
        #expect(sends(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [1...3], "the batches may have been lost with the connection")
        // Staying connected keeps the optimism; other peers' knowledge is untouched by b's disconnect.
        var other = node(holding: [x: 3])
        _ = other.onSummary(from: c, share: Self.share, vector: [:], reply: false)
        other.setConnected([c, d])
        #expect(sends(other.onSummary(from: c, share: Self.share, vector: [:], reply: false)).isEmpty)
    }

    @Test("acknowledgedByAll is the minimum over every party's report; an unreported origin or party counts as 0")
    func acknowledged() {
        var ae = node(holding: [x: 5, y: 2, me: 7], parties: [b, c])
        #expect(ae.acknowledgedByAll(Self.share) == [:], "nobody reported yet")
        _ = ae.onSummary(from: b, share: Self.share, vector: [x: 3, y: 2, me: 7], reply: true)
        #expect(ae.acknowledgedByAll(Self.share) == [:], "c has not reported")
        _ = ae.onSummary(from: c, share: Self.share, vector: [x: 4, me: 9], reply: true)
        #expect(ae.acknowledgedByAll(Self.share) == [x: 3, me: 7], "y: c reported none; me: never above what we hold")
        // Optimism does not count: batches sent to b are not acknowledged until b says so.
        _ = ae.onSummary(from: b, share: Self.share, vector: [x: 3, y: 2, me: 7], reply: false)
        #expect(ae.acknowledgedByAll(Self.share) == [x: 3, me: 7])
        // A party removed from the share no longer holds it back.
        ae.setParties(share: Self.share, parties: [b], held: [x: 5, y: 2, me: 7])
        #expect(ae.acknowledgedByAll(Self.share) == [x: 3, y: 2, me: 7])
    }

    @Test("each tick sends our summary to at most `fanout` connected parties, never to one away")
    func tick() {
        var ae = node(holding: [x: 2], parties: [b, c, d], fanout: 2)
        ae.setConnected([b, d])
        for _ in 0..<20 {
            let out = summaries(ae.onTick())
            #expect(Set(out.map(\.to)) == [b, d])
            #expect(out.allSatisfy { !$0.reply })
        }
        ae.setConnected([b, c, d])
        #expect(ae.onTick().count == 2)
        ae.setConnected([])
        #expect(ae.onTick().isEmpty)
    }

    @Test("the summary message: round trip, and the size the simulator counts (5 + Σ 9 + origin bytes)")
    func summaryWire() throws {
        let v: VersionVector = [x: 5, y: 300, me: 1]
        for reply in [false, true] {
            let bytes = ReplicationWire.encode(.summary(share: Self.share, vector: v, reply: reply))
            #expect(try ReplicationWire.decode(bytes[...]) == .summary(share: Self.share, vector: v, reply: reply))
            #expect(bytes.count == 1 + 1 + Self.share.utf8.count + 2 + v.keys.reduce(0) { $0 + 1 + $1.rawValue.utf8.count + 8 })
        }
    }
}
