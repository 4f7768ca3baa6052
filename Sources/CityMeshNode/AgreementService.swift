public import CityMeshAdmin
public import CityMeshCore
import CityMeshNet
import CityMeshStore
import Foundation
public import Logging
import NIOCore
import Synchronization
import SwiftASN1
import X509

/// Which (share, member) pairs are active now: what the policy engine asks before anything leaves.
public final class AgreementBook: Sendable {
    let active = Mutex<Set<String>>([])
    public init() {}
    public func isActive(share: String, member: CitySlug) -> Bool { active.withLock { $0.contains("\(share) \(member)") } }
    func set(_ pairs: Set<String>) { active.withLock { $0 = pairs } }

    /// Recomputes the pairs from `owner`'s stored agreements as they stand at `now`: validity
    /// windows open and close on the clock, with no message, so this runs on every refresh of
    /// the shares (each second), not only when an agreement changes.
    func update(from agreements: [StoredAgreement], owner: CitySlug, now: Int64) {
        set(ShareDirectory.activePairs(owner: owner, agreements.map { $0.held(now: now) }))
    }
}

extension StoredAgreement {
    /// The agreement as the pure share plan reads it, at `now`.
    func held(now: Int64) -> ShareDirectory.Held { .init(id: id, terms: terms, state: state(now: now), revokedBy: revocation?.signer) }
}

/// Sharing agreements over the peer transport (channel 4, docs/protocol.md §7b). As owner: turns
/// the policy in force into signed offers, revokes offers the policy no longer makes, and takes
/// members' signed answers. As member: takes offers, answers them (by hand, or at once when the
/// policy's `accept` rules say so). Everything is stored on both sides and ledgered; offers and
/// answers are sent again whenever a peer connects, so a city that was offline catches up.
public final class AgreementService: AgreementDesk, Sendable {
    let city: CitySlug
    let store: NodeStore
    let key: Agreement.Key?
    let policy: PolicyManager
    let book: AgreementBook
    let ledger: LedgerService
    let logger: Logger
    let network = Mutex<PeerNetwork?>(nil)
    let clock: @Sendable () -> Int64
    /// How a revocation by an admin starts: such an agreement is not offered again on the same terms.
    static let byHand = "revoked by"
    /// One sync at a time (policy changes and starts may overlap); `again` asks for one more.
    let syncing = Mutex((running: false, again: false))
    /// Each peer's documents, handled in the order they came (an offer before its revocation).
    let inbox: PeerInbox<[UInt8]>

    public init(
        city: CitySlug, store: NodeStore, key: Agreement.Key?, policy: PolicyManager, book: AgreementBook, ledger: LedgerService, logger: Logger,
        clock: @escaping @Sendable () -> Int64
    ) {
        self.city = city
        self.store = store
        self.key = key
        self.policy = policy
        self.book = book
        self.ledger = ledger
        self.logger = logger
        self.clock = clock
        inbox = PeerInbox(channel: "agreements")
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    var now: String { RFC3339.format(microseconds: clock()) }

    func requireKey() throws -> Agreement.Key {
        guard let key else { throw CityMeshError(.keyInvalid, "this node's key is neither Ed25519 nor P-256, so it cannot sign agreements") }
        return key
    }

    /// An agreement document's ledger entry: the store appends it in the transaction that keeps
    /// the document (durably, and only if the document is new).
    func entry(_ kind: String, actor: String, peer: String?, dataset: String?, offer: String, document: Agreement.Signed, detail: String) -> LedgerEntry {
        LedgerEntry(
            time: now, kind: kind, actor: actor, peer: peer, dataset: dataset,
            hashes: ["offer.sha256": offer, "document.sha256": document.id], detail: detail)
    }

    /// Recomputes the active pairs from the stored agreements.
    func refresh() async {
        guard let all = try? await store.agreements() else { return }
        book.update(from: all, owner: city, now: clock())
    }

    // MARK: Owner

    /// Makes the offers out match the policy in force: new offers for new pairs or changed terms,
    /// revocations for the rest. Sends what it can now; the rest goes when members connect.
    public func sync() async {
        // One sync at a time; a change that arrives meanwhile makes the running one go again.
        let first = syncing.withLock { s in
            defer { s = (running: true, again: s.running) }
            return !s.running
        }
        guard first else { return }
        repeat { await syncOnce() } while syncing.withLock { s in
            defer { s = (running: s.again, again: false) }
            return s.again
        }
    }

    func syncOnce() async {
        do {
            let key = try requireKey()
            let version = policy.current?.version ?? 0
            let inForce = policy.engine?.policy ?? Policy()
            let all = try await store.agreements().filter { $0.terms.owner == city.rawValue }
            let mine = all.filter { $0.revocation == nil }
            let byHand = all.filter { a in
                (try? a.revocation?.decode(Agreement.Revocation.self))?.reason.hasPrefix(Self.byHand) == true
            }
            var random = SystemRandomNumberGenerator()
            let secret = try await store.ledgerSecret()
            let (offers, revocations) = Agreement.plan(
                owner: city, policy: inForce, version: version, current: mine.map(\.offer), revokedByHand: byHand.map(\.offer), issuedAt: now,
                ledgerKey: { LedgerKey.share($0, secret: secret) }, using: &random)
            for (signed, reason) in revocations {
                try await revoke(signed, reason: reason, actor: "node:policy")
            }
            for offer in offers {
                let signed = try key.sign(offer, as: city)
                try await store.saveOffer(signed, offer, at: now, log: entry(LedgerEntry.Kind.agreementOffered, actor: "node:policy", peer: offer.member, dataset: "\(city)/\(offer.dataset)", offer: signed.id, document: signed,
                    detail: "offered share \(offer.share) to \(offer.member) (policy version \(version)): fields \(offer.fields.joined(separator: ","))"))
                await send(signed, to: try CitySlug(offer.member))
            }
            await refresh()
        } catch {
            logger.error("agreements could not follow the policy", metadata: ["error": "\(error)"])
        }
    }

    func revoke(_ offer: Agreement.Signed, reason: String, actor: String) async throws {
        let terms = try offer.decode(Agreement.Offer.self)
        let doc = Agreement.Revocation(offer: offer.id, owner: terms.owner, share: terms.share, member: terms.member, reason: reason, at: now)
        let signed = try requireKey().sign(doc, as: city)
        guard try await store.saveRevocation(signed, offer: offer.id, log: entry(LedgerEntry.Kind.agreementRevoked, actor: actor, peer: terms.member, dataset: "\(city)/\(terms.dataset)", offer: offer.id, document: signed,
            detail: "share \(terms.share) revoked for \(terms.member): \(reason) (on_revoke: \(terms.onRevoke))")) else { return }
        await send(signed, to: try CitySlug(terms.member))
        await refresh()
    }

    public func revoke(share: String, member: CitySlug, actor: String) async throws -> API.AgreementInfo {
        let all = try await store.agreements()
        guard let current = all.last(where: { $0.terms.owner == city.rawValue && $0.terms.share == share && $0.terms.member == member.rawValue && $0.revocation == nil }) else {
            throw CityMeshError(.recordNotFound, "no agreement on share '\(share)' with \(member) to revoke: see 'citymesh agreement list'")
        }
        try await revoke(current.offer, reason: "\(Self.byHand) \(actor)", actor: actor)
        return try await info(current.id)
    }

    // MARK: Member

    public func respond(owner: CitySlug, share: String, accept: Bool, actor: String) async throws -> API.AgreementInfo {
        let all = try await store.agreements()
        guard let offer = all.last(where: { $0.terms.owner == owner.rawValue && $0.terms.share == share && $0.terms.member == city.rawValue && $0.revocation == nil })
        else {
            throw CityMeshError(.recordNotFound, "\(owner) has offered no share '\(share)' to \(city) (or revoked it): see 'citymesh agreement list'")
        }
        if offer.state(now: clock()) == .expired { throw CityMeshError(.invalidArgument, "the offer of \(owner)/\(share) expired on \(offer.terms.validUntil)") }
        try await answer(offer, accept: accept, actor: actor)
        return try await info(offer.id)
    }

    func answer(_ offer: StoredAgreement, accept: Bool, actor: String) async throws {
        let doc = Agreement.Response(offer: offer.id, owner: offer.terms.owner, share: offer.terms.share, member: city.rawValue, accept: accept, at: now)
        let signed = try requireKey().sign(doc, as: city)
        guard try await store.saveResponse(signed, offer: offer.id, log: entry(accept ? LedgerEntry.Kind.agreementAccepted : LedgerEntry.Kind.agreementRejected, actor: actor, peer: offer.terms.owner,
            dataset: "\(offer.terms.owner)/\(offer.terms.dataset)", offer: offer.id, document: signed,
            detail: "\(accept ? "accepted" : "rejected") \(offer.terms.owner)/\(offer.terms.share)")) else { return }
        await send(signed, to: try CitySlug(offer.terms.owner))
    }

    /// Agreements with a city the trust in force refuses (its certificate revoked by the federation
    /// CRL, or deny-listed here) end: as owner this node revokes its offers to that city, signed and
    /// ledgered like any revocation; the reason starts "revoked by", so the policy does not offer
    /// them again on the same terms. Runs at start and after every reload (SIGHUP). A revoked
    /// owner's batches are refused at every member (`ReplicationService.distrust`).
    func endDistrusted(_ trust: PeerTrust) async {
        guard let all = try? await store.agreements(), let certificates = try? await store.certificates() else { return }
        await endAsMember(all, certificates: certificates, trust: trust)
        for a in all where a.terms.owner == city.rawValue && a.revocation == nil {
            guard let member = try? CitySlug(a.terms.member), let failure = Self.distrusted(member, certificates: certificates, trust: trust) else { continue }
            do {
                try await revoke(a.offer, reason: "revoked by the federation's trust: \(failure.detail)", actor: "node:trust")
                logger.notice("agreement ended: the member is no longer trusted", metadata: ["peer": "\(member)", "share": "\(a.terms.share)"])
            } catch {
                logger.error("an agreement with a distrusted city could not be ended", metadata: ["peer": "\(member)", "error": "\(error)"])
            }
        }
        await refresh()
    }

    /// The member's side: an agreement whose owner the trust in force refuses ends here too. Only
    /// the owner can sign a revocation the owner's side accepts, so this node records the end with
    /// a revocation it signs itself (never sent), ledgered with the reason. The replica is kept:
    /// `on_revoke: purge` follows the owner's own revocation, not the federation's verdict on its
    /// key (a city whose key was compromised has not withdrawn its consent to the share).
    func endAsMember(_ all: [StoredAgreement], certificates: [CitySlug: [UInt8]], trust: PeerTrust) async {
        for a in all where a.terms.member == city.rawValue && a.revocation == nil {
            guard let owner = try? CitySlug(a.terms.owner), let failure = Self.distrusted(owner, certificates: certificates, trust: trust) else { continue }
            do {
                let reason = "\(Self.endedByTrust) \(failure.detail)"
                let doc = Agreement.Revocation(offer: a.id, owner: a.terms.owner, share: a.terms.share, member: city.rawValue, reason: reason, at: now)
                let signed = try requireKey().sign(doc, as: city)
                guard try await store.saveRevocation(signed, offer: a.id, log: entry(LedgerEntry.Kind.agreementRevoked, actor: "node:trust", peer: owner.rawValue, dataset: "\(owner)/\(a.terms.dataset)", offer: a.id, document: signed,
                    detail: "share \(owner)/\(a.terms.share) ended here: \(reason); the replica is kept (on_revoke applies to the owner's own revocation)")) else { continue }
                logger.notice("agreement ended: the owner is no longer trusted", metadata: ["peer": "\(owner)", "share": "\(a.terms.share)"])
            } catch {
                logger.error("an agreement with a distrusted owner could not be ended", metadata: ["peer": "\(owner)", "error": "\(error)"])
            }
        }
    }

    /// Why the trust in force refuses `city` (its last known certificate revoked or deny-listed);
    /// nil if it does not, or this node has no certificate of it.
    static func distrusted(_ city: CitySlug, certificates: [CitySlug: [UInt8]], trust: PeerTrust) -> PeerCheckFailure? {
        guard let der = certificates[city], let certificate = try? Certificate(derEncoded: der),
            let failure = trust.revocationFailure(certificate: certificate, city: city, now: Date()),
            failure.reason == .revoked || failure.reason == .denyListed
        else { return nil }
        return failure
    }

    /// How a member-side end by the federation's trust starts (the replica is then kept).
    static let endedByTrust = "ended by this member: the owner was revoked by the federation's trust:"

    // MARK: Transport

    func send(_ signed: Agreement.Signed, to member: CitySlug) async {
        guard let network = network.withLock({ $0 }) else { return }
        do { try await network.send(to: member, channel: Agreement.channel, payload: Array(try JSONEncoder().encode(signed))) } catch {
            logger.debug("agreement document not sent now; it goes when the peer connects", metadata: ["peer": "\(member)", "error": "\(error)"])
        }
    }

    /// A peer connected: send it every offer and revocation it is party to, and our answers to its offers.
    /// The cities this node shares with, as owner or member, under an agreement offered,
    /// accepted or active: the peer directory dials them whatever its active view (an owner
    /// reaches a member its policy names by an address learned from gossip).
    public func partners() async -> Set<CitySlug> {
        guard let all = try? await store.agreements() else { return [] }
        let t = clock()
        var out = Set<CitySlug>()
        for a in all where [.offered, .accepted, .active].contains(a.state(now: t)) {
            let other = a.terms.owner == city.rawValue ? a.terms.member : a.terms.owner
            if let c = try? CitySlug(other), c != city { out.insert(c) }
        }
        return out
    }

    func connected(_ peer: CitySlug) async {
        guard let all = try? await store.agreements() else { return }
        for a in all {
            if a.terms.owner == city.rawValue, a.terms.member == peer.rawValue {
                await send(a.offer, to: peer)
                if let r = a.revocation { await send(r, to: peer) }
            } else if a.terms.owner == peer.rawValue, a.terms.member == city.rawValue, let r = a.response {
                await send(r, to: peer)
            }
        }
    }

    func receive(_ message: PeerMessage) {
        guard message.channel == Agreement.channel else { return }
        let peer = message.city
        inbox.submit(Array(message.payload.readableBytesView), from: peer) { bytes in await self.handle(bytes, from: peer) }
    }

    func handle(_ bytes: [UInt8], from peer: CitySlug) async {
        do {
            let signed = try JSONDecoder().decode(Agreement.Signed.self, from: Data(bytes))
            guard let identity = network.withLock({ $0 })?.identity(of: peer) else { return }
            try Agreement.verify(signed, city: peer, certificate: identity.certificate)
            struct Kind: Decodable { let type: String }
            switch try signed.decode(Kind.self).type {
            case "citymesh-offer/v1":
                let offer = try signed.decode(Agreement.Offer.self)
                try Agreement.check(offer, from: peer, to: city)
                guard try await store.saveOffer(signed, offer, at: now, log: entry(LedgerEntry.Kind.agreementOffered, actor: "peer:\(peer)", peer: peer.rawValue, dataset: "\(peer)/\(offer.dataset)", offer: signed.id, document: signed,
                    detail: "\(peer) offers share \(offer.share): fields \(offer.fields.joined(separator: ",")), until \(offer.validUntil)")) else { return }
                logger.notice("agreement offered", metadata: ["peer": "\(peer)", "share": "\(offer.share)"])
                // The policy's accept rules answer at once.
                if policy.engine?.policy.accept.contains(where: { $0.from == peer && $0.share == offer.share }) == true,
                    let stored = try await store.agreements().first(where: { $0.id == signed.id })
                {
                    try await answer(stored, accept: true, actor: "node:policy")
                }
            case "citymesh-response/v1":
                let response = try signed.decode(Agreement.Response.self)
                guard let offer = try await store.agreements().first(where: { $0.id == response.offer }) else {
                    throw CityMeshError(.forbidden, "a response to an offer this node never made (\(response.offer.prefix(16)))")
                }
                try Agreement.check(response, answers: offer.terms, offerID: offer.id, from: peer, to: city)
                let accept = response.decision == "accept"
                guard try await store.saveResponse(signed, offer: response.offer, log: entry(
                    accept ? LedgerEntry.Kind.agreementAccepted : LedgerEntry.Kind.agreementRejected, actor: "peer:\(peer)", peer: peer.rawValue,
                    dataset: "\(city)/\(offer.terms.dataset)", offer: response.offer, document: signed, detail: "\(peer) \(accept ? "accepted" : "rejected") share \(response.share)"))
                else { return }
                logger.notice("agreement \(accept ? "accepted" : "rejected")", metadata: ["peer": "\(peer)", "share": "\(response.share)"])
                await refresh()
            case "citymesh-revocation/v1":
                let revocation = try signed.decode(Agreement.Revocation.self)
                guard let offer = try await store.agreements().first(where: { $0.id == revocation.offer }) else {
                    throw CityMeshError(.forbidden, "a revocation of an offer this node does not hold (\(revocation.offer.prefix(16)))")
                }
                try Agreement.check(revocation, revokes: offer.terms, offerID: offer.id, from: peer, to: city)
                guard try await store.saveRevocation(signed, offer: revocation.offer, log: entry(LedgerEntry.Kind.agreementRevoked, actor: "peer:\(peer)", peer: peer.rawValue, dataset: "\(peer)/\(offer.terms.dataset)", offer: revocation.offer,
                    document: signed, detail: "\(peer) revoked share \(revocation.share): \(revocation.reason) (on_revoke: \(offer.terms.onRevoke))")) else { return }
                logger.notice("agreement revoked", metadata: ["peer": "\(peer)", "share": "\(revocation.share)", "on_revoke": "\(offer.terms.onRevoke)"])
            default:
                throw CityMeshError(.malformedInput, "unknown document type")
            }
        } catch {
            let entry = LedgerEntry(time: now, kind: LedgerEntry.Kind.agreementRefused, actor: "peer:\(peer)", peer: peer.rawValue, reason: "\(error)")
            if await ledger.recordRefusal(entry, peer: peer.rawValue, nowMicros: clock()) {
                logger.warning("agreement document refused", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }

    // MARK: Listing

    public func list() async throws -> API.AgreementList {
        let t = clock()
        return API.AgreementList(city: city.rawValue, agreements: try await store.agreements().map { Self.info($0, now: t) })
    }

    func info(_ id: String) async throws -> API.AgreementInfo {
        guard let a = try await store.agreements().first(where: { $0.id == id }) else { throw CityMeshError(.recordNotFound, "no agreement \(id)") }
        return Self.info(a, now: clock())
    }

    static func info(_ a: StoredAgreement, now: Int64) -> API.AgreementInfo {
        let revocation = try? a.revocation?.decode(Agreement.Revocation.self)
        return API.AgreementInfo(
            id: a.id, owner: a.terms.owner, share: a.terms.share, member: a.terms.member, dataset: a.terms.dataset, state: a.state(now: now).rawValue,
            fields: a.terms.fields, filter: a.terms.filter, write: a.terms.write, purpose: a.terms.purpose, legalBasis: a.terms.legalBasis,
            validUntil: a.terms.validUntil, onRevoke: a.terms.onRevoke, offeredAt: a.terms.issuedAt,
            ownerSignature: "\(a.offer.signer) \(a.offer.algorithm) \(a.offer.signature)",
            memberSignature: a.response.map { "\($0.signer) \($0.algorithm) \($0.signature)" }, decision: a.decision?.decision,
            respondedAt: a.decision?.at, revokedAt: revocation?.at, revocationReason: revocation?.reason)
    }
}
