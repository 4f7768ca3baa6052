import CityMeshCore
import Foundation
import NIOCore
public import NIOSSL
import SwiftASN1
import X509

/// TLS for peer connections: TLS 1.3 only, mutual authentication, Ed25519 and P-256.
///
/// Chains are verified by `PeerTrust` (swift-certificates) in NIOSSL's custom verification
/// callback. That callback replaces all of BoringSSL's checks, which is why `PeerTrust` checks
/// the chain to the federation CA, validity, EKU, city URI, CRL and deny-list itself.
public enum PeerTLS {
    /// The node's own certificate chain and key, as NIOSSL objects.
    public struct Identity: Sendable {
        public let chain: [NIOSSLCertificate]
        public let key: NIOSSLPrivateKey

        public init(chainPEM: String, keyPEM: String) throws {
            do {
                chain = try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8))
                key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
            } catch {
                throw CityMeshError(.keyInvalid, "cannot load the node's TLS certificate or key (\(error)): check tls.cert and tls.key in citymesh.yaml")
            }
            guard !chain.isEmpty else { throw CityMeshError(.certificateInvalid, "the node's certificate file holds no certificate") }
        }
    }

    static let signatureAlgorithms: [SignatureAlgorithm] = [.ed25519, .ecdsaSecp256R1Sha256, .ecdsaSecp384R1Sha384]

    public static func serverContext(identity: Identity, roots: [Certificate]) throws -> NIOSSLContext {
        // makeServerConfigurationWithMTLS: the plain server configuration would verify nothing.
        var c = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: identity.chain.map { .certificate($0) },
            privateKey: .privateKey(identity.key),
            trustRoots: .certificates(try nioCertificates(roots)))
        apply(&c)
        return try NIOSSLContext(configuration: c)
    }

    public static func clientContext(identity: Identity, roots: [Certificate]) throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateChain = identity.chain.map { .certificate($0) }
        c.privateKey = .privateKey(identity.key)
        c.trustRoots = .certificates(try nioCertificates(roots))
        // Peers are named by their city URI, not a host name; PeerTrust checks the city.
        c.certificateVerification = .noHostnameVerification
        apply(&c)
        return try NIOSSLContext(configuration: c)
    }

    static func apply(_ c: inout TLSConfiguration) {
        c.minimumTLSVersion = .tlsv13
        c.maximumTLSVersion = .tlsv13
        // Ed25519 is not in BoringSSL's default lists.
        c.signingSignatureAlgorithms = signatureAlgorithms
        c.verifySignatureAlgorithms = signatureAlgorithms
        c.shutdownTimeout = .seconds(2)
        c.renegotiationSupport = .none
    }

    static func nioCertificates(_ certs: [Certificate]) throws -> [NIOSSLCertificate] {
        try certs.map { try NIOSSLCertificate(bytes: try $0.serializeAsPEM().derBytes, format: .der) }
    }

    /// The name of a TLS alert the peer sent (e.g. `SSLV3_ALERT_CERTIFICATE_UNKNOWN`), if that is what `error` is.
    static func alert(in error: any Error) -> String? {
        let text = String(describing: error)
        guard let range = text.range(of: #"[A-Z0-9]+_ALERT_[A-Z_]+"#, options: .regularExpression) else { return nil }
        return String(text[range])
    }

    /// Sorts a TLS failure we did not cause ourselves into a refusal reason.
    static func classify(_ error: any Error) -> PeerCheckFailure {
        let text = String(describing: error)
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
            return PeerCheckFailure(.noClientCertificate, "the peer presented no client certificate")
        }
        for marker in ["WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_TOO_LARGE", "PACKET_LENGTH_TOO_LONG", "WRONG_SSL_VERSION", "UNEXPECTED_RECORD", "DECODE_ERROR", "EXCESSIVE_MESSAGE_SIZE"] where text.contains(marker) {
            return PeerCheckFailure(.notTLS, "the peer did not speak TLS (\(marker)): plaintext or garbage on the peer port")
        }
        if text.contains("EOF during handshake") {
            // Not a refusal: the client went away (or gave up) before the handshake finished.
            return PeerCheckFailure(.connectionLost, "the peer closed the connection during the TLS handshake")
        }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") {
            return PeerCheckFailure(.tlsError, "the peer does not support TLS 1.3 (\(text))")
        }
        if text.contains("NO_SHARED_CIPHER") || text.contains("NO_COMMON_SIGNATURE_ALGORITHMS") {
            return PeerCheckFailure(.tlsError, "no common cipher or signature algorithm: the peer needs an Ed25519 or P-256 certificate and TLS 1.3 (\(text))")
        }
        return PeerCheckFailure(.tlsError, "TLS failed: \(text)")
    }
}
