/// A city's identifier in the federation: `hangzhou`, `san-francisco`.
///
/// Lowercase ASCII letters, digits and single hyphens, 2–63 characters, starting with a letter
/// and not ending with a hyphen, so a slug is safe in a URI, a file name and a DNS label.
public struct CitySlug: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init(_ raw: String) throws {
        guard Self.isValid(raw) else {
            throw CityMeshError(
                .invalidSlug,
                "invalid city slug '\(raw)': use 2-63 lowercase letters, digits and single hyphens, starting with a letter (e.g. 'hangzhou', 'new-york')"
            )
        }
        self.rawValue = raw
    }

    /// The SAN URI that carries this city in its certificate.
    public var uri: String { CitySlug.uriPrefix + rawValue }

    public static let uriPrefix = "urn:citymesh:city:"

    /// Parses `urn:citymesh:city:<slug>`; nil when the URI is not a well-formed city URI.
    public init?(uri: String) {
        guard uri.hasPrefix(Self.uriPrefix) else { return nil }
        guard let slug = try? CitySlug(String(uri.dropFirst(Self.uriPrefix.count))) else { return nil }
        self = slug
    }

    public static func isValid(_ raw: String) -> Bool {
        let bytes = raw.utf8
        guard (2...63).contains(bytes.count) else { return false }
        guard let first = bytes.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first) else { return false }
        guard bytes.last != UInt8(ascii: "-") else { return false }
        var previousHyphen = false
        for b in bytes {
            let isLetter = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b)
            let isDigit = (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
            let isHyphen = b == UInt8(ascii: "-")
            guard isLetter || isDigit || isHyphen else { return false }
            if isHyphen && previousHyphen { return false }
            previousHyphen = isHyphen
        }
        return true
    }

    public var description: String { rawValue }
    public static func < (a: CitySlug, b: CitySlug) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        try self.init(raw)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
