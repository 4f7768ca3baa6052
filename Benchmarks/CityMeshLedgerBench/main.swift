import CityMeshCore
import CityMeshStore
import Crypto
import Foundation
import GRDB

// Ledger benchmarks (Benchmarks/ledger-vs-openssl.sh runs them next to `openssl speed`):
//   append    durable appends (fsync'd group commit) from 64 concurrent writers, and from one
//   verify    `audit verify` of a 1,000,000-entry log: every leaf and the whole tree recomputed
//   proofs    inclusion proof verifications against a verified checkpoint
// Usage: citymesh-ledger-bench [append|verify|proofs|all] [--entries N]

let args = CommandLine.arguments.dropFirst()
let which = args.first { !$0.hasPrefix("--") } ?? "all"
let verifyEntries = args.firstIndex(of: "--entries").flatMap { Int(args[args.index(after: $0)]) } ?? 1_000_000

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func freshStore() throws -> NodeStore {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-ledger-bench-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return try NodeStore(path: dir + "/citymesh.db", createFor: try CitySlug("hangzhou"))
}

func entry(_ i: Int) -> LedgerEntry {
    LedgerEntry(
        time: "2026-11-29T08:00:00.000000Z", kind: LedgerEntry.Kind.recordWritten, actor: "token:0badcafe", dataset: "hangzhou/air-quality",
        counts: ["written": 1, "unchanged": 0], hashes: ["key.sha256": String(repeating: "ab", count: 32)])
}

let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())

if which == "append" || which == "all" {
    for writers in [64, 1] {
        let store = try freshStore()
        let ledger = LedgerStore(store: store)
        let n = writers == 1 ? 2_000 : 50_000
        let elapsed: Double = try await withThrowingTaskGroup(of: Double?.self) { group in
            group.addTask { await ledger.runWriter(); return nil }
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { w in
                for t in 0..<writers {
                    w.addTask { for i in stride(from: t, to: n, by: writers) { _ = try await ledger.append(entry(i)) } }
                }
                try await w.waitForAll()
            }
            let s = seconds(ContinuousClock.now - start)
            ledger.finish()
            for try await _ in group {}
            return s
        }
        print(String(format: "durable appends (fsync'd), %2d concurrent writers  %9.0f entries/s  (%d in %.2f s)", writers, Double(n) / elapsed, n, elapsed))
        try store.close()
    }
}

if which == "verify" || which == "all" {
    let store = try freshStore()
    let ledger = LedgerStore(store: store)
    // Setup (not timed): the log written directly, then one signed checkpoint of all of it.
    var range = CompactRange()
    try await store.pool.write { db in
        let insert = try db.makeStatement(sql: "INSERT INTO ledger (idx, entry, leaf, kind, time) VALUES (?, ?, ?, ?, ?)")
        for i in 0..<verifyEntries {
            var e = entry(i)
            e.index = UInt64(i)
            let bytes = try e.encoded()
            let leaf = Merkle.leafHash(bytes)
            range.append(leaf)
            try insert.execute(arguments: [i, Data(bytes), Data(leaf.bytes), e.kind, e.time])
        }
    }
    let cp = Checkpoint(origin: signer.verifier.name, size: range.count, root: range.root)
    try await ledger.saveCheckpoint(size: cp.size, note: try signer.sign(cp.text), createdAt: "t")
    var best = Double.infinity
    for _ in 0..<3 {
        let start = ContinuousClock.now
        let report = try await ledger.audit(verifier: signer.verifier)
        best = min(best, seconds(ContinuousClock.now - start))
        guard report.ok else { fatalError("audit failed: \(report.problem ?? "")") }
    }
    print(String(format: "audit verify of %d entries (read, hash, tree, check) %9.2f s    (best of 3; %.0f entries/s)", verifyEntries, best, Double(verifyEntries) / best))
    // Proofs served from the stored levels: the first one loads the levels (one read of every
    // leaf hash), the rest read at most one block of 256 leaves each.
    let size = UInt64(verifyEntries)
    var start = ContinuousClock.now
    _ = try await ledger.inclusionProof(index: 0, size: size)
    let load = seconds(ContinuousClock.now - start)
    let proofCount = 2_000
    start = ContinuousClock.now
    for i in 0..<proofCount {
        let index = UInt64(i) &* 7_919 % size
        let p = try await ledger.inclusionProof(index: index, size: size)
        if i == 0 { try Merkle.verifyInclusion(leaf: p.leaf, index: index, size: size, proof: p.proof, root: cp.root) }
    }
    let each = seconds(ContinuousClock.now - start) / Double(proofCount)
    print(String(format: "inclusion proofs served from the store (%d entries)    %9.0f proofs/s  (%.0f µs each; levels loaded once in %.2f s)", verifyEntries, 1 / each, each * 1e6, load))
    try store.close()
}

if which == "proofs" || which == "all" {
    let n = 1 << 17
    let leaves = (0..<n).map { i in Merkle.leafHash(withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) }) }
    let root = Merkle.root(leaves)
    var rng = SystemRandomNumberGenerator()
    let proofs = try (0..<100).map { _ -> (Int, [MerkleHash]) in
        let i = Int.random(in: 0..<n, using: &rng)
        return (i, try Merkle.inclusionProof(index: i, leaves: leaves[...]))
    }
    let rounds = 1_000
    var best = Double.infinity
    for _ in 0..<3 {
        let start = ContinuousClock.now
        for _ in 0..<rounds {
            for (i, p) in proofs { try Merkle.verifyInclusion(leaf: leaves[i], index: UInt64(i), size: UInt64(n), proof: p, root: root) }
        }
        best = min(best, seconds(ContinuousClock.now - start))
    }
    let count = rounds * proofs.count
    print(String(format: "inclusion proof verifications (tree of 2^17, 17 hashes) %9.0f proofs/s  (best of 3, %d each)", Double(count) / best, count))
    let hashes = 1_000_000
    var h = leaves[0]
    let start = ContinuousClock.now
    for _ in 0..<hashes { h = Merkle.nodeHash(h, h) }
    let s = seconds(ContinuousClock.now - start)
    print(String(format: "node hashes SHA-256(0x01||l||r), 65 bytes each        %9.0f hashes/s  (%@)", Double(hashes) / s, String(h.hex.prefix(8)) as NSString))
}
