/// Big-endian writer for the wire encoding (docs/protocol.md §3).
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity n: Int = 64) {
        bytes = []
        bytes.reserveCapacity(n)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v)) }
    public mutating func u32(_ v: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }
    public mutating func u64(_ v: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }
    /// `str8`: one length byte, then UTF-8 (callers keep strings under 256 bytes).
    public mutating func str8(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            let n = Swift.min(utf8.count, 255)
            u8(UInt8(n))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8.prefix(n)))
        }
    }
    /// `str16`: two length bytes, then UTF-8.
    public mutating func str16(_ s: String) {
        let utf8 = Array(s.utf8.prefix(Int(UInt16.max)))
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    public mutating func raw<C: Collection>(_ c: C) where C.Element == UInt8 { bytes.append(contentsOf: c) }
}

/// Bounds-checked big-endian reader; every read past the end throws `.truncated`.
public struct WireReader {
    let bytes: ArraySlice<UInt8>
    var index: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - index }
    public var isAtEnd: Bool { index == bytes.endIndex }

    mutating func take(_ n: Int, _ what: String) throws(WireError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .malformed("\(what) runs past the end of the message") }
        defer { index += n }
        return bytes[index..<index + n]
    }

    public mutating func u8(_ what: String) throws(WireError) -> UInt8 { try take(1, what).first! }  // take(1) returned one byte
    public mutating func u16(_ what: String) throws(WireError) -> UInt16 {
        try take(2, what).reduce(0) { $0 << 8 | UInt16($1) }
    }
    public mutating func u32(_ what: String) throws(WireError) -> UInt32 {
        try take(4, what).reduce(0) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64(_ what: String) throws(WireError) -> UInt64 {
        try take(8, what).reduce(0) { $0 << 8 | UInt64($1) }
    }
    public mutating func str8(_ what: String) throws(WireError) -> String {
        let n = Int(try u8(what))
        return try utf8(take(n, what), what)
    }
    public mutating func str16(_ what: String) throws(WireError) -> String {
        let n = Int(try u16(what))
        return try utf8(take(n, what), what)
    }
    public mutating func rest() -> ArraySlice<UInt8> {
        defer { index = bytes.endIndex }
        return bytes[index...]
    }

    func utf8(_ b: ArraySlice<UInt8>, _ what: String) throws(WireError) -> String {
        guard let s = String(validating: b, as: UTF8.self) else { throw .malformed("\(what) is not valid UTF-8") }
        return s
    }
}
