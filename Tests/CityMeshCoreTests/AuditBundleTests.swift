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
        let ca: Certificate
        let caKey: Certificate.PrivateKey

        init(city: String = "hangzhou", count: Int = 11) throws {
            caKey = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
            ca = try FederationPKI.makeRootCA(name: "Test", key: caKey, serial: [1], now: Date())
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

        /// A witness city's key and certificate, issued by this fixture's CA (or by `foreignCA`).
        func witness(_ city: String, foreignCA: Bool = false) throws -> (cosigner: Cosigner, pem: String) {
            let key = Curve25519.Signing.PrivateKey()
            var (issuer, issuerKey) = (ca, caKey)
            if foreignCA {
                issuerKey = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
                issuer = try FederationPKI.makeRootCA(name: "Other", key: issuerKey, serial: [1], now: Date())
            }
            let cert = try FederationPKI.issueNode(
                city: try CitySlug(city), hosts: [], publicKey: Certificate.PublicKey(key.publicKey), ca: issuer, caKey: issuerKey, serial: [3], now: Date())
            return (try Cosigner(name: Cosignature.witnessName(try CitySlug(city)), key: key), try cert.serializeAsPEM().pemString)
        }

        /// The log's signed checkpoint of its first `size` entries.
        func checkpoint(size: Int) throws -> (note: String, text: String) {
            let text = Checkpoint(origin: signer.verifier.name, size: UInt64(size), root: Merkle.root(leaves.prefix(size))).text
            return (try signer.sign(text), text)
        }

        func bundle(
            items: [AuditBundle.Item]? = nil, complete: Bool = true, checkpoint: String? = nil, vkey: String? = nil, origin: String? = nil,
            witnessed: AuditBundle.Witnessed? = nil
        ) throws -> AuditBundle {
            AuditBundle(
                origin: origin ?? signer.verifier.name, verifierKey: vkey ?? signer.verifier.vkey, nodeCertificate: nodePEM, caCertificate: caPEM,
                checkpoint: try checkpoint ?? self.checkpoint(), complete: complete,
                entries: items ?? entries.enumerated().map { AuditBundle.Item(index: UInt64($0.offset), entry: Data($0.element).base64EncodedString(), proof: nil) },
                witnessed: witnessed)
        }
    }

    @Test("with the federation CRL, a bundle of a revoked certificate fails unless checked as of before the revocation; an expired one fails unless --at")
    func revokedAndExpired() async throws {
        let f = try Fixture()
        let node = try PEM.certificates(f.nodePEM, what: "node")[0]
        // Issued when the fixture was made; revoked 10 minutes later; audited an hour later.
        let revokedAt = node.notValidBefore.addingTimeInterval(600)
        let audit = node.notValidBefore.addingTimeInterval(3600)
        let crl = try RevocationList.make(
            issuer: f.ca, key: f.caKey, entries: [.init(serial: node.serialNumber, revokedAt: revokedAt)], number: 1, thisUpdate: revokedAt, nextUpdate: audit.addingTimeInterval(86_400))
        let bundle = try f.bundle()
        _ = try await bundle.verify(now: audit)
        await #expect { try await bundle.verify(now: audit, revocations: crl) } throws: { "\($0)".contains("revoked by the federation CRL") }
        // As of before the revocation (and within the certificate's validity), it counts, with a warning.
        let before = try await bundle.verify(now: audit, revocations: crl, asOf: revokedAt.addingTimeInterval(-1))
        #expect(before.warnings.contains { $0.contains("checked as of") })
        // A CRL of another CA is refused, not ignored.
        let otherKey = Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        let other = try FederationPKI.makeRootCA(name: "Other", key: otherKey, serial: [1], now: Date())
        let foreign = try RevocationList.make(issuer: other, key: otherKey, entries: [], number: 1, thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86_400))
        await #expect { try await bundle.verify(now: audit, revocations: foreign) } throws: { "\($0)".contains("not signed by the bundle's CA") }
        // Expired: a year and a day later the node certificate (365 days) has expired.
        let later = node.notValidBefore.addingTimeInterval(366 * 86_400)
        await #expect { try await bundle.verify(now: later) } throws: { "\($0)".contains("expired") && "\($0)".contains("--at") }
        _ = try await bundle.verify(now: later, asOf: audit)
    }

    @Test("a witnessed checkpoint: cosignatures verify with CA-issued witness certificates, and the bundle's checkpoint must extend it")
    func witnessed() async throws {
        let f = try Fixture()
        let (sz, szPEM) = try f.witness("suzhou")
        let (sh, shPEM) = try f.witness("shanghai")
        let (at8, text8) = try f.checkpoint(size: 8)
        let line = try sz.cosign(checkpointText: text8, timestamp: 1_780_000_000).line
        let line2 = try sh.cosign(checkpointText: text8, timestamp: 1_780_000_005).line
        let proof = try Merkle.consistencyProof(size1: 8, leaves: f.leaves[...]).map(\.base64)

        let report = try await f.bundle(witnessed: .init(checkpoint: at8 + line + line2, consistency: proof, certificates: [szPEM, shPEM])).verify(now: Date())
        #expect(report.witnesses.map(\.city.rawValue) == ["suzhou", "shanghai"])
        #expect(report.witnesses.allSatisfy { $0.size == 8 })
        #expect(report.witnesses.first?.timestamp == 1_780_000_000)
        #expect(report.warnings.isEmpty, "\(report.warnings)")

        // The same size as the bundle's checkpoint needs no proof.
        let (at11, text11) = try f.checkpoint(size: 11)
        let same = try await f.bundle(checkpoint: at11, witnessed: .init(
            checkpoint: at11 + (try sz.cosign(checkpointText: text11, timestamp: 1).line), consistency: [], certificates: [szPEM])).verify(now: Date())
        #expect(same.witnesses.map(\.city.rawValue) == ["suzhou"])

        // A cosignature without its certificate, or from a certificate of another CA, is not counted.
        let noCert = try await f.bundle(witnessed: .init(checkpoint: at8 + line, consistency: proof, certificates: [])).verify(now: Date())
        #expect(noCert.witnesses.isEmpty)
        #expect(noCert.warnings.contains { $0.contains("no certificate in the bundle") }, "\(noCert.warnings)")
        let (foreign, foreignPEM) = try f.witness("suzhou", foreignCA: true)
        let foreignLine = try foreign.cosign(checkpointText: text8, timestamp: 1).line
        let other = try await f.bundle(witnessed: .init(checkpoint: at8 + foreignLine, consistency: proof, certificates: [foreignPEM])).verify(now: Date())
        #expect(other.witnesses.isEmpty)
        #expect(other.warnings.contains { $0.contains("not issued by the bundle's CA") }, "\(other.warnings)")

        // Refused: an altered cosignature, a bad consistency proof, a witnessed checkpoint of
        // another history or larger than the bundle's, one not signed by the log.
        let altered = line.replacingOccurrences(of: String(line.dropLast(4).suffix(4)), with: "AAAA")
        let cases: [(AuditBundle.Witnessed, String)] = [
            (.init(checkpoint: at8 + altered, consistency: proof, certificates: [szPEM]), "does not verify"),
            (.init(checkpoint: at8 + line, consistency: Array(proof.dropLast()), certificates: [szPEM]), "does not extend"),
            (.init(checkpoint: try f.signer.sign(Checkpoint(origin: f.signer.verifier.name, size: 8, root: Merkle.root(f.leaves.suffix(8))).text),
                   consistency: proof, certificates: []), "does not extend"),
            (.init(checkpoint: try f.signer.sign(Checkpoint(origin: f.signer.verifier.name, size: 12, root: Merkle.root(f.leaves)).text),
                   consistency: [], certificates: []), "larger than the bundle's"),
            (.init(checkpoint: try NoteSigner(name: f.signer.verifier.name, key: Curve25519.Signing.PrivateKey()).sign(text8),
                   consistency: proof, certificates: []), "witnessed checkpoint"),
        ]
        for (w, why) in cases {
            await #expect(performing: { try await f.bundle(witnessed: w).verify(now: Date()) }, throws: { "\($0)".contains(why) })
        }
        // A bundle made before witnessing (no "witnessed" key) still decodes and verifies.
        let old = try JSONEncoder().encode(try f.bundle())
        #expect(!String(decoding: old, as: UTF8.self).contains("witnessed"))
        #expect(try await JSONDecoder().decode(AuditBundle.self, from: old).verify(now: Date()).witnesses.isEmpty)
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
