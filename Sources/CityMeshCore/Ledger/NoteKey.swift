public import Crypto
public import Foundation
public import X509

/// The public half of a node key as it signs notes: Ed25519 or ECDSA P-256 (the two key types a
/// CityMesh node may have, DESIGN §2).
///
/// - Ed25519 signs checkpoints and policy versions as C2SP signed-note type 0x01 and cosigns as
///   tlog-cosignature/v1 (type 0x04).
/// - P-256 signs checkpoints and policy versions as signed-note type 0x02 (the ECDSA type of
///   transparency-dev/witness and Sigstore's Rekor: key ID = SHA-256(DER SPKI)[:4], an ASN.1 DER
///   signature over SHA-256 of the note text). tlog-cosignature defines no ECDSA cosignature, so a
///   P-256 witness uses signed-note's reserved type 0xff followed by the identifier
///   ``NoteKey/ecdsaCosignatureIdentifier``, with cosignature/v1's timestamped signature and a
///   message that starts with that identifier's line (docs/auditing.md §9).
public enum NoteKey: Sendable, Hashable {
    case ed25519(Curve25519.Signing.PublicKey)
    case p256(P256.Signing.PublicKey)

    /// The identifier after 0xff for P-256 cosignatures, and the header line of what they sign.
    public static let ecdsaCosignatureIdentifier = "citymesh-cosignature-ecdsa-p256/v1"

    /// The key of a certificate; nil for key types a node cannot have (P-384, P-521, RSA).
    public init?(_ key: Certificate.PublicKey) {
        if let k = Curve25519.Signing.PublicKey(key) { self = .ed25519(k) } else if let k = P256.Signing.PublicKey(key) { self = .p256(k) } else { return nil }
    }

    /// The key's bytes in vkeys and key IDs: 32 raw bytes (Ed25519) or the DER SPKI (P-256).
    public var bytes: [UInt8] {
        switch self {
        case .ed25519(let k): Array(k.rawRepresentation)
        case .p256(let k): Array(k.derRepresentation)
        }
    }

    /// "Ed25519" or "ECDSA P-256", for messages.
    public var algorithmName: String {
        switch self {
        case .ed25519: "Ed25519"
        case .p256: "ECDSA P-256"
        }
    }

    /// The signed-note signature type of a log (checkpoint, policy version) signature.
    var noteType: [UInt8] {
        switch self {
        case .ed25519: [0x01]
        case .p256: [0x02]
        }
    }

    /// The signed-note signature type of a cosignature.
    var cosignatureType: [UInt8] {
        switch self {
        case .ed25519: [0x04]
        case .p256: Self.ecdsaCosignatureType
        }
    }

    static let ecdsaCosignatureType: [UInt8] = [0xff] + Array(ecdsaCosignatureIdentifier.utf8)

    /// Checks a signature over `message`: 64 raw bytes (Ed25519) or ASN.1 DER over SHA-256 (P-256).
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        switch self {
        case .ed25519(let k):
            return signature.count == 64 && k.isValidSignature(signature, for: message)
        case .p256(let k):
            guard signature.count <= 72, let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(sig, for: message)
        }
    }

    /// Reads the key material after a vkey's type bytes.
    init(type: [UInt8], material: some DataProtocol) throws(NoteError) {
        switch type {
        case [0x01], [0x04]:
            guard material.count == 32, let k = try? Curve25519.Signing.PublicKey(rawRepresentation: Array(material)) else {
                throw NoteError("the key is not a 32-byte Ed25519 public key")
            }
            self = .ed25519(k)
        case [0x02], Self.ecdsaCosignatureType:
            guard material.count <= 1024, let k = try? P256.Signing.PublicKey(derRepresentation: material) else {
                throw NoteError("the key is not a DER-encoded ECDSA P-256 public key (SPKI)")
            }
            self = .p256(k)
        default:
            throw NoteError("unsupported signature type 0x\(type.prefix(1).map { String(format: "%02x", $0) }.joined())")
        }
    }

    public static func == (l: NoteKey, r: NoteKey) -> Bool {
        switch (l, r) {
        case (.ed25519, .ed25519), (.p256, .p256): l.bytes == r.bytes
        default: false
        }
    }

    public func hash(into h: inout Hasher) { h.combine(bytes) }
}

/// The private half of a node key, for signing notes and cosignatures.
public enum NotePrivateKey: Sendable {
    case ed25519(Curve25519.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)

    public var publicKey: NoteKey {
        switch self {
        case .ed25519(let k): .ed25519(k.publicKey)
        case .p256(let k): .p256(k.publicKey)
        }
    }

    /// Signs `message`: 64 raw bytes (Ed25519) or an ASN.1 DER ECDSA signature over SHA-256 (P-256).
    public func signature(for message: [UInt8]) throws -> [UInt8] {
        switch self {
        case .ed25519(let k): Array(try k.signature(for: message))
        case .p256(let k): Array(try k.signature(for: message).derRepresentation)
        }
    }
}
