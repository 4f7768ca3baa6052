import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
@testable import CityMeshCore

/// Agreement documents: signatures by both key types, tampering, states, and the owner's plan.
@Suite("Agreements")
struct AgreementCoreTests {
    static let hz = try! CitySlug("hangzhou")
    static let sh = try! CitySlug("shanghai")

    /// A self-signed certificate for `key` (only its public key matters here).
    static func certificate(_ key: Certificate.PrivateKey, ed25519: Bool) throws -> Certificate {
        let name = try DistinguishedName { CommonName("test") }
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey, notValidBefore: Date(), notValidAfter: Date().addingTimeInterval(3600),
            issuer: name, subject: name, signatureAlgorithm: ed25519 ? .ed25519 : .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: key)
    }

    static let share = Policy.Share(
        id: "delta-air", dataset: "air-quality", to: [sh], fields: ["station", "pm25"], filter: "pm25 >= 0", write: [], purpose: "forecasting",
        legalBasis: "MoU", validFrom: nil, validUntil: RFC3339.parse("2028-01-01T00:00:00Z")!, validUntilText: "2027-12-31", onRevoke: .keep)

    @Test("documents signed with Ed25519 and with P-256 verify against the signer's certificate; any change breaks them")
    func signatures() throws {
        let ed = Curve25519.Signing.PrivateKey(), p = P256.Signing.PrivateKey()
        let edCert = try Self.certificate(Certificate.PrivateKey(ed), ed25519: true), pCert = try Self.certificate(Certificate.PrivateKey(p), ed25519: false)
        let offer = Agreement.Offer(owner: Self.hz, member: Self.sh, share: Self.share, policyVersion: 1, issuedAt: "2026-11-29T08:00:00Z", nonce: "00")
        let signed = try Agreement.Key.ed25519(ed).sign(offer, as: Self.hz)
        try Agreement.verify(signed, city: Self.hz, certificate: edCert)
        #expect(try signed.decode(Agreement.Offer.self) == offer)
        let response = Agreement.Response(offer: signed.id, owner: "hangzhou", share: "delta-air", member: "shanghai", accept: true, at: "t")
        let answer = try Agreement.Key.p256(p).sign(response, as: Self.sh)
        try Agreement.verify(answer, city: Self.sh, certificate: pCert)

        let altered = Agreement.Signed(body: signed.body.replacingOccurrences(of: "pm25", with: "pm10"), signer: signed.signer, algorithm: signed.algorithm, signature: signed.signature)
        #expect(throws: Agreement.SignatureError.self) { try Agreement.verify(altered, city: Self.hz, certificate: edCert) }
        #expect(throws: Agreement.SignatureError.self) { try Agreement.verify(signed, city: Self.hz, certificate: pCert) }
        #expect(throws: Agreement.SignatureError.self) { try Agreement.verify(signed, city: Self.sh, certificate: edCert) }
        let otherKey = try Agreement.Key.ed25519(Curve25519.Signing.PrivateKey()).sign(offer, as: Self.hz)
        #expect(throws: Agreement.SignatureError.self) { try Agreement.verify(otherKey, city: Self.hz, certificate: edCert) }
        let bad = Agreement.Signed(body: answer.body, signer: answer.signer, algorithm: "rsa", signature: answer.signature)
        #expect(throws: Agreement.SignatureError.self) { try Agreement.verify(bad, city: Self.sh, certificate: pCert) }
        #expect(signed.id.count == 64 && signed.id != otherKey.id || signed.body == otherKey.body)
    }

    @Test("state: offered, active, accepted before valid_from, rejected, revoked, expired")
    func states() {
        var offer = Agreement.Offer(owner: Self.hz, member: Self.sh, share: Self.share, policyVersion: 1, issuedAt: "t", nonce: "00")
        let now = RFC3339.parse("2026-11-29T08:00:00Z")!
        let yes = Agreement.Response(offer: "x", owner: "hangzhou", share: "delta-air", member: "shanghai", accept: true, at: "t")
        let no = Agreement.Response(offer: "x", owner: "hangzhou", share: "delta-air", member: "shanghai", accept: false, at: "t")
        #expect(Agreement.state(offer: offer, response: nil, revoked: false, now: now) == .offered)
        #expect(Agreement.state(offer: offer, response: yes, revoked: false, now: now) == .active)
        #expect(Agreement.state(offer: offer, response: no, revoked: false, now: now) == .rejected)
        #expect(Agreement.state(offer: offer, response: yes, revoked: true, now: now) == .revoked)
        #expect(Agreement.state(offer: offer, response: yes, revoked: false, now: RFC3339.parse("2028-01-01T00:00:00Z")!) == .expired)
        offer.validFrom = "2027-01-01T00:00:00Z"
        #expect(Agreement.state(offer: offer, response: yes, revoked: false, now: now) == .accepted)
    }

    @Test("the owner's plan: offer new pairs, keep unchanged ones, supersede changed terms, revoke removed pairs, respect revocations by hand")
    func plan() throws {
        let key = Agreement.Key.ed25519(Curve25519.Signing.PrivateKey())
        let sz = try CitySlug("suzhou")
        var policy = Policy(shares: [Self.share])
        var rng = SplitMix64(seed: 1)
        let first = Agreement.plan(owner: Self.hz, policy: policy, version: 1, current: [], issuedAt: "t1", using: &rng)
        #expect(first.offer.map(\.member) == ["shanghai"] && first.revoke.isEmpty)
        let out = try first.offer.map { try key.sign($0, as: Self.hz) }
        // Same policy again (a new version that changes nothing for this share): nothing to do.
        let again = Agreement.plan(owner: Self.hz, policy: policy, version: 2, current: out, issuedAt: "t2", using: &rng)
        #expect(again.offer.isEmpty && again.revoke.isEmpty)
        // A new member and changed terms.
        policy.shares[0].to = [Self.sh, sz]
        policy.shares[0].fields = ["station"]
        let changed = Agreement.plan(owner: Self.hz, policy: policy, version: 3, current: out, issuedAt: "t3", using: &rng)
        #expect(Set(changed.offer.map(\.member)) == ["shanghai", "suzhou"])
        #expect(changed.revoke.count == 1 && changed.revoke[0].1.contains("superseded"))
        // The share removed.
        let removed = Agreement.plan(owner: Self.hz, policy: Policy(), version: 4, current: out, issuedAt: "t4", using: &rng)
        #expect(removed.offer.isEmpty && removed.revoke.count == 1 && removed.revoke[0].1.contains("removed from the policy"))
        // Revoked by hand: not offered again on the same terms, but offered when they change.
        let held = Agreement.plan(owner: Self.hz, policy: Policy(shares: [Self.share]), version: 5, current: [], revokedByHand: out, issuedAt: "t5", using: &rng)
        #expect(held.offer.isEmpty)
        let reoffered = Agreement.plan(owner: Self.hz, policy: policy, version: 6, current: [], revokedByHand: out, issuedAt: "t6", using: &rng)
        #expect(reoffered.offer.count == 2)
    }
}
