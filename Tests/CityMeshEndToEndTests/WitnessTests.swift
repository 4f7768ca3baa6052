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
                #expect(["two histories", "no connection", "no checkpoint has been signed yet"].contains { check.stderr.contains($0) }, "\(check.stderr)")
            }
            return check.stderr.contains("two histories")
        }
        r = try cm("audit", "log", "--dir", "suzhou", "--kind", "peer.forked", "--json")
        #expect(r.ok && r.stdout.contains("\"peer\":\"hangzhou\""), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.components(separatedBy: "hangzhou.citymesh/ledger").count >= 3, "both signed checkpoints are in the evidence: \(r.stdout)")
        #expect(sz.log.contains("shows two histories"), "\(sz.log)")
        for d in [hz, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }
}
