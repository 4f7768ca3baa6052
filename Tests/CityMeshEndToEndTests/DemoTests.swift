import Foundation
import Testing

/// `citymesh demo`, the README's first command, run as a new user runs it.
@Suite("End to end: the demo", .serialized)
struct DemoTests {
    /// Starts `citymesh demo --dir dir` (running until Ctrl-C) in `work`, output to demo.out, and
    /// waits until it has finished its steps; returns the process and what it printed.
    static func launch(_ work: String, dir: String) throws -> (Process, String) {
        let outPath = work + "/demo.out"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Harness.binary)
        p.arguments = ["demo", "--dir", dir]
        p.currentDirectoryURL = URL(fileURLWithPath: work)
        p.standardOutput = FileHandle(forWritingAtPath: outPath)
        p.standardError = p.standardOutput
        try p.run()
        var out = ""
        try PeerTransportTests.eventually("the demo to finish its steps and wait", seconds: 120) {
            out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            return out.contains("Press Ctrl-C") || !p.isRunning
        }
        return (p, out)
    }

    /// The end of each node's log, for a failure message: what CI shows is all there is to go on.
    static func nodeLogs(_ dir: String) -> String {
        ["hangzhou", "shanghai", "suzhou"].map { city in
            let log = (try? String(contentsOfFile: "\(dir)/\(city)/serve.log", encoding: .utf8)) ?? "(no log)"
            let lines = log.split(separator: "\n")
            let notable = lines.filter { $0.contains("warning") || $0.contains("error") || $0.contains("critical") }.suffix(30)
            return "--- \(city): warnings and errors ---\n" + notable.joined(separator: "\n")
                + "\n--- \(city): last lines ---\n" + lines.suffix(25).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Stops a demo still running (a test that failed half-way) the way a user does, with Ctrl-C,
    /// so its nodes stop with it; SIGKILL would leave them running without their parent.
    static func stop(_ p: Process) {
        guard p.isRunning else { return }
        kill(p.processIdentifier, SIGINT)
        let deadline = Date().addingTimeInterval(30)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }

    /// What the demo has printed so far.
    static func output(_ work: String) -> String { (try? String(contentsOfFile: work + "/demo.out", encoding: .utf8)) ?? "" }

    @Test("demo --exit-when-done: three nodes converge, the conflict is listed, the bundle verifies and the ledgers reconcile; every node stops cleanly")
    func demo() throws {
        let work = try Harness.tempDir("demo")
        let r = try Harness.citymesh(["demo", "--dir", "fed-demo", "--exit-when-done"], cwd: work)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)\n\(Self.nodeLogs(work + "/fed-demo"))")
        let out = r.stdout
        for step in 1...9 { #expect(out.contains("[\(step)/9]"), "step \(step) ran: \(out)") }
        #expect(out.contains("hangzhou: peer port") && out.contains("connected to shanghai, suzhou"), "\(out)")
        #expect(out.contains("both members hold all 22 records; no sensor_serial and no tax_id left hangzhou"), "\(out)")
        #expect(out.contains("does not let shanghai write name"), "\(out)")
        // The conflict table: the overwritten value, by whom, and the kept one.
        let conflict = try #require(out.split(separator: "\n").first { $0.contains("91330100MA2H") && $0.contains("\"") }, "\(out)")
        #expect(conflict.contains("\"suspended\"") && conflict.contains("\"under-inspection\""), "\(conflict)")
        #expect(out.contains("shanghai's and suzhou's registries are byte-identical"), "\(out)")
        #expect(out.contains("bundle OK:") && out.contains("are in both ledgers with both signatures"), "\(out)")
        #expect(out.contains("Every step checked out.") && out.contains("All nodes stopped cleanly."), "\(out)")

        // What it left behind checks out again, offline, by an independent run of the auditor's commands.
        let dir = work + "/fed-demo"
        var check = try Harness.citymesh(["audit", "verify-bundle", "hangzhou.bundle", "--ca", "fed/ca.pem"], cwd: dir)
        #expect(check.ok && check.stdout.contains("bundle OK"), "\(check.stdout)\(check.stderr)")
        check = try Harness.citymesh(["audit", "reconcile", "hangzhou.bundle", "suzhou.bundle", "--ca", "fed/ca.pem"], cwd: dir)
        #expect(check.ok, "\(check.stdout)\(check.stderr)")
        for city in ["hangzhou", "shanghai", "suzhou"] {
            let log = (try? String(contentsOfFile: "\(dir)/\(city)/serve.log", encoding: .utf8)) ?? ""
            #expect(log.contains("node stopped"), "\(city) shut down cleanly: \(log.suffix(2000))")
        }
        // A second demo into the same directory is refused with what to do instead.
        let again = try Harness.citymesh(["demo", "--dir", "fed-demo", "--exit-when-done"], cwd: work)
        #expect(again.status != 0 && again.stderr.contains("is not empty"), "\(again.stderr)")
    }

    @Test("without --exit-when-done the federation keeps running until Ctrl-C, which stops every node cleanly")
    func ctrlC() throws {
        let work = try Harness.tempDir("demo-int")
        var (p, out) = try Self.launch(work, dir: "fed-demo")
        defer { Self.stop(p) }
        #expect(p.isRunning, "\(out)\n\(Self.nodeLogs(work + "/fed-demo"))")
        #expect(out.contains("http://127.0.0.1:") && out.contains("citymesh peers --dir shanghai"), "admin URLs and example commands: \(out)")
        // The nodes still answer while the demo waits.
        let peers = try Harness.citymesh(["peers", "--dir", "fed-demo/hangzhou"], cwd: work)
        #expect(peers.ok && peers.stdout.contains("shanghai"), "\(peers.stdout)\(peers.stderr)")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        out = Self.output(work)
        #expect(p.terminationStatus == 0, "\(out)")
        #expect(out.contains("Stopped: every node shut down cleanly."), "\(out)")
        let after = try Harness.citymesh(["peers", "--dir", "fed-demo/hangzhou"], cwd: work)
        #expect(!after.ok, "the nodes are gone after Ctrl-C")
    }
}
