public import Crypto
public import Foundation
public import X509

/// Sharing agreements (docs/policy.md): the owner's signed offer of a share to one member, the
/// member's signed acceptance or rejection, and the owner's signed revocation. Each document is
/// canonical JSON signed with the node key of the city that wrote it (the key in its federation
/// certificate), so either side, or an auditor, can check both signatures later.
public enum Agreement {
    /// The DATA channel agreements travel on (docs/protocol.md §7b).
    public static let channel: UInt16 = 4

    public struct Offer: Codable, Sendable, Equatable {
        public var type = "citymesh-offer/v1"
        public var owner: String
        public var share: String
        public var member: String
        public var dataset: String
        public var fields: [String]
        public var filter: String?
        public var write: [String]
        public var purpose: String
        public var legalBasis: String
        public var validFrom: String?
        public var validUntil: String
        public var onRevoke: String
        /// The owner's policy version the offer comes from.
        public var policyVersion: Int
        public var issuedAt: String
        /// 128 random bits (hex), so an offer's id (the hash of its body) cannot be computed by
        /// anyone who did not receive it — a co-member knows the terms of another member's offer,
        /// and without a nonce it could name that offer in a forged document. Absent in offers
        /// made before it was added.
        public var nonce: String?
        /// The share's ledger key (`LedgerKey`, 64 hex digits): the same for every member of the
        /// share and every offer of it, so both cities hash the share's record keys in their
        /// ledgers the same way, and an auditor given it can check a specific record. Absent in
        /// offers made before it was added (each side then hashes with a key of its own).
        public var ledgerKey: String?

        public init(owner: CitySlug, member: CitySlug, share s: Policy.Share, policyVersion: Int, issuedAt: String, nonce: String?, ledgerKey: String? = nil) {
            self.owner = owner.rawValue
            share = s.id
            self.member = member.rawValue
            dataset = s.dataset
            fields = s.fields
            filter = s.filter
            write = s.write
            purpose = s.purpose
            legalBasis = s.legalBasis
            validFrom = s.validFrom.map { RFC3339.format(microseconds: $0) }
            validUntil = RFC3339.format(microseconds: s.validUntil)
            onRevoke = s.onRevoke.rawValue
            self.policyVersion = policyVersion
            self.issuedAt = issuedAt
            self.nonce = nonce
            self.ledgerKey = ledgerKey
        }

        /// Whether two offers grant the same thing (when, from which version and the nonce aside).
        public func sameTerms(_ o: Offer) -> Bool {
            var a = self, b = o
            a.issuedAt = ""; b.issuedAt = ""
            a.policyVersion = 0; b.policyVersion = 0
            a.nonce = nil; b.nonce = nil
            // The key is derived from the share's name, so it never changes the terms (and an
            // offer made before offers carried one is not superseded for lacking it).
            a.ledgerKey = nil; b.ledgerKey = nil
            return a == b
        }

        /// A fresh nonce: 16 bytes from `generator`, hex.
        public static func nonce(using generator: inout some RandomNumberGenerator) -> String {
            Hex.lower((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
    }

    public struct Response: Codable, Sendable, Equatable {
        public var type = "citymesh-response/v1"
        /// The offer's id: SHA-256 (hex) of the offer's signed body.
        public var offer: String
        public var owner: String
        public var share: String
        public var member: String
        /// `accept` or `reject`.
        public var decision: String
        public var at: String

        public init(offer: String, owner: String, share: String, member: String, accept: Bool, at: String) {
            self.offer = offer
            self.owner = owner
            self.share = share
            self.member = member
            decision = accept ? "accept" : "reject"
            self.at = at
        }
    }

    public struct Revocation: Codable, Sendable, Equatable {
        public var type = "citymesh-revocation/v1"
        public var offer: String
        public var owner: String
        public var share: String
        public var member: String
        public var reason: String
        public var at: String

        public init(offer: String, owner: String, share: String, member: String, reason: String, at: String) {
            self.offer = offer
            self.owner = owner
            self.share = share
            self.member = member
            self.reason = reason
            self.at = at
        }
    }

    /// A document as signed: its canonical JSON body, who signed it, and the signature.
    public struct Signed: Codable, Sendable, Equatable {
        public let body: String
        public let signer: String
        /// `ed25519` (64 raw bytes) or `p256` (ECDSA with SHA-256, DER).
        public let algorithm: String
        public let signature: String

        /// SHA-256 of the body, hex: the document's id.
        public var id: String { Hex.lower(SHA256.hash(data: Array(body.utf8))) }

        public func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder().decode(T.self, from: Data(body.utf8))
        }
    }

    /// A node's signing key.
    public enum Key: Sendable {
        case ed25519(Curve25519.Signing.PrivateKey)
        case p256(P256.Signing.PrivateKey)

        public func sign<T: Encodable>(_ document: T, as city: CitySlug) throws -> Signed {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let body = String(decoding: try encoder.encode(document), as: UTF8.self)
            switch self {
            case .ed25519(let k):
                return Signed(body: body, signer: city.rawValue, algorithm: "ed25519", signature: try k.signature(for: Array(body.utf8)).base64EncodedString())
            case .p256(let k):
                return Signed(body: body, signer: city.rawValue, algorithm: "p256", signature: try k.signature(for: Array(body.utf8)).derRepresentation.base64EncodedString())
            }
        }
    }

    public struct SignatureError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Checks that `document` was signed by `city` with the key of `certificate` (already verified
    /// to chain to the federation CA and to name that city).
    public static func verify(_ document: Signed, city: CitySlug, certificate: Certificate) throws(SignatureError) {
        guard document.signer == city.rawValue else { throw SignatureError("signed by '\(document.signer)', not by \(city)") }
        guard let signature = Data(base64Encoded: document.signature) else { throw SignatureError("the signature is not base64") }
        let body = Array(document.body.utf8)
        let valid: Bool
        switch document.algorithm {
        case "ed25519":
            guard let key = Curve25519.Signing.PublicKey(certificate.publicKey) else { throw SignatureError("\(city)'s certificate key is not Ed25519") }
            valid = key.isValidSignature(signature, for: body)
        case "p256":
            guard let key = P256.Signing.PublicKey(certificate.publicKey) else { throw SignatureError("\(city)'s certificate key is not P-256") }
            guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { throw SignatureError("the P-256 signature is not DER") }
            valid = key.isValidSignature(sig, for: body)
        default:
            throw SignatureError("unknown signature algorithm '\(document.algorithm)'")
        }
        guard valid else { throw SignatureError("\(city)'s signature does not verify: the document was altered or signed by another key") }
    }

    /// Where an agreement stands.
    public enum State: String, Sendable, Codable, Equatable {
        /// Offered; the member has not answered.
        case offered
        /// Accepted, and the validity window is open: records flow.
        case active
        /// Accepted, but `valid_from` is still ahead.
        case accepted
        case rejected
        case revoked
        case expired
    }

    /// Checks an offer a peer sent against who sent it and who received it: only the owner named in
    /// it may offer, and only to the city it reached.
    public static func check(_ offer: Offer, from sender: CitySlug, to receiver: CitySlug) throws(SignatureError) {
        guard offer.owner == sender.rawValue else { throw SignatureError("an offer in \(offer.owner)'s name, sent by \(sender): only a dataset's owner offers its shares") }
        guard offer.member == receiver.rawValue else { throw SignatureError("an offer to \(offer.member), sent to \(receiver): an offer between other cities") }
        guard RFC3339.parse(offer.validUntil) != nil, offer.validFrom.map({ RFC3339.parse($0) != nil }) ?? true else {
            throw SignatureError("the offer's validity ('\(offer.validFrom ?? "")' to '\(offer.validUntil)') is not RFC 3339 times")
        }
        if let k = offer.ledgerKey, LedgerKey(hex: k) == nil {
            throw SignatureError("the offer's ledger key is not 64 lowercase hex digits (\(k.prefix(70).count) characters)")
        }
    }

    /// Checks a response against the stored offer it names (`offerID` is that offer's id): it must
    /// come from the offer's member, reach the offer's owner, and name the offer's share.
    public static func check(_ response: Response, answers offer: Offer, offerID: String, from sender: CitySlug, to receiver: CitySlug) throws(SignatureError) {
        guard response.offer == offerID else { throw SignatureError("the response names offer \(response.offer.prefix(16)), not \(offerID.prefix(16))") }
        guard response.member == sender.rawValue, offer.member == sender.rawValue else {
            throw SignatureError("\(sender) answered an offer made to \(offer.member): only the member answers its offer")
        }
        guard response.owner == receiver.rawValue, offer.owner == receiver.rawValue else {
            throw SignatureError("a response for \(response.owner) about \(offer.owner)'s offer reached \(receiver)")
        }
        guard response.share == offer.share else { throw SignatureError("the response names share \(response.share), the offer is for \(offer.share)") }
        guard response.decision == "accept" || response.decision == "reject" else {
            throw SignatureError("the decision '\(response.decision.prefix(40))' is neither 'accept' nor 'reject'")
        }
    }

    /// Checks a revocation against the stored offer it names: it must come from the offer's owner,
    /// reach the offer's member, and name that member and the offer's share. Anything else — a
    /// co-member revoking another member's agreement, a member revoking its own offer at the
    /// owner, a city revoking in another's name — is refused.
    public static func check(_ revocation: Revocation, revokes offer: Offer, offerID: String, from sender: CitySlug, to receiver: CitySlug) throws(SignatureError) {
        guard revocation.offer == offerID else { throw SignatureError("the revocation names offer \(revocation.offer.prefix(16)), not \(offerID.prefix(16))") }
        guard revocation.owner == sender.rawValue, offer.owner == sender.rawValue else {
            throw SignatureError("\(sender) revoked \(offer.owner)'s offer to \(offer.member): only the owner revokes its offers")
        }
        guard revocation.member == receiver.rawValue, offer.member == receiver.rawValue else {
            throw SignatureError("a revocation of the offer to \(offer.member) reached \(receiver)")
        }
        guard revocation.share == offer.share else { throw SignatureError("the revocation names share \(revocation.share), the offer is for \(offer.share)") }
    }

    /// The state of an offer given the answers to it, at `now` (microseconds since the epoch).
    public static func state(offer: Offer, response: Response?, revoked: Bool, now: Int64) -> State {
        if revoked { return .revoked }
        if let until = RFC3339.parse(offer.validUntil), now >= until { return .expired }
        guard let response else { return .offered }
        guard response.decision == "accept" else { return .rejected }
        if let from = offer.validFrom.flatMap(RFC3339.parse), now < from { return .accepted }
        return .active
    }

    /// What the owner must do so that the offers out match the policy in force: offers to make
    /// (new share/member pairs, or changed terms) and offers to revoke (pairs no longer in the
    /// policy, or superseded by changed terms). `current` are the owner's unrevoked offers;
    /// `revokedByHand` are offers an admin revoked: they are not offered again on the same terms.
    public static func plan(
        owner: CitySlug, policy: Policy, version: Int, current: [Signed], revokedByHand: [Signed] = [], issuedAt: String,
        ledgerKey: (_ share: String) -> LedgerKey? = { _ in nil }, using generator: inout some RandomNumberGenerator
    ) -> (offer: [Offer], revoke: [(Signed, String)]) {
        var wanted: [String: Offer] = [:]
        for share in policy.shares {
            for member in share.to {
                wanted["\(share.id) \(member)"] = Offer(
                    owner: owner, member: member, share: share, policyVersion: version, issuedAt: issuedAt, nonce: Offer.nonce(using: &generator),
                    ledgerKey: ledgerKey("\(owner)/\(share.id)")?.hex)
            }
        }
        var toOffer: [Offer] = []
        var toRevoke: [(Signed, String)] = []
        var covered: Set<String> = []
        for signed in current {
            guard let o = try? signed.decode(Offer.self) else { continue }
            let key = "\(o.share) \(o.member)"
            if let w = wanted[key], w.sameTerms(o), !covered.contains(key) {
                covered.insert(key)
            } else if wanted[key] != nil {
                toRevoke.append((signed, "superseded: policy version \(version) changed the terms"))
            } else {
                toRevoke.append((signed, "removed from the policy (version \(version))"))
            }
        }
        for signed in revokedByHand {
            guard let o = try? signed.decode(Offer.self) else { continue }
            let key = "\(o.share) \(o.member)"
            if let w = wanted[key], w.sameTerms(o) { covered.insert(key) }
        }
        for (key, w) in wanted.sorted(by: { $0.key < $1.key }) where !covered.contains(key) { toOffer.append(w) }
        return (toOffer, toRevoke)
    }
}
