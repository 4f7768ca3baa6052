import Foundation
import Testing
@testable import CityMeshCore

/// The sync session's own rules as tables: which shares a city takes part in (`ShareDirectory`)
/// and the receipts of its exchanges (`ReceiptFlow`). The node's `ReplicationService` and the
/// simulator both run them (`SimulatorTests.receiptsResent` shows an invariant failing when
/// the receipt rule is broken).
@Suite("Sync session")
struct SyncSessionTests {
    static let hz = try! CitySlug("hangzhou"), sh = try! CitySlug("shanghai"), sz = try! CitySlug("suzhou"), nj = try! CitySlug("nanjing")
    static let share = Policy.Share(
        id: "reg", dataset: "registry", to: [sh, sz], fields: ["id", "status", "district"], filter: "district != 'Restricted'", write: ["status"], purpose: "licensing",
        legalBasis: "MoU", validFrom: nil, validUntil: RFC3339.parse("2028-01-01T00:00:00Z")!, validUntilText: "2027-12-31", onRevoke: .purge)
    static let registry = try! DatasetID(owner: hz, name: "registry")

    static func held(_ member: CitySlug, _ state: Agreement.State, share s: Policy.Share = share, revokedBy: CitySlug? = nil, id: String? = nil) -> ShareDirectory.Held {
        .init(
            id: id ?? "offer-\(member)-\(state.rawValue)", terms: Agreement.Offer(owner: hz, member: member, share: s, policyVersion: 1, issuedAt: "2026-01-01T00:00:00Z", nonce: nil),
            state: state, revokedBy: revokedBy?.rawValue)
    }

    static func plan(
        me: CitySlug, agreements: [ShareDirectory.Held], rosters: [String: ShareRoster] = [:], datasets: Bool = true, replica: [String]? = nil
    ) -> ShareDirectory.Plan {
        ShareDirectory.plan(.init(
            me: me, policy: me == hz ? Policy(shares: [share]) : nil, agreements: agreements, rosters: rosters, keyField: { datasets && $0 == registry ? "id" : nil },
            replica: { d in replica.map { (keyField: "id", fields: $0) }.flatMap { d == registry ? $0 : nil } }))
    }

    @Test("as owner: a share of the policy exists with the members whose agreements are active, its view holding the key field")
    func ownerShares() throws {
        let p = Self.plan(me: Self.hz, agreements: [Self.held(Self.sh, .active), Self.held(Self.sz, .offered)])
        let s = try #require(p.shares["hangzhou/reg"])
        #expect(s.isOwner && s.parties == [Self.sh] && s.fields == ["id", "status", "district"] && s.write == ["status"] && s.filter == Self.share.filter)
        #expect(p.active == ["reg shanghai"])
        // No active member, or no dataset: no share.
        #expect(Self.plan(me: Self.hz, agreements: [Self.held(Self.sh, .expired), Self.held(Self.sz, .rejected)]).shares.isEmpty)
        #expect(Self.plan(me: Self.hz, agreements: [Self.held(Self.sh, .active)], datasets: false).shares.isEmpty)
        // A city the policy does not name, even with an active agreement of the same share, is no party.
        let stray = Self.plan(me: Self.hz, agreements: [Self.held(Self.sh, .active), Self.held(Self.nj, .active)])
        #expect(stray.shares["hangzhou/reg"]?.parties == [Self.sh])
        // The roster the owner signs: new when parties or terms change, not when only time passes.
        let roster = try #require(s.roster(previous: nil, now: 5))
        #expect(roster.members == ["shanghai"] && roster.issued == 5)
        #expect(s.roster(previous: roster, now: 9) == nil)
        var wider = s
        wider.parties.insert(Self.sz)
        #expect(wider.roster(previous: roster, now: 9)?.issued == 9)
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)]).shares["hangzhou/reg"]?.roster(previous: nil, now: 1) == nil, "members sign no roster")
    }

    @Test("the owner's cut and the policy's enforcement point agree: a row goes to a member, with the same fields, exactly when PolicyEngine.view grants it")
    func cutMatchesEnforcementPoint() throws {
        let schema = try Schema(keyField: "id", fields: [("id", .string), ("status", .string), ("district", .string), ("owner_name", .string)])
        let engine = try PolicyEngine(city: Self.hz, policy: Policy(shares: [Self.share]), schemas: ["registry": schema])
        let t = RFC3339.parse("2027-06-01T00:00:00Z")!
        let stamp = Stamp(hlc: HLC(millis: 1, logical: 0), city: Self.hz)
        func row(_ district: String?) -> RecordState {
            var cells = [Cell(field: 1, value: .string("E-1"), stamp: stamp), Cell(field: 2, value: .string("active"), stamp: stamp), Cell(field: 4, value: .string("Li"), stamp: stamp)]
            if let district { cells.append(Cell(field: 3, value: .string(district), stamp: stamp)) }
            return RecordState(cells: cells)
        }
        let rows = [row("Xihu"), row("Restricted"), row(nil)]
        let agreementSets: [[ShareDirectory.Held]] = [
            [Self.held(Self.sh, .active), Self.held(Self.sz, .offered)],
            [Self.held(Self.sh, .active), Self.held(Self.sz, .active)],
            [Self.held(Self.sh, .expired), Self.held(Self.sz, .revoked, revokedBy: Self.hz)],
        ]
        for agreements in agreementSets {
            let plan = Self.plan(me: Self.hz, agreements: agreements)
            let share = plan.shares["hangzhou/reg"]
            let view = share?.view(schema: schema)
            for member in [Self.sh, Self.sz, Self.nj] {
                for r in rows {
                    let granted = engine.view(
                        dataset: "registry", for: member, now: t, accepted: { plan.active.contains("\($0) \($1)") },
                        value: { name in schema.field(named: name).flatMap { r.value(field: $0.id) } })
                    let cut = share.map { $0.parties.contains(member) } == true && view?.admits(r) == true
                    switch granted {
                    case .success(let fields):
                        #expect(cut, "\(member) \(agreements.map(\.state)): the engine grants the row, the cut must send it")
                        #expect(Set(fields) == Set(share?.fields ?? []), "and with the same fields")
                        #expect(view?.fields == Set(fields.compactMap { schema.field(named: $0)?.id }))
                    case .failure(let denial):
                        #expect(!cut, "\(member) \(agreements.map(\.state)): the engine denies it (\(denial.code)), the cut must not send it")
                    }
                }
            }
        }
    }

    @Test("as member: an active agreement is a share with the owner and the roster's members; a roster that leaves this city out, or names another share, adds no one")
    func memberShares() throws {
        let roster = ShareRoster(owner: Self.hz, share: "reg", dataset: "hangzhou/registry", members: [Self.sh, Self.sz], fields: [], filter: nil, write: [], issued: 1)
        let p = Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], rosters: ["hangzhou/reg": roster])
        let s = try #require(p.shares["hangzhou/reg"])
        #expect(!s.isOwner && s.parties == [Self.hz, Self.sz] && s.fields == ["id", "status", "district"] && s.dataset == Self.registry)
        #expect(p.active.isEmpty, "only an owner's agreements make active pairs")
        let without = ShareRoster(owner: Self.hz, share: "reg", dataset: "hangzhou/registry", members: [Self.sz, Self.nj], fields: [], filter: nil, write: [], issued: 2)
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], rosters: ["hangzhou/reg": without]).shares["hangzhou/reg"]?.parties == [Self.hz])
        let forged = ShareRoster(owner: Self.nj, share: "reg", dataset: "hangzhou/registry", members: [Self.sh, Self.nj], fields: [], filter: nil, write: [], issued: 2)
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], rosters: ["hangzhou/reg": forged]).shares["hangzhou/reg"]?.parties == [Self.hz])
        for state in [Agreement.State.offered, .accepted, .rejected, .expired, .revoked] {
            #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, state)]).shares.isEmpty, "\(state)")
        }
        // Another member's agreement is not this city's.
        #expect(Self.plan(me: Self.nj, agreements: [Self.held(Self.sh, .active)]).shares.isEmpty)
    }

    @Test("a replica holding fields the agreement no longer grants is narrowed; one ended with on_revoke: purge is purged — but not after the member ended it itself, nor while another share covers it")
    func narrowAndPurge() throws {
        let narrowed = Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], replica: ["id", "status", "district", "owner_name"])
        #expect(narrowed.narrow.map(\.keep) == [["id", "status", "district"]] && narrowed.narrow.first?.owner == Self.hz)
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], replica: ["id", "status"]).narrow.isEmpty)
        for state in [Agreement.State.expired, .revoked] {
            let p = Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, state, revokedBy: state == .revoked ? Self.hz : nil)], replica: ["id", "status"])
            #expect(p.purge.map(\.ended) == [state] && p.purge.first?.share == "hangzhou/reg" && p.shares.isEmpty)
        }
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .revoked, revokedBy: Self.sh)], replica: ["id"]).purge.isEmpty, "ended by this member")
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .revoked, revokedBy: Self.hz)], replica: nil).purge.isEmpty, "no replica")
        var keep = Self.share
        keep.onRevoke = .keep
        #expect(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .expired, share: keep)], replica: ["id"]).purge.isEmpty, "on_revoke: keep")
        let renewed = Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .expired), Self.held(Self.sh, .active, id: "renewed")], replica: ["id", "status"])
        #expect(renewed.purge.isEmpty && renewed.shares.count == 1, "a renewed agreement covers the replica")
        let twice = Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .expired), Self.held(Self.sh, .revoked, revokedBy: Self.hz)], replica: ["id"])
        #expect(twice.purge.count == 1, "one purge per replica")
    }

    static func taken(_ peer: CitySlug, _ origin: CitySlug, _ seq: UInt64, share: String = "hangzhou/reg") -> ReceiptFlow.Taken {
        .init(peer: peer, share: share, origin: origin, seq: seq, hash: [UInt8](repeating: UInt8(seq), count: 32), records: 10)
    }

    @Test("a receipt per sender and share for the batches taken, in the order taken")
    func issue() throws {
        var flow = ReceiptFlow(retry: 30)
        let d = flow.onTick(now: 0, taken: [Self.taken(Self.hz, Self.hz, 1), Self.taken(Self.sz, Self.hz, 2), Self.taken(Self.hz, Self.hz, 3), Self.taken(Self.hz, Self.sz, 1)], connected: [])
        guard d.count == 2, case .issue(let a) = d[0], case .issue(let b) = d[1] else {
            Issue.record("\(d)")
            return
        }
        #expect(a.peer == Self.hz && a.runs == ["hangzhou:1-1", "hangzhou:3-3", "suzhou:1-1"] && a.records == 30)
        #expect(a.digest == ExchangeReceipt.digest([1, 3, 1].map { [UInt8](repeating: $0, count: 32) }))
        #expect(b.peer == Self.sz && b.runs == ["hangzhou:2-2"])
        #expect(flow.onTick(now: 1, taken: [], connected: [Self.hz]).isEmpty, "nothing issued, nothing to resend")
    }

    @Test("an open receipt goes again when its sender reconnects and every retry while it stays connected, never to a disconnected one, until countersigned")
    func resend() {
        var flow = ReceiptFlow(retry: 30)
        flow.issued("r1", to: Self.hz, share: "hangzhou/reg", now: 100)
        flow.issued("r2", to: Self.sz, share: "suzhou/air", now: 100)
        #expect(flow.onTick(now: 110, taken: [], connected: [Self.hz, Self.sz]).isEmpty, "sent 10 ago")
        #expect(flow.onTick(now: 130, taken: [], connected: [Self.hz]) == [.resend(id: "r1", to: Self.hz)], "due, and only to the connected sender")
        #expect(flow.onTick(now: 140, taken: [], connected: [Self.hz]).isEmpty)
        flow.onConnect(Self.hz)
        #expect(flow.onTick(now: 141, taken: [], connected: [Self.hz]) == [.resend(id: "r1", to: Self.hz)], "at once on reconnect")
        #expect(flow.onTick(now: 142, taken: [], connected: [Self.sz]) == [.resend(id: "r2", to: Self.sz)])
        flow.countersigned("r1")
        #expect(flow.onTick(now: 1000, taken: [], connected: [Self.hz]).isEmpty && flow.openCount == 1)
        // A clock that went back does not hold a receipt back for good.
        #expect(flow.onTick(now: 5, taken: [], connected: [Self.sz]) == [.resend(id: "r2", to: Self.sz)])
        // After a restart: every open receipt is due the first time its sender is connected.
        var restarted = ReceiptFlow(retry: 30)
        restarted.restore(open: [("r2", Self.sz, "suzhou/air"), ("r3", Self.sz, "suzhou/air")])
        #expect(restarted.onTick(now: 0, taken: [], connected: [Self.sz]) == [.resend(id: "r2", to: Self.sz), .resend(id: "r3", to: Self.sz)])
        restarted.issued("r2", to: Self.sz, share: "suzhou/air", now: 0)
        #expect(restarted.openCount == 2, "issued twice is one receipt")
        // The share ended here: its open receipts are not sent again.
        restarted.end(share: "suzhou/air")
        #expect(restarted.openCount == 0 && restarted.onTick(now: 100, taken: [], connected: [Self.sz]).isEmpty)
    }

    @Test("a receipt names the receiver's own agreement for the share: with the sender when it owns the share, else with the owner; the latest active, else the latest not revoked")
    func receiptAgreement() {
        let old = Self.held(Self.sh, .expired, id: "old")
        let active = Self.held(Self.sh, .active, id: "active")
        let revoked = Self.held(Self.sh, .revoked, revokedBy: Self.hz, id: "revoked")
        let other = Self.held(Self.sz, .active, id: "suzhou")
        func named(_ share: String, receiver: CitySlug, sender: CitySlug, _ all: [ShareDirectory.Held]) -> String? {
            ReceiptFlow.agreement(for: share, receiver: receiver, sender: sender, among: all)?.id
        }
        // Shanghai receives from hangzhou (the owner) or from suzhou (a co-member): its own agreement either way.
        #expect(named("hangzhou/reg", receiver: Self.sh, sender: Self.hz, [old, active, revoked, other]) == "active")
        #expect(named("hangzhou/reg", receiver: Self.sh, sender: Self.sz, [old, active, other]) == "active")
        // The owner receiving from shanghai names the agreement with shanghai.
        #expect(named("hangzhou/reg", receiver: Self.hz, sender: Self.sh, [other, active]) == "active")
        #expect(named("hangzhou/reg", receiver: Self.hz, sender: Self.sz, [other, active]) == "suzhou")
        // No active one: the latest not revoked, else the latest.
        #expect(named("hangzhou/reg", receiver: Self.sh, sender: Self.hz, [old, revoked]) == "old")
        #expect(named("hangzhou/reg", receiver: Self.sh, sender: Self.hz, [revoked]) == "revoked")
        // Another share, a malformed share id, nothing held: none.
        #expect(named("hangzhou/other", receiver: Self.sh, sender: Self.hz, [active]) == nil)
        #expect(named("hangzhou", receiver: Self.sh, sender: Self.hz, [active]) == nil)
        #expect(named("nanjing/reg", receiver: Self.sh, sender: Self.nj, [active]) == nil)
    }

    @Test("a peer with many open receipts gets at most 256 a tick; memory holds at most 65,536")
    func bounded() {
        var flow = ReceiptFlow(retry: 30)
        flow.restore(open: (0..<(ReceiptFlow.maxOpen + 10)).map { ("r\($0)", Self.hz, "hangzhou/reg") })
        #expect(flow.openCount == ReceiptFlow.maxOpen)
        #expect(!flow.isOpen("r0") && flow.isOpen("r\(ReceiptFlow.maxOpen + 9)"), "the newest are kept")
        #expect(flow.onTick(now: 0, taken: [], connected: [Self.hz]).count == ReceiptFlow.resendPerTick)
        flow.issued("new", to: Self.sz, share: "hangzhou/reg", now: 0)
        #expect(flow.openCount == ReceiptFlow.maxOpen)
    }

    static func receipt(runs: [String], digest: String, records: Int, sender: CitySlug = hz, receiver: CitySlug = sh, agreement: String? = nil) -> ExchangeReceipt {
        ExchangeReceipt(
            share: "hangzhou/reg", sender: sender, receiver: receiver, batches: runs, records: records, batchesSHA256: digest, receiverLedgerSize: 0, at: "x",
            agreement: agreement)
    }

    @Test("the sender countersigns only a receipt from a party, between the two of them, under their agreement, for batches it holds and sent, with the digest and count they have")
    func senderCheck() throws {
        let hashes: [[UInt8]] = [[1], [2], [3]]
        let digest = ExchangeReceipt.digest(hashes)
        let good = Self.receipt(runs: ["hangzhou:1-2", "suzhou:7-7"], digest: digest, records: 30)
        let runs = try ReceiptFlow.check(good, sender: Self.hz, from: Self.sh, isParty: true, agreement: nil)
        #expect(runs.map(\.origin) == [Self.hz, Self.sz] && runs.map(\.seqs) == [1...2, 7...7])
        let held: [[(hash: [UInt8], records: Int)]] = [[([1], 10), ([2], 10)], [([3], 10)]]
        try ReceiptFlow.matches(good, runs: runs, held: held, sent: [true, true])
        func refused(_ f: () throws -> Void) -> String? {
            do {
                try f()
                return nil
            } catch { return (error as? CityMeshError)?.message ?? "not a CityMeshError: \(error)" }
        }
        #expect(refused { _ = try ReceiptFlow.check(good, sender: Self.hz, from: Self.sz, isParty: true, agreement: nil) }?.contains("other cities") == true)
        #expect(refused { _ = try ReceiptFlow.check(good, sender: Self.sz, from: Self.sh, isParty: true, agreement: nil) }?.contains("other cities") == true)
        #expect(refused { _ = try ReceiptFlow.check(good, sender: Self.hz, from: Self.sh, isParty: false, agreement: nil) }?.contains("not a party") == true)
        let other = Self.held(Self.nj, .active).terms
        #expect(refused { _ = try ReceiptFlow.check(good, sender: Self.hz, from: Self.sh, isParty: true, agreement: ("x", other)) }?.contains("names agreement") == true)
        #expect(refused { _ = try ReceiptFlow.check(good, sender: Self.hz, from: Self.sh, isParty: true, agreement: ("x", Self.held(Self.sh, .active).terms)) } == nil)
        for run in ["hangzhou:0-1", "hangzhou:3-2", "hangzhou:1-\(UInt64.max)", "hangzhou:1-\(UInt64(1) << 63)", "NOT A CITY:1-1", "hangzhou:1", "hangzhou:1-2-3"] {
            #expect(refused { _ = try ReceiptFlow.check(Self.receipt(runs: [run], digest: digest, records: 0), sender: Self.hz, from: Self.sh, isParty: true, agreement: nil) } != nil, "\(run)")
        }
        #expect(refused { try ReceiptFlow.matches(good, runs: runs, held: [[([1], 10)], [([3], 10)]], sent: [true, true]) }?.contains("does not hold") == true)
        #expect(refused { try ReceiptFlow.matches(good, runs: runs, held: held, sent: [true, false]) }?.contains("never sent") == true)
        #expect(refused { try ReceiptFlow.matches(Self.receipt(runs: good.batches, digest: digest, records: 31), runs: runs, held: held, sent: [true, true]) }?.contains("count") == true)
        #expect(refused { try ReceiptFlow.matches(Self.receipt(runs: good.batches, digest: ExchangeReceipt.digest([[9]]), records: 30), runs: runs, held: held, sent: [true, true]) } != nil)
        #expect(refused { try ReceiptFlow.matches(good, runs: runs, held: [[(hash: [1], records: Int.max), ([2], Int.max)], [([3], 1)]], sent: [true, true]) } != nil, "counts from the store cannot trap")
    }

    @Test("the schedule: exchange every tick, the share plan every second tick or when asked, collection every tenth, one compaction pass at a time and the next after 20× its duration (at least 2 s), the WAL truncated until it succeeds")
    func schedule() {
        var s = SyncSchedule()
        var works: [SyncSchedule.Work] = []
        for t in 0..<10 { works.append(s.onTick(now: Int64(t) * 500_000)) }
        #expect(works.allSatisfy { $0.contains(.exchange) })
        #expect(works.indices.filter { works[$0].contains(.refresh) } == [0, 2, 4, 6, 8])
        #expect(works.indices.filter { works[$0].contains(.collect) } == [9])
        s.invalidate()
        let asked = s.onTick(now: 5_000_000)
        #expect(asked.contains(.refresh), "asked: at once")
        // Compaction: due at first; one at a time; a forced pass waits for none but a running one.
        var w = s.onTick(now: 5_500_000)
        #expect(w.contains(.compact))
        var began = s.beginCompaction(now: 5_500_000, force: false)
        #expect(began)
        began = s.beginCompaction(now: 5_500_000, force: true)
        w = s.onTick(now: 6_000_000)
        #expect(!began && !w.contains(.compact), "one at a time")
        s.compactionFinished(now: 6_000_000, tookMillis: 500, rewrote: true)
        w = s.onTick(now: 6_500_000)
        began = s.beginCompaction(now: 6_500_000, force: false)
        #expect(!w.contains(.compact) && !began, "the next in 10 s (20 × 500 ms)")
        began = s.beginCompaction(now: 6_500_000, force: true)
        #expect(began, "an erasure asks for one at once")
        s.compactionFinished(now: 6_600_000, tookMillis: 10, rewrote: false)
        w = s.onTick(now: 8_700_000)
        #expect(w.contains(.compact), "at least 2 s after a short pass")
        // A pass that rewrote batches: the WAL is truncated every tick until it succeeds.
        let w1 = s.onTick(now: 8_800_000), w2 = s.onTick(now: 8_900_000)
        #expect(w1.contains(.truncateWAL) && w2.contains(.truncateWAL))
        s.walTruncated()
        w = s.onTick(now: 9_000_000)
        #expect(!w.contains(.truncateWAL))
        // A pass that took an absurd time does not overflow the clock.
        s.compactionFinished(now: .max - 10, tookMillis: .max, rewrote: false)
        w = s.onTick(now: .max - 5)
        #expect(!w.contains(.compact))
        // Tombstones: older than the grace; a clock near 0 collects nothing; a dataset once all its shares settle.
        #expect(SyncSchedule.tombstoneCutoff(nowMicros: 60_000_000) == HLC(millis: 50_000, logical: 0))
        #expect(SyncSchedule.tombstoneCutoff(nowMicros: 1_000) == HLC(millis: 0, logical: 0) && SyncSchedule.tombstoneCutoff(nowMicros: -5) == HLC(millis: 0, logical: 0))
        #expect(SyncSchedule.collectable(["a", "b"]) { $0 == "a" } == false && SyncSchedule.collectable(["a"]) { _ in true } && !SyncSchedule.collectable([]) { _ in true })
    }

    @Test("a batch is considered only if it names the share and its dataset and comes from a party; a replica takes its schema and key field from the owner's batches, within the offer's view")
    func batchAdmission() throws {
        let member = try #require(Self.plan(me: Self.sh, agreements: [Self.held(Self.sh, .active)], rosters: ["hangzhou/reg": ShareRoster(
            owner: Self.hz, share: "reg", dataset: "hangzhou/registry", members: [Self.sh, Self.sz], fields: [], filter: nil, write: [], issued: 1)]).shares["hangzhou/reg"])
        let fields = [Schema.Field(id: 1, name: "id", type: .string, nullable: false), Schema.Field(id: 2, name: "status", type: .string, nullable: true),
                      Schema.Field(id: 3, name: "owner_name", type: .string, nullable: true)]
        func batch(_ origin: CitySlug, share: String = "hangzhou/reg", dataset: String = "hangzhou/registry", fields f: [Schema.Field] = fields) -> ChangeBatch {
            ChangeBatch(share: share, dataset: dataset, origin: origin, seq: 1, prev: ChangeBatch.zeroHash, fields: f, seen: [:], records: [])
        }
        #expect(member.refusal(of: batch(Self.hz), at: Self.sh) == nil && member.refusal(of: batch(Self.sz), at: Self.sh) == nil)
        #expect(member.refusal(of: batch(Self.nj), at: Self.sh)?.contains("not party") == true)
        #expect(member.refusal(of: batch(Self.hz, share: "hangzhou/other"), at: Self.sh) != nil)
        #expect(member.refusal(of: batch(Self.hz, dataset: "hangzhou/secrets"), at: Self.sh) != nil)
        // The owner's first batch founds the replica with the fields of the view only.
        #expect(member.founding(batch(Self.hz), replicaExists: false) == .take(fields: Array(fields[0...1]), keyField: "id"))
        guard case .wait = member.founding(batch(Self.sz), replicaExists: false) else {
            Issue.record("a co-member's batch before the owner's first must wait")
            return
        }
        #expect(member.founding(batch(Self.sz), replicaExists: true) == .take(fields: [], keyField: "id"), "a co-member's fields never count")
        guard case .refuse = member.founding(batch(Self.hz, fields: [fields[2]] + fields), replicaExists: false) else {
            Issue.record("a key field outside the offer's view must be refused")
            return
        }
    }
}
