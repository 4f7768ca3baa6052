import Crypto
import Foundation
import Testing
@testable import CityMeshCore

/// P-256 nodes sign checkpoints and policy versions as C2SP signed-note type 0x02 and cosign with
/// the 0xff type CityMesh names: the format, independent checks by the real openssl, and every
/// alteration and confusion between the types refused.
@Suite("P-256 notes and cosignatures")
struct P256NoteTests {
    static let text = "shanghai.citymesh/ledger\n42\n" + MerkleHash(Array(repeating: 7, count: 32))!.base64 + "\n"

    func pem(_ key: P256.Signing.PublicKey) -> String { key.pemRepresentation + "\n" }

    @Test("a P-256 log signature is signed-note type 0x02: key ID = SHA-256(DER SPKI)[:4], vkey = 0x02 || SPKI, an ASN.1 DER signature that openssl verifies")
    func logSignature() throws {
        let key = P256.Signing.PrivateKey()
        let signer = try NoteSigner(name: "shanghai.citymesh/ledger", key: .p256(key))
        let spki = Array(key.publicKey.derRepresentation)
        #expect(signer.verifier.keyID == SHA256.hash(data: spki).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        #expect(signer.verifier.vkey == "shanghai.citymesh/ledger+\(String(format: "%08x", signer.verifier.keyID))+\(Data([0x02] + spki).base64EncodedString())")
        let note = try signer.sign(Self.text)
        // Round trip through the vkey text, as an auditor would hold it.
        let verifier = try NoteVerifier(vkey: signer.verifier.vkey)
        #expect(verifier == signer.verifier)
        let checkpoint = try Checkpoint.verify(signedNote: note, key: verifier)
        #expect(checkpoint.size == 42)

        // The real openssl checks the signature over the note text with the key from the certificate's SPKI.
        let parsed = try SignedNote(parsing: note)
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try pem(key.publicKey).write(to: dir.appendingPathComponent("log.pub"), atomically: true, encoding: .utf8)
        try Data(Self.text.utf8).write(to: dir.appendingPathComponent("text"))
        try Data(parsed.signatures[0].bytes).write(to: dir.appendingPathComponent("sig"))
        let ok = try runOpenSSL(["dgst", "-sha256", "-verify", "log.pub", "-signature", "sig", "text"], in: dir)
        #expect(ok.output.contains("Verified OK"), "\(ok.output)")
        try Data(Self.text.replacingOccurrences(of: "42", with: "43").utf8).write(to: dir.appendingPathComponent("text"))
        let bad = try runOpenSSL(["dgst", "-sha256", "-verify", "log.pub", "-signature", "sig", "text"], in: dir, mustSucceed: false)
        #expect(bad.status != 0, "\(bad.output)")

        // Altered text, another key, an Ed25519 verifier under the same name: refused.
        #expect(throws: NoteError.self) { try Checkpoint.verify(signedNote: note.replacingOccurrences(of: "\n42\n", with: "\n43\n"), key: verifier) }
        let other = try NoteVerifier(name: "shanghai.citymesh/ledger", publicKey: .p256(P256.Signing.PrivateKey().publicKey))
        #expect(throws: NoteError.self) { try Checkpoint.verify(signedNote: note, key: other) }
    }

    @Test("a P-256 cosignature: type 0xff and the CityMesh identifier, a big-endian timestamp, a DER signature over the identifier's header, the time and the checkpoint; openssl verifies it")
    func cosignature() throws {
        let key = P256.Signing.PrivateKey()
        let cosigner = try Cosigner(name: "shanghai.citymesh/witness", key: .p256(key))
        let spki = Array(key.publicKey.derRepresentation)
        let type = [UInt8(0xff)] + Array("citymesh-cosignature-ecdsa-p256/v1".utf8)
        let expectedID = SHA256.hash(data: Array("shanghai.citymesh/witness".utf8) + [0x0A] + type + spki).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        #expect(cosigner.key.keyID == expectedID)
        #expect(cosigner.key.vkey.hasSuffix("+" + Data(type + spki).base64EncodedString()))
        let c = try cosigner.cosign(checkpointText: Self.text, timestamp: 1_780_000_000)
        let parsed = try Cosignature(line: c.line)
        #expect(parsed == c && parsed.timestamp == 1_780_000_000)
        try parsed.verify(checkpointText: Self.text, key: try CosignerKey(vkey: cosigner.key.vkey))

        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try pem(key.publicKey).write(to: dir.appendingPathComponent("witness.pub"), atomically: true, encoding: .utf8)
        try Data("citymesh-cosignature-ecdsa-p256/v1\ntime 1780000000\n\(Self.text)".utf8).write(to: dir.appendingPathComponent("message"))
        try Data(c.signature).write(to: dir.appendingPathComponent("sig"))
        let ok = try runOpenSSL(["dgst", "-sha256", "-verify", "witness.pub", "-signature", "sig", "message"], in: dir)
        #expect(ok.output.contains("Verified OK"), "\(ok.output)")
        // Over the checkpoint alone (what a log signature covers) the same signature does not verify.
        try Data(Self.text.utf8).write(to: dir.appendingPathComponent("text"))
        #expect(try runOpenSSL(["dgst", "-sha256", "-verify", "witness.pub", "-signature", "sig", "text"], in: dir, mustSucceed: false).status != 0)

        // Altered timestamp or checkpoint, another witness's key: refused.
        let moved = Cosignature(witness: c.witness, keyID: c.keyID, timestamp: c.timestamp + 1, signature: c.signature)
        #expect(throws: NoteError.self) { try moved.verify(checkpointText: Self.text, key: cosigner.key) }
        #expect(throws: NoteError.self) { try c.verify(checkpointText: Self.text.replacingOccurrences(of: "42", with: "43"), key: cosigner.key) }
        let other = try CosignerKey(name: "shanghai.citymesh/witness", publicKey: .p256(P256.Signing.PrivateKey().publicKey))
        #expect(throws: NoteError.self) { try c.verify(checkpointText: Self.text, key: other) }
    }

    @Test("the same P-256 key as log and as witness: the key IDs differ, a log vkey is no cosigner vkey and back, and neither signature passes as the other")
    func noConfusion() throws {
        let key = P256.Signing.PrivateKey()
        let log = try NoteSigner(name: "shanghai.citymesh/ledger", key: .p256(key))
        let witness = try Cosigner(name: "shanghai.citymesh/ledger", key: .p256(key))
        #expect(log.verifier.keyID != witness.key.keyID)
        #expect { try CosignerKey(vkey: log.verifier.vkey) } throws: { "\($0)".contains("not a cosignature key") }
        #expect { try NoteVerifier(vkey: witness.key.vkey) } throws: { "\($0)".contains("not a log key") }
        // A cosignature line presented as the log's signature (same name, the log's key ID) does not verify.
        let c = try witness.cosign(checkpointText: Self.text, timestamp: 5)
        let relabelled = Self.text + "\n\u{2014} shanghai.citymesh/ledger " + Data(SignedNote.bigEndian(log.verifier.keyID) + c.signature).base64EncodedString() + "\n"
        #expect(throws: NoteError.self) { try Checkpoint.verify(signedNote: relabelled, key: log.verifier) }
        // A log signature is not counted as a cosignature: its key ID is not the cosigner's, so it
        // is skipped; relabelled with the cosigner's key ID it does not verify.
        let signed = try log.sign(Self.text)
        let cosignerKey = try CosignerKey(name: "shanghai.citymesh/ledger", publicKey: .p256(key.publicKey))
        #expect(try Cosignature.verified(in: try SignedNote(parsing: signed), by: [cosignerKey]).isEmpty)
        let logSig = try SignedNote(parsing: signed).signatures[0].bytes
        let asCosig = Self.text + "\n\u{2014} shanghai.citymesh/ledger " + Data(SignedNote.bigEndian(cosignerKey.keyID) + Array(repeating: 0, count: 8) + logSig).base64EncodedString() + "\n"
        #expect(throws: NoteError.self) { try Cosignature.verified(in: try SignedNote(parsing: asCosig), by: [cosignerKey]) }
    }

    @Test("hostile vkeys and lines: an unknown 0xff identifier, a key that is not DER, a wrong key ID, oversized text, a signature that is not DER")
    func hostile() throws {
        let key = P256.Signing.PrivateKey()
        let vkey = try NoteSigner(name: "x.citymesh/ledger", key: .p256(key)).verifier.vkey
        let parts = vkey.split(separator: "+", maxSplits: 2).map(String.init)
        #expect { try NoteVerifier(vkey: "\(parts[0])+\(parts[1])+" + Data([0xff] + Array("other/v1".utf8) + Array(key.publicKey.derRepresentation)).base64EncodedString()) } throws: {
            "\($0)".contains("identifier CityMesh does not know")
        }
        #expect { try NoteVerifier(vkey: "\(parts[0])+\(parts[1])+" + Data([0x02, 1, 2, 3]).base64EncodedString()) } throws: { "\($0)".contains("not a DER-encoded ECDSA P-256") }
        #expect { try NoteVerifier(vkey: "\(parts[0])+00000000+\(parts[2])") } throws: { "\($0)".contains("does not match") }
        #expect { try NoteVerifier(vkey: "\(parts[0])+\(parts[1])+" + String(repeating: "A", count: 8_000)) } throws: { "\($0)".contains("longer than 4096") }
        #expect { try NoteVerifier(vkey: "\(parts[0])+\(parts[1])+" + Data([0x07] + Array(repeating: 1, count: 32)).base64EncodedString()) } throws: { "\($0)".contains("unsupported signature type") }
        // 8 timestamp bytes and 40 bytes that are no DER signature: neither an Ed25519 nor a P-256 cosignature.
        let junk = "\u{2014} x.citymesh/witness " + Data(Array(repeating: 0x30, count: 4 + 8 + 40)).base64EncodedString()
        #expect(throws: NoteError.self) { try Cosignature(line: junk) }
        // A known key whose signature is not DER: the note is refused, not trapped on.
        let signer = try NoteSigner(name: "x.citymesh/ledger", key: .p256(key))
        let badSig = Self.text + "\n\u{2014} x.citymesh/ledger " + Data(SignedNote.bigEndian(signer.verifier.keyID) + Array(repeating: 0xff, count: 200)).base64EncodedString() + "\n"
        #expect(throws: NoteError.self) { try SignedNote(parsing: badSig).verify([signer.verifier]) }
    }
}
