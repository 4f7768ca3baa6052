import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Real `citymesh serve` processes talking mutual TLS to each other, and the real `openssl
/// s_client` as an independent TLS client.
@Suite("End to end: peer transport", .serialized)
struct PeerTransportTests {
    struct City {
        let name: String
        let listen: String
        let admin: String
    }

    /// A federation CA and one node directory per city; every city is seeded with the first
    /// (`chain`: with the one before it, so each knows only the previous one).
    static func setUp(_ work: String, cities: [String], chain: Bool = false) throws -> [City] {
        var r = try Harness.citymesh(["federation", "init", "--out", "fed", "--name", "Yangtze Delta"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        var out: [City] = []
        for (i, name) in cities.enumerated() {
            r = try Harness.citymesh(
                ["federation", "issue", "--ca", "fed", "--city", name, "--host", "localhost", "--out", "\(name)-cert"] + (i == 1 ? ["--key-type", "p256"] : []),
                cwd: work)
            #expect(r.ok, "\(r.stderr)")
            out.append(City(name: name, listen: "127.0.0.1:\(Harness.freePort())", admin: "127.0.0.1:\(Harness.freePort())"))
        }
        for (i, c) in out.enumerated() {
            let seed = out[chain ? max(i - 1, 0) : 0]
            let seeds = i == 0 ? [] : ["--seed", "\(seed.name)@\(seed.listen)"]
            r = try Harness.citymesh(
                ["init", "--dir", c.name, "--city", c.name, "--ca", "fed/ca.pem", "--cert", "\(c.name)-cert/node.pem", "--key", "\(c.name)-cert/node.key",
                 "--listen", c.listen, "--admin", c.admin, "--crl", "fed/crl.pem"] + seeds,
                cwd: work)
            #expect(r.ok, "\(r.stderr)")
        }
        return out
    }

    /// `citymesh peers --json` parsed.
    static func peers(_ dir: String, _ work: String) throws -> [String: Any] {
        let r = try Harness.citymesh(["peers", "--dir", dir, "--json"], cwd: work)
        guard r.ok, let data = r.stdout.data(using: .utf8), let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return json
    }

    static func peer(_ json: [String: Any], _ city: String) -> [String: Any]? {
        (json["peers"] as? [[String: Any]])?.first { $0["city"] as? String == city }
    }

    static func refusals(_ json: [String: Any], _ reason: String) -> Int { (json["refusals"] as? [String: Int])?[reason] ?? 0 }

    static func eventually(_ what: String, seconds: Double = 20, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
        Issue.record("never happened: \(what)")
    }

    @Test("cities find each other from one seed, 'peers' shows them, and revoke + SIGHUP cuts off only the revoked city")
    func seedPeersRevoke() throws {
        let work = try Harness.tempDir("peers")
        let cities = try Self.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        let daemons = try cities.map { try Daemon(dir: $0.name, cwd: work) }
        for (d, c) in zip(daemons, cities) { #expect(try d.waitReady(admin: c.admin), "\(d.log)") }

        try Self.eventually("shanghai and suzhou connected to hangzhou, both ways") {
            let hz = try Self.peers("hangzhou", work)
            let sh = try Self.peers("shanghai", work)
            return Self.peer(hz, "shanghai")?["state"] as? String == "connected" && Self.peer(hz, "suzhou")?["state"] as? String == "connected"
                && Self.peer(sh, "hangzhou")?["state"] as? String == "connected"
        }
        let table = try Harness.citymesh(["peers", "--dir", "shanghai"], cwd: work)
        #expect(table.ok)
        let row = table.stdout.split(separator: "\n").first { $0.hasPrefix("hangzhou") }.map(String.init) ?? ""
        #expect(row.contains("connected") && row.contains(cities[0].listen) && row.contains("ms"), "\(table.stdout)")
        let hzView = try #require(Self.peer(try Self.peers("hangzhou", work), "shanghai"))
        #expect(hzView["protocolVersion"] as? Int == 1)
        #expect(hzView["address"] as? String == cities[1].listen, "learned from shanghai's HELLO")
        #expect((hzView["certificateFingerprint"] as? String)?.count == 64)

        // Ledger checkpoints over the peer transport: suzhou fetches hangzhou's, checks the signature
        // with hangzhou's certificate key, then, once hangzhou's log has grown, a consistency proof.
        var r = CommandResult(status: -1, stdout: "", stderr: "")
        try Self.eventually("hangzhou's first checkpoint fetched by suzhou") {
            r = try Harness.citymesh(["peers", "checkpoint", "--dir", "suzhou", "hangzhou", "--json"], cwd: work)
            #expect(r.ok || r.stderr.contains("no checkpoint has been signed yet"), "\(r.stderr)")
            return r.ok
        }
        let first = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        let firstSize = first["size"] as? Int ?? 0
        #expect(firstSize > 0 && first["consistentWith"] == nil, "\(r.stdout)")
        #expect((first["checkpoint"] as? String)?.hasPrefix("hangzhou.citymesh/ledger\n") == true)
        r = try Harness.citymesh(["dataset", "create", "--dir", "hangzhou", "air", "--key", "station", "--field", "station:string"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        try Self.eventually("hangzhou signs a larger checkpoint") {
            let cp = try Harness.citymesh(["audit", "checkpoint", "--dir", "hangzhou"], cwd: work).stdout
            return (cp.split(separator: "\n").dropFirst().first.flatMap { Int($0) } ?? 0) > firstSize
        }
        r = try Harness.citymesh(["peers", "checkpoint", "--dir", "suzhou", "hangzhou"], cwd: work)
        #expect(r.ok && r.stdout.contains("consistent with its checkpoint at size \(firstSize) (proof verified)"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("signature verified with hangzhou.citymesh/ledger+"), "\(r.stdout)")
        // shanghai's key is P-256: its checkpoints are signed too (signed-note type 0x02).
        r = try Harness.citymesh(["peers", "checkpoint", "--dir", "hangzhou", "shanghai"], cwd: work)
        #expect(r.ok && r.stdout.contains("signature verified with shanghai.citymesh/ledger+"), "\(r.stdout)\(r.stderr)")
        r = try Harness.citymesh(["peers", "checkpoint", "--dir", "hangzhou", "wuxi"], cwd: work)
        #expect(!r.ok && r.stderr.contains("no connection to 'wuxi'"), "\(r.stdout)\(r.stderr)")

        r = try Harness.citymesh(["federation", "revoke", "--ca", "fed", "--cert", "shanghai-cert/node.pem"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        // The CRL is a real X.509 CRL: openssl verifies its signature and lists the serial.
        r = try Harness.openssl(["crl", "-in", "fed/crl.pem", "-CAfile", "fed/ca.pem", "-noout", "-text"], cwd: work)
        #expect((r.stdout + r.stderr).contains("verify OK") && r.stdout.contains("Serial Number"), "\(r.stdout)\(r.stderr)")

        kill(daemons[0].process.processIdentifier, SIGHUP)
        try Self.eventually("shanghai cut off by hangzhou") {
            let hz = try Self.peers("hangzhou", work)
            return Self.peer(hz, "shanghai")?["state"] as? String != "connected" && Self.refusals(hz, "revoked") >= 1
        }
        let hz = try Self.peers("hangzhou", work)
        #expect(Self.peer(hz, "suzhou")?["state"] as? String == "connected", "suzhou is not disturbed")
        // Only suzhou's link to hangzhou matters here; when two cities dial each other at once, one of the
        // two connections is closed as a duplicate, which is normal and logged as such.
        let dropped = daemons[2].log.split(separator: "\n").filter {
            $0.contains("peer disconnected") && $0.contains("peer.city=hangzhou") && !$0.contains("peer.reason=duplicate_connection")
        }
        #expect(dropped.isEmpty, "suzhou's connection to hangzhou was never dropped: \(daemons[2].log)")
        #expect(daemons[0].log.contains("configuration reloaded"), "\(daemons[0].log)")
        #expect(daemons[0].log.contains("peer.reason=revoked"), "refusal logged with its reason")
        let sh = try Self.peers("shanghai", work)
        #expect(Self.peer(sh, "hangzhou")?["state"] as? String != "connected")

        for d in daemons { #expect(d.terminate() == 0, "\(d.log)") }
    }

    @Test("openssl s_client: a federation certificate completes TLS 1.3 and gets the HELLO; a foreign CA, no certificate, TLS 1.2 and garbage are refused")
    func opensslClient() throws {
        let work = try Harness.tempDir("s_client")
        let cities = try Self.setUp(work, cities: ["hangzhou", "suzhou"])
        let daemon = try Daemon(dir: "hangzhou", cwd: work)
        #expect(try daemon.waitReady(admin: cities[0].admin), "\(daemon.log)")
        let target = cities[0].listen

        func sClient(_ args: [String], input: String = "sleep 1") throws -> CommandResult {
            let quoted = args.map { "'\($0)'" }.joined(separator: " ")
            return try Harness.run("/bin/sh", ["-c", "(\(input)) | timeout 10 openssl s_client -connect \(target) -CAfile fed/ca.pem \(quoted) 2>&1"], cwd: work)
        }

        // A federation member: TLS 1.3 with the federation CA verifying the node, then the node's HELLO.
        var r = try sClient(["-tls1_3", "-cert", "suzhou-cert/node.pem", "-key", "suzhou-cert/node.key", "-verify_return_error"])
        #expect(r.stdout.contains("TLSv1.3"), "\(r.stdout)")
        #expect(r.stdout.contains("Verify return code: 0 (ok)"), "\(r.stdout)")
        #expect(r.stdout.contains("CMSH") && r.stdout.contains("hangzhou"), "the node's HELLO arrives: \(r.stdout)")

        // A certificate from another CA (made by openssl alone, with a valid-looking city URI).
        _ = try Harness.openssl(["req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-subj", "/CN=other", "-days", "30"], cwd: work)
        _ = try Harness.openssl(
            ["req", "-newkey", "ed25519", "-nodes", "-keyout", "intruder.key", "-out", "intruder.csr", "-subj", "/CN=intruder",
             "-addext", "subjectAltName=URI:urn:citymesh:city:suzhou", "-addext", "extendedKeyUsage=serverAuth,clientAuth"], cwd: work)
        _ = try Harness.openssl(
            ["x509", "-req", "-in", "intruder.csr", "-CA", "other.pem", "-CAkey", "other.key", "-out", "intruder.pem", "-days", "30", "-copy_extensions", "copy"],
            cwd: work)
        r = try sClient(["-tls1_3", "-cert", "intruder.pem", "-key", "intruder.key"])
        #expect(r.stdout.contains("alert") && !r.stdout.contains("CMSH"), "\(r.stdout)")
        r = try sClient(["-tls1_3"])
        #expect(r.stdout.contains("alert") && !r.stdout.contains("CMSH"), "\(r.stdout)")
        r = try sClient(["-tls1_2", "-cert", "suzhou-cert/node.pem", "-key", "suzhou-cert/node.key"])
        #expect(r.stdout.contains("alert protocol version") || r.stdout.contains("no protocols available"), "\(r.stdout)")
        // Valid TLS, then text instead of frames: refused by the wire protocol.
        r = try sClient(["-tls1_3", "-cert", "suzhou-cert/node.pem", "-key", "suzhou-cert/node.key"], input: "sleep 0.5; printf 'GET / HTTP/1.1\\r\\n\\r\\n'; sleep 1")

        try Self.eventually("each refusal counted with its reason") {
            let json = try Self.peers("hangzhou", work)
            return Self.refusals(json, "foreign_ca") >= 1 && Self.refusals(json, "no_client_certificate") >= 1 && Self.refusals(json, "tls_error") >= 1
                && Self.refusals(json, "frame_too_large") >= 1
        }
        let log = daemon.log
        for reason in ["foreign_ca", "no_client_certificate", "frame_too_large"] {
            #expect(log.contains("peer.reason=\(reason)"), "logged: \(reason)")
        }
        // The same counts as Prometheus metrics on the admin API (auditor token or better).
        let token = try String(contentsOfFile: work + "/hangzhou/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let metrics = try Harness.run("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(token)", "http://\(cities[0].admin)/metrics"], cwd: work)
        #expect(metrics.stdout.contains(#"citymesh_peer_refusals_total{reason="foreign_ca"}"#), "\(metrics.stdout)")
        #expect(metrics.stdout.contains("citymesh_peers_connected"), "\(metrics.stdout)")
        let anonymous = try Harness.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(cities[0].admin)/metrics"], cwd: work)
        #expect(anonymous.stdout == "401")
        // Plaintext on the peer port.
        r = try Harness.run("/usr/bin/curl", ["-s", "-m", "5", "http://\(target)/"], cwd: work)
        #expect(r.status != 0)
        try Self.eventually("plaintext refused as not_tls") { Self.refusals(try Self.peers("hangzhou", work), "not_tls") >= 1 }
        #expect(daemon.terminate() == 0, "\(daemon.log)")
    }
}
