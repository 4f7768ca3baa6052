public import Crypto
public import Foundation

/// A SHA-256 hash in a Merkle tree, stored inline (no heap allocation per hash).
public struct MerkleHash: Hashable, Sendable, CustomStringConvertible {
    var storage: (UInt64, UInt64, UInt64, UInt64)

    /// Exactly 32 bytes, or nil.
    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        storage = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &storage) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
    }

    /// Exactly 32 raw bytes (copied), or nil.
    public init?(raw: UnsafeRawBufferPointer) {
        guard raw.count == 32, let base = raw.baseAddress else { return nil }
        storage = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &storage) { $0.baseAddress!.copyMemory(from: base, byteCount: 32) }  // both 32 bytes
    }

    /// Standard base64 of exactly 32 bytes, or nil.
    public init?(base64: String) {
        guard let data = Data(base64Encoded: base64) else { return nil }
        self.init(data)
    }

    init(_ digest: SHA256.Digest) {
        storage = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &storage) { dst in
            digest.withUnsafeBytes { src in dst.copyMemory(from: src) }
        }
    }

    public var bytes: [UInt8] { withUnsafeBytes(of: storage) { Array($0) } }

    /// Compares with raw bytes without copying them.
    public func equals(_ raw: UnsafeRawBufferPointer) -> Bool {
        raw.count == 32 && withUnsafeBytes(of: storage) { mine in memcmp(mine.baseAddress!, raw.baseAddress!, 32) == 0 }  // both 32 bytes
    }
    public var base64: String { Data(bytes).base64EncodedString() }
    public var hex: String { Hex.lower(bytes) }
    public var description: String { base64 }

    public static func == (l: MerkleHash, r: MerkleHash) -> Bool {
        l.storage.0 == r.storage.0 && l.storage.1 == r.storage.1 && l.storage.2 == r.storage.2 && l.storage.3 == r.storage.3
    }

    public func hash(into h: inout Hasher) {
        h.combine(storage.0)
        h.combine(storage.1)
        h.combine(storage.2)
        h.combine(storage.3)
    }
}

/// Why a Merkle proof was rejected.
public struct MerkleProofError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
    /// The proof is for a leaf other than the entry shown with it.
    public static let leafMismatch = MerkleProofError("the leaf hash is not the hash of the entry")
}

/// RFC 6962 / RFC 9162 §2.1 Merkle tree hashing and proofs, over leaf hashes.
public enum Merkle {
    /// The root of the empty tree: SHA-256 of nothing.
    public static let emptyRoot = MerkleHash(SHA256.hash(data: [UInt8]()))

    /// `SHA-256(0x00 || data)`.
    public static func leafHash(_ data: some DataProtocol) -> MerkleHash {
        var h = SHA256()
        h.update(data: [0x00])
        h.update(data: data)
        return MerkleHash(h.finalize())
    }

    /// `SHA-256(0x00 || data)` over raw bytes (non-generic: fast from other modules).
    public static func leafHash(_ data: UnsafeRawBufferPointer) -> MerkleHash {
        var h = SHA256()
        withUnsafeBytes(of: UInt8(0)) { h.update(bufferPointer: $0) }
        h.update(bufferPointer: data)
        return MerkleHash(h.finalize())
    }

    /// `SHA-256(0x01 || left || right)`.
    public static func nodeHash(_ left: MerkleHash, _ right: MerkleHash) -> MerkleHash {
        var h = SHA256()
        withUnsafeBytes(of: UInt8(1)) { h.update(bufferPointer: $0) }
        withUnsafeBytes(of: left.storage) { h.update(bufferPointer: $0) }
        withUnsafeBytes(of: right.storage) { h.update(bufferPointer: $0) }
        return MerkleHash(h.finalize())
    }

    /// MTH over leaf hashes, in O(n) with O(log n) memory: perfect subtrees are merged left to right,
    /// then folded from the right, which is exactly RFC 6962's split at the largest power of two.
    public static func root<C: Collection>(_ leaves: C) -> MerkleHash where C.Element == MerkleHash {
        var range = CompactRange()
        for leaf in leaves { range.append(leaf) }
        return range.root
    }

    /// The largest power of two strictly less than `n` (n ≥ 2).
    static func split(_ n: Int) -> Int {
        var k = 1
        while k << 1 < n { k <<= 1 }
        return k
    }

    /// RFC 9162 §2.1.3.1 PATH(m, D[n]): the inclusion proof of leaf `index` in the tree of `leaves`.
    public static func inclusionProof(index: Int, leaves: ArraySlice<MerkleHash>) throws(MerkleProofError) -> [MerkleHash] {
        guard index >= 0, index < leaves.count else { throw MerkleProofError("leaf index \(index) is not in a tree of size \(leaves.count)") }
        var lo = leaves.startIndex, hi = leaves.endIndex, m = index + leaves.startIndex
        var siblings: [MerkleHash] = []
        while hi - lo > 1 {
            let k = split(hi - lo)
            if m < lo + k {
                siblings.append(root(leaves[(lo + k)..<hi]))
                hi = lo + k
            } else {
                siblings.append(root(leaves[lo..<(lo + k)]))
                lo += k
            }
        }
        // PATH lists the deepest sibling first.
        return siblings.reversed()
    }

    /// RFC 9162 §2.1.4.1 PROOF(m, D[n]): the consistency proof from the first `size1` leaves to all of `leaves`.
    public static func consistencyProof(size1: Int, leaves: ArraySlice<MerkleHash>) throws(MerkleProofError) -> [MerkleHash] {
        let n = leaves.count
        guard size1 > 0, size1 <= n else { throw MerkleProofError("no consistency proof from size \(size1) to size \(n): need 0 < size1 ≤ size2") }
        var parts: [MerkleHash] = []
        subproof(size1, leaves, true, &parts)
        return parts
    }

    static func subproof(_ m: Int, _ d: ArraySlice<MerkleHash>, _ b: Bool, _ out: inout [MerkleHash]) {
        let n = d.count
        if m == n {
            if !b { out.append(root(d)) }
            return
        }
        let k = split(n)
        if m <= k {
            subproof(m, d.prefix(k), b, &out)
            out.append(root(d.dropFirst(k)))
        } else {
            subproof(m - k, d.dropFirst(k), false, &out)
            out.append(root(d.prefix(k)))
        }
    }

    /// RFC 9162 §2.1.3.2: the root that `proof` yields for `leaf` at `index` in a tree of `size`.
    public static func rootFromInclusion(leaf: MerkleHash, index: UInt64, size: UInt64, proof: [MerkleHash]) throws(MerkleProofError) -> MerkleHash {
        guard index < size else { throw MerkleProofError("leaf index \(index) is not below the tree size \(size)") }
        var fn = index, sn = size - 1, r = leaf
        for p in proof {
            guard sn != 0 else { throw MerkleProofError("the inclusion proof is longer than the tree is deep") }
            if fn & 1 == 1 || fn == sn {
                r = nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0, fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                r = nodeHash(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else { throw MerkleProofError("the inclusion proof is shorter than the tree is deep") }
        return r
    }

    /// Verifies an inclusion proof against a trusted root.
    public static func verifyInclusion(leaf: MerkleHash, index: UInt64, size: UInt64, proof: [MerkleHash], root: MerkleHash) throws(MerkleProofError) {
        let computed = try rootFromInclusion(leaf: leaf, index: index, size: size, proof: proof)
        guard computed == root else { throw MerkleProofError("the inclusion proof leads to root \(computed), not \(root)") }
    }

    /// The same check on raw byte strings, as proofs arrive from outside: with equal sizes the two
    /// roots are compared as given (RFC 9162 needs no hashing there); otherwise every root and proof
    /// element must be a 32-byte hash.
    public static func verifyConsistency(size1: UInt64, size2: UInt64, root1: [UInt8], root2: [UInt8], proof: [[UInt8]]) throws(MerkleProofError) {
        if size1 == size2, size1 > 0 {
            guard proof.isEmpty else { throw MerkleProofError("equal sizes need an empty proof") }
            guard root1 == root2 else { throw MerkleProofError("equal sizes but different roots: the log forked") }
            return
        }
        guard let r1 = MerkleHash(root1), let r2 = MerkleHash(root2) else { throw MerkleProofError("a root hash is not 32 bytes") }
        let hashes = proof.compactMap { MerkleHash($0) }
        guard hashes.count == proof.count else { throw MerkleProofError("a proof element is not 32 bytes") }
        try verifyConsistency(size1: size1, size2: size2, root1: r1, root2: r2, proof: hashes)
    }

    /// RFC 9162 §2.1.4.2: verifies that the tree of `size1` with `root1` is a prefix of the tree of
    /// `size2` with `root2`. A proof from the empty tree proves nothing and is refused.
    public static func verifyConsistency(size1: UInt64, size2: UInt64, root1: MerkleHash, root2: MerkleHash, proof: [MerkleHash]) throws(MerkleProofError) {
        guard size1 <= size2 else { throw MerkleProofError("size1 \(size1) is larger than size2 \(size2)") }
        guard size1 > 0 else { throw MerkleProofError("a consistency proof from the empty tree proves nothing") }
        if size1 == size2 {
            guard proof.isEmpty else { throw MerkleProofError("equal sizes need an empty proof") }
            guard root1 == root2 else { throw MerkleProofError("equal sizes but different roots: the log forked") }
            return
        }
        guard !proof.isEmpty else { throw MerkleProofError("the consistency proof is empty") }
        var path = proof
        if size1 & (size1 - 1) == 0 { path.insert(root1, at: 0) }  // size1 is a power of two
        var fn = size1 - 1, sn = size2 - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = path[0], sr = path[0]
        for c in path.dropFirst() {
            guard sn != 0 else { throw MerkleProofError("the consistency proof is too long") }
            if fn & 1 == 1 || fn == sn {
                fr = nodeHash(c, fr)
                sr = nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0, fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                sr = nodeHash(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else { throw MerkleProofError("the consistency proof is too short") }
        guard fr == root1 else { throw MerkleProofError("the consistency proof does not lead to root1 \(root1)") }
        guard sr == root2 else { throw MerkleProofError("the consistency proof does not lead to root2 \(root2)") }
    }
}

/// The perfect subtrees covering leaves [0, n), largest first: enough to extend the tree one leaf
/// at a time and to read its root, in O(log n) memory.
public struct CompactRange: Sendable {
    var hashes: [MerkleHash] = []
    var sizes: [UInt64] = []
    public private(set) var count: UInt64 = 0

    public init() {}

    public mutating func append(_ leaf: MerkleHash) {
        var h = leaf, size: UInt64 = 1
        while let last = sizes.last, last == size {
            h = Merkle.nodeHash(hashes.removeLast(), h)
            sizes.removeLast()
            size <<= 1
        }
        hashes.append(h)
        sizes.append(size)
        count += 1
    }

    /// MTH of everything appended so far.
    public var root: MerkleHash {
        guard var h = hashes.last else { return Merkle.emptyRoot }
        for i in stride(from: hashes.count - 2, through: 0, by: -1) { h = Merkle.nodeHash(hashes[i], h) }
        return h
    }
}
