import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
@testable import CityMeshCore

/// Evidence bundles verified offline: everything in them must hold together, and every
/// alteration is refused.
@Suite("Audit bundles")
struct AuditBundleTests {
    struct Fixture {
        let caPEM: String
        let nodePEM: String
        let key: Curve25519.Signing.PrivateKey
        let signer: NoteSigner
        let entries: [[UInt8]]

        init(city: String = "hangzhou", count: Int = 11) throws {
            let caKey = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
            let ca = try FederationPKI.makeRootCA(name: "Test", key: caKey, serial: [1], now: Date())
            key = Curve25519.Signing.PrivateKey()
            let node = try FederationPKI.issueNode(
                city: try CitySlug(city), hosts: [], publicKey: Certificate.PublicKey(key.publicKey), ca: ca, caKey: caKey, serial: [2], now: Date())
            caPEM = try ca.serializeAsPEM().pemString
            nodePEM = try node.serializeAsPEM().pemString
            signer = try NoteSigner(name: "\(city).citymesh/ledger", key: key)
            entries = try (0..<count).map { i in
                try LedgerEntry(index: UInt64(i), time: "2026-11-29T08:00:0\(i % 10).000000Z", kind: "record.written", actor: "token:ab").encoded()
            }
        }

        var leaves: [MerkleHash] { entries.map { Merkle.leafHash($0) } }

        func checkpoint(signer: NoteSigner? = nil) throws -> String {
            let s = signer ?? self.signer
            return try s.sign(Checkpoint(origin: s.verifier.name, size: UInt64(entries.count), root: Merkle.root(leaves)).text)
        }

        func bundle(items: [AuditBundle.Item]? = nil, complete: Bool = true, checkpoint: String? = nil, vkey: String? = nil, origin: String? = nil) throws -> AuditBundle {
            AuditBundle(
                origin: origin ?? signer.verifier.name, verifierKey: vkey ?? signer.verifier.vkey, nodeCertificate: nodePEM, caCertificate: caPEM,
                checkpoint: try checkpoint ?? self.checkpoint(), complete: complete,
                entries: items ?? entries.enumerated().map { AuditBundle.Item(index: UInt64($0.offset), entry: Data($0.element).base64EncodedString(), proof: nil) })
        }
    }

    @Test("a complete bundle and a bundle of proven entries both verify")
    func verifies() async throws {
        let f = try Fixture()
        let report = try await f.bundle().verify(now: Date())
        #expect(report.city.rawValue == "hangzhou")
        #expect(report.entries.count == 11)
        #expect(report.checkpoint.size == 11)
        let some = try [3, 10].map { i in
            AuditBundle.Item(
                index: UInt64(i), entry: Data(f.entries[i]).base64EncodedString(),
                proof: try Merkle.inclusionProof(index: i, leaves: f.leaves[...]).map(\.base64))
        }
        #expect(try await f.bundle(items: some, complete: false).verify(now: Date()).entries.map(\.index) == [3, 10])
        // Survives through its own JSON encoding.
        let data = try JSONEncoder().encode(try f.bundle())
        #expect(try await JSONDecoder().decode(AuditBundle.self, from: data).verify(now: Date()).entries.count == 11)
    }

    @Test("refused: a missing or altered entry, a bad proof, another key, another city's log, another format")
    func refusals() async throws {
        let f = try Fixture()
        let all = f.entries.enumerated().map { AuditBundle.Item(index: UInt64($0.offset), entry: Data($0.element).base64EncodedString(), proof: nil) }
        var altered = f.entries[4]
        altered[altered.count - 3] ^= 0x01
        let other = try NoteSigner(name: f.signer.verifier.name, key: Curve25519.Signing.PrivateKey())
        var badProof = try Merkle.inclusionProof(index: 3, leaves: f.leaves[...]).map(\.base64)
        badProof[0] = Merkle.emptyRoot.base64
        let cases: [(String, AuditBundle)] = [
            ("entry missing", try f.bundle(items: Array(all.dropLast()))),
            ("entry altered", try f.bundle(items: all.enumerated().map { $0.offset == 4 ? AuditBundle.Item(index: 4, entry: Data(altered).base64EncodedString(), proof: nil) : $0.element })),
            ("entries swapped", try f.bundle(items: [all[1], all[0]] + all.dropFirst(2))),
            ("bad proof", try f.bundle(items: [AuditBundle.Item(index: 3, entry: Data(f.entries[3]).base64EncodedString(), proof: badProof)], complete: false)),
            ("vkey not the certificate's", try f.bundle(checkpoint: try f.checkpoint(signer: other), vkey: other.verifier.vkey)),
            ("checkpoint not signed by the vkey", try f.bundle(checkpoint: try f.checkpoint(signer: other))),
            ("another city's log", try f.bundle(origin: "shanghai.citymesh/ledger")),
        ]
        for (name, bundle) in cases {
            await #expect(throws: CityMeshError.self, "\(name)") { try await bundle.verify(now: Date()) }
        }
        let wrongFormat = try JSONSerialization.jsonObject(with: JSONEncoder().encode(try f.bundle())) as? [String: Any] ?? [:]
        var changed = wrongFormat
        changed["format"] = "something-else/9"
        let decoded = try JSONDecoder().decode(AuditBundle.self, from: JSONSerialization.data(withJSONObject: changed))
        await #expect(throws: CityMeshError.self) { try await decoded.verify(now: Date()) }
    }
}
