import Foundation
import Testing

/// The ledger through the real binary: admin actions and peer refusals are logged, checkpoints are
/// signed, and a hand edit with the sqlite3 shell is caught by `audit verify`.
@Suite("End to end: the ledger", .serialized)
struct AuditTests {
    /// A federation and one initialised node, hangzhou, in `hz` (not started): the work directory,
    /// its peer and admin addresses.
    static func node(_ label: String) throws -> (work: String, listen: String, admin: String) {
        let work = try Harness.tempDir(label)
        let listen = "127.0.0.1:\(Harness.freePort())"
        let admin = "127.0.0.1:\(Harness.freePort())"
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        _ = try cm("federation", "init", "--out", "fed", "--name", "Test")
        _ = try cm("federation", "issue", "--ca", "fed", "--city", "hangzhou", "--out", "hz-cert")
        let r = try cm("init", "--dir", "hz", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key",
                       "--listen", listen, "--admin", admin)
        #expect(r.ok, "\(r.stderr)")
        return (work, listen, admin)
    }

    @Test("actions and refusals are logged; audit verify passes, then fails on a hand-edited entry")
    func logVerifyTamper() throws {
        let (work, listen, admin) = try Self.node("audit")
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        var r: CommandResult
        var daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")
        r = try cm("dataset", "create", "--dir", "hz", "air", "--key", "station", "--field", "station:string", "--field", "pm25:double")
        #expect(r.ok, "\(r.stderr)")
        try "station,pm25\nS-1,3.5\nS-2,4\n".write(toFile: work + "/a.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hz", "air", "--csv", "a.csv")
        #expect(r.ok, "\(r.stderr)")
        // A refused peer: no client certificate.
        _ = try Harness.run("/bin/sh", ["-c", "sleep 0.5 | timeout 5 openssl s_client -connect \(listen) -tls1_3 >/dev/null 2>&1"], cwd: work)

        var log = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            log = try cm("audit", "log", "--dir", "hz", "--json").stdout
            if log.contains("peer.refused") { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        let lines = log.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let kinds = lines.compactMap { $0["kind"] as? String }
        #expect(kinds.contains("node.started") && kinds.contains("dataset.created") && kinds.contains("dataset.imported") && kinds.contains("peer.refused"), "\(log)")
        let imported = lines.first { $0["kind"] as? String == "dataset.imported" }
        #expect((imported?["counts"] as? [String: Int])?["imported"] == 2)
        let sha = try Harness.run("/usr/bin/sha256sum", ["a.csv"], cwd: work).stdout.prefix(64)
        #expect((imported?["hashes"] as? [String: String])?["content.sha256"] == String(sha), "the import's hash is the file's SHA-256")
        #expect((imported?["actor"] as? String)?.hasPrefix("token:") == true)
        #expect(!log.contains("S-1"), "record values never reach the ledger")
        #expect(lines.first { $0["kind"] as? String == "peer.refused" }?["reason"] as? String == "no_client_certificate")

        // Wait for a checkpoint covering everything, then verify.
        var checkpoint = ""
        for _ in 0..<100 {
            checkpoint = try cm("audit", "checkpoint", "--dir", "hz").stdout
            if checkpoint.split(separator: "\n").dropFirst().first.map(String.init) == String(lines.count) { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(checkpoint.hasPrefix("hangzhou.citymesh/ledger\n\(lines.count)\n"), "\(checkpoint)")
        #expect(checkpoint.contains("\n\n\u{2014} hangzhou.citymesh/ledger "))
        r = try cm("audit", "vkey", "--dir", "hz")
        #expect(r.stdout.hasPrefix("hangzhou.citymesh/ledger+"), "\(r.stdout)")
        r = try cm("audit", "verify", "--dir", "hz")
        #expect(r.ok && r.stdout.contains("ledger OK"), "\(r.stdout)\(r.stderr)")

        // Proofs, checked by the CLI and printed for any RFC 9162 verifier.
        r = try cm("audit", "prove", "--dir", "hz", "--index", "2", "--json")
        #expect(r.ok, "\(r.stderr)")
        let proof = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(proof["index"] as? Int == 2 && proof["treeSize"] as? Int == lines.count)
        #expect((proof["proof"] as? [String])?.isEmpty == false && proof["checkpoint"] is String, "\(r.stdout)")
        r = try cm("audit", "consistency", "--dir", "hz", "--from", "2")
        #expect(r.ok && r.stdout.contains("proof verified"), "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "prove", "--dir", "hz", "--index", "999")
        #expect(!r.ok && r.stderr.contains("not in the tree"), "\(r.stderr)")

        r = try cm("audit", "log", "--dir", "hz", "--since", "last week")
        #expect(r.status != 0 && r.stderr.contains("RFC 3339"), "\(r.stderr)")
        // A C2SP tlog-proof of one entry, kept with the verifier key for offline checks below.
        r = try cm("audit", "prove", "--dir", "hz", "--index", "1", "--tlog-proof")
        #expect(r.ok && r.stdout.hasPrefix("c2sp.org/tlog-proof@v1\nextra "), "\(r.stdout)\(r.stderr)")
        try r.stdout.write(toFile: work + "/e1.tlog-proof", atomically: true, encoding: .utf8)
        try cm("audit", "vkey", "--dir", "hz").stdout.write(toFile: work + "/hz.vkey", atomically: true, encoding: .utf8)

        // A bundle, verified after the node is stopped: no node, network or database.
        r = try cm("audit", "export", "--dir", "hz", "--out", "hz.bundle")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("audit", "export", "--dir", "hz", "--out", "recent.bundle", "--since", "2000-01-01")
        #expect(r.ok, "\(r.stderr)")
        #expect(daemon.terminate() == 0)
        try FileManager.default.moveItem(atPath: work + "/hz", toPath: work + "/hz-away")
        r = try cm("audit", "verify-bundle", "hz.bundle", "--ca", "fed/ca.pem")
        #expect(r.ok && r.stdout.contains("bundle OK: \(lines.count) entries"), "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "verify-proof", "e1.tlog-proof", "--vkey", "hz.vkey")
        #expect(r.ok && r.stdout.contains("proof OK: entry 1 is in hangzhou.citymesh/ledger's tree"), "\(r.stdout)\(r.stderr)")
        let tampered = try String(contentsOfFile: work + "/e1.tlog-proof", encoding: .utf8).replacingOccurrences(of: "\nindex 1\n", with: "\nindex 0\n")
        try tampered.write(toFile: work + "/bad.tlog-proof", atomically: true, encoding: .utf8)
        r = try cm("audit", "verify-proof", "bad.tlog-proof", "--vkey", "hz.vkey")
        #expect(r.status == 1 && r.stderr.contains("does NOT verify"), "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "verify-bundle", "recent.bundle")
        #expect(r.ok && r.stdout.contains("bundle OK"), "\(r.stdout)\(r.stderr)")
        // An altered bundle fails: one entry's bytes changed.
        var text = try String(contentsOfFile: work + "/hz.bundle", encoding: .utf8)
        let firstEntry = try #require(text.range(of: #""entry" : ""#))
        let at = text.index(firstEntry.upperBound, offsetBy: 10)
        text.replaceSubrange(at...at, with: text[at] == "A" ? "B" : "A")
        try text.write(toFile: work + "/bad.bundle", atomically: true, encoding: .utf8)
        r = try cm("audit", "verify-bundle", "bad.bundle")
        #expect(r.status == 1 && r.stderr.contains("does not verify"), "\(r.stdout)\(r.stderr)")
        _ = try cm("federation", "init", "--out", "other", "--name", "Other")
        r = try cm("audit", "verify-bundle", "hz.bundle", "--ca", "other/ca.pem")
        #expect(r.status == 1 && r.stderr.contains("another federation"), "\(r.stderr)")
        try FileManager.default.moveItem(atPath: work + "/hz-away", toPath: work + "/hz")

        // Edit entry 2 by hand, as an operator with shell access could.
        r = try Harness.run("/usr/bin/sqlite3", ["hz/citymesh.db", "UPDATE ledger SET entry = CAST(replace(CAST(entry AS TEXT), 'hangzhou/air', 'hangzhou/aiR') AS BLOB) WHERE idx = 2;"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")
        r = try cm("audit", "verify", "--dir", "hz")
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("FAILED at entry 2"), "\(r.stdout)")
        #expect(daemon.terminate() == 0)
    }

    @Test("an import killed half-way (kill -9): every record it committed is in the ledger, chunk by chunk, with its lines (G10)")
    func importKilled() throws {
        let (work, _, admin) = try Self.node("audit-kill")
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        var r: CommandResult
        var daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")
        r = try cm("dataset", "create", "--dir", "hz", "people", "--key", "id", "--field", "id:string", "--field", "name:string")
        #expect(r.ok, "\(r.stderr)")
        let rows = 300_000
        var csv = "id,name\n"
        csv.reserveCapacity(rows * 24)
        for i in 0..<rows { csv += "P-\(i),name \(i)\n" }
        try csv.write(toFile: work + "/people.csv", atomically: true, encoding: .utf8)

        let importer = Process()
        importer.executableURL = URL(fileURLWithPath: Harness.binary)
        importer.arguments = ["import", "--dir", "hz", "people", "--csv", "people.csv"]
        importer.currentDirectoryURL = URL(fileURLWithPath: work)
        importer.standardOutput = FileHandle.nullDevice
        importer.standardError = FileHandle.nullDevice
        try importer.run()
        // Kill the node as soon as the first chunk is committed.
        func committed() throws -> Int {
            Int(try Harness.run("/usr/bin/sqlite3", ["hz/citymesh.db", "SELECT COUNT(*) FROM records"], cwd: work).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        let deadline = Date().addingTimeInterval(120)
        while try committed() == 0, Date() < deadline, importer.isRunning { Thread.sleep(forTimeInterval: 0.01) }
        kill(daemon.process.processIdentifier, SIGKILL)
        daemon.process.waitUntilExit()
        importer.waitUntilExit()
        let kept = try committed()
        #expect(kept > 0 && kept < rows, "the node was killed during the import: \(kept) of \(rows) rows committed")

        daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")
        let log = try cm("audit", "log", "--dir", "hz", "--json", "--kind", "dataset.import_chunk").stdout
        let chunks = log.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let ledgered = chunks.reduce(0) { $0 + ((($1["counts"] as? [String: Int])?["imported"]) ?? 0) }
        #expect(ledgered == kept, "every committed record is in a chunk entry: \(ledgered) ledgered, \(kept) committed")
        // The chunks' lines run on from the header without a gap and add up to what was committed.
        let ranges = chunks.compactMap { ($0["detail"] as? String)?.dropFirst("lines ".count).split(separator: "–").compactMap { Int($0) } }
        #expect(ranges.first?.first == 2 && ranges.count == chunks.count, "\(chunks.first ?? [:])")
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0[1] + 1 == $1[0] }, "\(ranges)")
        #expect(ranges.reduce(0) { $0 + $1[1] - $1[0] + 1 } == kept, "\(ranges)")
        r = try cm("audit", "verify", "--dir", "hz")
        #expect(r.ok && r.stdout.contains("ledger OK"), "\(r.stdout)\(r.stderr)")
        #expect(daemon.terminate() == 0)
    }
}
