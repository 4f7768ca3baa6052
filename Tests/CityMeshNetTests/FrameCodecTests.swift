import CityMeshCore
import CityMeshNet
import NIOCore
import NIOEmbedded
import Testing

/// The NIO frame codec on an EmbeddedChannel: no sockets, no TLS.
@Suite("Frame codec on EmbeddedChannel")
struct FrameCodecTests {
    static let messages: [WireMessage] = [
        .hello(Hello(versions: 1...1, city: "hangzhou", software: "t", listen: "127.0.0.1:7001", maxFrameLength: 70_000, capabilities: ["x"])),
        .ping(nonce: 9), .data(channel: 4, payload: ArraySlice(repeating: 7, count: 70_000 - 3)), .close(.normal, "bye"),
    ]

    func channel(limit: Int = 70_000) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WireMessageDecoder(maxFrameLength: limit)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(WireMessageEncoder()))
        return channel
    }

    @Test("encoder and decoder agree, at any split of the byte stream, and finish clean")
    func roundTrip() throws {
        // Encode through the pipeline's own encoder.
        let writer = try channel()
        var wire: [UInt8] = []
        for m in Self.messages {
            try writer.writeOutbound(m)
            while let buffer = try writer.readOutbound(as: ByteBuffer.self) { wire += buffer.readableBytesView }
        }
        #expect(wire == Self.messages.flatMap { $0.encodeFrame() })
        #expect(try writer.finish().isClean)

        for step in [7, 4096, wire.count] {
            let reader = try channel()
            var i = 0
            while i < wire.count {
                try reader.writeInbound(ByteBuffer(bytes: wire[i..<min(wire.count, i + step)]))
                i += step
            }
            var got: [WireMessage] = []
            while let m = try reader.readInbound(as: WireInbound.self) {
                switch m {
                case .message(let message): got.append(message)
                case .data(let channel, let payload): got.append(.data(channel: channel, payload: ArraySlice(payload.readableBytesView)))
                }
            }
            #expect(got == Self.messages)
            #expect(try reader.finish().isClean)
        }
    }

    @Test("an oversize frame is an error from its header; a frame cut off at EOF is reported as truncated")
    func errors() throws {
        let c = try channel(limit: 70_000)
        #expect(throws: WireError.frameTooLarge(length: 70_001, limit: 70_000)) {
            try c.writeInbound(ByteBuffer(bytes: [0x00, 0x01, 0x11, 0x71]))
        }
        _ = try? c.finish()

        let short = try channel()
        #expect(throws: WireError.malformed("DATA channel runs past the end of the message")) {
            try short.writeInbound(ByteBuffer(bytes: [0, 0, 0, 2, 0x10, 0x01]))
        }
        _ = try? short.finish()

        let t = try channel()
        try t.writeInbound(ByteBuffer(bytes: [0, 0, 0, 9, 0x02, 0, 0]))
        #expect(throws: WireError.truncated(buffered: 7)) { _ = try t.finish() }
    }
}
