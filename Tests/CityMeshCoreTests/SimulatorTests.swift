import Foundation
import Testing
@testable import CityMeshCore

/// The federation simulator: the real membership and anti-entropy machines of every node under
/// loss, a partition and crashes. Its invariants must hold, its runs must replay exactly, and each
/// invariant must catch the defect planted to break it.
@Suite("Federation simulator")
struct SimulatorTests {
    typealias Config = FederationSimulator.Config

    /// A small federation under every kind of trouble at once.
    static func troubled(seed: UInt64, nodes: Int = 20) -> Config {
        var c = Config()
        c.nodes = nodes
        c.seed = seed
        c.loss = 0.1
        c.partitionAt = 10
        c.partition = 25
        c.crashes = 3
        c.crashAt = 15
        c.downFor = 30
        c.writes = 150
        c.writeRounds = 50
        c.keys = 30
        c.writers = 4
        return c
    }

    static func check(_ r: FederationSimulator.Result, _ name: String) -> FederationSimulator.Check? {
        r.checks.first { $0.name == name }
    }

    /// The troubled federation with `faults` planted; runs that cannot converge stop at `maxRounds`.
    static func run(_ faults: [FederationSimulator.Fault], seed: UInt64, maxRounds: Int = 200) throws -> FederationSimulator.Result {
        var c = troubled(seed: seed)
        c.faults = faults
        c.maxRounds = maxRounds
        return try FederationSimulator.run(c)
    }

    @Test("with 10% loss, a partition and three crashes, every invariant holds", arguments: [1, 2, 3, 4] as [UInt64])
    func invariantsHold(seed: UInt64) throws {
        let r = try FederationSimulator.run(Self.troubled(seed: seed))
        #expect(r.checks.map(\.name) == ["convergence", "view confinement", "receipts", "batch order", "erasure", "exchange ledgers", "membership heals"])
        for c in r.checks { #expect(c.passed, "\(c.name): \(c.detail)") }
        #expect(r.writes + r.skippedWrites + r.refusedWrites == 150)
        #expect(r.undelivered == 0)
        #expect(r.convergedRound != nil)
        #expect(r.disruptionEndRound == 45)
        #expect(r.catchUpRounds != nil)
        #expect(r.messages.lost > 0 && r.messages.unreachable > 0, "the trouble really happened")
        #expect(r.receipts.exchanges > 0 && r.receipts.matched == r.receipts.exchanges)
        #expect(r.bytes.idleRounds == 10 && r.bytes.idlePerShareExchange > 0)
        // Everything written before the trouble ended reached everyone a bounded time after it.
        #expect((r.catchUpRounds ?? .max) <= 40)
    }

    @Test("a partition longer than the suspicion timeout heals through redials; crashed nodes catch up")
    func longPartition() throws {
        var c = Self.troubled(seed: 11, nodes: 16)
        c.partition = 60
        c.crashAt = 70
        c.downFor = 40
        c.writeRounds = 90
        let r = try FederationSimulator.run(c)
        for x in r.checks { #expect(x.passed, "\(x.name): \(x.detail)") }
        #expect(r.receipts.open == 0)
    }

    /// SWIM takes a death back only if the node declared dead hears of it and refutes, and after a
    /// partition nobody probes the members it holds dead. Before the reconnect pings
    /// (`Membership.Config.reconnectPeriods`) this run never converged: only the transport's
    /// redials joined the halves again, and every pair across the split (128) stayed dead.
    @Test("without redials, a partition longer than the suspicion timeout heals through membership's reconnect pings")
    func partitionWithoutRedial() throws {
        var c = Self.troubled(seed: 11, nodes: 16)
        c.partition = 60
        c.crashes = 0
        c.redialInterval = 0
        c.maxRounds = 150
        c.healRounds = 60
        let r = try FederationSimulator.run(c)
        for x in r.checks { #expect(x.passed, "\(x.name): \(x.detail)") }
        #expect(r.membershipDeadPairs == 0 && r.membershipLongestDead <= 60, "every pair across the old partition is alive again: \(r.membershipDeadPairs) still dead")
        // Control: without the reconnect pings either, the halves hold each other dead until the
        // run gives up (80 rounds after the partition healed) and the membership invariant fails.
        c.faults = [.noReconnect]
        let broken = try FederationSimulator.run(c)
        let heal = try #require(Self.check(broken, "membership heals"))
        #expect(!heal.passed, "\(heal.detail)")
        #expect(broken.membershipDeadPairs > 0)
    }

    /// Partial views (issue 20): each node knows one seed, learns addresses by gossip and dials
    /// its partners and a small active view. 60 nodes, 8 in the replicated share, 15 more shares
    /// of four members among random cities; the crashed nodes come back at new ports.
    static func viewed(seed: UInt64) -> Config {
        var c = troubled(seed: seed, nodes: 60)
        c.activeView = 6
        c.members = 8
        c.writers = 3
        c.extraShares = 15
        c.writes = 60
        return c
    }

    @Test("with partial views, every city reaches every city it shares with — one seed each, through loss, a partition and crashes that move nodes to new addresses — and replication and membership invariants still hold", arguments: [1, 2, 3] as [UInt64])
    func partialViews(seed: UInt64) throws {
        let r = try FederationSimulator.run(Self.viewed(seed: seed))
        #expect(r.checks.last?.name == "partners reached")
        for c in r.checks { #expect(c.passed, "\(c.name): \(c.detail)") }
        let v = try #require(r.connections)
        #expect(v.unlinkedPartnerPairsAtEnd == 0 && v.partnerPairs >= 15 * 10)
        // Far from a full mesh of 59: a node dials its seed, its partners and 6 others.
        #expect(v.meanAtEnd < 30, "mean \(v.meanAtEnd) connections per node")
        #expect(v.addressBytes > 0)
        #expect(r.messages.unconnected > 0, "messages to cities without a connection are not sent")
        // On connections loss delays (TCP sends again) and drops nothing.
        #expect(r.messages.retransmitted > 0 && r.messages.lost == 0 && r.messages.unreachable > 0, "the trouble really happened")
        // The same run replays byte for byte.
        #expect(try FederationSimulator.run(Self.viewed(seed: seed)) == r)
    }

    @Test("with partial views, nodes that pass on no address record they learn, or that do not dial their partners beyond the active view, leave pairs of cities that share unconnected: the invariant fails")
    func partialViewsBroken() throws {
        for fault in [FederationSimulator.Fault.noAddressRelay, .noPartnerDial] {
            var c = Self.viewed(seed: 1)
            c.faults = [fault]
            c.maxRounds = 250
            let r = try FederationSimulator.run(c)
            let reach = try #require(Self.check(r, "partners reached"))
            #expect(!reach.passed, "\(fault): \(reach.detail)")
            #expect((r.connections?.unlinkedPartnerPairsAtEnd ?? 0) > 0)
        }
    }

    @Test("with a row filter, rows the owner's writes move out of it are retracted from every member — through loss, a partition and crashes — and without retractions the invariant fails", arguments: [1, 2] as [UInt64])
    func retraction(seed: UInt64) throws {
        var c = FederationSimulator.Config()
        c.nodes = 12
        c.seed = seed
        c.writers = 0
        c.ownerShare = 1
        c.writes = 400
        c.keys = 40
        c.loss = 0.05
        c.partition = 10
        c.crashes = 2
        c.rowFilter = true
        let r = try FederationSimulator.run(c)
        #expect(r.checks.map(\.name) == ["convergence", "view confinement", "receipts", "batch order", "erasure", "exchange ledgers", "membership heals", "retraction"])
        for x in r.checks { #expect(x.passed, "\(x.name): \(x.detail)") }
        // The production rule, broken: the owner never retracts. The retraction invariant catches it.
        c.faults = [.noRetraction]
        let broken = try FederationSimulator.run(c)
        #expect(broken.checks.first { $0.name == "retraction" }?.passed == false, "\(broken.checks)")
        // Members writing too: their nodes and every receiver check with the one write-rights rule
        // (`WriteRights`), so members write only the records they hold, inside the filter.
        c.faults = []
        c.writers = 3
        c.ownerShare = 0.7
        let mixed = try FederationSimulator.run(c)
        for x in mixed.checks { #expect(x.passed, "\(x.name): \(x.detail)") }
        #expect(mixed.refusedWrites > 0 && mixed.writes > 0, "members' writes to records they do not hold are refused at their own node")
    }

    @Test("deleted records are compacted out of every node's stored batches — through loss, a partition and crashes, relayed copies included; once tombstones are collected the keys go too — and without compaction the invariant fails", arguments: [1, 2] as [UInt64])
    func erasure(seed: UInt64) throws {
        var c = Self.troubled(seed: seed)
        c.deleteShare = 0.3
        c.idleRounds = 30  // long enough for tombstones to be collected everywhere (every 10 rounds, once settled)
        let r = try FederationSimulator.run(c)
        for x in r.checks { #expect(x.passed, "\(x.name): \(x.detail)") }
        let erasure = try #require(Self.check(r, "erasure"))
        #expect(!erasure.detail.hasPrefix("0 stored records"), "deletions happened and were compacted: \(erasure.detail)")
        #expect(!erasure.detail.contains("(0 collected"), "tombstones were collected, and the deletions' own records went too: \(erasure.detail)")
        // The production rule, not run: every node keeps the deleted values.
        c.faults = [.noCompaction]
        let broken = try FederationSimulator.run(c)
        #expect(Self.check(broken, "erasure")?.passed == false, "\(broken.checks)")
        #expect(Self.check(broken, "convergence")?.passed == true, "compaction is all the fault changes")
    }

    @Test("the same config and seed give a byte-identical result; another seed does not")
    func deterministic() throws {
        let c = Self.troubled(seed: 5, nodes: 15)
        let a = try FederationSimulator.run(c)
        let b = try FederationSimulator.run(c)
        #expect(a == b)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        #expect(try encoder.encode(a) == encoder.encode(b))
        var other = c
        other.seed = 6
        #expect(try FederationSimulator.run(other) != a)
    }

    @Test("without faults, a write reaches all 30 nodes within a few rounds and idle exchanges are one small summary")
    func quietFederation() throws {
        var c = Config()
        c.nodes = 30
        c.writes = 100
        c.writeRounds = 40
        c.writers = 2
        let r = try FederationSimulator.run(c)
        #expect(r.passed)
        // Every write made reached every node; members' writes to records they did not hold yet
        // were refused by their own node (members create none).
        #expect(r.dissemination.count == r.writes && r.writes + r.refusedWrites == 100 && r.writes >= 50)
        #expect(r.dissemination.max <= 15)
        #expect(r.delivery.p50 <= r.dissemination.p50)
        #expect(r.messages.lost == 0 && r.messages.unreachable == 0)
        #expect(r.membershipDeadPairs == 0)
        // Idle: one summary naming 3 origins (the owner and two writers): type, share, count, then
        // 3 × (1 + 6 + 8) bytes, in a 7-byte frame.
        // Every `AntiEntropy.ackEvery` ticks an ACKED message (same layout, at most the same
        // origins) rides along and counts as one of these messages.
        let summary = Double(1 + 1 + Self.share.utf8.count + 2 + 3 * 15 + 7)
        #expect(r.bytes.idlePerShareExchange <= summary && r.bytes.idlePerShareExchange >= summary * 0.8, "\(r.bytes.idlePerShareExchange) vs \(summary)")
        #expect(abs(r.bytes.idleReplicationPerNodePerRound - r.bytes.idlePerShareExchange * Double(c.fanout)) <= r.bytes.idleReplicationPerNodePerRound * 0.15)
    }

    static let share = "city-0/air"

    // MARK: Each invariant catches its defect

    @Test("an owner that ignores the view, with receivers that do not check: the view invariant fails")
    func leakCaught() throws {
        let r = try Self.run([.leakyOwner, .lenientReceivers], seed: 2)
        #expect(Self.check(r, "view confinement")?.passed == false)
        #expect(Self.check(r, "view confinement")?.detail.contains("field 4") == true)
        #expect(!r.passed)
    }

    @Test("an owner that ignores the view: receivers drop the cells outside it, cell by cell (WriteRights), and take the rest — nothing leaks, and the view converges")
    func leakRefused() throws {
        let r = try Self.run([.leakyOwner], seed: 2)
        #expect(Self.check(r, "view confinement")?.passed == true)
        #expect(r.messages.refusedBatches > 0 && r.messages.refusedCells >= r.messages.refusedBatches)
        #expect(Self.check(r, "convergence")?.passed == true, "\(r.checks)")
    }

    @Test("every batch taken is in its sender's ledger as sent; senders that do not ledger their sends, or lose their ledger in a crash, fail the invariant")
    func exchangeLedgers() throws {
        let r = try Self.run([], seed: 3)
        #expect(Self.check(r, "exchange ledgers")?.passed == true, "\(r.checks)")
        let unledgered = try Self.run([.unledgeredSends], seed: 3)
        #expect(Self.check(unledgered, "exchange ledgers")?.passed == false)
        #expect(Self.check(unledgered, "convergence")?.passed == true, "the fault changes only the ledger")
        #expect(Self.check(try Self.run([.volatileLedger], seed: 3), "exchange ledgers")?.passed == false)
    }

    @Test("the owner narrows the terms mid-run (a field and its write rights leave the view, a stricter filter): through loss, a partition and crashes no member keeps the field or a row outside the filter, in its replica or its stored batches; without narrowing at the members the invariant fails", arguments: [(1, true), (2, true), (3, false)] as [(UInt64, Bool)])
    func narrowedTerms(seed: UInt64, filter: Bool) throws {
        var c = Self.troubled(seed: seed)
        c.rowFilter = filter
        c.narrowAt = 30  // during the partition, with three members down
        let r = try FederationSimulator.run(c)
        #expect(r.checks.map(\.name).contains("current terms"))
        for check in r.checks { #expect(check.passed, "\(check.name): \(check.detail)") }
        #expect(r.refusedWrites > 0, "members' writes after the narrowing are refused: the field is no longer writable")
        var broken = c
        broken.faults = [.noNarrowing]
        broken.maxRounds = 200
        let b = try FederationSimulator.run(broken)
        #expect(Self.check(b, "current terms")?.passed == false, "\(b.checks)")
    }

    @Test("agreements of three members are revoked with on_revoke: purge mid-run: they purge their replicas and leave the share, the others converge and every receipt between remaining parties is matched; without the purge the invariant fails", arguments: [1, 2] as [UInt64])
    func revokedWithPurge(seed: UInt64) throws {
        var c = Self.troubled(seed: seed)
        c.revokeAt = 25
        c.revoked = 3
        let r = try FederationSimulator.run(c)
        for check in r.checks { #expect(check.passed, "\(check.name): \(check.detail)") }
        #expect(r.convergedRound != nil && r.undelivered == 0)
        var broken = c
        broken.faults = [.noPurge]
        let b = try FederationSimulator.run(broken)
        #expect(Self.check(b, "current terms")?.passed == false, "\(b.checks)")
    }

    @Test("receipts go again until countersigned (the node's ReceiptFlow); receivers that send each once lose some to 10% loss: the receipts invariant fails", arguments: [1, 2] as [UInt64])
    func receiptsResent(seed: UInt64) throws {
        let r = try Self.run([], seed: seed)
        #expect(Self.check(r, "receipts")?.passed == true, "\(r.checks)")
        #expect(r.messages.sent.receipts > 2 * r.receipts.exchanges, "some receipts or countersignatures went more than once")
        let once = try Self.run([.receiptsOnce], seed: seed)
        #expect(Self.check(once, "receipts")?.passed == false)
        #expect(once.receipts.mismatched > 0)
    }

    @Test("receivers that take a batch ahead of a gap: the order invariant fails")
    func gapsCaught() throws {
        let r = try Self.run([.takeGaps], seed: 3)
        #expect(Self.check(r, "batch order")?.passed == false)
    }

    @Test("a ledger that a crash wipes: the receipts invariant fails")
    func volatileLedgerCaught() throws {
        let r = try Self.run([.volatileLedger], seed: 4)
        #expect(Self.check(r, "receipts")?.passed == false)
        #expect(r.receipts.mismatched > 0)
    }

    @Test("push without anti-entropy pull loses writes to 10% loss: the convergence invariant fails")
    func pushOnlyCaught() throws {
        var c = Self.troubled(seed: 1)
        c.faults = [.pushOnly]
        c.partition = 0
        c.crashes = 0
        c.maxRounds = 150
        let r = try FederationSimulator.run(c)
        #expect(Self.check(r, "convergence")?.passed == false)
        #expect(r.undelivered > 0)
        #expect(r.convergedRound == nil)
    }

    @Test("out-of-range settings are refused with what to write instead")
    func validation() {
        var c = Config()
        c.nodes = 1
        #expect(throws: CityMeshError(.invalidArgument, "")) { try FederationSimulator.run(c) }
        c.nodes = 10_001
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c.nodes = 10_000
        #expect(throws: Never.self) { try c.validate() }
        c = Config()
        c.loss = 1
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c = Config()
        c.crashes = c.nodes
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        // Partial views: the share's members must hold its writers; extra shares need room.
        c = Config()
        c.members = 3
        c.writers = 5
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c.members = c.nodes
        c.writers = 1
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c = Config()
        c.extraShares = 1
        c.shareSize = c.nodes
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c.shareSize = c.nodes - 1
        c.activeView = 1_001
        #expect(throws: CityMeshError(.invalidArgument, "")) { try c.validate() }
        c.activeView = 32
        #expect(throws: Never.self) { try c.validate() }
    }
}
