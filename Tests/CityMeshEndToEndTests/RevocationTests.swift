import Foundation
import Testing

/// A revoked city's signatures stop counting everywhere the CRL is loaded, not only on the
/// connections the transport refuses (threat model G1): its batches, relayed by a member that has
/// not reloaded yet, are refused by the owner that has.
@Suite("End to end: revocation reaches relayed batches")
struct RevocationTests {
    @Test("after revoke + SIGHUP at the owner, a revoked member's write relayed by another member is refused there and never merged")
    func relayedBatchOfRevokedCity() throws {
        let work = try Harness.tempDir("revocation")
        // shanghai has a P-256 key, hangzhou and suzhou Ed25519.
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 30, _ condition: () throws -> Bool) throws {
            try PeerTransportTests.eventually(what, seconds: seconds, condition)
        }
        // suzhou also dials shanghai directly (nodes do not learn third cities' addresses), so the
        // two members stay connected when hangzhou cuts suzhou off.
        let config = work + "/suzhou/citymesh.yaml"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "seeds: [\"hangzhou@\(cities[0].listen)\"]", with: "seeds: [\"hangzhou@\(cities[0].listen)\", \"shanghai@\(cities[1].listen)\"]")
            .write(toFile: config, atomically: true, encoding: .utf8)
        #expect(try String(contentsOfFile: config, encoding: .utf8).contains("shanghai@"))
        let daemons = try ["hangzhou", "shanghai", "suzhou"].map { try Daemon(dir: $0, cwd: work) }
        for (d, c) in zip(daemons, cities) { #expect(try d.waitReady(admin: c.admin), "\(d.log)") }

        // on_revoke: purge, so the replica kept at the end shows that only the owner's own
        // revocation purges.
        try ReplicationTests.shareRegistry(work, onRevoke: "purge")
        var r: CommandResult
        try "id,name,status,district\nE-1,Enterprise 1,active,Xihu\nE-2,Enterprise 2,active,Xihu\n"
            .write(toFile: work + "/registry.csv", atomically: true, encoding: .utf8)
        r = try cm("import", "--dir", "hangzhou", "registry", "--csv", "registry.csv")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("suzhou and shanghai connected directly") {
            PeerTransportTests.peer(try PeerTransportTests.peers("suzhou", work), "shanghai")?["state"] as? String == "connected"
        }
        try eventually("both members hold the records") {
            try ReplicationTests.export("shanghai", "hangzhou/registry", work).count == 2 && ReplicationTests.export("suzhou", "hangzhou/registry", work).count == 2
        }
        // Before the revocation suzhou's writes count: this one reaches hangzhou.
        r = try cm("record", "put", "--dir", "suzhou", "hangzhou/registry", "E-1", "status=audited")
        #expect(r.ok, "\(r.stderr)")
        try eventually("suzhou's write before the revocation reached hangzhou") {
            try cm("record", "get", "--dir", "hangzhou", "registry", "E-1", "--json").stdout.contains("audited")
        }

        // The CA revokes suzhou; only hangzhou reloads. shanghai still talks to suzhou.
        r = try cm("federation", "revoke", "--ca", "fed", "--cert", "suzhou-cert/node.pem")
        #expect(r.ok, "\(r.stderr)")
        kill(daemons[0].process.processIdentifier, SIGHUP)
        try eventually("hangzhou cut suzhou off") {
            let hz = try PeerTransportTests.peers("hangzhou", work)
            return PeerTransportTests.peer(hz, "suzhou")?["state"] as? String != "connected" && PeerTransportTests.refusals(hz, "revoked") >= 1
        }
        #expect(PeerTransportTests.peer(try PeerTransportTests.peers("shanghai", work), "suzhou")?["state"] as? String == "connected")

        // The revocation also ended hangzhou's agreement with suzhou (signed and ledgered).
        try eventually("hangzhou ended its agreement with the revoked suzhou") {
            try AgreementTests.state("hangzhou", work, share: "registry-rw", member: "suzhou") == "revoked"
                && cm("audit", "log", "--dir", "hangzhou", "--kind", "agreement.revoked", "--json").stdout.contains("revoked by the federation's trust")
        }
        // suzhou writes. Either shanghai (which has not reloaded the CRL) takes it and relays it to
        // hangzhou, which refuses it; or shanghai already has hangzhou's new roster without suzhou
        // and refuses it itself. Either way it is refused with its reason and never merged.
        r = try cm("record", "put", "--dir", "suzhou", "hangzhou/registry", "E-2", "status=struck-off")
        #expect(r.ok, "\(r.stderr)")
        try eventually("suzhou's write was refused, at hangzhou or already at shanghai, and ledgered why") {
            let atHangzhou = try cm("audit", "log", "--dir", "hangzhou", "--kind", "exchange.refused", "--json").stdout
            let atShanghai = try cm("audit", "log", "--dir", "shanghai", "--kind", "exchange.refused", "--json").stdout
            let tookIt = try cm("record", "get", "--dir", "shanghai", "hangzhou/registry", "E-2", "--json").stdout.contains("struck-off")
            let refusedAtHangzhou = (atHangzhou.contains("suzhou's certificate is no longer trusted") && atHangzhou.contains("revoked by the federation CRL"))
                || atHangzhou.contains("suzhou is not party to share")
            return tookIt ? refusedAtHangzhou : atShanghai.contains("suzhou is not party to share")
        }
        // Give anti-entropy time to retry: the record stays as hangzhou had it.
        Thread.sleep(forTimeInterval: 3)
        r = try cm("record", "get", "--dir", "hangzhou", "registry", "E-2", "--json")
        #expect(r.ok && !r.stdout.contains("struck-off") && r.stdout.contains("active"), "never merged at hangzhou: \(r.stdout)")

        // The member's side: the CA revokes the owner, hangzhou, and shanghai reloads. shanghai's
        // agreement with hangzhou ends there too, ledgered with the reason; the replica is kept.
        r = try cm("federation", "revoke", "--ca", "fed", "--cert", "hangzhou-cert/node.pem")
        #expect(r.ok, "\(r.stderr)")
        kill(daemons[1].process.processIdentifier, SIGHUP)
        try eventually("shanghai ended its agreement with the revoked owner hangzhou") {
            try AgreementTests.state("shanghai", work, share: "registry-rw", member: "shanghai") == "revoked"
                && cm("audit", "log", "--dir", "shanghai", "--kind", "agreement.revoked", "--json").stdout.contains("ended by this member")
        }
        Thread.sleep(forTimeInterval: 3)  // shares are refreshed every second: a purge would have run
        #expect(try ReplicationTests.export("shanghai", "hangzhou/registry", work).count == 2, "the replica is kept although on_revoke is purge")
        for d in daemons { #expect(d.terminate() == 0, "\(d.log)") }
    }
}
