import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
@testable import CityMeshCore

/// 2025-06-15T15:06:40Z: a whole second, so times survive the CRL's whole-second encoding unchanged.
private let issuedAt = Date(timeIntervalSince1970: 1_750_000_000)

private enum KeyType: String, CaseIterable, Sendable {
    case ed25519, p256

    func makeKey() -> Certificate.PrivateKey {
        switch self {
        case .ed25519: Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        case .p256: Certificate.PrivateKey(P256.Signing.PrivateKey())
        }
    }

    var signatureOID: String { self == .ed25519 ? "1.3.101.112" : "1.2.840.10045.4.3.2" }
    /// What `openssl req -newkey` needs for this key type.
    var opensslNewKey: [String] { self == .ed25519 ? ["-newkey", "ed25519"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] }
}

/// A CityMesh federation: a root CA and three node certificates, two of them to be revoked.
private struct Federation {
    let ca: Certificate
    let key: Certificate.PrivateKey
    /// Serial F0 01 02: its top bit is set, so DER needs a leading zero byte the serial itself lacks.
    let revoked: Certificate
    let alsoRevoked: Certificate
    let good: Certificate

    init(_ type: KeyType, name: String = "Yangtze Delta") throws {
        let key = type.makeKey()
        let ca = try FederationPKI.makeRootCA(name: name, key: key, serial: [0x01], now: issuedAt)
        func node(_ city: String, _ serial: [UInt8]) throws -> Certificate {
            try FederationPKI.issueNode(
                city: try CitySlug(city), hosts: ["localhost"], publicKey: type.makeKey().publicKey,
                ca: ca, caKey: key, serial: serial, now: issuedAt)
        }
        self.key = key
        self.ca = ca
        revoked = try node("hangzhou", [0xF0, 0x01, 0x02])
        alsoRevoked = try node("shanghai", [0x12, 0x34, 0x56, 0x78, 0x9A])
        good = try node("suzhou", [0x01, 0x02, 0x03])
    }

    var entries: [RevocationList.Entry] {
        [.init(serial: revoked.serialNumber, revokedAt: issuedAt - 3600), .init(serial: alsoRevoked.serialNumber, revokedAt: issuedAt - 60)]
    }

    func crl(_ entries: [RevocationList.Entry]? = nil, number: Int = 7) throws -> RevocationList {
        try RevocationList.make(issuer: ca, key: key, entries: entries ?? self.entries, number: number,
                                thisUpdate: issuedAt, nextUpdate: issuedAt + 7 * 86_400)
    }
}

/// The identifiers of the TBSCertList's top-level fields, in order.
private func tbsFieldTags(_ crl: RevocationList) throws -> [ASN1Identifier] {
    guard case .constructed(let fields) = try DER.parse(Array(crl.tbsBytes)).content else { return [] }
    return fields.map(\.identifier)
}

private func pem(_ certificate: Certificate) throws -> String {
    try certificate.serializeAsPEM().pemString + "\n"
}

func scratchDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-crl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Runs the real openssl in `dir`; returns its exit status and stdout+stderr (openssl says "verify OK" on stderr).
@discardableResult
func runOpenSSL(_ args: [String], in dir: URL, mustSucceed: Bool = true) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = args
    process.currentDirectoryURL = dir
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    if mustSucceed && process.terminationStatus != 0 {
        throw CityMeshError(.internalError, "openssl \(args.joined(separator: " ")) failed: \(output)")
    }
    return (process.terminationStatus, output)
}

/// A PKI made only with the openssl CLI: a CA run by `openssl ca`, and two certificates `a` and `b`.
private struct OpenSSLPKI {
    let dir: URL

    init(_ type: KeyType, crlNumber: Bool = true, authorityKeyID: Bool = true) throws {
        dir = try scratchDirectory()
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("newcerts"), withIntermediateDirectories: true)
        try "".write(to: dir.appendingPathComponent("index.txt"), atomically: true, encoding: .utf8)
        if crlNumber { try "1000\n".write(to: dir.appendingPathComponent("crlnumber"), atomically: true, encoding: .utf8) }
        // `openssl ca` writes a v2 CRL only when something asks for an extension; without a
        // crlnumber file, CRL extensions or entry reasons it writes v1.
        let config = """
            [ ca ]
            default_ca = test_ca
            [ test_ca ]
            dir = .
            database = ./index.txt
            new_certs_dir = ./newcerts
            certificate = ./ca.pem
            private_key = ./ca.key
            \(crlNumber ? "crlnumber = ./crlnumber" : "")
            \(authorityKeyID ? "crl_extensions = crl_ext" : "")
            default_md = default
            default_crl_days = 7
            policy = any_policy
            [ any_policy ]
            commonName = supplied
            [ crl_ext ]
            authorityKeyIdentifier = keyid:always
            [ crl_idp ]
            issuingDistributionPoint = critical, @idp
            [ idp ]
            fullname = URI:http://crl.example.org/fed.crl
            onlyuser = TRUE
            """
        try config.write(to: dir.appendingPathComponent("ca.cnf"), atomically: true, encoding: .utf8)
        try runOpenSSL(["req", "-x509"] + type.opensslNewKey + ["-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                        "-subj", "/O=Test Federation/CN=Test Root", "-days", "30",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: dir)
        for (name, serial) in [("a", "0xF77929F90F0B4043D0E34F01458E2153"), ("b", "0x0123456789")] {
            try runOpenSSL(["req", "-new"] + type.opensslNewKey + ["-nodes", "-keyout", "\(name).key", "-out", "\(name).csr",
                            "-subj", "/CN=\(name)"], in: dir)
            try runOpenSSL(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                            "-set_serial", serial, "-days", "10", "-out", "\(name).pem"], in: dir)
        }
    }

    func revoke(_ name: String, reason: String? = nil) throws {
        try runOpenSSL(["ca", "-config", "ca.cnf", "-revoke", "\(name).pem"] + (reason.map { ["-crl_reason", $0] } ?? []), in: dir)
    }

    func generateCRL(extraExtensions: String? = nil) throws -> String {
        try runOpenSSL(["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"] + (extraExtensions.map { ["-crlexts", $0] } ?? []), in: dir)
        return try String(contentsOf: dir.appendingPathComponent("crl.pem"), encoding: .utf8)
    }

    func certificate(_ name: String) throws -> Certificate {
        let text = try String(contentsOf: dir.appendingPathComponent("\(name).pem"), encoding: .utf8)
        return try PEM.certificates(text, what: "\(name).pem")[0]
    }
}

@Suite("Revocation lists (RFC 5280 §5)")
struct RevocationListTests {
    @Test("make, encode and parse again keeps every field, and the CA's signature verifies", arguments: KeyType.allCases)
    fileprivate func roundTrip(type: KeyType) throws {
        let fed = try Federation(type)
        let made = try fed.crl()
        let parsed = try RevocationList(derEncoded: made.derBytes)

        #expect(parsed.version == 2)
        #expect(parsed.issuer == fed.ca.subject)
        #expect(parsed.thisUpdate == issuedAt)
        #expect(parsed.nextUpdate == issuedAt + 7 * 86_400)
        #expect(parsed.number == 7)
        #expect(parsed.numberBytes == [7])
        #expect(parsed.entries == fed.entries)
        #expect(parsed.signatureAlgorithmOID == type.signatureOID)
        let ski = try #require(try fed.ca.extensions.subjectKeyIdentifier?.keyIdentifier)
        #expect(parsed.authorityKeyIdentifier == Array(ski))
        // Ed25519 puts the raw 64-byte signature in the BIT STRING; ECDSA a DER SEQUENCE { r, s }.
        if type == .ed25519 {
            #expect(parsed.signatureBytes.count == 64)
        } else {
            #expect(parsed.signatureBytes.first == 0x30)
        }
        try parsed.verify(issuer: fed.ca)

        #expect(parsed.isRevoked(fed.revoked.serialNumber))
        #expect(parsed.isRevoked(fed.alsoRevoked.serialNumber))
        #expect(!parsed.isRevoked(fed.good.serialNumber))
        // A serial read back from the certificate's own DER matches too.
        let reread = try Certificate(derEncoded: try fed.revoked.serializeAsPEM().derBytes)
        #expect(parsed.isRevoked(reread.serialNumber))

        let pemText = parsed.pemString
        #expect(pemText.hasPrefix("-----BEGIN X509 CRL-----\n"))
        #expect(pemText.hasSuffix("-----END X509 CRL-----"))
        let fromPEM = try RevocationList(pemEncoded: "some comment\n" + pemText + "\n")
        #expect(fromPEM.derBytes == made.derBytes)
        #expect(fromPEM.entries == fed.entries)
    }

    @Test("the fields are laid out as RFC 5280 §5.1 says: v2, and revokedCertificates absent when empty", arguments: KeyType.allCases)
    fileprivate func layout(type: KeyType) throws {
        let fed = try Federation(type)
        let full = try fed.crl()
        #expect(try tbsFieldTags(full) == [.integer, .sequence, .sequence, .utcTime, .utcTime, .sequence,
                                           ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)])

        let empty = try fed.crl([], number: 0)
        #expect(try tbsFieldTags(empty) == [.integer, .sequence, .sequence, .utcTime, .utcTime,
                                            ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)])
        let parsed = try RevocationList(derEncoded: empty.derBytes)
        #expect(parsed.entries.isEmpty)
        #expect(parsed.number == 0)
        #expect(!parsed.isRevoked(fed.revoked.serialNumber))
        try parsed.verify(issuer: fed.ca)
    }

    @Test("times: UTCTime through 2049, GeneralizedTime from 2050 and before 1950, fractions dropped")
    func times() throws {
        let fed = try Federation(.ed25519)
        let lastUTC = Date(timeIntervalSince1970: 2_524_607_999)  // 2049-12-31T23:59:59Z
        let firstGeneralized = Date(timeIntervalSince1970: 2_524_608_000)  // 2050-01-01T00:00:00Z
        let firstUTC = Date(timeIntervalSince1970: -631_152_000)  // 1950-01-01T00:00:00Z
        let beforeUTC = Date(timeIntervalSince1970: -631_152_001)  // 1949-12-31T23:59:59Z
        let entries = [RevocationList.Entry(serial: fed.revoked.serialNumber, revokedAt: firstUTC),
                       RevocationList.Entry(serial: fed.good.serialNumber, revokedAt: beforeUTC)]
        let crl = try RevocationList.make(issuer: fed.ca, key: fed.key, entries: entries, number: 1,
                                          thisUpdate: lastUTC + 0.75, nextUpdate: firstGeneralized)
        #expect(Array(try tbsFieldTags(crl)[3...4]) == [.utcTime, .generalizedTime])
        guard case .constructed(let tbs) = try DER.parse(Array(crl.tbsBytes)).content,
              case .constructed(let revoked) = Array(tbs)[5].content else {
            Issue.record("TBSCertList has no revokedCertificates")
            return
        }
        let entryTimeTags = revoked.map { entry -> ASN1Identifier? in
            guard case .constructed(let fields) = entry.content else { return nil }
            return Array(fields)[1].identifier
        }
        #expect(entryTimeTags == [.utcTime, .generalizedTime])

        let parsed = try RevocationList(derEncoded: crl.derBytes)
        #expect(parsed.thisUpdate == lastUTC, "the 0.75 s fraction is dropped, not rounded up into 2050")
        #expect(parsed.nextUpdate == firstGeneralized)
        #expect(parsed.entries == entries)
        try parsed.verify(issuer: fed.ca)
    }

    @Test("verify refuses another CA, even one with the same name", arguments: KeyType.allCases)
    fileprivate func otherCA(type: KeyType) throws {
        let fed = try Federation(type)
        let crl = try fed.crl()
        try crl.verify(issuer: fed.ca)
        let sameName = try Federation(type)
        #expect(sameName.ca.subject == fed.ca.subject)
        #expect(throws: CityMeshError(.crlInvalid, "")) { try crl.verify(issuer: sameName.ca) }
        let otherName = try Federation(type, name: "Pearl River")
        do {
            try crl.verify(issuer: otherName.ca, what: "fed/crl.pem")
            Issue.record("a CRL from another CA verified")
        } catch let error as CityMeshError {
            #expect(error.code == .crlInvalid)
            #expect(error.message.hasPrefix("fed/crl.pem was issued by"))
            #expect(error.message.contains(": get the CRL from the federation's CA operator"))
        }
    }

    @Test("verify refuses a CRL altered after signing", arguments: KeyType.allCases)
    fileprivate func tampered(type: KeyType) throws {
        let fed = try Federation(type)
        let crl = try fed.crl()
        // Change the revoked serial F0 01 02 to F0 01 03: still a well-formed CRL, no longer the signed one.
        let serial: [UInt8] = [0x02, 0x04, 0x00, 0xF0, 0x01, 0x02]  // INTEGER, length 4, 00 F0 01 02
        let at = try #require(crl.derBytes.indices.first { crl.derBytes[$0...].starts(with: serial) })
        #expect(crl.tbsBytes.indices.contains(at))
        var bytes = crl.derBytes
        bytes[at + serial.count - 1] ^= 0x01
        let altered = try RevocationList(derEncoded: bytes)
        #expect(!altered.isRevoked(fed.revoked.serialNumber))
        #expect(throws: CityMeshError(.crlInvalid, "")) { try altered.verify(issuer: fed.ca) }

        // The last byte belongs to the signature.
        var badSignature = crl.derBytes
        badSignature[badSignature.count - 1] ^= 0x01
        #expect(throws: CityMeshError(.crlInvalid, "")) { try RevocationList(derEncoded: badSignature).verify(issuer: fed.ca) }
    }

    @Test("an algorithm CityMesh cannot check parses but fails verify; differing inner and outer algorithms are refused")
    func unknownAlgorithm() throws {
        let fed = try Federation(.ed25519)
        let crl = try fed.crl()
        // OBJECT IDENTIFIER 1.3.101.112 (Ed25519) appears twice: inside TBSCertList and after it.
        let ed25519: [UInt8] = [0x06, 0x03, 0x2B, 0x65, 0x70]
        let places = crl.derBytes.indices.filter { crl.derBytes[$0...].starts(with: ed25519) }
        #expect(places.count == 2)

        var ed448 = crl.derBytes  // 1.3.101.113: an algorithm swift-certificates does not verify
        for at in places { ed448[at + 4] = 0x71 }
        let parsed = try RevocationList(derEncoded: ed448)
        #expect(parsed.signatureAlgorithmOID == "1.3.101.113")
        #expect(parsed.isRevoked(fed.revoked.serialNumber))
        do {
            try parsed.verify(issuer: fed.ca)
            Issue.record("a CRL with an unknown signature algorithm verified")
        } catch let error as CityMeshError {
            #expect(error.code == .crlInvalid)
            #expect(error.message.contains("1.3.101.113"))
        }

        var mixed = crl.derBytes
        mixed[places[1] + 4] = 0x71
        #expect(throws: CityMeshError(.crlInvalid, "")) { try RevocationList(derEncoded: mixed) }
    }

    @Test("make refuses a key that is not the CA's, and arguments that make no CRL")
    func makeRefuses() throws {
        let fed = try Federation(.ed25519)
        let stranger = KeyType.ed25519.makeKey()
        #expect(throws: CityMeshError(.keyMismatch, "")) {
            try RevocationList.make(issuer: fed.ca, key: stranger, entries: [], number: 1, thisUpdate: issuedAt, nextUpdate: issuedAt + 60)
        }
        #expect(throws: CityMeshError(.invalidArgument, "")) {
            try RevocationList.make(issuer: fed.ca, key: fed.key, entries: [], number: 1, thisUpdate: issuedAt, nextUpdate: issuedAt)
        }
        #expect(throws: CityMeshError(.invalidArgument, "")) {
            try RevocationList.make(issuer: fed.ca, key: fed.key, entries: [], number: 1, thisUpdate: issuedAt + 0.2, nextUpdate: issuedAt + 0.7)
        }
        #expect(throws: CityMeshError(.invalidArgument, "")) {
            try RevocationList.make(issuer: fed.ca, key: fed.key, entries: [], number: -1, thisUpdate: issuedAt, nextUpdate: issuedAt + 60)
        }
        #expect(throws: CityMeshError(.invalidArgument, "")) {
            try RevocationList.make(issuer: fed.ca, key: fed.key, entries: fed.entries + fed.entries.prefix(1), number: 1,
                                    thisUpdate: issuedAt, nextUpdate: issuedAt + 60)
        }

        // A CA whose key usage leaves out cRLSign may not sign CRLs (RFC 5280 §6.3.3).
        let name = try DistinguishedName { CommonName("No CRLs CA") }
        let noCRLSign = try Certificate(
            version: .v3, serialNumber: .init(bytes: [0x05]), publicKey: fed.key.publicKey,
            notValidBefore: issuedAt - 60, notValidAfter: issuedAt + 86_400, issuer: name, subject: name,
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: fed.key)
        #expect(throws: CityMeshError(.certificateInvalid, "")) {
            try RevocationList.make(issuer: noCRLSign, key: fed.key, entries: [], number: 1, thisUpdate: issuedAt, nextUpdate: issuedAt + 60)
        }
    }

    @Test("truncated, garbage and trailing bytes are refused with crlInvalid and advice")
    func malformed() throws {
        let fed = try Federation(.p256)
        let der = try fed.crl().derBytes
        func refused(_ bytes: [UInt8]) -> Bool {
            do {
                _ = try RevocationList(derEncoded: bytes)
                return false
            } catch let error as CityMeshError {
                return error.code == .crlInvalid && error.message.contains(": ")
            } catch {
                return false
            }
        }
        let truncations = (0..<der.count).filter { !refused(Array(der.prefix($0))) }
        #expect(truncations.isEmpty, "prefixes that parsed: \(truncations)")
        #expect(refused(der + [0x00]))
        #expect(refused(der + der))
        #expect(refused(Array("not a CRL at all".utf8)))
        var rng = SystemRandomNumberGenerator()
        #expect(refused((0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) }))
        // Well-formed DER that is a certificate, not a CRL.
        #expect(refused(try fed.ca.serializeAsPEM().derBytes))

        #expect(throws: CityMeshError(.crlInvalid, "")) { try RevocationList(pemEncoded: try pem(fed.ca)) }
        #expect(throws: CityMeshError(.crlInvalid, "")) {
            try RevocationList(pemEncoded: "-----BEGIN X509 CRL-----\n%%%% not base64 %%%%\n-----END X509 CRL-----\n")
        }
        let one = try fed.crl().pemString
        #expect(throws: CityMeshError(.crlInvalid, "")) { try RevocationList(pemEncoded: one + "\n" + one) }
    }

    @Test("openssl verifies our CRLs against our CA and lists the revoked serials", arguments: KeyType.allCases)
    fileprivate func opensslReadsOurs(type: KeyType) throws {
        let fed = try Federation(type)
        let dir = try scratchDirectory()
        try pem(fed.ca).write(to: dir.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        try fed.crl().pemString.write(to: dir.appendingPathComponent("crl.pem"), atomically: true, encoding: .utf8)
        let (_, text) = try runOpenSSL(["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-text"], in: dir)
        #expect(text.contains("verify OK"))
        #expect(text.contains("Version 2 (0x1)"))
        #expect(text.contains("Serial Number: F00102"))
        #expect(text.contains("Serial Number: 123456789A"))
        #expect(!text.contains("Serial Number: 010203"))
        #expect(text.contains("X509v3 CRL Number"))
        #expect(text.contains("X509v3 Authority Key Identifier"))
        #expect(text.contains("Last Update: Jun 15 15:06:40 2025 GMT"))

        // The empty CRL, and one dated past 2049, read just as well.
        let later = Date(timeIntervalSince1970: 2_524_608_000)  // 2050-01-01T00:00:00Z
        let empty = try RevocationList.make(issuer: fed.ca, key: fed.key, entries: [], number: 8, thisUpdate: issuedAt, nextUpdate: later)
        try empty.pemString.write(to: dir.appendingPathComponent("empty.pem"), atomically: true, encoding: .utf8)
        let (_, emptyText) = try runOpenSSL(["crl", "-in", "empty.pem", "-CAfile", "ca.pem", "-noout", "-text"], in: dir)
        #expect(emptyText.contains("verify OK"))
        #expect(emptyText.contains("No Revoked Certificates"))
        #expect(emptyText.contains("Next Update: Jan  1 00:00:00 2050 GMT"))

        // The check can fail: against another CA with the same name openssl refuses the CRL.
        try pem(try Federation(type).ca).write(to: dir.appendingPathComponent("other.pem"), atomically: true, encoding: .utf8)
        let (_, otherText) = try runOpenSSL(["crl", "-in", "crl.pem", "-CAfile", "other.pem", "-noout"], in: dir, mustSucceed: false)
        #expect(!otherText.contains("verify OK"))
        #expect(otherText.contains("verify failure"))
    }

    @Test("a CRL made by `openssl ca -gencrl` parses, verifies and revokes the right serial", arguments: KeyType.allCases)
    fileprivate func opensslMade(type: KeyType) throws {
        let pki = try OpenSSLPKI(type)
        try pki.revoke("a", reason: "keyCompromise")
        let crl = try RevocationList(pemEncoded: try pki.generateCRL(), what: "crl.pem")
        let ca = try pki.certificate("ca")
        let a = try pki.certificate("a"), b = try pki.certificate("b")

        #expect(crl.version == 2)
        #expect(crl.issuer == ca.subject)
        #expect(crl.number == 0x1000)
        #expect(crl.signatureAlgorithmOID == type.signatureOID)
        #expect(crl.authorityKeyIdentifier == (try ca.extensions.subjectKeyIdentifier?.keyIdentifier).map(Array.init))
        #expect(crl.entries.map(\.serial) == [a.serialNumber])
        #expect(abs(crl.entries[0].revokedAt.timeIntervalSinceNow) < 3600)
        let nextUpdate = try #require(crl.nextUpdate)
        #expect(abs(nextUpdate.timeIntervalSince(crl.thisUpdate) - 7 * 86_400) < 2)
        try crl.verify(issuer: ca)
        #expect(crl.isRevoked(a.serialNumber))
        #expect(!crl.isRevoked(b.serialNumber))
        #expect(throws: CityMeshError(.crlInvalid, "")) { try crl.verify(issuer: try Federation(type).ca) }

        // The same CRL in DER, as `openssl crl -outform DER` writes it.
        try runOpenSSL(["crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der"], in: pki.dir)
        let der = try [UInt8](Data(contentsOf: pki.dir.appendingPathComponent("crl.der")))
        #expect(try RevocationList(derEncoded: der).derBytes == crl.derBytes)
    }

    @Test("a v1 CRL from openssl (no extensions anywhere) parses and verifies")
    func opensslVersion1() throws {
        let pki = try OpenSSLPKI(.ed25519, crlNumber: false, authorityKeyID: false)
        try pki.revoke("b")
        let crl = try RevocationList(pemEncoded: try pki.generateCRL())
        #expect(crl.version == 1)
        #expect(crl.numberBytes == nil && crl.number == nil)
        #expect(crl.authorityKeyIdentifier == nil)
        try crl.verify(issuer: try pki.certificate("ca"))
        #expect(crl.isRevoked(try pki.certificate("b").serialNumber))
        #expect(!crl.isRevoked(try pki.certificate("a").serialNumber))
    }

    @Test("a CRL with a critical extension CityMesh does not understand is refused (RFC 5280 §5.2)")
    func unknownCriticalExtension() throws {
        let pki = try OpenSSLPKI(.p256)
        try pki.revoke("a")
        // A critical issuing distribution point scopes the CRL: treating it as complete would be wrong.
        let text = try pki.generateCRL(extraExtensions: "crl_idp")
        do {
            _ = try RevocationList(pemEncoded: text, what: "fed/crl.pem")
            Issue.record("a CRL with a critical issuing distribution point was accepted")
        } catch let error as CityMeshError {
            #expect(error.code == .crlInvalid)
            #expect(error.message.contains("2.5.29.28"))
        }
        // Without it the same CA's CRL is fine.
        #expect(try RevocationList(pemEncoded: try pki.generateCRL()).isRevoked(try pki.certificate("a").serialNumber))
    }
}
