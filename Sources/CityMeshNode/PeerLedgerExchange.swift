public import CityMeshCore
import CityMeshNet
import CityMeshStore
import Crypto
import Foundation
public import Logging
import NIOCore
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
    let seen = Mutex<[CitySlug: Checkpoint]>([:])
    public static let timeout: Duration = .seconds(10)

    public init(ledger: LedgerStore, logger: Logger) {
        prover = StoreProver(ledger: ledger)
        self.logger = logger
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    /// Handles a DATA message on the ledger channel: answers requests, wakes waiting callers.
    func receive(_ message: PeerMessage) {
        guard message.channel == LedgerWire.channel else { return }
        let decoded: LedgerWire
        do { decoded = try LedgerWire.decode(Array(message.payload.readableBytesView)[...]) } catch {
            logger.warning("malformed ledger message from a peer", metadata: ["peer": "\(message.city)", "error": "\(error)"])
            return
        }
        if decoded.isRequest {
            Task {
                guard let answer = await LedgerWire.answer(decoded, from: prover) else { return }
                do { try await network.withLock { $0 }?.send(to: message.city, channel: LedgerWire.channel, payload: answer.encoded()) } catch {
                    logger.debug("ledger answer not sent", metadata: ["peer": "\(message.city)", "error": "\(error)"])
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
        guard let key = Curve25519.Signing.PublicKey(identity.certificate.publicKey) else {
            throw CityMeshError(.keyInvalid, "\(city)'s certificate key is not Ed25519, so its checkpoints are not signed")
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
        if let earlier = seen.withLock({ $0[city] }), earlier.size > 0 {
            if earlier.size > checkpoint.size {
                throw CityMeshError(.ledgerCorrupt, "\(city)'s log shrank from \(earlier.size) to \(checkpoint.size) entries: keep both checkpoints as evidence")
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
                logger.error("a peer's log is not consistent with its earlier checkpoint", metadata: ["peer": "\(city)", "error": "\(error)"])
                throw CityMeshError(.ledgerCorrupt, "\(city)'s checkpoint at \(checkpoint.size) is not consistent with its checkpoint at \(earlier.size) (\(error)): it shows two histories")
            }
            consistentWith = earlier.size
        }
        seen.withLock { s in
            if (s[city]?.size ?? 0) <= checkpoint.size { s[city] = checkpoint }
        }
        return Observed(
            city: city.rawValue, note: note, size: checkpoint.size, root: checkpoint.root.base64, keyName: verifier.vkey, consistentWith: consistentWith)
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
