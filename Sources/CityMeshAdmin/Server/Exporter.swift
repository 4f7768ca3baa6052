import Foundation
import CityMeshCore
import CityMeshStore

/// Renders records as CSV (RFC 4180, header row) or JSON lines, fields in schema order.
enum Exporter {
    static func csvHeader(_ schema: Schema) -> String {
        schema.fields.map { csvEscape($0.name) }.joined(separator: ",") + "\r\n"
    }

    static func encode(_ records: [StoredRecord], schema: Schema, format: ImportFormat) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(records.count * 96)
        for r in records {
            var byField: [Int: Value?] = [:]
            for c in r.state.cells { byField[c.field] = c.value }
            switch format {
            case .csv:
                for (i, f) in schema.fields.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    if let v = byField[f.id] ?? nil { out.append(contentsOf: csvEscape(v.text).utf8) }
                }
                out.append(contentsOf: [13, 10])
            case .jsonl:
                out.append(UInt8(ascii: "{"))
                for (i, f) in schema.fields.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    JSONText.appendString(f.name, to: &out)
                    out.append(UInt8(ascii: ":"))
                    JSONText.append(byField[f.id] ?? nil, to: &out)
                }
                out.append(contentsOf: [UInt8(ascii: "}"), 10])
            }
        }
        return out
    }

    static func csvEscape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 44 || $0 == 34 || $0 == 10 || $0 == 13 }) || s.first == " " || s.last == " " else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Writes JSON scalars without a full encoder (exports write millions of them).
enum JSONText {
    static func append(_ v: Value?, to out: inout [UInt8]) {
        switch v {
        case nil: out.append(contentsOf: "null".utf8)
        case .string(let s): appendString(s, to: &out)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d): out.append(contentsOf: "\(d)".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .timestamp: appendString(v!.text, to: &out)  // invariant: matched non-nil above
        }
    }

    static func appendString(_ s: String, to out: inout [UInt8]) {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        out.append(34)
        for b in s.utf8 {
            switch b {
            case 34: out.append(contentsOf: [92, 34])
            case 92: out.append(contentsOf: [92, 92])
            case 10: out.append(contentsOf: [92, 110])
            case 13: out.append(contentsOf: [92, 114])
            case 9: out.append(contentsOf: [92, 116])
            case 0..<32: out.append(contentsOf: [92, 117, 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]])
            default: out.append(b)
            }
        }
        out.append(34)
    }
}
