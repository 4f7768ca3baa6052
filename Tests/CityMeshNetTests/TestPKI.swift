import CityMeshCore
import CityMeshNet
import Crypto
import Foundation
import SwiftASN1
import X509

/// A federation made in-process for the transport tests, with the odd certificates each refusal
/// case needs.
struct TestPKI {
    let name: String
    let caKey: Certificate.PrivateKey
    let ca: Certificate
    var serial: UInt8 = 1

    init(name: String, p256: Bool = false) throws {
        self.name = name
        caKey = p256 ? Certificate.PrivateKey(P256.Signing.PrivateKey()) : Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        ca = try FederationPKI.makeRootCA(name: name, key: caKey, serial: [0x01, 0x7F], now: Date())
    }

    struct Node {
        let certificate: Certificate
        let chainPEM: String
        let keyPEM: String

        func identity() throws -> PeerTLS.Identity { try PeerTLS.Identity(chainPEM: chainPEM, keyPEM: keyPEM) }

        /// The SHA-256 fingerprint as the node computes it (uppercase with colons, as openssl prints it).
        func fingerprint() throws -> String {
            SHA256.hash(data: try certificate.serializeAsPEM().derBytes).map { String(format: "%02X", $0) }.joined(separator: ":")
        }
    }

    /// A normal node certificate (optionally issued at another time, for expiry cases).
    mutating func node(_ city: String, p256: Bool = false, issuedAt: Date = Date(), days: Int = 365) throws -> Node {
        serial &+= 1
        let key = p256 ? Certificate.PrivateKey(P256.Signing.PrivateKey()) : Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        let cert = try FederationPKI.issueNode(
            city: try CitySlug(city), hosts: ["127.0.0.1"], publicKey: key.publicKey, ca: ca, caKey: caKey,
            serial: [0x10, serial], now: issuedAt, validDays: days)
        return Node(certificate: cert, chainPEM: try cert.serializeAsPEM().pemString + "\n", keyPEM: try key.serializeAsPEM().pemString + "\n")
    }

    /// A node certificate with chosen EKUs and SAN URIs.
    mutating func odd(ekus: [ExtendedKeyUsage.Usage], uris: [String]) throws -> Node {
        serial &+= 1
        let key = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage(ekus)
            SubjectAlternativeNames(uris.map { .uniformResourceIdentifier($0) } + [.dnsName("localhost")])
        }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: [0x20, serial]), publicKey: key.publicKey,
            notValidBefore: Date().addingTimeInterval(-300), notValidAfter: Date().addingTimeInterval(86_400),
            issuer: ca.subject, subject: try DistinguishedName { CommonName("odd") },
            signatureAlgorithm: .ed25519, extensions: extensions, issuerPrivateKey: caKey)
        return Node(certificate: cert, chainPEM: try cert.serializeAsPEM().pemString + "\n", keyPEM: try key.serializeAsPEM().pemString + "\n")
    }

    func trust(revoking: [Certificate] = [], denied: Set<String> = [], alsoTrust: [Certificate] = []) throws -> PeerTrust {
        var crl: RevocationList?
        if !revoking.isEmpty {
            crl = try RevocationList.make(
                issuer: ca, key: caKey, entries: revoking.map { .init(serial: $0.serialNumber, revokedAt: Date()) }, number: 1,
                thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86_400))
        }
        return PeerTrust(roots: [ca] + alsoTrust, revocations: crl, denied: denied)
    }
}
