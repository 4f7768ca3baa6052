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
    /// The cities this node knows as peers (seeds, addresses learned, connected), for warnings; nil if unknown.
    let knownCities = Mutex<(@Sendable () -> Set<String>)?>(nil)

    public func setKnownCities(_ f: @escaping @Sendable () -> Set<String>) { knownCities.withLock { $0 = f } }

    /// Things worth knowing that do not stop a policy: cities this node has never heard of.
    public func warnings(_ policy: Policy) -> [String] {
        guard let known = knownCities.withLock({ $0 })?() else { return [] }
        var out: [String] = []
        for share in policy.shares {
            for c in share.to where !known.contains(c.rawValue) {
                out.append("share '\(share.id)': \(c) is not known to this node yet (no seed, no address learned by gossip, never connected); its offer goes once its address is learned or it connects")
            }
        }
        for a in policy.accept where !known.contains(a.from.rawValue) {
            out.append("accept '\(a.from)/\(a.share)': \(a.from) is not known to this node yet (no seed, no address learned by gossip, never connected)")
        }
        return out
    }

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

    /// What applying `document` would change, against the version in force, and its warnings.
    public func diff(_ document: String) async throws -> (changes: [PolicyDiff.Change], warnings: [String]) {
        let (new, _) = try await check(document)
        let old = live.withLock { $0.engine?.policy }
        return (PolicyDiff.between(old, new), warnings(new))
    }

    /// Checks, stores, signs and ledgers `document` as the next version and puts it in force.
    /// An unchanged document is not a new version.
    public func apply(_ document: String, actor: String) async throws -> (version: PolicyVersion, changes: [PolicyDiff.Change], unchanged: Bool) {
        let (policy, context) = try await check(document)
        let engine = try PolicyEngine(city: city, policy: policy, schemas: context.datasets)
        let sha = Hex.lower(SHA256.hash(data: Array(document.utf8)))
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

    // MARK: Enforcement points (replication calls these)

    /// The engine in force, or an empty one (default deny) when no policy was applied.
    func engineInForce() async throws -> PolicyEngine {
        if let engine = live.withLock({ $0.engine }) { return engine }
        return try PolicyEngine(city: city, policy: Policy(), schemas: try await context().datasets)
    }

    static func reader(_ state: RecordState, _ schema: Schema) -> (String) -> Value? {
        { name in schema.field(named: name).flatMap { f in state.cell(field: f.id)?.value } }
    }

    /// Exactly the fields of record `key` that may be sent to `member` now, with their values; a
    /// denial otherwise. Denials other than the row filter (a record simply outside the view)
    /// are ledgered with their reason when `ledgered`.
    public func view(dataset: String, key: String, for member: CitySlug, ledgered: Bool = true) async throws -> Result<[String: Value?], PolicyEngine.Denial> {
        let id = try DatasetID(owner: city, name: dataset)
        let info = try await store.dataset(id)
        guard let record = try await store.get(id, key: key), record.state.isLive else {
            throw CityMeshError(.recordNotFound, "no record '\(key)' in \(id)")
        }
        let value = Self.reader(record.state, info.schema)
        switch try await engineInForce().view(dataset: dataset, for: member, now: clock(), accepted: accepted, value: value) {
        case .success(let fields):
            return .success(Dictionary(fields.map { ($0, value($0)) }, uniquingKeysWith: { a, _ in a }))
        case .failure(let denial):
            if ledgered, denial.code != "row_filtered" { try await deny(denial, member: member, dataset: id, key: key) }
            return .failure(denial)
        }
    }

    /// Whether `member` may write `field` of record `key`; every denial is ledgered.
    public func mayWrite(dataset: String, key: String, field: String, member: CitySlug) async throws -> Result<String, PolicyEngine.Denial> {
        let id = try DatasetID(owner: city, name: dataset)
        let info = try await store.dataset(id)
        let state = try await store.get(id, key: key)?.state ?? RecordState()
        switch try await engineInForce().mayWrite(dataset: dataset, member: member, field: field, now: clock(), accepted: accepted, value: Self.reader(state, info.schema)) {
        case .success(let share): return .success(share.id)
        case .failure(let denial):
            try await deny(denial, member: member, dataset: id, key: key, field: field)
            return .failure(denial)
        }
    }

    func deny(_ denial: PolicyEngine.Denial, member: CitySlug, dataset: DatasetID, key: String, field: String? = nil) async throws {
        guard let ledger else { return }
        // The record key as a keyed hash (docs/auditing.md §1), never as its plain SHA-256.
        let hashes = try await store.ledgerKey(for: dataset).entryHashes(key)
        _ = try await ledger.append(LedgerEntry(
            time: RFC3339.format(microseconds: clock()), kind: LedgerEntry.Kind.policyDenied, actor: "peer:\(member)", peer: member.rawValue,
            dataset: dataset.description, hashes: hashes, reason: denial.code,
            detail: (field.map { "write of '\($0)': " } ?? "") + denial.description))
    }

    /// What `member` gets of this node's `dataset` under the policy in force, and why; or under
    /// `draft`, a policy document not applied yet (it must validate).
    public func explain(member: CitySlug, dataset: String, draft: String? = nil) async throws -> PolicyEngine.Explanation {
        let name = dataset.hasPrefix("\(city)/") ? String(dataset.dropFirst(city.rawValue.count + 1)) : dataset
        guard try await store.datasets().contains(where: { $0.id.owner == city && $0.id.name == name }) else {
            throw CityMeshError(.datasetNotFound, "this node has no dataset '\(dataset)': see 'citymesh dataset list'")
        }
        if let draft {
            let (policy, context) = try await check(draft)
            return try PolicyEngine(city: city, policy: policy, schemas: context.datasets).explain(dataset: name, for: member, now: clock(), accepted: accepted)
        }
        guard let engine = live.withLock({ $0.engine }) else {
            let empty = try PolicyEngine(city: city, policy: Policy(), schemas: try await context().datasets)
            return empty.explain(dataset: name, for: member, now: clock(), accepted: accepted)
        }
        return engine.explain(dataset: name, for: member, now: clock(), accepted: accepted)
    }
}
