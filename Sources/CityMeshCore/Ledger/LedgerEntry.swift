public import Foundation

/// One entry of the accountability ledger: what happened, when, who did it, to what — hashes and
/// metadata only, never cell values. Its leaf in the Merkle tree is the hash of its exact stored
/// bytes (`encoded()`), so any tool can recompute the tree from an exported bundle.
public struct LedgerEntry: Codable, Sendable, Equatable {
    /// Stable kind labels. New parts add kinds; old ones never change meaning.
    public enum Kind {
        public static let peerConnected = "peer.connected"
        public static let peerRefused = "peer.refused"
        public static let datasetCreated = "dataset.created"
        public static let fieldAdded = "dataset.field_added"
        public static let imported = "dataset.imported"
        /// One committed chunk of an import (its lines and counts), in the chunk's transaction.
        public static let importChunk = "dataset.import_chunk"
        public static let recordWritten = "record.written"
        public static let recordDeleted = "record.deleted"
        public static let tokenCreated = "token.created"
        public static let tokenRevoked = "token.revoked"
        public static let nodeStarted = "node.started"
        public static let policyApplied = "policy.applied"
        public static let policyRejected = "policy.rejected"
        public static let policyDenied = "policy.denied"
        public static let agreementOffered = "agreement.offered"
        public static let agreementAccepted = "agreement.accepted"
        public static let agreementRejected = "agreement.rejected"
        public static let agreementRevoked = "agreement.revoked"
        public static let agreementRefused = "agreement.refused"
        /// A bilateral receipt of one exchange: the receiver's receipt and the sender's countersignature.
        public static let exchangeReceipt = "exchange.receipt"
        /// Batches or cells a peer sent that this node refused (bad signature, no write right, …).
        public static let exchangeRefused = "exchange.refused"
        /// A peer showed two histories that cannot both be true; both signed checkpoints are kept.
        public static let peerForked = "peer.forked"
        /// Records purged because an agreement ended with `on_revoke: purge`.
        public static let sharePurged = "share.purged"
        /// A batch sent to a peer (written with the record of the send, before it goes out).
        public static let exchangeSent = "exchange.sent"
        /// A batch taken from a peer (written with the batch).
        public static let exchangeReceived = "exchange.received"
        /// Records the owner retracted from this member's replica (they left the share's view).
        public static let shareRetracted = "share.retracted"
        /// Deleted records' old values compacted out of the stored batches (one compaction pass).
        public static let shareCompacted = "share.compacted"
        /// A record erased by an admin (`citymesh record erase`).
        public static let recordErased = "record.erased"
    }

    /// The entry's position in the log (0-based); part of the signed bytes, so reordering shows.
    public var index: UInt64
    /// RFC 3339 UTC, microseconds.
    public var time: String
    public var kind: String
    /// Who caused it: `token:<id>`, `node`, or `peer:<city>`.
    public var actor: String
    public var peer: String?
    public var dataset: String?
    public var counts: [String: Int]?
    /// Named hashes, lowercase hex (e.g. `content.sha256` of an import).
    public var hashes: [String: String]?
    public var reason: String?
    public var detail: String?
    /// Signed documents the entry is about, whole (a receipt and its countersignature): hashes,
    /// counts and signatures, never record values.
    public var documents: [Agreement.Signed]?

    public init(
        index: UInt64 = 0, time: String, kind: String, actor: String, peer: String? = nil, dataset: String? = nil,
        counts: [String: Int]? = nil, hashes: [String: String]? = nil, reason: String? = nil, detail: String? = nil,
        documents: [Agreement.Signed]? = nil
    ) {
        self.documents = documents
        self.index = index
        self.time = time
        self.kind = kind
        self.actor = actor
        self.peer = peer
        self.dataset = dataset
        self.counts = counts
        self.hashes = hashes
        self.reason = reason
        self.detail = detail
    }

    /// The stored bytes: compact JSON with sorted keys.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(self))
    }

    /// The top-level `"index"` of stored entry bytes, read without decoding the whole entry (the
    /// audit of a million entries would otherwise spend most of its time in the JSON decoder).
    public static func index(in array: [UInt8]) -> UInt64? {
        array.withUnsafeBytes { index(in: $0) }
    }

    /// The same over raw bytes (non-generic, so it is fast when called from other modules).
    public static func index(in bytes: UnsafeRawBufferPointer) -> UInt64? {
        let key = Array(#""index":"#.utf8)
        var depth = 0, inString = false, escaped = false, i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            switch b {
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: "\""):
                if depth == 1, bytes[i...].starts(with: key) {
                    var j = i + key.count, value: UInt64 = 0, digits = 0
                    while j < bytes.endIndex, bytes[j] >= 0x30, bytes[j] <= 0x39, digits < 20 {
                        value = value &* 10 &+ UInt64(bytes[j] - 0x30)
                        j += 1
                        digits += 1
                    }
                    return digits > 0 ? value : nil
                }
                inString = true
            default: break
            }
            i += 1
        }
        return nil
    }

    public static func decode(_ bytes: some DataProtocol) throws -> LedgerEntry {
        try JSONDecoder().decode(LedgerEntry.self, from: Data(bytes))
    }
}

/// The checks an audit makes of a stored log: each row against the leaf hash and index it was
/// stored with, then the tree against the signed checkpoints. Pure: the caller reads the
/// database (in parallel ranges) and builds the tree.
public enum LedgerAudit {
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The first index known to be bad (or the start of the range that is).
        public let index: UInt64
        public let reason: String
        public var description: String { "entry \(index): \(reason)" }
        public init(index: UInt64, reason: String) {
            self.index = index
            self.reason = reason
        }
    }

    /// Checks one stored entry against the leaf hash stored with it and the index it was stored
    /// at, and returns its leaf hash. Entries can be checked in any order and on any thread.
    public static func check(index: UInt64, bytes: UnsafeRawBufferPointer, storedLeaf: UnsafeRawBufferPointer?) throws(Failure) -> MerkleHash {
        let leaf = Merkle.leafHash(bytes)
        if let storedLeaf, !leaf.equals(storedLeaf) {
            throw Failure(index: index, reason: "the entry's bytes do not match the leaf hash recorded when it was appended: it was edited")
        }
        guard let own = LedgerEntry.index(in: bytes) else { throw Failure(index: index, reason: "not a valid entry (no index)") }
        guard own == index else { throw Failure(index: index, reason: "it says it is entry \(own): entries were moved") }
        return leaf
    }

    /// Checks the tree of `levels` (every leaf already checked) against signed checkpoints, in
    /// size order: the first checkpoint whose root differs fails at the
    /// last good size; a checkpoint beyond the stored entries means entries were deleted.
    /// `firstBadLeaf` stops the check where the leaves stop being trustworthy.
    public static func check(levels: MerkleLevels, checkpoints: [Checkpoint], firstBadLeaf: Failure?) -> (matched: Int, failure: Failure?) {
        var lastGood: UInt64 = 0, matched = 0
        for cp in checkpoints.sorted(by: { $0.size < $1.size }) {
            if let bad = firstBadLeaf, cp.size > bad.index { return (matched, bad) }
            guard cp.size <= levels.count else {
                return (matched, Failure(index: levels.count, reason: "a checkpoint was signed at size \(cp.size) but only \(levels.count) entries are stored: entries were deleted"))
            }
            guard (try? levels.root(size: cp.size)) == cp.root else {
                return (matched, Failure(
                    index: lastGood,
                    reason: "the tree of \(cp.size) entries does not match its signed checkpoint: an entry from \(lastGood) to \(cp.size - 1) was altered, with its recorded leaf hash"))
            }
            lastGood = cp.size
            matched += 1
        }
        return (matched, firstBadLeaf)
    }
}
