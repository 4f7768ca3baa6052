import CityMeshCore
public import NIOCore

/// A decoded frame. DATA keeps its payload as a slice of the receive buffer (no copy).
public enum WireInbound: Sendable {
    case message(WireMessage)
    case data(channel: UInt16, payload: ByteBuffer)
}

/// Splits the TLS plaintext stream into CityMesh messages with `WireFraming.parse`, the same pure
/// function the simulator uses. Refuses an oversize frame as soon as its length arrives.
public struct WireMessageDecoder: ByteToMessageDecoder {
    public typealias InboundOut = WireInbound
    public let maxFrameLength: Int

    public init(maxFrameLength: Int = WireFraming.defaultMaxFrameLength) {
        self.maxFrameLength = maxFrameLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let limit = maxFrameLength
        let parsed = try buffer.withUnsafeReadableBytes { raw in
            Result { () throws(WireError) in try WireFraming.parse(raw, maxFrameLength: limit) }
        }.get()
        guard case .frame(let type, let body, let consumed) = parsed else { return .needMoreData }
        let start = buffer.readerIndex
        if type == WireMessage.TypeCode.data.rawValue {
            // get*/getSlice cannot fail here: parse saw `consumed` readable bytes.
            let head = buffer.getBytes(at: start + body.lowerBound, length: min(2, body.count)) ?? []
            let channel = try WireMessage.dataChannel(head[...])
            let payload = buffer.getSlice(at: start + body.lowerBound + 2, length: body.count - 2) ?? ByteBuffer()
            buffer.moveReaderIndex(forwardBy: consumed)
            context.fireChannelRead(Self.wrapInboundOut(.data(channel: channel, payload: payload)))
            return .continue
        }
        let bytes = buffer.getBytes(at: start + body.lowerBound, length: body.count) ?? []
        buffer.moveReaderIndex(forwardBy: consumed)
        let message = try WireMessage.decode(type: type, body: bytes[...])
        context.fireChannelRead(Self.wrapInboundOut(.message(message)))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 { throw WireError.truncated(buffered: buffer.readableBytes) }
        return .needMoreData
    }
}

/// Writes a message as one frame.
public struct WireMessageEncoder: MessageToByteEncoder {
    public typealias OutboundIn = WireMessage

    public init() {}

    public func encode(data: WireMessage, out: inout ByteBuffer) throws {
        if case .data(let channel, let payload) = data {
            // The hot path: no intermediate array.
            out.reserveCapacity(minimumWritableBytes: payload.count + 7)
            out.writeInteger(UInt32(payload.count + 3))
            out.writeInteger(WireMessage.TypeCode.data.rawValue)
            out.writeInteger(channel)
            out.writeBytes(payload)
        } else {
            out.writeBytes(data.encodeFrame())
        }
    }
}
