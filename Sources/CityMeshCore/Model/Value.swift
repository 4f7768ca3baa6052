/// A typed cell value. Null is represented as `Optional<Value>.none`.
public enum Value: Hashable, Sendable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    /// Microseconds since 1970-01-01T00:00:00Z.
    case timestamp(Int64)

    public var type: FieldType {
        switch self {
        case .string: .string
        case .int: .int
        case .double: .double
        case .bool: .bool
        case .timestamp: .timestamp
        }
    }

    /// The canonical text form, as written to CSV and shown in tables.
    public var text: String {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): Value.formatDouble(d)
        case .bool(let b): b ? "true" : "false"
        case .timestamp(let t): RFC3339.format(microseconds: t)
        }
    }

    static func formatDouble(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) + ".0" }
        return "\(d)"
    }

    /// Parses text (a CSV cell, a CLI `field=value`) as a value of `type`.
    /// The empty string is null. Throws a message naming the field and what to write instead.
    public static func parse(_ text: String, as type: FieldType, field: String) throws -> Value? {
        if text.isEmpty { return nil }
        switch type {
        case .string:
            guard text.utf8.count <= Schema.maxValueBytes else {
                throw CityMeshError(.valueTooLarge, "value of '\(field)' is \(text.utf8.count) bytes; the limit is \(Schema.maxValueBytes) bytes")
            }
            return .string(text)
        case .int:
            guard let i = Int64(text) else {
                throw CityMeshError(.typeMismatch, "'\(text.prefix(40))' is not an int for field '\(field)': write a whole number such as 42")
            }
            return .int(i)
        case .double:
            guard let d = Double(text), d.isFinite else {
                throw CityMeshError(.typeMismatch, "'\(text.prefix(40))' is not a double for field '\(field)': write a finite number such as 41.5")
            }
            return .double(d)
        case .bool:
            switch text.count <= 5 ? text.lowercased() : "" {
            case "true", "1", "yes": return .bool(true)
            case "false", "0", "no": return .bool(false)
            default:
                throw CityMeshError(.typeMismatch, "'\(text.prefix(40))' is not a bool for field '\(field)': write true or false")
            }
        case .timestamp:
            guard let t = RFC3339.parse(text) else {
                throw CityMeshError(.typeMismatch, "'\(text.prefix(40))' is not a timestamp for field '\(field)': write RFC 3339, e.g. 2026-11-29T08:00:00Z")
            }
            return .timestamp(t)
        }
    }

    /// Converts a JSON value to a value of `type`; JSON strings are parsed as text, so `"41.5"` is accepted for a double.
    public static func fromJSON(_ json: JSONValue, as type: FieldType, field: String) throws -> Value? {
        switch (json, type) {
        case (.null, _): return nil
        case (.string(let s), .string):
            guard s.utf8.count <= Schema.maxValueBytes else {
                throw CityMeshError(.valueTooLarge, "value of '\(field)' is \(s.utf8.count) bytes; the limit is \(Schema.maxValueBytes) bytes")
            }
            return .string(s)
        case (.string(let s), _): return try parse(s, as: type, field: field)
        case (.int(let i), .int): return .int(i)
        case (.int(let i), .double): return .double(Double(i))
        case (.double(let d), .double) where d.isFinite: return .double(d)
        case (.double(let d), .int) where d == d.rounded() && abs(d) < 9.2e18: return .int(Int64(d))
        case (.bool(let b), .bool): return .bool(b)
        default:
            throw CityMeshError(.typeMismatch, "field '\(field)' is of type \(type.rawValue) but got \(json.kindName): write a \(type.rawValue)")
        }
    }

    /// The JSON form used by the admin API and JSON-lines export.
    public var json: JSONValue {
        switch self {
        case .string(let s): .string(s)
        case .int(let i): .int(i)
        case .double(let d): .double(d)
        case .bool(let b): .bool(b)
        case .timestamp: .string(text)
        }
    }
}
