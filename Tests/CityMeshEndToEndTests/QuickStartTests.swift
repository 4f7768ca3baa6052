import Foundation
import Testing

/// Walks the README's quick start with the real binary, a real SQLite file and a real daemon,
/// then checks the bad-input cases end to end.
@Suite("End to end: the quick start", .serialized)
struct QuickStartTests {
    @Test("a new user's quick start works and SIGTERM exits 0")
    func quickStart() throws {
        let work = try Harness.tempDir("qs")
        let listen = "127.0.0.1:\(Harness.freePort())"
        let admin = "127.0.0.1:\(Harness.freePort())"
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }

        var r = try cm("federation", "init", "--out", "fed", "--name", "Yangtze Delta")
        #expect(r.ok, "\(r.stderr)")
        #expect(Self.mode(work + "/fed/ca.key") == 0o600)
        r = try cm("federation", "issue", "--ca", "fed", "--city", "hangzhou", "--host", "localhost", "--out", "hz-cert")
        #expect(r.ok, "\(r.stderr)")
        #expect(Self.mode(work + "/hz-cert/node.key") == 0o600)
        // Our certificates pass OpenSSL's own chain verification.
        r = try Harness.openssl(["verify", "-CAfile", "fed/ca.pem", "hz-cert/node.pem"], cwd: work)
        #expect(r.ok && r.stdout.contains("OK"), "\(r.stdout)\(r.stderr)")
        r = try Harness.openssl(["x509", "-in", "hz-cert/node.pem", "-noout", "-ext", "subjectAltName,extendedKeyUsage"], cwd: work)
        #expect(r.stdout.contains("URI:urn:citymesh:city:hangzhou"))
        #expect(r.stdout.contains("TLS Web Server Authentication") && r.stdout.contains("TLS Web Client Authentication"))

        r = try cm("init", "--dir", "hz", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key",
                   "--listen", listen, "--admin", admin)
        #expect(r.ok, "\(r.stderr)")
        #expect(Self.mode(work + "/hz/admin.token") == 0o600)
        #expect(Self.mode(work + "/hz/tls/node.key") == 0o600)
        #expect(FileManager.default.fileExists(atPath: work + "/hz/citymesh.yaml"))

        // Not running yet: commands say so and how to start it.
        r = try cm("dataset", "list", "--dir", "hz")
        #expect(r.status != 0)
        #expect(r.stderr.contains("not running") && r.stderr.contains("citymesh serve --dir hz"), "\(r.stderr)")

        let daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")

        // A second serve on the same node is refused.
        r = try cm("serve", "--dir", "hz")
        #expect(r.status != 0 && r.stderr.contains("already running"), "\(r.stderr)")

        r = try cm("dataset", "create", "--dir", "hz", "air-quality", "--key", "station", "--field", "station:string", "--field", "district:string",
                   "--field", "pm25:double", "--field", "measured_at:timestamp")
        #expect(r.ok, "\(r.stderr)")
        try """
            station,district,pm25,measured_at
            S-001,Xihu,35.2,2026-11-29T08:00:00Z
            S-002,Binjiang,28.0,2026-11-29T08:00:00Z
            S-003,Gongshu,oops,2026-11-29T08:00:00Z
            S-004,Shangcheng,51.7,2026-11-29T08:00:00Z

            """.write(toFile: work + "/stations.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hz", "air-quality", "--csv", "stations.csv")
        #expect(r.status == 2, "one bad row makes the exit status 2: \(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("imported 3 rows") && r.stdout.contains("line 4:") && r.stdout.contains("pm25"), "\(r.stdout)")

        r = try cm("record", "put", "--dir", "hz", "air-quality", "S-001", "pm25=41.5", "district=Xihu")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "get", "--dir", "hz", "air-quality", "S-001", "--json")
        #expect(r.ok, "\(r.stderr)")
        let record = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let values = record?["values"] as? [String: Any]
        #expect(values?["pm25"] as? Double == 41.5)
        #expect(values?["measured_at"] as? String == "2026-11-29T08:00:00Z")
        #expect((record?["meta"] as? [String: Any])?["pm25"] != nil)

        r = try cm("record", "delete", "--dir", "hz", "air-quality", "S-001")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "get", "--dir", "hz", "air-quality", "S-001")
        #expect(r.status != 0 && r.stderr.contains("no record 'S-001'"))

        r = try Harness.citymesh(["record", "list", "air-quality", "--limit", "20"], cwd: work, env: ["CITYMESH_DIR": "hz"])
        #expect(r.ok, "\(r.stderr)")
        #expect(r.stdout.contains("S-002") && r.stdout.contains("S-004") && !r.stdout.contains("S-001"))

        r = try cm("export", "--dir", "hz", "air-quality", "--jsonl")
        #expect(r.ok)
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first == #"{"station":"S-002","district":"Binjiang","pm25":28.0,"measured_at":"2026-11-29T08:00:00Z"}"#)
        r = try cm("export", "--dir", "hz", "air-quality", "--csv")
        #expect(r.stdout.hasPrefix("station,district,pm25,measured_at\r\nS-002,Binjiang,28.0,"))
        r = try cm("export", "--dir", "hz", "air-quality", "--csv", "--out", "out.csv")
        #expect(r.ok, "\(r.stderr)")
        #expect((try? String(contentsOfFile: work + "/out.csv", encoding: .utf8))?.hasPrefix("station,district,pm25,measured_at\r\n") == true)
        #expect(!FileManager.default.fileExists(atPath: work + "/out.csv.partial"))
        // An export imports back unchanged.
        r = try cm("import", "--dir", "hz", "air-quality", "--csv", "out.csv")
        #expect(r.ok && r.stdout.contains("rejected 0"), "\(r.stdout)")

        r = try cm("dataset", "list", "--dir", "hz")
        #expect(r.ok && r.stdout.contains("hangzhou/air-quality"))
        r = try cm("dataset", "show", "--dir", "hz", "air-quality")
        #expect(r.ok && r.stdout.contains("pm25") && r.stdout.contains("double"))

        // Tokens: an auditor reads but cannot write; a revoked token stops working.
        r = try cm("token", "create", "--dir", "hz", "--role", "auditor", "--name", "audit")
        #expect(r.ok)
        let auditor = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        r = try Harness.citymesh(["dataset", "list", "--dir", "hz"], cwd: work, env: ["CITYMESH_TOKEN": auditor])
        #expect(r.ok)
        r = try cm("record", "put", "--dir", "hz", "--token", auditor, "air-quality", "S-9", "pm25=1")
        #expect(r.status != 0 && r.stderr.contains("read-only"), "\(r.stderr)")
        r = try cm("token", "list", "--dir", "hz", "--json")
        #expect(!r.stdout.contains(auditor))
        r = try cm("record", "list", "--dir", "hz", "--token", "cm_bad_token", "air-quality")
        #expect(r.status != 0 && r.stderr.contains("not valid"), "\(r.stderr)")

        #expect(daemon.terminate() == 0, "\(daemon.log)")
        #expect(daemon.log.contains("city=hangzhou") || daemon.log.contains("hangzhou"))

        // The data survives a restart.
        let again = try Daemon(dir: "hz", cwd: work)
        #expect(try again.waitReady(admin: admin), "\(again.log)")
        r = try cm("record", "get", "--dir", "hz", "air-quality", "S-004", "--json")
        #expect(r.ok && r.stdout.contains("51.7"))
        #expect(again.terminate() == 0)
    }

    static func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
    }
}
