public import CityMeshCore
public import CityMeshStore
import Crypto
import CryptoExtras
import Foundation
import Metrics
public import Logging
import ServiceLifecycle
import Synchronization

/// The node's ledger as a service: the group-commit writer, the entries other parts report
/// (peer events), and the checkpoint publisher, which signs a C2SP checkpoint with the node's key
/// every `interval` while the log grows and once more at shutdown.
public final class LedgerService: Service, Sendable {
    public let ledger: LedgerStore
    public let signer: NoteSigner?
    let logger: Logger
    let interval: Duration
    let tree = Mutex(CompactRange())
    let stopping = Atomic<Bool>(false)
    /// Set when the stored log contradicts a checkpoint this node signed: signing stops for good.
    let broken = Atomic<Bool>(false)

    /// The log's origin and key name.
    public static func origin(_ city: CitySlug) -> String { "\(city).citymesh/ledger" }

    public init(ledger: LedgerStore, signer: NoteSigner?, logger: Logger, interval: Duration = .seconds(2)) {
        self.ledger = ledger
        self.signer = signer
        self.logger = logger
        self.interval = interval
    }

    /// The node's key (Ed25519 or P-256) as a note signer; nil (with the reason) for other key types,
    /// which `init` and `serve` refuse.
    public static func signer(city: CitySlug, keyPEM: String) -> (NoteSigner?, String?) {
        guard let key = NotePrivateKey(pem: keyPEM), let signer = try? NoteSigner(name: origin(city), key: key) else {
            return (nil, "checkpoints are signed with the node's key, and this node's key is neither Ed25519 nor ECDSA P-256: entries are logged but not signed")
        }
        return (signer, nil)
    }

    /// Appends an entry and returns once it is durable (group commit with other appends). There is
    /// no queue in between that could drop it or lose it in a crash: what the caller does after
    /// this returns (answer, send, go on) happens after its entry is on disk. An entry that cannot
    /// be written is logged and counted (`citymesh_ledger_append_failures_total`), and false is
    /// returned. Where the action itself is a store write, its entry goes in the write's own
    /// transaction instead (`NodeStore.logged`).
    @discardableResult
    public func record(_ entry: LedgerEntry) async -> Bool {
        do {
            _ = try await ledger.append(entry)
            return true
        } catch {
            Counter(label: "citymesh_ledger_append_failures_total", dimensions: [("kind", entry.kind)]).increment()
            logger.error("a ledger entry could not be written", metadata: ["ledger.kind": "\(entry.kind)", "error": "\(error)"])
            return false
        }
    }

    /// Which refusals are ledgered: see `RefusalThrottle`.
    let refusals = Mutex(RefusalThrottle())

    /// Records a refusal of what `peer` (a city, or an address for connections refused before
    /// anyone is known) sent, unless one like it was ledgered within the interval: then it is only
    /// counted (`citymesh_refusals_unledgered_total{kind}`), and the next entry ledgered for that
    /// peer and kind says how many were left out. Returns whether it was ledgered.
    @discardableResult
    public func recordRefusal(_ entry: LedgerEntry, peer: String, nowMicros: Int64) async -> Bool {
        var entry = entry
        guard admitRefusal(&entry, peer: peer, nowMicros: nowMicros) else { return false }
        return await record(entry)
    }

    /// The throttle of `recordRefusal` alone, for synchronous callers: whether to ledger `entry`
    /// (then with the count of those left out added to its detail).
    public func admitRefusal(_ entry: inout LedgerEntry, peer: String, nowMicros: Int64) -> Bool {
        let reason = (entry.reason ?? "") + " " + (entry.detail ?? "")
        guard let leftOut = refusals.withLock({ $0.admit(peer: peer, kind: entry.kind, reason: reason, now: nowMicros) }) else {
            Counter(label: "citymesh_refusals_unledgered_total", dimensions: [("kind", entry.kind)]).increment()
            return false
        }
        if leftOut > 0 {
            entry.detail = (entry.detail.map { $0 + "; " } ?? "") + "\(leftOut) more refusals of this kind from \(peer) were counted, not ledgered, since the last entry"
        }
        return true
    }

    public func run() async throws {
        let logger = logger
        ledger.onSlowCommit.withLock {
            $0 = { waited, committed, entries in
                logger.warning(
                    "slow ledger commit: appends waited for the database",
                    metadata: ["waited_ms": "\(waited.milliseconds)", "commit_ms": "\(committed.milliseconds)", "ledger.entries": "\(entries)"])
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.ledger.runWriter() }
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { inner in
                    inner.addTask {
                        while !self.stopping.load(ordering: .relaxed) {
                            // A stop must not wait out the interval (the last checkpoint is signed below).
                            try? await cancelOnGracefulShutdown { [interval = self.interval] in try await Task.sleep(for: interval) }
                            if self.stopping.load(ordering: .relaxed) { break }
                            await self.publishLogged()
                        }
                    }
                }
            } onGracefulShutdown: {
                self.stopping.store(true, ordering: .relaxed)
            }
            await publishLogged()
            ledger.finish()
        }
        logger.info("ledger closed")
    }

    func publishLogged() async {
        do { try await publish() } catch { logger.error("checkpoint not published", metadata: ["error": "\(error)"]) }
        await recordGauges()
    }

    /// citymesh_ledger_entries and citymesh_ledger_checkpoint_age_seconds (how long since the
    /// latest signed checkpoint; it grows while entries wait for one, or if signing stopped).
    func recordGauges() async {
        guard let size = try? await ledger.count() else { return }
        Gauge(label: "citymesh_ledger_entries").record(Double(size))
        if let created = try? await ledger.latestCheckpointTime(), let at = RFC3339.parse(created) {
            let age = Double(Int64(Date().timeIntervalSince1970 * 1_000_000) - at) / 1_000_000
            Gauge(label: "citymesh_ledger_checkpoint_age_seconds").record(max(0, age))
        }
    }

    /// Signs and stores a checkpoint of the whole log if it grew since the last one.
    @discardableResult
    public func publish() async throws -> Checkpoint? {
        guard let signer, !broken.load(ordering: .relaxed) else { return nil }
        let latest = try await ledger.latestCheckpoint()
        let signed = try latest.map { try Checkpoint.verify(signedNote: $0.note, key: signer.verifier) }
        let known = tree.withLock { $0.count }
        let leaves = try await ledger.leafHashes(from: known)
        let (size, root, consistent) = tree.withLock { t -> (UInt64, MerkleHash, Bool) in
            var consistent = true
            // Another publish may have advanced the tree meanwhile; only append what it lacks.
            for leaf in leaves.dropFirst(Int(t.count - known)) {
                t.append(leaf)
                if let signed, t.count == signed.size, t.root != signed.root { consistent = false }
            }
            return (t.count, t.root, consistent)
        }
        // Never sign a tree that contradicts what this log signed before (C2SP tlog-checkpoint).
        guard consistent, size >= (signed?.size ?? 0) else {
            broken.store(true, ordering: .relaxed)
            throw CityMeshError(
                .internalError,
                "the stored ledger does not match its last signed checkpoint (size \(signed?.size ?? 0)): entries were altered or removed; no further checkpoints are signed. Run 'citymesh audit verify' to find the first bad entry")
        }
        if let latest, latest.size >= size { return nil }
        guard size > 0 else { return nil }
        let checkpoint = Checkpoint(origin: signer.verifier.name, size: size, root: root)
        let note = try signer.sign(checkpoint.text)
        try await ledger.saveCheckpoint(size: size, note: note, createdAt: RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)))
        logger.debug("checkpoint published", metadata: ["ledger.size": "\(size)"])
        return checkpoint
    }
}

extension Duration {
    /// Whole milliseconds, for logs.
    var milliseconds: Int64 { components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000 }
}

extension NotePrivateKey {
    /// The node key from its PEM file; nil for other key types (which `init` and `serve` refuse).
    public init?(pem: String) {
        if let k = try? Curve25519.Signing.PrivateKey(pemRepresentation: pem) {
            self = .ed25519(k)
        } else if let k = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            self = .p256(k)
        } else {
            return nil
        }
    }
}
