import Crypto
import Foundation
import Testing
import X509
@testable import CityMeshCore

/// Signed address records (issue 20): the city's signature binds its addresses and version, a
/// relay cannot alter or forge one, hostile encodings are refused, and an address book keeps the
/// highest version of each city — the same one at every node when a city signed two.
@Suite("Address records")
struct AddressRecordTests {
    static let hz = try! CitySlug("hangzhou"), sh = try! CitySlug("shanghai"), sz = try! CitySlug("suzhou")
    static let edKey = Curve25519.Signing.PrivateKey(), pKey = P256.Signing.PrivateKey(), otherKey = Curve25519.Signing.PrivateKey()
    static let edCert = try! AgreementCoreTests.certificate(Certificate.PrivateKey(edKey), ed25519: true)
    static let pCert = try! AgreementCoreTests.certificate(Certificate.PrivateKey(pKey), ed25519: false)
    static let otherCert = try! AgreementCoreTests.certificate(Certificate.PrivateKey(otherKey), ed25519: true)
    static let now: UInt64 = 1_800_000_000_000

    static func record(_ city: CitySlug = hz, version: UInt64 = now, addresses: [String] = ["10.0.0.5:7001"], key: Agreement.Key = .ed25519(edKey)) throws -> AddressRecord {
        try AddressRecord.sign(city: city, version: version, addresses: addresses, key: key)
    }

    @Test("a record signed with Ed25519 or P-256 round-trips and verifies against the city's certificate; any change, or another key, breaks it")
    func signatures() throws {
        let r = try Self.record(Self.hz, addresses: ["10.0.0.5:7001", "hz.example.org:7001", "[2001:db8::5]:7001"])
        let decoded = try AddressRecord.decode(r.encoded[...])
        #expect(decoded == r)
        try decoded.verify(certificate: Self.edCert)
        #expect(throws: Agreement.SignatureError.self) { try decoded.verify(certificate: Self.otherCert) }
        let p = try Self.record(Self.sh, addresses: ["127.0.0.1:7002"], key: .p256(Self.pKey))
        try AddressRecord.decode(p.encoded[...]).verify(certificate: Self.pCert)
        #expect(throws: Agreement.SignatureError.self) { try p.verify(certificate: Self.edCert) }
        // A relay that redirects the city, raises the version or claims it for another city: the signature no longer matches.
        let redirected = AddressRecord(city: r.city, version: r.version, addresses: ["6.6.6.6:7001"], algorithm: r.algorithm, signature: r.signature)
        let raised = AddressRecord(city: r.city, version: r.version + 1, addresses: r.addresses, algorithm: r.algorithm, signature: r.signature)
        let renamed = AddressRecord(city: Self.sz, version: r.version, addresses: r.addresses, algorithm: r.algorithm, signature: r.signature)
        for forged in [redirected, raised, renamed] {
            #expect(throws: Agreement.SignatureError.self) { try AddressRecord.decode(forged.encoded[...]).verify(certificate: Self.edCert) }
        }
        // Byte by byte: flipping any byte of the encoding either fails to decode or fails to verify.
        let bytes = r.encoded
        for i in bytes.indices {
            var b = bytes
            b[i] ^= 0x01
            if let d = try? AddressRecord.decode(b[...]) { #expect(throws: Agreement.SignatureError.self, "byte \(i)") { try d.verify(certificate: Self.edCert) } }
        }
    }

    @Test("hostile encodings are refused with a reason: versions at and above 2^62, UInt64.max, no or too many addresses, duplicates, bad ports and hosts, unknown formats and algorithms, oversized signatures, truncation, trailing bytes")
    func hostile() throws {
        func body(format: UInt8 = 1, city: String = "hangzhou", version: UInt64 = Self.now, addresses: [String] = ["10.0.0.5:7001"], count: UInt8? = nil) -> WireWriter {
            var w = WireWriter()
            w.u8(format)
            w.str8(city)
            w.u64(version)
            w.u8(count ?? UInt8(addresses.count))
            for a in addresses { w.str8(a) }
            return w
        }
        func signed(_ w: WireWriter, algorithm: UInt8 = 1, signature: [UInt8] = [UInt8](repeating: 7, count: 64)) -> [UInt8] {
            var w = w
            w.u8(algorithm)
            w.u16(UInt16(signature.count))
            w.raw(signature)
            return w.bytes
        }
        func refused(_ bytes: [UInt8], _ why: String) {
            #expect(throws: WireError.self, "\(why)") { try AddressRecord.decode(bytes[...]) }
        }
        #expect((try? AddressRecord.decode(signed(body())[...])) != nil, "the template decodes")
        refused(signed(body(version: 1 << 62 + 1)), "2^62 + 1")
        refused(signed(body(version: 1 << 63)), "2^63")
        refused(signed(body(version: .max)), "UInt64.max")
        #expect((try? AddressRecord.decode(signed(body(version: 1 << 62))[...])) != nil, "2^62 itself is allowed")
        refused(signed(body(addresses: [])), "no address")
        refused(signed(body(addresses: (1...9).map { "10.0.0.\($0):7001" })), "nine addresses")
        refused(signed(body(addresses: ["10.0.0.5:7001"], count: 255)), "a count of 255 with one address")
        refused(signed(body(addresses: ["10.0.0.5:7001", "10.0.0.5:7001"])), "the same address twice")
        for bad in ["10.0.0.5", "10.0.0.5:0", "10.0.0.5:65536", "10.0.0.5:-1", ":7001", "ex ample:7001", "exa\u{7}mple:7001", "主机:7001", "2001:db8::5:7001", "h:+7001"] {
            refused(signed(body(addresses: [bad])), "address '\(bad)'")
        }
        refused(signed(body(format: 2)), "format 2")
        refused(signed(body(city: "Hang Zhou")), "a city that is not a slug")
        refused(signed(body(), algorithm: 9), "algorithm 9")
        refused(signed(body(), signature: []), "an empty signature")
        refused(signed(body(), signature: [UInt8](repeating: 1, count: 129)), "a 129-byte signature")
        let good = signed(body())
        refused(Array(good.dropLast()), "truncated")
        refused(good + [0], "a trailing byte")
        #expect(throws: CityMeshError.self) { try Self.record(version: .max) }
        #expect(throws: CityMeshError.self) { try Self.record(addresses: []) }
        // A 253-byte host with its port is 259 bytes: over the wire's one length byte, refused
        // when signing (it used to be cut short silently); 255 bytes in all is the most.
        #expect(throws: CityMeshError.self) { try Self.record(addresses: [String(repeating: "h", count: 253) + ":65535"]) }
        #expect((try? Self.record(addresses: [String(repeating: "h", count: 249) + ":65535"])) != nil)
    }

    @Test("the book keeps the highest version of each city, verified; the same record again is known, a lower one stale; a far-future version, this node's own city and cities past the bound are refused")
    func book() throws {
        var book = AddressBook(me: Self.sz, maxCities: 2)
        var checked = 0
        let verify: (AddressRecord) -> String? = { r in
            checked += 1
            return (try? r.verify(certificate: Self.edCert)) == nil ? "bad signature" : nil
        }
        let v1 = try Self.record(version: Self.now - 1000, addresses: ["10.0.0.5:7001"])
        let v2 = try Self.record(version: Self.now, addresses: ["10.0.0.9:7001"])
        #expect(book.learn(v1, nowMillis: Self.now, verify: verify) == .learned)
        #expect(book.learn(v2, nowMillis: Self.now, verify: verify) == .learned, "the city moved")
        #expect(book.records[Self.hz]?.addresses == ["10.0.0.9:7001"])
        #expect(book.learn(v1, nowMillis: Self.now, verify: verify) == .stale, "the old address does not come back")
        #expect(book.learn(v2, nowMillis: Self.now, verify: verify) == .known)
        let before = checked
        _ = book.learn(v1, nowMillis: Self.now, verify: verify)
        #expect(checked == before, "a stale record costs no signature check")
        // A relay's forgery with a higher version is refused and changes nothing.
        let forged = AddressRecord(city: Self.hz, version: Self.now + 5, addresses: ["6.6.6.6:7001"], algorithm: v2.algorithm, signature: v2.signature)
        #expect(book.learn(forged, nowMillis: Self.now, verify: verify) == .refused("bad signature"))
        #expect(book.records[Self.hz] == v2)
        // Too far ahead of this clock (10 min): refused, so it cannot pin the city's address.
        let future = try Self.record(version: Self.now + AddressBook.maxAheadMillis + 1, addresses: ["10.0.0.7:7001"])
        guard case .refused = book.learn(future, nowMillis: Self.now, verify: verify) else { Issue.record("a far-future version was taken"); return }
        #expect(book.learn(try Self.record(version: Self.now + AddressBook.maxAheadMillis, addresses: ["10.0.0.7:7001"]), nowMillis: Self.now, verify: verify) == .learned)
        #expect(book.learn(v2, nowMillis: .max, verify: verify) == .stale, "a clock at UInt64.max saturates")
        // Its own city, from someone else: refused.
        guard case .refused = book.learn(try Self.record(Self.sz, addresses: ["10.0.0.8:7001"]), nowMillis: Self.now, verify: verify) else { Issue.record("own city taken"); return }
        // The bound: a second city fits, a third does not; a known city can still move.
        #expect(book.learn(try Self.record(Self.sh, addresses: ["10.0.0.6:7001"]), nowMillis: Self.now, verify: verify) == .learned)
        guard case .refused = book.learn(try Self.record(try CitySlug("nanjing"), addresses: ["10.0.0.4:7001"]), nowMillis: Self.now, verify: verify) else {
            Issue.record("a city past the bound was taken"); return
        }
        #expect(book.learn(try Self.record(Self.sh, version: Self.now + 1, addresses: ["10.0.0.3:7001"]), nowMillis: Self.now, verify: verify) == .learned)
        book.forget(Self.sh)
        #expect(book.records[Self.sh] == nil && book.records.count == 1)
    }

    @Test("two records a city signed under one version: every node keeps the same one, whichever came first; a forged one is no conflict")
    func conflict() throws {
        let a = try Self.record(version: Self.now, addresses: ["10.0.0.1:7001"]), b = try Self.record(version: Self.now, addresses: ["10.0.0.2:7001"])
        let verify: (AddressRecord) -> String? = { (try? $0.verify(certificate: Self.edCert)) == nil ? "bad signature" : nil }
        var first = AddressBook(me: Self.sz), second = AddressBook(me: Self.sh)
        #expect(first.learn(a, nowMillis: Self.now, verify: verify) == .learned)
        #expect(first.learn(b, nowMillis: Self.now, verify: verify) == .conflict)
        #expect(second.learn(b, nowMillis: Self.now, verify: verify) == .learned)
        #expect(second.learn(a, nowMillis: Self.now, verify: verify) == .conflict)
        #expect(first.records[Self.hz] == second.records[Self.hz])
        let forged = AddressRecord(city: Self.hz, version: Self.now, addresses: ["6.6.6.6:7001"], algorithm: a.algorithm, signature: a.signature)
        #expect(first.learn(forged, nowMillis: Self.now, verify: verify) == .refused("bad signature"))
    }
}
