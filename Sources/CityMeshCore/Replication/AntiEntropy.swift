/// How far a node holds each origin's batches of one share: origin → the highest batch number
/// held. Batches are taken strictly in order, so "up to n" means "all of 1…n".
public typealias VersionVector = [CitySlug: UInt64]

/// Anti-entropy for the shares a node is party to, as a pure state machine (DESIGN.md §1, §5).
///
/// Two mechanisms together, and one rule for every transfer:
/// - **epidemic push**: a batch that is new here (written here, or just taken from a peer) is
///   announced at once to `announce` random connected parties not known to hold it, each party
///   announcing it once;
/// - **pull**: every tick each share's summary (its version vector) goes to `fanout` random
///   connected parties; a party that holds more announces what it holds. A summary from a party
///   that holds batches we lack is answered with our own summary, so they flow both ways in one
///   exchange (never a reply to a reply);
/// - **announce before send**: an ANNOUNCE names an origin and the highest batch of it held, no
///   records. A party that lacks some asks that one announcer (WANT) for the next ones it needs,
///   at most `window`, and asks no one else for that origin until they arrive or `wantTimeout`
///   ticks pass. A batch so travels to each party about once: pushed whole to `fanout` parties
///   and sent whole in answer to every summary, 71% of the batches that arrived at N = 1,000
///   were already held.
///
/// The node tells it who is party to each share (`setParties`) and who is reachable
/// (`setConnected`); it answers with directives the shell performs. What a peer holds is tracked
/// optimistically (what it said, plus what we sent it since); a disconnect forgets the optimism.
public struct AntiEntropy: Sendable {
    public struct Config: Sendable {
        /// Summaries sent per share per tick.
        public var fanout = 3
        /// Batches per origin in one request (WANT), and in its answer: bounds what one answer costs.
        public var window: UInt64 = 64
        /// Parties a fresh batch is announced to (default: 3 × `fanout`). An announcement is a few
        /// dozen bytes and only the first one a party gets is answered, so announcing widely
        /// costs little and makes up for the round trip a request adds: at N = 1,000 with 10%
        /// loss a change reached every node in 16 rounds announced to 3, 14 to 6, 13 to 9.
        public var announce: Int
        public init(fanout: Int = 3, window: UInt64 = 64, announce: Int? = nil) {
            self.fanout = fanout
            // At least 1: a request is then never an empty (reversed) range.
            self.window = Swift.max(1, window)
            self.announce = announce ?? 3 * fanout
        }
    }

    public enum Directive: Sendable, Equatable {
        /// Send our summary of `share`. `reply` marks an answer, which is never answered.
        case summary(to: CitySlug, share: String, vector: VersionVector, reply: Bool)
        /// Send `origin`'s batches `seqs` of `share`, in order.
        case send(to: CitySlug, share: String, origin: CitySlug, seqs: ClosedRange<UInt64>)
        /// Tell a party what every party of ours has confirmed holding (for tombstone collection
        /// by nodes that cannot hear from every party themselves).
        case acked(to: CitySlug, share: String, vector: VersionVector)
        /// Tell a party that `origin`'s batches up to `seq` are held here (it asks for those it lacks).
        case announce(to: CitySlug, share: String, origin: CitySlug, seq: UInt64)
        /// Ask a party that announced them to send `origin`'s batches `seqs`.
        case want(to: CitySlug, share: String, origin: CitySlug, seqs: ClosedRange<UInt64>)
    }

    /// What to do with a batch that arrived.
    public enum Verdict: Sendable, Equatable {
        /// The next one expected: verify it, merge it, then call ``accepted(share:origin:seq:from:)``.
        case take
        /// Already held: drop it (a relay raced another).
        case duplicate
        /// Ahead of what is held: drop it; the missing ones come first through pull.
        case gap(expected: UInt64)
        /// Not a party to this share (or the sender is not): refuse it.
        case notParty
    }

    struct Wanted: Sendable {
        var through: UInt64
        var peer: CitySlug
        var tick: UInt64
        /// The party that announced the most of this origin meanwhile, and how far: asked next,
        /// when these arrive or time out.
        var ahead: (peer: CitySlug, seq: UInt64)?
    }

    struct Share: Sendable {
        var parties: Set<CitySlug> = []
        var held: VersionVector = [:]
        /// Per party: what it said it holds.
        var reported: [CitySlug: VersionVector] = [:]
        /// Per party: what it said, raised by what we sent it since.
        var known: [CitySlug: VersionVector] = [:]
        /// Per party: how many summaries in a row showed no progress at all while below `known`
        /// (kept under this node's own name).
        var stalls: [CitySlug: [CitySlug: Int]] = [:]
        /// Per party: the vector it said all of its parties hold.
        var ackedByAll: [CitySlug: VersionVector] = [:]
        /// Per origin: the last batch asked for (WANT), of whom, and at which tick.
        var wanted: [CitySlug: Wanted] = [:]
    }

    public let me: CitySlug
    public let config: Config
    var shares: [String: Share] = [:]
    public private(set) var connected: Set<CitySlug> = []
    /// Each share's connected parties, in byte order: what every tick and every batch taken
    /// choose from. Kept until the parties or the connections change (sorting a thousand
    /// parties' names per tick and per batch was a quarter of a 1,000-node simulation's time).
    var reachableCache: [String: [CitySlug]] = [:]

    /// `share`'s connected parties, in byte order.
    mutating func reachable(_ name: String, _ s: Share) -> [CitySlug] {
        if let cached = reachableCache[name] { return cached }
        let r = s.parties.filter { connected.contains($0) }.sorted { $0.rawValue < $1.rawValue }
        reachableCache[name] = r
        return r
    }
    /// The cached lists of connected parties brought up to date: a few connections that came or
    /// went are put in or taken out where they sort; many at once make the lists again when next read.
    mutating func updateReachable(added: Set<CitySlug>, gone: Set<CitySlug>) {
        guard added.count + gone.count <= 64 else { reachableCache = [:]; return }
        func position(_ p: CitySlug, in r: [CitySlug]) -> Int {
            var lo = 0, hi = r.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if r[mid].rawValue < p.rawValue { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        for name in Array(reachableCache.keys) {
            // Taken out while it changes, so the array is changed in place rather than copied.
            guard var r = reachableCache.removeValue(forKey: name), let s = shares[name] else { continue }
            for p in gone {
                let i = position(p, in: r)
                if i < r.count, r[i] == p { r.remove(at: i) }
            }
            for p in added where s.parties.contains(p) {
                let i = position(p, in: r)
                if i == r.count || r[i] != p { r.insert(p, at: i) }
            }
            reachableCache[name] = r
        }
    }
    var rng: SplitMix64
    var ticks: UInt64 = 0
    /// Every this many ticks, the acknowledged vector goes along with the summaries.
    public static let ackEvery: UInt64 = 10
    /// Batches asked for (WANT) that have not all arrived once this many whole tick periods have
    /// passed (more ticks than this since the ask) are asked for again, of the party that
    /// announced the most meanwhile or another known to hold them (the answer was lost, or its
    /// sender went away). The same party is asked again only after twice as long: one that
    /// announces and never sends cannot hold a node back by always announcing first.
    public static let wantTimeout: UInt64 = 1
    /// Most origins with batches asked for at once, per share: announcements naming invented
    /// origins cannot grow the table beyond it.
    public static let maxWanted = ReplicationWire.maxVector

    public init(me: CitySlug, config: Config = Config(), seed: UInt64) {
        self.me = me
        self.config = config
        self.rng = SplitMix64(seed: seed)
    }

    // MARK: What the node tells it

    /// Who besides us may exchange `share`'s batches, and what we hold of it (from the store).
    public mutating func setParties(share: String, parties: Set<CitySlug>, held: VersionVector) {
        var s = shares[share] ?? Share()
        s.parties = parties.subtracting([me])
        s.held = held
        reachableCache[share] = nil
        for gone in Set(s.reported.keys).subtracting(s.parties) {
            s.reported[gone] = nil
            s.known[gone] = nil
        }
        shares[share] = s
    }

    public mutating func removeShare(_ share: String) {
        shares[share] = nil
        reachableCache[share] = nil
    }

    public var shareNames: [String] { shares.keys.sorted() }

    public func held(_ share: String) -> VersionVector { shares[share]?.held ?? [:] }
    public func parties(_ share: String) -> Set<CitySlug> { shares[share]?.parties ?? [] }
    /// What `party` last said it holds of `share` (nil: it has not said since we connected).
    public func reported(_ share: String, by party: CitySlug) -> VersionVector? { shares[share]?.reported[party] }

    /// Which peers are reachable now. A peer that went away loses what we assumed it got.
    public mutating func setConnected(_ peers: Set<CitySlug>) {
        setConnected(adding: peers.subtracting(connected), removing: connected.subtracting(peers))
    }

    /// The same, told as the peers that came and the peers that went (what a shell that sees
    /// each change knows, without a set of every connected peer).
    public mutating func setConnected(adding added: Set<CitySlug>, removing gone: Set<CitySlug>) {
        let added = added.subtracting(gone).filter { !connected.contains($0) }
        let gone = gone.filter { connected.contains($0) }
        guard !gone.isEmpty || !added.isEmpty else { return }
        connected.formUnion(added)
        connected.subtract(gone)
        updateReachable(added: added, gone: gone)
        guard !gone.isEmpty else { return }
        for name in Array(shares.keys) {
            guard var s = shares[name] else { continue }
            shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
            for p in gone { s.known[p] = s.reported[p] }
            shares[name] = s
        }
    }

    /// A peer (re)connected: forget what we assumed it holds and wait for its summary.
    public mutating func onConnect(_ peer: CitySlug) {
        if connected.insert(peer).inserted { updateReachable(added: [peer], gone: []) }
        for name in Array(shares.keys) {
            guard var s = shares[name] else { continue }
            shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
            s.known[peer] = nil
            s.reported[peer] = nil
            s.stalls[peer] = nil
            shares[name] = s
        }
    }

    /// The vector every party has confirmed holding (the minimum over all parties' reports; an
    /// origin some party has not reported counts as 0): batches at or below it may be forgotten,
    /// and tombstones in them collected.
    public func acknowledgedByAll(_ share: String) -> VersionVector {
        guard let s = shares[share] else { return [:] }
        // Per origin, the least any party reported; a party that reported nothing makes it 0.
        var least = s.held.map { (origin: $0.key, seq: $0.value) }
        for p in s.parties {
            guard let r = s.reported[p] else { return [:] }
            for i in least.indices where least[i].seq > 0 { least[i].seq = min(least[i].seq, r[least[i].origin] ?? 0) }
        }
        var out: VersionVector = [:]
        for (o, n) in least where n > 0 { out[o] = n }
        return out
    }

    // MARK: Events

    /// A period passed: pull from `fanout` random connected parties of each share.
    public mutating func onTick() -> [Directive] {
        ticks += 1
        var out: [Directive] = []
        for name in shares.keys.sorted() {
            guard var s = shares[name] else { continue }
            shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
            // In name order: what is asked of whom draws on the generator, which must not depend
            // on how a dictionary happens to lay out its keys.
            for o in s.wanted.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
                guard let w = s.wanted[o], ticks &- w.tick > Self.wantTimeout else { continue }
                // Not all arrived within a whole tick: ask the party that announced the most
                // meanwhile, or else any other connected party known to hold more.
                let have = s.held[o] ?? 0
                var next = w.ahead.flatMap { a in a.peer != w.peer && connected.contains(a.peer) ? a : nil }
                if next == nil {
                    next = pick(1, from: reachable(name, s)) { p in p != w.peer && (s.known[p]?[o] ?? 0) > have }.first.map { ($0, s.known[$0]?[o] ?? 0) }
                }
                if let a = next, let d = want(o, of: a.peer, through: a.seq, in: &s) {
                    out.append(d.named(name))
                } else if ticks &- w.tick > 2 * Self.wantTimeout {
                    s.wanted[o] = nil
                }
            }
            shares[name] = s
            let reachable = reachable(name, s)
            let acked = ticks % Self.ackEvery == 0 ? acknowledgedByAll(name) : [:]
            for p in pick(config.fanout, from: reachable) {
                out.append(.summary(to: p, share: name, vector: s.held, reply: false))
                if !acked.isEmpty { out.append(.acked(to: p, share: name, vector: acked)) }
            }
        }
        return out
    }

    /// Whether `peer` is a party of `share` here.
    public func isParty(_ peer: CitySlug, of share: String) -> Bool {
        shares[share]?.parties.contains(peer) ?? false
    }

    /// A party says all of its parties hold `vector`.
    public mutating func onAcked(from peer: CitySlug, share name: String, vector: VersionVector) {
        guard var s = shares[name], s.parties.contains(peer) else { return }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        s.ackedByAll[peer] = vector
        shares[name] = s
    }

    /// Whether every party holds every batch this node holds: then no write older than what this
    /// node has merged can arrive from anywhere, and tombstones it holds may be collected. A party
    /// counts as holding them if it said so itself, or if another party said all of its parties do.
    public func settled(_ share: String) -> Bool {
        guard let s = shares[share], !s.held.isEmpty else { return false }
        func covers(_ v: VersionVector?) -> Bool { v.map { r in s.held.allSatisfy { (r[$0.key] ?? 0) >= $0.value } } ?? false }
        // Every party knows the share's whole party list (the owner from its policy, members from
        // the roster), so one party's "all of mine hold v" covers everyone.
        if s.ackedByAll.values.contains(where: covers) { return true }
        return s.parties.allSatisfy { covers(s.reported[$0]) }
    }

    /// A party's summary arrived: announce what it lacks; ask for what we lack.
    public mutating func onSummary(from peer: CitySlug, share name: String, vector: VersionVector, reply: Bool) -> [Directive] {
        guard var s = shares[name], s.parties.contains(peer) else { return [] }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        let before = s.reported[peer]
        s.reported[peer] = vector
        // Taken out while it changes (put back below), so it is changed in place, not copied.
        var known = s.known.removeValue(forKey: peer) ?? [:]
        // A party that reports the same vector twice while below what we assumed it got is not
        // working through a backlog of ours (it would have moved on some origin): a batch we
        // counted on was dropped, so forget the assumption and send again.
        let below = known.contains { o, k in (vector[o] ?? 0) < k }
        if below, let before, before == vector {
            let n = (s.stalls[peer]?[me] ?? 0) + 1
            if n >= 2 {
                known = vector
                s.stalls[peer] = [:]
            } else {
                s.stalls[peer] = [me: n]
            }
        } else {
            s.stalls[peer] = [:]
        }
        for (o, n) in vector where s.held[o] != nil { known[o] = Swift.max(known[o] ?? 0, n) }
        var out: [Directive] = []
        // Announced, not sent: it asks for what it still lacks when this arrives, of one party
        // (others may be announcing the same batches to it now).
        for (o, mine) in s.held.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where mine > (vector[o] ?? 0) {
            out.append(.announce(to: peer, share: name, origin: o, seq: mine))
        }
        s.known[peer] = known
        let theyHaveMore = vector.contains { o, n in n > (s.held[o] ?? 0) }
        shares[name] = s
        if theyHaveMore && !reply {
            out.append(.summary(to: peer, share: name, vector: s.held, reply: true))
        }
        return out
    }

    /// A batch arrived: may it be merged now?
    public func onBatch(share name: String, origin: CitySlug, seq: UInt64, from peer: CitySlug) -> Verdict {
        guard let s = shares[name], s.parties.contains(peer) || peer == me else { return .notParty }
        let have = s.held[origin] ?? 0
        if seq <= have { return .duplicate }
        if seq - have > 1 { return .gap(expected: have + 1) }  // seq > have here, so neither side can overflow
        return .take
    }

    /// A batch was merged and stored (or, with `from == me`, written here): hold it, and push it
    /// to parties that can take it next.
    public mutating func accepted(share name: String, origin: CitySlug, seq: UInt64, from peer: CitySlug) -> [Directive] {
        guard var s = shares[name] else { return [] }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        s.held[origin] = Swift.max(s.held[origin] ?? 0, seq)
        if peer != me {
            noteKnown(peer, holds: origin, through: seq, in: &s)
        }
        let ready = seq == 0 ? [] : pick(config.announce, from: reachable(name, s)) { p in
            p != peer && p != origin && (s.known[p]?[origin] ?? 0) < seq
        }
        var out: [Directive] = []
        if let w = s.wanted[origin], w.through <= seq {
            s.wanted[origin] = nil
            // All arrived; a party announced more meanwhile: ask it for the next ones now.
            if let a = w.ahead, a.seq > seq, connected.contains(a.peer), let d = want(origin, of: a.peer, through: a.seq, in: &s) { out.append(d.named(name)) }
        }
        for p in ready {
            out.append(.announce(to: p, share: name, origin: origin, seq: seq))
        }
        shares[name] = s
        return out
    }

    /// A party announced that it holds `origin`'s batches up to `seq`: ask it for the next ones
    /// this node lacks, unless they were asked for within `wantTimeout` ticks.
    public mutating func onAnnounce(from peer: CitySlug, share name: String, origin: CitySlug, seq: UInt64) -> [Directive] {
        guard var s = shares[name], s.parties.contains(peer), seq <= ReplicationWire.maxSeq else { return [] }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        defer { shares[name] = s }
        // So far as this node knows, `peer` holds everything up to it (kept for origins held
        // here: invented ones cannot grow the table).
        if s.held[origin] != nil {
            noteKnown(peer, holds: origin, through: seq, in: &s)
        }
        let have = s.held[origin] ?? 0
        guard seq > have else { return [] }
        if var w = s.wanted[origin], w.through > have {
            let asked = ticks &- w.tick
            // A tick has passed since the ask (the answer would have come by now, between two
            // parties in touch) and another party announces them: ask it. The tick itself waits
            // a whole period (`onTick`), since an ask made just before it is not overdue yet.
            if asked < Self.wantTimeout || (w.peer == peer && asked < 2 * Self.wantTimeout) {
                // Being sent: remember who holds the most, to ask next.
                if peer != w.peer, seq >= w.through, seq > (w.ahead?.seq ?? 0) { w.ahead = (peer, seq) }
                s.wanted[origin] = w
                return []
            }
        }
        guard s.wanted[origin] != nil || s.wanted.count < Self.maxWanted else { return [] }
        return want(origin, of: peer, through: seq, in: &s).map { [$0.named(name)] } ?? []
    }

    /// A WANT of `origin`'s next batches (at most `window`, through `seq`) of `peer`, noted in `s`.
    func want(_ origin: CitySlug, of peer: CitySlug, through seq: UInt64, in s: inout Share) -> Unnamed? {
        let have = s.held[origin] ?? 0
        guard seq > have, seq <= ReplicationWire.maxSeq else { return nil }
        let through = Swift.min(seq, have + config.window)  // have < seq ≤ 2^62: no overflow
        s.wanted[origin] = Wanted(through: through, peer: peer, tick: ticks)
        return Unnamed(to: peer, origin: origin, seqs: (have + 1)...through)
    }

    /// `peer` is known to hold `origin`'s batches through `seq`: raised in place (a nested
    /// dictionary read out, changed and written back is copied on every write).
    func noteKnown(_ peer: CitySlug, holds origin: CitySlug, through seq: UInt64, in s: inout Share) {
        if seq > (s.known[peer]?[origin] ?? 0) { s.known[peer, default: [:]][origin] = seq }
    }

    /// A WANT before its share's name is put in.
    struct Unnamed {
        let to: CitySlug, origin: CitySlug, seqs: ClosedRange<UInt64>
        func named(_ share: String) -> Directive { .want(to: to, share: share, origin: origin, seqs: seqs) }
    }

    /// A batch arrived ahead of the next one needed (`Verdict.gap`). From the party asked for
    /// them, the first after the missing one means that party's answer lost it on the way: ask
    /// again at once rather than at the end of the next tick.
    public mutating func onGap(share name: String, origin: CitySlug, seq: UInt64, from peer: CitySlug) -> [Directive] {
        guard var s = shares[name], let w = s.wanted[origin], w.peer == peer, seq == (s.held[origin] ?? 0) &+ 2 else { return [] }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        defer { shares[name] = s }
        return want(origin, of: peer, through: w.through, in: &s).map { [$0.named(name)] } ?? []
    }

    /// A party asks for `origin`'s batches `seqs`: send those held here, at most `window`.
    public mutating func onWant(from peer: CitySlug, share name: String, origin: CitySlug, seqs: ClosedRange<UInt64>) -> [Directive] {
        guard var s = shares[name], s.parties.contains(peer), seqs.lowerBound >= 1 else { return [] }
        let held = s.held[origin] ?? 0
        let through = Swift.min(seqs.upperBound, held, seqs.lowerBound.saturatingAdd(config.window) - 1)
        guard seqs.lowerBound <= through else { return [] }
        shares[name] = nil  // s is the only copy while it changes: no copy-on-write of its tables
        noteKnown(peer, holds: origin, through: through, in: &s)
        shares[name] = s
        return [.send(to: peer, share: name, origin: origin, seqs: seqs.lowerBound...through)]
    }

    /// The batches of `origin` last asked for and not yet all arrived (for tests).
    public func wanted(_ share: String, origin: CitySlug) -> UInt64? { shares[share]?.wanted[origin]?.through }

    mutating func pick(_ k: Int, from candidates: [CitySlug]) -> [CitySlug] {
        pick(k, from: candidates) { _ in true }
    }

    /// Up to `k` of `candidates` for which `eligible` holds, chosen at random. Among many
    /// candidates (a thousand parties) they are drawn one at a time, so a pick costs about `k`
    /// looks instead of a pass over every party; if the draws find too few (most are not
    /// eligible), every candidate is looked at, so none that is eligible is ever missed.
    mutating func pick(_ k: Int, from candidates: [CitySlug], where eligible: (CitySlug) -> Bool) -> [CitySlug] {
        guard k > 0 else { return [] }
        if let chosen = rng.draw(k, from: candidates, where: eligible) { return chosen }
        var c = candidates.filter(eligible)
        guard c.count > k else { return c }
        c.shuffle(using: &rng)
        return Array(c.prefix(k))
    }
}

/// The summary message of channel 5 (docs/protocol.md §8): `u8 0x01` (0x02 for a reply),
/// `str8 share`, `u16 n`, then n × (`str8 origin`, `u64 seq`), origins in byte order.
public enum ReplicationWire {
    public static let channel: UInt16 = 5

    public enum Message: Sendable, Equatable {
        case summary(share: String, vector: VersionVector, reply: Bool)
        /// A signed batch (bytes of ``SignedBatch``).
        case batch(share: String, bytes: [UInt8])
        /// A city's certificate (DER), sent before the first relayed batch of that city.
        case certificate(city: CitySlug, der: [UInt8])
        /// A signed JSON document: a roster, a receipt or a countersignature.
        case document(json: [UInt8])
        /// Another city's signed checkpoint, passed on for witnessing.
        case checkpoint(city: CitySlug, note: String)
        /// What all of the sender's parties have confirmed holding of a share (layout as SUMMARY).
        case acked(share: String, vector: VersionVector)
        /// The sender holds `origin`'s batches of `share` up to `seq`.
        case announce(share: String, origin: CitySlug, seq: UInt64)
        /// The sender asks for `origin`'s batches `seqs` (announced by this node).
        case want(share: String, origin: CitySlug, seqs: ClosedRange<UInt64>)
    }

    public static let maxVector = 4096
    /// The largest batch number any message may carry (2^62). A city numbers its batches from 1 up
    /// by one, so no honest value comes near it; below it, `seq + window` cannot overflow.
    public static let maxSeq: UInt64 = 1 << 62

    public static func encode(_ m: Message) -> [UInt8] {
        var w = WireWriter()
        func vector(_ share: String, _ vector: VersionVector) {
            w.str8(share)
            let sorted = vector.sorted { $0.key.rawValue < $1.key.rawValue }
            w.u16(UInt16(sorted.count))
            for (o, n) in sorted {
                w.str8(o.rawValue)
                w.u64(n)
            }
        }
        switch m {
        case .summary(let share, let v, let reply):
            w.u8(reply ? 2 : 1)
            vector(share, v)
        case .acked(let share, let v):
            w.u8(7)
            vector(share, v)
        case .batch(let share, let bytes):
            w.u8(3)
            w.str8(share)
            w.raw(bytes)
        case .certificate(let city, let der):
            w.u8(4)
            w.str8(city.rawValue)
            w.raw(der)
        case .document(let json):
            w.u8(5)
            w.raw(json)
        case .checkpoint(let city, let note):
            w.u8(6)
            w.str8(city.rawValue)
            w.raw(Array(note.utf8))
        case .announce(let share, let origin, let seq):
            w.u8(8)
            w.str8(share)
            w.str8(origin.rawValue)
            w.u64(seq)
        case .want(let share, let origin, let seqs):
            w.u8(9)
            w.str8(share)
            w.str8(origin.rawValue)
            w.u64(seqs.lowerBound)
            w.u64(seqs.upperBound)
        }
        return w.bytes
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> Message {
        var r = WireReader(bytes)
        let type = try r.u8("replication message type")
        switch type {
        case 1, 2, 7:
            let share = try r.str8("summary share")
            let n = Int(try r.u16("summary size"))
            guard n <= maxVector else { throw .malformed("summary names \(n) origins; the limit is \(maxVector)") }
            var v: VersionVector = [:]
            for _ in 0..<n {
                guard let o = try? CitySlug(try r.str8("summary origin")) else { throw .malformed("summary names an invalid city") }
                let seq = try r.u64("summary seq")
                guard seq <= maxSeq else { throw .malformed("summary says \(o) is at batch \(seq); no batch number is above \(maxSeq)") }
                guard v.updateValue(seq, forKey: o) == nil else { throw .malformed("summary names \(o) twice") }
            }
            guard r.isAtEnd else { throw .malformed("bytes after the summary") }
            return type == 7 ? .acked(share: share, vector: v) : .summary(share: share, vector: v, reply: type == 2)
        case 3:
            let share = try r.str8("batch share")
            return .batch(share: share, bytes: Array(r.rest()))
        case 4:
            guard let city = try? CitySlug(try r.str8("certificate city")) else { throw .malformed("certificate names an invalid city") }
            return .certificate(city: city, der: Array(r.rest()))
        case 5:
            return .document(json: Array(r.rest()))
        case 6:
            guard let city = try? CitySlug(try r.str8("checkpoint city")) else { throw .malformed("checkpoint names an invalid city") }
            let rest = r.rest()
            guard rest.count <= 4096, let note = String(validating: rest, as: UTF8.self) else { throw .malformed("a checkpoint note must be UTF-8 under 4 KiB") }
            return .checkpoint(city: city, note: note)
        case 8, 9:
            let what = type == 8 ? "announcement" : "request"
            let share = try r.str8("\(what) share")
            guard let origin = try? CitySlug(try r.str8("\(what) origin")) else { throw .malformed("a \(what) names an invalid city") }
            let from = try r.u64("\(what) seq")
            let through = type == 8 ? from : try r.u64("\(what) last seq")
            guard from >= 1, from <= through, through <= maxSeq else {
                throw .malformed("a \(what) names batches \(from) to \(through); batches are numbered 1 to \(maxSeq), first to last")
            }
            guard r.isAtEnd else { throw .malformed("bytes after the \(what)") }
            return type == 8 ? .announce(share: share, origin: origin, seq: from) : .want(share: share, origin: origin, seqs: from...through)
        default:
            throw .unknownType(type)
        }
    }
}
