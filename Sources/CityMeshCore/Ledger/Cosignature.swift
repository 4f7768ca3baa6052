public import Crypto
public import Foundation

/// A witness's statement that, as of `timestamp`, the largest consistent checkpoint it has seen of
/// a log is the one it signed: a C2SP tlog-cosignature/v1 (Ed25519 witnesses) or its ECDSA P-256
/// counterpart (P-256 witnesses; see ``NoteKey``).
///
/// The signature line is `— <witness name> base64(key ID || u64 timestamp || signature)`.
/// Ed25519: the key ID is SHA-256(name || 0x0A || 0x04 || public key)[:4] and the signed message is
/// `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's note text. P-256: the type is
/// 0xff followed by ``NoteKey/ecdsaCosignatureIdentifier``, the key is the DER SPKI, the message's
/// first line is that identifier, and the signature is ASN.1 DER. The cosignature types and header
/// lines keep a cosignature from ever verifying as a log signature (0x01/0x02), so a node may
/// witness with the key that signs its own ledger.
public struct Cosignature: Sendable, Equatable {
    public let witness: String
    public let keyID: UInt32
    public let timestamp: UInt64
    public let signature: [UInt8]

    /// A city's name as a witness (its cosigner key name).
    public static func witnessName(_ city: CitySlug) -> String { "\(city).citymesh/witness" }

    /// The signature line, ending in a newline, to append to the checkpoint's signed note.
    public var line: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(76)
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: keyID >> UInt32(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: timestamp >> UInt64(shift))) }
        bytes += signature
        return "\u{2014} \(witness) \(Data(bytes).base64EncodedString())\n"
    }

    /// The bytes an Ed25519 cosigner signs for `checkpointText` (the note text, ending in a newline).
    public static func message(checkpointText: String, timestamp: UInt64) -> [UInt8] {
        message(checkpointText: checkpointText, timestamp: timestamp, header: "cosignature/v1")
    }

    /// The bytes a cosigner with `key` signs: the header line of its type, the time, the note text.
    static func message(checkpointText: String, timestamp: UInt64, key: NoteKey) -> [UInt8] {
        switch key {
        case .ed25519: message(checkpointText: checkpointText, timestamp: timestamp)
        case .p256: message(checkpointText: checkpointText, timestamp: timestamp, header: NoteKey.ecdsaCosignatureIdentifier)
        }
    }

    static func message(checkpointText: String, timestamp: UInt64, header: String) -> [UInt8] {
        Array("\(header)\ntime \(timestamp)\n".utf8) + Array(checkpointText.utf8)
    }

    /// 9999-12-31T23:59:59Z in seconds since 1970: the latest timestamp a cosignature may carry.
    public static let maxTimestamp: UInt64 = 253_402_300_799

    /// Reads a note signature as a cosignature: a u64 timestamp and a signature of 64 bytes
    /// (Ed25519) or at most 72 (ECDSA P-256, DER); which one is checked against the key in `verify`.
    public init(_ signature: SignedNote.Signature) throws(NoteError) {
        // 8 + 64 bytes (Ed25519), or 8 bytes and a DER ECDSA P-256 signature (at most 72 bytes).
        let isECDSA = signature.bytes.count <= 8 + 72 && signature.bytes.count > 8
            && (try? P256.Signing.ECDSASignature(derRepresentation: signature.bytes.dropFirst(8))) != nil
        guard signature.bytes.count == 8 + 64 || isECDSA else {
            throw NoteError("the signature of '\(signature.name)' is not a cosignature (a timestamp and an Ed25519 signature, 72 bytes, or a DER ECDSA P-256 signature; not \(signature.bytes.count) bytes)")
        }
        let timestamp = signature.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        // Seconds since 1970; a timestamp past the year 9999 is no time a witness saw, and refusing it
        // keeps conversions to microseconds (RFC 3339) in range.
        guard timestamp <= Self.maxTimestamp else { throw NoteError("the cosignature of '\(signature.name)' has a timestamp after the year 9999 (\(timestamp))") }
        self.init(witness: signature.name, keyID: signature.keyID, timestamp: timestamp, signature: Array(signature.bytes.dropFirst(8)))
    }

    /// Parses one signature line (with or without its newline).
    public init(line: String) throws(NoteError) {
        let text = line.hasSuffix("\n") ? line : line + "\n"
        // A one-line text and a blank line make the signature line parseable as a note.
        let note = try SignedNote(parsing: "x\n\n" + text)
        guard note.signatures.count == 1 else { throw NoteError("expected one cosignature line") }
        try self.init(note.signatures[0])
    }

    init(witness: String, keyID: UInt32, timestamp: UInt64, signature: [UInt8]) {
        self.witness = witness
        self.keyID = keyID
        self.timestamp = timestamp
        self.signature = signature
    }

    /// Checks this cosignature over `checkpointText` with `key`; the name and key ID must match.
    public func verify(checkpointText: String, key: CosignerKey) throws(NoteError) {
        guard witness == key.name, keyID == key.keyID else {
            throw NoteError("the cosignature is by '\(witness)' (key \(String(format: "%08x", keyID))), not by \(key.vkey)")
        }
        guard key.publicKey.isValidSignature(signature, for: Self.message(checkpointText: checkpointText, timestamp: timestamp, key: key.publicKey)) else {
            throw NoteError("the cosignature of '\(witness)' does not verify: the checkpoint or the cosignature was altered")
        }
    }

    /// The cosignatures in a signed checkpoint note that verify with one of `keys`, in note order.
    /// Signatures by other keys (the log's own, unknown witnesses) are skipped; a signature that
    /// names a known key but does not verify is an error.
    public static func verified(in note: SignedNote, by keys: [CosignerKey]) throws(NoteError) -> [Cosignature] {
        var out: [Cosignature] = []
        for sig in note.signatures {
            guard let key = keys.first(where: { $0.name == sig.name && $0.keyID == sig.keyID }) else { continue }
            let cosignature = try Cosignature(sig)
            try cosignature.verify(checkpointText: note.text, key: key)
            if !out.contains(where: { $0.witness == cosignature.witness }) { out.append(cosignature) }
        }
        return out
    }
}

/// A witness's cosigner key: name, key and the key ID of its cosignature type (0x04 for Ed25519,
/// 0xff with ``NoteKey/ecdsaCosignatureIdentifier`` for ECDSA P-256).
public struct CosignerKey: Sendable, Hashable {
    public let name: String
    public let keyID: UInt32
    public let publicKey: NoteKey

    public init(name: String, publicKey: NoteKey) throws(NoteError) {
        try SignedNote.checkKeyName(name)
        self.name = name
        self.publicKey = publicKey
        self.keyID = SignedNote.keyID(name: name, type: publicKey.cosignatureType, publicKey: publicKey)
    }

    public init(name: String, publicKey: Curve25519.Signing.PublicKey) throws(NoteError) {
        try self.init(name: name, publicKey: .ed25519(publicKey))
    }

    /// The vkey text: `<name>+<key ID>+base64(type || public key)`.
    public var vkey: String {
        SignedNote.vkey(name: name, keyID: keyID, type: publicKey.cosignatureType, publicKey: publicKey)
    }

    /// Parses a cosigner vkey; the key ID must match the name and key.
    public init(vkey: String) throws(NoteError) {
        let (name, id, type, key) = try SignedNote.parseVKey(vkey)
        guard type == key.cosignatureType else {
            throw NoteError("signature type 0x\(String(format: "%02x", type[0])) is not a cosignature key (0x04, or 0xff for P-256): is this the log's key rather than the witness's?")
        }
        try self.init(name: name, publicKey: key)
        try SignedNote.checkKeyID(id, expected: keyID)
    }

    public static func == (l: CosignerKey, r: CosignerKey) -> Bool {
        l.name == r.name && l.publicKey == r.publicKey
    }

    public func hash(into h: inout Hasher) {
        h.combine(name)
        h.combine(keyID)
    }
}

/// A witness that cosigns checkpoints it has checked (see ``Cosignature``).
public struct Cosigner: Sendable {
    public let key: CosignerKey
    let privateKey: NotePrivateKey

    public init(name: String, key: NotePrivateKey) throws(NoteError) {
        self.privateKey = key
        self.key = try CosignerKey(name: name, publicKey: key.publicKey)
    }

    public init(name: String, key: Curve25519.Signing.PrivateKey) throws(NoteError) {
        try self.init(name: name, key: .ed25519(key))
    }

    /// Cosigns a checkpoint's note text at `timestamp` (seconds since the epoch).
    public func cosign(checkpointText: String, timestamp: UInt64) throws -> Cosignature {
        try SignedNote.checkText(checkpointText)
        let signature = try privateKey.signature(for: Cosignature.message(checkpointText: checkpointText, timestamp: timestamp, key: key.publicKey))
        return Cosignature(witness: key.name, keyID: key.keyID, timestamp: timestamp, signature: signature)
    }
}
