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
    /// The largest checkpoint peers cosigned as witnesses, with the proof that `checkpoint`
    /// extends it; absent when no peer has cosigned yet (and in bundles made before witnessing).
    public let witnessed: Witnessed?

    /// A witnessed checkpoint: the log's signed note with the witnesses' cosignature lines, the
    /// consistency proof from it to the bundle's checkpoint (empty when they are the same), and
    /// the witnesses' certificates, which name them and hold their keys.
    public struct Witnessed: Codable, Sendable {
        public let checkpoint: String
        public let consistency: [String]
        public let certificates: [String]

        public init(checkpoint: String, consistency: [String], certificates: [String]) {
            self.checkpoint = checkpoint
            self.consistency = consistency
            self.certificates = certificates
        }
    }

    public init(
        origin: String, verifierKey: String, nodeCertificate: String, caCertificate: String, checkpoint: String, complete: Bool, entries: [Item],
        witnessed: Witnessed? = nil
    ) {
        self.witnessed = witnessed
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
        /// The witnesses whose cosignatures verified, with the size they cosigned and when.
        public let witnesses: [Witness]
    }

    public struct Witness: Sendable, Equatable {
        public let city: CitySlug
        public let size: UInt64
        public let timestamp: UInt64
    }

    /// Everything an auditor needs checked: the certificate chain to the CA, that the verifier key
    /// is the certificate's key and names the certificate's city, the checkpoint's signature, and
    /// that every entry is in the signed tree.
    ///
    /// Signatures by a certificate that is expired at `now`, or revoked by `revocations` (the
    /// federation CRL, checked against the bundle's CA), are failures — unless `asOf` is given:
    /// then certificates are checked as of that time (an old bundle, audited for what its city
    /// signed while its certificate was good). Witnesses whose certificates fail are not counted.
    public func verify(now: Date, revocations: RevocationList? = nil, asOf: Date? = nil) async throws -> Report {
        func fail(_ why: String) -> CityMeshError { CityMeshError(.malformedInput, "the bundle does not verify: \(why)") }
        guard format == Self.formatName else { throw fail("unknown format '\(format)' (expected \(Self.formatName))") }
        let roots = try PEM.certificates(caCertificate, what: "the bundle's CA certificate")
        let chain = try PEM.certificates(nodeCertificate, what: "the bundle's node certificate")
        if let revocations {
            guard roots.contains(where: { (try? revocations.verify(issuer: $0, what: "the CRL")) != nil }) else {
                throw fail("the CRL was not signed by the bundle's CA: give the CRL of the bundle's federation")
            }
        }
        let at = asOf ?? now
        var warnings: [String] = []
        let identity: VerifiedIdentity
        do {
            identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: nil, now: at)
        } catch let e as CityMeshError where e.code == .certificateExpired && asOf == nil {
            throw fail("the node certificate has expired (\(e.message)): its signatures no longer count; to audit what it signed while it was valid, give --at with a time in its validity")
        }
        if let revoked = revocations?.revocationDate(chain[0].serialNumber), revoked <= at {
            throw fail("the node certificate of \(identity.city) was revoked by the federation CRL at \(revoked): its signatures count only before that; give --at with an earlier time to audit what it signed then")
        }
        if asOf != nil { warnings.append("certificates were checked as of \(at), not now") }
        let key: NoteVerifier
        do { key = try NoteVerifier(vkey: verifierKey) } catch { throw fail("verifier key: \(error)") }
        guard let certKey = NoteKey(identity.certificate.publicKey), certKey == key.publicKey else {
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
        var witnesses: [Witness] = []
        if let witnessed {
            witnesses = try await verifyWitnessed(
                witnessed, log: key, city: identity.city, checkpoint: cp, roots: roots, now: at, revocations: revocations, warnings: &warnings)
        }
        return Report(city: identity.city, checkpoint: cp, entries: decoded, warnings: warnings, witnesses: witnesses)
    }

    /// Checks the witnessed checkpoint: the log's signature, that the bundle's checkpoint extends
    /// it, and each cosignature with the key of a witness certificate issued by the bundle's CA.
    func verifyWitnessed(
        _ w: Witnessed, log key: NoteVerifier, city: CitySlug, checkpoint cp: Checkpoint, roots: [Certificate], now: Date,
        revocations: RevocationList? = nil, warnings: inout [String]
    ) async throws -> [Witness] {
        func fail(_ why: String) -> CityMeshError { CityMeshError(.malformedInput, "the bundle does not verify: \(why)") }
        let note: SignedNote
        let wcp: Checkpoint
        do {
            note = try SignedNote(parsing: w.checkpoint)
            wcp = try Checkpoint.verify(signedNote: w.checkpoint, key: key)
        } catch { throw fail("witnessed checkpoint: \(error)") }
        guard wcp.size <= cp.size else { throw fail("the witnessed checkpoint (size \(wcp.size)) is larger than the bundle's (\(cp.size))") }
        if wcp.size == cp.size {
            guard wcp.root == cp.root else { throw fail("the witnessed checkpoint and the bundle's have the same size but different roots: two histories") }
        } else {
            let proof = w.consistency.compactMap { MerkleHash(base64: $0) }
            guard proof.count == w.consistency.count else { throw fail("the witnessed checkpoint's consistency proof is malformed") }
            do { try Merkle.verifyConsistency(size1: wcp.size, size2: cp.size, root1: wcp.root, root2: cp.root, proof: proof) } catch {
                throw fail("the bundle's checkpoint does not extend the witnessed one (\(error)): two histories")
            }
        }
        var keys: [CosignerKey] = []
        for pem in w.certificates {
            do {
                let chain = try PEM.certificates(pem, what: "a witness certificate")
                let identity: VerifiedIdentity
                do { identity = try await NodeIdentity.verify(chain: chain, roots: roots, expectedCity: nil, now: now) } catch let e as CityMeshError where e.code == .certificateExpired {
                    warnings.append("a witness certificate has expired, so its cosignature is not counted (\(e.message)); give --at to count it as of a time it was valid")
                    continue
                }
                if let revoked = revocations?.revocationDate(chain[0].serialNumber), revoked <= now {
                    warnings.append("\(identity.city)'s witness certificate was revoked at \(revoked), so its cosignature is not counted")
                    continue
                }
                guard identity.city != city else { continue }
                guard let publicKey = NoteKey(identity.certificate.publicKey) else { continue }
                keys.append(try CosignerKey(name: Cosignature.witnessName(identity.city), publicKey: publicKey))
            } catch {
                warnings.append("a witness certificate was not issued by the bundle's CA, so its cosignature is not counted: \(error)")
            }
        }
        let verified: [Cosignature]
        do { verified = try Cosignature.verified(in: note, by: keys) } catch { throw fail("witnessed checkpoint: \(error)") }
        for sig in note.signatures where sig.name != key.name && !verified.contains(where: { $0.witness == sig.name }) {
            warnings.append("the cosignature by '\(sig.name)' has no certificate in the bundle: not checked")
        }
        return verified.compactMap { c in
            guard c.witness.hasSuffix(".citymesh/witness"), let city = try? CitySlug(String(c.witness.dropLast(".citymesh/witness".count))) else { return nil }
            return Witness(city: city, size: wcp.size, timestamp: c.timestamp)
        }
    }
}
