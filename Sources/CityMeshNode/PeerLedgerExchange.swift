public import CityMeshCore
import CityMeshNet
import CityMeshStore
import Crypto
import Foundation
public import Logging
import NIOCore
import ServiceLifecycle
import SwiftASN1
import Synchronization
import X509

/// The ledger over the peer transport (channel 3): answers peers' requests for this node's
/// signed checkpoint and proofs, and asks peers for theirs, checking each checkpoint's
/// signature with the key in the peer's certificate and its consistency with the last one seen.
public final class PeerLedgerExchange: Sendable {
    struct StoreProver: LedgerProver {
        let ledger: LedgerStore
        func latestCheckpoint() async throws -> String? { try await ledger.latestCheckpoint()?.note }
        func inclusionProof(index: UInt64, size: UInt64) async throws -> [MerkleHash] { try await ledger.inclusionProof(index: index, size: size).proof }
        func consistencyProof(size1: UInt64, size2: UInt64) async throws -> [MerkleHash] { try await ledger.consistencyProof(size1: size1, size2: size2).proof }
        func size() async throws -> UInt64 { try await ledger.count() }
    }

    /// A peer's checkpoint as fetched and checked here.
    public struct Observed: Sendable, Codable {
        public let city: String
        public let note: String
        public let size: UInt64
        public let root: String
        public let keyName: String
        /// The size of the earlier checkpoint of this peer that this one was proven consistent with.
        public let consistentWith: UInt64?
    }

    let prover: StoreProver
    let logger: Logger
    let network = Mutex<PeerNetwork?>(nil)
    typealias Waiter = CheckedContinuation<LedgerWire, any Error>
    let pending = Mutex<[String: Waiter]>([:])
    let nextID = Atomic<UInt32>(1)
    /// The latest checkpoint seen of each peer, with its signed note (kept as evidence).
    let seen = Mutex<[CitySlug: (checkpoint: Checkpoint, note: String)]>([:])
    /// Witnessing: where peers' checkpoints are kept, and where a fork is ledgered.
    let witness = Mutex<(store: NodeStore, ledger: LedgerService)?>(nil)
    /// This node as a witness: cosigns the peers' checkpoints it checked (nil without an Ed25519 key).
    let cosigner: Cosigner?
    /// What this node last cosigned of each peer: the size and when.
    let cosigned = Mutex<[CitySlug: (size: UInt64, at: ContinuousClock.Instant)]>([:])
    /// Requests and cosignatures from each peer, handled in order, a bounded number waiting.
    let inbox = PeerInbox<LedgerWire>(channel: "ledger")
    /// A checkpoint cosigned again, unchanged, after this long (so its cosignature stays fresh).
    public static let recosignAfter: Duration = .seconds(300)
    public static let timeout: Duration = .seconds(10)

    public init(ledger: LedgerStore, cosigner: Cosigner? = nil, logger: Logger) {
        prover = StoreProver(ledger: ledger)
        self.cosigner = cosigner
        self.logger = logger
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    /// Starts witnessing: peers' checkpoints seen before a restart are loaded and checked against.
    func witness(store: NodeStore, ledger: LedgerService) async {
        witness.withLock { $0 = (store, ledger) }
        for (city, kept) in (try? await store.peerCheckpoints()) ?? [:] {
            guard let c = Self.parse(note: kept.note) else { continue }
            seen.withLock { s in if (s[city]?.checkpoint.size ?? 0) <= c.size { s[city] = (c, kept.note) } }
        }
    }

    /// The size and root of a checkpoint note, unverified (for notes this node verified before).
    static func parse(note: String) -> Checkpoint? {
        let lines = note.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 3, let size = UInt64(lines[1]), let root = MerkleHash(base64: String(lines[2])) else { return nil }
        return Checkpoint(origin: String(lines[0]), size: size, root: root)
    }

    /// A city showed two histories: ledger it with both signed checkpoints as evidence.
    func flagFork(_ city: CitySlug, earlier: String, later: String, why: String) async {
        logger.error("a city shows two histories of its ledger", metadata: ["peer": "\(city)", "why": "\(why)"])
        guard let (_, ledger) = witness.withLock({ $0 }) else { return }
        await ledger.record(LedgerEntry(
            time: RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)), kind: LedgerEntry.Kind.peerForked, actor: "node", peer: city.rawValue,
            reason: why, detail: "evidence — first checkpoint:\n\(earlier)\nsecond checkpoint:\n\(later)"))
    }

    /// Keeps a verified checkpoint of `city`; a different one of the same size is a fork.
    func keep(_ city: CitySlug, _ checkpoint: Checkpoint, note: String) async {
        guard let (store, _) = witness.withLock({ $0 }) else { return }
        let now = RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000))
        if let other = try? await store.savePeerCheckpoint(city: city, size: checkpoint.size, root: checkpoint.root.base64, note: note, at: now) {
            await flagFork(city, earlier: other, later: note, why: "two signed checkpoints of size \(checkpoint.size) with different roots")
        }
    }

    /// A checkpoint of `city` that another peer passed on (gossip): verified with `city`'s key and
    /// compared with what this node holds of it.
    func witnessed(_ city: CitySlug, note: String, certificate: Certificate) async {
        guard let key = NoteKey(certificate.publicKey),
            let verifier = try? NoteVerifier(name: LedgerService.origin(city), publicKey: key),
            let checkpoint = try? Checkpoint.verify(signedNote: note, key: verifier)
        else { return }
        let earlier = seen.withLock { $0[city] }
        if let (earlier, earlierNote) = earlier, earlier.size == checkpoint.size, earlier.root != checkpoint.root {
            await flagFork(city, earlier: earlierNote, later: note, why: "two signed checkpoints of size \(checkpoint.size) with different roots")
            return
        }
        // Kept only when it extends what this node holds of the city, proven like a fetched one
        // (threat model G12): a checkpoint that is older, or that the city cannot prove
        // consistent (it is not connected here, or has no proof), serves only the same-size
        // comparison above.
        guard let (held, heldNote) = earlier else {
            await keep(city, checkpoint, note: note)
            seen.withLock { s in if s[city] == nil { s[city] = (checkpoint, note) } }
            return
        }
        guard checkpoint.size > held.size, network.withLock({ $0 })?.identity(of: city) != nil else { return }
        guard case .consistency(_, _, _, let hashes)? = try? await ask(city, { .getConsistency(id: $0, size1: held.size, size2: checkpoint.size) }) else { return }
        do {
            try Merkle.verifyConsistency(size1: held.size, size2: checkpoint.size, root1: held.root, root2: checkpoint.root, proof: hashes)
        } catch {
            await flagFork(city, earlier: heldNote, later: note, why: "checkpoint \(checkpoint.size), passed on by a peer, is not consistent with checkpoint \(held.size): \(error)")
            return
        }
        seen.withLock { s in if (s[city]?.checkpoint.size ?? 0) < checkpoint.size { s[city] = (checkpoint, note) } }
        await keep(city, checkpoint, note: note)
    }

    /// Handles a DATA message on the ledger channel: answers requests, wakes waiting callers.
    func receive(_ message: PeerMessage) {
        guard message.channel == LedgerWire.channel else { return }
        let decoded: LedgerWire
        do { decoded = try LedgerWire.decode(Array(message.payload.readableBytesView)[...]) } catch {
            logger.warning("malformed ledger message from a peer", metadata: ["peer": "\(message.city)", "error": "\(error)"])
            return
        }
        let peer = message.city
        if case .cosignature(_, let size, let line) = decoded {
            inbox.submit(decoded, from: peer) { _ in await self.acceptCosignature(from: peer, size: size, line: line) }
        } else if decoded.isRequest {
            // Requests are answered in order, at most `inbox.limit` waiting per peer.
            inbox.submit(decoded, from: peer) { request in
                guard let answer = await LedgerWire.answer(request, from: self.prover) else { return }
                do { try await self.network.withLock { $0 }?.send(to: peer, channel: LedgerWire.channel, payload: answer.encoded()) } catch {
                    self.logger.debug("ledger answer not sent", metadata: ["peer": "\(peer)", "error": "\(error)"])
                }
            }
        } else if let waiter = pending.withLock({ $0.removeValue(forKey: Self.key(message.city, decoded.id)) }) {
            waiter.resume(returning: decoded)
        }
    }

    static func key(_ city: CitySlug, _ id: UInt32) -> String { "\(city)/\(id)" }

    /// Sends a request to `city` and waits for its answer (or the timeout).
    func ask(_ city: CitySlug, _ make: (UInt32) -> LedgerWire) async throws -> LedgerWire {
        guard let network = network.withLock({ $0 }) else { throw CityMeshError(.nodeNotRunning, "the peer transport is not running") }
        let id = nextID.add(1, ordering: .relaxed).newValue
        let key = Self.key(city, id)
        let request = make(id).encoded()
        return try await withThrowingTaskGroup(of: LedgerWire?.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { (waiter: Waiter) in
                    self.pending.withLock { $0[key] = waiter }
                    Task {
                        do { try await network.send(to: city, channel: LedgerWire.channel, payload: request) } catch {
                            self.pending.withLock { $0.removeValue(forKey: key) }?.resume(throwing: error)
                        }
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(for: Self.timeout)
                self.pending.withLock { $0.removeValue(forKey: key) }?.resume(
                    throwing: CityMeshError(.ioError, "\(city) did not answer within \(Self.timeout): check 'citymesh peers'"))
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let answer = next { return answer }
            }
            throw CityMeshError(.ioError, "\(city) did not answer")
        }
    }

    /// Fetches `city`'s latest checkpoint, verifies its signature with the key of the certificate
    /// the peer connected with, and proves it consistent with the last one seen from that peer.
    public func fetchCheckpoint(_ city: CitySlug) async throws -> Observed {
        guard let network = network.withLock({ $0 }), let identity = network.identity(of: city) else {
            throw CityMeshError(.nodeNotRunning, "no connection to '\(city)': check 'citymesh peers'")
        }
        guard let key = NoteKey(identity.certificate.publicKey) else {
            throw CityMeshError(.keyInvalid, "\(city)'s certificate key is neither Ed25519 nor ECDSA P-256, so its checkpoints cannot be checked")
        }
        let verifier = try NoteVerifier(name: LedgerService.origin(city), publicKey: key)
        let note: String
        switch try await ask(city, { .getCheckpoint(id: $0) }) {
        case .checkpoint(_, let n): note = n
        case .error(_, let message): throw CityMeshError(.recordNotFound, "\(city): \(message)")
        default: throw CityMeshError(.ioError, "\(city) answered a checkpoint request with something else")
        }
        let checkpoint: Checkpoint
        do { checkpoint = try Checkpoint.verify(signedNote: note, key: verifier) } catch {
            throw CityMeshError(.certificateInvalid, "\(city)'s checkpoint does not verify with the key in its certificate: \(error)")
        }
        var consistentWith: UInt64?
        if let (earlier, earlierNote) = seen.withLock({ $0[city] }), earlier.size > 0 {
            if earlier.size > checkpoint.size {
                await flagFork(city, earlier: earlierNote, later: note, why: "its log shrank from \(earlier.size) to \(checkpoint.size) entries")
                throw CityMeshError(.ledgerCorrupt, "\(city)'s log shrank from \(earlier.size) to \(checkpoint.size) entries: both checkpoints are kept as evidence in the ledger")
            }
            if earlier.size == checkpoint.size, earlier.root != checkpoint.root {
                await flagFork(city, earlier: earlierNote, later: note, why: "two signed checkpoints of size \(checkpoint.size) with different roots")
                throw CityMeshError(.ledgerCorrupt, "\(city) shows two histories: it signed two different checkpoints of size \(checkpoint.size); both are kept as evidence in the ledger")
            }
            let hashes: [MerkleHash]
            switch try await ask(city, { .getConsistency(id: $0, size1: earlier.size, size2: checkpoint.size) }) {
            case .consistency(_, _, _, let h): hashes = h
            case .error(_, let message): throw CityMeshError(.ioError, "\(city) gave no consistency proof: \(message)")
            default: throw CityMeshError(.ioError, "\(city) answered a consistency request with something else")
            }
            do {
                try Merkle.verifyConsistency(size1: earlier.size, size2: checkpoint.size, root1: earlier.root, root2: checkpoint.root, proof: hashes)
            } catch {
                await flagFork(city, earlier: earlierNote, later: note, why: "checkpoint \(checkpoint.size) is not consistent with checkpoint \(earlier.size): \(error)")
                throw CityMeshError(.ledgerCorrupt, "\(city)'s checkpoint at \(checkpoint.size) is not consistent with its checkpoint at \(earlier.size) (\(error)): it shows two histories")
            }
            consistentWith = earlier.size
        }
        seen.withLock { s in
            if (s[city]?.checkpoint.size ?? 0) <= checkpoint.size { s[city] = (checkpoint, note) }
        }
        await keep(city, checkpoint, note: note)
        await cosign(city, checkpoint: checkpoint, note: note)
        return Observed(
            city: city.rawValue, note: note, size: checkpoint.size, root: checkpoint.root.base64, keyName: verifier.vkey, consistentWith: consistentWith)
    }

    /// Witnessing: cosigns `city`'s checkpoint, just checked (signature, and consistency with the
    /// largest one seen before), and sends the cosignature to `city` to keep and publish. An
    /// unchanged checkpoint is cosigned again only every `recosignAfter`.
    func cosign(_ city: CitySlug, checkpoint: Checkpoint, note: String) async {
        guard let cosigner, let network = network.withLock({ $0 }) else { return }
        let now = ContinuousClock.now
        let due = cosigned.withLock { c -> Bool in
            if let last = c[city], last.size == checkpoint.size, now - last.at < Self.recosignAfter { return false }
            c[city] = (checkpoint.size, now)
            return true
        }
        guard due, let text = try? SignedNote(parsing: note).text else { return }
        do {
            let cosignature = try cosigner.cosign(checkpointText: text, timestamp: UInt64(Date().timeIntervalSince1970))
            let message = LedgerWire.cosignature(id: nextID.add(1, ordering: .relaxed).newValue, size: checkpoint.size, line: cosignature.line)
            try await network.send(to: city, channel: LedgerWire.channel, payload: message.encoded())
        } catch {
            cosigned.withLock { $0[city] = nil }
            logger.debug("cosignature not sent", metadata: ["peer": "\(city)", "error": "\(error)"])
        }
    }

    /// The origin's side: a peer cosigned one of this node's checkpoints. It is kept only if it
    /// verifies with the key of the certificate the peer connected with, under the peer's witness
    /// name, over the checkpoint this node signed at that size.
    func acceptCosignature(from city: CitySlug, size: UInt64, line: String) async {
        func refuse(_ why: String) {
            logger.warning("a peer's cosignature was not kept", metadata: ["peer": "\(city)", "ledger.size": "\(size)", "why": "\(why)"])
        }
        guard let identity = network.withLock({ $0 })?.identity(of: city) else { return refuse("the peer is no longer connected") }
        guard let key = NoteKey(identity.certificate.publicKey) else {
            return refuse("the peer's certificate key is neither Ed25519 nor ECDSA P-256, so it cannot cosign")
        }
        do {
            let witness = try CosignerKey(name: Cosignature.witnessName(city), publicKey: key)
            let cosignature = try Cosignature(line: line)
            guard let note = try await prover.ledger.checkpoint(size: size) else { return refuse("this node signed no checkpoint of that size") }
            try cosignature.verify(checkpointText: try SignedNote(parsing: note).text, key: witness)
            let now = UInt64(Date().timeIntervalSince1970)
            guard cosignature.timestamp <= now + 600 else { return refuse("its timestamp is more than 10 minutes in the future") }
            let pem = try identity.certificate.serializeAsPEM().pemString
            try await prover.ledger.saveCosignature(LedgerStore.StoredCosignature(
                size: size, witness: witness.name, city: city.rawValue, timestamp: cosignature.timestamp, line: cosignature.line, certificate: pem))
            logger.debug("checkpoint cosigned by a peer", metadata: ["peer": "\(city)", "ledger.size": "\(size)"])
        } catch {
            refuse("\(error)")
        }
    }

    /// Asks `city` for the inclusion proof of its entry `index` in its tree of `size`.
    public func inclusionProof(_ city: CitySlug, index: UInt64, size: UInt64) async throws -> [MerkleHash] {
        switch try await ask(city, { .getInclusion(id: $0, index: index, size: size) }) {
        case .inclusion(_, let i, let s, let hashes) where i == index && s == size: return hashes
        case .error(_, let message): throw CityMeshError(.invalidArgument, "\(city): \(message)")
        default: throw CityMeshError(.ioError, "\(city) answered an inclusion request with something else")
        }
    }
}

/// Peers as witnesses (DESIGN.md §6): every `interval`, fetch each connected peer's checkpoint
/// (checked against the last one kept, with a consistency proof), keep it, and pass it on to the
/// other peers, who check it against what that city showed them. A city that shows two
/// histories is ledgered as `peer.forked` with both signed checkpoints.
struct WitnessService: Service {
    let exchange: PeerLedgerExchange
    let replication: ReplicationService
    let interval: Duration

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // A stop must not wait out the interval.
            try? await cancelOnGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            if Task.isShuttingDownGracefully || Task.isCancelled { break }
            guard let network = exchange.network.withLock({ $0 }) else { continue }
            let peers = network.status().peers.filter { $0.state == .connected }.map(\.city)
            for city in peers {
                guard let got = try? await exchange.fetchCheckpoint(city) else { continue }
                for other in peers where other != city {
                    await replication.send(.checkpoint(city: city, note: got.note), to: other)
                }
            }
        }
    }
}
