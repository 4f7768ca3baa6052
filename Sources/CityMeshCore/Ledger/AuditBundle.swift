public import Foundation
import Crypto
import X509

/// A self-contained evidence bundle (docs/auditing.md): a signed checkpoint, the log's verifier key,
/// the node and CA certificates, and entries — either the whole log up to the checkpoint, or the
/// entries from `--since` on, each with its inclusion proof. It verifies with no node, network or
/// database.
public struct AuditBundle: Codable, Sendable {
    public static let formatName = "citymesh-audit-bundle/1"

    public struct Item: Codable, Sendable {
        public let index: UInt64
        /// The entry's exact stored bytes, base64.
        public let entry: String
        /// Inclusion proof against the checkpoint (base64 hashes); absent when the bundle holds the whole log.
        public let proof: [String]?

        public init(index: UInt64, entry: String, proof: [String]?) {
            self.index = index
            self.entry = entry
            self.proof = proof
        }
    }

    public let format: String
    public let origin: String
    public let verifierKey: String
    public let nodeCertificate: String
    public let caCertificate: String
    public let checkpoint: String
    public let complete: Bool
    public let entries: [Item]

    public init(origin: String, verifierKey: String, nodeCertificate: String, caCertificate: String, checkpoint: String, complete: Bool, entries: [Item]) {
        self.format = Self.formatName
        self.origin = origin
        self.verifierKey = verifierKey
        self.nodeCertificate = nodeCertificate
        self.caCertificate = caCertificate
        self.checkpoint = checkpoint
        self.complete = complete
        self.entries = entries
    }

    public struct Report: Sendable {
        public let city: CitySlug
        public let checkpoint: Checkpoint
        public let entries: [LedgerEntry]
        public let warnings: [String]
    }

    /// Everything an auditor needs checked: the certificate chain to the CA, that the verifier key
    /// is the certificate's key and names the certificate's city, the checkpoint's signature, and
    /// that every entry is in the signed tree.
    public func verify(now: Date) async throws -> Report {
        func fail(_ why: String) -> CityMeshError { CityMeshError(.malformedInput, "the bundle does not verify: \(why)") }
        guard format == Self.formatName else { throw fail("unknown format '\(format)' (expected \(Self.formatName))") }
        let roots = try PEM.certificates(caCertificate, what: "the bundle's CA certificate")
        let chain = try PEM.certificates(nodeCertificate, what: "the bundle's node certificate")
        var warnings: [String] = []
        let identity: VerifiedIdentity
        do {
            identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: nil, now: now)
        } catch let e as CityMeshError where e.code == .certificateExpired {
            // An old bundle outlives its certificate; what matters is that it was valid when it signed.
            identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: nil, now: chain[0].notValidAfter.addingTimeInterval(-1))
            warnings.append("the node certificate has expired since (\(e.message))")
        }
        let key: NoteVerifier
        do { key = try NoteVerifier(vkey: verifierKey) } catch { throw fail("verifier key: \(error)") }
        guard let certKey = Curve25519.Signing.PublicKey(identity.certificate.publicKey), certKey.rawRepresentation == key.publicKey.rawRepresentation else {
            throw fail("the verifier key is not the node certificate's key")
        }
        guard key.name == origin, origin.hasPrefix("\(identity.city).") else {
            throw fail("the log '\(origin)' does not belong to the certificate's city '\(identity.city)'")
        }
        let cp: Checkpoint
        do { cp = try Checkpoint.verify(signedNote: checkpoint, key: key) } catch { throw fail("checkpoint: \(error)") }
        var decoded: [LedgerEntry] = []
        var range = CompactRange()
        for item in entries {
            guard let bytes = Data(base64Encoded: item.entry) else { throw fail("entry \(item.index) is not base64") }
            guard let entry = try? LedgerEntry.decode(bytes), entry.index == item.index else { throw fail("entry \(item.index) is not a valid entry for that index") }
            let leaf = Merkle.leafHash(bytes)
            if complete {
                guard item.index == range.count else { throw fail("entry \(item.index) is out of order or missing its predecessor") }
                range.append(leaf)
            } else {
                let proof = (item.proof ?? []).compactMap { MerkleHash(base64: $0) }
                guard proof.count == item.proof?.count ?? -1 else { throw fail("entry \(item.index) has a malformed proof") }
                do { try Merkle.verifyInclusion(leaf: leaf, index: item.index, size: cp.size, proof: proof, root: cp.root) } catch {
                    throw fail("entry \(item.index) is not in the signed tree: \(error)")
                }
            }
            decoded.append(entry)
        }
        if complete {
            guard range.count == cp.size else { throw fail("the bundle holds \(range.count) entries but the checkpoint covers \(cp.size)") }
            guard range.root == cp.root else { throw fail("the entries do not hash to the checkpoint's root: they were altered") }
        }
        return Report(city: identity.city, checkpoint: cp, entries: decoded, warnings: warnings)
    }
}
