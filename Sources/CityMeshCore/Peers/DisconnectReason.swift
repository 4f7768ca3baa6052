/// Why a peer connection was refused or ended. The raw value is the stable label used in logs,
/// metrics (`reason="…"`) and `citymesh peers --json`.
public enum DisconnectReason: String, Sendable, CaseIterable, Codable {
    // Refused during the TLS handshake.
    case noClientCertificate = "no_client_certificate"
    case foreignCA = "foreign_ca"
    case certificateExpired = "certificate_expired"
    case certificateNotYetValid = "certificate_not_yet_valid"
    case revoked = "revoked"
    case denyListed = "deny_listed"
    case wrongKeyUsage = "wrong_eku"
    case missingCity = "missing_city_uri"
    case malformedCity = "malformed_city_uri"
    case wrongCity = "wrong_city"
    case notTLS = "not_tls"
    case tlsError = "tls_error"
    // Refused or cut off by the wire protocol.
    case protocolViolation = "protocol_violation"
    case unknownMessage = "unknown_message"
    case frameTooLarge = "frame_too_large"
    case truncatedFrame = "truncated_frame"
    case versionMismatch = "version_mismatch"
    case handshakeTimeout = "handshake_timeout"
    case idleTimeout = "idle_timeout"
    case tooManyConnections = "too_many_connections"
    // Ordinary ends.
    case duplicate = "duplicate_connection"
    case shutdown = "shutdown"
    case peerClosed = "peer_closed"
    case connectionLost = "connection_lost"
    case dialFailed = "dial_failed"
    /// A city this node dialed for gossip left its active view (a better-ranked one took its place).
    case viewChanged = "view_changed"

    /// Refusals are logged as warnings and counted in `citymesh_peer_refusals_total`.
    public var isRefusal: Bool {
        switch self {
        case .duplicate, .shutdown, .peerClosed, .connectionLost, .dialFailed, .viewChanged: false
        default: true
        }
    }

    /// The CLOSE code sent to the peer before closing, when the session got past TLS.
    public var closeCode: CloseCode? {
        switch self {
        case .protocolViolation, .truncatedFrame: .protocolViolation
        case .unknownMessage: .unknownMessage
        case .frameTooLarge: .frameTooLarge
        case .versionMismatch: .versionMismatch
        case .wrongCity: .identityMismatch
        case .handshakeTimeout: .handshakeTimeout
        case .idleTimeout: .idleTimeout
        case .revoked, .denyListed, .certificateExpired: .revoked
        case .tooManyConnections: .tooManyConnections
        case .duplicate: .duplicate
        case .shutdown: .normal
        case .viewChanged: .viewChanged
        default: nil
        }
    }
}
