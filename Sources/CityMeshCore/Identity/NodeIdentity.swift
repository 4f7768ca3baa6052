public import Foundation
public import X509
import Crypto
import SwiftASN1

/// A node certificate that has been checked against the federation CA.
public struct VerifiedIdentity: Sendable {
    public let city: CitySlug
    public let certificate: Certificate
    public let notValidAfter: Date
    /// SHA-256 of the certificate's DER encoding, lowercase hex.
    public let fingerprint: String
    public let keyAlgorithm: String
}

/// The checks a node's own identity and (in part 2) every peer's certificate must pass.
public enum NodeIdentity {
    /// Checks that `leaf` (with optional intermediates) chains to one of `roots`, is valid at `now`,
    /// carries EKU serverAuth and clientAuth and exactly one well-formed city URI, which must be
    /// `expectedCity` when given.
    public static func verify(
        chain: [Certificate],
        roots: [Certificate],
        expectedCity: CitySlug?,
        now: Date
    ) async throws -> VerifiedIdentity {
        guard let leaf = chain.first else {
            throw CityMeshError(.certificateInvalid, "no certificate given")
        }
        if now < leaf.notValidBefore {
            throw CityMeshError(.certificateNotYetValid, "the certificate is not valid until \(iso(leaf.notValidBefore)): check the clock or issue a new one")
        }
        if now > leaf.notValidAfter {
            throw CityMeshError(.certificateExpired, "the certificate expired on \(iso(leaf.notValidAfter)): issue a new one with 'citymesh federation issue'")
        }
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy(validationTime: now)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        guard case .validCertificate = result else {
            throw CityMeshError(
                .certificateForeignCA,
                "the certificate (issuer '\(leaf.issuer)') does not chain to the federation CA '\(roots.first.map { "\($0.subject)" } ?? "?")': use a certificate issued by this federation's CA"
            )
        }
        let ekus: ExtendedKeyUsage?
        do { ekus = try leaf.extensions.extendedKeyUsage } catch {
            throw CityMeshError(.certificateWrongUsage, "the certificate's extended key usage is malformed: reissue it")
        }
        guard let ekus, ekus.contains(.serverAuth), ekus.contains(.clientAuth) else {
            throw CityMeshError(.certificateWrongUsage, "the certificate lacks extended key usage serverAuth and clientAuth: reissue it with both (citymesh federation issue does this)")
        }
        let sans: SubjectAlternativeNames?
        do { sans = try leaf.extensions.subjectAlternativeNames } catch {
            throw CityMeshError(.certificateMalformedCity, "the certificate's subject alternative names are malformed: reissue it")
        }
        var cities: [String] = []
        for name in sans ?? SubjectAlternativeNames() {
            if case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix("urn:citymesh:") { cities.append(uri) }
        }
        guard cities.count == 1 else {
            throw CityMeshError(
                cities.isEmpty ? .certificateNoCity : .certificateMalformedCity,
                cities.isEmpty
                    ? "the certificate carries no city: it needs the SAN URI \(CitySlug.uriPrefix)<slug>"
                    : "the certificate carries \(cities.count) city URIs (\(cities.joined(separator: ", "))): it must name exactly one city"
            )
        }
        guard let city = CitySlug(uri: cities[0]) else {
            throw CityMeshError(.certificateMalformedCity, "the certificate's city URI '\(cities[0])' is malformed: expected \(CitySlug.uriPrefix)<slug>")
        }
        if let expectedCity, city != expectedCity {
            throw CityMeshError(.certificateWrongCity, "the certificate is for city '\(city)', not '\(expectedCity)': use \(expectedCity)'s certificate or --city \(city)")
        }
        let fingerprint = try Self.fingerprint(of: leaf)
        return VerifiedIdentity(
            city: city,
            certificate: leaf,
            notValidAfter: leaf.notValidAfter,
            fingerprint: fingerprint,
            keyAlgorithm: "\(leaf.publicKey.keyAlgorithm)"
        )
    }

    /// SHA-256 of the certificate's DER, lowercase hex: how deny-lists and logs name a certificate.
    public static func fingerprint(of certificate: Certificate) throws -> String {
        Hex.lower(SHA256.hash(data: try certificate.serializeAsPEM().derBytes))
    }

    /// Checks that `key` is the private half of `certificate`'s public key.
    public static func checkKeyMatches(_ key: Certificate.PrivateKey, certificate: Certificate) throws {
        guard key.publicKey == certificate.publicKey else {
            throw CityMeshError(.keyMismatch, "the private key does not belong to the certificate: pass the node.key that was made with this node.pem")
        }
        // One key signs everything a node signs (DESIGN §2); CityMesh signs with these two only, so
        // a node with another key type would run with no batches, agreements or checkpoints.
        guard NoteKey(certificate.publicKey) != nil else {
            throw CityMeshError(
                .keyInvalid,
                "the node key is neither Ed25519 nor ECDSA P-256: a node signs its batches, agreements, checkpoints and cosignatures with this key, and CityMesh signs with those two types only; have the federation CA issue a certificate for an Ed25519 key ('citymesh federation issue', or 'openssl genpkey -algorithm ed25519' and a CSR)")
        }
    }

    static func iso(_ d: Date) -> String {
        RFC3339.format(microseconds: Int64(d.timeIntervalSince1970) * 1_000_000)
    }
}
