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

        public init(owner: CitySlug, member: CitySlug, share s: Policy.Share, policyVersion: Int, issuedAt: String) {
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
        }

        /// Whether two offers grant the same thing (when and from which version aside).
        public func sameTerms(_ o: Offer) -> Bool {
            var a = self, b = o
            a.issuedAt = ""; b.issuedAt = ""
            a.policyVersion = 0; b.policyVersion = 0
            return a == b
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
        public var id: String { SHA256.hash(data: Array(body.utf8)).map { String(format: "%02x", $0) }.joined() }

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
        owner: CitySlug, policy: Policy, version: Int, current: [Signed], revokedByHand: [Signed] = [], issuedAt: String
    ) -> (offer: [Offer], revoke: [(Signed, String)]) {
        var wanted: [String: Offer] = [:]
        for share in policy.shares {
            for member in share.to {
                wanted["\(share.id) \(member)"] = Offer(owner: owner, member: member, share: share, policyVersion: version, issuedAt: issuedAt)
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
