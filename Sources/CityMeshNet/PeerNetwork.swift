public import CityMeshCore
public import Foundation
public import Logging
import Metrics
public import NIOCore
import NIOPosix
import NIOSSL
import SwiftASN1
public import ServiceLifecycle
import Synchronization
import X509

/// A message from a peer, with the identity its certificate proved.
public struct PeerMessage: Sendable, Equatable {
    public let city: CitySlug
    public let fingerprint: String
    public let channel: UInt16
    /// A view of the receive buffer: the payload is not copied on its way up.
    public let payload: ByteBuffer
}

/// What the ledger records of the transport: sessions established and connections refused.
public enum PeerEvent: Sendable {
    case connected(city: CitySlug, fingerprint: String, remote: String, direction: PeerDirectory.Direction, protocolVersion: UInt16)
    case refused(reason: DisconnectReason, remote: String, direction: PeerDirectory.Direction, detail: String)
}

/// A refusal, as listed by `citymesh peers`.
public struct PeerRefusalRecord: Sendable, Codable, Equatable {
    public let at: Date
    public let reason: DisconnectReason
    public let remote: String
    public let direction: PeerDirectory.Direction
    public let detail: String
}

/// Everything `citymesh peers` shows.
public struct PeerNetworkStatus: Sendable {
    public let listen: String
    public let peers: [PeerDirectory.Entry]
    public let refusals: [DisconnectReason: Int]
    public let recentRefusals: [PeerRefusalRecord]
}

/// The peer transport: a mutual-TLS listener and dialer driving `PeerSession` (per connection)
/// and `PeerDirectory` (which peers, one connection each, backoff, limits) with real sockets and
/// time. Runs as a service; SIGHUP-style reloads go through `reload(trust:seeds:)`.
public final class PeerNetwork: Service, Sendable {
    public struct Configuration: Sendable {
        public var city: CitySlug
        public var listenHost: String
        public var listenPort: Int
        /// What HELLO announces as this node's address ("" to not announce one).
        public var advertise: String
        public var identity: PeerTLS.Identity
        public var trust: PeerTrust
        public var seeds: [PeerDirectory.Seed]
        public var maxConnections: Int
        /// Learned cities dialed for gossip besides seeds and partners (``PeerDirectory/Configuration/activeView``).
        public var activeView: Int = 32
        public var handshakeTimeout: TimeAmount
        public var keepaliveInterval: TimeAmount
        public var idleTimeout: TimeAmount
        public var maxFrameLength: Int
        public var software: String
        public var expiryWarning: TimeInterval

        public init(
            city: CitySlug, listenHost: String, listenPort: Int, advertise: String, identity: PeerTLS.Identity, trust: PeerTrust,
            seeds: [PeerDirectory.Seed], maxConnections: Int = 256, handshakeTimeout: TimeAmount = .seconds(10),
            keepaliveInterval: TimeAmount = .seconds(15), idleTimeout: TimeAmount = .seconds(45),
            maxFrameLength: Int = WireFraming.defaultMaxFrameLength, software: String = "citymesh/\(CityMeshVersion.current)",
            expiryWarning: TimeInterval = 30 * 86_400
        ) {
            self.city = city
            self.listenHost = listenHost
            self.listenPort = listenPort
            self.advertise = advertise
            self.identity = identity
            self.trust = trust
            self.seeds = seeds
            self.maxConnections = maxConnections
            self.handshakeTimeout = handshakeTimeout
            self.keepaliveInterval = keepaliveInterval
            self.idleTimeout = idleTimeout
            self.maxFrameLength = maxFrameLength
            self.software = software
            self.expiryWarning = expiryWarning
        }
    }

    public static let protocolVersions: ClosedRange<UInt16> = 1...1

    struct Live {
        var channel: any Channel
        var identity: VerifiedIdentity?
    }

    struct State {
        var directory: PeerDirectory
        var trust: PeerTrust
        var live: [PeerDirectory.ConnectionID: Live] = [:]
        var refusals: [DisconnectReason: Int] = [:]
        var recent: [PeerRefusalRecord] = []
        var listen: String = ""
        var rng = SystemRandomNumberGenerator()
        var stopping = false
    }

    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    let serverContext: NIOSSLContext
    let clientContext: NIOSSLContext
    let sessionConfiguration: PeerSession.Configuration
    let state: Mutex<State>
    let onMessage: @Sendable (PeerMessage) -> Void
    let onEvent: @Sendable (PeerEvent) -> Void
    let tickInterval: TimeAmount
    let bound = Mutex<(any Channel)?>(nil)

    public init(
        configuration: Configuration, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onMessage: @escaping @Sendable (PeerMessage) -> Void = { _ in }, onEvent: @escaping @Sendable (PeerEvent) -> Void = { _ in }
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.onMessage = onMessage
        self.onEvent = onEvent
        serverContext = try PeerTLS.serverContext(identity: configuration.identity, roots: configuration.trust.roots)
        clientContext = try PeerTLS.clientContext(identity: configuration.identity, roots: configuration.trust.roots)
        sessionConfiguration = PeerSession.Configuration(
            hello: Hello(
                versions: Self.protocolVersions, city: configuration.city.rawValue, software: configuration.software,
                listen: configuration.advertise, maxFrameLength: UInt32(configuration.maxFrameLength), capabilities: []),
            handshakeTimeout: UInt64(configuration.handshakeTimeout.nanoseconds),
            keepaliveInterval: UInt64(configuration.keepaliveInterval.nanoseconds),
            idleTimeout: UInt64(configuration.idleTimeout.nanoseconds))
        tickInterval = .milliseconds(min(1000, max(10, configuration.keepaliveInterval.nanoseconds / 1_000_000 / 4)))
        state = Mutex(
            State(
                directory: PeerDirectory(
                    configuration: .init(
                        localCity: configuration.city, seeds: configuration.seeds, maxConnections: configuration.maxConnections, activeView: configuration.activeView,
                        viewSalt: UInt64.random(in: 0...UInt64.max))),
                trust: configuration.trust))
    }

    // MARK: Service

    /// Binds the listener (refusing to start if the port is taken), dials peers until graceful shutdown,
    /// then closes every connection with CLOSE(normal).
    public func run() async throws {
        let server = try await bind()
        // Every refusal reason is exported from the start at 0, so `increase()` over it (the
        // alert in deploy/prometheus) sees the first refusal instead of taking it as the base.
        for reason in DisconnectReason.allCases where reason.isRefusal {
            _ = Counter(label: "citymesh_peer_refusals_total", dimensions: [("reason", reason.rawValue)])
        }
        do {
            try await cancelWhenGracefulShutdown {
                while true {
                    self.tick()
                    try await Task.sleep(for: .milliseconds(self.tickInterval.nanoseconds / 1_000_000))
                }
            }
        } catch is CancellationError {
            // Graceful shutdown or task cancellation: fall through to closing connections.
        }
        try? await shutdown(server: server)
    }

    /// Starts listening; returns the bound address (port 0 picks a free port).
    @discardableResult
    public func bind() async throws -> any Channel {
        if let channel = bound.withLock({ $0 }) { return channel }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                let remote = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                guard let id = state.withLock({ $0.stopping ? nil : $0.directory.acceptInbound() }) else {
                    refused(PeerCheckFailure(.tooManyConnections, "connection limit \(configuration.maxConnections) reached"), remote: remote, direction: .inbound)
                    return channel.close()
                }
                let connection = PeerConnectionContext(id: id, direction: .inbound, expectedCity: nil, remote: remote)
                state.withLock { $0.live[id] = Live(channel: channel, identity: nil) }
                return channel.eventLoop.makeCompletedFuture {
                    let tls = NIOSSLServerHandler(context: serverContext, customVerificationCallback: verifier(for: connection))
                    try addHandlers(to: channel, tls: tls, connection: connection)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: configuration.listenHost, port: configuration.listenPort).get()
        } catch {
            throw CityMeshError(
                .ioError,
                "cannot listen for peers on \(configuration.listenHost):\(configuration.listenPort) (\(error)): stop what listens there or change 'listen' in citymesh.yaml")
        }
        let address = channel.localAddress.map { "\($0.ipAddress ?? configuration.listenHost):\($0.port ?? configuration.listenPort)" } ?? ""
        bound.withLock { $0 = channel }
        state.withLock { $0.listen = address }
        logger.notice("peer listener ready", metadata: ["peer.listen": "\(address)", "tls": "1.3 mutual"])
        return channel
    }

    func shutdown(server: any Channel) async throws {
        let live = state.withLock { s in
            s.stopping = true
            return Array(s.live.values.map(\.channel))
        }
        try? await server.close()
        for channel in live {
            try? await channel.triggerUserOutboundEvent(LocalClose(reason: .shutdown, detail: "node shutting down"))
        }
        for channel in live { try? await channel.closeFuture.get() }
        logger.info("peer connections closed", metadata: ["peer.count": "\(live.count)"])
    }

    // MARK: API for the node and the layers above

    /// The listener's address once bound.
    public var listenAddress: String { state.withLock { $0.listen } }

    public func status() -> PeerNetworkStatus {
        state.withLock { s in
            PeerNetworkStatus(
                listen: s.listen,
                peers: s.directory.entries.values.sorted { $0.city < $1.city },
                refusals: s.refusals,
                recentRefusals: s.recent)
        }
    }

    /// The verified certificate of `city`'s established connection, if there is one.
    /// The trust in force (CA, CRL, deny-list), as last loaded or reloaded.
    public var trust: PeerTrust { state.withLock { $0.trust } }

    public func identity(of city: CitySlug) -> VerifiedIdentity? {
        state.withLock { s in s.directory.entries[city]?.connection.flatMap { s.live[$0]?.identity } }
    }

    /// Sends `payload` on `channel` to `city` over its established connection.
    public func send(to city: CitySlug, channel: UInt16, payload: [UInt8]) async throws {
        let target: (any Channel)? = state.withLock { s in
            s.directory.entries[city]?.connection.flatMap { s.live[$0]?.channel }
        }
        guard let target else {
            throw CityMeshError(.nodeNotRunning, "no connection to '\(city)': check 'citymesh peers'")
        }
        let limit = state.withLock { s in s.directory.entries[city]?.session?.maxFrameLength } ?? WireFraming.minimumMaxFrameLength
        guard payload.count + 3 <= Int(limit) else {
            throw CityMeshError(.valueTooLarge, "a message of \(payload.count) bytes exceeds \(city)'s frame limit of \(limit): split it")
        }
        try await target.writeAndFlush(WireMessage.data(channel: channel, payload: payload[...]))
    }

    /// Takes the addresses of a record `city` signed (checked by the caller): dialed if the
    /// city is a seed, a partner or in the active view (``PeerDirectory/learn(_:addresses:source:now:)``).
    public func learn(_ city: CitySlug, addresses: [String], source: PeerDirectory.AddressSource) {
        state.withLock { $0.directory.learn(city, addresses: addresses, source: source, now: NIODeadline.now().uptimeNanoseconds) }
    }

    /// The cities this node shares with: always dialed.
    public func setPartners(_ partners: Set<CitySlug>) {
        state.withLock { $0.directory.setPartners(partners) }
    }

    /// The cities this node dials or is connected to (``PeerDirectory/neighbours``).
    /// The cities SWIM probes (``PeerDirectory/probed(now:)``).
    public var probed: Set<CitySlug> { state.withLock { $0.directory.probed(now: NIODeadline.now().uptimeNanoseconds) } }

    /// The cities with an established session now.
    public var connectedCities: [CitySlug] {
        state.withLock { s in s.directory.entries.values.filter { $0.state == .connected }.map(\.city).sorted() }
    }

    /// Applies a new trust (CRL, deny-list) and seed list: connections of peers no longer trusted are
    /// closed with CLOSE(revoked); everyone else is left alone.
    public func reload(trust: PeerTrust, seeds: [PeerDirectory.Seed]) {
        let cut: [(any Channel, PeerCheckFailure)] = state.withLock { s in
            s.trust = trust
            s.directory.updateSeeds(seeds)
            return s.live.values.compactMap { live in
                guard let identity = live.identity, let failure = trust.revocationFailure(identity) else { return nil }
                return (live.channel, failure)
            }
        }
        logger.notice("peer trust reloaded", metadata: ["peer.cut": "\(cut.count)", "crl.entries": "\(trust.revocations?.entries.count ?? 0)", "deny.entries": "\(trust.denied.count)"])
        for (channel, failure) in cut {
            channel.triggerUserOutboundEvent(LocalClose(reason: failure.reason, detail: failure.detail), promise: nil)
        }
    }

    /// Dials peers whose backoff has passed, and ends sessions whose certificate has expired since
    /// the handshake.
    public func tick() {
        let now = Date()
        let (directives, expired) = state.withLock { s -> ([PeerDirectory.Directive], [any Channel]) in
            guard !s.stopping else { return ([], []) }
            let expired = s.live.values.compactMap { live in live.identity.map { $0.notValidAfter < now } == true ? live.channel : nil }
            return (s.directory.onTick(now: NIODeadline.now().uptimeNanoseconds), expired)
        }
        for channel in expired {
            channel.triggerUserOutboundEvent(LocalClose(reason: .certificateExpired, detail: "the peer's certificate expired during the session"), promise: nil)
        }
        perform(directives)
    }

    // MARK: Events from connections

    func established(_ c: PeerConnectionContext, peer: PeerSession.Peer, identity: VerifiedIdentity, channel: any Channel) {
        let directives = state.withLock { s in
            s.live[c.id] = Live(channel: channel, identity: identity)
            return s.directory.onEstablished(c.id, peer: peer, certificateNotAfter: identity.notValidAfter, wallNow: Date())
        }
        logger.info(
            "peer connected",
            metadata: [
                "peer.city": "\(peer.city)", "peer.address": "\(c.remote)", "peer.direction": "\(c.direction.rawValue)",
                "peer.protocol": "\(peer.protocolVersion)", "peer.software": "\(peer.software)", "cert.fingerprint": "\(peer.fingerprint)",
            ])
        Gauge(label: "citymesh_peer_certificate_expiry_seconds", dimensions: [("peer", peer.city.rawValue)])
            .record(identity.notValidAfter.timeIntervalSince1970)
        let left = identity.notValidAfter.timeIntervalSinceNow
        if left < configuration.expiryWarning {
            Counter(label: "citymesh_certificate_expiry_warnings_total", dimensions: [("peer", peer.city.rawValue)]).increment()
            logger.warning(
                "peer certificate expires soon",
                metadata: ["peer.city": "\(peer.city)", "cert.expires": "\(identity.notValidAfter)", "cert.days_left": "\(Int(left / 86_400))"])
        }
        onEvent(.connected(city: peer.city, fingerprint: peer.fingerprint, remote: c.remote, direction: c.direction, protocolVersion: peer.protocolVersion))
        perform(directives)
        updateConnectedGauge()
    }

    func closed(_ c: PeerConnectionContext, reason: DisconnectReason, detail: String, established: Bool) {
        let city: CitySlug? = state.withLock { s in
            s.live.removeValue(forKey: c.id)
            let city = s.directory.expectedCity(for: c.id)
            let jitter = Double.random(in: 0..<1, using: &s.rng)
            s.directory.onClosed(c.id, reason: reason, detail: detail, now: NIODeadline.now().uptimeNanoseconds, wallNow: Date(), jitter: jitter)
            return city
        }
        if reason.isRefusal {
            refused(PeerCheckFailure(reason, detail), remote: c.remote, direction: c.direction)
        } else if !established, reason == .peerClosed {
            logger.warning(
                "a peer refused this node",
                metadata: ["peer.city": "\(city.map(\.rawValue) ?? "?")", "peer.address": "\(c.remote)", "peer.detail": "\(detail)"])
        } else if established || reason == .dialFailed {
            logger.info(
                established ? "peer disconnected" : "peer dial failed",
                metadata: ["peer.city": "\(city.map(\.rawValue) ?? "?")", "peer.address": "\(c.remote)", "peer.reason": "\(reason.rawValue)", "peer.detail": "\(detail)"])
        }
        updateConnectedGauge()
    }

    func measured(_ c: PeerConnectionContext, rttNanoseconds: UInt64) {
        state.withLock { $0.directory.onRTT(c.id, nanoseconds: rttNanoseconds, wallNow: Date()) }
    }

    func deliver(_ message: PeerMessage) {
        onMessage(message)
    }

    func refused(_ failure: PeerCheckFailure, remote: String, direction: PeerDirectory.Direction) {
        state.withLock { s in
            s.refusals[failure.reason, default: 0] += 1
            s.recent.append(PeerRefusalRecord(at: Date(), reason: failure.reason, remote: remote, direction: direction, detail: failure.detail))
            if s.recent.count > 50 { s.recent.removeFirst(s.recent.count - 50) }
        }
        Counter(label: "citymesh_peer_refusals_total", dimensions: [("reason", failure.reason.rawValue)]).increment()
        onEvent(.refused(reason: failure.reason, remote: remote, direction: direction, detail: failure.detail))
        logger.warning(
            "peer refused",
            metadata: ["peer.address": "\(remote)", "peer.direction": "\(direction.rawValue)", "peer.reason": "\(failure.reason.rawValue)", "peer.detail": "\(failure.detail)"])
    }

    func updateConnectedGauge() {
        let n = state.withLock { s in s.directory.entries.values.filter { $0.state == .connected }.count }
        Gauge(label: "citymesh_peers_connected").record(n)
    }

    // MARK: Directives

    func perform(_ directives: [PeerDirectory.Directive]) {
        for d in directives {
            switch d {
            case .dial(let id, let city, let address):
                dial(id, city: city, address: address)
            case .close(let id, let reason, let detail):
                let channel = state.withLock { $0.live[id]?.channel }
                channel?.triggerUserOutboundEvent(LocalClose(reason: reason, detail: detail), promise: nil)
            }
        }
    }

    func dial(_ id: PeerDirectory.ConnectionID, city: CitySlug, address: String) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            failedDial(id, address: address, detail: "invalid address")
            return
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let connection = PeerConnectionContext(id: id, direction: .outbound, expectedCity: city, remote: address)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                state.withLock { $0.live[id] = Live(channel: channel, identity: nil) }
                return channel.eventLoop.makeCompletedFuture {
                    let tls = try NIOSSLClientHandler(context: clientContext, serverHostname: nil, customVerificationCallback: verifier(for: connection))
                    try addHandlers(to: channel, tls: tls, connection: connection)
                }
            }
        bootstrap.connect(host: host, port: port).whenFailure { [self] error in
            failedDial(id, address: address, detail: "\(error)")
        }
    }

    func failedDial(_ id: PeerDirectory.ConnectionID, address: String, detail: String) {
        let city: CitySlug? = state.withLock { s in
            s.live.removeValue(forKey: id)
            let city = s.directory.expectedCity(for: id)
            s.directory.onFailed(id, reason: .dialFailed, detail: detail, now: NIODeadline.now().uptimeNanoseconds, jitter: Double.random(in: 0..<1, using: &s.rng))
            return city
        }
        logger.debug("peer dial failed", metadata: ["peer.city": "\(city.map(\.rawValue) ?? "?")", "peer.address": "\(address)", "peer.detail": "\(detail)"])
    }

    func addHandlers(to channel: any Channel, tls: NIOSSLHandler, connection: PeerConnectionContext) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(tls)
        try sync.addHandler(ByteToMessageHandler(WireMessageDecoder(maxFrameLength: configuration.maxFrameLength)))
        try sync.addHandler(MessageToByteHandler(WireMessageEncoder()))
        try sync.addHandler(PeerChannelHandler(connection: connection, network: self, configuration: sessionConfiguration))
    }

    /// The NIOSSL verification callback: all checks are `PeerTrust.verify`, with the trust current at
    /// handshake time.
    func verifier(for connection: PeerConnectionContext) -> NIOSSLCustomVerificationCallback {
        { [self] certificates, promise in
            let trust = state.withLock { $0.trust }
            promise.completeWithTask {
                let chain: [Certificate]
                do {
                    chain = try certificates.map { try Certificate(derEncoded: try $0.toDERBytes()) }
                } catch {
                    connection.result = .failure(PeerCheckFailure(.tlsError, "the peer's certificate cannot be parsed: \(error)"))
                    return .failed
                }
                let result = await trust.verify(chain: chain, expectedCity: connection.expectedCity, now: Date())
                connection.result = result
                if case .success = result { return .certificateVerified }
                return .failed
            }
        }
    }
}
