public import Foundation

/// A C2SP tlog-proof (`c2sp.org/tlog-proof@v1`): one entry's index, its RFC 9162 inclusion proof
/// and the signed checkpoint it leads to, as text that verifies offline against the log's key.
///
/// CityMesh puts the entry's own bytes in the `extra` line, so the proof needs nothing else: the
/// leaf hash is computed from them, and the inclusion proof against the signed root is what
/// makes them trustworthy (the spec says never to trust `extra` by itself).
public struct TLogProof: Sendable, Equatable {
    public static let header = "c2sp.org/tlog-proof@v1"

    public var extra: [UInt8]?
    public var index: UInt64
    public var hashes: [MerkleHash]
    /// The signed checkpoint, verbatim (signed-note text ending in a newline).
    public var checkpoint: String

    public init(extra: [UInt8]?, index: UInt64, hashes: [MerkleHash], checkpoint: String) {
        self.extra = extra
        self.index = index
        self.hashes = hashes
        self.checkpoint = checkpoint
    }

    public var text: String {
        var out = Self.header + "\n"
        if let extra { out += "extra " + Data(extra).base64EncodedString() + "\n" }
        out += "index \(index)\n"
        for h in hashes { out += h.base64 + "\n" }
        return out + "\n" + checkpoint
    }

    /// Parses the text strictly: every line as the spec writes it, canonical base64 only.
    public init(parsing text: String) throws(NoteError) {
        guard let blank = text.range(of: "\n\n") else {
            throw NoteError("a tlog-proof has its proof lines, an empty line, then the checkpoint; no empty line was found")
        }
        let head = text[..<blank.lowerBound].split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        checkpoint = String(text[blank.upperBound...])
        guard head.first == Self.header else { throw NoteError("the first line must be '\(Self.header)'") }
        var i = 1
        extra = nil
        if i < head.count, head[i].hasPrefix("extra ") {
            guard let data = Self.strictBase64(String(head[i].dropFirst(6))) else { throw NoteError("the extra line is not canonical base64") }
            extra = data
            i += 1
        }
        guard i < head.count, head[i].hasPrefix("index ") else { throw NoteError("line \(i + 1) must be 'index N'") }
        let digits = String(head[i].dropFirst(6))
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), digits == "0" || !digits.hasPrefix("0"), let index = UInt64(digits) else {
            throw NoteError("the index '\(digits)' is not a decimal number without leading zeros")
        }
        self.index = index
        hashes = []
        for (n, line) in head[(i + 1)...].enumerated() {
            guard let bytes = Self.strictBase64(line), let h = MerkleHash(bytes) else {
                throw NoteError("proof line \(n + 1) is not the base64 of a 32-byte hash")
            }
            hashes.append(h)
        }
        guard hashes.count <= 64 else { throw NoteError("the proof has \(hashes.count) hashes; a tree of 2^64 entries needs at most 64") }
        guard !checkpoint.isEmpty else { throw NoteError("the checkpoint after the empty line is missing") }
    }

    /// Verifies the proof offline: the checkpoint's signature with the log's key, then the inclusion
    /// of `leaf` (by default the leaf hash of the `extra` bytes). Returns the verified checkpoint.
    public func verify(key: NoteVerifier, leaf: MerkleHash? = nil) throws -> Checkpoint {
        let cp = try Checkpoint.verify(signedNote: checkpoint, key: key)
        guard let leaf = leaf ?? extra.map({ Merkle.leafHash($0) }) else {
            throw NoteError("the proof carries no entry (no extra line): give the entry's leaf hash")
        }
        try Merkle.verifyInclusion(leaf: leaf, index: index, size: cp.size, proof: hashes, root: cp.root)
        return cp
    }

    /// Standard base64 that re-encodes to the same text (no stray bits, padding or whitespace).
    static func strictBase64(_ text: String) -> [UInt8]? {
        guard let data = Data(base64Encoded: text), data.base64EncodedString() == text else { return nil }
        return Array(data)
    }
}
