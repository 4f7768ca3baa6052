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

    @Test("a random pick among many parties: distinct, every one eligible, and as many as asked whenever enough are eligible — however few are")
    func pickEligible() throws {
        let cities = try (0..<300).map { try CitySlug("city-\($0)") }
        var ae = AntiEntropy(me: me, seed: 3)
        var rng = SplitMix64(seed: 9)
        for _ in 0..<300 {
            let n = 1 + Int(rng.next() % 300), k = Int(rng.next() % 12)
            let eligibleEvery = 1 + Int(rng.next() % 200)  // from all of them to one in 200
            let candidates = Array(cities.prefix(n))
            let eligible = Set(candidates.enumerated().filter { $0.offset % eligibleEvery == 0 }.map(\.element))
            let picked = ae.pick(k, from: candidates) { eligible.contains($0) }
            #expect(Set(picked).count == picked.count, "distinct")
            #expect(picked.allSatisfy(eligible.contains), "eligible")
            #expect(picked.count == Swift.min(k, eligible.count), "n \(n), k \(k), one in \(eligibleEvery)")
        }
    }

    @Test("the connected parties kept in order between changes are the ones a fresh sort gives, whatever connects, goes or changes parties")
    func reachableKeptInStep() throws {
        let cities = try (0..<60).map { try CitySlug("city-\($0 * 7919 % 97)") }
        var rng = SplitMix64(seed: 5)
        var ae = AntiEntropy(me: cities[0], seed: 1)
        ae.setParties(share: Self.share, parties: Set(cities.prefix(40)), held: [:])
        ae.setParties(share: "other", parties: Set(cities.suffix(30)), held: [:])
        for step in 0..<400 {
            switch rng.next() % 10 {
            case 0: ae.setParties(share: Self.share, parties: Set(cities.filter { _ in rng.next() % 3 != 0 }), held: [:])
            case 1...3: ae.onConnect(cities[Int(rng.next() % 60)])
            case 4: ae.setConnected(Set(cities.filter { _ in rng.next() % 2 == 0 }))  // many at once
            default:
                // A few come and go.
                var now = ae.connected
                for _ in 0..<(1 + rng.next() % 4) {
                    let c = cities[Int(rng.next() % 60)]
                    if now.contains(c) { now.remove(c) } else { now.insert(c) }
                }
                ae.setConnected(now)
            }
            for name in [Self.share, "other"] {
                let s = try #require(ae.shares[name])
                let fresh = s.parties.filter { ae.connected.contains($0) }.sorted { $0.rawValue < $1.rawValue }
                #expect(ae.reachable(name, s) == fresh, "step \(step), \(name)")
            }
        }
    }

    /// A node party to `share` with `parties`, holding `held`, all parties connected.
    func node(holding held: VersionVector, parties: Set<CitySlug>? = nil, fanout: Int = 3, window: UInt64 = 64) -> AntiEntropy {
        var ae = AntiEntropy(me: me, config: .init(fanout: fanout, window: window, announce: fanout), seed: 1)
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

    @Test("a summary is answered with an announcement of each origin it lacks batches of, naming how far this node holds it — never with batches")
    func missingRanges() {
        let cases: [(held: VersionVector, theirs: VersionVector, expected: [(CitySlug, UInt64)])] = [
            ([x: 5, y: 3], [x: 2], [(x, 5), (y, 3)]),
            ([x: 5, y: 3], [x: 5, y: 3], []),
            ([x: 5], [x: 7], []),
            ([x: 1], [:], [(x, 1)]),
            ([x: 4, y: 9], [x: 4, y: 8], [(y, 9)]),
        ]
        for (held, theirs, expected) in cases {
            var ae = node(holding: held)
            let directives = ae.onSummary(from: b, share: Self.share, vector: theirs, reply: false)
            #expect(sends(directives).isEmpty)
            let out = announces(directives)
            #expect(out.map(\.0) == Array(repeating: b, count: expected.count))
            #expect(out.map(\.1) == expected.map(\.0), "held \(held), theirs \(theirs)")
            #expect(out.map(\.2) == expected.map(\.1), "held \(held), theirs \(theirs)")
        }
    }

    @Test("a WANT is answered with at most `window` batches; a summary that is still behind is announced to again (what was sent may have been lost)")
    func window() {
        var ae = node(holding: [x: 200, y: 10], window: 64)
        #expect(announces(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [200, 10])
        #expect(sends(ae.onWant(from: b, share: Self.share, origin: x, seqs: 1...200)).map(\.2) == [1...64])
        #expect(sends(ae.onWant(from: b, share: Self.share, origin: x, seqs: 65...200)).map(\.2) == [65...128])
        #expect(announces(ae.onSummary(from: b, share: Self.share, vector: [:], reply: false)).map(\.2) == [200, 10])
        #expect(announces(ae.onSummary(from: b, share: Self.share, vector: [x: 128], reply: false)).map(\.2) == [200, 10])
        #expect(ae.onSummary(from: b, share: Self.share, vector: [x: 200, y: 10], reply: false).isEmpty)
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

    /// The announcements among `directives`, in order.
    func announces(_ directives: [AntiEntropy.Directive]) -> [(CitySlug, CitySlug, UInt64)] {
        directives.compactMap {
            if case .announce(let to, _, let origin, let seq) = $0 { (to, origin, seq) } else { nil }
        }
    }

    @Test("a fresh batch is announced to `fanout` connected parties not known to hold it, never back to its sender or origin; nothing is sent whole")
    func push() throws {
        let e = try CitySlug("ee"), f = try CitySlug("ff")
        var ae = node(holding: [x: 1], parties: [b, c, d, e, f, x], fanout: 10)
        ae.setConnected([b, c, d, e, x])  // f is away
        _ = ae.onSummary(from: b, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: d, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: f, share: Self.share, vector: [x: 1], reply: true)
        _ = ae.onSummary(from: x, share: Self.share, vector: [x: 1], reply: true)
        // c announced that it holds 3 already.
        _ = ae.onAnnounce(from: c, share: Self.share, origin: x, seq: 3)
        // Batch 2 of x arrives from d: b (holds 1) and e (said nothing) may lack it; c holds it;
        // f is away; x wrote it; d sent it.
        let directives = ae.accepted(share: Self.share, origin: x, seq: 2, from: d)
        #expect(sends(directives).isEmpty)
        #expect(announces(directives).map(\.0) == [e, b])
        #expect(announces(directives).allSatisfy { $0.1 == x && $0.2 == 2 })
        // At most `fanout` of them, at random.
        var small = node(holding: [:], parties: [b, c, d], fanout: 2)
        let first = announces(small.accepted(share: Self.share, origin: me, seq: 1, from: me))
        #expect(first.count == 2)
        #expect(Set(first.map(\.0)).isSubset(of: [b, c, d]))
        #expect(small.held(Self.share) == [me: 1])
    }

    @Test("an announcement is answered with one WANT for the batches lacked (at most `window`); again only after `wantTimeout` ticks; never for batches held or from a stranger")
    func announceWant() throws {
        var ae = node(holding: [x: 3], window: 4)
        #expect(ae.onAnnounce(from: b, share: Self.share, origin: x, seq: 5) == [.want(to: b, share: Self.share, origin: x, seqs: 4...5)])
        #expect(ae.wanted(Self.share, origin: x) == 5)
        // Asked already: c's announcement of the same batches, or of more, is not answered (they are on their way).
        #expect(ae.onAnnounce(from: c, share: Self.share, origin: x, seq: 5).isEmpty)
        #expect(ae.onAnnounce(from: c, share: Self.share, origin: x, seq: 9).isEmpty)
        // Held, or from a stranger, or of another share, or beyond any batch number: nothing.
        #expect(ae.onAnnounce(from: c, share: Self.share, origin: x, seq: 3).isEmpty)
        #expect(ae.onAnnounce(from: try CitySlug("zz"), share: Self.share, origin: y, seq: 1).isEmpty)
        #expect(ae.onAnnounce(from: c, share: "other/share", origin: y, seq: 1).isEmpty)
        #expect(ae.onAnnounce(from: c, share: Self.share, origin: y, seq: .max).isEmpty)
        // Another origin is asked for at once, at most `window` batches.
        #expect(ae.onAnnounce(from: c, share: Self.share, origin: y, seq: 100) == [.want(to: c, share: Self.share, origin: y, seqs: 1...4)])
        // The answer never came: once a whole tick has passed, the tick itself asks the party that
        // announced the most meanwhile (c, through 9), at most `window`.
        #expect(ae.onTick().filter { if case .want = $0 { true } else { false } }.isEmpty, "the first tick: the answer may still come")
        #expect(ae.onTick().contains(.want(to: c, share: Self.share, origin: x, seqs: 4...7)))
        // b announcing now is not asked (c's answer is on its way); it is remembered as holding the most.
        #expect(ae.onAnnounce(from: b, share: Self.share, origin: x, seq: 9).isEmpty)
        // Batches 4–7 arrive; a party announced more meanwhile (b, 9): it is asked for the rest at once.
        for n in 4...7 as ClosedRange<UInt64> {
            #expect(ae.onBatch(share: Self.share, origin: x, seq: n, from: c) == .take)
            let next = ae.accepted(share: Self.share, origin: x, seq: n, from: c).filter { if case .want = $0 { true } else { false } }
            #expect(next == (n == 7 ? [.want(to: b, share: Self.share, origin: x, seqs: 8...9)] : []), "after \(n)")
        }
        // A tick with nobody else to ask: the ask of b stays until it too times out.
        _ = ae.onTick()
        #expect(ae.wanted(Self.share, origin: x) == 9)
        // A WANT is answered with the batches held, at most `window`, to a party only.
        var sender = node(holding: [x: 30], window: 8)
        #expect(sends(sender.onWant(from: b, share: Self.share, origin: x, seqs: 2...3)).map(\.2) == [2...3])
        #expect(sends(sender.onWant(from: b, share: Self.share, origin: x, seqs: 20...40)).map(\.2) == [20...27])
        #expect(sends(sender.onWant(from: b, share: Self.share, origin: x, seqs: 1...ReplicationWire.maxSeq)).map(\.2) == [1...8])
        #expect(sender.onWant(from: b, share: Self.share, origin: x, seqs: 31...31).isEmpty)
        #expect(sender.onWant(from: b, share: Self.share, origin: x, seqs: 0...2).isEmpty)
        #expect(sender.onWant(from: b, share: Self.share, origin: y, seqs: 1...1).isEmpty)
        #expect(sender.onWant(from: try CitySlug("zz"), share: Self.share, origin: x, seqs: 1...1).isEmpty)
        #expect(sender.onWant(from: b, share: Self.share, origin: x, seqs: UInt64.max...UInt64.max).isEmpty)
    }

    @Test("announcements naming thousands of invented origins ask for at most `maxWanted` batches at once")
    func wantedBounded() throws {
        var ae = node(holding: [:])
        var wants = 0
        for i in 0..<(AntiEntropy.maxWanted + 500) {
            wants += ae.onAnnounce(from: b, share: Self.share, origin: try CitySlug("ghost-\(i)"), seq: 1).count
        }
        #expect(wants == AntiEntropy.maxWanted)
        // What a party is known to hold is kept for origins held here only: the flood left nothing.
        #expect(ae.reported(Self.share, by: b) == nil)
        // The table empties as the asks time out (twice the timeout: the announcer could be asked
        // again); then new ones are asked for again.
        for _ in 0...(2 * AntiEntropy.wantTimeout) { _ = ae.onTick() }
        #expect(ae.onAnnounce(from: b, share: Self.share, origin: try CitySlug("ghost-late"), seq: 1).count == 1)
    }

    /// Parties exchanging one origin's batches: announcements and requests arrive within the
    /// round they are sent, batches (and summaries) in the next, as in the simulator.
    struct Mesh {
        var nodes: [AntiEntropy]
        var names: [CitySlug]
        var deliveries = 0, duplicates = 0
        var later: [(Int, AntiEntropy.Directive)] = []

        init(_ n: Int) throws {
            let all = try (0..<n).map { try CitySlug("c\($0)") }
            names = all
            nodes = all.enumerated().map { i, me in
                var ae = AntiEntropy(me: me, config: .init(fanout: 3), seed: UInt64(i + 1))
                ae.setParties(share: AntiEntropyTests.share, parties: Set(all), held: [:])
                ae.setConnected(Set(all).subtracting([me]))
                return ae
            }
        }

        mutating func run(_ start: [(Int, AntiEntropy.Directive)]) {
            var queue = start
            var next = 0
            func at(_ to: CitySlug) -> Int { Int(to.rawValue.dropFirst())! }
            while next < queue.count {
                let (i, d) = queue[next]
                next += 1
                switch d {
                case .send(let to, let share, let origin, let seqs):
                    // A batch takes the rest of the round: delivered with the next round's messages.
                    guard let carried = Optional((at(to), seqs)) else { continue }
                    for seq in carried.1 { later.append((i, .send(to: to, share: share, origin: origin, seqs: seq...seq))) }
                case .summary(let to, let share, let vector, let reply):
                    later.append((i, .summary(to: to, share: share, vector: vector, reply: reply)))
                case .announce(let to, let share, let origin, let seq):
                    queue += nodes[at(to)].onAnnounce(from: names[i], share: share, origin: origin, seq: seq).map { (at(to), $0) }
                case .want(let to, let share, let origin, let seqs):
                    queue += nodes[at(to)].onWant(from: names[i], share: share, origin: origin, seqs: seqs).map { (at(to), $0) }
                case .acked: break
                }
            }
        }

        /// Last round's batches and summaries arrive; the origin writes batch `seq`; every node ticks.
        mutating func round(_ seq: UInt64?) {
            let arriving = later
            later = []
            var queue: [(Int, AntiEntropy.Directive)] = []
            func at(_ to: CitySlug) -> Int { Int(to.rawValue.dropFirst())! }
            for (i, d) in arriving {
                switch d {
                case .send(let to, let share, let origin, let seqs):
                    let j = at(to)
                    deliveries += 1
                    switch nodes[j].onBatch(share: share, origin: origin, seq: seqs.lowerBound, from: names[i]) {
                    case .take: queue += nodes[j].accepted(share: share, origin: origin, seq: seqs.lowerBound, from: names[i]).map { (j, $0) }
                    case .duplicate: duplicates += 1
                    default: break
                    }
                case .summary(let to, let share, let vector, let reply):
                    queue += nodes[at(to)].onSummary(from: names[i], share: share, vector: vector, reply: reply).map { (at(to), $0) }
                default: break
                }
            }
            run(queue)
            if let seq { run(nodes[0].accepted(share: AntiEntropyTests.share, origin: names[0], seq: seq, from: names[0]).map { (0, $0) }) }
            for i in nodes.indices { run(nodes[i].onTick().map { (i, $0) }) }
        }

        func held(_ i: Int) -> UInt64 { nodes[i].held(AntiEntropyTests.share)[names[0]] ?? 0 }
    }

    @Test("with announcements, every party takes every batch and almost none arrives twice")
    func mesh() throws {
        var mesh = try Mesh(60)
        for seq in 1...30 as ClosedRange<UInt64> { mesh.round(seq) }
        for _ in 0..<20 { mesh.round(nil) }
        #expect((1..<60).allSatisfy { mesh.held($0) == 30 }, "\((1..<60).map { mesh.held($0) })")
        #expect(mesh.deliveries >= 30 * 59)
        #expect(mesh.duplicates * 20 <= mesh.deliveries, "\(mesh.duplicates) of \(mesh.deliveries) deliveries were duplicates")
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

    @Test("announcement and request messages: round trip; batch 0, above 2^62, UInt64.max, a bad origin and trailing bytes are refused")
    func announceWire() throws {
        for m in [ReplicationWire.Message.announce(share: Self.share, origin: x, seq: 7), .want(share: Self.share, origin: x, seqs: 3...ReplicationWire.maxSeq)] {
            let bytes = ReplicationWire.encode(m)
            #expect(try ReplicationWire.decode(bytes[...]) == m)
            #expect(throws: WireError.self) { try ReplicationWire.decode((bytes + [0])[...]) }
            #expect(throws: WireError.self) { try ReplicationWire.decode(bytes.dropLast()) }
        }
        func encoded(_ type: UInt8, _ origin: String, _ seqs: [UInt64]) -> [UInt8] {
            var w = WireWriter()
            w.u8(type)
            w.str8(Self.share)
            w.str8(origin)
            for n in seqs { w.u64(n) }
            return w.bytes
        }
        let bad: [(UInt8, String, [UInt64])] = [
            (8, "ox", [0]), (8, "ox", [ReplicationWire.maxSeq + 1]), (8, "ox", [.max]), (8, "ox", [1 << 63]), (8, "Not A City", [1]),
            (9, "ox", [0, 1]), (9, "ox", [5, 4]), (9, "ox", [1, ReplicationWire.maxSeq + 1]), (9, "ox", [1, .max]), (9, "ox", [1 << 63, 1 << 63]), (9, "ox", [1]),
        ]
        for (type, origin, seqs) in bad {
            #expect(throws: WireError.self, "type \(type) \(origin) \(seqs)") { try ReplicationWire.decode(encoded(type, origin, seqs)[...]) }
        }
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
