/// A dataset's global identity: `<owner>/<name>`, e.g. `hangzhou/air-quality`.
public struct DatasetID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let owner: CitySlug
    public let name: String

    public init(owner: CitySlug, name: String) throws {
        guard Self.isValidName(name) else {
            throw CityMeshError(
                .invalidName,
                "invalid dataset name '\(name)': use 1-64 lowercase letters, digits, '-' or '_', starting with a letter (e.g. 'air-quality')"
            )
        }
        self.owner = owner
        self.name = name
    }

    /// Parses `name` (owned by `localCity`) or `owner/name`.
    public init(parsing text: String, localCity: CitySlug) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: try self.init(owner: localCity, name: text)
        case 2: try self.init(owner: CitySlug(String(parts[0])), name: String(parts[1]))
        default:
            throw CityMeshError(.invalidName, "invalid dataset '\(text)': write 'name' or 'owner/name' (e.g. 'air-quality' or 'hangzhou/air-quality')")
        }
    }

    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), let first = bytes.first,
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first)
        else { return false }
        return bytes.allSatisfy { b in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
        }
    }

    public var description: String { "\(owner)/\(name)" }
    public static func < (a: DatasetID, b: DatasetID) -> Bool { a.description < b.description }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        let parts = raw.split(separator: "/")
        guard parts.count == 2 else { throw CityMeshError(.invalidName, "invalid dataset id '\(raw)': expected 'owner/name'") }
        try self.init(owner: CitySlug(String(parts[0])), name: String(parts[1]))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
