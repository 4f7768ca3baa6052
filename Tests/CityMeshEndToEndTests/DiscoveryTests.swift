import Foundation
import Testing

/// Discovery by gossip (issue 20) with real daemons: five cities seeded in a chain, each knowing
/// only the previous one. The owner's policy names the other four; none of them has its address.
/// Signed address records travel the chain, the owner dials the members its policy names, they
/// accept and hold its records; then the owner moves to another port and everyone finds it again.
@Suite("End to end: discovery by gossip", .serialized)
struct DiscoveryTests {
    static let names = ["hangzhou", "shanghai", "suzhou", "ningbo", "wuxi"]

    @Test("five cities seeded in a chain: each member connects to the owner, accepts its offer and holds its records; the owner moves to a new port and everyone finds it again")
    func chain() throws {
        let work = try Harness.tempDir("discovery")
        var cities = try PeerTransportTests.setUp(work, cities: Self.names, chain: true)
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) throws { try PeerTransportTests.eventually(what, seconds: seconds, condition) }
        var daemons: [Daemon] = []
        for c in cities {
            let d = try Daemon(dir: c.name, cwd: work)
            #expect(try d.waitReady(admin: c.admin), "\(d.log)")
            daemons.append(d)
        }
        defer { for d in daemons where d.process.isRunning { _ = d.terminate() } }
        let members = Array(Self.names.dropFirst())

        // Each member takes hangzhou's air-quality share as soon as it is offered.
        try "accept:\n  - from: hangzhou\n    share: delta-air\n".write(toFile: work + "/accept.yaml", atomically: true, encoding: .utf8)
        for m in members {
            let r = try cm("policy", "apply", "--dir", m, "accept.yaml")
            #expect(r.ok, "\(r.stdout)\(r.stderr)")
        }
        var r = try cm("dataset", "create", "--dir", "hangzhou", "air-quality", "--key", "station", "--field", "station:string", "--field", "pm25:double")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "put", "--dir", "hangzhou", "air-quality", "west-lake", "pm25=31.5")
        #expect(r.ok, "\(r.stderr)")
        try """
            shares:
              - id: delta-air
                dataset: air-quality
                to: [\(members.joined(separator: ", "))]
                fields: [station, pm25]
                purpose: "regional air-quality forecasting"
                legal_basis: "Yangtze Delta environmental data agreement 2026-07"
                valid_until: 2099-12-31
                on_revoke: keep

            """.write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")

        // wuxi, four hops from hangzhou, learns its address by gossip and is reached.
        for m in members {
            try eventually("\(m) accepted hangzhou's offer") {
                try AgreementTests.state(m, work, share: "delta-air", member: m) == "active"
            }
            try eventually("\(m) holds hangzhou's record") {
                try cm("record", "get", "--dir", m, "hangzhou/air-quality", "west-lake", "--json").stdout.contains("31.5")
            }
        }
        let wuxi = try PeerTransportTests.peers("wuxi", work)
        let hzAtWuxi = try #require(PeerTransportTests.peer(wuxi, "hangzhou"), "\(wuxi)")
        #expect(hzAtWuxi["state"] as? String == "connected")
        #expect(hzAtWuxi["view"] as? String == "partner")
        #expect((hzAtWuxi["addressSource"] as? String)?.hasPrefix("gossip via") == true, "\(hzAtWuxi)")
        #expect(hzAtWuxi["address"] as? String == cities[0].listen)
        // The table names the views and where each address came from.
        let table = try cm("peers", "--dir", "wuxi").stdout
        #expect(table.contains("VIEW") && table.contains("partner") && table.contains("gossip via"), "\(table)")

        // hangzhou moves to a new port: its signed record is newer, and everyone follows.
        #expect(daemons[0].terminate() == 0, "\(daemons[0].log.suffix(3000))")
        let moved = "127.0.0.1:\(Harness.freePort())"
        let configPath = work + "/hangzhou/citymesh.yaml"
        let config = try String(contentsOfFile: configPath, encoding: .utf8)
        #expect(config.contains(cities[0].listen))
        try config.replacingOccurrences(of: cities[0].listen, with: moved).write(toFile: configPath, atomically: true, encoding: .utf8)
        cities[0] = .init(name: "hangzhou", listen: moved, admin: cities[0].admin)
        daemons[0] = try Daemon(dir: "hangzhou", cwd: work)
        #expect(try daemons[0].waitReady(admin: cities[0].admin), "\(daemons[0].log)")
        r = try cm("record", "put", "--dir", "hangzhou", "air-quality", "west-lake", "pm25=12.25")
        #expect(r.ok, "\(r.stderr)")
        for m in members {
            try eventually("\(m) reached hangzhou at its new address") {
                let p = PeerTransportTests.peer(try PeerTransportTests.peers(m, work), "hangzhou")
                return p?["state"] as? String == "connected" && p?["address"] as? String == moved
            }
            try eventually("\(m) holds hangzhou's write made after the move") {
                try cm("record", "get", "--dir", m, "hangzhou/air-quality", "west-lake", "--json").stdout.contains("12.25")
            }
        }
        for d in daemons { #expect(d.terminate() == 0, "\(d.log.suffix(3000))") }
    }

    @Test("citymesh simulate --seeds runs every seed of a range, one line each, and reports the worst; a failed invariant fails the run; a bad range is refused; --jobs runs seeds at once with the same lines")
    func simulateSeeds() throws {
        let work = try Harness.tempDir("seeds")
        var r = try Harness.citymesh(["simulate", "--nodes", "20", "--writes", "40", "--loss", "0.1", "--seeds", "1-3"], cwd: work)
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("seed ") }
        #expect(lines.count == 3, "\(r.stdout)")
        // The worst is the seed with the slowest dissemination (none failed).
        let maxes = lines.compactMap { line -> (UInt64, Int)? in
            let words = line.split(separator: " ")
            guard let seed = UInt64(words[1]), let i = words.firstIndex(of: "max"), let m = Int(words[i + 1]) else { return nil }
            return (seed, m)
        }
        #expect(maxes.count == 3)
        let worst = try #require(r.stdout.split(separator: "\n").first { $0.contains("seeds, 0 failed; the worst, seed") })
        let worstSeed = UInt64(worst.split(separator: " ").last?.dropLast() ?? "") ?? 0
        #expect(maxes.first { $0.0 == worstSeed }?.1 == maxes.map(\.1).max(), "\(r.stdout)")
        #expect(r.stdout.contains("simulated 20 nodes") && r.stdout.contains("seed \(worstSeed), fanout"), "\(r.stdout)")
        // A planted defect fails every seed and the run.
        r = try Harness.citymesh(["simulate", "--nodes", "10", "--writes", "20", "--seeds", "4-5", "--fault", "leaky-owner", "--fault", "lenient-receivers"], cwd: work)
        #expect(!r.ok && r.stdout.components(separatedBy: "FAILED").count == 3, "\(r.stdout)\(r.stderr)")
        for bad in ["5-2", "x", "1-20000", "-3"] {
            r = try Harness.citymesh(["simulate", "--seeds", bad], cwd: work)
            #expect(!r.ok && r.stderr.contains("--seeds"), "\(bad): \(r.stderr)")
        }
        // Seeds run at once on several threads print the same lines, in seed order.
        func figures(_ jobs: String) throws -> [String] {
            let r = try Harness.citymesh(["simulate", "--nodes", "20", "--writes", "40", "--loss", "0.1", "--seeds", "1-5", "--jobs", jobs], cwd: work)
            #expect(r.ok, "\(r.stdout)\(r.stderr)")
            // Without the time each took, the one figure that differs between runs.
            return r.stdout.split(separator: "\n").filter { $0.hasPrefix("seed ") }.map { $0.split(separator: "  ").dropLast().joined(separator: "  ") }
        }
        let one = try figures("1"), three = try figures("3")
        #expect(one.count == 5 && one == three, "\(one)\n\(three)")
        #expect(three.map { $0.split(separator: " ")[1] } == ["1", "2", "3", "4", "5"])
        for (args, words) in [(["--jobs", "2"], "give --seeds"), (["--seeds", "1-2", "--jobs", "0"], "1-256")] {
            r = try Harness.citymesh(["simulate"] + args, cwd: work)
            #expect(!r.ok && r.stderr.contains(words), "\(args): \(r.stderr)")
        }
        // Partial views from the command line: every pair that shares is reached; without
        // address relay the run fails that invariant; settings out of range are refused.
        let views = ["simulate", "--nodes", "40", "--writes", "30", "--active-view", "5", "--members", "6", "--writers", "2", "--extra-shares", "8", "--crash", "2"]
        r = try Harness.citymesh(views, cwd: work)
        #expect(r.ok && r.stdout.contains("✓ partners reached") && r.stdout.contains("connections    active view 5"), "\(r.stdout)\(r.stderr)")
        r = try Harness.citymesh(views + ["--fault", "no-address-relay", "--rounds", "200"], cwd: work)
        #expect(!r.ok && r.stdout.contains("✗ partners reached"), "\(r.stdout)\(r.stderr)")
        for (args, words) in [(["--members", "3"], "writers"), (["--active-view", "2000"], "active view"), (["--extra-shares", "1", "--share-size", "500"], "extra share")] {
            r = try Harness.citymesh(["simulate"] + args, cwd: work)
            #expect(!r.ok && r.stderr.contains(words), "\(args): \(r.stderr)")
        }
    }
}
