import Crypto
import Foundation
import Testing
@testable import CityMeshCore

/// C2SP tlog-proof: the layout the spec writes, offline verification, and every rejection.
@Suite("tlog-proof (C2SP)")
struct TLogProofTests {
    /// A signed log of `n` entries and the proof of entry `index` in it.
    static func make(n: Int = 37, index: Int = 21) throws -> (TLogProof, NoteSigner, [[UInt8]]) {
        let signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        let entries = try (0..<n).map { i in
            try LedgerEntry(index: UInt64(i), time: "2026-11-29T08:00:00Z", kind: "record.written", actor: "token:a", counts: ["written": i]).encoded()
        }
        let leaves = entries.map { Merkle.leafHash($0) }
        let cp = Checkpoint(origin: signer.verifier.name, size: UInt64(n), root: Merkle.root(leaves))
        let proof = try Merkle.inclusionProof(index: index, leaves: leaves[...])
        return (TLogProof(extra: entries[index], index: UInt64(index), hashes: proof, checkpoint: try signer.sign(cp.text)), signer, entries)
    }

    @Test("the text is laid out as the spec writes it, and parses back to the same proof")
    func layout() throws {
        let h1 = MerkleHash(SHA256.hash(data: Array("hash1".utf8))), h2 = MerkleHash(SHA256.hash(data: Array("hash2".utf8)))
        let plain = TLogProof(extra: nil, index: 5, hashes: [h1, h2], checkpoint: "test checkpoint\n")
        #expect(plain.text == "c2sp.org/tlog-proof@v1\nindex 5\n\(h1.base64)\n\(h2.base64)\n\ntest checkpoint\n")
        let withExtra = TLogProof(extra: Array("extra information".utf8), index: 10, hashes: [h1], checkpoint: "checkpoint data\n")
        #expect(withExtra.text == "c2sp.org/tlog-proof@v1\nextra ZXh0cmEgaW5mb3JtYXRpb24=\nindex 10\n\(h1.base64)\n\ncheckpoint data\n")
        let empty = TLogProof(extra: nil, index: 0, hashes: [], checkpoint: "checkpoint\n")
        #expect(empty.text == "c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint\n")
        for p in [plain, withExtra, empty] { #expect(try TLogProof(parsing: p.text) == p) }
    }

    @Test("a proof verifies offline with the log's key and yields the entry")
    func verifies() throws {
        let (proof, signer, entries) = try Self.make()
        let parsed = try TLogProof(parsing: proof.text)
        let cp = try parsed.verify(key: signer.verifier)
        #expect(cp.size == 37)
        #expect(try LedgerEntry.decode(parsed.extra!).counts?["written"] == 21)
        // Without extra, the leaf hash must be given.
        var bare = parsed
        bare.extra = nil
        #expect(throws: NoteError.self) { try bare.verify(key: signer.verifier) }
        _ = try bare.verify(key: signer.verifier, leaf: Merkle.leafHash(entries[21]))
        // Every size and index of a small tree.
        for n in 1...9 {
            for i in 0..<n {
                let (p, s, _) = try Self.make(n: n, index: i)
                _ = try TLogProof(parsing: p.text).verify(key: s.verifier)
            }
        }
    }

    @Test("refused: altered entry, flipped proof bit, wrong index, another key, altered checkpoint")
    func refusesAltered() throws {
        let (proof, signer, entries) = try Self.make()
        var p = proof
        p.extra = entries[22]
        #expect(throws: MerkleProofError.self) { try p.verify(key: signer.verifier) }
        p = proof
        var bytes = p.hashes[2].bytes
        bytes[7] ^= 0x10
        p.hashes[2] = MerkleHash(bytes)!
        #expect(throws: MerkleProofError.self) { try p.verify(key: signer.verifier) }
        p = proof
        p.index = 20
        #expect(throws: MerkleProofError.self) { try p.verify(key: signer.verifier) }
        p = proof
        p.hashes.removeLast()
        #expect(throws: MerkleProofError.self) { try p.verify(key: signer.verifier) }
        let other = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        #expect(throws: NoteError.self) { try proof.verify(key: other.verifier) }
        p = proof
        p.checkpoint = p.checkpoint.replacingOccurrences(of: "\n37\n", with: "\n38\n")
        #expect(throws: NoteError.self) { try p.verify(key: signer.verifier) }
    }

    @Test("malformed text is refused with what is wrong", arguments: [
        ("wrong-header\nindex 0\n\ncheckpoint\n", "first line"),
        ("c2sp.org/tlog-proof@v2\nindex 0\n\ncheckpoint\n", "first line"),
        ("c2sp.org/tlog-proof@v1\nindex 0\ncheckpoint\n", "empty line"),
        ("c2sp.org/tlog-proof@v1\nindex 05\n\ncheckpoint\n", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\nindex -1\n\ncheckpoint\n", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\nindex \n\ncheckpoint\n", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n\ncheckpoint\n", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\n\ncheckpoint\n", "index N"),
        ("c2sp.org/tlog-proof@v1\nextra !!!\nindex 0\n\ncheckpoint\n", "extra"),
        ("c2sp.org/tlog-proof@v1\nindex 0\nextra AAAA\n\ncheckpoint\n", "proof line 1"),
        ("c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\ncheckpoint\n", "proof line 1"),
        ("c2sp.org/tlog-proof@v1\nindex 0\n \(String(repeating: "A", count: 43))=\n\ncheckpoint\n", "proof line 1"),
        ("c2sp.org/tlog-proof@v1\nindex 0\n\(String(repeating: "A", count: 42))B=\n\ncheckpoint\n", "proof line 1"),
        ("c2sp.org/tlog-proof@v1\nindex 0\n\n", "checkpoint"),
    ])
    func malformed(text: String, says: String) {
        do {
            _ = try TLogProof(parsing: text)
            Issue.record("accepted: \(text.debugDescription)")
        } catch {
            #expect(error.description.contains(says), "\(error)")
        }
    }
}
