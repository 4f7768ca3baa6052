public import CityMeshCore
public import CityMeshStore
import Crypto
import Foundation
import Synchronization

/// The node's sharing policy: checks documents against the node's datasets, applies them as
/// signed, ledgered versions, and holds the one in force for the enforcement points and
/// `explain`. A new version is in force as soon as `apply` returns; no restart.
public final class PolicyManager: Sendable {
    let store: NodeStore
    let ledger: LedgerStore?
    let signer: NoteSigner?
    let clock: @Sendable () -> Int64
    /// Whether a member has accepted a share; agreements decide it (until they exist, nobody has).
    let accepted: PolicyEngine.Accepted
    let live = Mutex<(version: PolicyVersion?, engine: PolicyEngine?)>((nil, nil))
    let listeners = Mutex<[@Sendable () async -> Void]>([])

    /// Called after each new version is in force (and after `load`): agreements follow the policy.
    public func onChange(_ listener: @escaping @Sendable () async -> Void) { listeners.withLock { $0.append(listener) } }

    func changed() async {
        for l in listeners.withLock({ $0 }) { await l() }
    }

    public var city: CitySlug { store.city }

    /// The note name policy versions are signed under: `<city>.citymesh/policy`.
    public static func noteName(_ city: CitySlug) -> String { "\(city).citymesh/policy" }

    /// `clock` gives microseconds since the epoch.
    public init(
        store: NodeStore, ledger: LedgerStore?, signer: NoteSigner?, clock: @escaping @Sendable () -> Int64,
        accepted: @escaping PolicyEngine.Accepted = { _, _ in false }
    ) {
        self.store = store
        self.ledger = ledger
        self.signer = signer
        self.clock = clock
        self.accepted = accepted
    }

    /// Puts the latest stored version in force (at start). A version that no longer checks
    /// against the datasets (one was dropped since) is kept but enforces nothing: default deny.
    @discardableResult
    public func load() async throws -> PolicyIssues? {
        guard let version = try await store.policyVersion() else { return nil }
        do {
            let (policy, context) = try await check(version.document)
            let engine = try PolicyEngine(city: city, policy: policy, schemas: context.datasets)
            live.withLock { $0 = (version, engine) }
            return nil
        } catch let issues as PolicyIssues {
            live.withLock { $0 = (version, nil) }
            return issues
        }
    }

    public var current: PolicyVersion? { live.withLock { $0.version } }
    public var engine: PolicyEngine? { live.withLock { $0.engine } }

    func context() async throws -> PolicyContext {
        var schemas: [String: Schema] = [:]
        for info in try await store.datasets() where info.id.owner == city { schemas[info.id.name] = info.schema }
        return PolicyContext(city: city, datasets: schemas, now: clock())
    }

    /// Loads and checks `document` against this node's datasets and the present time.
    public func check(_ document: String) async throws -> (Policy, PolicyContext) {
        let context = try await context()
        return (try Policy.load(yaml: document, context: context), context)
    }

    /// What applying `document` would change, against the version in force.
    public func diff(_ document: String) async throws -> [PolicyDiff.Change] {
        let (new, _) = try await check(document)
        let old = live.withLock { $0.engine?.policy }
        return PolicyDiff.between(old, new)
    }

    /// Checks, stores, signs and ledgers `document` as the next version and puts it in force.
    /// An unchanged document is not a new version.
    public func apply(_ document: String, actor: String) async throws -> (version: PolicyVersion, changes: [PolicyDiff.Change], unchanged: Bool) {
        let (policy, context) = try await check(document)
        let engine = try PolicyEngine(city: city, policy: policy, schemas: context.datasets)
        let sha = SHA256.hash(data: Array(document.utf8)).map { String(format: "%02x", $0) }.joined()
        if let current = try await store.policyVersion(), current.sha256 == sha {
            live.withLock { $0 = (current, engine) }
            return (current, [], true)
        }
        let old = live.withLock { $0.engine?.policy }
        let changes = PolicyDiff.between(old, policy)
        let at = RFC3339.format(microseconds: clock())
        let signer = self.signer
        let city = self.city
        let version = try await store.appendPolicyVersion { number in
            let note = try signer.map { s in
                try s.sign("\(Self.noteName(city))\nversion \(number)\nsha256 \(sha)\napplied_by \(actor)\napplied_at \(at)\n")
            }
            return PolicyVersion(version: number, document: document, sha256: sha, appliedBy: actor, appliedAt: at, signedNote: note)
        }
        live.withLock { $0 = (version, engine) }
        defer { Task { await self.changed() } }
        _ = try await ledger?.append(LedgerEntry(
            time: at, kind: LedgerEntry.Kind.policyApplied, actor: actor,
            counts: ["version": version.version, "shares": policy.shares.count, "accept": policy.accept.count, "changes": changes.count],
            hashes: ["document.sha256": sha], detail: changes.prefix(20).map(\.description).joined(separator: "; ")))
        return (version, changes, false)
    }

    /// What `member` gets of this node's `dataset` under the policy in force, and why.
    public func explain(member: CitySlug, dataset: String) async throws -> PolicyEngine.Explanation {
        let name = dataset.hasPrefix("\(city)/") ? String(dataset.dropFirst(city.rawValue.count + 1)) : dataset
        guard try await store.datasets().contains(where: { $0.id.owner == city && $0.id.name == name }) else {
            throw CityMeshError(.datasetNotFound, "this node has no dataset '\(dataset)': see 'citymesh dataset list'")
        }
        guard let engine = live.withLock({ $0.engine }) else {
            let empty = try PolicyEngine(city: city, policy: Policy(), schemas: try await context().datasets)
            return empty.explain(dataset: name, for: member, now: clock(), accepted: accepted)
        }
        return engine.explain(dataset: name, for: member, now: clock(), accepted: accepted)
    }
}
