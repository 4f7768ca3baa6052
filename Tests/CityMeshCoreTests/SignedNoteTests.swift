import Crypto
import Foundation
import Testing
@testable import CityMeshCore

/// C2SP signed-note and tlog-checkpoint. The PeterNeumann key and note are the reference
/// implementation's published example (golang.org/x/mod/sumdb/note).
@Suite("Signed notes and checkpoints (C2SP)")
struct SignedNoteTests {
    static let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    static let seed = Data(base64Encoded: "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")!.dropFirst()  // after the 0x01 type byte
    static let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    static let note = text + "\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

    static func signer() throws -> NoteSigner {
        try NoteSigner(name: "PeterNeumann", key: try Curve25519.Signing.PrivateKey(rawRepresentation: seed))
    }

    @Test("the reference example: same verifier key, same key ID, byte-identical note, and it verifies")
    func knownAnswer() throws {
        let s = try Self.signer()
        #expect(s.verifier.vkey == Self.vkey)
        #expect(s.verifier.keyID == 0xc74f20a3)
        #expect(try s.sign(Self.text) == Self.note)
        let parsed = try SignedNote(parsing: Self.note)
        #expect(parsed.text == Self.text)
        #expect(try parsed.verify([try NoteVerifier(vkey: Self.vkey)]).map(\.name) == ["PeterNeumann"])
    }

    @Test("rejections: wrong key, altered text, bad base64, extra lines, malformed notes and keys")
    func rejections() throws {
        let good = try NoteVerifier(vkey: Self.vkey)
        let other = try NoteSigner(name: "PeterNeumann", key: Curve25519.Signing.PrivateKey())
        // Same name, other key: its key ID differs, so the signature is from an unknown key.
        #expect(throws: NoteError.self) { try SignedNote(parsing: Self.note).verify([other.verifier]) }
        // A known key whose signature fails rejects the note.
        let altered = Self.note.replacingOccurrences(of: "answer", with: "Answer")
        #expect(throws: NoteError.self) { try SignedNote(parsing: altered).verify([good]) }
        let badBase64 = Self.note.replacingOccurrences(of: "x08go/", with: "x08go*")
        #expect(throws: NoteError.self) { try SignedNote(parsing: badBase64) }
        for bad in [
            Self.note + "trailing line\n",
            Self.note + "\n",
            Self.note.replacingOccurrences(of: "\n\n", with: "\n"),  // no blank line
            String(Self.note.dropLast()),  // no final newline
            Self.note.replacingOccurrences(of: "\u{2014} ", with: "- "),  // not an em dash
            Self.note.replacingOccurrences(of: "PeterNeumann x08", with: "Peter+Neumann x08"),  // '+' in a name
            Self.text + "\n",  // no signatures
            Self.note.replacingOccurrences(of: "problem,", with: "problem,\u{7}"),  // control character
            Self.text + "\n\u{2014} PeterNeumann AAAA\n",  // too short to hold a key ID and signature
        ] {
            #expect(throws: NoteError.self, "\(bad.debugDescription)") { try SignedNote(parsing: bad).verify([good]) }
        }
        // Unknown keys are ignored, but one trusted signature is required.
        let twice = Self.note + "\u{2014} someone.else AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
        #expect(try SignedNote(parsing: twice).verify([good]).count == 1)
        #expect(throws: NoteError.self) { try SignedNote(parsing: Self.note).verify([]) }
        // Base64 may hold '+': a key ending in one still parses.
        let plusKey = try NoteVerifier(name: "k", publicKey: Curve25519.Signing.PublicKey(rawRepresentation: [UInt8](repeating: 0xFB, count: 32)))
        #expect(plusKey.vkey.split(separator: "+").count > 3)
        #expect(try NoteVerifier(vkey: plusKey.vkey) == plusKey)
        for vkey in ["PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "PeterNeumann+c74f20a3", "PeterNeumann+c74f20a3+ABpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                     "PeterNeumann+c74f2+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"] {
            #expect(throws: NoteError.self, "\(vkey)") { try NoteVerifier(vkey: vkey) }
        }
    }

    @Test("checkpoints: round trip through a signed note, and malformed bodies are refused")
    func checkpoints() throws {
        let key = try NoteSigner(name: "ledger.hangzhou.citymesh", key: Curve25519.Signing.PrivateKey())
        let root = Merkle.root(rfc6962Leaves.map { Merkle.leafHash($0) })
        let cp = Checkpoint(origin: "ledger.hangzhou.citymesh", size: 8, root: root)
        #expect(cp.text == "ledger.hangzhou.citymesh\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n")
        let signed = try key.sign(cp.text)
        #expect(try Checkpoint.verify(signedNote: signed, key: key.verifier) == cp)
        // Signed by the right key but for another origin.
        let foreign = try key.sign(Checkpoint(origin: "other.log", size: 8, root: root).text)
        #expect(throws: NoteError.self) { try Checkpoint.verify(signedNote: foreign, key: key.verifier) }
        for bad in ["o\n8\n", "o\n08\n\(root.base64)\n", "o\n-1\n\(root.base64)\n", "o\n8\nAAAA\n", "\n8\n\(root.base64)\n", "o\n8\n\(root.base64)\n\n", "o\n8\n\(root.base64)"] {
            #expect(throws: NoteError.self, "\(bad.debugDescription)") { try Checkpoint(text: bad) }
        }
        #expect(try Checkpoint(text: "o\n0\n\(Merkle.emptyRoot.base64)\n").size == 0)
        #expect(try Checkpoint(text: "o\n8\n\(root.base64)\next one\n").extensions == ["ext one"])
    }
}

@Suite("Ledger entries")
struct LedgerEntryTests {
    @Test("the top-level index is read straight from the bytes, never from nested objects or strings")
    func indexScan() throws {
        var e = LedgerEntry(
            index: 41, time: "t", kind: "k", actor: "a", counts: ["index": 7, "a": 1], hashes: ["x": #"\"index\":9"#], detail: #"{"index":8}"#)
        #expect(LedgerEntry.index(in: try e.encoded()) == 41)
        e.index = 0
        #expect(LedgerEntry.index(in: try e.encoded()) == 0)
        e.index = .max
        #expect(LedgerEntry.index(in: try e.encoded()) == .max)
        #expect(LedgerEntry.index(in: Array(#"{"counts":{"index":3}}"#.utf8)) == nil)
        #expect(LedgerEntry.index(in: Array(#"{"a":1,"index":12}"#.utf8)) == 12)
        #expect(LedgerEntry.index(in: Array("garbage".utf8)) == nil)
        #expect(try LedgerEntry.decode(try e.encoded()) == e)
    }
}
