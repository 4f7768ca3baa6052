public import Foundation

/// The node's view of its peers: which to dial and when (exponential backoff with jitter), one
/// connection per peer pair (simultaneous dials resolved the same way on both sides), and the
/// connection limit. Pure: the shell passes times and random numbers in and performs directives.
public struct PeerDirectory: Sendable {
    /// A peer address with the city its certificate must name (`hangzhou@127.0.0.1:7001`).
    public struct Seed: Sendable, Hashable, CustomStringConvertible {
        public let city: CitySlug
        public let address: String

        public init(city: CitySlug, address: String) {
            self.city = city
            self.address = address
        }

        /// Parses `city@host:port`.
        public init(_ text: String) throws {
            guard let at = text.firstIndex(of: "@"), at != text.startIndex, text.index(after: at) != text.endIndex else {
                throw CityMeshError(.invalidArgument, "invalid seed '\(text)': write CITY@HOST:PORT, e.g. hangzhou@10.0.0.5:7001")
            }
            self.city = try CitySlug(String(text[..<at]))
            let address = String(text[text.index(after: at)...])
            guard let colon = address.lastIndex(of: ":"), colon != address.startIndex,
                let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port)
            else {
                throw CityMeshError(.invalidArgument, "invalid seed address '\(address)' in '\(text)': write CITY@HOST:PORT, e.g. hangzhou@10.0.0.5:7001")
            }
            self.address = address
        }

        public var description: String { "\(city)@\(address)" }
    }

    public struct Configuration: Sendable {
        public var localCity: CitySlug
        public var seeds: [Seed]
        public var maxConnections: Int
        public var backoffBase: UInt64
        public var backoffMax: UInt64

        /// Backoff times in nanoseconds.
        public init(localCity: CitySlug, seeds: [Seed], maxConnections: Int = 256, backoffBase: UInt64 = 500_000_000, backoffMax: UInt64 = 60_000_000_000) {
            self.localCity = localCity
            self.seeds = seeds
            self.maxConnections = maxConnections
            self.backoffBase = backoffBase
            self.backoffMax = backoffMax
        }
    }

    public typealias ConnectionID = UInt64

    public enum Direction: String, Sendable, Codable { case inbound, outbound }

    public enum State: String, Sendable, Codable { case disconnected, connecting, connected }

    /// One known peer.
    public struct Entry: Sendable {
        public let city: CitySlug
        public internal(set) var address: String?
        public internal(set) var fromSeed: Bool
        public internal(set) var state: State = .disconnected
        public internal(set) var connection: ConnectionID?
        public internal(set) var direction: Direction?
        public internal(set) var session: PeerSession.Peer?
        public internal(set) var certificateNotAfter: Date?
        public internal(set) var rttNanoseconds: UInt64?
        public internal(set) var lastSeen: Date?
        public internal(set) var lastError: String?
        public internal(set) var failures: Int = 0
        var nextDialAt: UInt64 = 0
        var dialing: ConnectionID?
    }

    public enum Directive: Sendable, Equatable {
        case dial(ConnectionID, city: CitySlug, address: String)
        case close(ConnectionID, DisconnectReason, String)
    }

    struct Open: Sendable {
        var direction: Direction
        var city: CitySlug?
        var established = false
    }

    public private(set) var configuration: Configuration
    public private(set) var entries: [CitySlug: Entry] = [:]
    var open: [ConnectionID: Open] = [:]
    var nextID: ConnectionID = 1

    public init(configuration: Configuration) {
        self.configuration = configuration
        for seed in configuration.seeds where seed.city != configuration.localCity {
            entries[seed.city] = Entry(city: seed.city, address: seed.address, fromSeed: true)
        }
    }

    public var openConnections: Int { open.count }

    /// Replaces the seed list (config reload). Peers learned from HELLOs stay.
    public mutating func updateSeeds(_ seeds: [Seed]) {
        configuration.seeds = seeds
        for (city, var e) in entries where e.fromSeed && !seeds.contains(where: { $0.city == city }) {
            e.fromSeed = false
            entries[city] = e
        }
        for seed in seeds where seed.city != configuration.localCity {
            var e = entries[seed.city] ?? Entry(city: seed.city, address: seed.address, fromSeed: true)
            e.address = seed.address
            e.fromSeed = true
            entries[seed.city] = e
        }
    }

    /// The city a seed address must present, if the address is configured.
    public func expectedCity(for id: ConnectionID) -> CitySlug? {
        open[id]?.city
    }

    /// An inbound TCP connection arrived: its id, or nil when the node is at its connection limit.
    public mutating func acceptInbound() -> ConnectionID? {
        guard open.count < configuration.maxConnections else { return nil }
        let id = nextID
        nextID += 1
        open[id] = Open(direction: .inbound)
        return id
    }

    /// Dials every known, unconnected peer whose backoff has passed. `jitter` is uniform in [0, 1).
    public mutating func onTick(now: UInt64) -> [Directive] {
        var out: [Directive] = []
        for city in entries.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard var e = entries[city], e.state == .disconnected, let address = e.address, now >= e.nextDialAt else { continue }
            guard open.count < configuration.maxConnections else { break }
            let id = nextID
            nextID += 1
            open[id] = Open(direction: .outbound, city: city)
            e.state = .connecting
            e.dialing = id
            entries[city] = e
            out.append(.dial(id, city: city, address: address))
        }
        return out
    }

    /// A dial or handshake on `id` failed before the session was established.
    public mutating func onFailed(_ id: ConnectionID, reason: DisconnectReason, detail: String, now: UInt64, jitter: Double) {
        guard let o = open.removeValue(forKey: id) else { return }
        guard let city = o.city, var e = entries[city] else { return }
        if e.dialing == id {
            e.dialing = nil
            if e.state == .connecting { e.state = .disconnected }
            e.failures += 1
            e.nextDialAt = now &+ backoff(failures: e.failures, jitter: jitter)
        }
        e.lastError = "\(reason.rawValue): \(detail)"
        // A learned address whose certificate we no longer trust is not worth redialing.
        if !e.fromSeed, reason == .revoked || reason == .denyListed { e.address = nil }
        entries[city] = e
    }

    /// The session on `id` is established with `peer`. Returns closes for a duplicate connection.
    public mutating func onEstablished(_ id: ConnectionID, peer: PeerSession.Peer, certificateNotAfter: Date, wallNow: Date) -> [Directive] {
        guard var o = open[id] else { return [] }
        o.city = peer.city
        o.established = true
        open[id] = o
        var e = entries[peer.city] ?? Entry(city: peer.city, address: nil, fromSeed: false)
        if !e.fromSeed, !peer.listen.isEmpty { e.address = peer.listen }
        if e.dialing == id { e.dialing = nil }
        var out: [Directive] = []
        if let existing = e.connection, existing != id, let old = open[existing], old.established {
            let keepNew = prefer(new: o.direction, old: old.direction, remote: peer.city)
            let loser = keepNew ? existing : id
            out.append(.close(loser, .duplicate, "a connection to \(peer.city) already exists; keeping the one dialed by \(min(configuration.localCity.rawValue, peer.city.rawValue))"))
            if !keepNew {
                entries[peer.city] = e
                return out
            }
        }
        e.state = .connected
        e.connection = id
        e.direction = o.direction
        e.session = peer
        e.certificateNotAfter = certificateNotAfter
        e.lastSeen = wallNow
        e.failures = 0
        e.lastError = nil
        entries[peer.city] = e
        return out
    }

    /// Deterministic on both sides: keep the connection dialed by the smaller city slug; if both were
    /// dialed by the same side, the newer one wins (the older one is likely half-dead).
    func prefer(new: Direction, old: Direction, remote: CitySlug) -> Bool {
        let wantedDialer: Direction = configuration.localCity.rawValue < remote.rawValue ? .outbound : .inbound
        if new == old { return true }
        return new == wantedDialer
    }

    public mutating func onRTT(_ id: ConnectionID, nanoseconds: UInt64, wallNow: Date) {
        guard let city = open[id]?.city, var e = entries[city], e.connection == id else { return }
        e.rttNanoseconds = nanoseconds
        e.lastSeen = wallNow
        entries[city] = e
    }

    /// The connection `id` closed (for any reason) after or before establishment.
    public mutating func onClosed(_ id: ConnectionID, reason: DisconnectReason, detail: String, now: UInt64, wallNow: Date, jitter: Double) {
        guard let o = open[id] else { return }
        if !o.established {
            onFailed(id, reason: reason, detail: detail, now: now, jitter: jitter)
            return
        }
        open.removeValue(forKey: id)
        guard let city = o.city, var e = entries[city], e.connection == id else { return }
        e.state = e.dialing == nil ? .disconnected : .connecting
        e.connection = nil
        e.direction = nil
        e.rttNanoseconds = nil
        e.lastSeen = wallNow
        if reason != .duplicate, reason != .shutdown { e.lastError = "\(reason.rawValue): \(detail)" }
        // Reconnect soon, but not all nodes at once after a shared outage.
        e.failures = reason == .peerClosed || reason.isRefusal ? max(e.failures, 1) : 0
        e.nextDialAt = now &+ backoff(failures: max(e.failures, 1), jitter: jitter)
        entries[city] = e
    }

    /// Closes every established connection whose peer `isTrusted` rejects (CRL or deny-list reload).
    public func connections(where shouldClose: (CitySlug, String) -> Bool) -> [ConnectionID] {
        entries.values.compactMap { e in
            guard let id = e.connection, let s = e.session, shouldClose(e.city, s.fingerprint) else { return nil }
            return id
        }
    }

    /// min(max, base·2^(failures−1)) scaled by a jitter factor in [0.5, 1.0).
    public func backoff(failures: Int, jitter: Double) -> UInt64 {
        let exp = min(max(failures - 1, 0), 20)
        let raw = min(configuration.backoffMax, configuration.backoffBase << UInt64(exp))
        return UInt64(Double(raw) * (0.5 + 0.5 * min(max(jitter, 0), 1)))
    }
}
