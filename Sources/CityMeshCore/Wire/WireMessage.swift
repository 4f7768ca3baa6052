/// Why a frame or message could not be read. Each maps to a `DisconnectReason`.
public enum WireError: Error, Sendable, Equatable {
    case frameTooLarge(length: Int, limit: Int)
    case unknownType(UInt8)
    case malformed(String)
    /// The connection ended in the middle of a frame.
    case truncated(buffered: Int)

    public var reason: DisconnectReason {
        switch self {
        case .frameTooLarge: .frameTooLarge
        case .unknownType: .unknownMessage
        case .malformed: .protocolViolation
        case .truncated: .truncatedFrame
        }
    }

    public var detail: String {
        switch self {
        case .frameTooLarge(let n, let limit): "frame of \(n) bytes exceeds the limit of \(limit)"
        case .unknownType(let t): "unknown message type 0x\(String(t, radix: 16))"
        case .malformed(let what): what
        case .truncated(let n): "connection ended inside a frame (\(n) bytes of it received)"
        }
    }
}

/// The close codes carried by CLOSE (docs/protocol.md §5).
public enum CloseCode: UInt16, Sendable, CaseIterable {
    case normal = 0
    case duplicate = 1
    case protocolViolation = 2
    case unknownMessage = 3
    case frameTooLarge = 4
    case versionMismatch = 5
    case identityMismatch = 6
    case handshakeTimeout = 7
    case idleTimeout = 8
    case revoked = 9
    case tooManyConnections = 10
    /// The sender dialed this connection for gossip and its active view no longer holds the receiver.
    case viewChanged = 11
}

/// The HELLO each side sends first after the TLS handshake.
public struct Hello: Sendable, Equatable {
    public static let magic: [UInt8] = [0x43, 0x4D, 0x53, 0x48]  // "CMSH"

    public var versions: ClosedRange<UInt16>
    public var city: String
    public var software: String
    /// The address this node accepts peer connections on ("" when it does not listen).
    public var listen: String
    /// The largest frame length this node accepts.
    public var maxFrameLength: UInt32
    public var capabilities: [String]

    public init(versions: ClosedRange<UInt16>, city: String, software: String, listen: String, maxFrameLength: UInt32, capabilities: [String]) {
        self.versions = versions
        self.city = city
        self.software = software
        self.listen = listen
        self.maxFrameLength = maxFrameLength
        self.capabilities = capabilities
    }
}

/// A message of protocol version 1. The encoding is specified in docs/protocol.md.
public enum WireMessage: Sendable, Equatable {
    case hello(Hello)
    case ping(nonce: UInt64)
    case pong(nonce: UInt64)
    case close(CloseCode, String)
    /// Opaque payload for the layers above, on a numbered channel. A slice, so decoding a frame
    /// does not copy its payload again.
    case data(channel: UInt16, payload: ArraySlice<UInt8>)

    public enum TypeCode: UInt8, Sendable {
        case hello = 0x01, ping = 0x02, pong = 0x03, close = 0x04, data = 0x10
    }

    public var typeCode: TypeCode {
        switch self {
        case .hello: .hello
        case .ping: .ping
        case .pong: .pong
        case .close: .close
        case .data: .data
        }
    }

    public var name: String { "\(typeCode)".uppercased() }

    /// The body bytes (everything after the type byte).
    public func encodeBody() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .hello(let h):
            w.raw(Hello.magic)
            w.u16(h.versions.lowerBound)
            w.u16(h.versions.upperBound)
            w.str8(h.city)
            w.str8(h.software)
            w.str8(h.listen)
            w.u32(h.maxFrameLength)
            let caps = h.capabilities.prefix(WireFraming.maxCapabilities)
            w.u8(UInt8(caps.count))
            for c in caps { w.str8(c) }
        case .ping(let n), .pong(let n):
            w.u64(n)
        case .close(let code, let text):
            w.u16(code.rawValue)
            w.str16(String(text.utf8.prefix(WireFraming.maxCloseText)) ?? "")
        case .data(let channel, let payload):
            w = WireWriter(reservingCapacity: payload.count + 2)
            w.u16(channel)
            w.raw(payload)
        }
        return w.bytes
    }

    /// The whole frame: length, type, body.
    public func encodeFrame() -> [UInt8] {
        let body = encodeBody()
        var frame = WireFraming.header(type: typeCode.rawValue, bodyLength: body.count)
        frame.append(contentsOf: body)
        return frame
    }

    /// The channel of a DATA body (its first two bytes); shells that keep the payload in their own
    /// buffers read the channel with this and the payload from byte 2 on.
    public static func dataChannel(_ body: ArraySlice<UInt8>) throws(WireError) -> UInt16 {
        var r = WireReader(body)
        return try r.u16("DATA channel")
    }

    /// Decodes a message body of the given type. Unknown types and malformed bodies throw.
    public static func decode(type: UInt8, body: ArraySlice<UInt8>) throws(WireError) -> WireMessage {
        guard let code = TypeCode(rawValue: type) else { throw .unknownType(type) }
        var r = WireReader(body)
        let message: WireMessage
        switch code {
        case .hello:
            guard Array(try r.take(4, "HELLO magic")) == Hello.magic else {
                throw .malformed("HELLO does not start with the magic 'CMSH': the peer does not speak the CityMesh protocol")
            }
            let lo = try r.u16("HELLO min_version")
            let hi = try r.u16("HELLO max_version")
            guard lo <= hi, lo >= 1 else { throw .malformed("HELLO version range \(lo)...\(hi) is empty or starts at 0") }
            let city = try r.str8("HELLO city")
            let software = try r.str8("HELLO software")
            let listen = try r.str8("HELLO listen")
            let maxFrame = try r.u32("HELLO max_frame_length")
            guard maxFrame >= WireFraming.minimumMaxFrameLength else {
                throw .malformed("HELLO max_frame_length \(maxFrame) is below the minimum \(WireFraming.minimumMaxFrameLength)")
            }
            let count = try r.u8("HELLO capability count")
            var caps: [String] = []
            for _ in 0..<count { caps.append(try r.str8("HELLO capability")) }
            // Later versions may append fields to HELLO; version 1 ignores them (docs/protocol.md §4.1).
            _ = r.rest()
            return .hello(Hello(versions: lo...hi, city: city, software: software, listen: listen, maxFrameLength: maxFrame, capabilities: caps))
        case .ping:
            message = .ping(nonce: try r.u64("PING nonce"))
        case .pong:
            message = .pong(nonce: try r.u64("PONG nonce"))
        case .close:
            let raw = try r.u16("CLOSE code")
            let text = try r.str16("CLOSE reason")
            // Unknown codes from newer peers are read as a protocol violation report rather than refused.
            message = .close(CloseCode(rawValue: raw) ?? .protocolViolation, text)
        case .data:
            let channel = try dataChannel(body)
            return .data(channel: channel, payload: body.dropFirst(2))
        }
        guard r.isAtEnd else { throw .malformed("\(message.name) has \(r.remaining) unexpected trailing bytes") }
        return message
    }
}

/// Length-prefixed framing: `u32 length | u8 type | body`, where length counts the type byte and body.
public enum WireFraming {
    public static let headerSize = 4
    /// Every node accepts frames at least this long; HELLO may not announce less.
    public static let minimumMaxFrameLength: UInt32 = 65_536 + 3
    /// CityMesh's default limit: 1 MiB of body plus channel and type.
    public static let defaultMaxFrameLength = 1_048_576 + 3
    public static let maxCapabilities = 32
    public static let maxCloseText = 1024

    public static func header(type: UInt8, bodyLength: Int) -> [UInt8] {
        let length = UInt32(bodyLength + 1)
        return [UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), type]
    }

    public enum Parse: Equatable {
        /// At least this many more bytes are needed.
        case needMore(Int)
        /// A complete frame: its type, the body's byte range within the input, and the bytes it used.
        case frame(type: UInt8, body: Range<Int>, consumed: Int)
    }

    /// Looks for one frame at the start of `bytes`. An oversize or empty length is refused as soon as
    /// the four length bytes arrive, so a peer can never make the node buffer more than the limit.
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxFrameLength: Int) throws(WireError) -> Parse {
        guard bytes.count >= headerSize else { return .needMore(headerSize - bytes.count) }
        let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        guard length >= 1 else { throw .malformed("empty frame (length 0)") }
        guard length <= maxFrameLength else { throw .frameTooLarge(length: length, limit: maxFrameLength) }
        let total = headerSize + length
        guard bytes.count >= total else { return .needMore(total - bytes.count) }
        return .frame(type: bytes[headerSize], body: (headerSize + 1)..<total, consumed: total)
    }
}

/// A pure, bounded frame decoder over a byte stream (used by the simulator and the tests; the NIO
/// shell runs the same `WireFraming.parse` over its own buffer).
public struct WireFrameDecoder: Sendable {
    public let maxFrameLength: Int
    var buffer: [UInt8] = []
    var failed = false

    public init(maxFrameLength: Int = WireFraming.defaultMaxFrameLength) {
        self.maxFrameLength = maxFrameLength
    }

    public var bufferedBytes: Int { buffer.count }

    /// Adds bytes and returns every complete message; throws on the first bad frame.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(WireError) -> [WireMessage] {
        guard !failed else { throw .malformed("decoder already failed") }
        buffer.append(contentsOf: bytes)
        var out: [WireMessage] = []
        var start = 0
        do throws(WireError) {
            while true {
                let limit = maxFrameLength
                let parsed = try buffer.withUnsafeBytes { raw in
                    Result { () throws(WireError) in try WireFraming.parse(UnsafeRawBufferPointer(rebasing: raw[start...]), maxFrameLength: limit) }
                }.get()
                guard case .frame(let type, let body, let consumed) = parsed else { break }
                out.append(try WireMessage.decode(type: type, body: buffer[(start + body.lowerBound)..<(start + body.upperBound)]))
                start += consumed
            }
        } catch {
            failed = true
            buffer = []
            throw error
        }
        buffer.removeFirst(start)
        return out
    }

    /// Call when the stream ends: leftover bytes mean a truncated frame.
    public func finish() throws(WireError) {
        if !buffer.isEmpty { throw .truncated(buffered: buffer.count) }
    }
}
