import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Replication between three real `citymesh serve` processes over mutual TLS on loopback: the
/// owner's records reach the members (only the view), concurrent writes of a co-maintained field
/// converge and leave a listable conflict, a member killed with SIGKILL in the middle of a sync
/// catches up after restart, and the two ledgers reconcile with no gap.
@Suite("End to end: replication", .serialized)
struct ReplicationTests {
    static let policy = """
        shares:
          - id: registry-rw
            dataset: registry
            to: [shanghai, suzhou]
            fields: [id, name, status, district]
            write: [status]
            purpose: "co-maintained enterprise registry"
            legal_basis: "Delta registry MoU"
            valid_until: 2099-12-31
            on_revoke: keep

        """

    /// hangzhou's `registry` dataset (id, name, status, district and `extraFields`), shared as
    /// `registry-rw` under `policy` with shanghai and suzhou, who both accept; returns once the
    /// agreements are active.
    static func shareRegistry(_ work: String, extraFields: [String] = [], onRevoke: String = "keep", filter: String? = nil) throws {
        func cm(_ args: [String]) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        var r = try cm(["dataset", "create", "--dir", "hangzhou", "registry", "--key", "id", "--field", "id:string", "--field", "name:string",
                        "--field", "status:string", "--field", "district:string"] + extraFields.flatMap { ["--field", $0] })
        #expect(r.ok, "\(r.stderr)")
        for dir in ["shanghai", "suzhou"] {
            try "accept:\n  - from: hangzhou\n    share: registry-rw\n".write(toFile: work + "/\(dir)-policy.yaml", atomically: true, encoding: .utf8)
            r = try cm(["policy", "apply", "--dir", dir, "\(dir)-policy.yaml"])
            #expect(r.ok, "\(r.stdout)\(r.stderr)")
        }
        try policy.replacingOccurrences(of: "on_revoke: keep", with: "on_revoke: \(onRevoke)")
            .replacingOccurrences(of: "    write: [status]\n", with: "    write: [status]\n" + (filter.map { "    where: \"\($0)\"\n" } ?? ""))
            .write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm(["policy", "apply", "--dir", "hangzhou", "hz-policy.yaml"])
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try PeerTransportTests.eventually("both members accepted", seconds: 30) {
            try AgreementTests.state("hangzhou", work, share: "registry-rw", member: "shanghai") == "active"
                && AgreementTests.state("hangzhou", work, share: "registry-rw", member: "suzhou") == "active"
        }
    }

    static func export(_ dir: String, _ dataset: String, _ work: String) throws -> [String] {
        let r = try Harness.citymesh(["export", "--dir", dir, dataset, "--jsonl"], cwd: work)
        guard r.ok else { return [] }
        return r.stdout.split(separator: "\n").map(String.init)
    }

    static func record(_ line: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]) ?? [:]
    }

    @Test("owner → members by view; concurrent edits converge with a listed conflict; SIGKILL mid-sync loses nothing; reconcile finds no gap")
    func replication() throws {
        let work = try Harness.tempDir("replication")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 30, _ condition: () throws -> Bool) throws {
            try PeerTransportTests.eventually(what, seconds: seconds, condition)
        }
        let hz = try Daemon(dir: "hangzhou", cwd: work)
        let sh = try Daemon(dir: "shanghai", cwd: work)
        var sz = try Daemon(dir: "suzhou", cwd: work)
        for (d, c) in zip([hz, sh, sz], cities) { #expect(try d.waitReady(admin: c.admin), "\(d.log)") }

        try Self.shareRegistry(work, extraFields: ["tax_id:string"])
        var r: CommandResult

        // The owner writes; every member gets the records, without the field outside the view.
        var csv = "id,name,status,district,tax_id\n"
        for i in 1...50 { csv += "E-\(i),Enterprise \(i),active,Xihu,TAX-\(i)\n" }
        try csv.write(toFile: work + "/registry.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hangzhou", "registry", "--csv", "registry.csv")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("shanghai and suzhou hold all 50 records") {
            try Self.export("shanghai", "hangzhou/registry", work).count == 50 && Self.export("suzhou", "hangzhou/registry", work).count == 50
        }
        let first = Self.record(try Self.export("shanghai", "hangzhou/registry", work)[0])
        #expect(first["name"] as? String == "Enterprise 1" && first["tax_id"] == nil, "tax_id is outside the view: \(first)")
        r = try cm("dataset", "show", "--dir", "shanghai", "hangzhou/registry")
        #expect(r.ok && !r.stdout.contains("tax_id"), "\(r.stdout)")

        // A member may write only what the share grants, and never delete.
        r = try cm("record", "put", "--dir", "shanghai", "hangzhou/registry", "E-2", "name=Renamed")
        #expect(!r.ok && r.stderr.contains("does not let shanghai write name"), "\(r.stderr)")
        r = try cm("record", "delete", "--dir", "shanghai", "hangzhou/registry", "E-2")
        #expect(!r.ok && r.stderr.contains("only hangzhou can delete"), "\(r.stderr)")
        r = try cm("import", "--dir", "shanghai", "hangzhou/registry", "--csv", "registry.csv")
        #expect(!r.ok && r.stderr.contains("replicated here"), "\(r.stderr)")
        r = try cm("record", "put", "--dir", "shanghai", "hangzhou/registry", "E-NEW", "status=active")
        #expect(!r.ok && r.stderr.contains("cannot create new ones"), "members cannot create records: \(r.stderr)")

        // A granted write by a member reaches the owner and the other member.
        r = try cm("record", "put", "--dir", "shanghai", "hangzhou/registry", "E-3", "status=audited")
        #expect(r.ok, "\(r.stderr)")
        try eventually("shanghai's write reached hangzhou and suzhou") {
            let hzRecord = try cm("record", "get", "--dir", "hangzhou", "registry", "E-3", "--json").stdout
            let szRecord = try cm("record", "get", "--dir", "suzhou", "hangzhou/registry", "E-3", "--json").stdout
            return hzRecord.contains("audited") && szRecord.contains("audited")
        }

        // Record keys are in the ledgers only as keyed hashes: the share's key came with the
        // signed offer, so the owner's key for the share is the member's key for its replica, and
        // an auditor given it finds the member's write of E-3 (openssl computes the same HMAC).
        let shareKey = try cm("audit", "key", "--dir", "hangzhou", "registry", "--share", "registry-rw", "--json").stdout
        let memberKey = try cm("audit", "key", "--dir", "shanghai", "hangzhou/registry", "--json").stdout
        func field(_ json: String, _ name: String) -> String? { (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?[name] as? String }
        let k = field(shareKey, "key") ?? ""
        #expect(k.count == 64 && field(memberKey, "key") == k, "\(shareKey) vs \(memberKey)")
        #expect(field(try cm("audit", "key", "--dir", "hangzhou", "registry", "--json").stdout, "key") != k, "the owner's own writes use the dataset's key, not the share's")
        let hmac = try cm("audit", "hash", "--ledger-key", k, "E-3").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let viaOpenSSL = try Harness.run("/bin/sh", ["-c", "printf %s E-3 | openssl dgst -sha256 -mac HMAC -macopt hexkey:\(k) -r"], cwd: work).stdout
        #expect(hmac.count == 64 && viaOpenSSL.hasPrefix(hmac), "\(hmac) vs \(viaOpenSSL)")
        r = try cm("audit", "log", "--dir", "shanghai", "--record", "E-3", "--ledger-key", k, "--json")
        let written = r.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(written.count == 1 && written.first?["kind"] as? String == "record.written", "\(r.stdout)\(r.stderr)")
        #expect((written.first?["hashes"] as? [String: String])?["hmac.key"] == field(memberKey, "id"), "\(written)")
        r = try cm("audit", "log", "--dir", "shanghai", "--record", "E-3")
        #expect(!r.ok && r.stderr.contains("--ledger-key"), "\(r.stderr)")
        for dir in ["hangzhou", "shanghai"] {
            let all = try cm("audit", "log", "--dir", dir, "--json", "--limit", "10000").stdout
            #expect(!all.contains("key.sha256") && !all.contains("\"E-3\""), "no record key in the clear or as a plain hash in \(dir)'s ledger")
        }

        // Shanghai and Suzhou edit the same field of the same record at the same moment.
        var conflicted: String?
        for attempt in 1...4 where conflicted == nil {
            let key = "E-\(10 + attempt)"
            let a = Process(), b = Process()
            for (p, dir, value) in [(a, "shanghai", "suspended"), (b, "suzhou", "closed")] {
                p.executableURL = URL(fileURLWithPath: Harness.binary)
                p.arguments = ["record", "put", "--dir", dir, "hangzhou/registry", key, "status=\(value)"]
                p.currentDirectoryURL = URL(fileURLWithPath: work)
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
            }
            try a.run()
            try b.run()
            a.waitUntilExit()
            b.waitUntilExit()
            #expect(a.terminationStatus == 0 && b.terminationStatus == 0)
            try eventually("all three agree on \(key)") {
                let values = try ["hangzhou", "shanghai", "suzhou"].map { dir in
                    Self.record(try cm("record", "get", "--dir", dir, dir == "hangzhou" ? "registry" : "hangzhou/registry", key, "--json").stdout)["values"]
                        .flatMap { ($0 as? [String: Any])?["status"] as? String }
                }
                return values[0] != nil && values[0] != "active" && values.allSatisfy { $0 == values[0] }
            }
            r = try cm("record", "conflicts", "--dir", "hangzhou", "registry", "--json")
            if r.stdout.contains("\"\(key)\"") { conflicted = key }
        }
        let key = try #require(conflicted, "concurrent writes at two members must leave a conflict at the owner")
        r = try cm("record", "conflicts", "--dir", "hangzhou", "registry")
        #expect(r.ok && r.stdout.contains(key) && r.stdout.contains("status"), "\(r.stdout)")
        #expect(r.stdout.contains("suspended") && r.stdout.contains("closed"), "both values are shown: \(r.stdout)")
        r = try cm("record", "resolve", "--dir", "hangzhou", "registry", key, "status", "--value", "under-review")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("record", "conflicts", "--dir", "hangzhou", "registry")
        #expect(r.ok && !r.stdout.contains(key), "settled conflicts are no longer listed: \(r.stdout)")
        r = try cm("record", "resolve", "--dir", "hangzhou", "registry", key, "status", "--keep")
        #expect(!r.ok && r.stderr.contains("no open conflict"), "\(r.stderr)")
        try eventually("the resolution reached both members") {
            try ["shanghai", "suzhou"].allSatisfy { try cm("record", "get", "--dir", $0, "hangzhou/registry", key, "--json").stdout.contains("under-review") }
        }
        for dir in ["shanghai", "suzhou"] {
            r = try cm("record", "conflicts", "--dir", dir, "hangzhou/registry", "--json")
            #expect(r.ok && !r.stdout.contains("\"key\" : \"\(key)\""), "the replicated resolution settles the conflict at \(dir) too: \(r.stdout)")
        }
        // Listing is a read: a conflict a later write superseded is marked settled by the node
        // itself, within a few seconds, not by whoever looked (threat model G15).
        for dir in ["shanghai", "suzhou"] {
            let settled = try cm("record", "conflicts", "--dir", dir, "hangzhou/registry", "--all", "--json").stdout.contains("\"key\" : \"\(key)\"")
            guard settled else { continue }
            try eventually("\(dir) marks its conflict on \(key) settled by the later write", seconds: 20) {
                let all = try cm("record", "conflicts", "--dir", dir, "hangzhou/registry", "--all", "--json").stdout
                return all.contains("a later write")
            }
        }

        // A member killed with SIGKILL in the middle of a large sync loses nothing.
        csv = "id,name,status,district,tax_id\n"
        for i in 1...20_000 { csv += "B-\(i),Bulk \(i),active,Binjiang,T\(i)\n" }
        try csv.write(toFile: work + "/bulk.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hangzhou", "registry", "--csv", "bulk.csv")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("suzhou started receiving the bulk records") { try Self.export("suzhou", "hangzhou/registry", work).count > 50 }
        kill(sz.process.processIdentifier, SIGKILL)
        sz.process.waitUntilExit()
        func swim(_ dir: String, _ city: String) throws -> String {
            ((try PeerTransportTests.peers(dir, work)["membership"] as? [String: String])?[city]) ?? ""
        }
        try eventually("hangzhou's SWIM gossip suspects the killed suzhou", seconds: 30) {
            let s = try swim("hangzhou", "suzhou")
            return s.hasPrefix("suspect") || s.hasPrefix("dead")
        }
        sz = try Daemon(dir: "suzhou", cwd: work)
        #expect(try sz.waitReady(admin: cities[2].admin), "\(sz.log)")
        try eventually("suzhou caught up after restart", seconds: 90) { try Self.export("suzhou", "hangzhou/registry", work).count == 20_050 }
        try eventually("shanghai has everything", seconds: 60) { try Self.export("shanghai", "hangzhou/registry", work).count == 20_050 }
        try eventually("suzhou refuted its suspicion and is alive again for hangzhou", seconds: 40) { try swim("hangzhou", "suzhou").hasPrefix("alive") }

        // Convergence: the members' exports are byte-identical, and match the owner's view.
        let shExport = try Self.export("shanghai", "hangzhou/registry", work)
        let szExport = try Self.export("suzhou", "hangzhou/registry", work)
        #expect(shExport.count == szExport.count)
        let firstDifference = zip(shExport, szExport).first { $0 != $1 }
        #expect(firstDifference == nil, "shanghai and suzhou differ: \(String(describing: firstDifference))")
        let hzExport = try Self.export("hangzhou", "registry", work)
        #expect(hzExport.count == shExport.count)
        for (o, m) in zip(hzExport, shExport).prefix(200) {
            var owner = Self.record(o)
            owner["tax_id"] = nil
            #expect(NSDictionary(dictionary: owner).isEqual(to: Self.record(m)), "\(o) vs \(m)")
        }

        // Sync state is visible.
        r = try cm("peers", "--dir", "shanghai")
        #expect(r.ok && r.stdout.contains("hangzhou/registry-rw") && r.stdout.contains("in sync"), "\(r.stdout)")

        // Receipts: every exchange between hangzhou and suzhou — killed in the middle of one — is
        // in both ledgers, signed by both; and between hangzhou and shanghai (a P-256 node).
        func reconciled(_ member: String, _ bundle: String) throws {
            var last = ""
            try eventually("hangzhou's and \(member)'s ledgers reconcile with no gap", seconds: 40) {
                _ = try cm("audit", "export", "--dir", "hangzhou", "--out", "hz.bundle")
                _ = try cm("audit", "export", "--dir", member, "--out", bundle)
                let rec = try cm("audit", "reconcile", "hz.bundle", bundle, "--ca", "fed/ca.pem")
                last = rec.stdout + rec.stderr
                return rec.ok && rec.stdout.contains("exchanges between hangzhou and \(member) are in both ledgers") && !rec.stdout.hasPrefix("0 ")
            }
            #expect(!last.contains("only in"), "\(last)")
        }
        try reconciled("suzhou", "sz.bundle")
        // Every receipt names the agreement it was exchanged under, and that agreement was in force.
        let named = try cm("audit", "reconcile", "hz.bundle", "sz.bundle", "--ca", "fed/ca.pem", "--json")
        let namedJSON = try JSONSerialization.jsonObject(with: Data(named.stdout.utf8)) as? [String: Any]
        #expect(named.ok && namedJSON?["withoutAgreement"] as? Int == 0 && (namedJSON?["outsideAgreement"] as? [Any])?.isEmpty == true, "\(named.stdout.suffix(600))")
        #expect((namedJSON?["batchesReceived"] as? Int ?? 0) > 0 && (namedJSON?["receivedNotSent"] as? [Any])?.isEmpty == true, "\(named.stdout.suffix(600))")
        // Every batch suzhou took from hangzhou is in hangzhou's ledger as sent to suzhou (the
        // same batch hash), receipt or not.
        func hashes(_ dir: String, kind: String, peer: String) throws -> Set<String> {
            let out = try cm("audit", "log", "--dir", dir, "--kind", kind, "--json", "--limit", "10000").stdout
            return Set(out.split(separator: "\n").compactMap { line -> String? in
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], o["peer"] as? String == peer else { return nil }
                return (o["hashes"] as? [String: String])?["batch.sha256"]
            })
        }
        let receivedAtSuzhou = try hashes("suzhou", kind: "exchange.received", peer: "hangzhou")
        let sentByHangzhou = try hashes("hangzhou", kind: "exchange.sent", peer: "suzhou")
        #expect(!receivedAtSuzhou.isEmpty && receivedAtSuzhou.isSubset(of: sentByHangzhou), "received \(receivedAtSuzhou.count), sent \(sentByHangzhou.count)")
        try reconciled("shanghai", "sh.bundle")
        r = try cm("audit", "log", "--dir", "shanghai", "--kind", "exchange.receipt", "--json")
        #expect(r.ok && r.stdout.contains("exchange.receipt"), "shanghai's exchanges are receipted too: \(r.stdout.prefix(300))")
        // A bundle with an exchange removed is caught.
        r = try cm("audit", "reconcile", "hz.bundle", "hz.bundle")
        #expect(!r.ok && r.stderr.contains("both bundles are hangzhou's"), "\(r.stderr)")

        // A delete replicates; once every party has acknowledged it, every node collects the tombstone.
        r = try cm("record", "delete", "--dir", "hangzhou", "registry", "E-1")
        #expect(r.ok, "\(r.stderr)")
        try eventually("E-1 is gone at both members") {
            try ["shanghai", "suzhou"].allSatisfy { !(try cm("record", "get", "--dir", $0, "hangzhou/registry", "E-1").ok) }
        }
        func rows(_ dir: String, key: String) throws -> String {
            try Harness.run("/usr/bin/sqlite3", ["\(dir)/citymesh.db", "SELECT COUNT(*) FROM records WHERE key = '\(key)'"], cwd: work).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try rows("hangzhou", key: "E-2") == "1")
        try eventually("the tombstone of E-1 is collected on all three nodes", seconds: 60) {
            try ["hangzhou", "shanghai", "suzhou"].allSatisfy { try rows($0, key: "E-1") == "0" }
        }
        #expect(try rows("shanghai", key: "E-2") == "1", "only the deleted record is collected")

        // An agreement with on_revoke: purge takes the member's replica with it when revoked.
        try Self.policy.replacingOccurrences(of: "on_revoke: keep", with: "on_revoke: purge").write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("shanghai accepted the new terms") {
            try AgreementTests.list("shanghai", work).contains { $0["onRevoke"] as? String == "purge" && $0["state"] as? String == "active" }
        }
        #expect(try Self.export("shanghai", "hangzhou/registry", work).count == 20_049, "new terms on the same share keep the replica")
        r = try cm("agreement", "revoke", "--dir", "hangzhou", "registry-rw", "--city", "shanghai")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("shanghai's replica is purged") { !(try cm("dataset", "list", "--dir", "shanghai").stdout.contains("hangzhou/registry")) }
        r = try cm("audit", "log", "--dir", "shanghai", "--kind", "share.purged", "--json")
        #expect(r.ok && r.stdout.contains("\"records\":20049"), "\(r.stdout)")
        #expect(try Self.export("suzhou", "hangzhou/registry", work).count == 20_049, "suzhou keeps its replica")

        for d in [hz, sh, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }
}
