public import CityMeshCore
import CityMeshAdmin
import CityMeshNet
import CityMeshStore
import Crypto
import CryptoExtras
import Foundation
import Metrics
import Hummingbird
public import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals
import X509

/// `citymesh serve`: the node's services in one `ServiceGroup`. SIGTERM/SIGINT stop it gracefully:
/// services stop in reverse order (admin API first, store last) and the process exits 0.
public struct NodeServer: Sendable {
    public let directory: NodeDirectory
    public let logger: Logger
    /// Renders the process's metrics for `GET /metrics` (the executable owns the metrics backend).
    public let metrics: (@Sendable () -> String)?

    public init(directory: NodeDirectory, logger: Logger, metrics: (@Sendable () -> String)? = nil) {
        self.directory = directory
        self.logger = logger
        self.metrics = metrics
    }

    /// Checks the config and identity, takes the node lock, and runs until a shutdown signal.
    /// `onReady` is called once the admin API listens.
    public func run(onReady: @escaping @Sendable (String) -> Void = { _ in }) async throws {
        let config = try directory.loadConfig()
        let city = try CitySlug(config.city)
        let lock = try NodeLock.acquire(directory)
        defer { lock.release() }
        var logger = self.logger
        logger[metadataKey: "city"] = "\(city)"

        let identity = try await Self.checkIdentity(config: config, directory: directory, city: city)
        logger.info("identity verified", metadata: ["cert.fingerprint": "\(identity.fingerprint)", "cert.expires": "\(identity.notValidAfter)"])
        for exposed in NodeOperations.exposedSecrets(config, directory) { logger.warning("secret readable by others", metadata: ["problem": "\(exposed)"]) }

        let store = try NodeStore(path: directory.file(config.database))
        guard store.city == city else {
            throw CityMeshError(.configInvalid, "the database belongs to '\(store.city)' but the config says '\(city)': restore the right citymesh.yaml")
        }
        let left = identity.notValidAfter.timeIntervalSinceNow
        if left < 30 * 86_400 {
            Counter(label: "citymesh_certificate_expiry_warnings_total", dimensions: [("peer", city.rawValue)]).increment()
            logger.warning(
                "this node's certificate expires soon: issue a new one and restart",
                metadata: ["cert.expires": "\(identity.notValidAfter)", "cert.days_left": "\(Int(left / 86_400))"])
        }
        var peerLogger = logger
        peerLogger[metadataKey: "service"] = "peers"
        var ledgerLogger = logger
        ledgerLogger[metadataKey: "service"] = "ledger"
        let (signer, signerProblem) = LedgerService.signer(city: city, keyPEM: try Files.read(directory.file(config.tls.key), what: "the key"))
        if let signerProblem { ledgerLogger.warning("\(signerProblem)") }
        let ledgerService = LedgerService(ledger: LedgerStore(store: store), signer: signer, logger: ledgerLogger)
        let nowText: @Sendable () -> String = { RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)) }
        _ = try await ledgerService.ledger.appendNow([
            LedgerEntry(time: nowText(), kind: LedgerEntry.Kind.nodeStarted, actor: "node", hashes: ["certificate.sha256": identity.fingerprint], detail: "citymesh \(CityMeshVersion.current)")
        ])

        let trustAlerts = TrustAlerts()
        let (peerConfiguration, startAlerts) = try Self.peerConfiguration(config: config, directory: directory, city: city)
        trustAlerts.set(startAlerts, logger: peerLogger)
        // Policy versions are signed with the node's key, like checkpoints.
        let nodeKey = NotePrivateKey(pem: try Files.read(directory.file(config.tls.key), what: "the key"))
        let policySigner: NoteSigner? = try nodeKey.map { try NoteSigner(name: PolicyManager.noteName(city), key: $0) }
        let book = AgreementBook()
        let clock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1_000_000) }
        let policy = PolicyManager(
            store: store, ledger: ledgerService.ledger, signer: policySigner, clock: clock,
            accepted: { book.isActive(share: $0, member: $1) })
        if let issues = try await policy.load() {
            logger.error("the policy in force no longer fits the datasets: nothing is shared until a valid one is applied", metadata: ["issues": "\(issues)"])
        }
        let policyFile = PolicyFile(directory: directory, manager: policy, ledger: ledgerService, logger: logger)

        let keyPEM = try Files.read(directory.file(config.tls.key), what: "the key")
        let agreementKey: Agreement.Key? =
            (try? Curve25519.Signing.PrivateKey(pemRepresentation: keyPEM)).map { .ed25519($0) }
            ?? (try? P256.Signing.PrivateKey(pemRepresentation: keyPEM)).map { .p256($0) }
        var agreementLogger = logger
        agreementLogger[metadataKey: "service"] = "agreements"
        let agreements = AgreementService(
            city: city, store: store, key: agreementKey, policy: policy, book: book, ledger: ledgerService, logger: agreementLogger, clock: clock)
        policy.onChange { await agreements.sync() }

        var replicationLogger = logger
        replicationLogger[metadataKey: "service"] = "replication"
        let replication = ReplicationService(
            city: city, store: store, key: agreementKey, policy: policy, book: book, ledger: ledgerService, roots: peerConfiguration.trust.roots,
            logger: replicationLogger, clock: clock)
        policy.onChange { replication.invalidate() }

        var membershipLogger = logger
        membershipLogger[metadataKey: "service"] = "membership"
        let membership = MembershipService(city: city, seeds: peerConfiguration.seeds.map(\.city), logger: membershipLogger)
        let advertised = try Self.advertised(config: config)
        if advertised.contains(where: { $0.hasPrefix("0.0.0.0:") || $0.hasPrefix("[::]:") }) {
            peerLogger.warning(
                "this node announces an address no other city can dial: set peers.advertise in citymesh.yaml to the HOST:PORT others reach it at",
                metadata: ["addresses": "\(advertised.joined(separator: ", "))"])
        }
        let addresses = try AddressService(
            city: city, store: store, key: agreementKey, certificate: identity.certificate, advertise: advertised, membership: membership,
            partners: { await agreements.partners() }, logger: peerLogger)

        let cosigner = try nodeKey.map { try Cosigner(name: Cosignature.witnessName(city), key: $0) }
        let exchange = PeerLedgerExchange(ledger: ledgerService.ledger, cosigner: cosigner, logger: ledgerLogger)
        let limiter = RateLimits(PeerRateLimiter(limits: try (config.peers ?? .init()).rateLimiterLimits()))
        for (name, _) in PeerRateLimiter.defaults { Counter(label: "citymesh_peer_rate_limited_total", dimensions: [("channel", name)]).increment(by: 0) }
        let network = try PeerNetwork(configuration: peerConfiguration, logger: peerLogger, onMessage: { message in
            // Over its rate limit on this channel: dropped and counted, before any service sees it.
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            guard limiter.state.withLock({ $0.admit(message.city, channel: message.channel, now: now) }) else {
                Counter(label: "citymesh_peer_rate_limited_total", dimensions: [("channel", PeerRateLimiter.name(of: message.channel))]).increment()
                return
            }
            exchange.receive(message)
            agreements.receive(message)
            replication.receive(message)
            membership.receive(message)
            addresses.receive(message)
        }, onEvent: { event in
            switch event {
            case .connected(let peer, let fingerprint, let remote, let direction, let version):
                replication.connected(peer)
                addresses.connected(peer)
                let entry = LedgerEntry(
                    time: nowText(), kind: LedgerEntry.Kind.peerConnected, actor: "peer:\(peer)", peer: peer.rawValue,
                    hashes: ["certificate.sha256": fingerprint], detail: "\(direction.rawValue) \(remote), protocol \(version)")
                // One task per connection (connections are bounded), not a queue: the entry is
                // durable before this node offers the peer anything.
                Task {
                    await ledgerService.record(entry)
                    await agreements.connected(peer)
                }
            case .refused(let reason, let remote, let direction, let detail):
                // Anyone who reaches the port can cause these: throttled per remote host.
                let host = remote.description.split(separator: ":").dropLast().joined(separator: ":")
                // A task only when the throttle admits the entry (at most one per host and interval).
                var entry = LedgerEntry(
                    time: nowText(), kind: LedgerEntry.Kind.peerRefused, actor: "node", reason: reason.rawValue, detail: "\(direction.rawValue) \(remote): \(detail)")
                let from = host.isEmpty ? "\(remote)" : host, at = Int64(Date().timeIntervalSince1970 * 1_000_000)
                if ledgerService.admitRefusal(&entry, peer: from, nowMicros: at) { Task { [entry] in await ledgerService.record(entry) } }
            }
        })

        exchange.attach(network)
        await exchange.witness(store: store, ledger: ledgerService)
        replication.witness.withLock { $0 = exchange }
        agreements.attach(network)
        replication.attach(network)
        membership.attach(network)
        addresses.attach(network)
        policy.setKnownCities { Set(network.status().peers.map(\.city.rawValue)) }

        let admin = try HostPort(config.admin, what: "admin")
        if !admin.isLoopback {
            logger.warning("the admin API listens beyond loopback; protect it with a firewall", metadata: ["admin.address": "\(admin)"])
        }
        // Not ready until the config's policy file is in force (it is applied once the services run).
        let starting = Mutex<String?>(config.policy == nil ? nil : "applying the policy file \(config.policy ?? "")")
        let api = AdminAPI(
            store: store, version: CityMeshVersion.current,
            startedAt: RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)),
            physicalMillis: { UInt64(Date().timeIntervalSince1970 * 1000) },
            peers: { Self.peerList(network, city: city, membership: membership.status(), rateLimited: limiter.state.withLock { $0.refused }) },
            metrics: metrics, ledger: ledgerService.ledger, verifierKey: signer?.verifier,
            peerCheckpoint: { city in
                let o = try await exchange.fetchCheckpoint(city)
                return API.PeerCheckpoint(city: o.city, checkpoint: o.note, size: o.size, rootHash: o.root, verifierKey: o.keyName, consistentWith: o.consistentWith)
            },
            certificates: (
                node: try Files.read(directory.file(config.tls.cert), what: "the certificate"),
                ca: try Files.read(directory.file(config.tls.ca), what: "the CA certificate")
            ),
            policy: policy, agreements: agreements, replication: replication,
            notReady: { starting.withLock { $0 } }, alerts: { trustAlerts.current })
        var httpLogger = logger
        httpLogger[metadataKey: "service"] = "admin"
        let app = Application(
            router: api.makeRouter(),
            configuration: .init(address: .hostname(admin.host, port: admin.port), serverName: "citymesh/\(CityMeshVersion.current)"),
            onServerRunning: { channel in
                onReady("\(channel.localAddress.map { "\($0)" } ?? admin.description)")
            },
            logger: httpLogger)
        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                StoreService(store: store, logger: logger), ledgerService, network, replication, membership, addresses,
                WitnessService(exchange: exchange, replication: replication, interval: .seconds(10)),
                ReloadService(directory: directory, network: network, agreements: agreements, addresses: addresses, limiter: limiter, policyFile: policyFile, trustAlerts: trustAlerts, logger: peerLogger), app,
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        // A stop is bounded: whatever has not drained after this long is cancelled (SQLite's
        // transactions keep the database whole), well inside systemd's 60 s TimeoutStopSec.
        groupConfiguration.maximumGracefulShutdownDuration = Self.drainLimit
        groupConfiguration.maximumCancellationDuration = .seconds(10)
        let group = ServiceGroup(configuration: groupConfiguration)
        logger.info("node starting", metadata: ["admin.address": "\(admin)", "version": "\(CityMeshVersion.current)"])
        // The policy file is applied once the services run: applying ledgers the new version,
        // and the ledger's writer is one of the services (awaiting it before would never return).
        let applyPolicy = Task {
            await policyFile.apply(config: config, reason: "start")
            starting.withLock { $0 = nil }
        }
        defer { applyPolicy.cancel() }
        await agreements.sync()
        await agreements.endDistrusted(peerConfiguration.trust)
        // Bind the peer port before anything starts, so a taken port fails cleanly and first.
        try await network.bind()
        do {
            try await group.run()
        } catch let e as CityMeshError {
            throw e
        } catch {
            let text = "\(error)"
            if text.contains("Address already in use") || text.contains("EADDRINUSE") || text.contains("errno: 98") {
                throw CityMeshError(.ioError, "the admin address \(admin) is already in use: stop what listens there or change 'admin' in \(directory.configPath)")
            }
            throw error
        }
        logger.info("node stopped")
    }

        /// How long SIGTERM waits for in-flight work to drain before cancelling it.
    public static let drainLimit: Duration = .seconds(30)

    /// The peer transport's settings from the config: identity, trust (CA, CRL, deny-list), seeds, limits.
    static func peerConfiguration(config: NodeConfig, directory: NodeDirectory, city: CitySlug) throws -> (PeerNetwork.Configuration, alerts: [String]) {
        let peers = config.peers ?? .init()
        let (trust, alerts) = try loadTrust(config: config, directory: directory)
        let listen = try HostPort(config.listen, what: "listen")
        let identity = try PeerTLS.Identity(
            chainPEM: try Files.read(directory.file(config.tls.cert), what: "the certificate"),
            keyPEM: try Files.read(directory.file(config.tls.key), what: "the key"))
        let configuration = PeerNetwork.Configuration(
            city: city, listenHost: listen.host, listenPort: listen.port, advertise: try advertised(config: config)[0],
            identity: identity, trust: trust, seeds: try peers.seedList(),
            maxConnections: peers.maxConnections ?? 256,
            handshakeTimeout: .seconds(Int64(peers.handshakeTimeoutSeconds ?? 10)),
            keepaliveInterval: .seconds(Int64(peers.keepaliveSeconds ?? 15)),
            idleTimeout: .seconds(Int64(peers.idleTimeoutSeconds ?? 45)))
        var withView = configuration
        withView.activeView = peers.activeView ?? 32
        return (withView, alerts)
    }

    /// The addresses this node announces (`peers.advertise`, comma-separated, else `listen`):
    /// HELLO carries the first, the signed address record all of them.
    static func advertised(config: NodeConfig) throws -> [String] {
        let text = config.peers?.advertise ?? config.listen
        let list = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if let why = AddressRecord.refusal(version: 0, addresses: list) {
            throw CityMeshError(.configInvalid, "peers.advertise '\(text)': \(why); write one to eight HOST:PORT, comma-separated, e.g. 10.0.0.5:7001, hz.example.gov.cn:7001")
        }
        return list
    }

    /// Where a node keeps a copy of the last CRL it put in force, so a CRL file that disappears or
    /// is replaced by an older one does not drop revocations, not even across a restart.
    static let keptCRLFile = "crl.in-force.pem"

    /// The federation CA, the CRL in force (`FederationCRL.resolve`: fails closed) and the
    /// deny-list, as one trust value; with what is wrong with the CRL, if anything.
    static func loadTrust(config: NodeConfig, directory: NodeDirectory, inForce: RevocationList? = nil) throws -> (trust: PeerTrust, alerts: [String]) {
        let roots = try PEM.certificates(try Files.read(directory.file(config.tls.ca), what: "the CA certificate"), what: config.tls.ca)
        let peers = config.peers ?? .init()
        let resolution = try FederationCRL.resolve(
            path: peers.crl.map { directory.file($0) }, roots: roots, inForce: inForce, keptPath: directory.file(keptCRLFile))
        return (PeerTrust(roots: roots, revocations: resolution.crl, denied: try peers.denySet()), resolution.alerts)
    }

    static func peerList(_ network: PeerNetwork, city: CitySlug, membership: [String: String]? = nil, rateLimited: [CitySlug: [String: Int]] = [:]) -> API.PeerList {
        let status = network.status()
        func time(_ d: Date?) -> String? { d.map { RFC3339.format(microseconds: Int64($0.timeIntervalSince1970 * 1_000_000)) } }
        return API.PeerList(
            city: city.rawValue,
            listen: status.listen,
            peers: status.peers.map { e in
                API.Peer(
                    city: e.city.rawValue, state: e.state.rawValue, address: e.address, direction: e.direction?.rawValue,
                    rttMs: e.rttNanoseconds.map { Double($0) / 1_000_000 }, lastSeen: time(e.lastSeen),
                    certificateExpires: time(e.certificateNotAfter), certificateFingerprint: e.session?.fingerprint,
                    protocolVersion: e.session.map { Int($0.protocolVersion) }, software: e.session?.software, fromSeed: e.fromSeed,
                    lastError: e.lastError, rateLimited: rateLimited[e.city])
                    .with(view: e.view, addressSource: e.source?.description, addresses: e.addresses)
            },
            refusals: Dictionary(uniqueKeysWithValues: status.refusals.map { ($0.key.rawValue, $0.value) }),
            recentRefusals: status.recentRefusals.map {
                API.Refusal(at: time($0.at) ?? "", reason: $0.reason.rawValue, remote: $0.remote, direction: $0.direction.rawValue, detail: $0.detail)
            },
            membership: membership)
    }

    static func checkIdentity(config: NodeConfig, directory: NodeDirectory, city: CitySlug) async throws -> VerifiedIdentity {
        let roots = try PEM.certificates(try Files.read(directory.file(config.tls.ca), what: "the CA certificate"), what: config.tls.ca)
        let chain = try PEM.certificates(try Files.read(directory.file(config.tls.cert), what: "the certificate"), what: config.tls.cert)
        let key = try PEM.privateKey(try Files.read(directory.file(config.tls.key), what: "the key"), what: config.tls.key)
        try NodeIdentity.checkKeyMatches(key, certificate: chain[0])
        return try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: city, now: Date())
    }
}

extension API.Peer {
    func with(view: String, addressSource: String?, addresses: [String]) -> API.Peer {
        var p = self
        p.view = view
        p.addressSource = addressSource
        p.addresses = addresses.isEmpty ? nil : addresses
        return p
    }
}

/// Owns the database for the node's lifetime; closes it last on shutdown.
struct StoreService: Service {
    let store: NodeStore
    let logger: Logger

    func run() async throws {
        let logger = logger
        await cancelWhenGracefulShutdown {
            await store.runCheckpointer(
                onRestart: { how in
                    // How often the WAL started over, and how often that took the write lock.
                    Counter(label: "citymesh_wal_restarts_total", dimensions: [("how", how == .paused ? "paused" : "forced")]).increment()
                },
                onError: { error in logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"]) })
        }
        try store.close()
        logger.info("store closed")
    }
}

/// SIGHUP: re-reads the config's seeds, CRL and deny-list and applies them without a restart.
/// A bad config or CRL is logged and the previous settings stay in force.
struct ReloadService: Service {
    let directory: NodeDirectory
    let network: PeerNetwork
    let agreements: AgreementService
    let addresses: AddressService
    let limiter: RateLimits
    let policyFile: PolicyFile
    let trustAlerts: TrustAlerts
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            do {
                let config = try directory.loadConfig()
                let (trust, alerts) = try NodeServer.loadTrust(config: config, directory: directory, inForce: network.trust.revocations)
                trustAlerts.set(alerts, logger: logger)
                network.reload(trust: trust, seeds: try (config.peers ?? .init()).seedList())
                let limits = try (config.peers ?? .init()).rateLimiterLimits()
                limiter.state.withLock { $0.limits = PeerRateLimiter.defaults.merging(limits) { _, configured in configured } }
                await agreements.endDistrusted(trust)
                await addresses.trustChanged(trust)
                logger.notice("configuration reloaded (SIGHUP)", metadata: ["crl.entries": "\(trust.revocations?.entries.count ?? 0)"])
                await policyFile.apply(config: config, reason: "SIGHUP")
            } catch {
                logger.error("reload failed; the previous configuration stays in force", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// The config's `policy:` file, applied at start and on SIGHUP. An invalid file changes nothing:
/// its problems are logged (with line and column) and ledgered, and the policy in force stays.
struct PolicyFile: Sendable {
    let directory: NodeDirectory
    let manager: PolicyManager
    let ledger: LedgerService
    let logger: Logger

    func apply(config: NodeConfig, reason: String) async {
        guard let path = config.policy else { return }
        let file = directory.file(path)
        do {
            let text = try Files.read(file, what: "the policy file")
            let (version, changes, unchanged) = try await manager.apply(text, actor: "node:\(reason.lowercased())")
            if !unchanged {
                logger.notice("policy applied from \(path)", metadata: ["policy.version": "\(version.version)", "policy.changes": "\(changes.count)"])
            }
        } catch let issues as PolicyIssues {
            logger.error("the policy file \(path) was not applied; the policy in force stays", metadata: ["issues": "\(issues.description)"])
            await ledger.record(LedgerEntry(
                time: RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)), kind: LedgerEntry.Kind.policyRejected,
                actor: "node:\(reason.lowercased())", counts: ["issues": issues.issues.count], detail: issues.issues.prefix(5).map(\.description).joined(separator: "; ")))
        } catch {
            logger.error("the policy file \(path) was not applied; the policy in force stays", metadata: ["error": "\(error)"])
        }
    }
}

/// What is wrong with the trust in force (the CRL kept in force over a missing, broken or older
/// file; a CRL past its next update): logged when it changes, exported as
/// `citymesh_trust_alerts`, and shown by `/readyz` and `citymesh config check`.
final class TrustAlerts: Sendable {
    private let alerts = Mutex<[String]>([])

    init() { Gauge(label: "citymesh_trust_alerts").record(0) }

    var current: [String] { alerts.withLock { $0 } }

    func set(_ new: [String], logger: Logger) {
        let old = alerts.withLock { a in
            defer { a = new }
            return a
        }
        Gauge(label: "citymesh_trust_alerts").record(Double(new.count))
        for a in new where !old.contains(a) { logger.error("trust alert: \(a)") }
        if !old.isEmpty, new.isEmpty { logger.notice("trust alerts cleared: the CRL in force is the configured file, current") }
    }
}

/// The per-peer rate limiter the peer transport's messages pass first (`peers.rate_limits`).
final class RateLimits: Sendable {
    let state: Mutex<PeerRateLimiter>
    init(_ limiter: PeerRateLimiter) { state = Mutex(limiter) }
}
