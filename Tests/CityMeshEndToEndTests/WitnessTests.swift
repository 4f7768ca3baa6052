import Foundation
import Testing

/// Peers as witnesses: a city whose ledger history is rewritten behind its back is caught by a
/// peer that kept its earlier signed checkpoint — even across the peer's restart — and the peer
/// ledgers the fork with both signed checkpoints as evidence.
@Suite("End to end: witnessing", .serialized)
struct WitnessTests {
    @Test("a rewritten history is caught by a peer, which keeps both signed checkpoints as evidence")
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

        // hangzhou's history is rewritten: the leaf of its first entry is replaced.
        #expect(hz.terminate() == 0)
        r = try Harness.run("/usr/bin/sqlite3", ["hangzhou/citymesh.db", "UPDATE ledger SET leaf = zeroblob(32) WHERE idx = 0"], cwd: work)
        #expect(r.ok, "\(r.stderr)")
        hz = try Daemon(dir: "hangzhou", cwd: work)
        #expect(try hz.waitReady(admin: cities[0].admin), "\(hz.log)")
        r = try cm("dataset", "create", "--dir", "hangzhou", "air", "--key", "station", "--field", "station:string")
        #expect(r.ok, "\(r.stderr)")

        try PeerTransportTests.eventually("suzhou catches hangzhou's two histories", seconds: 40) {
            let check = try cm("peers", "checkpoint", "--dir", "suzhou", "hangzhou")
            if !check.ok { #expect(check.stderr.contains("two histories") || check.stderr.contains("not connected") || check.stderr.contains("no connection"), "\(check.stderr)") }
            return check.stderr.contains("two histories")
        }
        r = try cm("audit", "log", "--dir", "suzhou", "--kind", "peer.forked", "--json")
        #expect(r.ok && r.stdout.contains("\"peer\":\"hangzhou\""), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.components(separatedBy: "hangzhou.citymesh/ledger").count >= 3, "both signed checkpoints are in the evidence: \(r.stdout)")
        #expect(sz.log.contains("shows two histories"), "\(sz.log)")
        for d in [hz, sz] { #expect(d.terminate() == 0, "\(d.log)") }
    }
}
