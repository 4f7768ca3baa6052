import Foundation

/// An `application/x-www-form-urlencoded` body decoded as it arrives, chunk by chunk: the values
/// of the fields named in `spooled` go to a sink as decoded bytes (the console writes them to
/// temporary files), every other field is kept, up to `smallLimit` bytes each. So a 256 MiB
/// upload is never held in memory whole, and a field that should be small cannot be large.
///
/// It is a pure state machine: `feed` takes any split of the body (a `%XX` escape may be cut
/// anywhere), `finish` ends it; the shell does the reading and the writing.
struct StreamingForm {
    enum Event: Equatable {
        /// Decoded bytes of a spooled field's value (a field may come in many pieces).
        case bytes(field: String, [UInt8])
    }

    struct TooLarge: Error, Equatable { let field: String }

    let spooled: Set<String>
    let smallLimit: Int
    private(set) var small: [String: String] = [:]
    /// The spooled fields seen, in order.
    private(set) var seen: [String] = []

    private var inKey = true
    private var key: [UInt8] = []
    private var value: [UInt8] = []
    /// A `%` and the hex digits after it so far (a chunk may end inside an escape).
    private var escape: [UInt8] = []
    private var currentSpooled: String?

    init(spooled: Set<String>, smallLimit: Int = 8 << 10) {
        self.spooled = spooled
        self.smallLimit = smallLimit
    }

    /// Feeds raw body bytes; returns the decoded pieces of spooled values they complete.
    mutating func feed(_ chunk: some Sequence<UInt8>) throws(TooLarge) -> [Event] {
        var events: [Event] = []
        var out: [UInt8] = []
        func flush(_ events: inout [Event]) {
            if let f = currentSpooled, !out.isEmpty { events.append(.bytes(field: f, out)) }
            out.removeAll(keepingCapacity: true)
        }
        for byte in chunk {
            if !escape.isEmpty {
                if let digit = Self.hex(byte) {
                    escape.append(byte)
                    guard escape.count == 3, let high = Self.hex(escape[1]) else { continue }
                    escape.removeAll()
                    try emit(high << 4 | digit, into: &out)
                    continue
                }
                // A malformed escape stays as it was; this byte is read as usual.
                for b in escape { try emit(b, into: &out) }
                escape.removeAll()
            }
            switch byte {
            case UInt8(ascii: "&"):
                if let f = currentSpooled, !out.isEmpty { events.append(.bytes(field: f, out)); out.removeAll(keepingCapacity: true) }
                endField()
            case UInt8(ascii: "=") where inKey:
                inKey = false
                let name = String(decoding: key, as: UTF8.self)
                if spooled.contains(name) {
                    currentSpooled = name
                    seen.append(name)
                }
            case UInt8(ascii: "%"):
                escape = [byte]
            case UInt8(ascii: "+"):
                try emit(UInt8(ascii: " "), into: &out)
            default:
                try emit(byte, into: &out)
            }
            if out.count >= 64 << 10 { flush(&events) }
        }
        flush(&events)
        return events
    }

    /// Ends the body; returns the last pieces.
    mutating func finish() throws(TooLarge) -> [Event] {
        var events: [Event] = []
        var out: [UInt8] = []
        for b in escape { try emit(b, into: &out) }
        escape.removeAll()
        if let f = currentSpooled, !out.isEmpty { events.append(.bytes(field: f, out)) }
        endField()
        return events
    }

    private mutating func emit(_ byte: UInt8, into out: inout [UInt8]) throws(TooLarge) {
        if inKey {
            guard key.count < 256 else { throw TooLarge(field: String(decoding: key.prefix(40), as: UTF8.self)) }
            key.append(byte)
        } else if currentSpooled != nil {
            out.append(byte)
        } else {
            guard value.count < smallLimit else { throw TooLarge(field: String(decoding: key, as: UTF8.self)) }
            value.append(byte)
        }
    }

    private mutating func endField() {
        if currentSpooled == nil, !key.isEmpty || !inKey {
            // Browsers send a textarea's line breaks as CR LF; the node's documents use LF.
            small[String(decoding: key, as: UTF8.self)] = String(decoding: value, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        }
        inKey = true
        key.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        currentSpooled = nil
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
