public import CityMeshCore
import CityMeshAdmin
import CityMeshStore
import Foundation
import X509

/// `citymesh init`: checks the identity, then writes a complete node directory or nothing.
public enum NodeInitializer {
    public struct Options: Sendable {
        public var dir: String
        public var city: String
        public var ca: String
        public var cert: String
        public var key: String
        public var listen: String
        public var admin: String
        public var force: Bool
        /// `city@host:port` peers to dial.
        public var seeds: [String]
        /// The federation CRL path (it may not exist yet).
        public var crl: String?
        /// The address announced to peers when `listen` is not reachable as it is (NAT, 0.0.0.0).
        public var advertise: String?

        public init(
            dir: String, city: String, ca: String, cert: String, key: String, listen: String, admin: String, force: Bool,
            seeds: [String] = [], crl: String? = nil, advertise: String? = nil
        ) {
            self.advertise = advertise
            self.dir = dir
            self.city = city
            self.ca = ca
            self.cert = cert
            self.key = key
            self.listen = listen
            self.admin = admin
            self.force = force
            self.seeds = seeds
            self.crl = crl
        }
    }

    public struct Result: Sendable {
        public let identity: VerifiedIdentity
        public let configPath: String
        public let tokenPath: String
    }

    public static func run(_ o: Options, now: Date = Date()) async throws -> Result {
        let city = try CitySlug(o.city)
        _ = try HostPort(o.listen, what: "--listen")
        if let a = o.advertise {
            for one in a.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) { _ = try HostPort(one, what: "--advertise") }
        }
        let admin = try HostPort(o.admin, what: "--admin")
        let seeds = try o.seeds.map { try PeerDirectory.Seed($0) }
        if let own = seeds.first(where: { $0.city == city }) {
            throw CityMeshError(.invalidArgument, "--seed \(own) names this node's own city: seeds are the other cities to dial")
        }
        // The CRL lives with the federation CA, outside the node directory: keep an absolute path.
        let crlPath = o.crl.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        if let crlPath, Files.exists(crlPath) {
            let roots = try PEM.certificates(try Files.read(o.ca, what: "the CA certificate"), what: o.ca)
            try FederationCRL.load(path: crlPath, roots: roots)
        }
        let dir = NodeDirectory(o.dir)
        let root = dir.root.path
        if Files.exists(dir.configPath) || Files.exists(dir.file("citymesh.db")) {
            guard o.force else {
                throw CityMeshError(.nodeExists, "\(root) already holds a node: use another --dir, or --force to replace it (its data is lost)")
            }
            if let lock = try? NodeLock.acquire(dir) { lock.release() } else {
                throw CityMeshError(.nodeLocked, "the node in \(root) is running: stop it before replacing it")
            }
        }
        // Check everything before writing anything.
        let caPEM = try Files.read(o.ca, what: "the CA certificate")
        let certPEM = try Files.read(o.cert, what: "the certificate")
        let keyPEM = try Files.read(o.key, what: "the key")
        let roots = try PEM.certificates(caPEM, what: o.ca)
        let chain = try PEM.certificates(certPEM, what: o.cert)
        let key = try PEM.privateKey(keyPEM, what: o.key)
        try NodeIdentity.checkKeyMatches(key, certificate: chain[0])
        let identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: city, now: now)

        // Build the node in a sibling directory and move it into place, so a failure leaves nothing half-made.
        let parent = dir.root.deletingLastPathComponent().path
        try Files.makeDirectory(parent, mode: 0o755)
        let staging = NodeDirectory(parent + "/.\(dir.root.lastPathComponent).init-\(getpid())")
        try? FileManager.default.removeItem(atPath: staging.root.path)
        do {
            try Files.makeDirectory(staging.root.path)
            try Files.makeDirectory(staging.file("tls"))
            try Files.write(caPEM, to: staging.file("tls/ca.pem"), mode: 0o644)
            try Files.write(certPEM, to: staging.file("tls/node.pem"), mode: 0o644)
            try Files.write(keyPEM, to: staging.file("tls/node.key"), mode: 0o600)
            var config = NodeConfig(
                city: city.rawValue,
                tls: .init(ca: "tls/ca.pem", cert: "tls/node.pem", key: "tls/node.key"),
                listen: o.listen, admin: admin.description, database: "citymesh.db",
                log: .init(level: "info", format: "text"),
                peers: .init(seeds: seeds.map(\.description), crl: crlPath, deny: []))
            config.peers?.advertise = o.advertise
            try Files.write(config.yaml(), to: staging.configPath, mode: 0o644)
            // Records and token hashes: the store creates the database (and so its WAL) 0600.
            let store = try NodeStore(path: staging.file("citymesh.db"), createFor: city)
            let (tokenID, token) = AdminToken.generate()
            try await store.insertToken(
                id: tokenID, name: "local admin (citymesh init)", role: .admin, hash: AdminToken.hash(token),
                createdAt: RFC3339.format(microseconds: Int64(now.timeIntervalSince1970 * 1_000_000)))
            try store.close()
            try Files.write(token + "\n", to: staging.adminTokenPath, mode: 0o600)
            if Files.exists(root) {
                let old = parent + "/.\(dir.root.lastPathComponent).old-\(getpid())"
                try FileManager.default.moveItem(atPath: root, toPath: old)
                try FileManager.default.moveItem(atPath: staging.root.path, toPath: root)
                try? FileManager.default.removeItem(atPath: old)
            } else {
                try FileManager.default.moveItem(atPath: staging.root.path, toPath: root)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: staging.root.path)
            throw error
        }
        return Result(identity: identity, configPath: dir.configPath, tokenPath: dir.adminTokenPath)
    }
}
