import ArgumentParser
import CityMeshCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a three-city federation on this machine and narrate what it does.",
        discussion: """
            Example:
              swift run -c release citymesh demo
              citymesh demo --dir /tmp/delta --exit-when-done

            Creates a federation CA and three cities (hangzhou, shanghai, suzhou) under --dir (a new
            temporary directory by default), starts three real nodes ('citymesh serve') on loopback
            over mutual TLS, and then, step by step: loads an air-quality feed and an enterprise
            registry at hangzhou, shares the feed read-only with a field view and the registry with
            write rights on one field, lets the members accept, watches the records replicate,
            makes two members edit the same record at the same moment, shows the conflict the merge
            kept and the state all three converged to, finds the receipts of the exchanges in both
            ledgers, and verifies evidence bundles offline.

            It then keeps the federation running and prints the admin addresses and commands to try,
            until Ctrl-C, which stops every node cleanly. --exit-when-done stops after the last step
            (for scripts and tests). Exits 0 when every step's check holds, 1 otherwise.
            """)

    @Option(help: "Where to create the federation (must be new or empty; default: a new temporary directory).") var dir: String?
    @Flag(help: "Stop the nodes and exit after the last step instead of running until Ctrl-C.") var exitWhenDone = false

    func run() async throws {
        let work = try DemoRun.prepare(dir)
        let demo = DemoRun(work: work)
        // Ctrl-C or SIGTERM: stop the nodes cleanly, then exit.
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { demo.interrupted() }
            source.resume()
            sources.append(source)
        }
        defer { sources.forEach { $0.cancel() } }
        do {
            try demo.run()
        } catch {
            emit("")
            emit("The demo stopped: \(error)")
            emit("The nodes' logs are in \(work)/<city>/serve.log.")
            demo.stopNodes()
            throw ExitCode(1)
        }
        if exitWhenDone {
            guard demo.stopNodes() else {
                emit("\nA node did not stop cleanly: see \(work)/<city>/serve.log.")
                throw ExitCode(1)
            }
            emit("\nAll nodes stopped cleanly. Everything is kept in \(work).")
            return
        }
        demo.printWhatNext()
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

/// The demo's steps, each a run of this same binary's commands against three real nodes.
final class DemoRun: @unchecked Sendable {
    struct City {
        let name: String
        let listen: Int
        let admin: Int
    }

    let work: String
    let binary: String
    let cities: [City]
    var nodes: [Process] = []
    let lock = NSLock()

    static func prepare(_ dir: String?) throws -> String {
        let fm = FileManager.default
        guard let dir else {
            let base = fm.temporaryDirectory.appendingPathComponent("citymesh-demo-\(UUID().uuidString.prefix(8).lowercased())").path
            try fm.createDirectory(atPath: base, withIntermediateDirectories: true)
            return base
        }
        let path = URL(fileURLWithPath: dir).standardizedFileURL.path
        if fm.fileExists(atPath: path) {
            guard (try fm.contentsOfDirectory(atPath: path)).isEmpty else {
                throw CityMeshError(.invalidArgument, "\(dir) is not empty: give a new or empty directory, or leave out --dir for a temporary one")
            }
        } else {
            try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        return path
    }

    init(work: String) {
        self.work = work
        self.binary = Bundle.main.executablePath ?? CommandLine.arguments[0]
        cities = ["hangzhou", "shanghai", "suzhou"].map { City(name: $0, listen: DemoRun.freePort(), admin: DemoRun.freePort()) }
    }

    /// A loopback port nothing listens on now (the OS picks it).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    func interrupted() {
        guard stopNodes() else {
            emit("\nStopped, but a node did not shut down cleanly: see \(work)/<city>/serve.log.")
            exit(1)
        }
        emit("\nStopped: every node shut down cleanly. The federation is kept in \(work).")
        exit(0)
    }

    // MARK: Running commands

    struct Result {
        let status: Int32
        let out: String
        let err: String
        var ok: Bool { status == 0 }
    }

    /// Runs `citymesh args…` in the work directory and returns what it printed.
    @discardableResult
    func cm(_ args: String...) throws -> Result { try cm(args) }

    func cm(_ args: [String]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: work)
        let id = UUID().uuidString
        let outPath = work + "/.out-\(id)", errPath = work + "/.err-\(id)"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        p.standardOutput = FileHandle(forWritingAtPath: outPath)
        p.standardError = FileHandle(forWritingAtPath: errPath)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return Result(status: p.terminationStatus, out: out, err: err)
    }

    /// Runs a command that must succeed.
    @discardableResult
    func must(_ args: String...) throws -> Result {
        let r = try cm(args)
        guard r.ok else { throw DemoFailure("'citymesh \(args.joined(separator: " "))' failed: \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))") }
        return r
    }

    /// Polls `condition` until it holds, for at most `seconds`.
    /// Polls `condition` until it holds; on timeout the failure says what `seen` reports last.
    func wait(_ what: String, seconds: Double = 60, seen: (() throws -> String)? = nil, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.25)
        }
        let last = (try? seen?()).map { " (last seen: \($0))" } ?? ""
        throw DemoFailure("\(what) did not happen within \(Int(seconds)) s\(last)")
    }

    func write(_ text: String, to file: String) throws {
        try text.write(toFile: work + "/" + file, atomically: true, encoding: .utf8)
    }

    // MARK: Narration

    var stepNumber = 0
    static let steps = 9

    func step(_ title: String) {
        stepNumber += 1
        emit("\n[\(stepNumber)/\(Self.steps)] \(title)")
    }

    func say(_ text: String) { emit("      \(text)") }

    func ok(_ text: String) { emit("   ✓  \(text)") }

    // MARK: The steps

    func run() throws {
        emit("CityMesh demo: three cities of the Yangtze River Delta share data without a central platform.")
        emit("Working directory: \(work)")

        step("A federation: one CA, three city certificates, three node directories")
        try must("federation", "init", "--out", "fed", "--name", "Yangtze Delta (demo)")
        for c in cities {
            try must("federation", "issue", "--ca", "fed", "--city", c.name, "--host", "localhost", "--out", "\(c.name)-cert")
            let seeds = c.name == "hangzhou" ? [] : ["--seed", "hangzhou@127.0.0.1:\(cities[0].listen)"]
            try cm(["init", "--dir", c.name, "--city", c.name, "--ca", "fed/ca.pem", "--cert", "\(c.name)-cert/node.pem",
                    "--key", "\(c.name)-cert/node.key", "--listen", "127.0.0.1:\(c.listen)", "--admin", "127.0.0.1:\(c.admin)",
                    "--crl", "fed/crl.pem"] + seeds).orThrow("init \(c.name)")
        }
        ok("CA in fed/, a certificate and a node directory per city (hangzhou, shanghai, suzhou)")

        step("Three nodes start on loopback and connect over mutual TLS")
        for c in cities { try startNode(c) }
        for c in cities {
            try wait("\(c.name)'s admin API to answer") { try cm("peers", "--dir", c.name).ok }
        }
        try wait("hangzhou to connect to both other cities") { try connected("hangzhou").count == 2 }
        for c in cities { say("\(c.name): peer port \(c.listen), admin http://127.0.0.1:\(c.admin), connected to \(try connected(c.name).joined(separator: ", "))") }
        ok("the cities connected over mutual TLS 1.3, each checking the other's certificate against the federation CA")

        step("Hangzhou loads its data: an air-quality feed and an enterprise registry")
        try must("dataset", "create", "--dir", "hangzhou", "air-quality", "--key", "station", "--field", "station:string", "--field", "district:string",
                 "--field", "pm25:double", "--field", "no2:double", "--field", "measured_at:timestamp", "--field", "sensor_serial:string")
        try write(Self.airQualityCSV(), to: "air-quality.csv")
        try must("import", "--dir", "hangzhou", "air-quality", "--csv", "air-quality.csv")
        try must("dataset", "create", "--dir", "hangzhou", "registry", "--key", "credit_code", "--field", "credit_code:string", "--field", "name:string",
                 "--field", "district:string", "--field", "status:string", "--field", "tax_id:string")
        try write(Self.registryCSV(), to: "registry.csv")
        try must("import", "--dir", "hangzhou", "registry", "--csv", "registry.csv")
        ok("air-quality: \(Self.stations.count) stations (with each sensor's serial number, which stays at home)")
        ok("registry: \(Self.enterprises.count) enterprises (with their tax ids, which stay at home)")

        step("Sharing: hangzhou's policy offers both datasets; shanghai and suzhou accept")
        try write(Self.hangzhouPolicy, to: "hangzhou-policy.yaml")
        try write("accept:\n  - from: hangzhou\n    share: air-open\n  - from: hangzhou\n    share: registry-rw\n", to: "member-policy.yaml")
        for m in ["shanghai", "suzhou"] { try must("policy", "apply", "--dir", m, "member-policy.yaml") }
        try must("policy", "apply", "--dir", "hangzhou", "hangzhou-policy.yaml")
        say("air-open: air-quality to shanghai and suzhou, read-only, without sensor_serial")
        say("registry-rw: the registry to shanghai and suzhou, without tax_id; members may write 'status'")
        try wait("both members to accept both shares") {
            let out = try cm("agreement", "list", "--dir", "hangzhou", "--json").out
            return out.components(separatedBy: "\"state\" : \"active\"").count - 1 >= 4
        }
        ok("four agreements active, each signed by hangzhou (offer) and by the member (acceptance)")

        step("Records replicate to the members, only within each share's view")
        try wait("shanghai and suzhou to hold every record", seen: {
            let counts = try ["shanghai", "suzhou"].map { m in
                "\(m) has \(try self.lines(m, "hangzhou/air-quality").count)/\(Self.stations.count) stations and \(try self.lines(m, "hangzhou/registry").count)/\(Self.enterprises.count) enterprises"
            }
            return counts.joined(separator: ", ") + "; " + (try self.cm("peers", "--dir", "hangzhou").out).split(separator: "\n").joined(separator: " | ")
        }) {
            try ["shanghai", "suzhou"].allSatisfy { m in
                try lines(m, "hangzhou/air-quality").count == Self.stations.count && lines(m, "hangzhou/registry").count == Self.enterprises.count
            }
        }
        let sample = try lines("shanghai", "hangzhou/air-quality")[0]
        guard !sample.contains("sensor_serial") else { throw DemoFailure("sensor_serial reached shanghai: \(sample)") }
        guard try !lines("suzhou", "hangzhou/registry").joined().contains("tax_id") else { throw DemoFailure("tax_id reached suzhou") }
        say("shanghai sees: \(sample)")
        ok("both members hold all \(Self.stations.count + Self.enterprises.count) records; no sensor_serial and no tax_id left hangzhou")
        let refused = try cm("record", "put", "--dir", "shanghai", "hangzhou/registry", Self.enterprises[0].code, "name=Renamed")
        guard !refused.ok else { throw DemoFailure("shanghai could write a field the share does not grant") }
        ok("shanghai may not rename an enterprise: \(refused.err.replacingOccurrences(of: "error: ", with: "").trimmingCharacters(in: .whitespacesAndNewlines))")

        step("Shanghai and suzhou update the same enterprise at the same moment")
        var conflictKey: String?
        for e in Self.enterprises.dropFirst(2).prefix(5) where conflictKey == nil {
            say("\(e.code) (\(e.name)): shanghai sets status=suspended, suzhou sets status=under-inspection")
            let a = try spawn(["record", "put", "--dir", "shanghai", "hangzhou/registry", e.code, "status=suspended"])
            let b = try spawn(["record", "put", "--dir", "suzhou", "hangzhou/registry", e.code, "status=under-inspection"])
            a.waitUntilExit()
            b.waitUntilExit()
            guard a.terminationStatus == 0, b.terminationStatus == 0 else { throw DemoFailure("a member's write of \(e.code) was refused") }
            var agreed = ""
            try wait("the three cities to agree on \(e.code)") {
                let values = try cities.map { c in try status(c.name, e.code) }
                agreed = values[0] ?? ""
                return values[0] != nil && values[0] != "active" && values.allSatisfy { $0 == values[0] }
            }
            say("all three converged to status=\(agreed)")
            if try cm("record", "conflicts", "--dir", "hangzhou", "registry", "--json").out.contains("\"\(e.code)\"") { conflictKey = e.code }
        }
        guard let key = conflictKey else { throw DemoFailure("no conflict was recorded: the writes were not concurrent") }
        ok("the merge kept one value everywhere and recorded the one it overwrote:")
        for line in try must("record", "conflicts", "--dir", "hangzhou", "registry").out.split(separator: "\n") { say(String(line)) }

        step("Hangzhou's data admin settles the conflict; the resolution replicates")
        try must("record", "resolve", "--dir", "hangzhou", "registry", key, "status", "--value", "suspended")
        try wait("the resolution to reach both members") { try ["shanghai", "suzhou"].allSatisfy { try status($0, key) == "suspended" } }
        let a = try lines("shanghai", "hangzhou/registry"), b = try lines("suzhou", "hangzhou/registry")
        guard a == b else { throw DemoFailure("shanghai's and suzhou's registries differ") }
        ok("\(key) is 'suspended' in all three cities; shanghai's and suzhou's registries are byte-identical")

        step("Every exchange left a receipt, signed by both cities, in both ledgers")
        try wait("receipts in hangzhou's and shanghai's ledgers") {
            try ["hangzhou", "shanghai"].allSatisfy { try receipts($0) > 0 }
        }
        for c in cities { say("\(c.name): \(try receipts(c.name)) exchange receipts in its ledger") }
        let verified = try must("audit", "verify", "--dir", "hangzhou").out.trimmingCharacters(in: .whitespacesAndNewlines)
        ok("hangzhou's ledger: \(verified)")

        step("An auditor checks the evidence offline")
        var reconcile = Result(status: -1, out: "", err: "")
        try wait("the two ledgers to reconcile (receipts are countersigned within seconds)", seconds: 60) {
            try must("audit", "export", "--dir", "hangzhou", "--out", "hangzhou.bundle")
            try must("audit", "export", "--dir", "suzhou", "--out", "suzhou.bundle")
            reconcile = try cm("audit", "reconcile", "hangzhou.bundle", "suzhou.bundle", "--ca", "fed/ca.pem")
            return reconcile.ok
        }
        let bundle = try must("audit", "verify-bundle", "hangzhou.bundle", "--ca", "fed/ca.pem")
        for line in bundle.out.split(separator: "\n").prefix(2) { say(String(line)) }
        for line in reconcile.out.split(separator: "\n").prefix(3) { say(String(line)) }
        ok("hangzhou.bundle verifies with nothing but the file and the CA; hangzhou's and suzhou's ledgers agree on every exchange")
        emit("\nEvery step checked out.")
    }

    // MARK: Helpers of the steps

    func lines(_ dir: String, _ dataset: String) throws -> [String] {
        let r = try cm("export", "--dir", dir, dataset, "--jsonl")
        return r.ok ? r.out.split(separator: "\n").map(String.init) : []
    }

    func status(_ dir: String, _ key: String) throws -> String? {
        let r = try cm("record", "get", "--dir", dir, dir == "hangzhou" ? "registry" : "hangzhou/registry", key, "--json")
        guard r.ok, let json = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] else { return nil }
        return (json["values"] as? [String: Any])?["status"] as? String
    }

    /// The cities `dir` has a connection with.
    func connected(_ dir: String) throws -> [String] {
        let r = try cm("peers", "--dir", dir, "--json")
        guard r.ok, let json = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] else { return [] }
        return ((json["peers"] as? [[String: Any]]) ?? []).filter { $0["state"] as? String == "connected" }.compactMap { $0["city"] as? String }.sorted()
    }

    func receipts(_ dir: String) throws -> Int {
        try cm("audit", "log", "--dir", dir, "--kind", "exchange.receipt", "--json").out.split(separator: "\n").count
    }

    func spawn(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: work)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    func startNode(_ c: City) throws {
        let log = work + "/\(c.name)/serve.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["serve", "--dir", c.name]
        p.currentDirectoryURL = URL(fileURLWithPath: work)
        p.standardOutput = FileHandle(forWritingAtPath: log)
        p.standardError = p.standardOutput
        p.standardInput = FileHandle.nullDevice
        try p.run()
        lock.withLock { nodes.append(p) }
    }

    /// SIGTERM to every node, then waits for each to exit; true if every one exited 0 (a clean stop).
    @discardableResult
    func stopNodes() -> Bool {
        let running = lock.withLock { () -> [Process] in
            defer { nodes.removeAll() }
            return nodes
        }
        for p in running where p.isRunning { p.terminate() }
        var clean = true
        for p in running {
            let deadline = Date().addingTimeInterval(30)
            while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
                clean = false
            } else if p.terminationStatus != 0 {
                clean = false
            }
        }
        return clean
    }

    func printWhatNext() {
        emit("""

            The federation keeps running. Admin APIs (bearer token in each node directory's admin.token):
            """)
        for c in cities { emit("  \(c.name.padding(toLength: 9, withPad: " ", startingAt: 0)) http://127.0.0.1:\(c.admin)   --dir \(work)/\(c.name)") }
        emit("""

            The web console (docs/console.md): open http://127.0.0.1:\(cities[0].admin)/console and log in
            with the token in \(work)/\(cities[0].name)/admin.token (each node serves its own at /console).

            Try, from \(work):
              citymesh peers --dir shanghai                                   # connections, SWIM state, share sync
              citymesh export --dir suzhou hangzhou/air-quality --jsonl        # a member's view of the feed
              citymesh record put --dir shanghai hangzhou/registry \(Self.enterprises[1].code) status=closed
              citymesh record get --dir hangzhou registry \(Self.enterprises[1].code)
              citymesh audit log --dir hangzhou --kind exchange
              citymesh audit witnesses --dir hangzhou                          # peers that cosigned hangzhou's checkpoints
              citymesh policy explain --dir hangzhou --city suzhou --dataset registry
              curl -H "Authorization: Bearer $(cat hangzhou/admin.token)" http://127.0.0.1:\(cities[0].admin)/metrics

            Press Ctrl-C to stop every node.
            """)
    }

    // MARK: Sample data

    static let stations: [(code: String, district: String)] = [
        ("HZ-XH-01", "Xihu"), ("HZ-XH-02", "Xihu"), ("HZ-BJ-01", "Binjiang"), ("HZ-BJ-02", "Binjiang"), ("HZ-GS-01", "Gongshu"),
        ("HZ-SC-01", "Shangcheng"), ("HZ-SC-02", "Shangcheng"), ("HZ-YH-01", "Yuhang"), ("HZ-YH-02", "Yuhang"), ("HZ-XS-01", "Xiaoshan"),
        ("HZ-XS-02", "Xiaoshan"), ("HZ-LA-01", "Lin'an"),
    ]

    static func airQualityCSV() -> String {
        var csv = "station,district,pm25,no2,measured_at,sensor_serial\n"
        for (i, s) in stations.enumerated() {
            let pm25 = Double(18 + (i * 7) % 41) + 0.5
            let no2 = Double(22 + (i * 11) % 37)
            csv += "\(s.code),\"\(s.district)\",\(pm25),\(no2),2026-11-30T08:00:00Z,SN-\(4_100_200 + i * 17)\n"
        }
        return csv
    }

    static let enterprises: [(code: String, name: String, district: String)] = [
        ("91330100MA2H0001", "West Lake Tea Cooperative", "Xihu"), ("91330100MA2H0002", "Qiantang Logistics", "Binjiang"),
        ("91330100MA2H0003", "Grand Canal Textiles", "Gongshu"), ("91330100MA2H0004", "Hangzhou Bay Electronics", "Xiaoshan"),
        ("91330100MA2H0005", "Liangzhu Ceramics", "Yuhang"), ("91330100MA2H0006", "Tianmu Mountain Water", "Lin'an"),
        ("91330100MA2H0007", "Xixi Wetland Tours", "Xihu"), ("91330100MA2H0008", "Binjiang Robotics", "Binjiang"),
        ("91330100MA2H0009", "Hefang Street Foods", "Shangcheng"), ("91330100MA2H0010", "Xiaoshan Auto Parts", "Xiaoshan"),
    ]

    static func registryCSV() -> String {
        var csv = "credit_code,name,district,status,tax_id\n"
        for (i, e) in enterprises.enumerated() { csv += "\(e.code),\(e.name),\(e.district),active,TAX-33-\(700_100 + i * 13)\n" }
        return csv
    }

    static let hangzhouPolicy = """
        # Hangzhou's sharing policy (docs/policy.md).
        shares:
          - id: air-open
            dataset: air-quality
            to: [shanghai, suzhou]
            fields: [station, district, pm25, no2, measured_at]    # sensor_serial stays here
            purpose: "regional air-quality monitoring"
            legal_basis: "Yangtze Delta environmental data MoU, art. 4"
            valid_until: 2099-12-31
            on_revoke: keep
          - id: registry-rw
            dataset: registry
            to: [shanghai, suzhou]
            fields: [credit_code, name, district, status]         # tax_id stays here
            write: [status]                                        # members may update the status
            purpose: "co-maintained cross-city enterprise registry"
            legal_basis: "Yangtze Delta market supervision agreement"
            valid_until: 2099-12-31
            on_revoke: keep

        """
}

struct DemoFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension DemoRun.Result {
    func orThrow(_ what: String) throws {
        guard ok else { throw DemoFailure("\(what) failed: \(err.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }
}

/// Writes a line to stdout at once (unbuffered), so the narration keeps pace also into a pipe.
func emit(_ line: String = "") {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
