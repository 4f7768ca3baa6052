import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
@testable import CityMeshCore

/// Witness cosignatures (C2SP tlog-cosignature/v1): the format, an independent check by the real
/// openssl, every alteration refused, and witnessed checkpoints in evidence bundles.
@Suite("Cosignatures")
struct CosignatureTests {
    static let text = "hangzhou.citymesh/ledger\n42\n" + MerkleHash(Array(repeating: 7, count: 32))!.base64 + "\n"

    @Test("a cosignature line has the key ID of type 0x04, a big-endian timestamp and 64 signature bytes")
    func format() throws {
        let key = Curve25519.Signing.PrivateKey()
        let cosigner = try Cosigner(name: Cosignature.witnessName(try CitySlug("suzhou")), key: key)
        let c = try cosigner.cosign(checkpointText: Self.text, timestamp: 1_679_315_147)
        #expect(c.line.hasPrefix("\u{2014} suzhou.citymesh/witness "))
        let raw = try #require(Data(base64Encoded: String(c.line.dropFirst("\u{2014} suzhou.citymesh/witness ".count).dropLast())))
        #expect(raw.count == 4 + 8 + 64)
        let expectedID = Array(SHA256.hash(data: Array("suzhou.citymesh/witness".utf8) + [0x0A, 0x04] + Array(key.publicKey.rawRepresentation)).prefix(4))
        #expect(Array(raw.prefix(4)) == expectedID)
        #expect(Array(raw[4..<12]) == [0, 0, 0, 0, 0x64, 0x18, 0x50, 0xCB], "1679315147 as a big-endian u64, as in the spec's example")
        // The log key and the witness key differ in key ID, so neither verifies as the other.
        let logKey = try NoteVerifier(name: "suzhou.citymesh/witness", publicKey: key.publicKey)
        #expect(logKey.keyID != cosigner.key.keyID)
        #expect(Cosignature.message(checkpointText: Self.text, timestamp: 1_679_315_147) == Array(("cosignature/v1\ntime 1679315147\n" + Self.text).utf8))
        // Parsed back, it verifies; its vkey round-trips.
        let parsed = try Cosignature(line: c.line)
        #expect(parsed == c)
        try parsed.verify(checkpointText: Self.text, key: try CosignerKey(vkey: cosigner.key.vkey))
    }

    @Test("the real openssl verifies a cosignature over the cosignature/v1 message with the witness's key")
    func openssl() throws {
        let key = Curve25519.Signing.PrivateKey()
        let c = try Cosigner(name: "suzhou.citymesh/witness", key: key).cosign(checkpointText: Self.text, timestamp: 1_780_000_000)
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): a fixed 12-byte prefix and the key.
        let spki = Data([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]) + key.publicKey.rawRepresentation
        try "-----BEGIN PUBLIC KEY-----\n\(spki.base64EncodedString())\n-----END PUBLIC KEY-----\n"
            .write(to: dir.appendingPathComponent("witness.pub"), atomically: true, encoding: .utf8)
        try Data("cosignature/v1\ntime 1780000000\n\(Self.text)".utf8).write(to: dir.appendingPathComponent("message"))
        try Data(c.signature).write(to: dir.appendingPathComponent("sig"))
        let ok = try runOpenSSL(["pkeyutl", "-verify", "-pubin", "-inkey", "witness.pub", "-rawin", "-in", "message", "-sigfile", "sig"], in: dir)
        #expect(ok.output.contains("Signature Verified Successfully"), "\(ok.output)")
        // The same signature over the checkpoint alone (what a log signature covers) does not verify.
        try Data(Self.text.utf8).write(to: dir.appendingPathComponent("text"))
        let bad = try runOpenSSL(["pkeyutl", "-verify", "-pubin", "-inkey", "witness.pub", "-rawin", "-in", "text", "-sigfile", "sig"], in: dir, mustSucceed: false)
        #expect(bad.status != 0, "\(bad.output)")
    }

    @Test("rejections: altered checkpoint or timestamp, another witness's key, a log key as a cosigner key, malformed lines")
    func rejections() throws {
        let key = Curve25519.Signing.PrivateKey()
        let cosigner = try Cosigner(name: "suzhou.citymesh/witness", key: key)
        let c = try cosigner.cosign(checkpointText: Self.text, timestamp: 1_780_000_000)
        #expect(throws: NoteError.self) { try c.verify(checkpointText: Self.text.replacingOccurrences(of: "42", with: "43"), key: cosigner.key) }
        let moved = Cosignature(witness: c.witness, keyID: c.keyID, timestamp: c.timestamp + 1, signature: c.signature)
        #expect(throws: NoteError.self) { try moved.verify(checkpointText: Self.text, key: cosigner.key) }
        let other = try CosignerKey(name: "suzhou.citymesh/witness", publicKey: Curve25519.Signing.PrivateKey().publicKey)
        #expect(throws: NoteError.self) { try c.verify(checkpointText: Self.text, key: other) }
        let renamed = try CosignerKey(name: "shanghai.citymesh/witness", publicKey: key.publicKey)
        #expect(throws: NoteError.self) { try c.verify(checkpointText: Self.text, key: renamed) }
        let logVKey = try NoteVerifier(name: "suzhou.citymesh/witness", publicKey: key.publicKey).vkey
        #expect { try CosignerKey(vkey: logVKey) } throws: { "\($0)".contains("not a cosignature key") }
        // A log signature (64 bytes) is not a cosignature; nor is garbage.
        let logNote = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey()).sign(Self.text)
        let logLine = String(logNote.split(separator: "\n").last!)
        #expect { try Cosignature(line: logLine) } throws: { "\($0)".contains("72 bytes") }
        for bad in ["", "— x", "- suzhou.citymesh/witness AAAA", "— suzhou.citymesh/witness !!!", "— a b c"] {
            #expect(throws: NoteError.self, "\(bad)") { try Cosignature(line: bad) }
        }
        // In a note: unknown keys are skipped, a known key that fails is an error.
        let note = try SignedNote(parsing: logNote + c.line)
        #expect(try Cosignature.verified(in: note, by: [cosigner.key]) == [c])
        #expect(try Cosignature.verified(in: note, by: [other]).isEmpty)
        let forged = try SignedNote(parsing: logNote + moved.line)
        #expect(throws: NoteError.self) { try Cosignature.verified(in: forged, by: [cosigner.key]) }
    }

    @Test("the wire message carries a cosignature and refuses an oversized line")
    func wire() throws {
        let line = try Cosigner(name: "suzhou.citymesh/witness", key: Curve25519.Signing.PrivateKey()).cosign(checkpointText: Self.text, timestamp: 1).line
        let message = LedgerWire.cosignature(id: 9, size: 42, line: line)
        #expect(try LedgerWire.decode(message.encoded()[...]) == message)
        #expect(!message.isRequest)
        let long = LedgerWire.cosignature(id: 9, size: 42, line: String(repeating: "a", count: 2_000))
        #expect(throws: WireError.self) { try LedgerWire.decode(long.encoded()[...]) }
        #expect(throws: WireError.self) { try LedgerWire.decode(Array(message.encoded().dropLast(3))[...]) }
    }
}
