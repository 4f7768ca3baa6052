/// Who wrote a cell and when: the total order that last-writer-wins merging uses.
/// Ties on the clock are broken by the city slug, so every node picks the same winner.
public struct Stamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let hlc: HLC
    public let city: CitySlug

    public init(hlc: HLC, city: CitySlug) {
        self.hlc = hlc
        self.city = city
    }

    @inlinable
    public static func < (a: Stamp, b: Stamp) -> Bool {
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        return a.city.rawValue < b.city.rawValue
    }

    public var description: String { "\(hlc)@\(city)" }

    /// Whether `a` orders before `b`, where no stamp (nil) orders before every stamp.
    @inlinable
    public static func precedes(_ a: Stamp?, _ b: Stamp) -> Bool {
        guard let a else { return true }
        return a < b
    }
}

/// One field's value in a record, with the stamp of the write that produced it.
public struct Cell: Hashable, Sendable {
    public let field: Int
    public let value: Value?
    public let stamp: Stamp

    public init(field: Int, value: Value?, stamp: Stamp) {
        self.field = field
        self.value = value
        self.stamp = stamp
    }
}
