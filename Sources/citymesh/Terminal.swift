import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Output helpers: stdout for results, stderr for messages and progress.
enum Terminal {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }

    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// Prints rows as aligned columns.
    static func table(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for r in rows {
            for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], min(c.count, 40)) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                let cell = c.count > 40 ? String(c.prefix(39)) + "…" : c
                return i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        print(line(header))
        for r in rows { print(line(r)) }
    }

    static func number(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, ch) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 && ch != "-" { out.append(",") }
            out.append(ch)
        }
        return String(out.reversed())
    }
}

/// A progress bar on stderr, redrawn at most ten times a second; silent when stderr is not a terminal.
final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let lock = NSLock()
    private var lastDraw = Date.distantPast
    private let started = Date()
    private let unit: String?

    /// `unit` names what is counted (e.g. "entries"); without it the counts are bytes.
    init(label: String, unit: String? = nil) {
        self.label = label
        self.unit = unit
        self.enabled = Terminal.stderrIsTerminal
    }

    func update(done: Int64, total: Int64) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= 0.1 || done == total else { return }
        lastDraw = now
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let perSecond = Double(done) / max(0.001, now.timeIntervalSince(started))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let rate = unit.map { String(format: "%@ of %@ %@, %.0f/s", Terminal.number(Int(done)), Terminal.number(Int(total)), $0, perSecond) }
            ?? String(format: "%.1f MB/s", perSecond / 1_048_576)
        let text = String(format: "\r%@ [%@] %3d%%  %@ ", label, bar, Int(fraction * 100), rate)
        FileHandle.standardError.write(Data(text.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
