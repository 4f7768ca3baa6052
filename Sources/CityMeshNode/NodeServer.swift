public import CityMeshCore
import CityMeshAdmin
import CityMeshStore
import Foundation
import Hummingbird
public import Logging
import ServiceLifecycle
import UnixSignals
import X509

/// `citymesh serve`: the node's services in one `ServiceGroup`. SIGTERM/SIGINT stop it gracefully:
/// services stop in reverse order (admin API first, store last) and the process exits 0.
public struct NodeServer: Sendable {
    public let directory: NodeDirectory
    public let logger: Logger

    public init(directory: NodeDirectory, logger: Logger) {
        self.directory = directory
        self.logger = logger
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

        let store = try NodeStore(path: directory.file(config.database))
        guard store.city == city else {
            throw CityMeshError(.configInvalid, "the database belongs to '\(store.city)' but the config says '\(city)': restore the right citymesh.yaml")
        }
        let admin = try HostPort(config.admin, what: "admin")
        if !admin.isLoopback {
            logger.warning("the admin API listens beyond loopback; protect it with a firewall", metadata: ["admin.address": "\(admin)"])
        }
        let api = AdminAPI(
            store: store, version: CityMeshVersion.current,
            startedAt: RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)),
            physicalMillis: { UInt64(Date().timeIntervalSince1970 * 1000) })
        var httpLogger = logger
        httpLogger[metadataKey: "service"] = "admin"
        let app = Application(
            router: api.makeRouter(),
            configuration: .init(address: .hostname(admin.host, port: admin.port), serverName: "citymesh/\(CityMeshVersion.current)"),
            onServerRunning: { channel in
                onReady("\(channel.localAddress.map { "\($0)" } ?? admin.description)")
            },
            logger: httpLogger)
        let group = ServiceGroup(
            configuration: .init(
                services: [StoreService(store: store, logger: logger), app],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        logger.info("node starting", metadata: ["admin.address": "\(admin)", "version": "\(CityMeshVersion.current)"])
        do {
            try await group.run()
        } catch {
            let text = "\(error)"
            if text.contains("Address already in use") || text.contains("EADDRINUSE") || text.contains("errno: 98") {
                throw CityMeshError(.ioError, "the admin address \(admin) is already in use: stop what listens there or change 'admin' in \(directory.configPath)")
            }
            throw error
        }
        logger.info("node stopped")
    }

    static func checkIdentity(config: NodeConfig, directory: NodeDirectory, city: CitySlug) async throws -> VerifiedIdentity {
        let roots = try PEM.certificates(try Files.read(directory.file(config.tls.ca), what: "the CA certificate"), what: config.tls.ca)
        let chain = try PEM.certificates(try Files.read(directory.file(config.tls.cert), what: "the certificate"), what: config.tls.cert)
        let key = try PEM.privateKey(try Files.read(directory.file(config.tls.key), what: "the key"), what: config.tls.key)
        try NodeIdentity.checkKeyMatches(key, certificate: chain[0])
        return try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: city, now: Date())
    }
}

/// Owns the database for the node's lifetime; closes it last on shutdown.
struct StoreService: Service {
    let store: NodeStore
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        try store.close()
        logger.info("store closed")
    }
}
