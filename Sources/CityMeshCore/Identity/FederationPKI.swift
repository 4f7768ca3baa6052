public import Foundation
public import X509
public import Crypto
import SwiftASN1
#if canImport(Glibc)
import Glibc
#endif

/// Issues the federation's certificates. Pure: keys, serial numbers and the current time come in
/// as arguments, so the shell owns randomness and the clock.
public enum FederationPKI {
    /// A self-signed federation root CA certificate.
    public static func makeRootCA(
        name: String,
        key: Certificate.PrivateKey,
        serial: [UInt8],
        now: Date,
        validDays: Int = 3650
    ) throws -> Certificate {
        let subject = try DistinguishedName {
            OrganizationName(name)
            CommonName("\(name) CityMesh federation root CA")
        }
        let publicKey = key.publicKey
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 1))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: publicKey)
        }
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(bytes: serial),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(validDays) * 86_400),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: signatureAlgorithm(for: key),
            extensions: extensions,
            issuerPrivateKey: key
        )
    }

    /// A node certificate for `city`: SAN URI `urn:citymesh:city:<slug>` plus DNS/IP names for
    /// `hosts`, EKU serverAuth and clientAuth, signed by the CA.
    public static func issueNode(
        city: CitySlug,
        hosts: [String],
        publicKey: Certificate.PublicKey,
        ca: Certificate,
        caKey: Certificate.PrivateKey,
        serial: [UInt8],
        now: Date,
        validDays: Int = 365
    ) throws -> Certificate {
        guard caKey.publicKey == ca.publicKey else {
            throw CityMeshError(.keyMismatch, "the CA key does not match the CA certificate: use the ca.key made with ca.pem")
        }
        let subject = try DistinguishedName {
            CommonName(city.rawValue)
        }
        var names: [GeneralName] = [.uniformResourceIdentifier(city.uri)]
        for h in hosts {
            if let ip = IPAddressBytes(h) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip.bytes))))
            } else {
                names.append(.dnsName(h))
            }
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(names)
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
        }
        let notAfter = min(now.addingTimeInterval(Double(validDays) * 86_400), ca.notValidAfter)
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(bytes: serial),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: notAfter,
            issuer: ca.subject,
            subject: subject,
            signatureAlgorithm: signatureAlgorithm(for: caKey),
            extensions: extensions,
            issuerPrivateKey: caKey
        )
    }

    public static func signatureAlgorithm(for key: Certificate.PrivateKey) -> Certificate.SignatureAlgorithm {
        switch key.publicKey.keyAlgorithm {
        case .ed25519: return .ed25519
        case .p384: return .ecdsaWithSHA384
        case .p521: return .ecdsaWithSHA512
        default: return .ecdsaWithSHA256
        }
    }
}

extension Certificate.PublicKey {
    enum Algorithm { case ed25519, p256, p384, p521, other }

    var keyAlgorithm: Algorithm {
        if P256.Signing.PublicKey(self) != nil { return .p256 }
        if P384.Signing.PublicKey(self) != nil { return .p384 }
        if P521.Signing.PublicKey(self) != nil { return .p521 }
        if Curve25519.Signing.PublicKey(self) != nil { return .ed25519 }
        return .other
    }
}

/// Parses dotted IPv4 and colon IPv6 literals (enough for SAN IP entries).
struct IPAddressBytes {
    let bytes: [UInt8]

    init?(_ text: String) {
        let v4 = text.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
        if v4.count == 4, text.split(separator: ".", omittingEmptySubsequences: false).count == 4 {
            bytes = v4
            return
        }
        guard text.contains(":") else { return nil }
        var addr = in6_addr()
        guard inet_pton(AF_INET6, text, &addr) == 1 else { return nil }
        bytes = withUnsafeBytes(of: addr) { Array($0) }
    }
}
