import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshNode
import Foundation
import Logging
import Metrics
import Prometheus

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a node directory: config, database, TLS identity and local admin token.",
        discussion: """
            Example:
              citymesh init --dir hz --city hangzhou --ca fed/ca.pem --cert hz-cert/node.pem \\
                            --key hz-cert/node.key --listen 127.0.0.1:7001 --admin 127.0.0.1:7101
              citymesh init --dir sh --city shanghai --ca fed/ca.pem --cert sh-cert/node.pem \\
                            --key sh-cert/node.key --listen 127.0.0.1:7002 --admin 127.0.0.1:7102 \\
                            --seed hangzhou@127.0.0.1:7001 --crl fed/crl.pem

            Checks that the certificate chains to the CA, that the key belongs to the certificate and
            that the certificate names --city, then writes citymesh.yaml, citymesh.db, tls/ and
            admin.token (mode 0600). Refuses to replace an existing node unless --force.
            """)

    @Option(help: "The node directory to create (default: $CITYMESH_DIR).") var dir: String?
    @Option(help: "This node's city slug; must match the certificate.") var city: String
    @Option(help: "The federation CA certificate (PEM).") var ca: String
    @Option(help: "This node's certificate (PEM).") var cert: String
    @Option(help: "This node's private key (PEM).") var key: String
    @Option(help: "Peer listener address, HOST:PORT.") var listen: String = "127.0.0.1:7001"
    @Option(help: "Admin API address, HOST:PORT (keep it on loopback).") var admin: String = "127.0.0.1:7101"
    @Option(help: "A peer to dial, as CITY@HOST:PORT (repeatable); its certificate must name CITY.") var seed: [String] = []
    @Option(help: "The federation CRL (PEM); it may not exist yet, the node reads it when it does.") var crl: String?
    @Option(help: "The HOST:PORT other cities dial (up to 8, comma-separated), when --listen is not reachable as it is (0.0.0.0, NAT). Signed with the node key and gossiped.") var advertise: String?
    @Flag(help: "Replace an existing node directory (its data is lost).") var force = false

    func run() async throws {
        guard let path = dir ?? ProcessInfo.processInfo.environment["CITYMESH_DIR"], !path.isEmpty else {
            throw CityMeshError(.invalidArgument, "no node directory: pass --dir DIR or set CITYMESH_DIR")
        }
        let result = try await NodeInitializer.run(
            .init(dir: path, city: city, ca: ca, cert: cert, key: key, listen: listen, admin: admin, force: force, seeds: seed, crl: crl, advertise: advertise))
        print("initialized node '\(result.identity.city)' in \(path)")
        print("  config:      \(result.configPath)")
        print("  certificate: expires \(RFC3339.format(microseconds: Int64(result.identity.notValidAfter.timeIntervalSince1970) * 1_000_000)), sha256 \(result.identity.fingerprint)")
        print("  admin token: \(result.tokenPath) (mode 0600; the CLI uses it by default)")
        print("  peers:       listen \(listen)\(advertise.map { " (announced as \($0))" } ?? ""), seeds \(seed.isEmpty ? "none" : seed.joined(separator: ", "))"
              + (crl.map { ", CRL \($0)" + (FileManager.default.fileExists(atPath: $0) ? "" : " (not there yet; read when it is, on SIGHUP)") } ?? ""))
        print("next: citymesh serve --dir \(path)")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the node daemon until SIGTERM or SIGINT.",
        discussion: """
            Example:
              citymesh serve --dir hz &

            Runs the peer listener and dialer (mutual TLS 1.3), the admin API and the store as
            services of one group. SIGHUP re-reads the config's seeds, the federation CRL and the
            deny-list, and cuts off peers that are no longer trusted. SIGTERM or Ctrl-C closes peer
            connections, drains in-flight requests, closes the database and exits 0. A second
            'serve' on the same node directory is refused while the first runs.
            """)

    @Option(help: "The node directory (default: $CITYMESH_DIR).") var dir: String?
    @Option(name: .customLong("log-format"), help: "text or json (default: the config's log.format).") var logFormat: String?
    @Option(name: .customLong("log-level"), help: "trace … critical (default: the config's log.level).") var logLevel: String?

    func run() async throws {
        guard let path = dir ?? ProcessInfo.processInfo.environment["CITYMESH_DIR"], !path.isEmpty else {
            throw CityMeshError(.invalidArgument, "no node directory: pass --dir DIR or set CITYMESH_DIR")
        }
        let directory = NodeDirectory(path)
        let config = try directory.loadConfig()
        let format = logFormat ?? config.log.format
        guard format == "text" || format == "json" else {
            throw CityMeshError(.invalidArgument, "--log-format must be text or json")
        }
        let levelName = logLevel ?? config.log.level
        guard let level = Logger.Level(rawValue: levelName) else {
            throw CityMeshError(.invalidArgument, "unknown log level '\(levelName)': use trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = format == "json" ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "citymesh")
        try await NodeServer(directory: directory, logger: logger, metrics: { registry.emitToString() }).run { address in
            logger.notice("admin API listening", metadata: ["admin.address": "\(address)"])
        }
    }
}
