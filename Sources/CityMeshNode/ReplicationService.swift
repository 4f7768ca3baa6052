public import CityMeshAdmin
public import CityMeshCore
import CityMeshNet
public import CityMeshStore
import Crypto
import Foundation
public import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import SwiftASN1
import Synchronization
public import X509

/// Replication of agreed records over the peer transport (channel 5, docs/protocol.md §8): the
/// shell around the pure ``AntiEntropy`` machine.
///
/// Every tick it works out which shares this node is party to (as owner: the policy's shares and
/// the members whose agreements are active; as member: its active agreements and the owner's
/// signed roster), cuts this node's new changes into signed batches, and lets the machine decide
/// what to pull and push. Incoming messages are handled one at a time, in arrival order: a batch
/// is checked (order, chain, the origin's signature, the share's view and write rights), merged
/// and kept in one transaction, then relayed. Each exchange ends with a receipt the receiver
/// signs and the sender countersigns; both append it to their ledgers.
public final class ReplicationService: Service, ReplicaDesk, Sendable {
    struct State: Sendable {
        var shares: [String: SyncShare] = [:]
        var certificates: [CitySlug: Certificate] = [:]
        /// "peer origin" pairs whose certificate went to that peer on this connection.
        var certificateSent: Set<String> = []
        /// "peer share" pairs that have this connection's roster.
        var rosterSent: Set<String> = []
        var rosters: [String: Agreement.Signed] = [:]
        /// When each share first fell behind a party (for "behind since").
        var behindSince: [String: Int64] = [:]
        var lastExchange: [String: Int64] = [:]
        /// When to do what (`SyncSchedule`).
        var schedule = SyncSchedule()
        var connected: Set<CitySlug> = []
        /// Per dataset: the greatest clock of each city's cells merged here (kept in step with the store).
        var knowledge: [DatasetID: [CitySlug: HLC]] = [:]
        /// Per dataset: the knowledge at the first local write not yet cut into a batch.
        var knowledgeAtWrite: [DatasetID: [CitySlug: HLC]] = [:]
        /// Owned shares whose memory of what members hold is kept (they have a row filter).
        var tracked: [String: Bool] = [:]
        /// Owned shares' terms as last recorded in the store, when no rescan is under way (so an
        /// unchanged share costs no write per cut).
        var settledTerms: [String: String] = [:]
        /// When a member last refreshed its shares because an owner batch had fields its view
        /// lacked (at most every 2 s: old batches cut under wider terms keep arriving in a resync).
        var fieldRefresh: [String: Int64] = [:]
    }

    let city: CitySlug
    let store: NodeStore
    let key: Agreement.Key?
    let policy: PolicyManager
    let book: AgreementBook
    let ledger: LedgerService
    let logger: Logger
    let roots: [Certificate]
    let clock: @Sendable () -> Int64
    let tickInterval: Duration
    let machine: Mutex<AntiEntropy>
    /// Receipts issued and not yet countersigned (`ReceiptFlow`), restored from the store at start.
    let receipts = Mutex(ReceiptFlow(retry: ReplicationService.receiptRetry))
    let receiptsRestored = Mutex(false)
    /// How often a receipt not yet countersigned goes again while its sender stays connected.
    static let receiptRetry: Int64 = 30_000_000
    let state = Mutex(State())
    let network = Mutex<PeerNetwork?>(nil)
    /// Where checkpoints passed on by peers go (witnessing).
    let witness = Mutex<PeerLedgerExchange?>(nil)
    let inbox: AsyncStream<PeerMessage>
    let inboxContinuation: AsyncStream<PeerMessage>.Continuation
    /// Messages of each peer waiting in `inbox`: past `inboxPerPeer` a peer's messages are dropped
    /// and counted, so one member's flood neither takes the node's memory nor starves the others
    /// (anti-entropy pulls a dropped batch again).
    let waiting = Mutex<[CitySlug: Int]>([:])
    static let inboxPerPeer = 4096

    /// Body bytes per batch: well under the smallest frame limit a peer may announce (64 KiB).
    static let batchBytes = 56_000
    static let recordsPerRead = 2_000

    public init(
        city: CitySlug, store: NodeStore, key: Agreement.Key?, policy: PolicyManager, book: AgreementBook, ledger: LedgerService, roots: [Certificate],
        logger: Logger, clock: @escaping @Sendable () -> Int64, tickInterval: Duration = .milliseconds(500), seed: UInt64 = UInt64.random(in: 0...UInt64.max)
    ) {
        self.city = city
        self.store = store
        self.key = key
        self.policy = policy
        self.book = book
        self.ledger = ledger
        self.roots = roots
        self.logger = logger
        self.clock = clock
        self.tickInterval = tickInterval
        self.machine = Mutex(AntiEntropy(me: city, config: .init(fanout: 8, window: 256), seed: seed))
        (inbox, inboxContinuation) = AsyncStream<PeerMessage>.makeStream(bufferingPolicy: .unbounded)
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    var now: String { RFC3339.format(microseconds: clock()) }

    // MARK: Service

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await message in self.inbox.cancelOnGracefulShutdown() {
                    self.waiting.withLock { w in
                        let n = (w[message.city] ?? 1) - 1
                        w[message.city] = n > 0 ? n : nil
                    }
                    await self.handle(message)
                }
            }
            group.addTask {
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    await self.tick()
                    try? await Task.sleep(for: self.tickInterval)
                }
            }
            group.addTask {
                try? await gracefulShutdown()
                self.inboxContinuation.finish()
            }
        }
    }

    /// From the peer transport: queued and handled in arrival order.
    func receive(_ message: PeerMessage) {
        guard message.channel == ReplicationWire.channel else { return }
        let room = waiting.withLock { w in
            let n = w[message.city] ?? 0
            guard n < Self.inboxPerPeer else { return false }
            w[message.city] = n + 1
            return true
        }
        guard room else {
            Counter(label: "citymesh_peer_inbox_dropped_total", dimensions: [("channel", "replication")]).increment()
            return
        }
        inboxContinuation.yield(message)
    }

    /// A peer connected: it gets certificates and rosters anew; shares are worked out again.
    func connected(_ peer: CitySlug) {
        machine.withLock { $0.onConnect(peer) }
        receipts.withLock { $0.onConnect(peer) }
        state.withLock { s in
            s.certificateSent = s.certificateSent.filter { !$0.hasPrefix("\(peer) ") }
            s.rosterSent = s.rosterSent.filter { !$0.hasPrefix("\(peer) ") }
            s.schedule.invalidate()
        }
        if let identity = network.withLock({ $0 })?.identity(of: peer) {
            state.withLock { $0.certificates[peer] = identity.certificate }
            if let der = try? identity.certificate.derBytes() {
                Task { try? await store.saveCertificate(city: peer, der: der, at: now) }
            }
        }
    }

    /// Policy or agreements changed: work the shares out again on the next tick.
    public func invalidate() { state.withLock { $0.schedule.invalidate() } }

    func tick() async {
        let work = state.withLock { $0.schedule.onTick(now: clock()) }
        if work.contains(.refresh) { await refreshShares() }
        await cutOwnBatches()
        let peers = Set(network.withLock { $0 }?.status().peers.filter { $0.state == .connected }.map(\.city) ?? [])
        state.withLock { $0.connected = peers }
        await sendRosters(to: peers)
        let directives = machine.withLock { m in
            m.setConnected(peers)
            return m.onTick()
        }
        await perform(directives)
        await issueReceipts()
        if work.contains(.collect) {
            await collectTombstones()
            await settleSuperseded()
        }
        if work.contains(.compact) { await compact(force: false) }
        if work.contains(.truncateWAL), await store.truncateWAL() {
            state.withLock { $0.schedule.walTruncated() }
        }
    }

    // MARK: Erasure

    /// Compacts deleted records' old values out of the stored batches (`NodeStore.compactErasures`,
    /// the rule `Erasure.compacts`): on a tick when deletions wait and the last pass is far enough
    /// behind (`Erasure.nextPass`: at most ~5% of a core on a large share), or at once (`force`:
    /// `record erase`). One pass at a time; a forced one waits for a running one and then runs.
    /// Each pass that changed something is ledgered (`share.compacted`) with its counts.
    @discardableResult
    public func compact(force: Bool) async -> [DatasetID: CompactionResult] {
        let now = clock()
        let go = state.withLock { $0.schedule.beginCompaction(now: now, force: force) }
        guard go else {
            guard force else { return [:] }
            try? await Task.sleep(for: .milliseconds(50))
            return await compact(force: true)
        }
        let started = ContinuousClock.now
        var rewrote = false
        defer {
            let took = UInt64(max(0, (ContinuousClock.now - started).milliseconds))
            state.withLock { $0.schedule.compactionFinished(now: clock(), tookMillis: took, rewrote: rewrote) }
        }
        guard (try? await store.pendingErasures()) ?? 0 > 0 else { return [:] }
        // Every share this node was ever party to may have batches stored: the agreements name them all.
        var shares: [String: DatasetID] = [:]
        for a in (try? await store.agreements()) ?? [] {
            if let owner = try? CitySlug(a.terms.owner), let d = try? DatasetID(owner: owner, name: a.terms.dataset) { shares["\(owner)/\(a.terms.share)"] = d }
        }
        let at = self.now
        do {
            let views = state.withLock { $0.shares.mapValues { Set($0.fields) } }
            let results = try await store.compactErasures(shares: shares, views: views) { results in
                results.sorted { $0.key.description < $1.key.description }.map { dataset, r in
                    LedgerEntry(
                        time: at, kind: LedgerEntry.Kind.shareCompacted, actor: "node", dataset: dataset.description,
                        counts: ["records": r.records, "batches": r.batches, "keys": r.keys, "legacy_batches": r.legacy],
                        detail: "\(r.records) records of \(r.keys) deleted or retracted keys (or with fields that left a share's view) compacted out of \(r.batches) stored batches"
                            + (r.legacy > 0 ? "; \(r.legacy) batches in the old layout (CMB1) still hold some and cannot be compacted" : ""))
                }
            }
            let took = ContinuousClock.now - started
            rewrote = results.values.contains(where: { $0.records > 0 })
            for (dataset, r) in results where r.records > 0 || r.legacy > 0 {
                Counter(label: "citymesh_replication_records_compacted_total").increment(by: r.records)
                logger.info("erased records compacted out of stored batches", metadata: ["dataset": "\(dataset)", "records": "\(r.records)", "batches": "\(r.batches)", "ms": "\(took.milliseconds)"])
                if r.legacy > 0 {
                    logger.warning("some stored batches are in the old layout and still hold erased values", metadata: ["dataset": "\(dataset)", "batches": "\(r.legacy)"])
                }
            }
            return results
        } catch {
            logger.error("compaction failed", metadata: ["error": "\(error)"])
            return [:]
        }
    }

    /// Deleted records are removed once every party of every share of their dataset holds every
    /// batch this node holds: then each party has merged the delete, and no write older than it
    /// can come back from anywhere.
    func collectTombstones() async {
        let shares = state.withLock { Array($0.shares.values) }
        let byDataset = Dictionary(grouping: shares, by: \.dataset)
        let cutoff = SyncSchedule.tombstoneCutoff(nowMicros: clock())
        for (dataset, group) in byDataset {
            let settled = machine.withLock { m in SyncSchedule.collectable(group.map(\.id), settled: m.settled) }
            guard settled else { continue }
            do {
                let n = try await store.collectTombstones(dataset, before: cutoff)
                if n > 0 { logger.info("tombstones collected", metadata: ["dataset": "\(dataset)", "records": "\(n)"]) }
            } catch {
                logger.error("collecting tombstones failed", metadata: ["dataset": "\(dataset)", "error": "\(error)"])
            }
        }
    }

    // MARK: Which shares

    func refreshShares() async {
        let t = clock()
        let loaded = (try? await store.agreements()) ?? []
        // What the pure plan reads, loaded first: the datasets the policy shares, the replicas the
        // agreements name, the owners' rosters (their signatures checked when they arrived).
        var keyFields: [DatasetID: String] = [:]
        for share in policy.engine?.policy.shares ?? [] {
            if let d = try? DatasetID(owner: city, name: share.dataset), let info = try? await store.dataset(d) { keyFields[d] = info.schema.keyField }
        }
        var replicas: [DatasetID: (keyField: String, fields: [String])] = [:]
        for a in loaded where a.terms.member == city.rawValue {
            guard let owner = try? CitySlug(a.terms.owner), let d = try? DatasetID(owner: owner, name: a.terms.dataset), replicas[d] == nil,
                let schema = try? await store.dataset(d).schema
            else { continue }
            replicas[d] = (schema.keyField, schema.fields.map(\.name))
        }
        var rosters: [String: ShareRoster] = [:]
        var signedRosters: [String: Agreement.Signed] = [:]
        for (id, text) in (try? await store.rosters()) ?? [:] {
            guard let signed = try? JSONDecoder().decode(Agreement.Signed.self, from: Data(text.utf8)), let roster = try? signed.decode(ShareRoster.self) else { continue }
            rosters[id] = roster
            signedRosters[id] = signed
        }
        let (fixedKeys, fixedReplicas) = (keyFields, replicas)
        let plan = ShareDirectory.plan(.init(
            me: city, policy: policy.engine?.policy,
            agreements: loaded.map { $0.held(now: t) }, rosters: rosters,
            keyField: { fixedKeys[$0] }, replica: { fixedReplicas[$0] }))
        // The owner's active pairs follow the clock: a member stops getting batches at its
        // agreement's valid_until and starts at valid_from, without waiting for a message.
        book.set(plan.active)
        state.withLock { s in
            for (id, share) in plan.shares where !share.isOwner && rosters[id]?.members.contains(city.rawValue) == true { s.rosters[id] = signedRosters[id] }
        }
        // Narrower terms: the replica keeps only the fields the agreement grants now (the owner
        // retracts the rows a narrower filter leaves out).
        for n in plan.narrow {
            do {
                let at = now
                _ = try await store.narrowReplica(n.dataset, share: n.share, keep: Set(n.keep)) { rewritten in
                    LedgerEntry(
                        time: at, kind: LedgerEntry.Kind.shareRetracted, actor: "node", peer: n.owner.rawValue, dataset: n.dataset.description,
                        counts: ["records": rewritten], hashes: ["offer.sha256": n.agreement],
                        detail: "share \(n.share) narrowed to fields \(n.keep.joined(separator: ",")): the other fields left \(rewritten) records of the replica")
                }
            } catch {
                logger.error("the replica could not be narrowed to the agreement's fields", metadata: ["dataset": "\(n.dataset)", "error": "\(error)"])
            }
        }
        for p in plan.purge {
            do {
                let at = now
                let removed = try await store.purgeReplica(p.dataset, share: p.share) { removed in
                    LedgerEntry(
                        time: at, kind: LedgerEntry.Kind.sharePurged, actor: "node", peer: p.owner.rawValue, dataset: p.dataset.description, counts: ["records": removed],
                        hashes: ["offer.sha256": p.agreement], detail: "share \(p.share) \(p.ended.rawValue): replica purged (on_revoke: purge)")
                }
                logger.notice("replica purged: the agreement ended with on_revoke: purge", metadata: ["dataset": "\(p.dataset)", "records": "\(removed)"])
            } catch {
                logger.error("purging a replica failed", metadata: ["dataset": "\(p.dataset)", "error": "\(error)"])
            }
        }
        let found = plan.shares
        let held = (try? await store.heldVectors()) ?? [:]
        let previous = state.withLock { s in
            defer { s.shares = found }
            return s.shares
        }
        receipts.withLock { r in for gone in Set(previous.keys).subtracting(found.keys) { r.end(share: gone) } }
        machine.withLock { m in
            for gone in Set(previous.keys).subtracting(found.keys) { m.removeShare(gone) }
            for (id, info) in found { m.setParties(share: id, parties: info.parties, held: held[id] ?? [:]) }
        }
        // The owner's roster: re-signed when membership or terms change.
        guard let key else { return }
        for info in found.values where info.isOwner {
            let existing = state.withLock { $0.rosters[info.id] }.flatMap { try? $0.decode(ShareRoster.self) }
            guard let roster = info.roster(previous: existing, now: t), let signed = try? key.sign(roster, as: city) else { continue }
            state.withLock { s in
                s.rosters[info.id] = signed
                s.rosterSent = s.rosterSent.filter { !$0.hasSuffix(" \(info.id)") }
            }
        }
    }

    func sendRosters(to peers: Set<CitySlug>) async {
        let due: [(CitySlug, Agreement.Signed, String)] = state.withLock { s in
            var out: [(CitySlug, Agreement.Signed, String)] = []
            for info in s.shares.values where info.isOwner {
                guard let r = s.rosters[info.id] else { continue }
                for p in info.parties.intersection(peers) where !s.rosterSent.contains("\(p) \(info.id)") { out.append((p, r, "\(p) \(info.id)")) }
            }
            return out
        }
        for (peer, roster, mark) in due {
            guard let json = try? JSONEncoder().encode(roster) else { continue }
            if await send(.document(json: Array(json)), to: peer) { state.withLock { _ = $0.rosterSent.insert(mark) } }
        }
    }

    // MARK: Cutting own batches

    func cutOwnBatches() async {
        guard let key else { return }
        let shares = state.withLock { Array($0.shares.values) }
        for info in shares where info.isOwner || !info.write.isEmpty {
            do {
                var ahead: [ShareView.Change] = []
                while try await cutOne(info, key: key, ahead: &ahead) {}
            } catch let e as CityMeshError where e.code == .datasetNotFound && !info.isOwner {
                continue  // the replica is created by the first batch from the owner
            } catch {
                logger.error("cutting a batch failed", metadata: ["share": "\(info.id)", "error": "\(error)"])
            }
        }
    }

    /// Cuts at most one batch of `info`; true if more may follow. `ahead` carries records one
    /// cut read beyond what its batch held to the next.
    func cutOne(_ info: SyncShare, key: Agreement.Key, ahead: inout [ShareView.Change]) async throws -> Bool {
        info.isOwner ? try await cutOwner(info, key: key, ahead: &ahead) : try await cutMember(info, key: key)
    }

    /// The owner: every record changed since the cursor, projected onto the view (rows outside the
    /// filter are not sent), whoever wrote the cells. A read fetches more records than a batch
    /// holds; those left over are the next cut's (`ahead`), so no record is read and decoded
    /// twice. (If one of them changes meanwhile, its new state has a later sequence number and
    /// goes in a later batch: the old one travelling first costs bytes, not correctness.)
    func cutOwner(_ info: SyncShare, key: Agreement.Key, ahead: inout [ShareView.Change]) async throws -> Bool {
        let dataset = try await store.dataset(info.dataset)
        // New terms (another filter or view) send the cursor back to 0: what was sent under the
        // old ones is re-judged up to `rescanUntil` (`ShareView.outgoing` with no change).
        let termsKey = info.fields.sorted().joined(separator: ",") + "|" + (info.filter ?? "")
        var terms = NodeStore.ShareTerms(rescanUntil: 0, added: [])
        if state.withLock({ $0.settledTerms[info.id] }) != termsKey {
            terms = try await store.shareTerms(share: info.id, fields: info.fields, filter: info.filter)
        }
        let cursor = try await store.cursor(share: info.id)
        if terms.rescanUntil > 0, cursor >= terms.rescanUntil {
            try await store.finishRescan(share: info.id)
            terms = .init(rescanUntil: 0, added: [])
        }
        state.withLock { $0.settledTerms[info.id] = terms.rescanUntil == 0 ? termsKey : nil }
        guard dataset.lastSeq > cursor else { return false }
        let changes: [ShareView.Change]
        let more: Bool
        if let first = ahead.first, first.seq > cursor {
            (changes, more) = (ahead, true)
        } else {
            let read = try await store.changes(info.dataset, afterSeq: cursor, limit: Self.recordsPerRead)
            changes = read.map { ShareView.Change(key: $0.key, seq: $0.seq, state: $0.state) }
            more = read.count == Self.recordsPerRead
        }
        ahead = []
        guard !changes.isEmpty else { return false }
        let schema = dataset.schema
        let view = info.view(schema: schema)
        let viewIDs = view.fields
        let filter = view.filter
        // Under a narrowed view every held record goes out whole again: its old copies are
        // compacted out of the stored batches (`Erasure.outsideView`), so a party that pulls the
        // history later gets it from here.
        let added = terms.narrowed ? viewIDs : Set(terms.added.compactMap { schema.field(named: $0)?.id })
        // With a row filter (or while re-judging under new terms) the owner remembers which keys
        // members hold (retractions, and no deletions of rows they never saw); without one every
        // row goes out, as it always did.
        let visible: Set<String>?
        if filter != nil || terms.rescanUntil > 0 {
            state.withLock { $0.tracked[info.id] = true }
            visible = try await store.visibleKeys(share: info.id, dataset: info.dataset, among: changes.map(\.key), upTo: max(cursor, terms.rescanUntil))
        } else {
            if state.withLock({ $0.tracked[info.id] }) != false {
                try await store.forgetVisibility(share: info.id)
                state.withLock { $0.tracked[info.id] = false }
            }
            visible = nil
        }
        let cut = view.cut(changes, cursor: cursor, rescanUntil: terms.rescanUntil, visible: visible, added: added, maxBytes: Self.batchBytes)
        if cut.next < changes.count { ahead = Array(changes[cut.next...]) }
        let records = cut.records, lastSeq = cut.through
        guard !records.isEmpty else {
            try await store.appendOwnBatch(share: info.id, dataset: info.dataset, signed: nil, records: 0, cursor: lastSeq, at: now)
            return more
        }
        // What the writes in this batch knew: the knowledge at the first of them (knowledge only
        // grows, so the earliest is what all of them had at least).
        var seen = try await store.seenClocks(info.dataset)
        let atWrite = state.withLock { s in
            defer { s.knowledgeAtWrite[info.dataset] = nil }
            return s.knowledgeAtWrite[info.dataset]
        }
        if let atWrite {
            for (c, t) in seen where c != city { seen[c] = atWrite[c].map { Swift.min($0, t) } }
        }
        let fields = [schema.key] + schema.fields.filter { viewIDs.contains($0.id) && $0.name != schema.keyField }
        try await emit(
            info, key: key, fields: fields, seen: seen, records: records, cursor: lastSeq, outboxThrough: nil, visibility: (cut.shown, cut.hidden),
            retracted: cut.retracted.map { ($0.key, $0.hlc) })
        return true
    }

    /// A member: its own writes to the replica as it made them (from the outbox), only cells of
    /// the fields the share lets members write — a write a concurrent one overwrote here still goes.
    func cutMember(_ info: SyncShare, key: Agreement.Key) async throws -> Bool {
        guard !info.write.isEmpty else { return false }
        let pending = try await store.outbox(info.dataset, limit: Self.recordsPerRead)
        guard let last = pending.last else { return false }
        let schema = try await store.dataset(info.dataset).schema
        let writable = Set(info.write.compactMap { schema.field(named: $0)?.id })
        let rights = info.rights(schema: schema)
        var records: [ChangeBatch.Record] = []
        var size = 0
        var through = pending[0].id
        var seen: [CitySlug: HLC]? = nil
        for w in pending {
            let state = rights.outgoing(w.state, by: city, field: { schema.field(id: $0)?.name })
            let bytes = RecordStateCodec.encode(state).count + w.key.utf8.count + 6
            if size + bytes > Self.batchBytes && !records.isEmpty { break }
            through = w.id
            guard !state.cells.isEmpty else { continue }
            records.append(.init(key: w.key, state: state))
            size += bytes
            // The batch's knowledge is the least of its writes' knowledge.
            seen = seen.map { s in s.merging(w.seen, uniquingKeysWith: Swift.min).filter { w.seen[$0.key] != nil } } ?? w.seen
        }
        guard !records.isEmpty else {
            try await store.appendOwnBatch(share: info.id, dataset: info.dataset, signed: nil, records: 0, cursor: 0, outboxThrough: through, at: now)
            return through != last.id || pending.count == Self.recordsPerRead
        }
        var knowledge = seen ?? [:]
        knowledge[city] = records.flatMap(\.state.cells).map(\.stamp.hlc).max()
        let fields = [schema.key] + schema.fields.filter { writable.contains($0.id) && $0.name != schema.keyField }
        try await emit(info, key: key, fields: fields, seen: knowledge, records: records, cursor: 0, outboxThrough: through)
        return true
    }

    /// Signs and keeps the next own batch of `info`, then pushes it.
    func emit(
        _ info: SyncShare, key: Agreement.Key, fields: [Schema.Field], seen: [CitySlug: HLC], records: [ChangeBatch.Record], cursor: Int64, outboxThrough: Int64?,
        visibility: (shown: [String], hidden: [String]) = ([], []), retracted: [(key: String, hlc: HLC)] = []
    ) async throws {
        let link = try await store.nextBatchLink(share: info.id)
        let batch = ChangeBatch(
            share: info.id, dataset: info.dataset.description, origin: city, seq: link.seq, prev: link.prev, fields: fields, seen: seen, records: records)
        let signed = try batch.signed(with: key)
        try await store.appendOwnBatch(
            share: info.id, dataset: info.dataset, signed: signed, link: (link.seq, link.prev), records: records.count, cursor: cursor,
            outboxThrough: outboxThrough, visibility: visibility, retracted: retracted, at: now)
        let directives = machine.withLock { $0.accepted(share: info.id, origin: city, seq: link.seq, from: city) }
        await perform(directives)
    }

    // MARK: Directives

    func perform(_ directives: [AntiEntropy.Directive]) async {
        for d in directives {
            switch d {
            case .summary(let to, let share, let vector, let reply):
                _ = await send(.summary(share: share, vector: vector, reply: reply), to: to)
            case .acked(let to, let share, let vector):
                _ = await send(.acked(share: share, vector: vector), to: to)
            case .announce(let to, let share, let origin, let seq):
                _ = await send(.announce(share: share, origin: origin, seq: seq), to: to)
            case .want(let to, let share, let origin, let seqs):
                _ = await send(.want(share: share, origin: origin, seqs: seqs), to: to)
            case .send(let to, let share, let origin, let seqs):
                guard var batches = try? await store.numberedBatches(share: share, origin: origin, seqs: seqs) else { continue }
                batches = await screened(batches, share: share)
                if origin != city && origin != to {
                    let needed = state.withLock { !$0.certificateSent.contains("\(to) \(origin)") }
                    if needed, let der = await certificate(of: origin).flatMap({ try? $0.derBytes() }) {
                        if await send(.certificate(city: origin, der: der), to: to) { state.withLock { _ = $0.certificateSent.insert("\(to) \(origin)") } }
                    }
                }
                // Receipts are countersigned only for batches sent to that peer, so what goes out
                // is recorded first (a crash between the two must not leave a batch sent and
                // unrecorded, whose receipt would then be refused); nothing goes out unrecorded,
                // and nothing is recorded for a peer that is not connected.
                guard network.withLock({ $0 })?.identity(of: to) != nil else { continue }
                var runs: [ClosedRange<UInt64>] = []
                for b in batches {
                    if let last = runs.last, last.upperBound < b.seq, last.upperBound + 1 == b.seq {
                        runs[runs.count - 1] = last.lowerBound...b.seq
                    } else {
                        runs.append(b.seq...b.seq)
                    }
                }
                // Each send is ledgered (`exchange.sent`) with the record of it, whether or not a
                // receipt ever comes back; the receiver ledgers `exchange.received` with the batch.
                let dataset = state.withLock { $0.shares[share]?.dataset.description }
                let at = now
                do {
                    let entries = batches.map { b in
                        LedgerEntry(
                            time: at, kind: LedgerEntry.Kind.exchangeSent, actor: "node", peer: to.rawValue, dataset: dataset,
                            counts: ["records": b.records, "bytes": b.bytes.count], hashes: ["batch.sha256": Self.hex(b.hash)],
                            detail: "share \(share): batch \(origin):\(b.seq) sent to \(to)")
                    }
                    try await store.recordSent(share: share, peer: to, origin: origin, runs: runs, entries: entries)
                } catch {
                    logger.error("batches not sent: the record of what is sent could not be stored", metadata: ["peer": "\(to)", "error": "\(error)"])
                    continue
                }
                for b in batches {
                    guard await send(.batch(share: share, bytes: b.bytes), to: to) else { break }
                }
            }
        }
    }

    /// Stored batches of `share` as they may go out now: every party re-checks what it sends
    /// against what waits for compaction (`Erasure.Screen`: deletions, retractions, a narrowed
    /// view), and the owner, while it re-judges what it sent under new terms, also against the
    /// filter in force (rows it is about to retract). What the screen leaves out goes as digests
    /// (the compactable layout keeps the batch's hash and signature), even before the compaction
    /// pass has rewritten the stored copy. A batch in the first layout (CMB1) goes as stored.
    func screened(_ batches: [(seq: UInt64, bytes: [UInt8], hash: [UInt8], records: Int)], share: String) async -> [(seq: UInt64, bytes: [UInt8], hash: [UInt8], records: Int)] {
        guard let (info, rejudging) = state.withLock({ s in s.shares[share].map { ($0, s.settledTerms[share] == nil) } }),
            var screen = try? await store.sendScreen(share: share, dataset: info.dataset, view: Set(info.fields))
        else { return batches }
        let filtered = info.isOwner && info.filter != nil && rejudging
        guard !screen.isEmpty || filtered else { return batches }
        let schema = filtered ? try? await store.dataset(info.dataset).schema : nil
        var out = batches
        for (i, b) in batches.enumerated() {
            guard let signed = try? SignedBatch(bytes: b.bytes[...]) else { continue }
            if filtered, let schema, let keys = try? signed.decode().records.map(\.key) {
                let current = (try? await store.get(info.dataset, keys: keys)) ?? [:]
                let view = info.view(schema: schema)
                screen.outside = Set(current.compactMap { key, stored in stored.state.isLive && !view.admits(stored.state) ? key : nil })
            }
            if let cut = screen.apply(to: signed) { out[i] = (b.seq, cut.bytes, b.hash, b.records) }
        }
        return out
    }

    /// Bytes of a DATA frame on the wire, TLS excluded: length (4), type (1), channel (2), payload.
    static let frameOverhead = 7

    static func kind(_ m: ReplicationWire.Message) -> String {
        switch m {
        case .summary: "summary"
        case .acked: "acked"
        case .announce: "announce"
        case .want: "want"
        case .batch: "batch"
        case .certificate: "certificate"
        case .document: "document"
        case .checkpoint: "checkpoint"
        }
    }

    @discardableResult
    func send(_ message: ReplicationWire.Message, to peer: CitySlug) async -> Bool {
        guard let network = network.withLock({ $0 }) else { return false }
        do {
            let payload = ReplicationWire.encode(message)
            try await network.send(to: peer, channel: ReplicationWire.channel, payload: payload)
            Counter(label: "citymesh_replication_bytes_total", dimensions: [("direction", "sent"), ("kind", Self.kind(message))])
                .increment(by: payload.count + Self.frameOverhead)
            return true
        } catch {
            logger.debug("replication message not sent", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return false
        }
    }

    func certificate(of city: CitySlug) async -> Certificate? {
        // The certificate a connected city showed in its handshake comes first: a cached or
        // relayed one may be older.
        if let id = network.withLock({ $0 })?.identity(of: city) {
            state.withLock { $0.certificates[city] = id.certificate }
            return id.certificate
        }
        if let c = state.withLock({ $0.certificates[city] }) { return c }
        guard let der = try? await store.certificates()[city], let cert = try? Certificate(derEncoded: der) else { return nil }
        // Stored certificates were verified when learnt; check again (they expire).
        guard (try? await NodeIdentity.verify(chain: [cert], roots: roots, expectedCity: city, now: Date())) != nil else { return nil }
        state.withLock { $0.certificates[city] = cert }
        return cert
    }

    /// Why `cert` may no longer vouch for what `city` signed, under the trust in force: revoked by
    /// the federation CRL, on the deny-list, or expired. Asked at every batch, not only when the
    /// certificate was learnt (its chain was verified then, by `certificate(of:)` or the
    /// handshake), so a SIGHUP'd CRL also stops a revoked city's batches that other members
    /// relay (threat model G1).
    func distrust(_ cert: Certificate, of city: CitySlug) -> String? {
        let trust = network.withLock({ $0 })?.trust
        if let failure = trust?.revocationFailure(certificate: cert, city: city, now: Date()) { return failure.detail }
        if trust == nil, Date() > cert.notValidAfter { return "the certificate of '\(city)' expired at \(cert.notValidAfter)" }
        return nil
    }

    /// A certificate another member relays: the chain to the federation CA, and `distrust`.
    func distrustRelayed(_ cert: Certificate, of city: CitySlug) async -> String? {
        let trust = network.withLock({ $0 })?.trust
        if let trust {
            if case .failure(let failure) = await trust.verify(chain: [cert], expectedCity: city, now: Date()) { return failure.detail }
            return nil
        }
        do { _ = try await NodeIdentity.verify(chain: [cert], roots: roots, expectedCity: city, now: Date()) } catch { return "\(error)" }
        return nil
    }

    // MARK: Incoming

    func handle(_ message: PeerMessage) async {
        let peer = message.city
        let decoded: ReplicationWire.Message
        do { decoded = try ReplicationWire.decode(Array(message.payload.readableBytesView)[...]) } catch {
            await refuse(peer: peer, share: nil, reason: "malformed replication message: \(error)")
            return
        }
        Counter(label: "citymesh_replication_bytes_total", dimensions: [("direction", "received"), ("kind", Self.kind(decoded))])
            .increment(by: message.payload.readableBytes + Self.frameOverhead)
        switch decoded {
        case .summary(let share, let vector, let reply):
            let (directives, held, party) = machine.withLock {
                ($0.onSummary(from: peer, share: share, vector: vector, reply: reply), $0.held(share), $0.isParty(peer, of: share))
            }
            // Only a party's summary of a share this node takes part in is kept or measured: share
            // names from anyone else would grow the table and the metric's series without bound.
            guard party else { return }
            state.withLock { s in
                let behind = vector.contains { o, n in n > (held[o] ?? 0) }
                let k = "\(share) \(peer)"
                if behind { if s.behindSince[k] == nil { s.behindSince[k] = clock() } } else { s.behindSince[k] = nil }
            }
            // Sync lag: batches this peer holds of the share that this node does not.
            let lag = vector.reduce(UInt64(0)) { sum, e in sum.saturatingAdd(e.value > (held[e.key] ?? 0) ? e.value - (held[e.key] ?? 0) : 0) }
            Gauge(label: "citymesh_share_sync_lag_batches", dimensions: [("share", share), ("peer", peer.rawValue)]).record(Double(lag))
            await perform(directives)
        case .acked(let share, let vector):
            machine.withLock { $0.onAcked(from: peer, share: share, vector: vector) }
        case .announce(let share, let origin, let seq):
            // A city that is not (or no longer) a party offers batches of a share this node takes
            // part in: refused and ledgered, as a batch from it would be (never asked for).
            if let why = await strangerRefusal(peer, share: share, offering: true) {
                await refuse(peer: peer, share: share, reason: why)
                return
            }
            await perform(machine.withLock { $0.onAnnounce(from: peer, share: share, origin: origin, seq: seq) })
        case .want(let share, let origin, let seqs):
            if let why = await strangerRefusal(peer, share: share, offering: false) {
                await refuse(peer: peer, share: share, reason: why)
                return
            }
            await perform(machine.withLock { $0.onWant(from: peer, share: share, origin: origin, seqs: seqs) })
        case .batch(let share, let bytes):
            await take(share: share, bytes: bytes, from: peer)
        case .certificate(let origin, let der):
            let direct = network.withLock({ $0 })?.identity(of: origin) != nil
            if let why = PeerTrust.refusesRelayed(origin: origin, from: peer, me: city, connectedDirectly: direct) {
                // Not an offence when the city is connected (relays send certificates ahead of
                // batches as they go); only a certificate for this node's own city is refused.
                if origin == city { await refuse(peer: peer, share: nil, reason: why) }
                return
            }
            guard let cert = try? Certificate(derEncoded: der) else {
                await refuse(peer: peer, share: nil, reason: "a relayed certificate for \(origin) is not a DER certificate")
                return
            }
            if let why = await distrustRelayed(cert, of: origin) {
                await refuse(peer: peer, share: nil, reason: "a relayed certificate for \(origin) is not trusted: \(why)")
                return
            }
            state.withLock { $0.certificates[origin] = cert }
            try? await store.saveCertificate(city: origin, der: der, at: now)
        case .document(let json):
            await document(json, from: peer)
        case .checkpoint(let city, let note):
            guard city != self.city, let witness = witness.withLock({ $0 }), let cert = await certificate(of: city) else { return }
            // A revoked or deny-listed city's checkpoints count for nothing, relayed or not.
            guard distrust(cert, of: city) == nil else { return }
            await witness.witnessed(city, note: note, certificate: cert)
        }
    }

    func take(share: String, bytes: [UInt8], from peer: CitySlug) async {
        guard var info = state.withLock({ $0.shares[share] }) else {
            await refuse(peer: peer, share: share, reason: "a batch of share \(share), which this node is not party to")
            return
        }
        let signed: SignedBatch
        let batch: ChangeBatch
        do {
            signed = try SignedBatch(bytes: bytes[...])
            batch = try signed.decode()
        } catch {
            await refuse(peer: peer, share: share, reason: "a malformed batch: \(error)")
            return
        }
        switch machine.withLock({ $0.onBatch(share: share, origin: batch.origin, seq: batch.seq, from: peer) }) {
        case .duplicate: return
        case .gap:
            // The batch before it did not come: asked of this peer, it is asked for again now.
            await perform(machine.withLock { $0.onGap(share: share, origin: batch.origin, seq: batch.seq, from: peer) })
            return
        case .notParty:
            await refuse(peer: peer, share: share, reason: "\(peer) is not party to share \(share)")
            return
        case .take: break
        }
        do {
            if let why = info.refusal(of: batch, at: city) { throw CityMeshError(.forbidden, why) }
            guard let cert = await certificate(of: batch.origin) else {
                throw CityMeshError(.certificateInvalid, "no verified certificate of \(batch.origin) to check its signature")
            }
            if let why = distrust(cert, of: batch.origin) {
                throw CityMeshError(.certificateInvalid, "\(batch.origin)'s certificate is no longer trusted, so nothing it signed is taken: \(why)")
            }
            try signed.verify(certificate: cert)
        } catch {
            await refuse(peer: peer, share: share, reason: "batch \(batch.origin):\(batch.seq) refused: \(error)")
            return
        }
        // Stamped too far in the future: not merged now (and so not part of the chain yet); it is
        // pulled again and taken once this node's clock has caught up.
        if let ahead = batch.aheadOfClock(nowMillis: UInt64(max(0, clock() / 1000))) {
            await refuse(
                peer: peer, share: share,
                reason: "batch \(batch.origin):\(batch.seq) is stamped \(batch.latestStamp), \(ahead / 1000) s ahead of this node's clock (at most \(ChangeBatch.maxClockAheadMillis / 1000) s): it is held back until this clock catches up; check the clocks (NTP) of \(batch.origin) and of this node")
            return
        }
        // A replica's schema and key field come from the owner's batches only, within the view
        // its offer grants: a co-member's batch that arrives first waits (anti-entropy brings it
        // again) instead of founding the replica with fields of its choosing.
        let replica = try? await store.dataset(info.dataset).schema
        let fromOwner = batch.origin == info.owner
        // The owner cuts under new terms once this member has accepted them; its first batch can
        // arrive before this node's view of the share is refreshed. Refreshed first, the wider
        // view's cells are taken instead of dropped (a batch cut under older, wider terms keeps
        // only what the agreement grants now).
        if fromOwner, !info.isOwner, batch.fields.contains(where: { !info.fields.contains($0.name) }) {
            let t = clock()
            let due = state.withLock { s in
                guard t - (s.fieldRefresh[share] ?? .min / 2) >= 2_000_000 else { return false }
                s.fieldRefresh[share] = t
                return true
            }
            if due {
                await refreshShares()
                if let fresh = state.withLock({ $0.shares[share] }) { info = fresh }
            }
        }
        var adopted = batch
        let keyField: String
        switch info.founding(batch, replicaExists: info.isOwner || replica != nil) {
        case .wait(let why), .refuse(let why):
            await refuse(peer: peer, share: share, reason: why)
            return
        case .take(let fields, let key):
            adopted.fields = fields
            keyField = key
        }
        // What the share lets this origin write; refused cells are dropped and ledgered.
        var denials: [String: (count: Int, denial: PolicyEngine.Denial)] = [:]
        let intake = await permitted(batch, info: info, schema: replica, denials: &denials)
        let refusedCells = intake.refused
        for (code, d) in denials.sorted(by: { $0.key < $1.key }) {
            Counter(label: "citymesh_policy_denials_total", dimensions: [("share", share), ("peer", peer.rawValue)]).increment(by: d.count)
            _ = await ledger.recordRefusal(
                LedgerEntry(
                    time: now, kind: LedgerEntry.Kind.policyDenied, actor: "peer:\(batch.origin)", peer: batch.origin.rawValue, dataset: info.dataset.description,
                    counts: ["cells": d.count], reason: code, detail: "\(d.count) cells of batch \(batch.origin):\(batch.seq): \(d.denial.description)"),
                peer: batch.origin.rawValue, nowMicros: clock())
        }
        // Retractions count only in the owner's batches, and only at members (`WriteRights.intake`).
        let retracted = intake.retracted
        let states = intake.states
        if refusedCells > 0 {
            await refuse(peer: peer, share: share, reason: "\(refusedCells) cells of batch \(batch.origin):\(batch.seq) are outside what share \(share) lets \(batch.origin) write")
        }
        let latest = (try? await store.originSeen(share: share)) ?? [:]
        let me = city
        let origin = batch.origin
        let originSeen = batch.seen
        // What the owner refused is not kept for relaying: the stored copy has those records as
        // digests (same hash and signature; the owner re-sends accepted cells in its own batches).
        let withheld = Set(intake.withheld)
        let kept = withheld.isEmpty ? signed : (try? signed.compacted(erasing: { key, _ in withheld.contains(key) })) ?? signed
        do {
            var incoming = IncomingBatch(share: share, dataset: info.dataset, batch: adopted, signed: kept, states: states, keyField: keyField, from: peer, at: now)
            incoming.retracted = retracted
            incoming.ownerDeletions = intake.ownerDeletions
            incoming.entries = [LedgerEntry(
                time: now, kind: LedgerEntry.Kind.exchangeReceived, actor: "peer:\(peer)", peer: peer.rawValue, dataset: info.dataset.description,
                counts: ["records": batch.signedCount, "bytes": signed.bytes.count], hashes: ["batch.sha256": Self.hex(signed.hash)],
                detail: "share \(share): batch \(batch.origin):\(batch.seq) received from \(peer)")]
            if !retracted.isEmpty {
                incoming.entries.append(LedgerEntry(
                    time: now, kind: LedgerEntry.Kind.shareRetracted, actor: "peer:\(peer)", peer: info.owner.rawValue, dataset: info.dataset.description,
                    counts: ["records": retracted.count], hashes: ["batch.sha256": Self.hex(signed.hash)],
                    detail: "\(retracted.count) records left this node's view of share \(share) (batch \(batch.origin):\(batch.seq)): dropped from the replica"))
            }
            let outcome = try await store.take(
                incoming,
                conflicts: { _, stored, incoming, mySeen in
                    ConflictRule.find(stored: stored, incoming: incoming, origin: origin, originSeen: originSeen, me: me, mySeen: mySeen, latestSeen: { latest[$0] })
                })
            Counter(label: "citymesh_replication_records_merged_total").increment(by: outcome.written)
            if !retracted.isEmpty {
                Counter(label: "citymesh_replication_records_retracted_total").increment(by: retracted.count)
            }
            Counter(label: "citymesh_replication_batches_taken_total").increment()
            if outcome.conflicts > 0 { Counter(label: "citymesh_replication_conflicts_total").increment(by: outcome.conflicts) }
            state.withLock { s in
                guard var k = s.knowledge[info.dataset] else { return }
                for r in states { for c in r.state.cells where (k[c.stamp.city] ?? .zero) < c.stamp.hlc { k[c.stamp.city] = c.stamp.hlc } }
                s.knowledge[info.dataset] = k
            }
            if outcome.conflicts > 0 {
                logger.notice("concurrent writes kept as conflicts", metadata: ["dataset": "\(info.dataset)", "conflicts": "\(outcome.conflicts)"])
            }
        } catch let refusal as TakeRefusal {
            if case .forked(let held) = refusal {
                await ledger.record(LedgerEntry(
                    time: now, kind: LedgerEntry.Kind.peerForked, actor: "peer:\(peer)", peer: batch.origin.rawValue, dataset: info.dataset.description,
                    hashes: ["held.prev.sha256": Self.hex(held), "offered.prev.sha256": Self.hex(batch.prev), "offered.batch.sha256": Self.hex(signed.hash)],
                    reason: "fork", detail: "\(batch.origin) signed batch \(batch.seq) of \(share) on a history this node does not hold"))
                logger.error("a city signed two histories of a share", metadata: ["origin": "\(batch.origin)", "share": "\(share)", "seq": "\(batch.seq)"])
            }
            return
        } catch {
            logger.error("a batch could not be merged", metadata: ["share": "\(share)", "error": "\(error)"])
            return
        }
        state.withLock { s in s.lastExchange["\(share) \(peer)"] = clock() }
        let directives = machine.withLock { $0.accepted(share: share, origin: batch.origin, seq: batch.seq, from: peer) }
        await perform(directives)
    }

    /// The records of `batch` minus what its origin may not write here: the owner may send
    /// anything in the view; a member only its own cells of the fields the share lets members
    /// write, on records this node holds (within the row filter), and no deletions. Every kept
    /// cell names a field this node knows (its own schema; at a replica also the owner's batch's
    /// fields, which is how a replica learns new ones) and holds a value of that field's type
    /// within the size limits. `schema` is this node's dataset or replica schema (nil: none yet).
    /// At the owner, a member's cells also go through the policy's enforcement point
    /// (`PolicyEngine.mayWrite`, the rule the admin API and `policy explain` use), and what it
    /// denies is counted in `denials` by code (the caller ledgers them as `policy.denied`).
    func permitted(
        _ batch: ChangeBatch, info: SyncShare, schema: Schema?, denials: inout [String: (count: Int, denial: PolicyEngine.Denial)]
    ) async -> WriteRights.Intake {
        let engine = info.isOwner && batch.origin != city ? policy.engine : nil
        let t = clock()
        let fromOwner = batch.origin == info.owner
        // Only the owner numbers fields: its batch's field list counts at a replica, nowhere else.
        let ownerFields = fromOwner && !info.isOwner ? Dictionary(batch.fields.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }) : [:]
        func field(_ id: Int) -> Schema.Field? { schema?.field(id: id) ?? ownerFields[id] }
        // Members update records that exist: the owner checks against its own copies, and so does
        // every other member against its replica (the owner re-sends members' accepted cells in
        // its own batches, so nothing is lost).
        let stored = fromOwner ? [:] : ((try? await store.get(info.dataset, keys: batch.records.map(\.key))) ?? [:])
        return info.rights(schema: schema).intake(
            batch.records, origin: batch.origin, receiver: city, current: { stored[$0]?.state }, field: field,
            screen: { r in
                // At the owner, the policy in force is an enforcement point first: what it denies
                // is ledgered as `policy.denied` with its code (then the share's write rights decide).
                guard let engine, let schema, !r.state.cells.isEmpty else { return r }
                let current = stored[r.key]?.state
                let allowed = r.state.cells.filter { c in
                    guard let f = field(c.field) else { return true }
                    let decision = engine.mayWrite(
                        dataset: info.dataset.name, member: batch.origin, field: f.name, now: t, accepted: book.isActive,
                        value: { name in schema.field(named: name).flatMap { (current ?? RecordState()).value(field: $0.id) } })
                    if case .failure(let denial) = decision {
                        denials[denial.code, default: (0, denial)].count += 1
                        return false
                    }
                    return true
                }
                guard allowed.count != r.state.cells.count else { return r }
                guard !allowed.isEmpty || r.state.tombstone != nil else { return nil }
                return .init(key: r.key, state: RecordState(sortedCells: allowed, tombstone: r.state.tombstone))
            })
    }

    /// A refusal of what `peer` sent: counted, and logged and ledgered unless one like it was
    /// within the interval (`LedgerService.reportRefusal`), so a peer repeating itself cannot grow
    /// the ledger or the log. The metric's share label is a share this node takes part in, or
    /// "other": share names a peer invents never become series.
    /// Why an announcement or request from `peer` about `share` is refused: the share is one this
    /// node takes part in and `peer` is not a party of it. Nil for a party, and for a share this
    /// node does not know (ignored, as a summary of it is: no table row or ledger entry per
    /// invented name; refusals are throttled per peer besides).
    func strangerRefusal(_ peer: CitySlug, share: String, offering: Bool) async -> String? {
        guard state.withLock({ $0.shares[share] != nil }), !machine.withLock({ $0.isParty(peer, of: share) }) else { return nil }
        return offering ? "\(peer) is not party to share \(share): its batches are not taken" : "\(peer) is not party to share \(share): nothing is sent to it"
    }

    func refuse(peer: CitySlug, share: String?, reason: String) async {
        let known = share.map { name in state.withLock { $0.shares[name] != nil } } ?? false
        let label = share.map { known ? $0 : "other" } ?? "-"
        Counter(label: "citymesh_policy_denials_total", dimensions: [("share", label), ("peer", peer.rawValue)]).increment()
        let ledgered = await ledger.recordRefusal(
            LedgerEntry(time: now, kind: LedgerEntry.Kind.exchangeRefused, actor: "peer:\(peer)", peer: peer.rawValue, dataset: known ? share : nil, reason: reason),
            peer: peer.rawValue, nowMicros: clock())
        if ledgered { logger.warning("replication refused", metadata: ["peer": "\(peer)", "share": "\(share ?? "-")", "reason": "\(reason)"]) }
    }

    static func hex(_ b: [UInt8]) -> String { Hex.lower(b) }

    // MARK: Documents: rosters and receipts

    func document(_ json: [UInt8], from peer: CitySlug) async {
        do {
            let signed = try JSONDecoder().decode(Agreement.Signed.self, from: Data(json))
            struct Kind: Decodable { let type: String }
            guard let cert = await certificate(of: peer) else { throw CityMeshError(.certificateInvalid, "no certificate of \(peer)") }
            // Rosters, receipts and countersignatures count only under the trust in force.
            if let why = distrust(cert, of: peer) { throw CityMeshError(.certificateInvalid, "\(peer)'s certificate is no longer trusted: \(why)") }
            try Agreement.verify(signed, city: peer, certificate: cert)
            switch try signed.decode(Kind.self).type {
            case "citymesh-roster/v1":
                let roster = try signed.decode(ShareRoster.self)
                guard roster.owner == peer.rawValue, roster.members.contains(city.rawValue) else { return }
                if try await store.saveRoster(share: roster.id, issued: roster.issued, document: String(decoding: json, as: UTF8.self)) {
                    invalidate()
                }
            case "citymesh-receipt/v1":
                try await countersign(signed, from: peer)
            case "citymesh-countersign/v1":
                let c = try signed.decode(ReceiptCountersign.self)
                guard let stored = try await store.receipt(id: c.receipt), stored.role == "received", stored.peer == peer.rawValue, c.sender == peer.rawValue,
                    let receipt = try? JSONDecoder().decode(Agreement.Signed.self, from: Data(stored.receipt.utf8))
                else { return }
                let r = try receipt.decode(ExchangeReceipt.self)
                let saved = try await store.saveCountersign(
                    id: c.receipt, countersign: String(decoding: json, as: UTF8.self), log: receiptEntry(r, receipt: receipt, countersign: signed, peer: peer))
                receipts.withLock { $0.countersigned(c.receipt) }
                guard saved else { return }
                countReceipt(r)
            default:
                throw CityMeshError(.malformedInput, "unknown document type")
            }
        } catch {
            await refuse(peer: peer, share: nil, reason: "a replication document refused: \(error)")
        }
    }

    /// As sender: check the receiver's receipt against the batches it names, countersign, ledger.
    func countersign(_ signed: Agreement.Signed, from peer: CitySlug) async throws {
        let r = try signed.decode(ExchangeReceipt.self)
        let isParty = state.withLock({ $0.shares[r.share]?.parties.contains(peer) }) == true
        var named: (id: String, terms: Agreement.Offer)?
        if let id = r.agreement, let held = try await store.agreements().first(where: { $0.id == id }) { named = (held.id, held.terms) }
        let runs = try ReceiptFlow.check(r, sender: city, from: peer, isParty: isParty, agreement: named)
        // Asked again (the receiver restarted before it got the countersignature): the same one.
        if let stored = try await store.receipt(id: signed.id), stored.role == "sent", let c = stored.countersign {
            await send(.document(json: Array(c.utf8)), to: peer)
            return
        }
        var held: [[(hash: [UInt8], records: Int)]] = []
        var sent: [Bool] = []
        for run in runs {
            held.append(try await store.batchHashes(share: r.share, origin: run.origin, seqs: run.seqs).map { ($0.hash, $0.records) })
            sent.append(try await store.wasSent(share: r.share, peer: peer, origin: run.origin, seqs: run.seqs))
        }
        try ReceiptFlow.matches(r, runs: runs, held: held, sent: sent)
        guard let key else { return }
        let size = (try? await ledger.ledger.count()) ?? 0
        let c = try key.sign(ReceiptCountersign(receipt: signed.id, sender: city, senderLedgerSize: size, at: now), as: city)
        let json = try JSONEncoder().encode(c)
        guard try await store.saveCountersigned(
            id: signed.id, peer: peer, share: r.share, receipt: String(decoding: try JSONEncoder().encode(signed), as: UTF8.self),
            countersign: String(decoding: json, as: UTF8.self), at: now, log: receiptEntry(r, receipt: signed, countersign: c, peer: peer))
        else { return }
        countReceipt(r)
        await send(.document(json: Array(json)), to: peer)
    }

    func countReceipt(_ r: ExchangeReceipt) {
        let dimensions = [("share", r.share), ("direction", r.sender == city.rawValue ? "sent" : "received")]
        Counter(label: "citymesh_exchanges_total", dimensions: dimensions).increment()
        Counter(label: "citymesh_exchange_records_total", dimensions: dimensions).increment(by: r.records)
    }

    /// A countersigned receipt's `exchange.receipt` entry, appended with the countersignature in
    /// one transaction (`NodeStore.saveCountersigned`, `saveCountersign`).
    func receiptEntry(_ r: ExchangeReceipt, receipt: Agreement.Signed, countersign: Agreement.Signed, peer: CitySlug) -> LedgerEntry {
        let direction = r.sender == city.rawValue ? "sent to" : "received from"
        let dataset = state.withLock { $0.shares[r.share]?.dataset.description }
        return LedgerEntry(
            time: now, kind: LedgerEntry.Kind.exchangeReceipt, actor: "peer:\(peer)", peer: peer.rawValue, dataset: dataset,
            counts: ["batches": r.batches.compactMap(ExchangeReceipt.parseRun).reduce(0) { $0 + $1.seqs.count }, "records": r.records],
            hashes: ["receipt.sha256": receipt.id, "batches.sha256": r.batchesSHA256],
            detail: "share \(r.share): \(direction) \(peer), \(r.batches.joined(separator: " "))", documents: [receipt, countersign])
    }

    /// As receiver: the receipts `ReceiptFlow` asks for — one per (peer, share) for the batches
    /// taken and not yet receipted (kept in the store, so a restart issues what a crash left
    /// out), and those not yet countersigned, again to a sender that reconnected or every
    /// `receiptRetry` while it stays connected.
    func issueReceipts() async {
        guard let key else { return }
        if !receiptsRestored.withLock({ $0 }) {
            guard let open = try? await store.openReceipts() else { return }
            let current = state.withLock { Set($0.shares.keys) }
            receipts.withLock { $0.restore(open: open.filter { current.contains($0.share) }) }
            receiptsRestored.withLock { $0 = true }
        }
        let taken = ((try? await store.unreceiptedBatches()) ?? []).map {
            ReceiptFlow.Taken(peer: $0.peer, share: $0.share, origin: $0.origin, seq: $0.seq, hash: $0.hash, records: $0.records)
        }
        let t = clock()
        let connected = state.withLock { $0.connected }
        let directives = receipts.withLock { $0.onTick(now: t, taken: taken, connected: connected) }
        guard !directives.isEmpty else { return }
        let size = (try? await ledger.ledger.count()) ?? 0
        let agreements = taken.isEmpty ? [] : ((try? await store.agreements()) ?? []).map { $0.held(now: t) }
        for d in directives {
            switch d {
            case .issue(let draft):
                let terms = ReceiptFlow.agreement(for: draft.share, receiver: city, sender: draft.peer, among: agreements)
                let r = ExchangeReceipt(
                    share: draft.share, sender: draft.peer, receiver: city, batches: draft.runs, records: draft.records, batchesSHA256: draft.digest,
                    receiverLedgerSize: size, at: now, agreement: terms?.id, purpose: terms?.terms.purpose)
                guard let signed = try? key.sign(r, as: city), let json = try? JSONEncoder().encode(signed) else { continue }
                do {
                    try await store.saveIssuedReceipt(
                        id: signed.id, peer: draft.peer, share: draft.share, document: String(decoding: json, as: UTF8.self),
                        batches: draft.batches.map { ($0.origin, $0.seq) }, at: now)
                } catch {
                    logger.error("a receipt could not be kept", metadata: ["peer": "\(draft.peer)", "error": "\(error)"])
                    continue
                }
                receipts.withLock { $0.issued(signed.id, to: draft.peer, share: draft.share, now: t) }
                await send(.document(json: Array(json)), to: draft.peer)
            case .resend(let id, let peer):
                guard let stored = try? await store.receipt(id: id) else { continue }
                guard stored.role == "received", stored.countersign == nil else {
                    receipts.withLock { $0.countersigned(id) }
                    continue
                }
                await send(.document(json: Array(stored.receipt.utf8)), to: peer)
            }
        }
    }

    // MARK: ReplicaDesk

    public func compactNow() async -> [DatasetID: CompactionResult] { await compact(force: true) }

    /// Whether a local write may change a replica: only fields the share lets members write, on
    /// records the member sees, and never a delete. An owner's own datasets are not checked here.
    public func checkLocalWrite(dataset: DatasetID, key: String, fields: [String], delete: Bool) async throws {
        guard dataset.owner != city else { return }
        guard let info = state.withLock({ $0.shares.values.first { $0.dataset == dataset } }) else {
            throw CityMeshError(.forbidden, "'\(dataset)' is \(dataset.owner)'s dataset and no active agreement lets \(city) write it: see 'citymesh agreement list'")
        }
        let schema = try await store.dataset(dataset).schema
        let rights = info.rights(schema: schema)
        let may = info.write.isEmpty ? "no fields" : info.write.joined(separator: ", ")
        switch rights.localWrite(by: city, fields: fields, delete: delete, current: try await store.get(dataset, key: key)?.state) {
        case nil: return
        case .delete:
            throw CityMeshError(.forbidden, "only \(dataset.owner) can delete records of '\(dataset)'; members may write \(may)")
        case .fields(let denied):
            throw CityMeshError(.forbidden, "share \(info.id) does not let \(city) write \(denied.joined(separator: ", ")): members may write \(may)")
        case .create:
            throw CityMeshError(
                .forbidden,
                "'\(key)' is not a record of \(dataset): members update the records \(dataset.owner) shares and cannot create new ones (list them with 'citymesh record list \(dataset)')")
        }
    }

    public func willWrite(dataset: DatasetID) async {
        let known = state.withLock { $0.knowledge[dataset] }
        let snapshot: [CitySlug: HLC]
        if let known { snapshot = known } else {
            snapshot = (try? await store.seenClocks(dataset)) ?? [:]
            state.withLock { s in if s.knowledge[dataset] == nil { s.knowledge[dataset] = snapshot } }
        }
        state.withLock { s in if s.knowledgeAtWrite[dataset] == nil { s.knowledgeAtWrite[dataset] = snapshot } }
    }

    /// A conflict stays open while the value it kept is still in force; a later write of the
    /// field (a resolution made at another city, replicated here) settles it.
    /// The conflicts of `dataset`: open ones, or all with `all`. A read, whoever asks (an auditor
    /// too): open conflicts a later write has superseded are left out here, and marked settled by
    /// the node's own tick (``settleSuperseded()``).
    public func conflicts(dataset: DatasetID, all: Bool) async throws -> [StoredConflict] {
        if all { return try await store.conflicts(dataset, open: false) }
        let open = try await store.conflicts(dataset, open: true)
        let gone = Set(try await superseded(dataset, open).map(\.conflict.id))
        return open.filter { !gone.contains($0.id) }
    }

    /// Open conflicts whose field was written since: the value kept then is no longer the
    /// record's, so the later write settled them. Each with the stamp of that write.
    func superseded(_ dataset: DatasetID, _ open: [StoredConflict]) async throws -> [(conflict: StoredConflict, by: Stamp)] {
        guard !open.isEmpty else { return [] }
        let schema = try await store.dataset(dataset).schema
        var out: [(StoredConflict, Stamp)] = []
        for c in open {
            guard let field = schema.field(named: c.field), let record = try await store.get(dataset, key: c.key),
                let current = record.state.cell(field: field.id), current.stamp.description != c.winnerStamp
            else { continue }
            out.append((c, current.stamp))
        }
        return out
    }

    /// Marks superseded conflicts settled, for every replicated dataset (every tenth tick).
    func settleSuperseded() async {
        let datasets = Set(state.withLock { $0.shares.values.map(\.dataset) })
        for dataset in datasets.sorted(by: { $0.description < $1.description }) {
            do {
                for (c, stamp) in try await superseded(dataset, try await store.conflicts(dataset, open: true)) {
                    try await store.settleConflicts(dataset, key: c.key, field: c.field, by: "a later write (\(stamp))", at: now)
                }
            } catch {
                logger.error("settling superseded conflicts failed", metadata: ["dataset": "\(dataset)", "error": "\(error)"])
            }
        }
    }

    public func status() async -> [API.ShareSync] {
        let (shares, behind, last) = state.withLock { ($0.shares, $0.behindSince, $0.lastExchange) }
        var out: [API.ShareSync] = []
        for info in shares.values.sorted(by: { $0.id < $1.id }) {
            let (held, reports) = machine.withLock { m in (m.held(info.id), info.parties.map { ($0, m.reported(info.id, by: $0)) }) }
            // Reported vectors come from peers: sums saturate rather than trap.
            let heldTotal = held.values.reduce(UInt64(0)) { $0.saturatingAdd($1) }
            var parties: [API.ShareSync.Party] = []
            for (p, r) in reports.sorted(by: { $0.0.rawValue < $1.0.rawValue }) {
                let theirs = r ?? [:]
                var weLack: UInt64 = 0
                var theyLack: UInt64 = 0
                for o in Set(held.keys).union(theirs.keys) {
                    let a = held[o] ?? 0, b = theirs[o] ?? 0
                    if b > a { weLack = weLack.saturatingAdd(b - a) } else { theyLack = theyLack.saturatingAdd(a - b) }
                }
                let state: String
                if r == nil { state = "unknown" } else if weLack > 0 { state = "catching_up" } else if theyLack > 0 { state = "ahead" } else { state = "in_sync" }
                let theirTotal = theirs.values.reduce(UInt64(0)) { $0.saturatingAdd($1) }
                parties.append(API.ShareSync.Party(
                    city: p.rawValue, state: state, batchesHeld: heldTotal, batchesTheyHold: r == nil ? nil : theirTotal, missingHere: weLack, missingThere: theyLack,
                    behindSince: behind["\(info.id) \(p)"].map { RFC3339.format(microseconds: $0) },
                    lastExchange: last["\(info.id) \(p)"].map { RFC3339.format(microseconds: $0) }))
            }
            out.append(API.ShareSync(
                share: info.id, dataset: info.dataset.description, role: info.isOwner ? "owner" : "member", fields: info.fields, write: info.write,
                batches: heldTotal, parties: parties))
        }
        return out
    }
}

extension Certificate {
    func derBytes() throws -> [UInt8] {
        var s = DER.Serializer()
        try s.serialize(self)
        return s.serializedBytes
    }
}
