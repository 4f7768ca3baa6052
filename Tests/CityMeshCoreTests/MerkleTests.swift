import Foundation
import Testing
@testable import CityMeshCore

/// The RFC 6962 test tree: the eight leaves used by Certificate Transparency's and
/// transparency-dev's test suites, whose roots the vectors below are built on.
let rfc6962Leaves: [[UInt8]] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"].map { hex in
    stride(from: 0, to: hex.count, by: 2).map { UInt8(hex.dropFirst($0).prefix(2), radix: 16)! }
}

/// The known-answer vectors in Fixtures/rfc6962 (from transparency-dev/merkle's testdata,
/// Apache License 2.0; see Fixtures/rfc6962/README.md).
enum Vectors {
    static var root: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/rfc6962") }

    static func all(_ kind: String) throws -> [(name: String, json: [String: Any])] {
        let base = root.appendingPathComponent(kind)
        let files = FileManager.default.enumerator(atPath: base.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".json") }.sorted() ?? []
        return try files.map { f in
            let data = try Data(contentsOf: base.appendingPathComponent(f))
            return (f, try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:])
        }
    }

    static func bytes(_ v: Any?) -> [UInt8]? { (v as? String).flatMap { Data(base64Encoded: $0) }.map { Array($0) } }
    static func rawProof(_ v: Any?) -> [[UInt8]]? {
        guard let list = v as? [String] else { return v == nil || v is NSNull ? [] : nil }
        let items = list.compactMap { bytes($0) }
        return items.count == list.count ? items : nil
    }
    static func hash(_ v: Any?) -> MerkleHash? { (v as? String).flatMap { MerkleHash(base64: $0) } }
    static func proof(_ v: Any?) -> [MerkleHash]? {
        guard let list = v as? [String] else { return v == nil || v is NSNull ? [] : nil }
        let hashes = list.compactMap { MerkleHash(base64: $0) }
        return hashes.count == list.count ? hashes : nil
    }
}

@Suite("Merkle tree (RFC 6962 / RFC 9162)")
struct MerkleTests {
    static let leafHashes = rfc6962Leaves.map { Merkle.leafHash($0) }

    @Test("roots of the RFC 6962 test tree")
    func knownRoots() {
        #expect(Merkle.root([MerkleHash]()) == Merkle.emptyRoot)
        #expect(Merkle.emptyRoot.hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Merkle.root(Self.leafHashes.prefix(1)).hex == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        #expect(Merkle.root(Self.leafHashes.prefix(3)).hex == "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77")
        #expect(Merkle.root(Self.leafHashes).hex == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    }

    @Test("every inclusion vector: accepted exactly when it should be, and our proofs match the good ones")
    func inclusionVectors() throws {
        let vectors = try Vectors.all("inclusion")
        #expect(vectors.count > 50)
        var rejected = 0
        for (name, v) in vectors {
            let wantErr = v["wantErr"] as? Bool ?? false
            var ok = false
            if let index = v["leafIdx"] as? Int, let size = v["treeSize"] as? Int, index >= 0, size >= 0,
                let root = Vectors.hash(v["root"]), let leaf = Vectors.hash(v["leafHash"]), let proof = Vectors.proof(v["proof"])
            {
                ok = (try? Merkle.verifyInclusion(leaf: leaf, index: UInt64(index), size: UInt64(size), proof: proof, root: root)) != nil
                if !wantErr, size <= 8, leaf == Self.leafHashes[index] {
                    #expect(try Merkle.inclusionProof(index: index, leaves: Self.leafHashes.prefix(size)[...]) == proof, "\(name)")
                }
            }
            #expect(ok == !wantErr, "\(name): \(v["desc"] ?? "")")
            if wantErr { rejected += 1 }
        }
        #expect(rejected > 30)
    }

    @Test("every consistency vector: accepted exactly when it should be, and our proofs match the good ones")
    func consistencyVectors() throws {
        let vectors = try Vectors.all("consistency")
        #expect(vectors.count > 50)
        for (name, v) in vectors {
            let wantErr = v["wantErr"] as? Bool ?? false
            var ok = false
            if let s1 = v["size1"] as? Int, let s2 = v["size2"] as? Int, s1 >= 0, s2 >= 0,
                let r1 = Vectors.bytes(v["root1"]), let r2 = Vectors.bytes(v["root2"]), let raw = Vectors.rawProof(v["proof"])
            {
                ok = (try? Merkle.verifyConsistency(size1: UInt64(s1), size2: UInt64(s2), root1: r1, root2: r2, proof: raw)) != nil
                if !wantErr, s2 <= 8, s1 > 0, s1 < s2, MerkleHash(r2) == Merkle.root(Self.leafHashes.prefix(s2)) {
                    #expect(try Merkle.consistencyProof(size1: s1, leaves: Self.leafHashes.prefix(s2)[...]).map(\.bytes) == raw, "\(name)")
                }
            }
            #expect(ok == !wantErr, "\(name): \(v["desc"] ?? "")")
        }
    }

    @Test("stored levels give the same roots and proofs as the leaves, with any lowest level kept", arguments: [0, 1, 3, 8])
    func levels(base: Int) throws {
        var rng = SeededRNG(seed: UInt64(9162 + base))
        for n in [1, 2, 3, 7, 8, 9, 255, 256, 257, 600] {
            let leaves = (0..<n).map { i in Merkle.leafHash(withUnsafeBytes(of: UInt64(i &* 31).bigEndian) { Array($0) }) }
            var levels = MerkleLevels(base: base)
            var fetches = 0
            // The leaf source counts its calls and refuses ranges that span a block.
            let source: (Range<UInt64>) throws -> [MerkleHash] = { r in
                fetches += 1
                #expect(base > 0 && r.lowerBound >> base == (r.upperBound - 1) >> base, "asked for \(r) across blocks of 2^\(base)")
                return Array(leaves[Int(r.lowerBound)..<Int(r.upperBound)])
            }
            for (i, l) in leaves.enumerated() {
                levels.append(l)
                #expect(try levels.root(size: UInt64(i + 1), leaves: source) == Merkle.root(leaves.prefix(i + 1)))
            }
            if base == 0 { #expect(MerkleLevels(leaves: leaves, workers: 2).levels.map(\.count) == levels.levels.map(\.count)) }
            for _ in 0..<20 {
                let size = Int.random(in: 1...n, using: &rng), index = Int.random(in: 0..<size, using: &rng)
                #expect(try levels.inclusionProof(index: UInt64(index), size: UInt64(size), leaves: source) == Merkle.inclusionProof(index: index, leaves: leaves.prefix(size)[...]))
                let from = Int.random(in: 1...size, using: &rng)
                #expect(try levels.consistencyProof(size1: UInt64(from), size2: UInt64(size), leaves: source) == Merkle.consistencyProof(size1: from, leaves: leaves.prefix(size)[...]))
            }
            #expect(throws: MerkleProofError.self) { try levels.inclusionProof(index: UInt64(n), size: UInt64(n), leaves: source) }
            #expect(throws: MerkleProofError.self) { try levels.root(size: UInt64(n + 1), leaves: source) }
            #expect(throws: MerkleProofError.self) { try levels.consistencyProof(size1: 0, size2: UInt64(n), leaves: source) }
            if base == 0 { #expect(fetches == 0) }
        }
        // A large tree: levels hashed on two threads equal the one-at-a-time build.
        let big = (0..<100_003).map { i in Merkle.leafHash(withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) }) }
        let parallel = MerkleLevels(leaves: big, workers: 2)
        #expect(try parallel.root(size: 100_003) == Merkle.root(big))
        #expect(try parallel.root(size: 65_537) == Merkle.root(big.prefix(65_537)))
    }

    @Test("property: every inclusion and consistency proof of random trees verifies, and any flipped bit fails")
    func properties() throws {
        var rng = SeededRNG(seed: 6962)
        for _ in 0..<40 {
            let n = Int.random(in: 1...300, using: &rng)
            let leaves = (0..<n).map { i in Merkle.leafHash(withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) }) }
            var range = CompactRange()
            var roots: [MerkleHash] = [Merkle.emptyRoot]
            for l in leaves {
                range.append(l)
                roots.append(range.root)
            }
            #expect(roots[n] == Merkle.root(leaves))
            for _ in 0..<10 {
                let size = Int.random(in: 1...n, using: &rng)
                let index = Int.random(in: 0..<size, using: &rng)
                let proof = try Merkle.inclusionProof(index: index, leaves: leaves.prefix(size)[...])
                try Merkle.verifyInclusion(leaf: leaves[index], index: UInt64(index), size: UInt64(size), proof: proof, root: roots[size])
                if !proof.isEmpty {
                    var bad = proof
                    let i = Int.random(in: 0..<bad.count, using: &rng)
                    var bytes = bad[i].bytes
                    let bit = Int.random(in: 0..<256, using: &rng)
                    bytes[bit / 8] ^= 1 << (bit % 8)
                    bad[i] = MerkleHash(bytes)!
                    #expect(throws: MerkleProofError.self) {
                        try Merkle.verifyInclusion(leaf: leaves[index], index: UInt64(index), size: UInt64(size), proof: bad, root: roots[size])
                    }
                }
                #expect(throws: MerkleProofError.self) {
                    try Merkle.verifyInclusion(leaf: leaves[index], index: UInt64(index), size: UInt64(size), proof: proof, root: roots[size - 1])
                }
                let from = Int.random(in: 1...size, using: &rng)
                let cproof = try Merkle.consistencyProof(size1: from, leaves: leaves.prefix(size)[...])
                try Merkle.verifyConsistency(size1: UInt64(from), size2: UInt64(size), root1: roots[from], root2: roots[size], proof: cproof)
                if from < size {
                    var bad = cproof
                    let i = Int.random(in: 0..<bad.count, using: &rng)
                    var bytes = bad[i].bytes
                    bytes[Int.random(in: 0..<32, using: &rng)] ^= 0x01
                    bad[i] = MerkleHash(bytes)!
                    #expect(throws: MerkleProofError.self) {
                        try Merkle.verifyConsistency(size1: UInt64(from), size2: UInt64(size), root1: roots[from], root2: roots[size], proof: bad)
                    }
                }
            }
        }
    }
}
