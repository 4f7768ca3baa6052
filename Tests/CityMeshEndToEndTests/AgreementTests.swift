import Foundation
import Testing

/// Agreements between real daemons over mutual TLS: offers made by the owner's policy, accepted
/// (by hand or by an accept rule), rejected, revoked (keep and purge), expired, delivered to a
/// member that was offline, kept across restarts, signed by both sides and in both ledgers.
@Suite("End to end: sharing agreements", .serialized)
struct AgreementTests {
    static func policy(briefUntil: String, registry: Bool = true) -> String {
        """
        shares:
          - id: delta-air
            dataset: air-quality
            to: [shanghai, suzhou]
            fields: [station, district, pm25]
            where: "pm25 >= 0"
            purpose: "regional air-quality forecasting"
            legal_basis: "Yangtze Delta environmental data agreement 2026-07"
            valid_until: 2099-12-31
            on_revoke: keep
        \(registry ? """
          - id: registry-rw
            dataset: registry
            to: [shanghai]
            fields: [id, name, status]
            write: [status]
            purpose: "co-maintained enterprise registry"
            legal_basis: "Delta registry MoU"
            valid_until: 2099-12-31
            on_revoke: purge
        """ : "")
          - id: brief
            dataset: permits
            to: [shanghai]
            fields: [id]
            purpose: "a short trial"
            legal_basis: "trial"
            valid_until: \(briefUntil)
            on_revoke: keep

        """
    }

    static func list(_ dir: String, _ work: String) throws -> [[String: Any]] {
        let r = try Harness.citymesh(["agreement", "list", "--dir", dir, "--json"], cwd: work)
        guard r.ok, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else { return [] }
        return json["agreements"] as? [[String: Any]] ?? []
    }

    static func state(_ dir: String, _ work: String, share: String, member: String) throws -> String? {
        try list(dir, work).last { $0["share"] as? String == share && $0["member"] as? String == member }?["state"] as? String
    }

    @Test("offer → accept → active; accept rule; reject; offline member; revoke keep and purge; expiry; restart; both ledgers")
    func lifecycle() throws {
        let work = try Harness.tempDir("agreements")
        // hangzhou and suzhou have Ed25519 keys, shanghai P-256: both kinds sign agreements.
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) throws { try PeerTransportTests.eventually(what, seconds: seconds, condition) }
        var hz = try Daemon(dir: "hangzhou", cwd: work)
        var sh = try Daemon(dir: "shanghai", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        #expect(try sh.waitReady(admin: cities[1].admin), "\(sh.log)")
        for (name, fields) in [("air-quality", ["station:string", "district:string", "pm25:double"]), ("registry", ["id:string", "name:string", "status:string"]), ("permits", ["id:string"])] {
            let r = try Harness.citymesh(["dataset", "create", "--dir", "hangzhou", name, "--key", String(fields[0].prefix { $0 != ":" })] + fields.flatMap { ["--field", $0] }, cwd: work)
            #expect(r.ok, "\(r.stderr)")
        }
        // shanghai takes the registry share as soon as it is offered.
        try "accept:\n  - from: hangzhou\n    share: registry-rw\n".write(toFile: work + "/sh-policy.yaml", atomically: true, encoding: .utf8)
        var r = try cm("policy", "apply", "--dir", "shanghai", "sh-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")

        try eventually("shanghai connected to hangzhou") {
            PeerTransportTests.peer(try PeerTransportTests.peers("hangzhou", work), "shanghai")?["state"] as? String == "connected"
        }
        let briefUntil = RFC3339Text.after(seconds: 25)
        try Self.policy(briefUntil: briefUntil).write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")

        try eventually("shanghai has the three offers, the registry already accepted by its rule") {
            try Self.state("shanghai", work, share: "delta-air", member: "shanghai") == "offered"
                && Self.state("shanghai", work, share: "registry-rw", member: "shanghai") == "active"
                && Self.state("shanghai", work, share: "brief", member: "shanghai") == "offered"
        }
        try eventually("hangzhou sees the registry accepted") { try Self.state("hangzhou", work, share: "registry-rw", member: "shanghai") == "active" }
        r = try cm("policy", "explain", "--dir", "hangzhou", "--city", "shanghai", "--dataset", "air-quality")
        #expect(r.stdout.contains("has not accepted"), "a member that has not accepted receives nothing: \(r.stdout)")

        r = try cm("agreement", "accept", "--dir", "shanghai", "hangzhou/delta-air")
        #expect(r.ok && r.stdout.contains("hangzhou/delta-air → shanghai: ACTIVE"), "\(r.stdout)\(r.stderr)")
        r = try cm("agreement", "accept", "--dir", "shanghai", "hangzhou/brief")
        #expect(r.ok, "\(r.stderr)")
        try eventually("hangzhou sees delta-air accepted") { try Self.state("hangzhou", work, share: "delta-air", member: "shanghai") == "active" }
        func replicatesBrief() throws -> Bool {
            let shares = (try PeerTransportTests.peers("hangzhou", work)["replication"] as? [[String: Any]]) ?? []
            return shares.contains { $0["share"] as? String == "hangzhou/brief" }
        }
        try eventually("hangzhou replicates the brief share to shanghai") { try replicatesBrief() }
        r = try cm("policy", "explain", "--dir", "hangzhou", "--city", "shanghai", "--dataset", "air-quality")
        #expect(r.stdout.contains("ACTIVE") && r.stdout.contains("granted by share 'delta-air'"), "\(r.stdout)")
        let shRow = try #require(try Self.list("hangzhou", work).last { $0["share"] as? String == "delta-air" && $0["member"] as? String == "shanghai" })
        #expect((shRow["ownerSignature"] as? String)?.hasPrefix("hangzhou ed25519 ") == true)
        #expect((shRow["memberSignature"] as? String)?.hasPrefix("shanghai p256 ") == true, "\(shRow)")

        // Bad input: no such offer, a malformed reference, an auditor.
        r = try cm("agreement", "accept", "--dir", "shanghai", "hangzhou/nope")
        #expect(!r.ok && r.stderr.contains("has offered no share 'nope'"), "\(r.stderr)")
        r = try cm("agreement", "accept", "--dir", "shanghai", "delta-air")
        #expect(!r.ok && r.stderr.contains("OWNER/SHARE"), "\(r.stderr)")

        // suzhou was offline when the offer was made: it gets it when it comes up, and rejects it.
        let sz = try Daemon(dir: "suzhou", cwd: work)
        #expect(try sz.waitReady(admin: cities[2].admin), "\(sz.log)")
        try eventually("suzhou received the offer made while it was offline") { try Self.state("suzhou", work, share: "delta-air", member: "suzhou") == "offered" }
        r = try cm("agreement", "reject", "--dir", "suzhou", "hangzhou/delta-air")
        #expect(r.ok && r.stdout.contains("REJECTED"), "\(r.stdout)\(r.stderr)")
        try eventually("hangzhou sees suzhou's rejection") { try Self.state("hangzhou", work, share: "delta-air", member: "suzhou") == "rejected" }

        // Revocation by hand (on_revoke: keep).
        r = try cm("agreement", "revoke", "--dir", "hangzhou", "delta-air", "--city", "shanghai")
        #expect(r.ok && r.stdout.contains("REVOKED"), "\(r.stdout)\(r.stderr)")
        try eventually("shanghai sees the revocation") { try Self.state("shanghai", work, share: "delta-air", member: "shanghai") == "revoked" }
        #expect(sh.log.contains("on_revoke=keep"), "\(sh.log)")

        // Revocation by a policy change (on_revoke: purge): the registry share is removed.
        try Self.policy(briefUntil: briefUntil, registry: false).write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("shanghai sees the registry revoked") { try Self.state("shanghai", work, share: "registry-rw", member: "shanghai") == "revoked" }
        #expect(sh.log.contains("on_revoke=purge"), "\(sh.log)")
        let revoked = try Self.list("shanghai", work).last { $0["share"] as? String == "registry-rw" }
        #expect((revoked?["revocationReason"] as? String)?.contains("removed from the policy") == true, "\(String(describing: revoked))")

        // Agreements survive a restart of both sides.
        #expect(sh.terminate() == 0)
        #expect(hz.terminate() == 0)
        hz = try Daemon(dir: "hangzhou", cwd: work)
        sh = try Daemon(dir: "shanghai", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        #expect(try sh.waitReady(admin: cities[1].admin), "\(sh.log)")
        #expect(try Self.state("hangzhou", work, share: "delta-air", member: "suzhou") == "rejected")
        #expect(try Self.state("shanghai", work, share: "delta-air", member: "shanghai") == "revoked")
        #expect(try Self.state("hangzhou", work, share: "brief", member: "shanghai") != nil)

        // The brief share expires on its own.
        try eventually("the brief share expired", seconds: 40) { try Self.state("hangzhou", work, share: "brief", member: "shanghai") == "expired" }
        // The owner stops replicating it by itself, on the clock: no message, no policy change.
        try eventually("hangzhou to stop replicating the expired brief share", seconds: 10) { try !replicatesBrief() }
        r = try cm("policy", "explain", "--dir", "hangzhou", "--city", "shanghai", "--dataset", "permits")
        #expect(r.stdout.contains("expired"), "\(r.stdout)")

        // Both ledgers hold every step.
        for (dir, kinds) in [("hangzhou", ["agreement.offered", "agreement.accepted", "agreement.rejected", "agreement.revoked"]),
                             ("shanghai", ["agreement.offered", "agreement.accepted", "agreement.revoked"])] {
            r = try cm("audit", "log", "--dir", dir, "--kind", "agreement", "--json")
            for k in kinds { #expect(r.stdout.contains("\"kind\":\"\(k)\""), "\(dir) lacks \(k): \(r.stdout)") }
        }
        r = try cm("agreement", "list", "--dir", "hangzhou")
        #expect(r.ok && r.stdout.contains("hangzhou/delta-air") && r.stdout.contains("rejected"), "\(r.stdout)")
        for d in [hz, sh, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }
}

enum RFC3339Text {
    /// UTC time `seconds` from now, as RFC 3339.
    static func after(seconds: Double) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date().addingTimeInterval(seconds))
    }
}
