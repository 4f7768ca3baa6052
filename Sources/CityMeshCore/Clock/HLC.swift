/// A hybrid logical clock timestamp: 48 bits of wall-clock milliseconds and a 16-bit logical counter,
/// packed so that integer order is causal order (Kulkarni et al., "Logical Physical Clocks", 2014).
public struct HLC: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(millis: UInt64, logical: UInt16) { self.rawValue = (millis << 16) | UInt64(logical) }

    public var millis: UInt64 { rawValue >> 16 }
    public var logical: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    public static let zero = HLC(rawValue: 0)
    public static func < (a: HLC, b: HLC) -> Bool { a.rawValue < b.rawValue }

    public var description: String { "\(RFC3339.format(microseconds: Int64(millis) * 1000))#\(logical)" }
}

/// The clock state of one node. Pure: the caller passes in the physical time, so tests and the
/// simulator drive it with a fake clock.
public struct HybridClock: Sendable {
    public private(set) var last: HLC

    public init(last: HLC = .zero) { self.last = last }

    /// A timestamp for a local event, strictly greater than every timestamp seen so far.
    public mutating func tick(physicalMillis: UInt64) -> HLC {
        if physicalMillis > last.millis {
            last = HLC(millis: physicalMillis, logical: 0)
        } else if last.logical == .max {
            last = HLC(millis: last.millis + 1, logical: 0)
        } else {
            last = HLC(millis: last.millis, logical: last.logical + 1)
        }
        return last
    }

    /// Folds in a timestamp received from elsewhere so later local ticks order after it.
    public mutating func observe(_ remote: HLC) {
        if remote > last { last = remote }
    }
}
