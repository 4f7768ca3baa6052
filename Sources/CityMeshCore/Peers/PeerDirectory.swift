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
        /// The active view (HyParView's idea): at most this many learned cities that are neither
        /// seeds nor share partners are dialed and kept connected, for gossip; the rest are held
        /// as addresses (the passive view) and promoted when an active one keeps failing. Seeds
        /// and share partners are always dialed, beyond this budget.
        public var activeView: Int
        /// Most cities held (seeds, partners, learned): further ones are not taken.
        public var maxEntries: Int
        /// Which learned cities make the active view: those whose hash under this salt is lowest,
        /// so each node's view is its own random sample, whatever order it learns cities in. (The
        /// first ones learned would be the same few cities at every node — summaries answer in
        /// name order — and those few would carry every node's gossip.) The node draws it at random.
        public var viewSalt: UInt64 = 0

        /// Backoff times in nanoseconds.
        public init(
            localCity: CitySlug, seeds: [Seed], maxConnections: Int = 256, backoffBase: UInt64 = 500_000_000, backoffMax: UInt64 = 60_000_000_000,
            activeView: Int = 32, maxEntries: Int = 10_000, viewSalt: UInt64 = 0
        ) {
            self.viewSalt = viewSalt
            self.localCity = localCity
            self.seeds = seeds
            self.maxConnections = maxConnections
            self.backoffBase = backoffBase
            self.backoffMax = backoffMax
            self.activeView = activeView
            self.maxEntries = maxEntries
        }
    }

    /// Where a peer's address came from, as `citymesh peers` shows it.
    public enum AddressSource: Sendable, Equatable, CustomStringConvertible {
        /// The config's seed list.
        case seed
        /// The peer's own HELLO, on a connection it made.
        case hello
        /// A record the city signed, relayed by `via` (the city itself when it sent it directly).
        case gossip(via: CitySlug)
        /// A signed record kept from before this node's restart.
        case stored

        public var description: String {
            switch self {
            case .seed: "seed"
            case .hello: "hello"
            case .gossip(let via): "gossip via \(via)"
            case .stored: "stored record"
            }
        }

        var signed: Bool {
            switch self {
            case .gossip, .stored: true
            case .seed, .hello: false
            }
        }
    }

    public typealias ConnectionID = UInt64

    public enum Direction: String, Sendable, Codable { case inbound, outbound }

    public enum State: String, Sendable, Codable { case disconnected, connecting, connected }

    /// One known peer.
    public struct Entry: Sendable {
        public let city: CitySlug
        /// Where the city can be reached, tried in turn: a failed dial moves to the next.
        public internal(set) var addresses: [String]
        public internal(set) var fromSeed: Bool
        public internal(set) var source: AddressSource?
        /// A city this node shares with (owner, member or co-member): always dialed.
        public internal(set) var partner = false
        /// In the active view: dialed and kept connected for gossip.
        public internal(set) var active = false
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
        /// Probed by SWIM until then (monotonic nanoseconds): its connection was lost, not closed
        /// by choice (`probeGrace`).
        var probeUntil: UInt64 = 0
        var dialing: ConnectionID?
        var nextAddress = 0

        init(city: CitySlug, address: String?, fromSeed: Bool, source: AddressSource?) {
            self.city = city
            addresses = address.map { [$0] } ?? []
            self.fromSeed = fromSeed
            self.source = source
        }

        /// The address the next dial goes to.
        public var address: String? { addresses.isEmpty ? nil : addresses[nextAddress % addresses.count] }

        /// Why this node dials the city, or that it only holds its address: seed, partner,
        /// active, or passive.
        public var view: String { fromSeed ? "seed" : partner ? "partner" : active ? "active" : "passive" }

        /// Whether this node dials the city (when it is not connected).
        var dialed: Bool { fromSeed || partner || active }
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
            put(Entry(city: seed.city, address: seed.address, fromSeed: true, source: .seed))
        }
    }

    /// Learned cities in the active view (seeds and partners are dialed apart from it), kept as
    /// entries change (`put`), so learning a city does not count every entry; and their ranks,
    /// highest first.
    var activeCount: Int { activeRanks.count }
    private(set) var activeRanks: [(rank: UInt64, city: CitySlug)] = []

    /// Stores `e` (every change to an entry goes through here).
    mutating func put(_ e: Entry) {
        let counted = e.active && !e.fromSeed && !e.partner
        if let old = entries[e.city], old.active && !old.fromSeed && !old.partner, !counted {
            activeRanks.removeAll { $0.city == e.city }
        } else if counted, !(entries[e.city].map { $0.active && !$0.fromSeed && !$0.partner } ?? false) {
            let r = rank(e.city)
            activeRanks.insert((r, e.city), at: activeRanks.firstIndex { $0.rank < r } ?? activeRanks.endIndex)
        }
        entries[e.city] = e
    }

    /// A city's place in this node's random order (`Configuration.viewSalt`).
    func rank(_ city: CitySlug) -> UInt64 {
        var h = configuration.viewSalt ^ 0xcbf2_9ce4_8422_2325
        for b in city.rawValue.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        var g = SplitMix64(seed: h)
        return g.next()
    }

    /// A new entry for a learned city: active if the active view has room, or if it ranks before
    /// the last of the view, which then becomes passive (its connection, if any, stays until it
    /// closes; it is not dialed again).
    mutating func learnedEntry(_ city: CitySlug) -> Entry {
        var e = Entry(city: city, address: nil, fromSeed: false, source: nil)
        if activeCount < configuration.activeView {
            e.active = true
        } else if let last = activeRanks.first, rank(city) < last.rank, var demoted = entries[last.city] {
            demoted.active = false
            put(demoted)
            e.active = true
        }
        return e
    }

    /// The addresses a signed record of `city` gives (`source` says who relayed it): they replace
    /// what a HELLO said, and a seed's configured address stays as the last to try. A city whose
    /// addresses changed (it moved) is dialed again at once.
    public mutating func learn(_ city: CitySlug, addresses: [String], source: AddressSource, now: UInt64) {
        guard city != configuration.localCity, !addresses.isEmpty else { return }
        guard var e = entries[city] ?? (entries.count < configuration.maxEntries ? learnedEntry(city) : nil) else { return }
        var new = addresses
        if e.fromSeed, let seed = configuration.seeds.first(where: { $0.city == city }), !new.contains(seed.address) { new.append(seed.address) }
        e.source = source
        if new != e.addresses {
            e.addresses = new
            e.nextAddress = 0
            e.failures = 0
            e.nextDialAt = now
        }
        put(e)
    }

    /// The cities this node shares with: dialed whatever the active view's budget (an owner
    /// reaches a member its policy names from an address learned by gossip). A partner whose
    /// address is not known yet is listed, and dialed once one is learned.
    public mutating func setPartners(_ partners: Set<CitySlug>) {
        for (city, var e) in entries where e.partner != partners.contains(city) {
            e.partner.toggle()
            put(e)
        }
        for city in partners where city != configuration.localCity && entries[city] == nil && entries.count < configuration.maxEntries {
            var e = Entry(city: city, address: nil, fromSeed: false, source: nil)
            e.partner = true
            put(e)
        }
    }

    /// The cities this node dials or is connected to: the members SWIM probes (a member this
    /// node has no connection to is left to those that do).
    public var neighbours: Set<CitySlug> {
        Set(entries.values.lazy.filter { $0.dialed || $0.state == .connected }.map(\.city))
    }

    /// The members SWIM probes: the cities this node is connected to, and for `probeGrace` those
    /// whose connection was lost (not closed by either side's choice: a view change, a duplicate),
    /// so that a neighbour that crashed is suspected and declared dead. Not the cities it dials
    /// and has never reached: probing a city without a connection fails whatever the city's
    /// state, and would declare live members dead (their refutations then cost every node).
    public func probed(now: UInt64) -> Set<CitySlug> {
        Set(entries.values.lazy.filter { $0.state == .connected || $0.probeUntil > now }.map(\.city))
    }

    /// How long a city whose connection was lost stays probed: long enough for SWIM to suspect
    /// it and declare it dead.
    public static let probeGrace: UInt64 = 120_000_000_000

    public var openConnections: Int { open.count }

    /// Replaces the seed list (config reload). Peers learned from HELLOs stay.
    public mutating func updateSeeds(_ seeds: [Seed]) {
        configuration.seeds = seeds
        for (city, var e) in entries where e.fromSeed && !seeds.contains(where: { $0.city == city }) {
            e.fromSeed = false
            e.active = activeCount < configuration.activeView
            put(e)
        }
        for seed in seeds where seed.city != configuration.localCity {
            var e = entries[seed.city] ?? Entry(city: seed.city, address: seed.address, fromSeed: true, source: .seed)
            if e.source?.signed == true {
                if !e.addresses.contains(seed.address) { e.addresses.append(seed.address) }
            } else {
                e.addresses = [seed.address]
                e.source = .seed
            }
            e.fromSeed = true
            put(e)
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
        // A connection this node dialed to a city that has since left its active view (and is not
        // a seed or a partner) is closed: the view's budget bounds the connections it makes.
        for e in entries.values.filter({ !$0.dialed && $0.state == .connected && $0.direction == .outbound }).sorted(by: { $0.city < $1.city }) {
            if let id = e.connection { out.append(.close(id, .viewChanged, "\(e.city) left this node's active view")) }
        }
        // Only the cities due are sorted (in name order, the same in every process), not every entry.
        let due = entries.values.lazy.filter { $0.dialed && $0.state == .disconnected && $0.address != nil && now >= $0.nextDialAt }.map(\.city)
        for city in due.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard var e = entries[city], let address = e.address else { continue }
            guard open.count < configuration.maxConnections else { break }
            let id = nextID
            nextID += 1
            open[id] = Open(direction: .outbound, city: city)
            e.state = .connecting
            e.dialing = id
            put(e)
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
            // The next address, if the city has several; the backoff grows per city.
            e.nextAddress = e.addresses.isEmpty ? 0 : (e.nextAddress + 1) % e.addresses.count
            e.nextDialAt = now &+ backoff(failures: e.failures, jitter: jitter)
        }
        e.lastError = "\(reason.rawValue): \(detail)"
        // A learned address whose certificate we no longer trust is not worth redialing.
        if !e.fromSeed, reason == .revoked || reason == .denyListed { e.addresses = [] }
        // An active city that keeps failing gives its place to a passive one, picked at random.
        if e.active, !e.fromSeed, !e.partner, e.failures >= Self.demoteAfter {
            e.active = false
            let passive = entries.values.filter { !$0.dialed && $0.city != city && $0.address != nil }.map(\.city).sorted()
            if !passive.isEmpty, var promoted = entries[passive[min(passive.count - 1, Int(Double(passive.count) * min(max(jitter, 0), 1)))]] {
                promoted.active = true
                promoted.nextDialAt = 0
                put(promoted)
            }
        }
        put(e)
    }

    /// Consecutive failed dials after which an active city is moved to the passive view.
    public static let demoteAfter = 4

    /// The session on `id` is established with `peer`. Returns closes for a duplicate connection.
    public mutating func onEstablished(_ id: ConnectionID, peer: PeerSession.Peer, certificateNotAfter: Date, wallNow: Date) -> [Directive] {
        guard var o = open[id] else { return [] }
        o.city = peer.city
        o.established = true
        open[id] = o
        var e = entries[peer.city] ?? learnedEntry(peer.city)
        // The city's own word, over its authenticated connection; a signed record it gossiped
        // (which may list several addresses) is kept over it.
        if !e.fromSeed, e.source?.signed != true, !peer.listen.isEmpty, AddressRecord.addressRefusal(peer.listen) == nil {
            e.addresses = [peer.listen]
            e.nextAddress = 0
            e.source = .hello
        }
        if e.dialing == id { e.dialing = nil }
        var out: [Directive] = []
        if let existing = e.connection, existing != id, let old = open[existing], old.established {
            let keepNew = prefer(new: o.direction, old: old.direction, remote: peer.city)
            let loser = keepNew ? existing : id
            out.append(.close(loser, .duplicate, "a connection to \(peer.city) already exists; keeping the one dialed by \(min(configuration.localCity.rawValue, peer.city.rawValue))"))
            if !keepNew {
                put(e)
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
        put(e)
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
        put(e)
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
        if reason != .duplicate, reason != .viewChanged { e.probeUntil = now &+ Self.probeGrace }
        // Reconnect soon, but not all nodes at once after a shared outage.
        e.failures = reason == .peerClosed || reason.isRefusal ? max(e.failures, 1) : 0
        e.nextDialAt = now &+ backoff(failures: max(e.failures, 1), jitter: jitter)
        put(e)
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
