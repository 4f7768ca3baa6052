public import Crypto
public import Foundation

/// Why a note, key or checkpoint was rejected.
public struct NoteError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A C2SP signed-note verifier key of a log: `<name>+<key ID, 8 hex>+<base64(type || key)>`, type
/// 0x01 (Ed25519) or 0x02 (ECDSA P-256, key = DER SPKI) — see ``NoteKey``.
public struct NoteVerifier: Sendable, Hashable {
    public let name: String
    public let keyID: UInt32
    public let publicKey: NoteKey

    public init(name: String, publicKey: NoteKey) throws(NoteError) {
        try SignedNote.checkKeyName(name)
        self.name = name
        self.publicKey = publicKey
        self.keyID = Self.keyID(name: name, publicKey: publicKey)
    }

    public init(name: String, publicKey: Curve25519.Signing.PublicKey) throws(NoteError) {
        try self.init(name: name, publicKey: .ed25519(publicKey))
    }

    /// Parses the verifier key text; the key ID must match the name and key.
    public init(vkey: String) throws(NoteError) {
        let (name, id, type, key) = try SignedNote.parseVKey(vkey)
        guard type == key.noteType else {
            throw NoteError("signature type 0x\(String(format: "%02x", type[0])) is not a log key: expected 0x01 (Ed25519) or 0x02 (ECDSA P-256)")
        }
        try self.init(name: name, publicKey: key)
        try SignedNote.checkKeyID(id, expected: keyID)
    }

    public static func == (l: NoteVerifier, r: NoteVerifier) -> Bool {
        l.name == r.name && l.keyID == r.keyID && l.publicKey == r.publicKey
    }

    public func hash(into h: inout Hasher) {
        h.combine(name)
        h.combine(keyID)
    }

    public var vkey: String {
        SignedNote.vkey(name: name, keyID: keyID, type: publicKey.noteType, publicKey: publicKey)
    }

    /// Ed25519 (0x01): SHA-256(name || 0x0A || 0x01 || public key)[:4]; ECDSA (0x02): SHA-256(DER SPKI)[:4].
    static func keyID(name: String, publicKey: NoteKey) -> UInt32 {
        switch publicKey {
        case .ed25519: SignedNote.keyID(name: name, type: [0x01], publicKey: publicKey)
        case .p256: SignedNote.first4(SHA256.hash(data: publicKey.bytes))
        }
    }
}

/// A C2SP signed-note signer with the node's key (Ed25519, type 0x01, or ECDSA P-256, type 0x02).
public struct NoteSigner: Sendable {
    public let verifier: NoteVerifier
    let key: NotePrivateKey

    public init(name: String, key: NotePrivateKey) throws(NoteError) {
        self.key = key
        self.verifier = try NoteVerifier(name: name, publicKey: key.publicKey)
    }

    public init(name: String, key: Curve25519.Signing.PrivateKey) throws(NoteError) {
        try self.init(name: name, key: .ed25519(key))
    }

    /// The signed note: `text`, a blank line, one signature line.
    public func sign(_ text: String) throws -> String {
        try SignedNote.checkText(text)
        let signature = try key.signature(for: Array(text.utf8))
        return text + "\n" + "\u{2014} \(verifier.name) \(Data(SignedNote.bigEndian(verifier.keyID) + signature).base64EncodedString())\n"
    }
}

/// A parsed C2SP signed note: the text and its signature lines.
public struct SignedNote: Sendable, Equatable {
    public struct Signature: Sendable, Equatable {
        public let name: String
        public let keyID: UInt32
        public let bytes: [UInt8]
    }

    public let text: String
    public let signatures: [Signature]
    public static let maxSignatures = 100

    /// Parses a note; malformed notes (bad UTF-8, control characters, no blank line before the
    /// signatures, bad signature lines, bad base64) are refused.
    public init(parsing note: String) throws(NoteError) {
        guard note.utf8.count <= 1_000_000 else { throw NoteError("the note is larger than 1 MB") }
        for scalar in note.unicodeScalars where scalar.value < 0x20 && scalar != "\n" {
            throw NoteError("the note contains the control character U+\(String(format: "%04X", scalar.value))")
        }
        guard note.hasSuffix("\n") else { throw NoteError("the note does not end with a newline") }
        // The text ends at the last blank line.
        guard let split = note.range(of: "\n\n", options: .backwards) else { throw NoteError("no blank line separates the text from the signatures") }
        let text = String(note[..<note.index(after: split.lowerBound)])
        let block = note[split.upperBound...]
        var signatures: [Signature] = []
        for line in block.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            guard line.hasPrefix("\u{2014} ") else { throw NoteError("a signature line does not start with '\u{2014} ': \(line.prefix(40))") }
            let rest = line.dropFirst(2)
            let fields = rest.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count == 2 else { throw NoteError("a signature line is not '\u{2014} NAME SIGNATURE'") }
            let name = String(fields[0])
            try Self.checkKeyName(name)
            guard let raw = Data(base64Encoded: String(fields[1])), raw.count >= 5 else { throw NoteError("the signature of '\(name)' is not valid base64 of a key ID and signature") }
            signatures.append(Signature(name: name, keyID: raw.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }, bytes: Array(raw.dropFirst(4))))
        }
        guard !signatures.isEmpty else { throw NoteError("the note has no signature lines") }
        guard signatures.count <= Self.maxSignatures else { throw NoteError("the note has more than \(Self.maxSignatures) signatures") }
        try Self.checkText(text)
        self.text = text
        self.signatures = signatures
    }

    /// Verifies the note against trusted keys: signatures of unknown keys are ignored, any failing
    /// signature of a known key rejects the note, and at least one known key must have signed.
    /// Returns the keys that verified.
    @discardableResult
    public func verify(_ trusted: [NoteVerifier]) throws(NoteError) -> [NoteVerifier] {
        var ok: [NoteVerifier] = []
        let message = Array(text.utf8)
        for sig in signatures {
            guard let key = trusted.first(where: { $0.name == sig.name && $0.keyID == sig.keyID }) else { continue }
            guard key.publicKey.isValidSignature(sig.bytes, for: message) else {
                throw NoteError("the signature of '\(sig.name)' does not verify: the note was altered or signed by another key")
            }
            if !ok.contains(key) { ok.append(key) }
        }
        guard !ok.isEmpty else { throw NoteError("no signature from a trusted key (\(trusted.map(\.name).joined(separator: ", ")))") }
        return ok
    }

    /// A signed-note key ID: SHA-256(name || 0x0A || signature type || public key)[:4], big-endian.
    static func keyID(name: String, type: [UInt8], publicKey: NoteKey) -> UInt32 {
        first4(SHA256.hash(data: Array(name.utf8) + [0x0A] + type + publicKey.bytes))
    }

    static func first4(_ digest: SHA256.Digest) -> UInt32 {
        digest.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func bigEndian(_ id: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: id >> 24), UInt8(truncatingIfNeeded: id >> 16), UInt8(truncatingIfNeeded: id >> 8), UInt8(truncatingIfNeeded: id)]
    }

    /// A vkey's text: `<name>+<key ID, 8 hex>+base64(type || public key)`.
    static func vkey(name: String, keyID: UInt32, type: [UInt8], publicKey: NoteKey) -> String {
        "\(name)+\(String(format: "%08x", keyID))+\(Data(type + publicKey.bytes).base64EncodedString())"
    }

    /// Splits a vkey, `NAME+KEYID+base64(type || public key)`, checking each part's form; the type
    /// is 0x01, 0x02, 0x04 or 0xff followed by ``NoteKey/ecdsaCosignatureIdentifier``.
    static func parseVKey(_ vkey: String) throws(NoteError) -> (name: String, keyID: UInt32, type: [UInt8], key: NoteKey) {
        guard vkey.utf8.count <= 4096 else { throw NoteError("a verifier key is longer than 4096 bytes") }
        // The name has no '+' and the key ID is hex, but base64 may contain '+': split twice only.
        let parts = vkey.split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw NoteError("a verifier key is NAME+KEYID+KEY (three parts separated by '+')") }
        try checkKeyName(String(parts[0]))
        guard parts[1].count == 8, parts[1].allSatisfy(\.isHexDigit), let id = UInt32(parts[1], radix: 16) else {
            throw NoteError("the key ID '\(parts[1])' is not 8 hex digits")
        }
        guard let data = Data(base64Encoded: String(parts[2])), let first = data.first else { throw NoteError("the key is not base64") }
        let type: [UInt8]
        if first == 0xff {
            guard data.starts(with: NoteKey.ecdsaCosignatureType) else {
                throw NoteError("signature type 0xff is followed by an identifier CityMesh does not know (it knows '\(NoteKey.ecdsaCosignatureIdentifier)')")
            }
            type = NoteKey.ecdsaCosignatureType
        } else {
            type = [first]
        }
        return (String(parts[0]), id, type, try NoteKey(type: type, material: data.dropFirst(type.count)))
    }

    /// A vkey's key ID must be the one its name and key give.
    static func checkKeyID(_ given: UInt32, expected: UInt32) throws(NoteError) {
        guard given == expected else {
            throw NoteError("the key ID \(String(format: "%08x", given)) does not match the name and key (expected \(String(format: "%08x", expected)))")
        }
    }

    static func checkKeyName(_ name: String) throws(NoteError) {
        guard !name.isEmpty else { throw NoteError("a key name is empty") }
        guard !name.contains("+"), !name.unicodeScalars.contains(where: { $0.properties.isWhitespace }) else {
            throw NoteError("the key name '\(name)' contains a space or '+'")
        }
    }

    static func checkText(_ text: String) throws(NoteError) {
        guard text.hasSuffix("\n") else { throw NoteError("the note text does not end with a newline") }
        for scalar in text.unicodeScalars where scalar.value < 0x20 && scalar != "\n" {
            throw NoteError("the note text contains the control character U+\(String(format: "%04X", scalar.value))")
        }
    }
}

/// A C2SP tlog-checkpoint: origin, tree size and root hash (plus optional extension lines).
public struct Checkpoint: Sendable, Equatable {
    public let origin: String
    public let size: UInt64
    public let root: MerkleHash
    public let extensions: [String]

    public init(origin: String, size: UInt64, root: MerkleHash, extensions: [String] = []) {
        self.origin = origin
        self.size = size
        self.root = root
        self.extensions = extensions
    }

    /// The note text.
    public var text: String {
        ([origin, String(size), root.base64] + extensions).map { $0 + "\n" }.joined()
    }

    /// Parses checkpoint text (the body of a signed note).
    public init(text: String) throws(NoteError) {
        guard text.hasSuffix("\n") else { throw NoteError("the checkpoint does not end with a newline") }
        let lines = text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.count >= 3 else { throw NoteError("a checkpoint has at least three lines: origin, tree size, root hash") }
        guard lines.allSatisfy({ !$0.isEmpty }) else { throw NoteError("a checkpoint line is empty") }
        let sizeText = lines[1]
        guard sizeText.allSatisfy({ $0.isASCII && $0.isNumber }), sizeText == "0" || !sizeText.hasPrefix("0"), let size = UInt64(sizeText) else {
            throw NoteError("the tree size '\(sizeText)' is not a decimal number without leading zeros")
        }
        // A log of 2^63 entries cannot exist; a size above that comes from a forger, and the stores'
        // signed 64-bit columns could not hold it.
        guard size <= UInt64(Int64.max) else { throw NoteError("the tree size \(size) is above 2^63 - 1") }
        guard let root = MerkleHash(base64: lines[2]) else { throw NoteError("the root hash is not base64 of 32 bytes") }
        self.init(origin: lines[0], size: size, root: root, extensions: Array(lines.dropFirst(3)))
    }

    /// Parses and verifies a signed checkpoint with the log's key; the key name must be the origin.
    public static func verify(signedNote: String, key: NoteVerifier) throws(NoteError) -> Checkpoint {
        let note = try SignedNote(parsing: signedNote)
        try note.verify([key])
        let checkpoint = try Checkpoint(text: note.text)
        guard checkpoint.origin == key.name else { throw NoteError("the checkpoint's origin '\(checkpoint.origin)' is not the log's key name '\(key.name)'") }
        return checkpoint
    }
}
