import Foundation
import CityMeshCore

/// The console's pictures, drawn on the server as SVG (no script, no external library): the
/// federation around this city and bar charts of exchange volume. Also the policy line diff.
enum ConsoleGraphics {
    static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    /// This city in the middle, every city it knows around it. A line per city: solid and green
    /// when connected, dashed otherwise; its label lists the shares between the two, with an
    /// arrow in the direction records flow and "r" or "rw" for the member's rights.
    static func federation(city: String, peers: [API.Peer], agreements: [API.AgreementInfo]) -> String {
        var others = peers.map(\.city)
        for a in agreements {
            for c in [a.owner, a.member] where c != city && !others.contains(c) { others.append(c) }
        }
        others.sort()
        let width = 760.0, height = max(360.0, 120.0 + Double(others.count) * 18)
        let cx = width / 2, cy = height / 2
        let radius = min(cx, cy) - 60
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-labelledby="fed-title fed-desc" class="federation">
            <title id="fed-title">\(esc(city)) and the cities it exchanges with</title>
            <desc id="fed-desc">\(esc(others.isEmpty ? "No other city is known yet." : others.map { c in "\(c): \(peers.first { $0.city == c }?.state ?? "no connection")" }.joined(separator: "; ")))</desc>

            """
        var labels = ""
        for (i, other) in others.enumerated() {
            let angle = -Double.pi / 2 + 2 * Double.pi * Double(i) / Double(max(others.count, 1))
            let x = cx + radius * cos(angle), y = cy + radius * sin(angle)
            let peer = peers.first { $0.city == other }
            let connected = peer?.state == "connected"
            let shares = agreements.filter { ($0.owner == other && $0.member == city) || ($0.owner == city && $0.member == other) }
                .filter { $0.state == "active" || $0.state == "offered" }
            let state = peer?.state ?? "no connection"
            svg += "<g class=\"edge \(connected ? "up" : "down")\"><title>\(esc(city)) – \(esc(other)): \(esc(state))\(peer?.rttMs.map { ", RTT \(f($0)) ms" } ?? "")</title>"
            svg += "<line x1=\"\(f(cx))\" y1=\"\(f(cy))\" x2=\"\(f(x))\" y2=\"\(f(y))\"/></g>\n"
            var text = ""
            for (j, a) in shares.enumerated() {
                let outgoing = a.owner == city
                let line = "\(outgoing ? "→" : "←") \(a.dataset.split(separator: "/").last.map(String.init) ?? a.dataset) (\(a.write.isEmpty ? "r" : "rw"))\(a.state == "offered" ? " offered" : "")"
                text += "<tspan x=\"\(f((cx + x) / 2))\" dy=\"\(j == 0 ? "0" : "1.2em")\">\(esc(line))</tspan>"
            }
            if !text.isEmpty {
                let my = (cy + y) / 2 - Double(shares.count - 1) * 8
                labels += "<text class=\"share\" x=\"\(f((cx + x) / 2))\" y=\"\(f(my))\" text-anchor=\"middle\">\(text)</text>\n"
            }
            labels += "<g class=\"city \(connected ? "up" : "down")\"><title>\(esc(other)): \(esc(state))</title>"
            labels += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"36\"/>"
            labels += "<text x=\"\(f(x))\" y=\"\(f(y + 4))\" text-anchor=\"middle\">\(esc(other))</text></g>\n"
        }
        svg += labels
        svg += "<g class=\"city self\"><title>\(esc(city)) (this node)</title><circle cx=\"\(f(cx))\" cy=\"\(f(cy))\" r=\"38\"/>"
        svg += "<text x=\"\(f(cx))\" y=\"\(f(cy + 4))\" text-anchor=\"middle\">\(esc(city))</text></g>\n"
        svg += "</svg>"
        return svg
    }

    /// A stacked bar chart: records sent (dark) and received (light) per time bucket.
    static func barChart(title: String, points: [(label: String, sent: Int, received: Int)]) -> String {
        let width = 720.0, height = 180.0, left = 48.0, bottom = 24.0, top = 10.0
        let plotW = width - left - 8, plotH = height - bottom - top
        let peak = max(1, points.map { $0.sent + $0.received }.max() ?? 1)
        let barW = plotW / Double(max(points.count, 1))
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" class=\"chart\"><title>\(esc(title))</title>"
        svg += "<line class=\"axis\" x1=\"\(f(left))\" y1=\"\(f(top + plotH))\" x2=\"\(f(width - 8))\" y2=\"\(f(top + plotH))\"/>"
        svg += "<text class=\"tick\" x=\"\(f(left - 6))\" y=\"\(f(top + 8))\" text-anchor=\"end\">\(peak)</text>"
        svg += "<text class=\"tick\" x=\"\(f(left - 6))\" y=\"\(f(top + plotH))\" text-anchor=\"end\">0</text>"
        for (i, p) in points.enumerated() {
            let x = left + Double(i) * barW + 1
            let hs = plotH * Double(p.sent) / Double(peak), hr = plotH * Double(p.received) / Double(peak)
            svg += "<g><title>\(esc(p.label)): \(p.sent) sent, \(p.received) received</title>"
            if hs > 0 { svg += "<rect class=\"sent\" x=\"\(f(x))\" y=\"\(f(top + plotH - hs))\" width=\"\(f(barW - 2))\" height=\"\(f(hs))\"/>" }
            if hr > 0 { svg += "<rect class=\"received\" x=\"\(f(x))\" y=\"\(f(top + plotH - hs - hr))\" width=\"\(f(barW - 2))\" height=\"\(f(hr))\"/>" }
            svg += "</g>"
            if i % max(1, points.count / 6) == 0 {
                svg += "<text class=\"tick\" x=\"\(f(x))\" y=\"\(f(height - 6))\">\(esc(p.label))</text>"
            }
        }
        svg += "</svg>"
        return svg
    }

    /// Most lines (old and new together) `lineDiff` compares.
    static let maxDiffLines = 20_000

    /// Lines removed ("-"), added ("+") and kept (" ") from `old` to `new`.
    static func lineDiff(old: String, new: String) -> [(mark: String, text: String)] {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // Myers' diff costs time and memory in the square of the edits: a draft of a million blank
        // lines must not take the node's memory. Policies are a few hundred lines.
        guard a.count + b.count <= maxDiffLines else {
            return [(" ", "(the drafts have \(a.count) and \(b.count) lines: too long to compare line by line here; the semantic changes above still apply)")]
        }
        let diff = b.difference(from: a)
        var removed = Set<Int>(), inserted = Set<Int>()
        for change in diff {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        var out: [(String, String)] = []
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count, removed.contains(i) {
                out.append(("-", a[i])); i += 1
            } else if j < b.count, inserted.contains(j) {
                out.append(("+", b[j])); j += 1
            } else {
                if j < b.count { out.append((" ", b[j])) }
                i += 1; j += 1
            }
        }
        return out
    }
}
