import Foundation
import Testing

/// Every bad input through the real binary: a one-line error saying what to do, a non-zero
/// exit, and nothing half-written.
@Suite("End to end: bad input", .serialized)
struct BadInputTests {
    /// A federation, a hangzhou node and a running daemon with one dataset.
    final class Node {
        let work: String
        let admin: String
        let daemon: Daemon

        init() throws {
            work = try Harness.tempDir("bad")
            admin = "127.0.0.1:\(Harness.freePort())"
            for args in [
                ["federation", "init", "--out", "fed", "--name", "Test"],
                ["federation", "issue", "--ca", "fed", "--city", "hangzhou", "--host", "localhost", "--out", "hz-cert"],
                ["init", "--dir", "hz", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key",
                 "--listen", "127.0.0.1:\(Harness.freePort())", "--admin", admin],
            ] {
                let r = try Harness.citymesh(args, cwd: work)
                guard r.ok else { throw NSError(domain: "setup", code: 1, userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
            }
            daemon = try Daemon(dir: "hz", cwd: work)
            guard try daemon.waitReady(admin: admin) else { throw NSError(domain: "setup", code: 2, userInfo: [NSLocalizedDescriptionKey: daemon.log]) }
            _ = try cm("dataset", "create", "--dir", "hz", "air-quality", "--key", "station", "--field", "station:string", "--field", "pm25:double")
        }

        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }

        deinit { _ = daemon.terminate() }
    }

    /// One line on stderr starting with `error:`, and a non-zero exit.
    func expectClearError(_ r: CommandResult, mentions: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0, "expected a failure, got: \(r.stdout)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(mentions), "stderr should mention '\(mentions)': \(r.stderr)", sourceLocation: sourceLocation)
    }

    @Test("dataset and record errors")
    func dataErrors() throws {
        let node = try Node()
        expectClearError(try node.cm("dataset", "create", "--dir", "hz", "air-quality", "--key", "station", "--field", "station:string"), mentions: "already exists")
        expectClearError(try node.cm("dataset", "create", "--dir", "hz", "Bad Name", "--key", "k", "--field", "k:string"), mentions: "invalid dataset name")
        expectClearError(try node.cm("dataset", "create", "--dir", "hz", "x", "--key", "k", "--field", "k:float"), mentions: "unknown type 'float'")
        expectClearError(try node.cm("dataset", "show", "--dir", "hz", "nope"), mentions: "no dataset 'hangzhou/nope'")
        expectClearError(try node.cm("record", "put", "--dir", "hz", "air-quality", "S-1", "pm10=3"), mentions: "unknown field 'pm10'")
        expectClearError(try node.cm("record", "put", "--dir", "hz", "air-quality", "S-1", "pm25=high"), mentions: "not a double")
        expectClearError(try node.cm("record", "put", "--dir", "hz", "air-quality", String(repeating: "k", count: 300), "pm25=1"), mentions: "limit is 256 bytes")
        expectClearError(try node.cm("record", "delete", "--dir", "hz", "air-quality", "never-was"), mentions: "no record 'never-was'")
        expectClearError(try node.cm("import", "--dir", "hz", "air-quality", "--csv", "missing.csv"), mentions: "does not exist")
        try "station,pm10\nS-1,3\n".write(toFile: node.work + "/wrong-header.csv", atomically: true, encoding: .utf8)
        expectClearError(try node.cm("import", "--dir", "hz", "air-quality", "--csv", "wrong-header.csv"), mentions: "unknown field 'pm10'")
        // Nothing the refused commands sent was stored.
        let list = try node.cm("record", "list", "--dir", "hz", "air-quality", "--json")
        #expect(list.ok && list.stdout.isEmpty, "\(list.stdout)")
    }

    @Test("a bad row never costs the good ones; invalid UTF-8 and broken JSON lines are named")
    func importRows() throws {
        let node = try Node()
        var csv = Data("station,pm25\nS-1,1.5\nS-2,".utf8)
        csv.append(contentsOf: [0xff, 0xfe])
        csv.append(Data("\nS-3,\"unterminated\nS-4,4\n".utf8))
        try csv.write(to: URL(fileURLWithPath: node.work + "/mixed.csv"))
        var r = try node.cm("import", "--dir", "hz", "air-quality", "--csv", "mixed.csv")
        #expect(r.status == 2)
        #expect(r.stdout.contains("imported 1 rows") && r.stdout.contains("line 3: invalid UTF-8"), "\(r.stdout)")
        try "{\"station\":\"J-1\",\"pm25\":2}\n{\"station\":\"J-2\",\"pm25\":\n[1,2]\n{\"station\":\"J-3\",\"pm25\":\"abc\"}\n"
            .write(toFile: node.work + "/mixed.jsonl", atomically: true, encoding: .utf8)
        r = try node.cm("import", "--dir", "hz", "air-quality", "--jsonl", "mixed.jsonl")
        #expect(r.status == 2)
        #expect(r.stdout.contains("imported 1 rows") && r.stdout.contains("line 2:") && r.stdout.contains("line 3:") && r.stdout.contains("line 4:"), "\(r.stdout)")
        r = try node.cm("export", "--dir", "hz", "air-quality", "--csv")
        #expect(r.stdout == "station,pm25\r\nJ-1,2.0\r\nS-1,1.5\r\n")
    }

    @Test("tokens and node errors")
    func nodeErrors() throws {
        let node = try Node()
        expectClearError(try Harness.citymesh(["dataset", "list", "--dir", "hz"], cwd: node.work, env: ["CITYMESH_TOKEN": "cm_nope"]), mentions: "not valid")
        expectClearError(try node.cm("token", "revoke", "--dir", "hz", "deadbeef"), mentions: "no active token")
        expectClearError(try node.cm("dataset", "list"), mentions: "CITYMESH_DIR")
        expectClearError(try node.cm("dataset", "list", "--dir", "nowhere"), mentions: "citymesh init")
        expectClearError(try node.cm("serve", "--dir", "hz"), mentions: "already running")
        expectClearError(try node.cm("peers", "--dir", "nowhere"), mentions: "citymesh init")
        // A second node on the first one's peer port: refused at start, saying which setting to change.
        let busy = try String(contentsOfFile: node.work + "/hz/citymesh.yaml", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("listen:") }.map { String($0.dropFirst(7)).trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\"", with: "") } ?? ""
        _ = try node.cm("federation", "issue", "--ca", "fed", "--city", "shanghai", "--out", "sh-cert")
        _ = try node.cm("init", "--dir", "sh", "--city", "shanghai", "--ca", "fed/ca.pem", "--cert", "sh-cert/node.pem", "--key", "sh-cert/node.key",
                        "--listen", busy, "--admin", "127.0.0.1:\(Harness.freePort())")
        // serve logs its start-up first; the last line is the error.
        let r = try node.cm("serve", "--dir", "sh")
        #expect(r.status != 0)
        let last = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("error: ") && last.contains("cannot listen for peers on \(busy)") && last.contains("change 'listen'"), "\(r.stderr)")
        expectClearError(try node.cm("init", "--dir", "hz", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem",
                                     "--key", "hz-cert/node.key"), mentions: "already holds a node")
    }

    @Test("identity errors leave no node behind")
    func identityErrors() throws {
        let work = try Harness.tempDir("id")
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        _ = try cm("federation", "init", "--out", "fed", "--name", "Test")
        _ = try cm("federation", "init", "--out", "other", "--name", "Other")
        _ = try cm("federation", "issue", "--ca", "fed", "--city", "hangzhou", "--out", "hz-cert")
        _ = try cm("federation", "issue", "--ca", "fed", "--city", "shanghai", "--out", "sh-cert")
        expectClearError(try cm("federation", "issue", "--ca", "fed", "--city", "Hang Zhou", "--out", "x"), mentions: "invalid city slug")
        expectClearError(try cm("federation", "init", "--out", "fed", "--name", "Again"), mentions: "already holds a federation CA")
        let base = ["--city", "hangzhou", "--listen", "127.0.0.1:7001", "--admin", "127.0.0.1:7101"]
        func initNode(_ ca: String, _ cert: String, _ key: String) throws -> CommandResult {
            try Harness.citymesh(["init", "--dir", "hz", "--ca", ca, "--cert", cert, "--key", key] + base, cwd: work)
        }
        expectClearError(try initNode("fed/ca.pem", "hz-cert/node.pem", "sh-cert/node.key"), mentions: "does not belong to the certificate")
        expectClearError(try initNode("other/ca.pem", "hz-cert/node.pem", "hz-cert/node.key"), mentions: "does not chain to the federation CA")
        expectClearError(try initNode("fed/ca.pem", "sh-cert/node.pem", "sh-cert/node.key"), mentions: "is for city 'shanghai'")
        expectClearError(try initNode("fed/ca.pem", "missing.pem", "hz-cert/node.key"), mentions: "does not exist")
        // Peering input: bad seeds, its own city as a seed, a CRL another CA signed.
        expectClearError(try Harness.citymesh(["init", "--dir", "hz", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key", "--seed", "127.0.0.1:7002"] + base, cwd: work), mentions: "CITY@HOST:PORT")
        expectClearError(try Harness.citymesh(["init", "--dir", "hz", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key", "--seed", "hangzhou@127.0.0.1:7002"] + base, cwd: work), mentions: "own city")
        _ = try cm("federation", "issue", "--ca", "other", "--city", "suzhou", "--out", "sz-other")
        _ = try cm("federation", "revoke", "--ca", "other", "--cert", "sz-other/node.pem")
        expectClearError(try Harness.citymesh(["init", "--dir", "hz", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key", "--crl", "other/crl.pem"] + base, cwd: work), mentions: "not by the federation CA")
        expectClearError(try cm("federation", "revoke", "--ca", "fed", "--cert", "sz-other/node.pem"), mentions: "was not issued by the CA")
        expectClearError(try cm("federation", "revoke", "--ca", "fed", "--cert", "missing.pem"), mentions: "does not exist")
        #expect(!FileManager.default.fileExists(atPath: work + "/fed/crl.pem"), "a refused revoke writes no CRL")
        #expect(!FileManager.default.fileExists(atPath: work + "/hz"), "a refused init must leave nothing behind")
        let entries = try FileManager.default.contentsOfDirectory(atPath: work)
        #expect(!entries.contains { $0.contains(".init-") }, "no staging directory is left behind: \(entries)")
    }

    @Test("every command's --help shows an example")
    func help() throws {
        let work = try Harness.tempDir("help")
        for cmd in [["federation", "init"], ["federation", "issue"], ["init"], ["serve"], ["dataset", "create"], ["dataset", "list"],
                    ["dataset", "show"], ["dataset", "add-field"], ["record", "put"], ["record", "get"], ["record", "delete"],
                    ["record", "list"], ["import"], ["export"], ["token", "create"], ["token", "list"], ["token", "revoke"],
                    ["peers"], ["federation", "revoke"], ["audit", "log"], ["audit", "verify"], ["audit", "checkpoint"], ["audit", "vkey"],
                    ["audit", "prove"], ["audit", "consistency"], ["audit", "export"], ["audit", "verify-bundle"], ["audit", "verify-proof"],
                    ["peers", "list"], ["peers", "checkpoint"], ["policy", "validate"], ["policy", "diff"], ["policy", "apply"],
                    ["policy", "show"], ["policy", "explain"], ["policy", "preview"], ["agreement", "list"], ["agreement", "accept"], ["agreement", "reject"], ["agreement", "revoke"]] {
            let r = try Harness.citymesh(cmd + ["--help"], cwd: work)
            #expect(r.ok && r.stdout.contains("citymesh \(cmd.joined(separator: " "))"), "\(cmd)")
            #expect(r.stdout.contains("Example"), "\(cmd) --help has no example")
        }
    }
}
