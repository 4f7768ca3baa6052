/// The sync session's decisions that are not anti-entropy's (DESIGN.md §1): which shares a city
/// takes part in, and the receipts of its exchanges. Value types and pure functions; the node's
/// `ReplicationService` loads what they read, performs what they return, and the simulator
/// (`FederationSimulator`) drives the same types, so its invariants cover the production rules.
///
/// Together with ``AntiEntropy`` (what to pull and push), ``ShareView`` (what an owner cuts for
/// its members), ``WriteRights`` (what a receiver may take) and ``Erasure`` (what a compaction
/// pass removes), this is the whole protocol of a sync session.

// MARK: - Which shares

/// One share as a node takes part in it, worked out by ``ShareDirectory/plan(_:)``.
public struct SyncShare: Sendable, Equatable {
    /// `<owner>/<share>`.
    public let id: String
    public let owner: CitySlug
    public let name: String
    public let dataset: DatasetID
    /// Who besides this node exchanges its batches.
    public var parties: Set<CitySlug>
    /// Field names of the view (the key included) and those members may write.
    public var fields: [String]
    public var write: [String]
    public var filter: String?
    public var isOwner: Bool

    public init(
        id: String, owner: CitySlug, name: String, dataset: DatasetID, parties: Set<CitySlug>, fields: [String], write: [String], filter: String?, isOwner: Bool
    ) {
        self.id = id
        self.owner = owner
        self.name = name
        self.dataset = dataset
        self.parties = parties
        self.fields = fields
        self.write = write
        self.filter = filter
        self.isOwner = isOwner
    }

    /// The row filter checked against `schema` (nil: none, or one that no longer parses).
    public func rowFilter(schema: Schema?) -> RowFilter? {
        guard let filter, let schema else { return nil }
        return try? RowFilter(filter, schema: schema)
    }

    /// What the owner cuts for its members (`schema`: the owner's dataset).
    public func view(schema: Schema) -> ShareView {
        ShareView(fields: Set(fields.compactMap { schema.field(named: $0)?.id }), filter: rowFilter(schema: schema), schema: schema)
    }

    /// Who may write what (`schema`: the receiver's dataset or replica; nil: no replica yet).
    public func rights(schema: Schema?) -> WriteRights {
        WriteRights(owner: owner, view: Set(fields), writable: Set(write), filter: rowFilter(schema: schema), schema: schema)
    }

    /// Why a batch of this share received at `me` is refused before anything else is checked
    /// (nil: it may be): it must name this share and its dataset, and its origin must be a party
    /// (or this node itself, relayed back).
    public func refusal(of batch: ChangeBatch, at me: CitySlug) -> String? {
        guard batch.share == id, batch.dataset == dataset.description else { return "the batch names share \(batch.share) of \(batch.dataset)" }
        guard batch.origin == owner || parties.contains(batch.origin) || batch.origin == me else { return "\(batch.origin) is not party to share \(id)" }
        return nil
    }

    /// How a batch meets this node's copy of the dataset.
    public enum Founding: Sendable, Equatable {
        /// Take it; a replica learns `fields` (the owner's, within the view) and keys by `keyField`.
        case take(fields: [Schema.Field], keyField: String)
        /// Not now: a co-member's batch before the owner's first (anti-entropy brings it again).
        case wait(String)
        case refuse(String)
    }

    /// A replica's schema and key field come from the owner's batches only, within the view the
    /// offer grants: a co-member's batch that arrives before the replica exists waits instead of
    /// founding it with fields of its choosing, and an owner's batch keyed by a field the offer
    /// does not grant is refused. `replicaExists`: this node holds the dataset (always, at the owner).
    public func founding(_ batch: ChangeBatch, replicaExists: Bool) -> Founding {
        let fromOwner = batch.origin == owner
        if !isOwner, !replicaExists, !fromOwner {
            return .wait("batch \(batch.origin):\(batch.seq) waits: this replica takes its schema from \(owner)'s batches first")
        }
        let keyField = batch.fields.first?.name ?? "key"
        if !isOwner, !replicaExists, !fields.contains(keyField) {
            return .refuse("batch \(batch.origin):\(batch.seq) names key field '\(keyField)', which the offer of \(id) does not grant")
        }
        return .take(fields: fromOwner && !isOwner ? batch.fields.filter { fields.contains($0.name) } : [], keyField: keyField)
    }

    /// The roster the owner signs for this share: `previous` if nothing but its time would change,
    /// else a new one issued at `now`.
    public func roster(previous: ShareRoster?, now: Int64) -> ShareRoster? {
        guard isOwner else { return nil }
        var roster = ShareRoster(
            owner: owner, share: name, dataset: dataset.description, members: Array(parties), fields: fields, filter: filter, write: write, issued: now)
        if let previous {
            roster.issued = previous.issued
            if roster == previous { return nil }
            roster.issued = now
        }
        return roster
    }
}

/// Which shares exist for a city, from its policy, its agreements, the owners' rosters and the
/// clock — and what its replicas must lose because terms narrowed or an agreement ended.
public enum ShareDirectory {
    /// One agreement as the node holds it.
    public struct Held: Sendable, Equatable {
        /// The offer id.
        public let id: String
        public let terms: Agreement.Offer
        /// Its state at the time the plan is made.
        public let state: Agreement.State
        /// Who signed its revocation (nil: not revoked).
        public let revokedBy: String?

        public init(id: String, terms: Agreement.Offer, state: Agreement.State, revokedBy: String?) {
            self.id = id
            self.terms = terms
            self.state = state
            self.revokedBy = revokedBy
        }
    }

    /// What the plan reads.
    public struct Input: Sendable {
        public var me: CitySlug
        /// The owner's policy in force (nil: none loaded).
        public var policy: Policy?
        public var agreements: [Held]
        /// Per share id, the owner's roster this node holds (its signature checked by the caller).
        public var rosters: [String: ShareRoster]
        /// The key field of this node's own dataset (nil: no such dataset).
        public var keyField: @Sendable (DatasetID) -> String?
        /// A replica's key field and field names (nil: no replica).
        public var replica: @Sendable (DatasetID) -> (keyField: String, fields: [String])?

        public init(
            me: CitySlug, policy: Policy?, agreements: [Held], rosters: [String: ShareRoster], keyField: @escaping @Sendable (DatasetID) -> String?,
            replica: @escaping @Sendable (DatasetID) -> (keyField: String, fields: [String])?
        ) {
            self.me = me
            self.policy = policy
            self.agreements = agreements
            self.rosters = rosters
            self.keyField = keyField
            self.replica = replica
        }
    }

    /// A replica to cut down to the fields an agreement grants now.
    public struct Narrow: Sendable, Equatable {
        public let share: String
        public let dataset: DatasetID
        public let owner: CitySlug
        public let keep: [String]
        public let agreement: String
    }

    /// A replica to remove: its agreement ended (expired, or revoked by the owner) with
    /// `on_revoke: purge`.
    public struct Purge: Sendable, Equatable {
        public let share: String
        public let dataset: DatasetID
        public let owner: CitySlug
        public let agreement: String
        public let ended: Agreement.State
    }

    public struct Plan: Sendable, Equatable {
        public var shares: [String: SyncShare] = [:]
        /// The owner's (share, member) pairs whose agreements are active: "share member".
        public var active: Set<String> = []
        public var narrow: [Narrow] = []
        public var purge: [Purge] = []
    }

    /// The (share, member) pairs of `owner`'s agreements that are active: "share member".
    public static func activePairs(owner: CitySlug, _ agreements: [Held]) -> Set<String> {
        Set(agreements.filter { $0.terms.owner == owner.rawValue && $0.state == .active }.map { "\($0.terms.share) \($0.terms.member)" })
    }

    /// - As owner: every share of the policy whose dataset exists and that has a member with an
    ///   active agreement; its parties are those members. The view always holds the key field.
    /// - As member: every active agreement; its parties are the owner and the members of the
    ///   owner's roster, when the roster names this node. A replica holding fields the agreement
    ///   no longer grants is narrowed.
    /// - An agreement of this member that ended with `on_revoke: purge` — expired, or revoked by
    ///   the owner (not ended by this member because the federation revoked the owner: a city
    ///   whose key was compromised has not withdrawn its consent) — purges its replica, unless
    ///   another active share covers the same dataset.
    public static func plan(_ input: Input) -> Plan {
        var plan = Plan()
        let me = input.me
        plan.active = activePairs(owner: me, input.agreements)
        for share in input.policy?.shares ?? [] {
            guard let dataset = try? DatasetID(owner: me, name: share.dataset), let key = input.keyField(dataset) else { continue }
            let members = Set(share.to.filter { plan.active.contains("\(share.id) \($0)") })
            guard !members.isEmpty else { continue }
            var fields = share.fields
            if !fields.contains(key) { fields.insert(key, at: 0) }
            let id = "\(me)/\(share.id)"
            plan.shares[id] = SyncShare(
                id: id, owner: me, name: share.id, dataset: dataset, parties: members, fields: fields, write: share.write, filter: share.filter, isOwner: true)
        }
        for a in input.agreements where a.terms.member == me.rawValue && a.state == .active {
            guard let owner = try? CitySlug(a.terms.owner), owner != me, let dataset = try? DatasetID(owner: owner, name: a.terms.dataset) else { continue }
            let id = "\(owner)/\(a.terms.share)"
            var parties: Set<CitySlug> = [owner]
            if let roster = input.rosters[id], roster.owner == owner.rawValue, roster.share == a.terms.share, roster.members.contains(me.rawValue) {
                for m in roster.members { if let c = try? CitySlug(m) { parties.insert(c) } }
            }
            parties.remove(me)
            plan.shares[id] = SyncShare(
                id: id, owner: owner, name: a.terms.share, dataset: dataset, parties: parties, fields: a.terms.fields, write: a.terms.write,
                filter: a.terms.filter, isOwner: false)
            if let replica = input.replica(dataset), replica.fields.contains(where: { !a.terms.fields.contains($0) && $0 != replica.keyField }) {
                plan.narrow.append(Narrow(share: id, dataset: dataset, owner: owner, keep: a.terms.fields, agreement: a.id))
            }
        }
        var purged: Set<DatasetID> = []
        for a in input.agreements where a.terms.member == me.rawValue && a.terms.onRevoke == Policy.OnRevoke.purge.rawValue {
            guard a.state == .revoked || a.state == .expired, a.revokedBy.map({ $0 == a.terms.owner }) ?? true, let owner = try? CitySlug(a.terms.owner),
                let dataset = try? DatasetID(owner: owner, name: a.terms.dataset), !plan.shares.values.contains(where: { $0.dataset == dataset }),
                input.replica(dataset) != nil, purged.insert(dataset).inserted
            else { continue }
            plan.purge.append(Purge(share: "\(owner)/\(a.terms.share)", dataset: dataset, owner: owner, agreement: a.id, ended: a.state))
        }
        return plan
    }
}

// MARK: - Receipts

/// The receipts of a node's exchanges, as a state machine. The receiver issues one receipt per
/// (sender, share) for the batches it took and no receipt covers yet, and sends it again until
/// the sender countersigns it: at once when the sender (re)connects, and every `retry` while it
/// stays connected (a receipt or its countersignature may be dropped on the way — a full inbox,
/// a connection that closed). The sender countersigns a receipt only if it checks out
/// (``check(_:sender:from:isParty:agreement:)``, ``matches(_:held:sent:)``).
///
/// What is taken and not yet receipted, and the receipts not yet countersigned, are durable
/// (the node's store; the simulator's nodes keep them across a crash): the machine keeps only
/// when each open receipt was last sent, and is rebuilt from the store at a start (``restore(open:)``).
public struct ReceiptFlow: Sendable {
    /// A batch taken from `peer` that no receipt covers yet.
    public struct Taken: Sendable, Equatable {
        public let peer: CitySlug
        public let share: String
        public let origin: CitySlug
        public let seq: UInt64
        public let hash: [UInt8]
        public let records: Int

        public init(peer: CitySlug, share: String, origin: CitySlug, seq: UInt64, hash: [UInt8], records: Int) {
            self.peer = peer
            self.share = share
            self.origin = origin
            self.seq = seq
            self.hash = hash
            self.records = records
        }
    }

    /// A receipt to sign and send: what it covers, in the order taken.
    public struct Draft: Sendable, Equatable {
        public let peer: CitySlug
        public let share: String
        public let batches: [Taken]

        /// Its `origin:first-last` runs, record count and digest (``ExchangeReceipt``).
        public var runs: [String] { ExchangeReceipt.runs(batches.map { ($0.origin, $0.seq) }) }
        public var records: Int { batches.reduce(0) { $0 + $1.records } }
        public var digest: String { ExchangeReceipt.digest(batches.map(\.hash)) }
    }

    public enum Directive: Sendable, Equatable {
        /// Sign a receipt for these batches, keep it with them (durably), send it, then call ``issued(_:to:now:)``.
        case issue(Draft)
        /// Send the kept receipt `id` to `to` again.
        case resend(id: String, to: CitySlug)
    }

    /// Microseconds between sends of a receipt not yet countersigned, while its sender stays connected.
    public let retry: Int64
    /// Open receipts kept in memory (past it the oldest are forgotten here; they stay in the store
    /// and come back at the next start).
    public static let maxOpen = 65_536
    /// Receipts sent again to one peer in one tick.
    public static let resendPerTick = 256

    struct Open: Sendable, Equatable {
        let peer: CitySlug
        let share: String
        var lastSent: Int64?
        let order: UInt64
    }

    var open: [String: Open] = [:]
    var counter: UInt64 = 0

    public init(retry: Int64) { self.retry = retry }

    /// Receipts issued and not countersigned, from the store, oldest first: each is due the next
    /// time its sender is connected.
    public mutating func restore(open receipts: [(id: String, peer: CitySlug, share: String)]) {
        for r in receipts.suffix(Self.maxOpen) { remember(r.id, peer: r.peer, share: r.share, lastSent: nil) }
    }

    /// This node no longer takes part in `share` (its agreement ended), or `peer` left it: the
    /// open receipts are not sent again — a sender countersigns only for a party
    /// (``check(_:sender:from:isParty:agreement:)``). They stay in the store, evidence of what was
    /// taken, and `audit reconcile` lists them as one-sided.
    public mutating func end(share: String, peer: CitySlug? = nil) {
        for (id, o) in open where o.share == share && (peer == nil || o.peer == peer) { open[id] = nil }
    }

    /// The receipts issued and not yet countersigned.
    public var openCount: Int { open.count }
    public func isOpen(_ id: String) -> Bool { open[id] != nil }

    /// The agreement a receipt names (the receiver's own for `share`, `owner/name`): with the
    /// sender when the receiver owns the share, else with the owner; the latest active one, else
    /// the latest not revoked, else the latest (nil: none — `audit reconcile` then reports the
    /// exchange as outside any agreement).
    public static func agreement(for share: String, receiver: CitySlug, sender: CitySlug, among all: [ShareDirectory.Held]) -> ShareDirectory.Held? {
        let parts = share.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        let (owner, name) = (parts[0], parts[1])
        let member = owner == receiver.rawValue ? sender.rawValue : receiver.rawValue
        let candidates = all.filter { $0.terms.owner == owner && $0.terms.share == name && $0.terms.member == member }
        return candidates.last { $0.state == .active } ?? candidates.last { $0.revokedBy == nil } ?? candidates.last
    }

    /// `peer` (re)connected: its open receipts go again now.
    public mutating func onConnect(_ peer: CitySlug) {
        for (id, o) in open where o.peer == peer { open[id]?.lastSent = nil }
    }

    /// A tick at `now`: a receipt for each (sender, share) of `taken` (batches in the order
    /// taken), and the open receipts due again to connected senders.
    public mutating func onTick(now: Int64, taken: [Taken], connected: Set<CitySlug>) -> [Directive] {
        var out: [Directive] = []
        var groups: [String: [Taken]] = [:]
        var order: [String] = []
        for t in taken {
            let k = "\(t.peer) \(t.share)"
            if groups[k] == nil { order.append(k) }
            groups[k, default: []].append(t)
        }
        for k in order {
            guard let batches = groups[k], let first = batches.first else { continue }
            out.append(.issue(Draft(peer: first.peer, share: first.share, batches: batches)))
        }
        var perPeer: [CitySlug: Int] = [:]
        // Only the due receipts of connected senders are ordered (oldest first): a disconnected
        // peer's open receipts cost nothing per tick, however many.
        let due = open.filter { _, o in
            guard connected.contains(o.peer) else { return false }
            if let last = o.lastSent, now.subtractingReportingOverflow(last).partialValue < retry, now >= last { return false }
            return true
        }
        for (id, o) in due.sorted(by: { $0.value.order < $1.value.order }) {
            guard perPeer[o.peer, default: 0] < Self.resendPerTick else { continue }
            perPeer[o.peer, default: 0] += 1
            open[id]?.lastSent = now
            out.append(.resend(id: id, to: o.peer))
        }
        return out
    }

    /// A receipt of `share` was kept and sent to `peer` at `now`.
    public mutating func issued(_ id: String, to peer: CitySlug, share: String, now: Int64) { remember(id, peer: peer, share: share, lastSent: now) }

    /// The sender's countersignature of `id` arrived and was kept: the receipt is closed.
    public mutating func countersigned(_ id: String) { open[id] = nil }

    mutating func remember(_ id: String, peer: CitySlug, share: String, lastSent: Int64?) {
        guard open[id] == nil else { return }
        counter += 1
        open[id] = Open(peer: peer, share: share, lastSent: lastSent, order: counter)
        if open.count > Self.maxOpen, let oldest = open.min(by: { $0.value.order < $1.value.order })?.key { open[oldest] = nil }
    }

    // MARK: The sender's check

    /// Before countersigning: the receipt is between `peer` (its receiver) and this node (its
    /// sender); `peer` is a party of the share here now (a former member, or a city that got the
    /// batches by another route, cannot make this node sign that it sent them); the agreement it
    /// names, when this node holds it (`agreement`), is for this share and between these two
    /// cities; its runs parse. Returns the runs, whose batches the caller loads for ``matches(_:held:sent:)``.
    public static func check(
        _ r: ExchangeReceipt, sender me: CitySlug, from peer: CitySlug, isParty: Bool, agreement: (id: String, terms: Agreement.Offer)?
    ) throws(CityMeshError) -> [(origin: CitySlug, seqs: ClosedRange<UInt64>)] {
        guard r.sender == me.rawValue, r.receiver == peer.rawValue else { throw CityMeshError(.forbidden, "a receipt between other cities") }
        guard isParty else { throw CityMeshError(.forbidden, "a receipt for share \(r.share), which \(peer) is not a party of here") }
        if let (named, held) = agreement {
            let parties = [held.owner, held.member]
            guard "\(held.owner)/\(held.share)" == r.share, parties.contains(r.receiver), parties.contains(r.sender) else {
                throw CityMeshError(.forbidden, "the receipt names agreement \(named.prefix(16)), which is not \(r.receiver)'s for share \(r.share) with \(r.sender)")
            }
        }
        var runs: [(origin: CitySlug, seqs: ClosedRange<UInt64>)] = []
        for run in r.batches {
            guard let parsed = ExchangeReceipt.parseRun(run) else { throw CityMeshError(.malformedInput, "receipt run '\(run)'") }
            runs.append(parsed)
        }
        return runs
    }

    /// The receipt's runs against what this node holds (`held[i]`: the hashes and record counts
    /// of run i's batches it holds) and sent to the receiver (`sent[i]`): every batch held and
    /// sent, and the digest and record count equal.
    public static func matches(
        _ r: ExchangeReceipt, runs: [(origin: CitySlug, seqs: ClosedRange<UInt64>)], held: [[(hash: [UInt8], records: Int)]], sent: [Bool]
    ) throws(CityMeshError) {
        guard held.count == runs.count, sent.count == runs.count else { throw CityMeshError(.internalError, "receipt check: \(runs.count) runs, \(held.count) loaded") }
        var hashes: [[UInt8]] = []
        var records = 0
        for (i, run) in runs.enumerated() {
            let label = "\(run.origin):\(run.seqs.lowerBound)-\(run.seqs.upperBound)"
            guard held[i].count == run.seqs.count else { throw CityMeshError(.forbidden, "the receipt names batches \(label) this node does not hold") }
            guard sent[i] else { throw CityMeshError(.forbidden, "the receipt names batches \(label) this node never sent to \(r.receiver)") }
            hashes += held[i].map(\.hash)
            records = records.saturatingAdd(held[i].reduce(0) { $0.saturatingAdd($1.records) })
        }
        guard ExchangeReceipt.digest(hashes) == r.batchesSHA256, records == r.records else {
            throw CityMeshError(.forbidden, "the receipt's digest or count does not match the batches it names")
        }
    }
}

// MARK: - The schedule

/// When a node does each part of its sync session, tick by tick (a tick is 500 ms in the node, a
/// round in the simulator): anti-entropy, cutting and receipts every tick; the share plan every
/// second tick or when something changed (``invalidate()``); tombstone collection and settling
/// superseded conflicts every tenth; a compaction pass when one is due (``Erasure/nextPass(after:minimum:)``
/// after the last, one at a time) and the WAL truncated again until it succeeds after a pass
/// that rewrote batches (a reader can keep a checkpoint from finishing, and the WAL would keep
/// an erased value's old page).
public struct SyncSchedule: Sendable {
    public struct Work: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Work out the shares again (``ShareDirectory/plan(_:)``).
        public static let refresh = Work(rawValue: 1 << 0)
        /// Cut own batches, send rosters, anti-entropy's tick, receipts.
        public static let exchange = Work(rawValue: 1 << 1)
        /// Collect tombstones every party holds; settle conflicts a later write superseded.
        public static let collect = Work(rawValue: 1 << 2)
        /// Run a compaction pass (call ``beginCompaction(now:force:)`` first).
        public static let compact = Work(rawValue: 1 << 3)
        /// Truncate the WAL (then ``walTruncated()``).
        public static let truncateWAL = Work(rawValue: 1 << 4)
    }

    public static let refreshEvery: UInt64 = 2
    public static let collectEvery: UInt64 = 10
    /// How old a tombstone must be, in milliseconds, before it may be collected (on top of every
    /// party having acknowledged everything): covers a write committed but not yet cut into a batch.
    public static let tombstoneGrace: UInt64 = 10_000

    public private(set) var ticks: UInt64 = 0
    var refreshWanted = true
    /// When the next compaction pass may run (microseconds).
    var nextCompaction: Int64 = .min
    public private(set) var compacting = false
    var walHoldsErased = false

    public init() {}

    /// Policy, agreements or connections changed: the shares are worked out again next tick.
    public mutating func invalidate() { refreshWanted = true }

    /// A tick at `now` (microseconds): what to do.
    public mutating func onTick(now: Int64) -> Work {
        ticks &+= 1
        var work: Work = [.exchange]
        if refreshWanted || ticks % Self.refreshEvery == 1 { work.insert(.refresh) }
        refreshWanted = false
        if ticks % Self.collectEvery == 0 { work.insert(.collect) }
        if !compacting && now >= nextCompaction { work.insert(.compact) }
        if walHoldsErased { work.insert(.truncateWAL) }
        return work
    }

    /// Whether a compaction pass may start now (`force`: an erasure asked for it, whatever the
    /// interval); one at a time.
    public mutating func beginCompaction(now: Int64, force: Bool) -> Bool {
        guard !compacting, force || now >= nextCompaction else { return false }
        compacting = true
        return true
    }

    /// A pass ended at `now` after `tookMillis`; `rewrote`: it changed stored batches.
    public mutating func compactionFinished(now: Int64, tookMillis: UInt64, rewrote: Bool) {
        compacting = false
        let wait = Erasure.nextPass(after: tookMillis)
        let (micros, over) = wait.multipliedReportingOverflow(by: 1000)
        nextCompaction = now.saturatingAdd(over ? .max : Int64(clamping: micros))
        if rewrote { walHoldsErased = true }
    }

    /// The WAL was truncated: no old page is left in it.
    public mutating func walTruncated() { walHoldsErased = false }

    /// Tombstones older than this may be collected at `nowMicros`.
    public static func tombstoneCutoff(nowMicros: Int64) -> HLC {
        let millis = UInt64(Swift.max(0, nowMicros / 1000))
        return HLC(millis: millis > tombstoneGrace ? millis - tombstoneGrace : 0, logical: 0)
    }

    /// Whether a record may be collected (removed, key and all) once its dataset is collectable:
    /// it is deleted (not live) and its tombstone is older than `cutoff` (``tombstoneCutoff(nowMicros:)``).
    /// Its stored records then go too (`Erasure.compacts` with `tombstoneCollected`).
    public static func collects(_ state: RecordState, before cutoff: HLC) -> Bool {
        guard !state.isLive, let t = state.tombstone else { return false }
        return t.hlc < cutoff
    }

    /// A dataset's tombstones may be collected once every share of it is settled (every party
    /// holds every batch this node holds: ``AntiEntropy/settled(_:)``).
    public static func collectable(_ shares: [String], settled: (String) -> Bool) -> Bool {
        !shares.isEmpty && shares.allSatisfy(settled)
    }
}
