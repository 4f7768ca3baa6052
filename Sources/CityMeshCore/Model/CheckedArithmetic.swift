/// Arithmetic on values that came from outside the process (a peer, an API request, a file):
/// Swift's `+` and `Int64(x)` trap on overflow, and a trap there is a crash any member can cause.
extension FixedWidthInteger {
    /// `self + other`, or the type's largest (smallest) value where it would overflow.
    @inlinable
    public func saturatingAdd(_ other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other < 0 ? .min : .max
    }

    /// Adds `other` in place, saturating.
    @inlinable
    public mutating func addSaturating(_ other: Self) {
        self = saturatingAdd(other)
    }

    /// `self - other`, or the type's smallest (largest) value where it would overflow.
    @inlinable
    public func saturatingSubtract(_ other: Self) -> Self {
        let (difference, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return difference }
        return other < 0 ? .max : .min
    }

    /// `self * other`, or the type's largest (smallest) value where it would overflow.
    @inlinable
    public func saturatingMultiply(_ other: Self) -> Self {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        guard overflow else { return product }
        return (self < 0) == (other < 0) ? .max : .min
    }
}
