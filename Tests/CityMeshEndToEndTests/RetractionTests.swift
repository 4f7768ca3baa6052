import Foundation
import Testing

/// What a member holds stays inside its agreement's row filter (issue 19): a record that leaves
/// the filter is retracted from the member's replica, the deletion of a row the member never saw
/// is not sent, and a record that comes back into the filter comes back whole — at both members
/// of a share among three real daemons. What leaves the
/// member's view also leaves the batches it keeps for relaying (G5): the bytes of its database
/// files are checked.
@Suite("End to end: retraction")
struct RetractionTests {
    static let policy = """
        shares:
          - id: air-open
            dataset: air-quality
            to: [shanghai, suzhou]
            fields: [station, district, pm25]
            where: "pm25 >= 0"
            purpose: "regional air-quality forecasting"
            legal_basis: "Yangtze Delta environmental data agreement 2026-07"
            valid_until: 2099-12-31
            on_revoke: keep

        """

    @Test("a record leaving the row filter is retracted at the member (ledgered there); a hidden row's deletion never reaches it; back in the filter, it comes back; narrower terms retract rows and fields, wider ones bring them")
    func retraction() throws {
        let work = try Harness.tempDir("retraction")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, _ condition: () throws -> Bool) throws { try PeerTransportTests.eventually(what, seconds: 30, condition) }
        let daemons = try ["hangzhou", "shanghai", "suzhou"].map { try Daemon(dir: $0, cwd: work) }
        let members = ["shanghai", "suzhou"]
        for (d, c) in zip(daemons, cities) { #expect(try d.waitReady(admin: c.admin), "\(d.log)") }

        var r = try cm("dataset", "create", "--dir", "hangzhou", "air-quality", "--key", "station",
                       "--field", "station:string", "--field", "district:string", "--field", "pm25:double")
        #expect(r.ok, "\(r.stderr)")
        try "accept:\n  - from: hangzhou\n    share: air-open\n".write(toFile: work + "/sh-policy.yaml", atomically: true, encoding: .utf8)
        for m in members {
            r = try cm("policy", "apply", "--dir", m, "sh-policy.yaml")
            #expect(r.ok, "\(r.stdout)\(r.stderr)")
        }
        try Self.policy.write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try "station,district,pm25\nS-1,Lingyin,12\nS-HIDDEN,Binjiang,-1\nS-3,Xihu,5\nS-4,Gongshu,-3\n".write(toFile: work + "/air.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hangzhou", "air-quality", "--csv", "air.csv")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        func held(_ key: String, at city: String = "shanghai") throws -> String? {
            let g = try cm("record", "get", "--dir", city, "hangzhou/air-quality", key, "--json")
            return g.ok ? g.stdout : nil
        }
        func rows(_ key: String, at city: String = "shanghai") throws -> String {
            try Harness.run("/usr/bin/sqlite3", ["\(city)/citymesh.db", "SELECT COUNT(*) FROM records WHERE key = '\(key)'"], cwd: work).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try eventually("both members hold the two rows in the filter") { try members.allSatisfy { try held("S-1", at: $0) != nil && held("S-3", at: $0) != nil } }
        #expect(try rows("S-HIDDEN") == "0")
        #expect(ErasureTests.contains("Lingyin", node: "shanghai", work), "the check below can see a value in the files")

        // S-1 leaves the filter: retracted at shanghai, and shanghai's ledger says so.
        r = try cm("record", "put", "--dir", "hangzhou", "air-quality", "S-1", "pm25=-5")
        #expect(r.ok, "\(r.stderr)")
        try eventually("S-1 left both members' replicas") { try members.allSatisfy { try held("S-1", at: $0) == nil && rows("S-1", at: $0) == "0" } }
        r = try cm("audit", "log", "--dir", "shanghai", "--kind", "share.retracted", "--json")
        #expect(r.ok && r.stdout.contains("1 records left this node's view of share hangzhou/air-open"), "\(r.stdout)\(r.stderr)")
        #expect(try held("S-3") != nil, "only S-1 left")
        // Its values also leave the batches shanghai keeps for relaying (compacted like a deletion,
        // G5): S-1's district is nowhere in shanghai's database files.
        try eventually("S-1's values left both members' database files") { members.allSatisfy { !ErasureTests.contains("Lingyin", node: $0, work) } }
        r = try cm("audit", "log", "--dir", "shanghai", "--kind", "share.compacted", "--json")
        #expect(r.ok && r.stdout.contains("compacted out of"), "\(r.stdout)\(r.stderr)")

        // The hidden row is deleted; a visible write follows it. Shanghai gets the write and never
        // hears of the deletion (no tombstone row, nothing in the database file).
        r = try cm("record", "delete", "--dir", "hangzhou", "air-quality", "S-HIDDEN")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "put", "--dir", "hangzhou", "air-quality", "S-3", "pm25=6")
        #expect(r.ok, "\(r.stderr)")
        try eventually("shanghai got the write after the deletion") { try held("S-3")?.contains("6") == true }
        #expect(try rows("S-HIDDEN") == "0")
        r = try cm("backup", "--dir", "shanghai", "--out", "sh.db")
        #expect(r.ok, "\(r.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: work + "/sh.db"))
        #expect(bytes.range(of: Data("S-HIDDEN".utf8)) == nil, "the hidden row's key is nowhere in shanghai's database")
        try eventually("suzhou got the write after the deletion") { try held("S-3", at: "suzhou")?.contains("6") == true }
        #expect(!ErasureTests.contains("S-HIDDEN", node: "suzhou", work), "nor in suzhou's database files")

        // Back in the filter: S-1 comes back whole.
        r = try cm("record", "put", "--dir", "hangzhou", "air-quality", "S-1", "pm25=20")
        #expect(r.ok, "\(r.stderr)")
        try eventually("S-1 is back at both members, whole") {
            try members.allSatisfy { m in (try held("S-1", at: m)).map { $0.contains("20") && $0.contains("Lingyin") } ?? false }
        }

        // Narrower terms: a stricter filter and no district. Rows the new filter leaves out are
        // retracted, the district leaves shanghai's replica — without any record changing.
        try Self.policy.replacingOccurrences(of: "pm25 >= 0", with: "pm25 >= 10").replacingOccurrences(of: "[station, district, pm25]", with: "[station, pm25]")
            .write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("under the narrower terms S-3 (pm25 6) left both members and S-1 lost its district") {
            try members.allSatisfy { m in
                try held("S-3", at: m) == nil && rows("S-3", at: m) == "0" && (try held("S-1", at: m)).map { $0.contains("20") && !$0.contains("Lingyin") } ?? false
            }
        }
        // No district value is left anywhere at shanghai: not in the replica's records, and not in
        // the batches it keeps for relaying (records with a district cell are compacted out of
        // them; the owner sent S-1 again whole under the new view) — the database files' bytes.
        try eventually("no district is left in either member's database files") {
            members.allSatisfy { !ErasureTests.contains("Lingyin", node: $0, work) && !ErasureTests.contains("Xihu", node: $0, work) }
        }
        #expect(try held("S-1")?.contains("20") == true, "S-1 is still held, under the new view")

        // Wider terms again, with no filter: the rows the filter hid arrive (S-4, never sent before),
        // S-3 comes back, and the district comes back to the rows shanghai holds.
        try Self.policy.replacingOccurrences(of: "    where: \"pm25 >= 0\"\n", with: "").write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("without a filter both members hold S-1 (with its district), S-3 and S-4") {
            try members.allSatisfy { m in try held("S-4", at: m) != nil && held("S-3", at: m) != nil && (try held("S-1", at: m)).map { $0.contains("Lingyin") } ?? false }
        }
        for d in daemons { #expect(d.terminate() == 0, "\(d.log.suffix(2000))") }
    }
}
