public import CityMeshCore

extension Int64 {
    /// A count, size or sequence number as SQLite stores it (a signed 64-bit integer). Values at or
    /// above 2^63 come only from outside (a peer's document, an API call): they are refused with an
    /// error, never trapped on. Lookups use `Int64(clamping:)` instead, as nothing stored is larger.
    public static func stored(_ value: UInt64, _ what: String = "a number") throws -> Int64 {
        guard let v = Int64(exactly: value) else {
            throw CityMeshError(.malformedInput, "\(what) \(value) is above 2^63 - 1, the largest this node stores")
        }
        return v
    }
}
