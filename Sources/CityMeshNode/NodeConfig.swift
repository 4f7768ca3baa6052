public import CityMeshCore
import Foundation
import Yams

/// A `host:port` address.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(_ text: String, what: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port),
            colon != text.startIndex
        else {
            throw CityMeshError(.invalidArgument, "invalid \(what) address '\(text)': write HOST:PORT, e.g. 127.0.0.1:7101")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var isLoopback: Bool { host == "localhost" || host.hasPrefix("127.") || host == "::1" }
}

/// The node's configuration file, `citymesh.yaml` in the node directory.
public struct NodeConfig: Sendable, Codable, Equatable {
    public struct TLS: Sendable, Codable, Equatable {
        public var ca: String
        public var cert: String
        public var key: String
    }

    public struct Log: Sendable, Codable, Equatable {
        public var level: String
        public var format: String
    }

    /// The peer transport. Every key is optional; a config without this section uses the defaults.
    public struct Peers: Sendable, Codable, Equatable {
        /// `city@host:port` addresses to dial; the certificate there must name that city.
        public var seeds: [String]?
        /// The federation CRL (PEM). It may not exist yet; it is read at start and on SIGHUP.
        public var crl: String?
        /// SHA-256 fingerprints of certificates refused whatever the CA says.
        public var deny: [String]?
        public var maxConnections: Int?
        public var keepaliveSeconds: Int?
        public var idleTimeoutSeconds: Int?
        public var handshakeTimeoutSeconds: Int?
        /// The addresses announced to peers, comma-separated (default: `listen`): HELLO carries
        /// the first, the signed address record all of them.
        public var advertise: String?
        /// Learned cities (neither seeds nor share partners) dialed for gossip; the rest are held
        /// as addresses (default 32).
        public var activeView: Int?
        /// Messages a second each peer may send on a channel (`membership`, `ledger`,
        /// `agreements`, `replication`, `addresses`, `other`), bursts of twice that; unset channels keep the
        /// defaults (`PeerRateLimiter.defaults`).
        public var rateLimits: [String: Int]?

        enum CodingKeys: String, CodingKey {
            case seeds, crl, deny, advertise
            case rateLimits = "rate_limits"
            case maxConnections = "max_connections"
            case activeView = "active_view"
            case keepaliveSeconds = "keepalive_seconds"
            case idleTimeoutSeconds = "idle_timeout_seconds"
            case handshakeTimeoutSeconds = "handshake_timeout_seconds"
        }

        public init(seeds: [String]? = nil, crl: String? = nil, deny: [String]? = nil) {
            self.seeds = seeds
            self.crl = crl
            self.deny = deny
        }

        /// `rate_limits` as the limiter's limits, checked: known channels, 1 to 1,000,000 a second.
        public func rateLimiterLimits() throws -> [String: PeerRateLimiter.Limit] {
            var out: [String: PeerRateLimiter.Limit] = [:]
            let names = PeerRateLimiter.defaults.keys.sorted()
            for (name, perSecond) in rateLimits ?? [:] {
                guard names.contains(name) else {
                    let near = Spelling.nearest(name, in: names, within: 3)
                    throw CityMeshError(.invalidArgument, "peers.rate_limits has no channel '\(name)'" + (near.map { ": did you mean '\($0)'?" } ?? "") + " The channels are \(names.joined(separator: ", ")).")
                }
                guard (1...1_000_000).contains(perSecond) else {
                    throw CityMeshError(.invalidArgument, "peers.rate_limits.\(name) is messages a second, from 1 to 1000000, not \(perSecond)")
                }
                out[name] = PeerRateLimiter.Limit(perSecond: perSecond)
            }
            return out
        }

        /// The parsed seeds.
        public func seedList() throws -> [PeerDirectory.Seed] { try (seeds ?? []).map { try PeerDirectory.Seed($0) } }

        /// Deny-list entries normalised to lowercase hex without colons.
        public func denySet() throws -> Set<String> {
            Set(try (deny ?? []).map { raw in
                let hex = raw.lowercased().replacingOccurrences(of: ":", with: "")
                guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else {
                    throw CityMeshError(.invalidArgument, "peers.deny entry '\(raw)' is not a SHA-256 fingerprint: give 64 hex digits (colons allowed), as 'citymesh peers' or 'openssl x509 -fingerprint -sha256' prints them")
                }
                return hex
            })
        }
    }

    public var city: String
    public var tls: TLS
    public var listen: String
    public var admin: String
    public var database: String
    public var log: Log
    public var peers: Peers?
    /// A sharing-policy file (docs/policy.md) applied at start and on SIGHUP, if set.
    public var policy: String?

    public static let fileName = "citymesh.yaml"

    /// Reads and checks a config file; every problem names the key and what to write.
    public static func load(from path: String) throws -> NodeConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CityMeshError(.nodeNotInitialized, "no node at \(URL(fileURLWithPath: path).deletingLastPathComponent().path) (missing \(fileName)): create one with 'citymesh init'")
        }
        // What no config needs and an attacker would use (aliases, non-scalar keys, base-60
        // numbers) is refused before anything expands it.
        let text = String(decoding: data, as: UTF8.self)
        do { _ = try UntrustedYAML.compose(text) } catch let problem as UntrustedYAML.Problem {
            throw CityMeshError(.configInvalid, "\(path):\(problem.line):\(problem.column): \(problem.message)")
        } catch {
            // YAML that does not parse is reported by the decoder below, with its position.
        }
        // Unknown keys first: a misspelt required key is better named as such than as missing.
        if let tree = try? Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any], let problem = unknownKey(in: tree) {
            throw CityMeshError(.configInvalid, "\(path): \(problem)")
        }
        let config: NodeConfig
        do { config = try YAMLDecoder().decode(NodeConfig.self, from: data) } catch let error as DecodingError {
            throw CityMeshError(.configInvalid, "\(path): \(describe(error))")
        } catch {
            throw CityMeshError(.configInvalid, "\(path) is not a valid config: \(error)")
        }
        try config.check(path: path)
        return config
    }

    /// The keys a config may have, by section ("" is the top level).
    static let knownKeys: [String: [String]] = [
        "": ["city", "tls", "listen", "admin", "database", "log", "peers", "policy"],
        "tls": ["ca", "cert", "key"],
        "log": ["level", "format"],
        "peers": ["seeds", "crl", "deny", "advertise", "active_view", "max_connections", "keepalive_seconds", "idle_timeout_seconds", "handshake_timeout_seconds", "rate_limits"],
    ]

    /// The first key the node would not read (a misspelt `polcy:` would silently share nothing),
    /// with the nearest known key as a suggestion; nil if every key is known.
    static func unknownKey(in tree: [String: Any]) -> String? {
        for (section, keys) in knownKeys.sorted(by: { $0.key < $1.key }) {
            let map = section.isEmpty ? tree : tree[section] as? [String: Any]
            for key in (map ?? [:]).keys.sorted() where !keys.contains(key) {
                let name = section.isEmpty ? key : "\(section).\(key)"
                let near = Spelling.nearest(key, in: keys, within: 3)
                return "unknown key '\(name)'" + (near.map { ": did you mean '\($0)'?" } ?? "")
                    + " The keys \(section.isEmpty ? "at the top level" : "of '\(section)'") are \(keys.joined(separator: ", ")) (docs/operations.md)."
            }
        }
        return nil
    }

    static func describe(_ error: DecodingError) -> String {
        func name(_ path: [any CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let c):
            return "missing key '\(name(c.codingPath + [key]))': a config needs city, tls (ca, cert, key), listen, admin, database and log (level, format); 'citymesh init' writes a complete one"
        case .typeMismatch(_, let c), .valueNotFound(_, let c):
            return "'\(name(c.codingPath))' has the wrong kind of value: \(c.debugDescription)"
        case .dataCorrupted(let c):
            return "\(name(c.codingPath).isEmpty ? "the file" : "'\(name(c.codingPath))'") cannot be read: \(c.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    public func check(path: String) throws {
        do {
            _ = try CitySlug(city)
            _ = try HostPort(listen, what: "listen")
            _ = try HostPort(admin, what: "admin")
            if let p = peers {
                _ = try p.seedList()
                _ = try p.denySet()
                for (key, value) in [("max_connections", p.maxConnections), ("keepalive_seconds", p.keepaliveSeconds), ("idle_timeout_seconds", p.idleTimeoutSeconds), ("handshake_timeout_seconds", p.handshakeTimeoutSeconds), ("active_view", p.activeView)] {
                    if let v = value, !(1...100_000).contains(v) {
                        throw CityMeshError(.invalidArgument, "peers.\(key) must be from 1 to 100000, not \(v)")
                    }
                }
                if let k = p.keepaliveSeconds, let i = p.idleTimeoutSeconds, i <= k {
                    throw CityMeshError(.invalidArgument, "peers.idle_timeout_seconds (\(i)) must exceed keepalive_seconds (\(k)): use about three keepalive intervals")
                }
                if let a = p.advertise {
                    for one in a.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) { _ = try HostPort(one, what: "peers.advertise") }
                }
                _ = try p.rateLimiterLimits()
            }
        } catch let e as CityMeshError {
            throw CityMeshError(.configInvalid, "\(path): \(e.message)")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(log.level) else {
            throw CityMeshError(.configInvalid, "\(path): log.level '\(log.level)' is unknown: use trace, debug, info, notice, warning, error or critical")
        }
        guard ["text", "json"].contains(log.format) else {
            throw CityMeshError(.configInvalid, "\(path): log.format '\(log.format)' is unknown: use text or json")
        }
    }

    /// The documented YAML text of this config.
    public func yaml() -> String {
        """
        # CityMesh node configuration, written by `citymesh init` and read by `citymesh serve`.
        # Relative paths are relative to the directory holding this file.
        # Check changes with `citymesh serve` (it refuses a bad config and says why).

        # This node's city slug. It must equal the city in tls.cert's SAN URI
        # (urn:citymesh:city:<slug>).
        city: \(city)

        tls:
          # The federation root CA certificate (PEM). Peers must chain to it; the system
          # trust store is never used.
          ca: \(tls.ca)
          # This node's certificate (PEM; leaf first, then any intermediates).
          cert: \(tls.cert)
          # This node's private key (PEM; Ed25519 or ECDSA P-256). Keep it mode 0600.
          key: \(tls.key)

        # Peer listener: other cities connect here over mutual TLS.
        listen: "\(listen)"

        # Admin API (HTTP, bearer tokens). Keep it on loopback or a management network:
        # the CLI and the console use it.
        admin: "\(admin)"

        # The SQLite database (WAL mode) holding datasets, records and tokens.
        database: \(database)

        log:
          # trace, debug, info, notice, warning, error or critical
          level: \(log.level)
          # text (human-readable) or json (one JSON object per line)
          format: \(log.format)

        # Peer connections (mutual TLS 1.3, docs/protocol.md). SIGHUP re-reads seeds, crl and deny.
        peers:
          # Peers to dial, as CITY@HOST:PORT; the certificate there must name CITY.
          seeds: [\((peers?.seeds ?? []).map { "\"\($0)\"" }.joined(separator: ", "))]
          # The federation CRL (PEM), kept up to date by 'citymesh federation revoke'. It may not
          # exist yet; the node reads it when it does.
          crl: \(peers?.crl.map { "\"\($0)\"" } ?? "null")
          # SHA-256 fingerprints of certificates to refuse regardless of the CA (hex, colons allowed).
          deny: [\((peers?.deny ?? []).map { "\"\($0)\"" }.joined(separator: ", "))]
          # Open connections allowed at once (inbound and outbound).
          max_connections: \(peers?.maxConnections ?? 256)
          # PING interval; a peer silent for idle_timeout_seconds is cut off.
          keepalive_seconds: \(peers?.keepaliveSeconds ?? 15)
          idle_timeout_seconds: \(peers?.idleTimeoutSeconds ?? 45)
          # A connection must finish TLS and HELLO within this time.
          handshake_timeout_seconds: \(peers?.handshakeTimeoutSeconds ?? 10)
          # The HOST:PORT other cities should dial (default: listen), up to eight, comma-separated.
          # Signed with this node's key and gossiped, so cities that share with this one find it
          # from any seed. Set it when listen is 0.0.0.0 or behind NAT.
          advertise: \(peers?.advertise.map { "\"\($0)\"" } ?? "null")
          # Learned cities dialed for gossip besides seeds and the cities this one shares with
          # (always dialed); the others' addresses are held and used when one of these fails.
          active_view: \(peers?.activeView ?? 32)
          # Messages a second each peer may send per channel, in bursts of twice that; more are
          # dropped and counted (citymesh peers, citymesh_peer_rate_limited_total). Unset channels
          # keep the defaults: membership 200, ledger 200, agreements 100, replication 5000, addresses 100, other 10.
          rate_limits: {\((peers?.rateLimits ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))}

        # The sharing policy (docs/policy.md): what this city shares, with whom, and what it
        # accepts. If set, the file is applied at start and on SIGHUP (an invalid file is logged
        # and the policy in force stays). 'citymesh policy apply' works with or without it.
        policy: \(policy.map { "\"\($0)\"" } ?? "null")

        """
    }
}
