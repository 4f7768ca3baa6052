import Foundation
import Testing

/// Erasure through three real daemons (issue 19): a record erased at the owner leaves every
/// node's database files — the bytes of citymesh.db and its WAL, not only the API — first its
/// values, then its key; the batches that carried it still verify, and replication goes on.
@Suite("End to end: erasure")
struct ErasureTests {
    /// The files a node keeps its database in.
    static func contains(_ needle: String, node dir: String, _ work: String) -> Bool {
        ["citymesh.db", "citymesh.db-wal"].contains { name in
            guard let data = FileManager.default.contents(atPath: "\(work)/\(dir)/\(name)") else { return false }
            return data.range(of: Data(needle.utf8)) != nil
        }
    }

    @Test("record erase: the values leave the database files of the owner and of both members, then the key; the ledgers say so; replication goes on")
    func erase() throws {
        let work = try Harness.tempDir("erasure")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) throws {
            try PeerTransportTests.eventually(what, seconds: seconds, condition)
        }
        let daemons = try ["hangzhou", "shanghai", "suzhou"].map { try Daemon(dir: $0, cwd: work) }
        for (d, c) in zip(daemons, cities) { #expect(try d.waitReady(admin: c.admin), "\(d.log)") }
        try ReplicationTests.shareRegistry(work)
        let nodes = ["hangzhou", "shanghai", "suzhou"]

        var csv = "id,name,status,district\n"
        for i in 1...50 { csv += "E-\(i),Enterprise \(i),active,Xihu\n" }
        csv += "PERSON-330106-7741,Zhang Erasable-Name-Q7,active,Xihu\nPERSON-330106-5582,Li Kept-Name-K5,active,Binjiang\n"
        try csv.write(toFile: work + "/registry.csv", atomically: true, encoding: .utf8)
        var r = try cm("import", "--dir", "hangzhou", "registry", "--csv", "registry.csv")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        // A member's write to the record: its batch carries a value too, kept at all three nodes.
        try eventually("shanghai holds the record") { try cm("record", "get", "--dir", "shanghai", "hangzhou/registry", "PERSON-330106-7741").ok }
        r = try cm("record", "put", "--dir", "shanghai", "hangzhou/registry", "PERSON-330106-7741", "status=Member-Note-Q7")
        #expect(r.ok, "\(r.stderr)")
        try eventually("every node holds both values of the record, and the other record") {
            nodes.allSatisfy { Self.contains("Erasable-Name-Q7", node: $0, work) && Self.contains("Member-Note-Q7", node: $0, work) && Self.contains("Kept-Name-K5", node: $0, work) }
        }
        try eventually("suzhou has shanghai's write") {
            try cm("record", "get", "--dir", "suzhou", "hangzhou/registry", "PERSON-330106-7741", "--json").stdout.contains("Member-Note-Q7")
        }

        // Only the owner erases, only what exists.
        r = try cm("record", "erase", "--dir", "shanghai", "hangzhou/registry", "PERSON-330106-7741")
        #expect(!r.ok && r.stderr.contains("only hangzhou can erase"), "\(r.stderr)")
        r = try cm("record", "erase", "--dir", "hangzhou", "registry", "NO-SUCH-KEY")
        #expect(!r.ok && r.stderr.contains("no record 'NO-SUCH-KEY'"), "\(r.stderr)")

        r = try cm("record", "erase", "--dir", "hangzhou", "registry", "PERSON-330106-7741")
        #expect(r.ok && r.stdout.contains("deleted PERSON-330106-7741") && r.stdout.contains("compacted here:"), "\(r.stdout)\(r.stderr)")
        #expect(!Self.contains("Erasable-Name-Q7", node: "hangzhou", work) && !Self.contains("Member-Note-Q7", node: "hangzhou", work),
                "the owner's files hold neither value once the command returns")
        try eventually("no node's files hold the erased values; the other record is untouched") {
            nodes.allSatisfy { !Self.contains("Erasable-Name-Q7", node: $0, work) && !Self.contains("Member-Note-Q7", node: $0, work) && Self.contains("Kept-Name-K5", node: $0, work) }
        }
        try eventually("once every party holds the deletion, the key is gone from every node's files too", seconds: 180) {
            nodes.allSatisfy { !Self.contains("PERSON-330106-7741", node: $0, work) && Self.contains("PERSON-330106-5582", node: $0, work) }
        }

        // The ledgers: the erasure at the owner (its key as a keyed hash only), a compaction at each node.
        r = try cm("audit", "log", "--dir", "hangzhou", "--kind", "record.erased", "--json")
        #expect(r.ok && r.stdout.contains("key.hmac"), "\(r.stdout)\(r.stderr)")
        for dir in nodes {
            let log = try cm("audit", "log", "--dir", dir, "--kind", "share.compacted", "--json").stdout
            #expect(log.contains("\"records\":"), "\(dir): \(log)")
            #expect(try cm("audit", "verify", "--dir", dir).ok)
        }
        // The compacted batches still make a chain: new writes go on in both directions.
        r = try cm("record", "put", "--dir", "hangzhou", "registry", "PERSON-330106-5582", "status=after-the-erasure")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "put", "--dir", "suzhou", "hangzhou/registry", "E-7", "status=suzhou-after")
        #expect(r.ok, "\(r.stderr)")
        try eventually("writes after the erasure reach every node") {
            try nodes.allSatisfy { dir in
                let ds = dir == "hangzhou" ? "registry" : "hangzhou/registry"
                return try cm("record", "get", "--dir", dir, ds, "PERSON-330106-5582", "--json").stdout.contains("after-the-erasure")
                    && cm("record", "get", "--dir", dir, ds, "E-7", "--json").stdout.contains("suzhou-after")
            }
        }
        for d in daemons { #expect(d.terminate() == 0, "\(d.log.suffix(2000))") }
    }
}
