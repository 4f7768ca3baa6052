import Foundation
import Testing

/// A city whose clock runs ahead (threat model G8), with a real clock skew: the owner's daemon
/// runs under `faketime`, 90 s in the future, and the member's clock is the machine's.
@Suite("End to end: a city whose clock runs ahead")
struct ClockTests {
    static let faketime = "/usr/bin/faketime"

    /// The processes whose parent is `pid` (from /proc).
    static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { p in
            guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 2 && Int32(fields[1]) == pid
        }
    }

    @Test(
        "batches stamped more than 60 s ahead are held back, refused in the ledger with the reason, and taken once the clock catches up",
        .enabled(if: FileManager.default.isExecutableFile(atPath: faketime), "needs faketime (apt-get install faketime)"))
    func clockAhead() throws {
        let work = try Harness.tempDir("clock")
        let cities = try PeerTransportTests.setUp(work, cities: ["hangzhou", "suzhou"])
        func cm(_ args: String...) throws -> CommandResult { try Harness.citymesh(args, cwd: work) }
        func eventually(_ what: String, seconds: Double = 30, _ condition: () throws -> Bool) throws {
            try PeerTransportTests.eventually(what, seconds: seconds, condition)
        }
        // faketime moves only the wall clock (timers run on the monotonic one, left whole). It
        // runs citymesh as its child and waits for it.
        let hz = try Daemon(dir: "hangzhou", cwd: work, wrapper: ["/usr/bin/env", "FAKETIME_DONT_FAKE_MONOTONIC=1", Self.faketime, "-f", "+90s"])
        let wrapperPID = hz.process.processIdentifier
        defer { for child in Self.children(of: wrapperPID) { kill(child, SIGKILL) } }  // if the test ends early
        let sz = try Daemon(dir: "suzhou", cwd: work)
        for (d, c) in zip([hz, sz], cities) {
            #expect(try d.waitReady(admin: c.admin), "\(d.process.isRunning ? "running" : "exited \(d.process.terminationStatus) (\(d.process.terminationReason))"): \(d.log)")
        }

        var r = try cm("dataset", "create", "--dir", "hangzhou", "air", "--key", "station", "--field", "station:string", "--field", "pm25:double")
        #expect(r.ok, "\(r.stderr)")
        try "accept:\n  - from: hangzhou\n    share: air-open\n".write(toFile: work + "/sz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "suzhou", "sz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try """
            shares:
              - id: air-open
                dataset: air
                to: [suzhou]
                fields: [station, pm25]
                purpose: "public air-quality information"
                legal_basis: "open data regulation"
                valid_until: 2099-12-31
                on_revoke: keep
            """.write(toFile: work + "/hz-policy.yaml", atomically: true, encoding: .utf8)
        r = try cm("policy", "apply", "--dir", "hangzhou", "hz-policy.yaml")
        #expect(r.ok, "\(r.stdout)\(r.stderr)")
        try eventually("suzhou accepted") { try AgreementTests.state("hangzhou", work, share: "air-open", member: "suzhou") == "active" }

        // hangzhou's writes are stamped by its clock, 90 s ahead of suzhou's.
        r = try cm("record", "put", "--dir", "hangzhou", "air", "S-1", "pm25=35.5")
        #expect(r.ok, "\(r.stderr)")
        let written = Date()
        try eventually("suzhou refused the batch for its clock, in its ledger") {
            let log = try cm("audit", "log", "--dir", "suzhou", "--kind", "exchange.refused", "--json").stdout
            return log.contains("ahead of this node's clock") && log.contains("check the clocks (NTP) of hangzhou")
        }
        #expect(sz.log.contains("ahead of this node's clock"), "the refusal is logged: \(sz.log)")
        r = try cm("export", "--dir", "suzhou", "hangzhou/air", "--jsonl")
        #expect(!r.stdout.contains("S-1"), "nothing of the batch was merged while it is ahead: \(r.stdout)\(r.stderr)")
        // Not lost: once suzhou's clock is within 60 s of the stamp (about 30 s after the write),
        // the batch is pulled again and merged.
        try eventually("suzhou took the batch once its clock caught up", seconds: 90) {
            try cm("export", "--dir", "suzhou", "hangzhou/air", "--jsonl").stdout.contains("S-1")
        }
        #expect(Date().timeIntervalSince(written) > 25, "held back for about 30 s, not taken at once")
        // SIGTERM goes to citymesh itself (faketime would not pass it on); faketime then exits
        // with its child's status.
        for child in Self.children(of: hz.process.processIdentifier) { kill(child, SIGTERM) }
        hz.process.waitUntilExit()
        #expect(hz.process.terminationStatus == 0 && sz.terminate() == 0)
    }
}
