/// The ledger's messages between peers, on DATA channel 3 (docs/protocol.md §6): a node asks a peer
/// for its latest signed checkpoint, inclusion proofs and consistency proofs, which is what
/// witnessing (part 5) is built on. Every request carries an id the answer repeats.
///
/// Proofs carry hashes only, never entries: a peer proves that something it already knows the
/// hash of (a receipt, an earlier checkpoint) is in the log.
public enum LedgerWire: Sendable, Equatable {
    public static let channel: UInt16 = 3
    /// More proof hashes than a tree of 2^64 entries can need is malformed.
    public static let maxProofHashes = 128
    /// A signed note larger than this is refused (ours are about 200 bytes).
    public static let maxNoteBytes = 16_384
    /// A cosignature line is about 150 bytes; a longer one is malformed.
    public static let maxCosignatureBytes = 1_024

    case getCheckpoint(id: UInt32)
    case checkpoint(id: UInt32, note: String)
    case getInclusion(id: UInt32, index: UInt64, size: UInt64)
    case inclusion(id: UInt32, index: UInt64, size: UInt64, hashes: [MerkleHash])
    case getConsistency(id: UInt32, size1: UInt64, size2: UInt64)
    case consistency(id: UInt32, size1: UInt64, size2: UInt64, hashes: [MerkleHash])
    /// The request could not be answered; `message` says why (e.g. a size beyond the log).
    case error(id: UInt32, message: String)
    /// A witness's cosignature (C2SP tlog-cosignature/v1 signature line) of the receiver's own
    /// checkpoint of `size`, after checking it; no answer is expected.
    case cosignature(id: UInt32, size: UInt64, line: String)

    enum Kind: UInt8 {
        case getCheckpoint = 1, checkpoint, getInclusion, inclusion, getConsistency, consistency, error, cosignature
    }

    public var id: UInt32 {
        switch self {
        case .getCheckpoint(let id), .checkpoint(let id, _), .getInclusion(let id, _, _), .inclusion(let id, _, _, _),
            .getConsistency(let id, _, _), .consistency(let id, _, _, _), .error(let id, _), .cosignature(let id, _, _):
            id
        }
    }

    public var isRequest: Bool {
        switch self {
        case .getCheckpoint, .getInclusion, .getConsistency: true
        default: false
        }
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        func hashes(_ hs: [MerkleHash]) {
            w.u8(UInt8(hs.count))
            for h in hs { withUnsafeBytes(of: h.storage) { w.raw($0) } }
        }
        switch self {
        case .getCheckpoint(let id):
            w.u8(Kind.getCheckpoint.rawValue); w.u32(id)
        case .checkpoint(let id, let note):
            w.u8(Kind.checkpoint.rawValue); w.u32(id); w.str16(note)
        case .getInclusion(let id, let index, let size):
            w.u8(Kind.getInclusion.rawValue); w.u32(id); w.u64(index); w.u64(size)
        case .inclusion(let id, let index, let size, let hs):
            w.u8(Kind.inclusion.rawValue); w.u32(id); w.u64(index); w.u64(size); hashes(hs)
        case .getConsistency(let id, let size1, let size2):
            w.u8(Kind.getConsistency.rawValue); w.u32(id); w.u64(size1); w.u64(size2)
        case .consistency(let id, let size1, let size2, let hs):
            w.u8(Kind.consistency.rawValue); w.u32(id); w.u64(size1); w.u64(size2); hashes(hs)
        case .error(let id, let message):
            w.u8(Kind.error.rawValue); w.u32(id); w.str16(message)
        case .cosignature(let id, let size, let line):
            w.u8(Kind.cosignature.rawValue); w.u32(id); w.u64(size); w.str16(line)
        }
        return w.bytes
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> LedgerWire {
        var r = WireReader(bytes)
        let type = try r.u8("ledger message type")
        guard let kind = Kind(rawValue: type) else { throw .malformed("unknown ledger message type \(type)") }
        let id = try r.u32("request id")
        func hashes() throws(WireError) -> [MerkleHash] {
            let n = Int(try r.u8("proof length"))
            guard n <= maxProofHashes else { throw .malformed("a proof of \(n) hashes") }
            var out: [MerkleHash] = []
            for _ in 0..<n { out.append(MerkleHash(try r.take(32, "proof hash"))!) }  // take(32) returned 32 bytes
            return out
        }
        let message: LedgerWire
        switch kind {
        case .getCheckpoint: message = .getCheckpoint(id: id)
        case .checkpoint:
            let note = try r.str16("checkpoint note")
            guard note.utf8.count <= maxNoteBytes else { throw .malformed("a checkpoint note of \(note.utf8.count) bytes") }
            message = .checkpoint(id: id, note: note)
        case .getInclusion: message = .getInclusion(id: id, index: try r.u64("index"), size: try r.u64("tree size"))
        case .inclusion: message = .inclusion(id: id, index: try r.u64("index"), size: try r.u64("tree size"), hashes: try hashes())
        case .getConsistency: message = .getConsistency(id: id, size1: try r.u64("size1"), size2: try r.u64("size2"))
        case .consistency: message = .consistency(id: id, size1: try r.u64("size1"), size2: try r.u64("size2"), hashes: try hashes())
        case .error: message = .error(id: id, message: try r.str16("error message"))
        case .cosignature:
            let size = try r.u64("tree size")
            let line = try r.str16("cosignature line")
            guard line.utf8.count <= maxCosignatureBytes else { throw .malformed("a cosignature line of \(line.utf8.count) bytes") }
            message = .cosignature(id: id, size: size, line: line)
        }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after a ledger message") }
        return message
    }
}

/// What a node's ledger can answer; the shell implements it over its store.
public protocol LedgerProver: Sendable {
    func latestCheckpoint() async throws -> String?
    func inclusionProof(index: UInt64, size: UInt64) async throws -> [MerkleHash]
    func consistencyProof(size1: UInt64, size2: UInt64) async throws -> [MerkleHash]
    func size() async throws -> UInt64
}

extension LedgerWire {
    /// The answer to a request (`nil` for anything that is not one). Sizes beyond the log and
    /// other bad requests are answered with `.error`, never with a disconnect.
    public static func answer(_ request: LedgerWire, from prover: some LedgerProver) async -> LedgerWire? {
        guard request.isRequest else { return nil }
        do {
            switch request {
            case .getCheckpoint(let id):
                guard let note = try await prover.latestCheckpoint() else { return .error(id: id, message: "no checkpoint has been signed yet") }
                return .checkpoint(id: id, note: note)
            case .getInclusion(let id, let index, let size):
                let have = try await prover.size()
                guard size > 0, size <= have, index < size else {
                    return .error(id: id, message: "no inclusion proof of entry \(index) in a tree of \(size): the log has \(have) entries")
                }
                return .inclusion(id: id, index: index, size: size, hashes: try await prover.inclusionProof(index: index, size: size))
            case .getConsistency(let id, let size1, let size2):
                let have = try await prover.size()
                guard size1 > 0, size1 <= size2, size2 <= have else {
                    return .error(id: id, message: "no consistency proof from \(size1) to \(size2): need 0 < size1 ≤ size2 ≤ \(have)")
                }
                return .consistency(id: id, size1: size1, size2: size2, hashes: try await prover.consistencyProof(size1: size1, size2: size2))
            default:
                return nil
            }
        } catch {
            return .error(id: request.id, message: "the ledger could not answer: \(error)")
        }
    }
}
