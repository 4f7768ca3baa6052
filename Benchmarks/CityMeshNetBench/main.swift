import CityMeshCore
import CityMeshNet
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import SwiftASN1
import X509

// Peer transport benchmark (Benchmarks/net-vs-openssl.sh runs it next to openssl's own figures):
//   handshakes  full mutual-TLS 1.3 handshakes with the node's certificate checks and the HELLO
//               exchange, sequential and 4 at a time, against a real PeerNetwork listener
//   throughput  64 KiB writes over one loopback connection: raw TLS (swift-nio-ssl, no framing)
//               versus CityMesh DATA frames through the whole peer pipeline, same sending discipline
// Usage: citymesh-net-bench [handshakes|throughput|all] [--pki DIR] [--mib N]

let args = CommandLine.arguments.dropFirst()
let which = args.first { !$0.hasPrefix("--") } ?? "all"
func option(_ name: String) -> String? {
    guard let i = args.firstIndex(of: name), args.index(after: i) < args.endIndex else { return nil }
    return args[args.index(after: i)]
}
let mib = Int(option("--mib") ?? "512") ?? 512

struct Node {
    let cert: Certificate
    let chainPEM: String
    let keyPEM: String
    var identity: PeerTLS.Identity { get throws { try PeerTLS.Identity(chainPEM: chainPEM, keyPEM: keyPEM) } }
}

let caKey = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
let ca = try FederationPKI.makeRootCA(name: "Bench", key: caKey, serial: [1], now: Date())
func node(_ city: String, serial: UInt8) throws -> Node {
    let key = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
    let cert = try FederationPKI.issueNode(
        city: try CitySlug(city), hosts: ["127.0.0.1", "localhost"], publicKey: key.publicKey, ca: ca, caKey: caKey, serial: [2, serial], now: Date())
    return Node(cert: cert, chainPEM: try cert.serializeAsPEM().pemString + "\n", keyPEM: try key.serializeAsPEM().pemString + "\n")
}
let hz = try node("hangzhou", serial: 2)
let sh = try node("shanghai", serial: 3)
let trust = PeerTrust(roots: [ca], revocations: nil, denied: [])
if let dir = option("--pki") {
    // For the openssl side of the script: the same kind of certificates (Ed25519, same CA).
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try (try ca.serializeAsPEM().pemString + "\n").write(toFile: dir + "/ca.pem", atomically: true, encoding: .utf8)
    try hz.chainPEM.write(toFile: dir + "/server.pem", atomically: true, encoding: .utf8)
    try hz.keyPEM.write(toFile: dir + "/server.key", atomically: true, encoding: .utf8)
    try sh.chainPEM.write(toFile: dir + "/client.pem", atomically: true, encoding: .utf8)
    try sh.keyPEM.write(toFile: dir + "/client.key", atomically: true, encoding: .utf8)
}

let quiet: Logger = {
    var l = Logger(label: "bench")
    l.logLevel = .critical
    return l
}()

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func network(
    _ city: String, _ n: Node, seeds: [String] = [], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    onMessage: @escaping @Sendable (PeerMessage) -> Void = { _ in }
) throws -> PeerNetwork {
    try PeerNetwork(
        configuration: .init(
            city: try CitySlug(city), listenHost: "127.0.0.1", listenPort: 0, advertise: "", identity: try n.identity, trust: trust,
            seeds: try seeds.map { try PeerDirectory.Seed($0) }, maxConnections: 4096),
        logger: quiet, group: group, onMessage: onMessage)
}

/// Completes when the first whole frame (the node's HELLO) has arrived.
final class FirstFrame: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<Void>
    var buffer = ByteBuffer()
    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        let done = buffer.withUnsafeReadableBytes { raw in
            if case .frame? = try? WireFraming.parse(raw, maxFrameLength: WireFraming.defaultMaxFrameLength) { return true }
            return false
        }
        if done { promise.succeed() }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

func handshakes() async throws {
    let server = try network("hangzhou", hz)
    try await server.bind()
    let port = Int(server.listenAddress.split(separator: ":").last!)!
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.minimumTLSVersion = .tlsv13
    tls.certificateVerification = .noHostnameVerification
    tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: try ca.serializeAsPEM().derBytes, format: .der)])
    tls.certificateChain = try sh.identity.chain.map { .certificate($0) }
    tls.privateKey = .privateKey(try sh.identity.key)
    tls.signingSignatureAlgorithms = [.ed25519]
    tls.verifySignatureAlgorithms = [.ed25519]
    let context = try NIOSSLContext(configuration: tls)
    let hello = WireMessage.hello(Hello(versions: 1...1, city: "shanghai", software: "bench", listen: "", maxFrameLength: 70_000, capabilities: [])).encodeFrame()

    func one() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try ch.pipeline.syncOperations.addHandler(FirstFrame(promise))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: hello))
        try await promise.futureResult.get()
        // The server may already be closing its side; a close that finds it closed is fine.
        try? await channel.close()
    }

    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        for _ in 0..<20 { try await one() }  // warm up
        for concurrency in [1, 4] {
            let n = 400
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { g in
                for w in 0..<concurrency {
                    g.addTask { for _ in stride(from: w, to: n, by: concurrency) { try await one() } }
                }
                try await g.waitForAll()
            }
            let s = seconds(ContinuousClock.now - start)
            print(String(format: "citymesh mTLS 1.3 handshake + HELLO, %d at a time   %8.0f handshakes/s  (%d in %.2f s)", concurrency, Double(n) / s, n, s))
        }
        group.cancelAll()
    }
}

/// Counts bytes arriving on the raw TLS server.
final class Sink: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let counter: Counter
    init(_ counter: Counter) { self.counter = counter }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { counter.add(unwrapInboundIn(data).readableBytes) }
}

final class Counter: Sendable {
    let total = Atomic<Int>(0)
    let target: Int
    let done: EventLoopPromise<Void>
    init(target: Int, done: EventLoopPromise<Void>) {
        self.target = target
        self.done = done
    }
    func add(_ n: Int) {
        let now = total.add(n, ordering: .relaxed).newValue
        if now >= target, now - n < target { done.succeed() }
    }
}

func throughput() async throws {
    let chunk = 65_536
    let total = mib * 1_048_576
    let count = total / chunk
    let payload = [UInt8](repeating: 0x5A, count: chunk)
    // One event loop thread per end, in both cases: the comparison must not depend on whether the
    // two ends happen to share a thread.
    let receiving = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let sending = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var raw: [Double] = []
    var mesh: [Double] = []

    // Rounds alternate raw and CityMesh, so a noisy neighbour hits both alike.
    for _ in 0..<5 {
        // Raw TLS: the same swift-nio-ssl contexts (mutual TLS 1.3, Ed25519), bytes straight through.
        let done = receiving.next().makePromise(of: Void.self)
        let counter = Counter(target: total, done: done)
        let serverContext = try PeerTLS.serverContext(identity: try hz.identity, roots: [ca])
        let clientContext = try PeerTLS.clientContext(identity: try sh.identity, roots: [ca])
        let server = try await ServerBootstrap(group: receiving)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverContext))
                    try ch.pipeline.syncOperations.addHandler(Sink(counter))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: sending)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: clientContext, serverHostname: nil))
                }
            }
            .connect(to: server.localAddress!).get()
        let start = ContinuousClock.now
        for _ in 0..<count { try await client.writeAndFlush(client.allocator.buffer(bytes: payload)) }
        try await done.futureResult.get()
        raw.append(Double(total) / seconds(ContinuousClock.now - start) / 1_048_576)
        try await client.close()
        try await server.close()

        // CityMesh: DATA frames from one PeerNetwork to another, delivered to the layer above.
        let meshDone = receiving.next().makePromise(of: Void.self)
        let meshCounter = Counter(target: total, done: meshDone)
        let receiver = try network("hangzhou", hz, group: receiving) { meshCounter.add($0.payload.readableBytes) }
        try await receiver.bind()
        let sender = try network("shanghai", sh, seeds: ["hangzhou@\(receiver.listenAddress)"], group: sending)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await receiver.run() }
            tasks.addTask { try await sender.run() }
            let city = try CitySlug("hangzhou")
            while sender.status().peers.first?.state != .connected { try await Task.sleep(for: .milliseconds(5)) }
            let start = ContinuousClock.now
            for _ in 0..<count { try await sender.send(to: city, channel: 1, payload: payload) }
            try await meshDone.futureResult.get()
            mesh.append(Double(total) / seconds(ContinuousClock.now - start) / 1_048_576)
            tasks.cancelAll()
        }
    }
    func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
    let (rb, rm, mb, mm) = (raw.max()!, median(raw), mesh.max()!, median(mesh))  // five rounds each
    print(String(format: "raw TLS 1.3 over swift-nio-ssl, 64 KiB writes         %8.0f MB/s best, %5.0f median  (5 rounds of %d MiB)", rb, rm, mib))
    print(String(format: "CityMesh DATA frames, 64 KiB payloads, delivered       %8.0f MB/s best, %5.0f median  (5 rounds of %d MiB)", mb, mm, mib))
    print(String(format: "protocol overhead versus raw TLS on the same stack      %8.1f %% best-to-best, %.1f %% median-to-median", (rb - mb) / rb * 100, (rm - mm) / rm * 100))
}

if which == "handshakes" || which == "all" { try await handshakes() }
if which == "throughput" || which == "all" { try await throughput() }
