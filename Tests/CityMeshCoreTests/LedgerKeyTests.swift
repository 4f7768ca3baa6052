import Crypto
import Foundation
import Testing
@testable import CityMeshCore

/// Keyed ledger hashes: keys derived per dataset and per share from one secret, carried in the
/// signed offer, checked when an offer arrives, and HMAC-SHA256 as any implementation computes it.
@Suite("Ledger keys")
struct LedgerKeyTests {
    static let secret = [UInt8](repeating: 7, count: 32)

    @Test("HMAC-SHA256 of the record key (RFC 4231 case 2 shape checked against swift-crypto), keys derived apart and stable")
    func hashes() throws {
        let key = try #require(LedgerKey(bytes: Array(0..<32)))
        let expected = HMAC<SHA256>.authenticationCode(for: Array("91330100MA2H0003".utf8), using: SymmetricKey(data: Array(UInt8(0)..<32)))
        #expect(key.hash("91330100MA2H0003") == expected.map { String(format: "%02x", $0) }.joined())
        #expect(key.hash("91330100MA2H0003") != key.hash("91330100MA2H0004"))
        #expect(LedgerKey(hex: key.hex) == key)
        #expect(key.id.count == 16 && !key.hex.hasPrefix(key.id))
        let air = try DatasetID(owner: CitySlug("hangzhou"), name: "air")
        let d = LedgerKey.dataset(air, secret: Self.secret), s = LedgerKey.share("hangzhou/air", secret: Self.secret)
        #expect(d != s, "a dataset's key and a share's key are different keys")
        #expect(LedgerKey.share("hangzhou/air", secret: Self.secret) == s, "the same share's key is the same every time")
        #expect(LedgerKey.share("hangzhou/air", secret: [UInt8](repeating: 8, count: 32)) != s, "another node's secret, another key")
        #expect(d.entryHashes("E-1") == ["key.hmac": d.hash("E-1"), "hmac.key": d.id])
    }

    @Test("hostile key text: wrong length, upper case, not hex, empty — refused")
    func hostile() {
        for bad in ["", String(repeating: "a", count: 63), String(repeating: "a", count: 65), String(repeating: "A", count: 64), String(repeating: "g", count: 64),
                    String(repeating: "é", count: 32), String(repeating: "0", count: 62) + "-1", String(repeating: "ff", count: 1 << 10)] {
            #expect(LedgerKey(hex: bad) == nil, "\(bad.prefix(20))")
        }
        #expect(LedgerKey(bytes: Array(repeating: 0, count: 31)) == nil)
    }

    @Test("the plan puts the share's key in every offer of the share; a key never changes the terms; a malformed key is refused on arrival")
    func offers() throws {
        let hz = try CitySlug("hangzhou"), sh = try CitySlug("shanghai"), sz = try CitySlug("suzhou")
        var share = AgreementCoreTests.share
        share.to = [sh, sz]
        var rng = SplitMix64(seed: 3)
        let keyed = Agreement.plan(
            owner: hz, policy: Policy(shares: [share]), version: 1, current: [], issuedAt: "t", ledgerKey: { LedgerKey.share($0, secret: Self.secret) }, using: &rng)
        let expected = LedgerKey.share("hangzhou/\(share.id)", secret: Self.secret).hex
        #expect(keyed.offer.count == 2 && keyed.offer.allSatisfy { $0.ledgerKey == expected })
        // Offers made before offers carried a key stand: the key is not part of the terms.
        let signer = Agreement.Key.ed25519(Curve25519.Signing.PrivateKey())
        var old = keyed.offer.map { o in var o = o; o.ledgerKey = nil; return o }
        let again = Agreement.plan(
            owner: hz, policy: Policy(shares: [share]), version: 2, current: try old.map { try signer.sign($0, as: hz) }, issuedAt: "t2",
            ledgerKey: { LedgerKey.share($0, secret: Self.secret) }, using: &rng)
        #expect(again.offer.isEmpty && again.revoke.isEmpty)
        #expect(throws: Never.self) { try Agreement.check(keyed.offer[0], from: hz, to: keyed.offer[0].member == "shanghai" ? sh : sz) }
        for bad in ["", "00", String(repeating: "A", count: 64), String(repeating: "0", count: 64) + "\n"] {
            old[0].ledgerKey = bad
            #expect(throws: Agreement.SignatureError.self) { try Agreement.check(old[0], from: hz, to: old[0].member == "shanghai" ? sh : sz) }
        }
    }
}
