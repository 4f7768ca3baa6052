import Foundation
import Testing

/// Day-two operations on real nodes: metrics as Prometheus reads them, config check, online
/// backup and restore with the ledger verified, and a SIGTERM that loses nothing.
@Suite("End to end: operations", .serialized)
struct OperationsTests {
    /// Parses Prometheus text exposition format strictly: every line is a comment (# HELP, # TYPE)
    /// or `name{labels} value`. Returns the samples by series name.
    static func parseMetrics(_ text: String) throws -> [String: [(labels: String, value: Double)]] {
        let sample = try Regex(#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf)( -?[0-9]+)?$"#)
        var out: [String: [(String, Double)]] = [:]
        for line in text.split(separator: "\n") where !line.isEmpty {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") { continue }
            guard let m = try sample.wholeMatch(in: String(line)) else { throw CommandError("not Prometheus text format: \(line)") }
            let name = String(m.output[1].substring ?? "")
            out[name, default: []].append((String(m.output[2].substring ?? ""), Double(String(m.output[3].substring ?? "")) ?? .nan))
        }
        return out
    }

    struct CommandError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func mode(_ path: String) -> Int? {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber).map { $0.intValue & 0o777 }
    }

    @Test("metrics, config check, backup while running, restore into the stopped node with the ledger verified, SIGTERM loses nothing")
    func operations() throws {
        let work = try Harness.tempDir("ops")
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        // A running federation with replication and a conflict behind it: the demo, left running.
        let (demo, out) = try DemoTests.launch(work, dir: "fed")
        defer { if demo.isRunning { kill(demo.processIdentifier, SIGKILL) } }
        #expect(demo.isRunning, "\(out)")
        let hz = "fed/hangzhou"
        let admin = try #require(out.split(separator: "\n").first { $0.hasPrefix("  hangzhou ") && $0.contains("--dir") }?
            .split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init), "\(out)")

        // /metrics: valid Prometheus text, with the series city IT watches.
        let token = try String(contentsOfFile: work + "/\(hz)/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let scrape = try Harness.run("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(token)", "\(admin)/metrics"], cwd: work)
        let metrics = try Self.parseMetrics(scrape.stdout)
        for name in ["citymesh_peers_connected", "citymesh_exchanges_total", "citymesh_exchange_records_total", "citymesh_replication_bytes_total",
                     "citymesh_replication_records_merged_total", "citymesh_replication_conflicts_total", "citymesh_share_sync_lag_batches",
                     "citymesh_ledger_entries", "citymesh_ledger_checkpoint_age_seconds", "citymesh_peer_certificate_expiry_seconds"] {
            #expect(metrics[name] != nil, "\(name) is exported: \(scrape.stdout)")
        }
        #expect(metrics["citymesh_peers_connected"]?.first?.value == 2, "\(metrics["citymesh_peers_connected"] ?? [])")
        // Handshake refusals by reason are there before the first one (so increase() sees it).
        #expect(metrics["citymesh_peer_refusals_total"]?.contains { $0.labels.contains(#"reason="foreign_ca""#) } == true,
                "\(metrics["citymesh_peer_refusals_total"] ?? [])")
        #expect(metrics["citymesh_exchanges_total"]?.contains { $0.labels.contains(#"share="hangzhou/registry-rw""#) && $0.labels.contains(#"direction="received""#) } == true,
                "exchanges by share and direction: \(metrics["citymesh_exchanges_total"] ?? [])")
        #expect((metrics["citymesh_ledger_entries"]?.first?.value ?? 0) > 10)
        for probe in ["healthz", "readyz"] {
            let r = try Harness.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "\(admin)/\(probe)"], cwd: work)
            #expect(r.stdout == "200", "/\(probe) needs no token and answers 200: \(r.stdout)")
        }

        // config check: a sound node passes while it runs; a broken config is refused with the reason.
        var r = try cm("config", "check", "--dir", hz)
        #expect(r.ok && r.stdout.contains("config OK") && r.stdout.contains("identity") && r.stdout.contains("running"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("readable by their owner only"), "\(r.stdout)")
        // A key other users can read (in a directory they can enter) is a warning that says how
        // to fix it (a warning: exit 0).
        let keyPath = work + "/\(hz)/tls/node.key", nodeDir = work + "/\(hz)", tlsDir = work + "/\(hz)/tls"
        #expect(Self.mode(work + "/\(hz)/citymesh.db") == 0o600 && Self.mode(nodeDir) == 0o700, "init makes the database and the node directory private")
        for sidecar in ["-wal", "-shm"] {
            #expect(Self.mode(work + "/\(hz)/citymesh.db" + sidecar) == 0o600, "the running node's \(sidecar) file is as private as the database")
        }
        for (path, mode) in [(keyPath, 0o644), (nodeDir, 0o755), (tlsDir, 0o755)] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        }
        r = try cm("config", "check", "--dir", hz)
        #expect(r.ok && r.stdout.contains("warning") && r.stdout.contains("is mode 644") && r.stdout.contains("chmod 600 \(keyPath)"), "\(r.stdout)")
        // Behind a 0700 directory nobody else gets to it: no warning.
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: tlsDir)
        r = try cm("config", "check", "--dir", hz)
        #expect(r.ok && r.stdout.contains("readable by their owner only"), "\(r.stdout)")
        for (path, mode) in [(keyPath, 0o600), (nodeDir, 0o700)] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        }

        // Backup while running; then a write the backup does not have.
        r = try cm("backup", "--dir", hz, "--out", "hz-backup.db")
        #expect(r.ok && r.stdout.contains("integrity ok"), "\(r.stdout)\(r.stderr)")
        #expect(Self.mode(work + "/hz-backup.db") == 0o600, "a backup is readable by its owner only")
        r = try cm("backup", "--dir", hz, "--out", "hz-backup.db")
        #expect(!r.ok && r.stderr.contains("already exists"), "\(r.stderr)")
        r = try cm("backup", "--dir", "fed/shanghai", "--out", "sh-backup.db")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "put", "--dir", hz, "registry", "AFTER-BACKUP", "name=Written after the backup", "status=active")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("restore", "--dir", hz, "--from", "hz-backup.db")
        #expect(!r.ok && r.stderr.contains("already running"), "restore refuses a running node: \(r.stderr)")

        // Ctrl-C stops the federation cleanly.
        kill(demo.processIdentifier, SIGINT)
        demo.waitUntilExit()
        #expect(demo.terminationStatus == 0)

        r = try cm("restore", "--dir", hz, "--from", "sh-backup.db")
        #expect(!r.ok && r.stderr.contains("not of 'hangzhou'"), "another city's backup is refused: \(r.stderr)")
        try Data("not a database".utf8).write(to: URL(fileURLWithPath: work + "/junk.db"))
        r = try cm("restore", "--dir", hz, "--from", "junk.db")
        #expect(!r.ok, "a file that is not a backup is refused: \(r.stdout)")
        // Crafted copies of the real backup (every input is hostile): values of another type or
        // negative where citymesh reads numbers, an added trigger, a dropped index. Each is
        // refused with what is wrong, and the node is left as it was.
        let crafted: [(String, String)] = [
            ("UPDATE ledger SET entry = 'not bytes' WHERE idx = 0;", "ledger.entry are not BLOB"),
            ("UPDATE node_state SET next_seq = -5;", "node_state.next_seq are negative"),
            ("UPDATE datasets SET last_seq = 'many';", "datasets.last_seq are not INTEGER"),
            ("CREATE TRIGGER wipe AFTER INSERT ON records BEGIN DELETE FROM ledger; END;", "schema object citymesh does not make"),
            ("DROP INDEX ledger_by_time;", "lacks"),
        ]
        for (i, (sql, why)) in crafted.enumerated() {
            try? FileManager.default.removeItem(atPath: work + "/crafted-\(i).db")
            try FileManager.default.copyItem(atPath: work + "/hz-backup.db", toPath: work + "/crafted-\(i).db")
            let edit = try Harness.run("/usr/bin/sqlite3", ["crafted-\(i).db", sql], cwd: work)
            #expect(edit.ok, "\(sql): \(edit.stderr)")
            r = try cm("restore", "--dir", hz, "--from", "crafted-\(i).db")
            #expect(!r.ok && r.stderr.contains("is not a database citymesh made") && r.stderr.contains(why), "\(sql) → \(r.stdout)\(r.stderr)")
        }
        r = try cm("restore", "--dir", hz, "--from", "hz-backup.db")
        #expect(r.ok && r.stdout.contains("the ledger verifies") && r.stdout.contains("before-restore"), "\(r.stdout)\(r.stderr)")

        // The restored node starts, has the backup's data and not the later write, and its ledger verifies.
        var node = try Daemon(dir: hz, cwd: work)
        let adminAddress = String(admin.dropFirst(7))
        #expect(try node.waitReady(admin: adminAddress), "\(node.log)")
        r = try cm("record", "get", "--dir", hz, "registry", "AFTER-BACKUP")
        #expect(!r.ok, "the write after the backup is not in the restored database")
        r = try cm("export", "--dir", hz, "registry", "--jsonl")
        #expect(r.ok && r.stdout.split(separator: "\n").count == 10, "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "verify", "--dir", hz)
        #expect(r.ok && r.stdout.contains("ledger OK"), "\(r.stdout)\(r.stderr)")

        // SIGTERM right after a write is acknowledged loses nothing.
        var csv = "credit_code,name,district,status,tax_id\n"
        for i in 1...200 { csv += "T-\(i),Term \(i),Xihu,active,TX-\(i)\n" }
        try csv.write(toFile: work + "/more.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", hz, "registry", "--csv", "more.csv")
        #expect(r.ok, "\(r.stderr)")
        #expect(node.terminate() == 0, "SIGTERM exits 0: \(node.log)")
        #expect(node.log.contains("node stopped"))
        node = try Daemon(dir: hz, cwd: work)
        #expect(try node.waitReady(admin: adminAddress), "\(node.log)")
        r = try cm("export", "--dir", hz, "registry", "--jsonl")
        #expect(r.stdout.split(separator: "\n").count == 210, "every acknowledged record is there after the restart")
        r = try cm("audit", "verify", "--dir", hz)
        #expect(r.ok && r.stdout.contains("ledger OK"), "\(r.stdout)\(r.stderr)")
        #expect(node.terminate() == 0)

        // A config the node could not start with: config check names the problem and exits 1.
        let configPath = work + "/\(hz)/citymesh.yaml"
        let config = try String(contentsOfFile: configPath, encoding: .utf8)
        try config.replacingOccurrences(of: "node.key", with: "missing.key").write(toFile: configPath, atomically: true, encoding: .utf8)
        r = try cm("config", "check", "--dir", hz)
        #expect(r.status == 1 && r.stdout.contains("PROBLEM") && r.stdout.contains("identity"), "\(r.stdout)\(r.stderr)")
    }

    @Test("a node whose config names a policy file applies it at start (it used to hang waiting for its own ledger); --log-format json writes JSON lines with the city")
    func policyAtStart() throws {
        let work = try Harness.tempDir("ops-policy")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        try "accept:\n  - from: shanghai\n    share: air\n".write(toFile: work + "/hangzhou/policy.yaml", atomically: true, encoding: .utf8)
        let configPath = work + "/hangzhou/citymesh.yaml"
        let config = try String(contentsOfFile: configPath, encoding: .utf8)
        #expect(config.contains("policy: null"))
        try config.replacingOccurrences(of: "policy: null", with: "policy: policy.yaml").write(toFile: configPath, atomically: true, encoding: .utf8)
        var r = try cm("config", "check", "--dir", "hangzhou")
        #expect(r.ok && r.stdout.contains("policy.yaml"), "\(r.stdout)\(r.stderr)")
        let node = try Daemon(dir: "hangzhou", cwd: work, extra: ["--log-format", "json"])
        #expect(try node.waitReady(admin: cities[0].admin), "\(node.log)")
        // JSON lines logs: one object per line, with the city (and the service) as metadata.
        let lines = node.log.split(separator: "\n")
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(!lines.isEmpty && objects.count == lines.count, "every log line is a JSON object: \(node.log)")
        #expect(objects.contains { $0["city"] as? String == "hangzhou" && $0["service"] != nil && $0["message"] != nil }, "\(node.log)")
        try PeerTransportTests.eventually("the policy file is in force and ledgered") {
            try cm("audit", "log", "--dir", "hangzhou", "--kind", "policy.applied", "--json").stdout.contains("node:start")
        }
        r = try cm("policy", "show", "--dir", "hangzhou")
        #expect(r.ok && r.stdout.contains("shanghai"), "\(r.stdout)\(r.stderr)")
        let ready = try Harness.run("/usr/bin/curl", ["-s", "-w", " %{http_code}", "http://\(cities[0].admin)/readyz"], cwd: work)
        #expect(ready.stdout.hasSuffix(" 200") && ready.stdout.contains("ready"), "ready once the policy file is in force: \(ready.stdout)")
        #expect(node.terminate() == 0, "\(node.log)")
    }
}
