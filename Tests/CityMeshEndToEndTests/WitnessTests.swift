import Foundation
import Testing

/// Peers as witnesses: a city that shows two histories (here, a second node with the same
/// certificate and key but its own ledger) is caught by a peer that kept its earlier signed
/// checkpoint — even across the peer's restart — and the peer ledgers the fork with both signed
/// checkpoints as evidence.
@Suite("End to end: witnessing", .serialized)
struct WitnessTests {
    @Test("a city showing two histories is caught by a peer, which keeps both signed checkpoints as evidence")
    func fork() throws {
        let work = try Harness.tempDir("witness")
        // Index 1 (shanghai) gets a P-256 key; hangzhou and suzhou sign checkpoints with Ed25519.
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        var hz = try Daemon(dir: "hangzhou", cwd: work)
        var sz = try Daemon(dir: "suzhou", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        #expect(try sz.waitReady(admin: cities[2].admin), "\(sz.log)")
        var r = CommandResult(status: -1, stdout: "", stderr: "")
        try PeerTransportTests.eventually("suzhou fetched and kept hangzhou's checkpoint") {
            r = try cm("peers", "checkpoint", "--dir", "suzhou", "hangzhou")
            return r.ok
        }
        // suzhou restarts: what it saw of hangzhou is kept in its store.
        #expect(sz.terminate() == 0)
        sz = try Daemon(dir: "suzhou", cwd: work)
        #expect(try sz.waitReady(admin: cities[2].admin), "\(sz.log)")

        // hangzhou equivocates: a second node with hangzhou's certificate and key, at the same
        // address, but its own ledger — a second history signed by the same key.
        #expect(hz.terminate() == 0)
        r = try cm("init", "--dir", "hangzhou-twin", "--city", "hangzhou", "--ca", "fed/ca.pem", "--cert", "hangzhou-cert/node.pem",
                   "--key", "hangzhou-cert/node.key", "--listen", cities[0].listen, "--admin", cities[0].admin, "--crl", "fed/crl.pem")
        #expect(r.ok, "\(r.stderr)")
        hz = try Daemon(dir: "hangzhou-twin", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        r = try cm("dataset", "create", "--dir", "hangzhou-twin", "air", "--key", "station", "--field", "station:string")
        #expect(r.ok, "\(r.stderr)")

        try PeerTransportTests.eventually("suzhou catches hangzhou's two histories", seconds: 40) {
            let check = try cm("peers", "checkpoint", "--dir", "suzhou", "hangzhou")
            if !check.ok {
                // Until the twin connects and signs its first checkpoint, the check says so.
                #expect(["two histories", "signed two different checkpoints", "no connection", "no checkpoint has been signed yet"].contains { check.stderr.contains($0) }, "\(check.stderr)")
            }
            // A fork shows as a checkpoint inconsistent with the kept one or, when the twin's log
            // has the size of the kept checkpoint, as two different checkpoints of one size.
            return check.stderr.contains("two histories") || check.stderr.contains("signed two different checkpoints")
        }
        r = try cm("audit", "log", "--dir", "suzhou", "--kind", "peer.forked", "--json")
        #expect(r.ok && r.stdout.contains("\"peer\":\"hangzhou\""), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.components(separatedBy: "hangzhou.citymesh/ledger").count >= 3, "both signed checkpoints are in the evidence: \(r.stdout)")
        #expect(sz.log.contains("shows two histories"), "\(sz.log)")
        for d in [hz, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }

    @Test("peers cosign each other's checkpoints; the origin publishes them, and its bundle carries them for an offline quorum check")
    func cosignatures() throws {
        let work = try Harness.tempDir("cosign")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        let hz = try Daemon(dir: "hangzhou", cwd: work)
        let sz = try Daemon(dir: "suzhou", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        #expect(try sz.waitReady(admin: cities[2].admin), "\(sz.log)")
        var r = try cm("audit", "checkpoint", "--dir", "hangzhou", "--witnessed")
        #expect(!r.ok && r.stderr.contains("no checkpoint has been cosigned yet"), "\(r.stderr)")

        // Each checks the other's checkpoint about every 10 s and sends back its cosignature (up to
        // 120 s: under the full parallel suite on two cores, 60 s was once not enough).
        try PeerTransportTests.eventually("hangzhou and suzhou cosigned each other's checkpoints", seconds: 120) {
            let a = try cm("audit", "witnesses", "--dir", "hangzhou", "--json")
            let b = try cm("audit", "witnesses", "--dir", "suzhou", "--json")
            return a.stdout.contains("\"city\" : \"suzhou\"") && b.stdout.contains("\"city\" : \"hangzhou\"")
        }
        r = try cm("audit", "witnesses", "--dir", "hangzhou")
        #expect(r.ok && r.stdout.contains("WITNESS") && r.stdout.contains("suzhou"), "\(r.stdout)\(r.stderr)")

        // The witnessed checkpoint: hangzhou's signature, then suzhou's cosignature line, which
        // the real openssl verifies over the cosignature/v1 message with the key in suzhou's
        // certificate — no CityMesh code involved.
        r = try cm("audit", "checkpoint", "--dir", "hangzhou", "--witnessed")
        #expect(r.ok, "\(r.stderr)")
        let note = r.stdout
        let split = try #require(note.range(of: "\n\n"))
        let text = String(note[..<split.lowerBound]) + "\n"
        #expect(text.hasPrefix("hangzhou.citymesh/ledger\n"))
        let lines = note[split.upperBound...].split(separator: "\n")
        #expect(lines.first?.hasPrefix("\u{2014} hangzhou.citymesh/ledger ") == true, "\(note)")
        let cosig = try #require(lines.first { $0.hasPrefix("\u{2014} suzhou.citymesh/witness ") }, "\(note)")
        let raw = try #require(Data(base64Encoded: String(cosig.split(separator: " ")[2])))
        #expect(raw.count == 76)
        let timestamp = raw[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let now = UInt64(Date().timeIntervalSince1970)
        #expect(timestamp <= now && timestamp > now - 600, "cosigned at \(timestamp), now \(now)")
        try Data("cosignature/v1\ntime \(timestamp)\n\(text)".utf8).write(to: URL(fileURLWithPath: "\(work)/cosigned.msg"))
        try Data(raw[12...]).write(to: URL(fileURLWithPath: "\(work)/cosig.bin"))
        r = try Harness.openssl(["x509", "-in", "suzhou-cert/node.pem", "-pubkey", "-noout", "-out", "suzhou.pub"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        r = try Harness.openssl(["pkeyutl", "-verify", "-pubin", "-inkey", "suzhou.pub", "-rawin", "-in", "cosigned.msg", "-sigfile", "cosig.bin"], cwd: work)
        #expect(r.ok && (r.stdout + r.stderr).contains("Signature Verified Successfully"), "\(r.stdout)\(r.stderr)")
        // The key ID in the line is the one of suzhou's published witness key.
        r = try cm("audit", "vkey", "--dir", "suzhou", "--witness")
        let vkey = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(vkey.hasPrefix("suzhou.citymesh/witness+\(raw.prefix(4).map { String(format: "%02x", $0) }.joined())+"), "\(vkey)")

        // The bundle carries the witnessed checkpoint and suzhou's certificate: a quorum of one
        // is met offline, a quorum of two is not, and an altered cosignature is refused.
        r = try cm("audit", "export", "--dir", "hangzhou", "--out", "hz.bundle")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("audit", "verify-bundle", "hz.bundle", "--ca", "fed/ca.pem", "--quorum", "1")
        #expect(r.ok && r.stdout.contains("cosigned by suzhou"), "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "verify-bundle", "hz.bundle", "--ca", "fed/ca.pem", "--quorum", "2")
        #expect(r.status == 1 && r.stderr.contains("fewer than --quorum 2"), "\(r.stdout)\(r.stderr)")
        var bundle = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(work)/hz.bundle"))) as? [String: Any])
        var witnessed = try #require(bundle["witnessed"] as? [String: Any])
        let witnessedNote = try #require(witnessed["checkpoint"] as? String)
        let sigText = String(cosig.split(separator: " ")[2])
        var flipped = Array(sigText)
        flipped[40] = flipped[40] == "A" ? "B" : "A"
        witnessed["checkpoint"] = witnessedNote.replacingOccurrences(of: sigText, with: String(flipped))
        bundle["witnessed"] = witnessed
        try JSONSerialization.data(withJSONObject: bundle).write(to: URL(fileURLWithPath: "\(work)/forged.bundle"))
        r = try cm("audit", "verify-bundle", "forged.bundle", "--ca", "fed/ca.pem")
        #expect(r.status == 1 && r.stderr.contains("does not verify"), "\(r.stdout)\(r.stderr)")
        for d in [hz, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }

    @Test("a P-256 node is first-class: it signs checkpoints (signed-note 0x02, checked by openssl with its certificate's key), cosigns and is cosigned, and its bundle verifies offline")
    func p256Node() throws {
        let work = try Harness.tempDir("p256")
        // Index 1 (shanghai) gets a P-256 key, hangzhou Ed25519.
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "shanghai"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        let hz = try Daemon(dir: "hangzhou", cwd: work)
        let sh = try Daemon(dir: "shanghai", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        #expect(try sh.waitReady(admin: cities[1].admin), "\(sh.log)")
        try PeerTransportTests.eventually("hangzhou and shanghai cosigned each other's checkpoints", seconds: 60) {
            let a = try cm("audit", "witnesses", "--dir", "hangzhou", "--json")
            let b = try cm("audit", "witnesses", "--dir", "shanghai", "--json")
            return a.stdout.contains("\"city\" : \"shanghai\"") && b.stdout.contains("\"city\" : \"hangzhou\"")
        }

        // shanghai's checkpoint: its log signature is an ASN.1 DER ECDSA signature over the note
        // text, which openssl checks with the key of shanghai's certificate.
        var r = try cm("audit", "checkpoint", "--dir", "shanghai", "--witnessed")
        #expect(r.ok, "\(r.stderr)")
        let note = r.stdout
        let split = try #require(note.range(of: "\n\n"))
        let text = String(note[..<split.lowerBound]) + "\n"
        let lines = note[split.upperBound...].split(separator: "\n")
        let logLine = try #require(lines.first { $0.hasPrefix("\u{2014} shanghai.citymesh/ledger ") }, "\(note)")
        let logRaw = try #require(Data(base64Encoded: String(logLine.split(separator: " ")[2])))
        try Data(text.utf8).write(to: URL(fileURLWithPath: "\(work)/sh.text"))
        try Data(logRaw.dropFirst(4)).write(to: URL(fileURLWithPath: "\(work)/sh.sig"))
        r = try Harness.openssl(["x509", "-in", "shanghai-cert/node.pem", "-pubkey", "-noout", "-out", "shanghai.pub"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        r = try Harness.openssl(["dgst", "-sha256", "-verify", "shanghai.pub", "-signature", "sh.sig", "sh.text"], cwd: work)
        #expect(r.ok && (r.stdout + r.stderr).contains("Verified OK"), "\(r.stdout)\(r.stderr)")
        // Its key ID is SHA-256 of the certificate's SubjectPublicKeyInfo, as signed-note type 0x02 says.
        r = try Harness.openssl(["pkey", "-pubin", "-in", "shanghai.pub", "-outform", "DER", "-out", "shanghai.spki"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        let spki = try Data(contentsOf: URL(fileURLWithPath: "\(work)/shanghai.spki"))
        r = try Harness.openssl(["dgst", "-sha256", "-r", "shanghai.spki"], cwd: work)
        #expect(r.ok && r.stdout.hasPrefix(logRaw.prefix(4).map { String(format: "%02x", $0) }.joined()), "\(r.stdout)")
        r = try cm("audit", "vkey", "--dir", "shanghai")
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix("+" + (Data([0x02]) + spki).base64EncodedString()), "\(r.stdout)")

        // shanghai's bundle verifies offline with hangzhou's cosignature counted, and hangzhou's
        // with shanghai's (a P-256 witness).
        r = try cm("audit", "export", "--dir", "shanghai", "--out", "sh.bundle")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("audit", "verify-bundle", "sh.bundle", "--ca", "fed/ca.pem", "--quorum", "1")
        #expect(r.ok && r.stdout.contains("cosigned by hangzhou"), "\(r.stdout)\(r.stderr)")
        r = try cm("audit", "export", "--dir", "hangzhou", "--out", "hz.bundle")
        #expect(r.ok, "\(r.stderr)")
        r = try cm("audit", "verify-bundle", "hz.bundle", "--ca", "fed/ca.pem", "--quorum", "1")
        #expect(r.ok && r.stdout.contains("cosigned by shanghai"), "\(r.stdout)\(r.stderr)")
        // Policy versions are signed by the P-256 node too.
        try "shares: []\n".write(toFile: work + "/sh-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "shanghai", "sh-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        r = try cm("policy", "show", "--dir", "shanghai", "--json")
        #expect(r.ok && r.stdout.contains("\u{2014} shanghai.citymesh/policy "), "the applied version carries a signed note: \(r.stdout.prefix(900))")
        for d in [hz, sh] { #expect(d.terminate() == 0, "\(d.log)") }
    }
}
