import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs the real `citymesh` binary (built next to this test bundle) and other commands.
struct CommandResult {
    let status: Int32
    let stdout: String
    let stderr: String
    var ok: Bool { status == 0 }
}

enum Harness {
    /// The `citymesh` executable: $CITYMESH_BIN, else the one built beside this test bundle.
    static var binary: String {
        if let env = ProcessInfo.processInfo.environment["CITYMESH_BIN"] { return env }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("citymesh").path
    }

    static func tempDir(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-e2e-\(label)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @discardableResult
    static func run(_ executable: String, _ args: [String], cwd: String, env: [String: String] = [:], stdin: String? = nil) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "CITYMESH_DIR")
        environment.removeValue(forKey: "CITYMESH_TOKEN")
        for (k, v) in env { environment[k] = v }
        p.environment = environment
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        // Read both pipes to the end before waiting, so a chatty child never blocks on a full pipe.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return CommandResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    static func citymesh(_ args: [String], cwd: String, env: [String: String] = [:]) throws -> CommandResult {
        try run(binary, args, cwd: cwd, env: env)
    }

    static func openssl(_ args: [String], cwd: String) throws -> CommandResult {
        try run("/usr/bin/openssl", args, cwd: cwd)
    }

    /// Ports handed out so far by this test process; no port is handed out twice.
    private static let nextPort = PortCounter()

    /// A TCP port on 127.0.0.1 that nothing listens on and that no other test in this run will be given.
    ///
    /// Ports come from below the kernel's ephemeral range (32768–60999 on Linux), so a client socket
    /// opened by another test (curl, a peer dialling out) can never be given the same port between the
    /// moment it is chosen here and the moment the daemon binds it. Each candidate is test-bound first.
    static func freePort() -> Int {
        while true {
            let port = nextPort.take()
            if canBind(port) { return port }
        }
    }

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// Hands out ports 20000–32767 in turn, starting at a place chosen by the process id so two test
/// processes running at once are unlikely to walk the same ports.
final class PortCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var next: Int
    init() { next = 20000 + Int(getpid() % 1000) * 12 }
    func take() -> Int {
        lock.lock(); defer { lock.unlock() }
        let port = next
        next = next >= 32767 ? 20000 : next + 1
        return port
    }
}

/// A `citymesh serve` process running in the background.
final class Daemon {
    let process = Process()
    let stderrPath: String

    /// `wrapper` runs the daemon under another program (e.g. `faketime -f +90s`).
    init(dir: String, cwd: String, extra: [String] = [], wrapper: [String] = []) throws {
        stderrPath = cwd + "/serve-\(UUID().uuidString.prefix(6)).log"
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let command = wrapper + [Harness.binary, "serve", "--dir", dir] + extra
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: cwd)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits until the admin API answers /healthz (or the process dies).
    func waitReady(admin: String, timeout: TimeInterval = 30) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { return false }
            let r = try Harness.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(admin)/healthz"], cwd: "/")
            if r.stdout == "200" { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }

    /// Sends SIGTERM and returns the exit status (nil if it did not exit within the timeout).
    func terminate(timeout: TimeInterval = 30) -> Int32? {
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
