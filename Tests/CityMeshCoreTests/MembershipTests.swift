import Testing
@testable import CityMeshCore

/// SWIM membership under a deterministic simulated network: joins from one seed, failure
/// detection, refutation of false suspicion, and loss.
@Suite("Gossip membership (SWIM)")
struct MembershipTests {
    /// N nodes on a fake network: every message takes one 100 ms step, some are lost, some nodes are down.
    struct Sim {
        var nodes: [CitySlug: Membership] = [:]
        var down: Set<CitySlug> = []
        /// While set, messages between cities on different sides are lost.
        var partition: Set<CitySlug>?
        var inFlight: [(from: CitySlug, to: CitySlug, Membership.Message)] = []
        var rng: SplitMix64
        var now: UInt64 = 0
        let loss: Double
        var sent = 0

        init(count: Int, loss: Double, seed: UInt64, config: Membership.Config = .init()) {
            self.loss = loss
            rng = SplitMix64(seed: seed)
            let cities = (0..<count).map { try! CitySlug("city\($0)") }
            for c in cities {
                // Everyone knows only the first city: membership spreads by gossip.
                nodes[c] = Membership(me: c, seeds: c == cities[0] ? [] : [cities[0]], config: config, seed: seed)
            }
        }

        mutating func step() {
            now += 100_000_000
            let delivering = inFlight
            inFlight = []
            for (from, to, m) in delivering where !down.contains(to) && !down.contains(from) {
                if let side = partition, side.contains(from) != side.contains(to) { continue }
                if Double(rng.next() % 10_000) / 10_000 < loss { continue }
                emit(to, nodes[to]!.onMessage(from: from, m, now: now))
            }
            for c in nodes.keys.sorted() where !down.contains(c) { emit(c, nodes[c]!.onTick(now: now)) }
        }

        mutating func emit(_ from: CitySlug, _ directives: [Membership.Directive]) {
            for case .send(let to, let m) in directives {
                inFlight.append((from, to, m))
                sent += 1
            }
        }

        mutating func run(seconds: Int) { for _ in 0..<(seconds * 10) { step() } }

        /// Steps until `done` holds; the number of seconds it took, or nil.
        mutating func until(seconds: Int, _ done: (Sim) -> Bool) -> Double? {
            for i in 0..<(seconds * 10) {
                if done(self) { return Double(i) / 10 }
                step()
            }
            return done(self) ? Double(seconds) : nil
        }

        func everyoneSees(_ status: Membership.Status, of city: CitySlug) -> Bool {
            nodes.filter { $0.key != city && !down.contains($0.key) }.allSatisfy { $0.value.members[city]?.status == status }
        }

        var allKnowAll: Bool {
            let live = nodes.keys.filter { !down.contains($0) }
            return live.allSatisfy { c in live.allSatisfy { $0 == c || nodes[c]!.members[$0]?.status == .alive } }
        }
    }

    @Test("thirty cities that each know one seed all learn of each other, alive")
    func join() {
        var sim = Sim(count: 30, loss: 0, seed: 1)
        let t = sim.until(seconds: 60) { $0.allKnowAll }
        #expect(t != nil, "not converged")
    }

    @Test("a city that stops is suspected, then declared dead by all; nobody else is")
    func failure() throws {
        var sim = Sim(count: 20, loss: 0, seed: 2)
        #expect(sim.until(seconds: 60) { $0.allKnowAll } != nil)
        let victim = try CitySlug("city7")
        sim.down.insert(victim)
        let t = sim.until(seconds: 120) { $0.everyoneSees(.dead, of: victim) }
        #expect(t != nil, "not detected")
        for (c, n) in sim.nodes where c != victim {
            #expect(n.cities(.dead) == [victim], "\(c) wrongly thinks \(n.cities(.dead)) dead")
        }
    }

    @Test("a city declared dead that restarts (fresh state, incarnation 0) is told so, refutes, and everyone takes it back")
    func restartAfterDeath() throws {
        var sim = Sim(count: 10, loss: 0, seed: 3)
        #expect(sim.until(seconds: 60) { $0.allKnowAll } != nil)
        let victim = try CitySlug("city4")
        sim.down.insert(victim)
        #expect(sim.until(seconds: 120) { $0.everyoneSees(.dead, of: victim) } != nil)
        // Long enough for the news of its death to stop being gossiped.
        sim.run(seconds: 60)
        sim.down.remove(victim)
        sim.nodes[victim] = Membership(me: victim, seeds: [try CitySlug("city0")], seed: 99)
        let t = sim.until(seconds: 120) { $0.everyoneSees(.alive, of: victim) }
        #expect(t != nil, "the restarted city never came back")
        #expect((sim.nodes[victim]?.incarnation ?? 0) >= 1, "it rejoined by refuting with a higher incarnation")
    }

    @Test("with 10% of messages lost, live cities are never left dead: suspicion is refuted")
    func loss() {
        var sim = Sim(count: 15, loss: 0.1, seed: 3)
        #expect(sim.until(seconds: 90) { $0.allKnowAll } != nil)
        sim.run(seconds: 60)
        for (c, n) in sim.nodes {
            #expect(n.cities(.dead).isEmpty, "\(c) declared \(n.cities(.dead)) dead")
        }
    }

    @Test("after a partition long enough for each side to declare the other dead, the healed federation is whole again")
    func partitionHeals() throws {
        var sim = Sim(count: 12, loss: 0, seed: 5)
        #expect(sim.until(seconds: 60) { $0.allKnowAll } != nil)
        let west = Set((0..<6).map { try! CitySlug("city\($0)") })
        sim.partition = west
        let split = sim.until(seconds: 120) { s in
            s.nodes.allSatisfy { c, n in n.cities(.dead).count == 6 && n.cities(.dead).allSatisfy { west.contains($0) != west.contains(c) } }
        }
        #expect(split != nil, "each side holds exactly the other dead: \(sim.nodes.mapValues { $0.cities(.dead) })")
        sim.partition = nil
        // Nobody probes a member it holds dead; only the reconnect pings can bring them back.
        #expect(sim.until(seconds: 60) { $0.allKnowAll } != nil, "still dead after healing: \(sim.nodes.mapValues { $0.cities(.dead) })")
        sim.run(seconds: 30)
        #expect(sim.allKnowAll, "and it stays whole")
        // Without reconnect pings the split outlives the partition (the defect this guards against).
        var config = Membership.Config()
        config.reconnectPeriods = 0
        var old = Sim(count: 12, loss: 0, seed: 5, config: config)
        #expect(old.until(seconds: 60) { $0.allKnowAll } != nil)
        old.partition = west
        old.run(seconds: 120)
        old.partition = nil
        old.run(seconds: 60)
        #expect(!old.allKnowAll)
    }

    @Test("with 10% loss, a 40 s partition (longer than the suspicion timeout) still heals by itself")
    func lossyPartitionHeals() throws {
        var sim = Sim(count: 40, loss: 0.1, seed: 6)
        #expect(sim.until(seconds: 90) { $0.allKnowAll } != nil)
        sim.partition = Set((0..<20).map { try! CitySlug("city\($0)") })
        sim.run(seconds: 40)
        #expect(sim.nodes.values.contains { !$0.cities(.dead).isEmpty }, "the halves declared each other dead")
        sim.partition = nil
        #expect(sim.until(seconds: 90) { $0.allKnowAll } != nil, "still dead after healing: \(sim.nodes.mapValues { $0.cities(.dead) })")
    }

    @Test("an old rumour about a city is answered with its current incarnation; a probe of a suspect tells it so")
    func staleRumourAndBuddy() throws {
        let a = try CitySlug("aa"), b = try CitySlug("bb"), c = try CitySlug("cc")
        var nb = Membership(me: b, seeds: [a, c], seed: 1)
        // b refutes a suspicion once (incarnation 1); its refutation's retransmissions run out.
        _ = nb.onMessage(from: c, .ack(seq: 1, updates: [.init(city: b, status: .suspect, incarnation: 0)]), now: 0)
        #expect(nb.incarnation == 1)
        for _ in 0..<50 { _ = nb.piggyback() }
        // a, which never heard the refutation, pings b with "b is dead at 0": b's ACK says "alive at 1".
        let reply = nb.onMessage(from: a, .ping(seq: 9, updates: [.init(city: b, status: .dead, incarnation: 0)]), now: 1)
        #expect(reply == [.send(to: a, .ack(seq: 9, updates: [.init(city: b, status: .alive, incarnation: 1)]))], "\(reply)")
        #expect(nb.incarnation == 1, "an old rumour is not refuted again")

        // The buddy system: a holds c suspect, and its probe of c carries that news.
        var na = Membership(me: a, seeds: [c], seed: 1)
        _ = na.onMessage(from: b, .ack(seq: 1, updates: [.init(city: c, status: .suspect, incarnation: 0)]), now: 0)
        for _ in 0..<50 { _ = na.piggyback() }
        // Round robin over b and c: within two periods c is probed.
        let probe = na.onTick(now: 0) + na.onTick(now: 1_000_000_000)
        #expect(probe.contains { if case .send(c, .ping(_, let u)) = $0 { u.first == .init(city: c, status: .suspect, incarnation: 0) } else { false } }, "\(probe)")
    }

    @Test("a city wrongly suspected refutes with a higher incarnation, and everyone takes it back")
    func refutation() throws {
        var sim = Sim(count: 8, loss: 0, seed: 4)
        #expect(sim.until(seconds: 60) { $0.allKnowAll } != nil)
        let a = try CitySlug("city1"), b = try CitySlug("city2")
        let inc = sim.nodes[b]!.incarnation
        // city1 hears a rumour that city2 is suspect.
        _ = sim.nodes[a]!.onMessage(from: try CitySlug("city3"), .ack(seq: 999, updates: [.init(city: b, status: .suspect, incarnation: inc)]), now: sim.now)
        #expect(sim.nodes[a]!.members[b]?.status == .suspect)
        #expect(sim.until(seconds: 30) { s in s.nodes[b]!.incarnation > inc && s.everyoneSees(.alive, of: b) } != nil)
    }

    @Test("precedence: higher incarnation wins; suspect beats alive at the same one; dead is final unless it comes back newer")
    func precedence() throws {
        let me = try CitySlug("aa"), x = try CitySlug("xx")
        var m = Membership(me: me, seeds: [x], seed: 9)
        func hear(_ s: Membership.Status, _ i: UInt64) { _ = m.onMessage(from: x, .ack(seq: 0, updates: [.init(city: x, status: s, incarnation: i)]), now: 1) }
        hear(.suspect, 0)
        #expect(m.members[x]?.status == .suspect)
        hear(.alive, 0)
        #expect(m.members[x]?.status == .suspect, "alive at the same incarnation does not clear a suspicion")
        hear(.alive, 1)
        #expect(m.members[x]?.status == .alive)
        hear(.dead, 1)
        #expect(m.members[x]?.status == .dead)
        hear(.alive, 1)
        #expect(m.members[x]?.status == .dead)
        hear(.alive, 2)
        #expect(m.members[x]?.status == .alive, "a restarted member rejoins with a higher incarnation")
        // About myself: a suspicion is refuted.
        _ = m.onMessage(from: x, .ack(seq: 0, updates: [.init(city: me, status: .suspect, incarnation: 0)]), now: 2)
        #expect(m.incarnation == 1)
    }

    @Test("membership messages on the wire: round trips, the documented bytes, and every malformed input refused (fuzzed)")
    func codec() throws {
        let sh = try CitySlug("sh"), hz = try CitySlug("hz")
        let all: [Membership.Message] = [
            .ping(seq: 1, updates: []), .ack(seq: 7, updates: [.init(city: sh, status: .suspect, incarnation: 3)]),
            .pingReq(seq: 0xFFFF_FFFF, target: hz, updates: [.init(city: hz, status: .dead, incarnation: 0), .init(city: sh, status: .alive, incarnation: 9)]),
        ]
        for m in all {
            #expect(try Membership.Message.decode(m.encoded()[...]) == m)
            #expect(m.encodedCount == m.encoded().count)
        }
        #expect(Membership.Message.ack(seq: 7, updates: [.init(city: sh, status: .suspect, incarnation: 3)]).encoded()
            == [2, 0, 0, 0, 7, 1, 2, 0x73, 0x68, 1, 0, 0, 0, 0, 0, 0, 0, 3])
        for bad: [UInt8] in [[], [9, 0, 0, 0, 1, 0], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0, 0], [3, 0, 0, 0, 1, 1, 0x41, 0],
                             [2, 0, 0, 0, 1, 1, 2, 0x73, 0x68, 7, 0, 0, 0, 0, 0, 0, 0, 3], [1, 0, 0, 0, 1, 65]] {
            #expect(throws: WireError.self) { try Membership.Message.decode(bad[...]) }
        }
        var rng = SplitMix64(seed: 77)
        for _ in 0..<20_000 {
            var bytes = all[Int(rng.next() % 3)].encoded()
            for _ in 0..<Int(1 + rng.next() % 3) {
                switch rng.next() % 3 {
                case 0 where !bytes.isEmpty: bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                case 1 where !bytes.isEmpty: bytes.removeLast(Int(1 + rng.next() % UInt64(bytes.count)))
                default: bytes.append(UInt8(truncatingIfNeeded: rng.next()))
                }
            }
            if let m = try? Membership.Message.decode(bytes[...]) {
                #expect(m.encoded() == bytes)
                #expect(m.encodedCount == bytes.count)
            }
        }
    }

    @Test("a member that echoes back a change this node spreads (feedback) only shortens this node's own retransmissions: a flood of echoes, stale or bent ones among them, changes nothing it holds about any city")
    func echoFlood() throws {
        let a = try CitySlug("city-a"), b = try CitySlug("city-b"), c = try CitySlug("city-c")
        var m = Membership(me: a, seeds: [b, c], seed: 1)
        // c is suspected here: the change is queued for 3·log2(n+1) sends.
        let suspect = Membership.Update(city: c, status: .suspect, incarnation: 4)
        _ = m.onMessage(from: b, .ack(seq: 1, updates: [suspect]), now: 0)
        let held = try #require(m.members[c])
        let sends = try #require(m.gossip[c]).left
        #expect(held.status == .suspect && held.incarnation == 4 && sends > 1)
        // One echo takes one send off; other statuses and older incarnations take none.
        _ = m.onMessage(from: b, .ack(seq: 2, updates: [suspect]), now: 1)
        #expect(m.gossip[c]?.left == sends - 1)
        for bent in [Membership.Update(city: c, status: .alive, incarnation: 4), .init(city: c, status: .suspect, incarnation: 3), .init(city: c, status: .alive, incarnation: 0)] {
            _ = m.onMessage(from: b, .ack(seq: 3, updates: [bent]), now: 2)
            #expect(m.gossip[c]?.left == sends - 1, "\(bent)")
        }
        // A flood (64 per message, far more than the count): the change leaves this node's queue,
        // and nothing else moves.
        for seq in 4..<40 { _ = m.onMessage(from: b, .ack(seq: UInt32(seq), updates: Array(repeating: suspect, count: Membership.Message.maxUpdates)), now: 3) }
        #expect(m.gossip[c] == nil)
        #expect(m.members[c] == held, "what this node holds about c is unchanged")
        #expect(m.members[b]?.status == .alive && m.incarnation == 0)
        // A new change about c (here: dead after the timeout, or a refutation) is queued afresh.
        _ = m.onMessage(from: c, .ack(seq: 50, updates: [.init(city: c, status: .alive, incarnation: 5)]), now: 4)
        #expect(m.gossip[c]?.left == sends && m.members[c]?.status == .alive)
    }

    @Test("the change queue against a plain table sorted on every read: changes queued, replaced, sent, heard again, sent their last time and dropped in any order (stale places skipped, the buckets made again) give the same changes")
    func gossipQueueAgainstModel() throws {
        var rng = SplitMix64(seed: 23)
        let cities = try (0..<50).map { try CitySlug("city-\($0)") }
        for trial in 0..<40 {
            var q = GossipQueue()
            var model: [CitySlug: Membership.Pending] = [:]
            var order: UInt64 = 0
            for step in 0..<600 {
                switch rng.next() % 9 {
                case 0...3:  // queue a change (a new one, or one replacing the city's last)
                    let c = cities[Int(rng.next() % 50)]
                    order += 1
                    let p = Membership.Pending(update: .init(city: c, status: .alive, incarnation: order), left: 1 + Int(rng.next() % 6), order: order)
                    q[c] = p
                    model[c] = p
                case 4:  // dropped
                    let c = cities[Int(rng.next() % 50)]
                    q[c] = nil
                    model[c] = nil
                case 5:  // heard again from another member: one send fewer (the same change only)
                    let c = cities[Int(rng.next() % 50)]
                    let u = model[c].map { rng.next() % 4 == 0 ? Membership.Update(city: c, status: .suspect, incarnation: $0.update.incarnation) : $0.update }
                    guard let u else { continue }
                    q.heardAgain(u)
                    if let p = model[c], p.update == u { model[c] = p.left > 1 ? Membership.Pending(update: p.update, left: p.left - 1, order: p.order) : nil }
                default:  // sent: the same ones as a full sort, each with one send less
                    let k = 1 + Int(rng.next() % 12)
                    let expected = Array(model.values.sorted { $0.left != $1.left ? $0.left > $1.left : $0.order < $1.order }.prefix(k))
                    #expect(q.first(k).map(\.update) == expected.map(\.update), "trial \(trial), step \(step)")
                    #expect(q.take(k) == expected.map(\.update), "trial \(trial), step \(step)")
                    for p in expected { model[p.update.city] = p.left > 1 ? Membership.Pending(update: p.update, left: p.left - 1, order: p.order) : nil }
                }
                #expect(q.count == model.count)
            }
            for (c, p) in model { #expect(q[c]?.left == p.left && q[c]?.order == p.order) }
        }
    }

    @Test("the changes piggybacked are the least-sent ones, oldest first among equals: the order a full sort gives, however the queue is made up")
    func leastSentMatchesSort() throws {
        var rng = SplitMix64(seed: 11)
        for trial in 0..<200 {
            var m = Membership(me: try CitySlug("city-x"), seeds: [], seed: 1)
            m.gossip = [:]
            let size = Int(rng.next() % 300), levels = 1 + Int(rng.next() % 40)
            for i in 0..<size {
                let c = try CitySlug("city-\(rng.next() % 1000)-\(i)")
                m.gossip[c] = .init(update: Membership.Update(city: c, status: .alive, incarnation: 0), left: 1 + Int(rng.next() % UInt64(levels)), order: rng.next() % 10_000 &* 1_000 &+ UInt64(i))
            }
            for k in [1, 8, 63, 64, 500] {
                let expected = m.gossip.values.sorted { $0.left != $1.left ? $0.left > $1.left : $0.order < $1.order }.prefix(k).map(\.update.city)
                #expect(m.leastSent(k).map(\.update.city) == Array(expected), "trial \(trial), k \(k)")
                // Taking them for a message gives the same ones, each with one send less.
                let lefts = Dictionary(uniqueKeysWithValues: m.gossip.values.map { ($0.update.city, $0.left) })
                #expect(m.gossip.take(k).map(\.city) == Array(expected), "trial \(trial), k \(k)")
                for c in expected { #expect(m.gossip[c]?.left == (lefts[c] == 1 ? nil : lefts[c].map { $0 - 1 })) }
            }
        }
    }
}
