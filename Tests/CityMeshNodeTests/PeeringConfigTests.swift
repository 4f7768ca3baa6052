import CityMeshCore
import Foundation
import Testing
import X509
@testable import CityMeshNode

@Suite("Peering config, seeds and the federation CRL")
struct PeeringConfigTests {
    @Test("revoke writes a CRL signed by the CA, keeps earlier entries, and counts up")
    func revoke() throws {
        let dir = try tempDir()
        _ = try FederationCA.create(dir: dir + "/fed", name: "Delta", keyType: .ed25519)
        let sh = try FederationCA.issue(caDir: dir + "/fed", city: try CitySlug("shanghai"), hosts: [], out: dir + "/sh", keyType: .p256, days: 30)
        let sz = try FederationCA.issue(caDir: dir + "/fed", city: try CitySlug("suzhou"), hosts: [], out: dir + "/sz", keyType: .ed25519, days: 30)
        let first = try FederationCRL.revoke(caDir: dir + "/fed", certPath: sh.cert, crlPath: nil)
        #expect(first.path == dir + "/fed/crl.pem")
        #expect(!first.alreadyRevoked)
        #expect(first.crl.number == 1)
        let second = try FederationCRL.revoke(caDir: dir + "/fed", certPath: sz.cert, crlPath: nil)
        #expect(second.crl.number == 2)
        #expect(second.crl.entries.count == 2)
        let again = try FederationCRL.revoke(caDir: dir + "/fed", certPath: sz.cert, crlPath: nil)
        #expect(again.alreadyRevoked)
        #expect(again.crl.entries.count == 2)
        // What a node loads is exactly that, checked against the CA.
        let ca = try PEM.certificates(try Files.read(dir + "/fed/ca.pem", what: "ca"), what: "ca")
        let loaded = try #require(try FederationCRL.load(path: first.path, roots: ca))
        let shCert = try PEM.certificates(try Files.read(sh.cert, what: "sh"), what: "sh")[0]
        #expect(loaded.isRevoked(shCert.serialNumber))
        // Missing CRL: nothing revoked yet, not an error.
        #expect(try FederationCRL.load(path: dir + "/none.pem", roots: ca) == nil)
    }

    @Test("config: rate limits are checked (known channels, 1 to 1,000,000 a second); aliases, non-scalar keys and base-60 numbers are refused with their line")
    func configHostile() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        _ = try await NodeInitializer.run(initOptions(dir))
        let path = dir + "/node/citymesh.yaml"
        let base = try String(contentsOfFile: path, encoding: .utf8)
        func load(_ change: (String) -> String) -> String? {
            do {
                try change(base).write(toFile: path, atomically: true, encoding: .utf8)
                _ = try NodeConfig.load(from: path)
                return nil
            } catch { return "\(error)" }
        }
        func limits(_ text: String) -> (String) -> String { { $0.replacingOccurrences(of: "rate_limits: {}", with: "rate_limits: \(text)") } }
        #expect(base.contains("rate_limits: {}"), "init writes the key, documented")
        #expect(load(limits("{agreements: 5, replication: 10000}")) == nil)
        #expect(try NodeConfig.load(from: path).peers?.rateLimiterLimits()["agreements"] == PeerRateLimiter.Limit(perSecond: 5))
        #expect(load(limits("{replicaton: 10}"))?.contains("did you mean 'replication'") == true)
        #expect(load(limits("{ledger: 0}"))?.contains("from 1 to 1000000") == true)
        #expect(load { $0 + "x: &a [1, 2]\ny: *a\n" }?.contains("anchors and aliases") == true)
        #expect(load { $0 + "? [a, b]\n: 1\n" }?.contains("plain name") == true)
        #expect(load { $0.replacingOccurrences(of: "max_connections: 256", with: "max_connections: 1:2:3:4:5:6:7:8:9:10:11:12") }?.contains("base-60") == true)
    }

    @Test("the CRL fails closed: a missing, broken, foreign or older file keeps the last good CRL in force, with an alert; a stale one is flagged")
    func crlFailsClosed() throws {
        let dir = try tempDir()
        _ = try FederationCA.create(dir: dir + "/fed", name: "Delta", keyType: .ed25519)
        _ = try FederationCA.create(dir: dir + "/other", name: "Other", keyType: .ed25519)
        let sh = try FederationCA.issue(caDir: dir + "/fed", city: try CitySlug("shanghai"), hosts: [], out: dir + "/sh", keyType: .ed25519, days: 30)
        let sz = try FederationCA.issue(caDir: dir + "/fed", city: try CitySlug("suzhou"), hosts: [], out: dir + "/sz", keyType: .ed25519, days: 30)
        let ca = try PEM.certificates(try Files.read(dir + "/fed/ca.pem", what: "ca"), what: "ca")
        let path = dir + "/fed/crl.pem", kept = dir + "/node-crl.pem"
        func resolve(_ inForce: RevocationList?, now: Date = Date()) throws -> FederationCRL.Resolution {
            try FederationCRL.resolve(path: path, roots: ca, inForce: inForce, keptPath: kept, now: now)
        }
        // Nothing revoked yet: no file, no CRL, no alert.
        let none = try resolve(nil)
        #expect(none.crl == nil && none.alerts.isEmpty)
        // CRL 1 (shanghai) then CRL 2 (shanghai, suzhou): each is taken, and a copy is kept.
        _ = try FederationCRL.revoke(caDir: dir + "/fed", certPath: sh.cert, crlPath: nil)
        let old = try Files.read(path, what: "crl")
        let one = try resolve(nil)
        #expect(one.crl?.number == 1 && one.alerts.isEmpty)
        _ = try FederationCRL.revoke(caDir: dir + "/fed", certPath: sz.cert, crlPath: nil)
        let current = try Files.read(path, what: "crl")
        let two = try resolve(one.crl)
        #expect(two.crl?.number == 2 && two.alerts.isEmpty)
        #expect(try FederationCRL.load(path: kept, roots: ca)?.number == 2, "the node keeps a copy of what it put in force")

        // The older CRL put back in place: refused, CRL 2 stays (also after a restart: from the copy).
        try old.write(toFile: path, atomically: true, encoding: .utf8)
        for inForce in [two.crl, nil] {
            let rolledBack = try resolve(inForce)
            #expect(rolledBack.crl?.number == 2)
            #expect(rolledBack.problem?.contains("CRL number 1 is lower than 2") == true, "\(rolledBack.problem ?? "")")
        }
        // The file gone, broken, or signed by another CA: CRL 2 stays, with an alert naming the file.
        try FileManager.default.removeItem(atPath: path)
        #expect(try resolve(two.crl).problem?.contains("missing") == true)
        #expect(try resolve(nil).crl?.number == 2, "a restart without the file still refuses what CRL 2 revoked")
        try "not a CRL\n".write(toFile: path, atomically: true, encoding: .utf8)
        let broken = try resolve(two.crl)
        #expect(broken.crl?.number == 2 && broken.problem?.contains("could not be used") == true)
        _ = try FederationCA.issue(caDir: dir + "/other", city: try CitySlug("nanjing"), hosts: [], out: dir + "/nj", keyType: .ed25519, days: 30)
        _ = try FederationCRL.revoke(caDir: dir + "/other", certPath: dir + "/nj/node.pem", crlPath: path + ".x")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".x", toPath: path)
        #expect(try resolve(two.crl).crl?.number == 2)
        // Without any last good CRL, a bad file is an error (the node does not start on it).
        try FileManager.default.removeItem(atPath: kept)
        #expect(throws: CityMeshError.self) { try resolve(nil) }
        // Back to the current CRL: taken, no alert; past its next update (30 days): flagged, still in force.
        try current.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try resolve(nil).alerts.isEmpty)
        let late = try resolve(two.crl, now: Date().addingTimeInterval(31 * 86_400))
        #expect(late.crl?.number == 2 && late.problem == nil && late.stale?.contains("past its next update") == true)
    }

    @Test("revoke refuses a certificate of another CA, and a node refuses a CRL another CA signed")
    func foreign() throws {
        let dir = try tempDir()
        _ = try FederationCA.create(dir: dir + "/fed", name: "Delta", keyType: .ed25519)
        _ = try FederationCA.create(dir: dir + "/other", name: "Other", keyType: .p256)
        let stranger = try FederationCA.issue(caDir: dir + "/other", city: try CitySlug("shanghai"), hosts: [], out: dir + "/x", keyType: .ed25519, days: 30)
        #expect(throws: CityMeshError(.certificateForeignCA, "")) { try FederationCRL.revoke(caDir: dir + "/fed", certPath: stranger.cert, crlPath: nil) }
        _ = try FederationCRL.revoke(caDir: dir + "/other", certPath: stranger.cert, crlPath: nil)
        let ca = try PEM.certificates(try Files.read(dir + "/fed/ca.pem", what: "ca"), what: "ca")
        #expect(throws: CityMeshError(.crlInvalid, "")) { try FederationCRL.load(path: dir + "/other/crl.pem", roots: ca) }
        try "not a CRL\n".write(toFile: dir + "/junk.pem", atomically: true, encoding: .utf8)
        #expect(throws: CityMeshError(.crlInvalid, "")) { try FederationCRL.load(path: dir + "/junk.pem", roots: ca) }
    }

    @Test("init writes seeds and an absolute CRL path; bad seeds and its own city are refused")
    func initSeeds() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        var o = initOptions(dir)
        o.seeds = ["shanghai@127.0.0.1:7002"]
        o.crl = dir + "/fed/../crl.pem"
        _ = try await NodeInitializer.run(o)
        let config = try NodeConfig.load(from: dir + "/node/citymesh.yaml")
        #expect(config.peers?.seeds == ["shanghai@127.0.0.1:7002"])
        #expect(config.peers?.crl == dir + "/crl.pem")
        for bad in ["shanghai", "shanghai@localhost", "hangzhou@127.0.0.1:7009"] {
            var b = initOptions(try tempDir())
            b.ca = o.ca
            b.cert = o.cert
            b.key = o.key
            b.seeds = [bad]
            await #expect(throws: CityMeshError(.invalidArgument, "")) { try await NodeInitializer.run(b) }
        }
    }

    @Test("the peers section is optional and checked: seeds, deny-list fingerprints, timeouts")
    func configChecks() throws {
        let dir = try tempDir()
        let base = """
            city: hangzhou
            tls: {ca: ca.pem, cert: node.pem, key: node.key}
            listen: "127.0.0.1:7001"
            admin: "127.0.0.1:7101"
            database: citymesh.db
            log: {level: info, format: text}

            """
        func load(_ extra: String) throws -> NodeConfig {
            try (base + extra).write(toFile: dir + "/citymesh.yaml", atomically: true, encoding: .utf8)
            return try NodeConfig.load(from: dir + "/citymesh.yaml")
        }
        #expect(try load("").peers == nil)
        let ok = try load("peers: {seeds: [\"sh@10.0.0.2:7002\"], deny: [\"\(String(repeating: "AB:", count: 31))AB\"], keepalive_seconds: 5, idle_timeout_seconds: 15}")
        #expect(try ok.peers?.denySet() == [String(repeating: "ab", count: 32)])
        #expect(try ok.peers?.seedList().first?.city.rawValue == "sh")
        for bad in [
            "peers: {seeds: [\"10.0.0.2:7002\"]}", "peers: {deny: [\"abc\"]}", "peers: {keepalive_seconds: 0}",
            "peers: {keepalive_seconds: 30, idle_timeout_seconds: 10}", "peers: {advertise: \"nohost\"}",
        ] {
            #expect(throws: CityMeshError(.configInvalid, "")) { try load(bad) }
        }
        // A key the node would not read is an error naming it, with the nearest known key.
        for (extra, named, suggestion) in [
            ("polcy: policy.yaml", "'polcy'", "did you mean 'policy'?"), ("peers: {seed: [\"sh@10.0.0.2:7002\"]}", "'peers.seed'", "did you mean 'seeds'?"),
            ("log2: {}", "'log2'", "did you mean 'log'?"), ("tls2: {}", "'tls2'", "did you mean 'tls'?"), ("completely_different: 1", "'completely_different'", "The keys at the top level are"),
        ] {
            do {
                _ = try load(extra)
                Issue.record("\(extra) was accepted")
            } catch let e as CityMeshError {
                #expect(e.code == .configInvalid && e.message.contains("unknown key \(named)") && e.message.contains(suggestion), "\(e.message)")
            }
        }
        // A missing required key is named, with what a config needs.
        try "city: hangzhou\nlisten: \"127.0.0.1:7001\"\n".write(toFile: dir + "/citymesh.yaml", atomically: true, encoding: .utf8)
        do {
            _ = try NodeConfig.load(from: dir + "/citymesh.yaml")
            Issue.record("a config without tls was accepted")
        } catch let e as CityMeshError {
            #expect(e.code == .configInvalid && e.message.contains("missing key 'tls'") && e.message.contains("citymesh init"), "\(e.message)")
        }
        #expect(Spelling.distance("", "abc") == 3 && Spelling.distance("kitten", "sitting") == 3 && Spelling.distance("seeds", "seeds") == 0)

        // The documented config text parses back to the same values.
        var config = try load("")
        config.peers = .init(seeds: ["sh@10.0.0.2:7002"], crl: "/etc/citymesh/crl.pem", deny: [])
        try config.yaml().write(toFile: dir + "/citymesh.yaml", atomically: true, encoding: .utf8)
        let reread = try NodeConfig.load(from: dir + "/citymesh.yaml")
        #expect(reread.peers?.seeds == config.peers?.seeds)
        #expect(reread.peers?.crl == config.peers?.crl)
        #expect(reread.peers?.keepaliveSeconds == 15)
    }
}
