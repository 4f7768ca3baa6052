import CityMeshCore
import CityMeshNet
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing

/// Collects what a network delivers upward.
final class Inbox: Sendable {
    let messages = Mutex<[PeerMessage]>([])
    func add(_ m: PeerMessage) { messages.withLock { $0.append(m) } }
    var all: [PeerMessage] { messages.withLock { $0 } }
}

enum Net {
    static var logger: Logger {
        var l = Logger(label: "test")
        l.logLevel = ProcessInfo.processInfo.environment["CITYMESH_TEST_LOG"] != nil ? .debug : .critical
        return l
    }

    static func make(
        _ city: String, _ node: TestPKI.Node, trust: PeerTrust, seeds: [String] = [], inbox: Inbox? = nil,
        tweak: (inout PeerNetwork.Configuration) -> Void = { _ in }
    ) throws -> PeerNetwork {
        var c = PeerNetwork.Configuration(
            city: try CitySlug(city), listenHost: "127.0.0.1", listenPort: 0, advertise: "", identity: try node.identity(), trust: trust,
            seeds: try seeds.map { try PeerDirectory.Seed($0) },
            // Generous: the whole test run shares two cores, and a handshake that waits for CPU is
            // not what these tests are about (the timeout tests set their own).
            handshakeTimeout: .seconds(60), keepaliveInterval: .seconds(1), idleTimeout: .seconds(30))
        tweak(&c)
        return try PeerNetwork(configuration: c, logger: logger, onMessage: { m in inbox?.add(m) })
    }

    /// Runs the networks (already bound or not) while `body` runs, then shuts them down.
    static func running<T: Sendable>(_ nets: [PeerNetwork], _ body: @Sendable () async throws -> T) async throws -> T {
        for n in nets { try await n.bind() }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for n in nets { group.addTask { try await n.run() } }
            do {
                let result = try await body()
                group.cancelAll()
                try await group.waitForAll()
                return result
            } catch {
                group.cancelAll()
                try? await group.waitForAll()
                throw error
            }
        }
    }

    /// Waits (up to `seconds`) for `condition`; records an issue naming `what` if it never holds.
    @discardableResult
    static func eventually(_ what: String, seconds: Double = 60, sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("never happened: \(what)", sourceLocation: sourceLocation)
        return false
    }

    static func port(_ n: PeerNetwork) -> Int { Int(n.listenAddress.split(separator: ":").last!)! }
    static func address(_ n: PeerNetwork) -> String { "127.0.0.1:\(port(n))" }

    static func entry(_ n: PeerNetwork, _ city: String) -> PeerDirectory.Entry? {
        n.status().peers.first { $0.city.rawValue == city }
    }

    static func refusals(_ n: PeerNetwork, _ reason: DisconnectReason) -> Int { n.status().refusals[reason] ?? 0 }
}

/// A hand-driven client for the cases a well-behaved node never produces: no certificate,
/// plaintext, garbage, bad frames, silence.
final class RawClient: Sendable {
    let channel: any Channel
    let box: Box

    final class Box: Sendable {
        let bytes = Mutex<[UInt8]>([])
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let box: Box
        init(_ box: Box) { self.box = box }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            box.bytes.withLock { $0 += buffer.readableBytesView }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    /// Sits next to the socket, below TLS, so a test can write bytes TLS never saw.
    final class Injector: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = ByteBuffer
    }

    init(channel: any Channel, box: Box) {
        self.channel = channel
        self.box = box
    }

    var bytes: [UInt8] { box.bytes.withLock { $0 } }

    /// The messages received so far (nil if the bytes do not decode).
    var messages: [WireMessage]? {
        var d = WireFrameDecoder()
        return try? d.feed(bytes)
    }

    static func connect(port: Int, tls: TLSConfiguration?) async throws -> RawClient {
        let box = Box()
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Injector())
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(Collector(box))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: channel, box: box)
    }

    /// A TLS 1.3 client configuration presenting `node` (or no certificate).
    static func tls(_ node: TestPKI.Node?) throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateVerification = .none
        c.minimumTLSVersion = .tlsv13
        c.signingSignatureAlgorithms = [.ed25519, .ecdsaSecp256R1Sha256]
        c.verifySignatureAlgorithms = [.ed25519, .ecdsaSecp256R1Sha256]
        if let node {
            let id = try node.identity()
            c.certificateChain = id.chain.map { .certificate($0) }
            c.privateKey = .privateKey(id.key)
        }
        return c
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    }

    /// Sends a version-1 HELLO for `city`.
    func sayHello(as city: String) async throws {
        try await send(WireMessage.hello(Hello(versions: 1...1, city: city, software: "raw", listen: "", maxFrameLength: 70_000, capabilities: [])).encodeFrame())
    }

    /// Writes straight to the socket, under TLS.
    func inject(_ bytes: [UInt8]) async throws {
        let buffer = channel.allocator.buffer(bytes: bytes)
        let channel = self.channel
        try await channel.eventLoop.submit {
            let ctx = try channel.pipeline.syncOperations.context(handlerType: Injector.self)
            ctx.writeAndFlush(NIOAny(buffer), promise: nil)
        }.get()
    }

    var isClosed: Bool { !channel.isActive }

    func close() async { try? await channel.close() }
}
