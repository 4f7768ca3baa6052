public import CityMeshCore
import CityMeshNet
import CityMeshStore
import Crypto
import Foundation
public import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import SwiftASN1
import Synchronization
import X509

/// Signed addresses over the peer transport, channel 6 (``AddressGossip``, docs/protocol.md
/// §7c.1). The node signs where it can be reached (`peers.advertise`) with its key; on every new
/// connection the two sides swap what they hold; a record is believed only after its
/// certificate checks out under the federation's trust in force (CA, CRL, deny-list, validity,
/// naming the record's city) and its signature under that certificate. What is learned goes to
/// the peer directory (dialed if the city is a seed, a partner or in the active view), to SWIM
/// (the city is admitted as a member) and to the database (dialed again after a restart).
///
/// Once a second it also tells the directory which cities this node shares with (always dialed)
/// and tells SWIM which members it can probe (those it dials or is connected to).
public final class AddressService: Service, Sendable {
    let city: CitySlug
    let store: NodeStore
    let key: Agreement.Key?
    let certificate: [UInt8]
    let advertise: [String]
    let gossip: Mutex<AddressGossip>
    let network = Mutex<PeerNetwork?>(nil)
    let membership: MembershipService
    let partners: @Sendable () async -> Set<CitySlug>
    let logger: Logger
    let inbox = PeerInbox<AddressGossip.Message>(channel: "addresses", limit: 256)
    /// Certificates checked lately: SHA-256 of the DER → the verdict and when it was reached.
    let checked = Mutex<[Data: (verdict: Result<VerifiedIdentity, PeerCheckFailure>, at: Date)]>([:])
    /// How long a certificate's verdict is reused (a CRL reload clears them all at once).
    static let checkedFor: TimeInterval = 300
    static let maxChecked = 20_000

    public init(
        city: CitySlug, store: NodeStore, key: Agreement.Key?, certificate: Certificate, advertise: [String], membership: MembershipService,
        partners: @escaping @Sendable () async -> Set<CitySlug>, logger: Logger
    ) throws {
        self.city = city
        self.store = store
        self.key = key
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        self.certificate = serializer.serializedBytes
        self.advertise = advertise
        self.membership = membership
        self.partners = partners
        self.logger = logger
        gossip = Mutex(AddressGossip(me: city))
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    static var nowMillis: UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }

    /// Loads the records kept from before and signs this node's own, above any kept one.
    func start() async {
        let kept = (try? await store.addressRecords()) ?? []
        let own = kept.first { $0.record.city == city }
        let others = kept.filter { $0.record.city != city }
        await take(others, from: city, stored: true)
        await signOwn(above: own?.record.version ?? 0)
    }

    /// Signs a record of `advertise` with a version above `above` (normally the time in
    /// milliseconds) and sends it to every connected city.
    func signOwn(above: UInt64) async {
        guard let key else {
            logger.warning("this node's key is neither Ed25519 nor P-256: it cannot sign its address, so only cities it connects to learn it")
            return
        }
        let version = max(Self.nowMillis, above.saturatingAdd(1))
        do {
            let record = try AddressRecord.sign(city: city, version: version, addresses: advertise, key: key)
            let relayed = AddressGossip.Relayed(record: record, certificate: certificate)
            let connected = network.withLock { $0 }?.connectedCities ?? []
            let directives = gossip.withLock { $0.setOwn(relayed, connected: connected) }
            try? await store.saveAddressRecords([relayed])
            logger.info("address signed", metadata: ["addresses": "\(advertise.joined(separator: ", "))", "version": "\(version)"])
            await perform(directives, stored: false)
        } catch {
            logger.error("cannot sign this node's address record: other cities learn it only when it connects to them", metadata: ["error": "\(error)"])
        }
    }

    /// A session with `peer` is established: send what this node holds, as a summary.
    func connected(_ peer: CitySlug) {
        let summary = gossip.withLock { $0.summary() }
        guard let network = network.withLock({ $0 }) else { return }
        Task {
            for message in summary { try? await network.send(to: peer, channel: AddressWire.channel, payload: AddressWire.encode(message)) }
        }
    }

    func receive(_ message: PeerMessage) {
        guard message.channel == AddressWire.channel else { return }
        let peer = message.city
        let decoded: AddressGossip.Message
        do { decoded = try AddressWire.decode(Array(message.payload.readableBytesView)[...]) } catch {
            logger.warning("malformed address message", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        inbox.submit(decoded, from: peer) { decoded in
            switch decoded {
            case .summary(let after, let through, let entries):
                let directives = self.gossip.withLock { $0.answer(after: after, through: through, entries: entries, peer: peer) }
                await self.perform(directives, stored: false)
            case .records(let items):
                await self.take(items, from: peer, stored: false)
            case .have(let entries):
                let directives = self.gossip.withLock { $0.onHave(entries, from: peer, nowMillis: Self.nowMillis) }
                await self.perform(directives, stored: false)
            case .want(let cities):
                let directives = self.gossip.withLock { $0.onWant(cities, from: peer) }
                await self.perform(directives, stored: false)
            }
        }
    }

    /// Checks each record that would be kept (certificate, then signature) and takes them.
    func take(_ items: [AddressGossip.Relayed], from peer: CitySlug, stored: Bool) async {
        guard !items.isEmpty, let network = network.withLock({ $0 }) else { return }
        let trust = network.trust
        var verdicts: [AddressGossip.Relayed: String] = [:], valid = Set<AddressGossip.Relayed>()
        for item in items {
            // Not worth a check: one of this node's city (handled by the core), or no newer than held.
            let held = gossip.withLock { $0.book.records[item.record.city] ?? ($0.own?.record.city == item.record.city ? $0.own?.record : nil) }
            if held.map({ $0.version > item.record.version || $0 == item.record }) == true { continue }
            if let why = await verdict(item, trust: trust) { verdicts[item] = why } else { valid.insert(item) }
        }
        let connected = network.connectedCities
        let (directives, refused) = gossip.withLock { g in
            g.take(items, from: peer, nowMillis: Self.nowMillis, connected: connected) { item in
                valid.contains(item) ? nil : verdicts[item] ?? "not checked (held newer when it arrived)"
            }
        }
        for why in refused.prefix(5) { logger.warning("address record refused", metadata: ["peer": "\(peer)", "reason": "\(why)"]) }
        if !refused.isEmpty { Counter(label: "citymesh_address_records_refused_total").increment(by: refused.count) }
        await perform(directives, stored: stored)
    }

    /// Nil when `item`'s certificate is trusted for its city now and its record's signature holds.
    func verdict(_ item: AddressGossip.Relayed, trust: PeerTrust) async -> String? {
        let digest = Data(SHA256.hash(data: item.certificate))
        let now = Date()
        var result = checked.withLock { c in c[digest].flatMap { now.timeIntervalSince($0.at) < Self.checkedFor ? $0.verdict : nil } }
        if result == nil {
            let parsed: Result<VerifiedIdentity, PeerCheckFailure>
            do {
                // Checked for no particular city, so a certificate relayed with another city's
                // record cannot spoil the verdict kept for its own city.
                parsed = await trust.verify(chain: [try Certificate(derEncoded: item.certificate)], expectedCity: nil, now: now)
            } catch {
                parsed = .failure(PeerCheckFailure(.tlsError, "the certificate does not parse: \(error)"))
            }
            checked.withLock { c in
                if c.count >= Self.maxChecked { c.removeAll() }
                c[digest] = (parsed, now)
            }
            result = parsed
        }
        switch result {
        case .failure(let f): return "its certificate is not trusted: \(f.detail)"
        case .success(let identity):
            guard identity.city == item.record.city else { return "the certificate relayed with it is another city's (\(identity.city))" }
            do { try item.record.verify(certificate: identity.certificate) } catch { return "its signature does not verify under \(item.record.city)'s certificate: \(error)" }
            return nil
        case nil: return "not checked"
        }
    }

    func perform(_ directives: [AddressGossip.Directive], stored: Bool) async {
        guard let network = network.withLock({ $0 }) else { return }
        var learned: [AddressGossip.Relayed] = []
        var resign: UInt64?
        for d in directives {
            switch d {
            case .send(let to, let message):
                try? await network.send(to: to, channel: AddressWire.channel, payload: AddressWire.encode(message))
            case .learned(let item, let via):
                let source: PeerDirectory.AddressSource = stored ? .stored : .gossip(via: via)
                network.learn(item.record.city, addresses: item.record.addresses, source: source)
                membership.admit(item.record.city)
                learned.append(item)
                logger.info(
                    "address learned", metadata: ["peer": "\(item.record.city)", "addresses": "\(item.record.addresses.joined(separator: ", "))", "source": "\(source)"])
            case .resign(let above):
                resign = max(resign ?? 0, above)
            }
        }
        if !stored { try? await store.saveAddressRecords(learned) }
        if let resign {
            logger.notice("a record of this city's address at or above this node's own is in circulation: signing a newer one", metadata: ["version": "\(resign)"])
            await signOwn(above: resign)
        }
    }

    /// The trust changed (CRL or deny-list reload): verdicts are reached again, and the records
    /// of cities no longer trusted are dropped.
    func trustChanged(_ trust: PeerTrust) async {
        checked.withLock { $0.removeAll() }
        let held = gossip.withLock { $0.held }.filter { $0.key != city }
        var dropped: [CitySlug] = []
        for (c, item) in held where await verdict(item, trust: trust) != nil { dropped.append(c) }
        gossip.withLock { g in for c in dropped { g.forget(c) } }
        try? await store.forgetAddressRecords(dropped)
        if !dropped.isEmpty { logger.notice("address records dropped: their certificates are no longer trusted", metadata: ["peers": "\(dropped)"]) }
    }

    /// Once a second: the cities this node shares with go to the directory, and the members it
    /// can probe to SWIM.
    public func run() async throws {
        await start()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if let network = network.withLock({ $0 }) {
                network.setPartners(await partners())
                membership.setProbed(network.probed)
                let connected = network.connectedCities
                let directives = gossip.withLock { $0.onTick(nowMillis: Self.nowMillis, connected: connected) { Int.random(in: 0..<$0) } }
                if !directives.isEmpty { await perform(directives, stored: false) }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
