public import Foundation
public import X509

/// A refusal of a peer's certificate: the reason label and a message for the log.
public struct PeerCheckFailure: Error, Sendable, Equatable {
    public let reason: DisconnectReason
    public let detail: String

    public init(_ reason: DisconnectReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
}

/// Whom this node trusts: the federation CA, minus what the federation CRL revokes and what the
/// node's own deny-list names. Swapped as a whole on reload (SIGHUP).
public struct PeerTrust: Sendable {
    public let roots: [Certificate]
    public let revocations: RevocationList?
    /// SHA-256 fingerprints (lowercase hex) of certificates refused regardless of the CA.
    public let denied: Set<String>

    /// `revocations` must already be verified against `roots` (see `RevocationList.verify`).
    public init(roots: [Certificate], revocations: RevocationList?, denied: Set<String>) {
        self.roots = roots
        self.revocations = revocations
        self.denied = Set(denied.map { $0.lowercased().replacingOccurrences(of: ":", with: "") })
    }

    /// Why a certificate for `origin` that `relay` passed on must not be kept, if it must not: a
    /// node's own certificate comes from its own key, and a city connected directly has shown its
    /// certificate in the handshake — a relayed one (perhaps older, of a key since replaced) never
    /// takes its place. Otherwise it is kept once its chain and revocation status are checked.
    public static func refusesRelayed(origin: CitySlug, from relay: CitySlug, me: CitySlug, connectedDirectly: Bool) -> String? {
        if origin == me { return "a certificate for this node's own city, relayed by \(relay)" }
        if connectedDirectly || origin == relay { return "\(origin) is connected directly; the certificate of its handshake is used" }
        return nil
    }

    /// Checks a peer's presented chain (leaf first). `expectedCity` is the city configured for the
    /// address we dialed (nil for inbound connections).
    public func verify(chain: [Certificate], expectedCity: CitySlug?, now: Date) async -> Result<VerifiedIdentity, PeerCheckFailure> {
        guard !chain.isEmpty else { return .failure(PeerCheckFailure(.noClientCertificate, "the peer presented no certificate")) }
        let identity: VerifiedIdentity
        do {
            identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: expectedCity, now: now)
        } catch let e as CityMeshError {
            return .failure(PeerCheckFailure(Self.reason(for: e.code), e.message))
        } catch {
            return .failure(PeerCheckFailure(.tlsError, "\(error)"))
        }
        if let failure = revocationFailure(identity) { return .failure(failure) }
        return .success(identity)
    }

    /// Whether an identity verified earlier is still trusted (after a reload of the CRL or deny-list).
    public func revocationFailure(_ identity: VerifiedIdentity) -> PeerCheckFailure? {
        revocationFailure(certificate: identity.certificate, city: identity.city, fingerprint: identity.fingerprint)
    }

    /// The same for a certificate whose chain was verified earlier: revoked, deny-listed, or
    /// expired since. Cheap enough to ask at every signature it checks.
    public func revocationFailure(certificate: Certificate, city: CitySlug, now: Date) -> PeerCheckFailure? {
        if now > certificate.notValidAfter {
            return PeerCheckFailure(.certificateExpired, "the certificate of '\(city)' expired at \(certificate.notValidAfter)")
        }
        let fingerprint = denied.isEmpty ? nil : try? NodeIdentity.fingerprint(of: certificate)
        return revocationFailure(certificate: certificate, city: city, fingerprint: fingerprint)
    }

    func revocationFailure(certificate: Certificate, city: CitySlug, fingerprint: String?) -> PeerCheckFailure? {
        if let fingerprint, denied.contains(fingerprint) {
            return PeerCheckFailure(.denyListed, "certificate sha256 \(fingerprint) of '\(city)' is on this node's deny-list")
        }
        if let crl = revocations, crl.isRevoked(certificate.serialNumber) {
            return PeerCheckFailure(.revoked, "the certificate of '\(city)' (serial \(certificate.serialNumber)) is revoked by the federation CRL")
        }
        return nil
    }

    static func reason(for code: CityMeshError.Code) -> DisconnectReason {
        switch code {
        case .certificateForeignCA: .foreignCA
        case .certificateExpired: .certificateExpired
        case .certificateNotYetValid: .certificateNotYetValid
        case .certificateWrongUsage: .wrongKeyUsage
        case .certificateNoCity: .missingCity
        case .certificateMalformedCity: .malformedCity
        case .certificateWrongCity: .wrongCity
        default: .tlsError
        }
    }
}
