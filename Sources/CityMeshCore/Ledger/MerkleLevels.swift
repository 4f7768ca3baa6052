import Foundation

/// The stored levels of a Merkle tree: level `j` holds the hashes of the complete subtrees of
/// 2^j leaves that start at multiples of 2^j. With them the root of any prefix and any RFC 9162
/// proof cost O(log² n) hashes instead of O(n).
///
/// Levels below `base` are not kept (a node keeps levels from 8 up: a quarter of a byte per
/// entry); the leaves they need are asked for, one block of at most 2^base at a time.
public struct MerkleLevels: Sendable {
    /// The lowest level kept.
    public let base: Int
    /// `levels[i]` is level `base + i`.
    var levels: [[MerkleHash]]
    /// Leaves appended since the last complete block of 2^base (kept only when base > 0).
    var tail: [MerkleHash] = []
    public private(set) var count: UInt64 = 0

    /// Empty, keeping levels from `base` up.
    public init(base: Int) {
        precondition(base >= 0 && base < 32)
        self.base = base
        levels = [[]]
    }

    /// All levels over `leaves` (base 0), hashing each level on up to `workers` threads at once.
    public init(leaves: [MerkleHash], workers: Int = 1) {
        base = 0
        count = UInt64(leaves.count)
        levels = [leaves]
        while let below = levels.last, below.count > 1 {
            levels.append(Self.pairUp(below, workers: workers))
        }
    }

    /// Hashes adjacent pairs; an odd last hash waits for its sibling.
    static func pairUp(_ below: [MerkleHash], workers: Int) -> [MerkleHash] {
        let n = below.count / 2
        guard n > 0 else { return [] }
        return [MerkleHash](unsafeUninitializedCapacity: n) { out, initialized in
            below.withUnsafeBufferPointer { b in
                let src = SendableReadBuffer(b)
                let parts = n >= 8192 ? max(1, workers) : 1
                let dst = SendableBuffer(out)
                DispatchQueue.concurrentPerform(iterations: parts) { part in
                    let lo = n * part / parts, hi = n * (part + 1) / parts
                    for i in lo..<hi {
                        dst.buffer.initializeElement(at: i, to: Merkle.nodeHash(src.buffer[2 * i], src.buffer[2 * i + 1]))
                    }
                }
            }
            initialized = n
        }
    }

    /// Adds the next leaf.
    public mutating func append(_ leaf: MerkleHash) {
        count += 1
        var h = leaf
        if base > 0 {
            tail.append(leaf)
            guard tail.count == 1 << base else { return }
            h = Merkle.root(tail)
            tail.removeAll(keepingCapacity: true)
        }
        var level = 0
        while true {
            if levels.count == level { levels.append([]) }
            levels[level].append(h)
            guard levels[level].count % 2 == 0 else { return }
            let n = levels[level].count
            h = Merkle.nodeHash(levels[level][n - 2], levels[level][n - 1])
            level += 1
        }
    }

    /// Leaves `[lo, hi)` of a block below `base`: from the tail if they are there, else from `leaves`.
    func blockLeaves(_ lo: UInt64, _ hi: UInt64, _ leaves: (Range<UInt64>) throws -> [MerkleHash]) throws -> [MerkleHash] {
        let tailStart = count - UInt64(tail.count)
        if lo >= tailStart { return Array(tail[Int(lo - tailStart)..<Int(hi - tailStart)]) }
        let got = try leaves(lo..<hi)
        guard got.count == Int(hi - lo) else { throw MerkleProofError("the store returned \(got.count) leaves for \(lo)..<\(hi)") }
        return got
    }

    /// MTH of leaves `[lo, hi)`, from the stored levels where they cover it.
    func subtree(_ lo: UInt64, _ hi: UInt64, _ leaves: (Range<UInt64>) throws -> [MerkleHash]) throws -> MerkleHash {
        let n = hi - lo
        if n & (n - 1) == 0, lo % n == 0 {
            let j = n.trailingZeroBitCount
            if j >= base, j - base < levels.count, Int(lo >> j) < levels[j - base].count { return levels[j - base][Int(lo >> j)] }
        }
        if base > 0, n <= 1 << base, lo >> base == (hi - 1) >> base {
            return Merkle.root(try blockLeaves(lo, hi, leaves))
        }
        let k = UInt64(Merkle.split(Int(n)))
        return Merkle.nodeHash(try subtree(lo, lo + k, leaves), try subtree(lo + k, hi, leaves))
    }

    /// The default leaf source: none (every level is kept).
    public static func noLeaves(_ r: Range<UInt64>) throws -> [MerkleHash] {
        throw MerkleProofError("leaves \(r) are needed but were not given")
    }

    /// MTH of the first `size` leaves.
    public func root(size: UInt64, leaves: (Range<UInt64>) throws -> [MerkleHash] = MerkleLevels.noLeaves) throws -> MerkleHash {
        guard size <= count else { throw MerkleProofError("the tree has \(count) leaves, not \(size)") }
        return size == 0 ? Merkle.emptyRoot : try subtree(0, size, leaves)
    }

    /// RFC 9162 §2.1.3.1: the inclusion proof of leaf `index` in the tree of the first `size` leaves.
    public func inclusionProof(index: UInt64, size: UInt64, leaves: (Range<UInt64>) throws -> [MerkleHash] = MerkleLevels.noLeaves) throws -> [MerkleHash] {
        guard size <= count else { throw MerkleProofError("the tree has \(count) leaves, not \(size)") }
        guard index < size else { throw MerkleProofError("leaf index \(index) is not in a tree of size \(size)") }
        var lo: UInt64 = 0, hi = size
        var siblings: [MerkleHash] = []
        while hi - lo > 1 {
            let k = UInt64(Merkle.split(Int(hi - lo)))
            if index < lo + k {
                siblings.append(try subtree(lo + k, hi, leaves))
                hi = lo + k
            } else {
                siblings.append(try subtree(lo, lo + k, leaves))
                lo += k
            }
        }
        return siblings.reversed()
    }

    /// RFC 9162 §2.1.4.1: the consistency proof from the first `size1` leaves to the first `size2`.
    public func consistencyProof(size1: UInt64, size2: UInt64, leaves: (Range<UInt64>) throws -> [MerkleHash] = MerkleLevels.noLeaves) throws -> [MerkleHash] {
        guard size2 <= count else { throw MerkleProofError("the tree has \(count) leaves, not \(size2)") }
        guard size1 > 0, size1 <= size2 else { throw MerkleProofError("no consistency proof from size \(size1) to size \(size2): need 0 < size1 ≤ size2") }
        var out: [MerkleHash] = []
        // SUBPROOF(m, D[lo:hi], b), unrolled: the hashes are appended deepest first.
        var suffix: [MerkleHash] = []
        var m = size1, lo: UInt64 = 0, hi = size2, b = true
        while true {
            let n = hi - lo
            if m == n {
                if !b { out.append(try subtree(lo, hi, leaves)) }
                break
            }
            let k = UInt64(Merkle.split(Int(n)))
            if m <= k {
                suffix.append(try subtree(lo + k, hi, leaves))
                hi = lo + k
            } else {
                suffix.append(try subtree(lo, lo + k, leaves))
                m -= k
                lo += k
                b = false
            }
        }
        out.append(contentsOf: suffix.reversed())
        return out
    }
}

/// A buffer written at disjoint indices from several threads.
struct SendableBuffer<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ b: UnsafeMutableBufferPointer<T>) { buffer = b }
}

struct SendableReadBuffer<T>: @unchecked Sendable {
    let buffer: UnsafeBufferPointer<T>
    init(_ b: UnsafeBufferPointer<T>) { buffer = b }
}
