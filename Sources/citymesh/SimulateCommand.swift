import ArgumentParser
import CityMeshCore
import Foundation
import Synchronization

extension FederationSimulator.Fault: ExpressibleByArgument {}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate a whole federation replicating one share: rounds to converge, bytes, invariants.",
        discussion: """
            Examples:
              citymesh simulate --nodes 200 --loss 0.1 --partition 30s --crash 5 --seed 7
              citymesh simulate --nodes 1000 --writes 200 --loss 0.1 --json
              citymesh simulate --nodes 30 --fault leaky-owner --fault lenient-receivers
              citymesh simulate --nodes 200 --loss 0.1 --partition 30s --crash 5 --seeds 1-20
              citymesh simulate --nodes 1000 --active-view 32 --members 20 --extra-shares 300 --loss 0.1 --partition 30s --crash 5

            Runs the real membership and anti-entropy state machines of every node
            on a fake clock and a fake network, in memory: no node directory, files
            or sockets. One round is one second of simulated time (one anti-entropy
            tick, one membership probe period); a replication message takes --delay
            rounds to arrive. city-0 owns the dataset; every other node is a member
            of its share, which shows fields 1-3 and lets members write field 3;
            field 4 is the owner's alone.

            By default every node is connected to every other. --active-view gives
            each node the node's own transport: it knows one seed (a node that
            joined before it), learns addresses by gossip, dials its seed, the
            cities it shares with and that many others, and SWIM probes only
            those; every message then needs a connection. --members puts only
            city-1..city-N in the owner's share, and --extra-shares adds shares
            among random cities (agreements only), so that each node has a few
            partners among many members.

            Durations take a unit: 30s, 2m, 1h, or a plain number of seconds. The
            same options and seed always give the same result. Exits 1 if an
            invariant fails. --fault plants a defect in every node, to watch an
            invariant catch it. --seeds runs every seed of a range, one line
            each, then the full report of the worst (a failed invariant first,
            then the slowest dissemination, then the most live pairs held dead).
            docs/simulator.md explains the model and the output.
            """)

    @Option(help: "Nodes in the federation (2-10000); city-0 owns the share.") var nodes = 200
    @Option(help: "Probability that any one message is lost, e.g. 0.1.") var loss = 0.0
    @Option(help: ArgumentHelp("Split the federation in two for this long (0: never).", valueName: "duration")) var partition = "0"
    @Option(name: .customLong("partition-at"), help: ArgumentHelp("When the partition starts.", valueName: "duration")) var partitionAt = "10s"
    @Option(help: "Members that crash (losing their in-memory state, keeping their store) and restart.") var crash = 0
    @Option(name: .customLong("crash-at"), help: ArgumentHelp("When they crash.", valueName: "duration")) var crashAt = "20s"
    @Option(help: ArgumentHelp("How long they stay down.", valueName: "duration")) var down = "30s"
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp("Run every seed of FIRST-LAST (at most 10,000 of them) and report the worst.", valueName: "FIRST-LAST")) var seeds: String?
    @Option(help: ArgumentHelp("With --seeds: seeds run at once, each on its own core and with its own memory (about 0.9 GB at 1,000 nodes). Default: this machine's cores.", valueName: "n"))
    var jobs: Int?
    @Option(help: "Writes to make, by the owner (all fields) and the member writers (field 3).") var writes = 500
    @Option(name: .customLong("write-for"), help: ArgumentHelp("Spread the writes over this long.", valueName: "duration")) var writeFor = "60s"
    @Option(help: "Records the writes go to.") var keys = 100
    @Option(help: "Members that write besides the owner (0: only the owner writes).") var writers = 5
    @Option(help: "Give up after this many rounds.") var rounds = 2000
    @Option(help: "Once the last disruption is over, most rounds a live node may hold another live node dead (the membership invariant).") var heal = FederationSimulator.Config().healRounds
    @Option(help: ArgumentHelp("How long to measure the idle cost once everything converged.", valueName: "duration")) var idle = "10s"
    @Option(help: "Rounds a replication message takes to arrive (1-10).") var delay = 1
    @Option(help: "Anti-entropy fanout: summaries sent per tick; a fresh batch is announced to three times as many peers.") var fanout = AntiEntropy.Config().fanout
    @Option(help: "Anti-entropy window: batches per origin in one request and its answer.") var window = AntiEntropy.Config().window
    @Option(help: ArgumentHelp("How often the transport redials a peer held dead (0: never).", valueName: "duration")) var redial = "30s"
    @Flag(name: .customLong("row-filter"), help: "Give the share a row filter (pm25 >= 25): the owner retracts rows that leave it; members write only rows inside it.")
    var rowFilter = false
    @Option(
        name: .customLong("narrow-at"),
        help: ArgumentHelp("When the owner narrows the terms: the view loses the members' field (and their write rights), a row filter becomes pm25 >= 40 (0: never).", valueName: "duration"))
    var narrowAt = "0"
    @Option(name: .customLong("revoke"), help: "Members whose agreements are revoked with on_revoke: purge (the last ones), at --revoke-at.") var revoke = 0
    @Option(name: .customLong("revoke-at"), help: ArgumentHelp("When those agreements are revoked.", valueName: "duration")) var revokeAt = "30s"
    @Option(name: .customLong("active-view"), help: "Partial views: each node dials its seed, its partners and this many other cities (0: a full mesh).")
    var activeView = 0
    @Option(help: "Members of the owner's share: city-1 to city-N (0: every other node).") var members = 0
    @Option(name: .customLong("extra-shares"), help: "Further shares among random cities, agreements only: they make partners.") var extraShares = 0
    @Option(name: .customLong("share-size"), help: "Members of each extra share.") var shareSize = FederationSimulator.Config().shareSize
    @Flag(name: .customLong("stay-put"), help: "With --active-view: crashed nodes restart at the same address (by default they move to a new port).")
    var stayPut = false
    @Option(name: .customLong("fault"), help: "Plant a defect: \(FederationSimulator.Fault.allCases.map(\.rawValue).joined(separator: ", ")).")
    var faults: [FederationSimulator.Fault] = []
    @OptionGroup var output: OutputOptions

    func validate() throws {
        do { _ = try config() } catch let e as CityMeshError { throw ValidationError(e.message) }
        if let seeds { _ = try Self.seedRange(seeds) }
        if let jobs {
            guard seeds != nil else { throw ValidationError("--jobs runs several seeds at once: give --seeds FIRST-LAST too") }
            guard (1...256).contains(jobs) else { throw ValidationError("--jobs \(jobs) is out of range: use 1-256 (each job needs its own core and memory)") }
        }
    }

    /// `7` or `1-100`: at most 10,000 seeds.
    static func seedRange(_ text: String) throws -> ClosedRange<UInt64> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let first = UInt64(parts[0]), let last = UInt64(parts.last ?? ""), first <= last else {
            throw ValidationError("--seeds '\(text)' is not a range: write FIRST-LAST, e.g. 1-100")
        }
        guard last - first < 10_000 else { throw ValidationError("--seeds '\(text)' holds \(last - first + 1) seeds; at most 10000 in one run") }
        return first...last
    }

    /// The simulator's config from the options.
    func config() throws -> FederationSimulator.Config {
        var c = FederationSimulator.Config()
        c.nodes = nodes
        c.seed = seed
        c.loss = loss
        c.delay = delay
        c.partition = try Self.seconds(partition, "--partition")
        c.partitionAt = try Self.seconds(partitionAt, "--partition-at")
        c.crashes = crash
        c.crashAt = try Self.seconds(crashAt, "--crash-at")
        c.downFor = try Self.seconds(down, "--down")
        c.writes = writes
        c.writeRounds = try Self.seconds(writeFor, "--write-for")
        c.keys = keys
        c.writers = writers
        if writers == 0 { c.ownerShare = 1 }
        c.maxRounds = rounds
        c.healRounds = heal
        c.idleRounds = try Self.seconds(idle, "--idle")
        c.fanout = fanout
        c.window = window
        c.redialInterval = try Self.seconds(redial, "--redial")
        c.faults = faults
        c.rowFilter = rowFilter
        c.narrowAt = try Self.seconds(narrowAt, "--narrow-at")
        c.revoked = revoke
        c.revokeAt = revoke > 0 ? try Self.seconds(revokeAt, "--revoke-at") : 0
        c.activeView = activeView
        c.members = members
        c.extraShares = extraShares
        c.shareSize = shareSize
        c.moveOnRestart = !stayPut
        try c.validate()
        return c
    }

    /// Whole seconds from `30s`, `2m`, `1h` or a plain `30`.
    static func seconds(_ text: String, _ option: String) throws -> Int {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600]
        var digits = Substring(text)
        var unit = 1
        if let last = text.last, let u = units[last] {
            digits = digits.dropLast()
            unit = u
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 0, n <= 1_000_000 / unit else {
            throw ValidationError("\(option) '\(text)' is not a duration: write whole seconds or minutes such as 30s, 2m or 90")
        }
        return n * unit
    }

    func run() throws {
        let config = try config()
        if let seeds {
            try runSeeds(config, Self.seedRange(seeds))
            return
        }
        let result = try FederationSimulator.run(config)
        if output.json {
            struct Out: Encodable {
                let passed: Bool
                let result: FederationSimulator.Result
            }
            try printJSON(Out(passed: result.passed, result: result))
        } else {
            print(Self.report(result))
        }
        if !result.passed { throw ExitCode(1) }
    }

    /// One seed's figures in a `--seeds` run.
    struct SeedLine: Encodable {
        let seed: UInt64
        let passed: Bool
        let failed: [String]
        let rounds: Int
        let disseminationMax: Int
        let catchUpRounds: Int?
        let deadPairs: Int
        let seconds: Double
    }

    /// Worse first: a failed invariant, then slower dissemination, then more live pairs held dead.
    static func worse(_ a: FederationSimulator.Result, than b: FederationSimulator.Result) -> Bool {
        if a.passed != b.passed { return !a.passed }
        if a.dissemination.max != b.dissemination.max { return a.dissemination.max > b.dissemination.max }
        return a.membershipDeadPairs > b.membershipDeadPairs
    }

    func runSeeds(_ base: FederationSimulator.Config, _ range: ClosedRange<UInt64>) throws {
        let seeds = Array(range)
        let workers = Swift.min(jobs ?? ProcessInfo.processInfo.activeProcessorCount, seeds.count)
        // Each seed is a separate run of value types: they share nothing, so they run on as many
        // threads as asked. Lines are printed in seed order, each as soon as it and every seed
        // before it are done.
        struct Progress {
            var next = 0
            var done: [Int: (SeedLine, FederationSimulator.Result)] = [:]
            var printed = 0
            var lines: [SeedLine] = []
            var worst: FederationSimulator.Result?
            var error: (any Error)?
        }
        let progress = Mutex(Progress())
        let json = output.json
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                let claimed: Int? = progress.withLock { p in
                    guard p.error == nil, p.next < seeds.count else { return nil }
                    p.next += 1
                    return p.next - 1
                }
                guard let i = claimed else { return }
                var c = base
                c.seed = seeds[i]
                let started = ContinuousClock.now
                let r: FederationSimulator.Result
                do {
                    r = try FederationSimulator.run(c)
                } catch {
                    progress.withLock { $0.error = $0.error ?? error }
                    return
                }
                let took = ContinuousClock.now - started
                let line = SeedLine(
                    seed: c.seed, passed: r.passed, failed: r.checks.filter { !$0.passed }.map(\.name), rounds: r.rounds, disseminationMax: r.dissemination.max,
                    catchUpRounds: r.catchUpRounds, deadPairs: r.membershipDeadPairs,
                    seconds: Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
                progress.withLock { p in
                    p.done[i] = (line, r)
                    while let (line, r) = p.done.removeValue(forKey: p.printed) {
                        p.printed += 1
                        p.lines.append(line)
                        if p.worst.map({ Self.worse(r, than: $0) }) ?? true { p.worst = r }
                        if !json {
                            let verdict = r.passed ? "passed" : "FAILED (\(line.failed.joined(separator: ", ")))"
                            let caught = r.catchUpRounds.map { "caught up after \($0) rounds" } ?? "no disruption"
                            print(
                                "seed \(line.seed)  \(verdict)  rounds \(r.rounds)  dissemination max \(r.dissemination.max)  \(caught)  live pairs held dead \(r.membershipDeadPairs)  "
                                    + String(format: "%.1f s", line.seconds))
                            fflush(nil)  // every output stream: the line shows at once, also in a pipe or a file
                        }
                    }
                }
            }
        }
        let (lines, worst, failure) = progress.withLock { ($0.lines, $0.worst, $0.error) }
        if let failure { throw failure }
        guard let worst else { return }
        if output.json {
            struct Out: Encodable {
                let passed: Bool
                let seeds: [SeedLine]
                let worst: FederationSimulator.Result
            }
            try printJSON(Out(passed: lines.allSatisfy(\.passed), seeds: lines, worst: worst))
        } else {
            let failed = lines.filter { !$0.passed }.count
            print("\n\(lines.count) seeds, \(failed) failed; the worst, seed \(worst.config.seed):")
            print(Self.report(worst))
        }
        if lines.contains(where: { !$0.passed }) { throw ExitCode(1) }
    }

    /// The human-readable report.
    static func report(_ r: FederationSimulator.Result) -> String {
        let c = r.config
        func num(_ n: Int) -> String { Terminal.number(n) }
        func bytes(_ d: Double) -> String { Terminal.number(Int(d.rounded())) }
        var faults: [String] = []
        if c.loss > 0 { faults.append(String(format: "loss %g%%", c.loss * 100)) }
        if c.partition > 0 { faults.append("partition \(c.partition) s from \(c.partitionAt) s") }
        if c.crashes > 0 { faults.append("\(c.crashes) members down \(c.crashAt)-\(c.crashAt + c.downFor) s") }
        if c.narrowAt > 0 { faults.append("terms narrowed at \(c.narrowAt) s") }
        if c.revoked > 0 { faults.append("\(c.revoked) agreements revoked (purge) at \(c.revokeAt) s") }
        if !c.faults.isEmpty { faults.append("defects: " + c.faults.map(\.rawValue).joined(separator: ", ")) }
        var lines: [String] = []
        lines.append("simulated \(num(c.nodes)) nodes for \(num(r.rounds)) rounds (seed \(c.seed), fanout \(c.fanout), window \(c.window))"
            + (faults.isEmpty ? "; no faults" : "; " + faults.joined(separator: ", ")))
        lines.append("  workload       \(num(r.writes)) writes in \(num(r.batches)) batches over \(c.writeRounds) s, \(num(c.keys)) records, owner + \(c.writers) member writers"
            + (r.skippedWrites > 0 ? " (\(num(r.skippedWrites)) skipped: writer down)" : "")
            + (r.refusedWrites > 0 ? " (\(num(r.refusedWrites)) refused by the writer's own node: a record it does not hold)" : ""))
        let d = r.dissemination, e = r.delivery
        lines.append("  dissemination  rounds until a write reached every node: p50 \(d.p50), p99 \(d.p99), max \(d.max)"
            + (r.undelivered > 0 ? "; \(num(r.undelivered)) writes never did" : ""))
        lines.append("                 rounds until it reached each node: p50 \(e.p50), p99 \(e.p99), p99.99 \(e.p9999), max \(e.max)")
        if let converged = r.convergedRound {
            var line = "  convergence    every batch at every node by round \(converged)"
            if let end = r.disruptionEndRound {
                line += r.catchUpRounds.map { "; caught up \($0) rounds after the disruption ended (round \(end))" } ?? "; never caught up after round \(end)"
            }
            lines.append(line)
        } else {
            lines.append("  convergence    NOT reached within \(num(c.maxRounds)) rounds")
        }
        let b = r.bytes
        lines.append("  bytes          active: \(bytes(b.activePerNodePerRound)) per node per round (replication \(bytes(b.activeReplicationPerNodePerRound)), membership \(bytes(b.activeMembershipPerNodePerRound))) over \(b.activeRounds) rounds")
        if b.idleRounds > 0 {
            lines.append("                 idle:   \(bytes(b.idlePerNodePerRound)) per node per round (summaries \(bytes(b.idleReplicationPerNodePerRound)), membership \(bytes(b.idleMembershipPerNodePerRound))); \(bytes(b.idlePerShareExchange)) per share per exchange")
        }
        let m = r.messages
        lines.append("  messages       membership \(num(m.sent.membership)), summaries \(num(m.sent.summaries)) (with \(num(m.announcements)) announcements and \(num(m.wants)) requests), batches \(num(m.sent.batches)) (\(num(m.duplicateBatches)) duplicates, \(num(m.gapBatches)) ahead of a gap, \(num(m.waitingBatches)) before the owner's first, \(num(m.refusedBatches)) with cells refused: \(num(m.refusedCells)) cells), receipts \(num(m.sent.receipts)); lost \(num(m.lost))" + (c.activeView > 0 ? " (on connections: \(num(m.retransmitted)) retransmitted, each a delay)" : "") + ", unreachable \(num(m.unreachable))")
        let x = r.receipts
        lines.append("  receipts       \(num(x.exchanges)) exchanges: \(num(x.matched)) matched on both sides, \(num(x.interrupted)) of them interrupted by a crash; \(num(x.open)) open, \(num(x.mismatched)) mismatched" + (x.ended > 0 ? ", \(num(x.ended)) left open by a revoked agreement" : ""))
        lines.append("  membership     after the disruption no live node held a live node dead longer than \(r.membershipLongestDead) rounds"
            + (r.membershipDeadPairs > 0 ? "; \(num(r.membershipDeadPairs)) ordered pairs held dead at the end (SWIM takes a death back when the node hears of it and refutes)" : ""))
        if let v = r.connections {
            lines.append("  connections    active view \(c.activeView): at most \(v.maxAtEnd) per node at the end (mean \(String(format: "%.1f", v.meanAtEnd))), \(v.peak) at the peak; up to \(v.maxPartners) partners per node; every pair that shares connected \(v.partnersReachedAfter) rounds after the disruption"
                + (v.unlinkedPartnerPairsAtEnd > 0 ? "; \(num(v.unlinkedPartnerPairsAtEnd)) of \(num(v.partnerPairs)) pairs NOT connected at the end" : "")
                + "; address gossip \(num(v.addressBytes)) bytes, \(num(m.unconnected)) messages not sent for want of a connection")
        }
        lines.append("invariants")
        let width = r.checks.map(\.name.count).max() ?? 0
        for check in r.checks {
            lines.append("  \(check.passed ? "✓" : "✗") \(check.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(check.detail)")
        }
        return lines.joined(separator: "\n")
    }
}
