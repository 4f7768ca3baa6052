import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Policies through the real binary and a running node: validate, diff, apply, show, explain,
/// roles, the ledger, and hot reload on SIGHUP.
@Suite("End to end: sharing policies", .serialized)
struct PolicyLifecycleTests {
    static let policy = """
        shares:
          - id: delta-air
            dataset: air-quality
            to: [shanghai, suzhou]
            fields: [station, district, pm25]
            where: "district != 'Restricted' and pm25 >= 0"
            purpose: "regional air-quality forecasting"
            legal_basis: "Yangtze Delta environmental data agreement 2026-07"
            valid_until: 2099-12-31
            on_revoke: keep
        accept:
          - from: shanghai
            share: sh-enterprises

        """

    @Test("validate with line:column, diff, apply (admin only), show, explain, ledger; SIGHUP reloads the policy file")
    func lifecycle() throws {
        let work = try Harness.tempDir("policy")
        let admin = "127.0.0.1:\(Harness.freePort())"
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        _ = try cm("federation", "init", "--out", "fed", "--name", "Test")
        _ = try cm("federation", "issue", "--ca", "fed", "--city", "hangzhou", "--out", "hz-cert")
        var r = try cm("init", "--dir", "hz", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hz-cert/node.pem", "--key", "hz-cert/node.key",
                       "--listen", "127.0.0.1:\(Harness.freePort())", "--admin", admin)
        #expect(r.ok, "\(r.stderr)")
        let daemon = try Daemon(dir: "hz", cwd: work)
        #expect(try daemon.waitReady(admin: admin), "\(daemon.log)")
        r = try cm("dataset", "create", "--dir", "hz", "air-quality", "--key", "station",
                   "--field", "station:string", "--field", "district:string", "--field", "pm25:double", "--field", "operator_phone:string")
        #expect(r.ok, "\(r.stderr)")

        // Nothing applied yet: default deny.
        r = try cm("policy", "explain", "--dir", "hz", "--city", "shanghai", "--dataset", "air-quality")
        #expect(r.ok && r.stdout.contains("denied by default"), "\(r.stdout)\(r.stderr)")

        // A file with two mistakes: both reported as FILE:LINE:COLUMN, exit 1, nothing applied.
        let bad = Self.policy.replacingOccurrences(of: "pm25 >= 0", with: "pm25 >= 'high'").replacingOccurrences(of: "on_revoke: keep", with: "on_revoke: maybe")
        try bad.write(toFile: work + "/bad.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "validate", "--dir", "hz", "bad.yaml")
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("bad.yaml:6:50: error: in 'where': 'pm25' is a double field"), "\(r.stderr)")
        #expect(r.stderr.contains("bad.yaml:10:16: error: on_revoke is 'keep'"), "\(r.stderr)")
        r = try cm("policy", "apply", "--dir", "hz", "bad.yaml")
        #expect(r.status == 1 && r.stderr.contains("nothing was applied"), "\(r.stderr)")
        r = try cm("policy", "validate", "--dir", "hz", "missing.yaml")
        #expect(!r.ok && r.stderr.contains("cannot read 'missing.yaml'"), "\(r.stderr)")

        try Self.policy.write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "validate", "--dir", "hz", "hz-policy.yaml")
        #expect(r.ok && r.stdout.contains("OK"), "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("hz-policy.yaml: warning: share 'delta-air': shanghai is not known to this node yet"), "\(r.stderr)")
        r = try cm("policy", "diff", "--dir", "hz", "hz-policy.yaml")
        #expect(r.ok && r.stdout.contains("delta-air → shanghai: will be offered 'air-quality' (read)"), "\(r.stdout)\(r.stderr)")

        // Auditors may look but not apply.
        r = try cm("token", "create", "--dir", "hz", "--role", "auditor")
        let auditor = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        r = try cm("policy", "apply", "--dir", "hz", "hz-policy.yaml", "--token", auditor)
        #expect(!r.ok && r.stderr.contains("read-only"), "\(r.stderr)")

        r = try cm("policy", "apply", "--dir", "hz", "hz-policy.yaml")
        #expect(r.ok && r.stdout.contains("applied as version 1"), "\(r.stdout)\(r.stderr)")
        r = try cm("policy", "apply", "--dir", "hz", "hz-policy.yaml")
        #expect(r.ok && r.stdout.contains("unchanged: version 1"), "\(r.stdout)\(r.stderr)")
        r = try cm("policy", "show", "--dir", "hz", "--token", auditor)
        #expect(r.ok && r.stdout == Self.policy, "the document exactly as applied: \(r.stdout)")
        #expect(r.stderr.contains("version 1 of 1 (in force), applied by token:"), "\(r.stderr)")
        #expect(r.stderr.contains("— hangzhou.citymesh/policy "), "signed: \(r.stderr)")

        r = try cm("policy", "explain", "--dir", "hz", "--city", "shanghai", "--dataset", "air-quality", "--json")
        let x = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(x["share"] as? String == "delta-air" && x["active"] as? Bool == false, "\(r.stdout)")
        #expect((x["decision"] as? String)?.contains("has not accepted") == true)
        let access = (x["fields"] as? [[String: Any]] ?? []).reduce(into: [String: String]()) { $0[$1["field"] as? String ?? ""] = $1["access"] as? String }
        #expect(access == ["station": "read", "district": "read", "pm25": "read", "operator_phone": "none"])
        r = try cm("record", "put", "--dir", "hz", "air-quality", "S-1", "district=Xihu", "pm25=41.5", "operator_phone=+86 571 0000")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("policy", "preview", "--dir", "hz", "--city", "shanghai", "--dataset", "air-quality", "--key", "S-1")
        #expect(r.ok && r.stdout.contains("shanghai is sent nothing of S-1: share 'delta-air' is offered to shanghai but shanghai has not accepted it"), "\(r.stdout)\(r.stderr)")
        r = try cm("policy", "explain", "--dir", "hz", "--city", "nanjing", "--dataset", "air-quality")
        #expect(r.ok && r.stdout.contains("denied by default"), "\(r.stdout)")
        r = try cm("policy", "explain", "--dir", "hz", "--city", "shanghai", "--dataset", "nope")
        #expect(!r.ok && r.stderr.contains("no dataset 'nope'"), "\(r.stderr)")

        // The ledger holds the application: who, and the document's SHA-256.
        let sha = try Harness.run("/usr/bin/sha256sum", ["hz-policy.yaml"], cwd: work).stdout.prefix(64)
        r = try cm("audit", "log", "--dir", "hz", "--kind", "policy", "--json")
        #expect(r.stdout.contains("\"document.sha256\":\"\(sha)\"") && r.stdout.contains("policy.applied"), "\(r.stdout)")

        // Hot reload: the config names the file; editing it and sending SIGHUP changes explain.
        let config = try String(contentsOfFile: work + "/hz/citymesh.yaml", encoding: .utf8)
        try config.replacingOccurrences(of: "policy: null", with: "policy: \"../hz-policy.yaml\"").write(toFile: work + "/hz/citymesh.yaml", atomically: true, encoding: .utf8)
        try Self.policy.replacingOccurrences(of: "fields: [station, district, pm25]", with: "fields: [station, district, pm25, operator_phone]")
            .write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        try PeerTransportTests.eventually("the edited policy is in force") {
            try cm("policy", "explain", "--dir", "hz", "--city", "suzhou", "--dataset", "air-quality").stdout.contains("operator_phone  string  read")
        }
        // A broken edit is refused on SIGHUP; the policy in force stays and the node says why.
        try bad.write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        kill(daemon.process.processIdentifier, SIGHUP)
        try PeerTransportTests.eventually("the refusal is logged") { daemon.log.contains("was not applied; the policy in force stays") }
        r = try cm("policy", "show", "--dir", "hz")
        #expect(r.stderr.contains("version 2 of 2 (in force)"), "\(r.stderr)")
        r = try cm("audit", "log", "--dir", "hz", "--kind", "policy")
        #expect(r.stdout.contains("policy.rejected"), "\(r.stdout)")
        #expect(daemon.terminate() == 0, "\(daemon.log)")
    }
}
