import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshStore
import Foundation

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and verify the node's accountability ledger (an auditor token is enough).",
        subcommands: [AuditLog.self, AuditKey.self, AuditHash.self, AuditVerify.self, AuditCheckpoint.self, AuditWitnesses.self, AuditVKey.self, AuditProve.self, AuditVerifyProof.self, AuditConsistency.self, AuditExport.self, AuditVerifyBundle.self, AuditReconcile.self])
}

struct AuditLog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List ledger entries, oldest first.",
        discussion: """
            Example:
              citymesh audit log --dir hz --since 2026-11-01 --peer shanghai --kind peer
              citymesh audit log --dir hz --kind dataset.imported --json

            --kind matches a kind or its family (peer matches peer.connected and peer.refused).
            Entries hold metadata and hashes, never record values. Record keys are there only as
            keyed hashes (key.hmac); to find one record's entries, an admin gives you the ledger
            key ('citymesh audit key') and you pass it with --record and --ledger-key.
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "Only entries at or after this time (RFC 3339 or a date, e.g. 2026-11-01).") var since: String?
    @Option(help: "Only entries about this peer city.") var peer: String?
    @Option(help: "Only this kind or family of kinds.") var kind: String?
    @Option(help: "Only entries about this dataset (owner/name).") var dataset: String?
    @Option(help: "At most this many entries (1-10000).") var limit: Int = 1000
    @Option(help: "Only entries about this record key (needs --ledger-key).") var record: String?
    @Option(help: "The ledger key (64 hex digits, from 'audit key') that record keys are hashed with.") var ledgerKey: String?
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if record != nil, ledgerKey.flatMap(LedgerKey.init(hex:)) == nil {
            throw ValidationError("--record needs --ledger-key: the 64 hex digits an admin gets with 'citymesh audit key DATASET' (record keys are in the ledger only as keyed hashes)")
        }
    }

    func run() async throws {
        var query: [String: String] = ["limit": String(limit)]
        if let record, let key = ledgerKey.flatMap(LedgerKey.init(hex:)) { query["contains"] = key.hash(record) }
        if let since { query["since"] = since }
        if let peer { query["peer"] = peer }
        if let kind { query["kind"] = kind }
        if let dataset { query["dataset"] = dataset }
        let log: API.AuditLog = try await node.withNode { client, _ in try await client.get("/v1/audit/log", query: query) }
        if output.json {
            for e in log.entries { try printJSONLine(e) }
            return
        }
        if log.entries.isEmpty { return print("no entries match") }
        Terminal.table(
            ["INDEX", "TIME", "KIND", "ACTOR", "PEER", "DATASET", "DETAIL"],
            log.entries.map { e in
                let counts = (e.counts ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                let detail = [e.reason, e.detail, counts.isEmpty ? nil : counts].compactMap { $0 }.joined(separator: "; ")
                return [String(e.index), String(e.time.prefix(19)), e.kind, e.actor, e.peer ?? "", e.dataset ?? "", detail]
            })
    }
}

struct AuditKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Print the key a dataset's (or a share's) record keys are hashed with in the ledger (admin).",
        discussion: """
            Examples:
              citymesh audit key --dir hz air-quality
              citymesh audit key --dir hz air-quality --share delta-air
              citymesh audit key --dir sh hangzhou/air-quality

            Record keys enter the ledger as HMAC-SHA256 under this key (key.hmac; hmac.key names
            the key). Whoever holds it can test guesses of record keys against the ledger: give it
            to an auditor for a specific inquiry only. A share's key is in its signed offer, so the
            owner's and every member's entries about one of its records carry the same hash.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset (name, or owner/name for a replica).") var dataset: String
    @Option(help: "The key of this share of the dataset (its name) rather than the dataset's own.") var share: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var query = ["dataset": dataset]
        if let share { query["share"] = share }
        let info: API.LedgerKeyInfo = try await node.withNode { client, _ in try await client.get("/v1/audit/key", query: query) }
        if output.json { return try printJSON(info) }
        print("key \(info.key)\nid  \(info.id)")
    }
}

struct AuditHash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash",
        abstract: "The keyed hash a record key has in the ledger (offline).",
        discussion: """
            Example:
              citymesh audit hash --ledger-key 3f1c…(64 hex digits) 91330100MA2H0003

            Prints HMAC-SHA256(ledger key, record key) in hex: the key.hmac of the record's
            entries. Search for it with 'citymesh audit log --record KEY --ledger-key HEX', or in
            an evidence bundle.
            """)

    @Option(help: "The ledger key (64 hex digits, from 'audit key').") var ledgerKey: String
    @Argument(help: "The record key.") var record: String

    func run() throws {
        guard let key = LedgerKey(hex: ledgerKey) else {
            throw ValidationError("--ledger-key is 64 lowercase hex digits, as 'citymesh audit key' prints it")
        }
        print(key.hash(record))
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Recompute the whole Merkle tree from the stored entries and check it against every signed checkpoint.",
        discussion: """
            Example:
              citymesh audit verify --dir hz

            Exits 0 when every entry, leaf hash and signed checkpoint agree; otherwise prints the first
            bad index and why, and exits 1. An entry edited, deleted or moved by hand is caught.
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        // The node streams its progress as JSON lines; the bar is drawn on stderr when it is a terminal.
        let bar = ProgressBar(label: "verifying", unit: "entries")
        let report: LedgerAuditReport = try await node.withNode { client, _ in
            var pending = Data()
            var report: LedgerAuditReport?
            try await client.download("/v1/audit/verify", query: ["progress": "1"]) { chunk in
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[(newline + 1)...])
                    let event = try JSONDecoder().decode(VerifyEvent.self, from: line)
                    if let done = event.done { bar.update(done: Int64(done), total: Int64(event.total ?? done)) }
                    if let r = event.report { report = r }
                    if let e = event.error { throw CityMeshError(.init(e.code), e.message) }
                }
            }
            bar.finish()
            guard let report else { throw CityMeshError(.internalError, "the node ended the audit without a report: see its log") }
            return report
        }
        if output.json { try printJSON(report) } else if report.ok {
            print("ledger OK: \(report.entries) entries, root \(report.root), \(report.checkpointsVerified) signed checkpoints match (latest at size \(report.latestCheckpointSize.map(String.init) ?? "-"))")
        } else {
            print("ledger FAILED at entry \(report.firstBadIndex.map(String.init) ?? "?"): \(report.problem ?? "unknown problem")")
        }
        if !report.ok { throw ExitCode(1) }
    }
}

/// One line of `/v1/audit/verify?progress=1`.
struct VerifyEvent: Decodable {
    struct Failure: Decodable {
        let code: String
        let message: String
    }
    var done: UInt64?
    var total: UInt64?
    var report: LedgerAuditReport?
    var error: Failure?
}

struct AuditCheckpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Print the latest signed checkpoint (C2SP tlog-checkpoint in a C2SP signed note).",
        discussion: """
            Examples:
              citymesh audit checkpoint --dir hz > checkpoint.txt
              citymesh audit checkpoint --dir hz --witnessed

            Peers that witness this node's ledger cosign the checkpoints they checked (C2SP
            tlog-cosignature/v1); their signature lines follow the node's own. --witnessed prints
            the largest checkpoint that carries at least one cosignature.
            """)

    @OptionGroup var node: NodeOptions
    @Flag(help: "The largest checkpoint peers have cosigned, rather than the latest.") var witnessed = false

    func run() async throws {
        let query = witnessed ? ["witnessed": "1"] : [:]
        print(try await node.withNode { client, _ in try await client.getText("/v1/audit/checkpoint", query: query) }, terminator: "")
    }
}

struct AuditWitnesses: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "witnesses",
        abstract: "List the peers that cosigned this node's checkpoints, and what they last cosigned.",
        discussion: """
            Example:
              citymesh audit witnesses --dir hz

            Every connected peer checks this node's checkpoint about every 10 s
            (signature, and consistency with the last one it saw) and sends back a cosignature,
            which this node keeps and publishes with the checkpoint. A witness far behind the
            latest checkpoint has stopped checking: see 'citymesh peers'.
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list = try await node.withNode { client, _ in try await client.get("/v1/audit/witnesses", as: API.Witnesses.self) }
        if output.json { return try printJSON(list) }
        guard !list.witnesses.isEmpty else {
            print("no peer has cosigned a checkpoint yet (the latest is at size \(list.checkpointSize)): peers cosign within about 10 s of connecting")
            return
        }
        let now = UInt64(Date().timeIntervalSince1970)
        Terminal.table(["WITNESS", "COSIGNED SIZE", "BEHIND", "COSIGNED AT", "AGE"], list.witnesses.map { w in
            [w.city, String(w.size), String(list.checkpointSize > w.size ? list.checkpointSize - w.size : 0),
             RFC3339.format(microseconds: Int64(w.timestamp) * 1_000_000), "\(now > w.timestamp ? now - w.timestamp : 0)s"]
        })
    }
}

struct AuditVKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vkey",
        abstract: "Print the log's verifier key (C2SP signed-note format: name+keyid+key).",
        discussion: """
            Examples:
              citymesh audit vkey --dir hz > hz.vkey
              citymesh audit vkey --dir sz --witness > sz-witness.vkey

            --witness prints the node's key as a witness (C2SP tlog-cosignature/v1, type 0x04),
            which verifies the cosignatures it adds to other cities' checkpoints.
            """)

    @OptionGroup var node: NodeOptions
    @Flag(help: "The node's cosigner (witness) key rather than its log key.") var witness = false

    func run() async throws {
        let query = witness ? ["witness": "1"] : [:]
        print(try await node.withNode { client, _ in try await client.getText("/v1/audit/vkey", query: query) }, terminator: "")
    }
}

struct AuditProve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prove",
        abstract: "An RFC 9162 inclusion proof for one entry (checked here before it is printed).",
        discussion: """
            Example:
              citymesh audit prove --dir hz --index 41
              citymesh audit prove --dir hz --index 41 --size 1000 --json
              citymesh audit prove --dir hz --index 41 --tlog-proof > entry-41.tlog-proof

            Without --size the proof is for the latest signed checkpoint. --json prints the tree size,
            root hash, leaf hash and index and the proof hashes (base64) for any RFC 9162 verifier.
            --tlog-proof prints a C2SP tlog-proof (the entry in its extra line, the proof, the signed
            checkpoint) that 'citymesh audit verify-proof' or any tlog-proof verifier checks offline.
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "The entry's index.") var index: UInt64
    @Option(help: "The tree size (default: the latest signed checkpoint's).") var size: UInt64?
    @Flag(name: .customLong("tlog-proof"), help: "Print a C2SP tlog-proof, verifiable offline.") var tlogProof = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if tlogProof && output.json { throw ValidationError("--tlog-proof and --json are two output formats: choose one") }
    }

    func run() async throws {
        var query = ["index": String(index)]
        if let size { query["size"] = String(size) }
        let p: API.InclusionProof = try await node.withNode { client, _ in try await client.get("/v1/audit/prove", query: query) }
        // Do not take the node's word for it: recompute the root from the proof.
        guard let leaf = MerkleHash(base64: p.leafHash), let root = MerkleHash(base64: p.rootHash) else {
            throw CityMeshError(.internalError, "the node sent hashes that are not base64 SHA-256")
        }
        let path = p.proof.compactMap { MerkleHash(base64: $0) }
        do {
            try Merkle.verifyInclusion(leaf: leaf, index: p.index, size: p.treeSize, proof: path, root: root)
            guard leaf == Merkle.leafHash(try p.entry.encoded()) else { throw MerkleProofError.leafMismatch }
        } catch {
            throw CityMeshError(.internalError, "the node's inclusion proof does not verify (\(error)): report this; the ledger may be damaged")
        }
        if tlogProof {
            guard let checkpoint = p.checkpoint else {
                throw CityMeshError(.invalidArgument, "no checkpoint was signed at size \(p.treeSize): leave out --size to use the latest one")
            }
            return print(TLogProof(extra: try p.entry.encoded(), index: p.index, hashes: path, checkpoint: checkpoint).text, terminator: "")
        }
        if output.json { return try printJSON(p) }
        print("entry \(p.index) is in the tree of size \(p.treeSize) (proof verified)")
        print("  leaf hash  \(p.leafHash)")
        print("  root hash  \(p.rootHash)" + (p.checkpoint != nil ? "  (the signed checkpoint of that size)" : "  (no checkpoint was signed at exactly this size)"))
        print("  proof      \(p.proof.count) hashes")
        for h in p.proof { print("             \(h)") }
    }
}

struct AuditVerifyProof: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-proof",
        abstract: "Verify a C2SP tlog-proof offline against the log's verifier key, and show its entry.",
        discussion: """
            Example:
              citymesh audit vkey --dir hz > hz.vkey
              citymesh audit prove --dir hz --index 41 --tlog-proof > entry-41.tlog-proof
              citymesh audit verify-proof entry-41.tlog-proof --vkey hz.vkey

            Needs no node and no network. Checks the checkpoint's signature with the key, then that
            the entry (the proof's extra line) is in the signed tree. Exits 0 if it is, 1 if not.
            """)

    @Argument(help: "The .tlog-proof file.") var file: String
    @Option(help: "The log's verifier key, or a file holding it (from 'citymesh audit vkey').") var vkey: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CityMeshError(.fileNotFound, "cannot read '\(file)': give the path of a .tlog-proof file")
        }
        let keyText = FileManager.default.contents(atPath: vkey).map { String(decoding: $0, as: UTF8.self) } ?? vkey
        let key: NoteVerifier
        do { key = try NoteVerifier(vkey: keyText.trimmingCharacters(in: .whitespacesAndNewlines)) } catch {
            throw CityMeshError(.invalidArgument, "--vkey is neither a verifier key nor a file holding one (\(error)): get it with 'citymesh audit vkey'")
        }
        let proof: TLogProof
        let checkpoint: Checkpoint
        do {
            proof = try TLogProof(parsing: String(decoding: data, as: UTF8.self))
            checkpoint = try proof.verify(key: key)
        } catch {
            Terminal.error("the proof does NOT verify: \(error)")
            throw ExitCode(1)
        }
        let entry = try proof.extra.map { try LedgerEntry.decode($0) }
        if output.json {
            struct Out: Encodable { let ok: Bool; let origin: String; let treeSize: UInt64; let index: UInt64; let entry: LedgerEntry? }
            return try printJSON(Out(ok: true, origin: checkpoint.origin, treeSize: checkpoint.size, index: proof.index, entry: entry))
        }
        print("proof OK: entry \(proof.index) is in \(checkpoint.origin)'s tree of size \(checkpoint.size), signed by \(key.name) (key \(String(format: "%08x", key.keyID)))")
        if let entry { print("  \(entry.time)  \(entry.kind)  actor \(entry.actor)  peer \(entry.peer ?? "-")  dataset \(entry.dataset ?? "-")") }
    }
}

struct AuditConsistency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consistency",
        abstract: "An RFC 9162 consistency proof between two tree sizes (checked here before it is printed).",
        discussion: """
            Example:
              citymesh audit consistency --dir hz --from 500
              citymesh audit consistency --dir hz --from 500 --to 1000 --json

            Proves the log of --from entries is a prefix of the log of --to entries (default: the latest
            signed checkpoint), i.e. nothing logged before was rewritten.
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "The older tree size.") var from: UInt64
    @Option(help: "The newer tree size (default: the latest signed checkpoint's).") var to: UInt64?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var query = ["from": String(from)]
        if let to { query["to"] = String(to) }
        let p: API.ConsistencyProof = try await node.withNode { client, _ in try await client.get("/v1/audit/consistency", query: query) }
        do {
            try Merkle.verifyConsistency(
                size1: p.size1, size2: p.size2, root1: Array(Data(base64Encoded: p.rootHash1) ?? Data()),
                root2: Array(Data(base64Encoded: p.rootHash2) ?? Data()), proof: p.proof.map { Array(Data(base64Encoded: $0) ?? Data()) })
        } catch {
            throw CityMeshError(.internalError, "the node's consistency proof does not verify (\(error)): the log may have been rewritten")
        }
        if output.json { return try printJSON(p) }
        print("the tree of \(p.size1) entries is a prefix of the tree of \(p.size2) (proof verified)")
        print("  root \(p.size1)  \(p.rootHash1)")
        print("  root \(p.size2)  \(p.rootHash2)")
        print("  proof     \(p.proof.count) hashes")
        for h in p.proof { print("            \(h)") }
    }
}

struct AuditExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a self-contained evidence bundle (verifiable offline with 'audit verify-bundle').",
        discussion: """
            Example:
              citymesh audit export --dir hz --out hz-audit.bundle
              citymesh audit export --dir hz --out nov.bundle --since 2026-11-01

            The bundle holds the latest signed checkpoint, the log's verifier key, the node and CA
            certificates, and the entries: all of them, or those from --since on with an inclusion
            proof each. Its format is described in docs/auditing.md.
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "The bundle file to write.") var out: String
    @Option(help: "Only entries at or after this time (RFC 3339 or a date), each with its proof.") var since: String?

    func run() async throws {
        let bundle: AuditBundle = try await node.withNode { client, _ in
            try await client.get("/v1/audit/bundle", query: since.map { ["since": $0] } ?? [:])
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = try encoder.encode(bundle)
        guard FileManager.default.createFile(atPath: out, contents: data) else {
            throw CityMeshError(.ioError, "cannot write \(out): check the directory exists and is writable")
        }
        let size = (try? Checkpoint(text: try SignedNote(parsing: bundle.checkpoint).text).size) ?? 0
        print("wrote \(out): \(bundle.entries.count) entries, checkpoint at size \(size) of \(bundle.origin)")
        print("next: citymesh audit verify-bundle \(out)   (offline: no node, network or database needed)")
    }
}

struct AuditVerifyBundle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-bundle",
        abstract: "Verify an evidence bundle offline: certificates, checkpoint signature, every entry.",
        discussion: """
            Example:
              citymesh audit verify-bundle hz-audit.bundle

            Needs nothing but the file: no node, no network, no database. Exits 0 if everything
            verifies, 1 otherwise, saying what failed.
            """)

    @Argument(help: "The bundle file.") var file: String
    @Option(help: "The federation CA certificate you trust (PEM); the bundle's CA must be this one.") var ca: String?
    @Option(help: "Fail unless at least this many witnesses (other cities) cosigned a checkpoint the bundle's extends.") var quorum: Int = 0
    @OptionGroup var trust: BundleTrustOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard quorum >= 0 else { throw ValidationError("--quorum is a number of witnesses, 0 or more") }
        try trust.validate()
    }

    /// Reads a bundle file and, with `ca`, checks that the bundle's CA is the one the auditor trusts.
    static func read(_ file: String, trusting ca: String?) throws -> AuditBundle {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CityMeshError(.fileNotFound, "\(file) does not exist or cannot be read")
        }
        let bundle: AuditBundle
        do { bundle = try JSONDecoder().decode(AuditBundle.self, from: data) } catch {
            throw CityMeshError(.malformedInput, "\(file) is not an audit bundle: \(error)")
        }
        if let ca {
            guard let trusted = FileManager.default.contents(atPath: ca).flatMap({ String(data: $0, encoding: .utf8) }) else {
                throw CityMeshError(.fileNotFound, "\(ca) does not exist or cannot be read")
            }
            let mine = try PEM.certificates(trusted, what: ca)
            let theirs = try PEM.certificates(bundle.caCertificate, what: "\(file)'s CA certificate")
            guard mine == theirs else {
                throw CityMeshError(.certificateForeignCA, "\(file)'s CA is not \(ca): it comes from another federation, or was forged")
            }
        }
        return bundle
    }

    func run() async throws {
        let bundle = try Self.read(file, trusting: ca)
        let report = try await bundle.verify(now: Date(), revocations: try trust.revocations(), asOf: try trust.asOf())
        guard report.witnesses.count >= quorum else {
            throw CityMeshError(
                .malformedInput,
                "the bundle verifies, but only \(report.witnesses.count) witness(es) cosigned it (\(report.witnesses.map(\.city.rawValue).joined(separator: ", "))), fewer than --quorum \(quorum): export it again once more peers have cosigned ('citymesh audit witnesses')")
        }
        if output.json {
            for e in report.entries { try printJSONLine(e) }
            return
        }
        print("bundle OK: \(report.entries.count) entries of \(report.city)'s ledger are in its signed checkpoint")
        print("  checkpoint  \(report.checkpoint.origin) size \(report.checkpoint.size) root \(report.checkpoint.root)")
        print("  key         \(bundle.verifierKey) (the key of \(report.city)'s certificate, issued by the bundle's CA)")
        if let first = report.witnesses.first {
            let who = report.witnesses.map { "\($0.city) (\(RFC3339.format(microseconds: Int64($0.timestamp) * 1_000_000)))" }.joined(separator: ", ")
            print("  witnessed   size \(first.size) cosigned by \(who); the checkpoint above extends it")
        } else {
            print("  witnessed   no cosignature: no peer had cosigned a checkpoint of this log when the bundle was made")
        }
        for w in report.warnings { print("  warning     \(w)") }
        if ca == nil {
            print("  note        the CA was taken from the bundle itself: pass --ca <your federation's ca.pem> to check it is yours")
        }
    }
}

struct AuditReconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Compare two cities' evidence bundles: is every exchange between them in both ledgers, with both signatures?",
        discussion: """
            Example:
              citymesh audit export --dir hz --out hz.bundle
              citymesh audit export --dir sh --out sh.bundle
              citymesh audit reconcile hz.bundle sh.bundle --ca fed/ca.pem

            Each bundle is verified first, offline (certificates, signed checkpoint, every entry).
            Then every exchange receipt between the two cities (signed by the receiver,
            countersigned by the sender) is looked for in both ledgers. Exits 0 if every exchange is
            in both; 1 if any is missing on a side or any signature fails, listing exactly which.
            """)

    @Argument(help: "The first city's bundle.") var first: String
    @Argument(help: "The second city's bundle.") var second: String
    @Option(help: "The federation CA certificate you trust (PEM); both bundles' CA must be this one.") var ca: String?
    @OptionGroup var trust: BundleTrustOptions
    @OptionGroup var output: OutputOptions

    func validate() throws { try trust.validate() }

    func load(_ file: String) async throws -> (AuditBundle, AuditBundle.Report) {
        let bundle = try AuditVerifyBundle.read(file, trusting: ca)
        do { return (bundle, try await bundle.verify(now: Date(), revocations: try trust.revocations(), asOf: try trust.asOf())) } catch {
            throw CityMeshError(.ledgerCorrupt, "\(file) does not verify, so it cannot be reconciled: \(error)")
        }
    }

    func run() async throws {
        let (a, ra) = try await load(first)
        let (b, rb) = try await load(second)
        guard try PEM.certificates(a.caCertificate, what: first) == PEM.certificates(b.caCertificate, what: second) else {
            throw CityMeshError(.certificateForeignCA, "the two bundles come from different federations (different CA certificates)")
        }
        guard ra.city != rb.city else {
            throw CityMeshError(.invalidArgument, "both bundles are \(ra.city)'s ledger: give one bundle of each city")
        }
        for (bundle, report, file) in [(a, ra, first), (b, rb, second)] where !bundle.complete {
            Terminal.note("\(file) holds only part of \(report.city)'s ledger (exported with --since): exchanges before it show as missing")
        }
        let result = Reconciliation.compare(
            a: (ra.city, ra.entries, try PEM.certificates(a.nodeCertificate, what: first)[0]),
            b: (rb.city, rb.entries, try PEM.certificates(b.nodeCertificate, what: second)[0]),
            complete: a.complete && b.complete)
        if output.json {
            struct Row: Encodable {
                let receipt, share, sender, receiver, at: String
                let batches: [String]
                let records: Int
            }
            struct Outside: Encodable {
                let exchange: Row
                let why: String
            }
            struct Out: Encodable {
                let a, b: String
                let clean: Bool
                let matched: Int
                let onlyInA, onlyInB: [Row]
                let invalid: [String]
                let outsideAgreement: [Outside]
                let withoutAgreement: Int
                let batchesReceived: Int
                let receivedNotSent: [String]
            }
            func rows(_ x: [Reconciliation.Exchange]) -> [Row] {
                x.map { Row(receipt: $0.receipt, share: $0.share, sender: $0.sender, receiver: $0.receiver, at: $0.at, batches: $0.batches, records: $0.records) }
            }
            try printJSON(Out(
                a: result.a, b: result.b, clean: result.isClean, matched: result.matched.count, onlyInA: rows(result.onlyInA), onlyInB: rows(result.onlyInB),
                invalid: result.invalid, outsideAgreement: result.outsideAgreement.map { Outside(exchange: rows([$0.exchange])[0], why: $0.why) },
                withoutAgreement: result.unnamed, batchesReceived: result.batchesReceived, receivedNotSent: result.receivedNotSent))
        } else {
            let records = result.matched.reduce(0) { $0.saturatingAdd($1.records) }  // counts come from the bundles
            print("\(result.matched.count) exchanges between \(result.a) and \(result.b) are in both ledgers with both signatures (\(records) records)")
            for (side, other, list) in [(result.a, result.b, result.onlyInA), (result.b, result.a, result.onlyInB)] where !list.isEmpty {
                print("\(list.count) only in \(side)'s ledger, missing from \(other)'s:")
                for x in list {
                    print("  \(x.at.prefix(19))  \(x.share)  \(x.sender) -> \(x.receiver)  \(x.records) records  \(x.batches.joined(separator: " "))  receipt \(x.receipt.prefix(16))")
                }
            }
            if !result.outsideAgreement.isEmpty {
                print("\(result.outsideAgreement.count) exchanges outside any active agreement:")
                for (x, why) in result.outsideAgreement {
                    print("  \(x.at.prefix(19))  \(x.share)  \(x.sender) -> \(x.receiver)  \(x.records) records  receipt \(x.receipt.prefix(16)): \(why)")
                }
            }
            if a.complete && b.complete {
                print("\(result.batchesReceived) batches received by one from the other are in the sender's ledger as sent")
            }
            for gap in result.receivedNotSent { print("gap: \(gap)") }
            if result.unnamed > 0 { print("\(result.unnamed) exchanges have receipts made before receipts named their agreement: not checked against one") }
            for problem in result.invalid { print("invalid: \(problem)") }
        }
        if !result.isClean { throw ExitCode(1) }
    }
}

/// The federation CRL and the time a bundle's certificates are checked at.
struct BundleTrustOptions: ParsableArguments {
    @Option(help: "The federation CRL (PEM): signatures by certificates it revokes fail (unless made before --at).") var crl: String?
    @Option(help: "Check certificates as of this time (RFC 3339 or a date) instead of now: for old bundles of since expired or revoked certificates.") var at: String?

    func validate() throws {
        if let at, RFC3339.parse(at) == nil, RFC3339.parse(at + "T00:00:00Z") == nil {
            throw ValidationError("--at '\(at.prefix(60))' is not a time: write 2026-11-29 or 2026-11-29T08:00:00Z")
        }
    }

    func asOf() throws -> Date? {
        guard let at else { return nil }
        guard let micros = RFC3339.parse(at) ?? RFC3339.parse(at + "T00:00:00Z") else { throw ValidationError("--at is not a time") }
        return Date(timeIntervalSince1970: Double(micros) / 1_000_000)
    }

    func revocations() throws -> RevocationList? {
        guard let crl else { return nil }
        guard let text = FileManager.default.contents(atPath: crl).flatMap({ String(data: $0, encoding: .utf8) }) else {
            throw CityMeshError(.fileNotFound, "\(crl) does not exist or cannot be read: give the federation's CRL (PEM)")
        }
        return try RevocationList(pemEncoded: text, what: crl)
    }
}
