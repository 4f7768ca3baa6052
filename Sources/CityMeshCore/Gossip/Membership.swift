/// Federation membership by gossip, in the SWIM family (Das, Gupta, Motivala 2002, with the
/// suspicion mechanism and incarnation numbers): each period a node probes one member with a
/// PING; without an ACK in time it asks `indirectProbes` others to probe it (PING-REQ); still
/// nothing by the end of the period and the member is suspected; a suspect that does not refute
/// (by gossiping a higher incarnation) within the suspicion timeout is declared dead. Changes
/// spread by piggybacking on the probes themselves, each sent about λ·log(n) times.
///
/// Pure: time comes in as nanoseconds, randomness from the seed, and every message to send is a
/// directive. Every member is still authenticated by the peer transport (part 2); this decides
/// only who is up.
public struct Membership: Sendable {
    public struct Config: Sendable {
        /// One probe per period.
        public var probeInterval: UInt64 = 1_000_000_000
        /// How long to wait for a direct ACK before asking others.
        public var ackTimeout: UInt64 = 300_000_000
        /// How many members are asked to probe indirectly. Under 10% message loss a probe whose
        /// direct PING or ACK is lost (19%) makes a false suspicion unless one of k indirect
        /// paths (4 messages each, 66% through) answers: 0.77% of probes with 3, 0.09% with 5.
        /// Each suspicion and its refutation are gossiped to every node, so at N = 1,000 that was
        /// 3.8 KB per node per round of idle membership traffic with 3, and is 0.7 KB with 5
        /// (docs/performance.md); a healthy federation never sends an indirect probe at all.
        public var indirectProbes = 5
        /// The suspicion timeout is this many probe periods times log2(n + 1).
        public var suspicionMultiplier: UInt64 = 4
        /// Each change is piggybacked this many times log2(n + 1).
        public var retransmitMultiplier = 3
        /// At most this many changes ride on one message (the wire allows 64; one is kept for
        /// the news a member gets about itself). Bursts — a join, a healed partition — bring
        /// hundreds of changes at once; at 8 per message 200 cities joining from one seed had not
        /// all met after 120 s, at 63 they have in 20 s (MembershipTests, 200 cities).
        public var maxPiggyback = 63
        /// Every this many probe periods one member held dead is pinged, with the news that it is
        /// held dead (Serf's reconnect). Two sides of a healed partition hold each other dead and
        /// never probe each other; this is how they find out, refute and rejoin. 0 turns it off.
        public var reconnectPeriods: UInt64 = 5
        /// Most members held: updates about further cities are ignored, so gossip naming
        /// invented cities cannot grow the table (or the probes) without bound.
        public var maxMembers = 10_000
        public init() {}
    }

    public enum Status: UInt8, Sendable, Codable, Comparable {
        case alive = 0, suspect = 1, dead = 2
        public static func < (l: Status, r: Status) -> Bool { l.rawValue < r.rawValue }
    }

    /// What one node says about one member.
    public struct Update: Sendable, Equatable, Hashable, Codable {
        public let city: CitySlug
        public let status: Status
        public let incarnation: UInt64
        public init(city: CitySlug, status: Status, incarnation: UInt64) {
            self.city = city
            self.status = status
            self.incarnation = incarnation
        }
    }

    public enum Message: Sendable, Equatable {
        case ping(seq: UInt32, updates: [Update])
        case ack(seq: UInt32, updates: [Update])
        /// Probe `target` for me and send me its ACK with `seq`.
        case pingReq(seq: UInt32, target: CitySlug, updates: [Update])

        public var updates: [Update] {
            switch self {
            case .ping(_, let u), .ack(_, let u), .pingReq(_, _, let u): u
            }
        }
    }

    public enum Directive: Sendable, Equatable {
        case send(to: CitySlug, Message)
    }

    public struct Member: Sendable, Equatable {
        public let city: CitySlug
        public internal(set) var status: Status
        public internal(set) var incarnation: UInt64
        /// When the member entered its status (nanoseconds).
        public internal(set) var since: UInt64
    }

    struct Probe {
        let target: CitySlug
        let seq: UInt32
        let sentAt: UInt64
        var indirect = false
        var acked = false
    }

    public let me: CitySlug
    public let config: Config
    public private(set) var incarnation: UInt64 = 0
    /// Most PING-REQs being relayed at once.
    static let maxRelays = 1024
    /// The largest incarnation a member may gossip (2^62): the decoder refuses anything above it.
    public static let maxIncarnation: UInt64 = 1 << 62
    public private(set) var members: [CitySlug: Member] = [:]
    var order: [CitySlug] = []
    var next = 0
    var probe: Probe?
    var periodStart: UInt64?
    var seq: UInt32 = 0
    /// Probe periods begun so far.
    var periods: UInt64 = 0
    /// PING-REQs being relayed: our seq → (who asked, their seq).
    var relays: [UInt32: (CitySlug, UInt32)] = [:]
    /// Changes still to piggyback, with how many more times.
    var gossip = GossipQueue()
    /// Changes queued so far (orders the queue).
    var queued: UInt64 = 0
    /// The members held suspect (what a tick looks at for timeouts).
    var suspects: Set<CitySlug> = []

    /// Sets a member's entry, keeping `suspects` in step.
    mutating func put(_ m: Member) {
        members[m.city] = m
        if m.status == .suspect {
            suspects.insert(m.city)
            firstSuspected = Swift.min(firstSuspected, m.since)
        } else {
            suspects.remove(m.city)
        }
        if m.status == .dead { dead.insert(m.city) } else { dead.remove(m.city) }
    }
    /// The members held dead (read by the shell every round: no pass over every member).
    public private(set) var dead: Set<CitySlug> = []
    /// No suspect was suspected before this (a lower bound): until its timeout, a tick need
    /// not look at the suspects at all.
    var firstSuspected = UInt64.max
    /// When set, the only cities updates may be about (besides this node): its seeds, the
    /// members it heard from directly (the transport authenticated them with the federation
    /// CA) and those the shell admits. Hearsay about any other city is ignored. Nil (the
    /// simulator's default) admits every city.
    public private(set) var admitted: Set<CitySlug>?
    /// When set, the only members this node probes, asks to probe, or pings while held dead:
    /// those it has (or is making) a connection to — the peer directory's seeds, partners and
    /// active view. The others are probed by their own neighbours and this node learns their
    /// status by gossip, so a federation of 1,000 cities needs no connection from every city to
    /// every other. Nil (the simulator's default) probes every member.
    public private(set) var reachable: Set<CitySlug>?
    var rng: SplitMix64

    public init(me: CitySlug, seeds: [CitySlug], config: Config = Config(), seed: UInt64) {
        self.me = me
        self.config = config
        // Each node's generator differs even with one seed for the whole federation (FNV-1a of the name).
        rng = SplitMix64(seed: seed ^ me.rawValue.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
        for s in seeds where s != me { members[s] = Member(city: s, status: .alive, incarnation: 0, since: 0) }
        enqueue(Update(city: me, status: .alive, incarnation: 0))
    }

    /// From now on, updates are taken only about admitted cities (see `admitted`).
    public mutating func admitOnlyKnown() {
        admitted = Set(members.keys).union([me])
    }

    /// Admits `city` (its certificate was verified by the shell).
    public mutating func admit(_ city: CitySlug) {
        admitted?.insert(city)
    }

    /// Sets the members this node probes (see `reachable`).
    public mutating func setReachable(_ cities: Set<CitySlug>?) {
        reachable = cities
    }

    func canProbe(_ city: CitySlug) -> Bool { reachable?.contains(city) ?? true }

    /// Members other than this node, by status.
    public func cities(_ status: Status) -> [CitySlug] {
        switch status {
        case .dead: dead.sorted()
        case .suspect: suspects.sorted()
        case .alive: members.values.filter { $0.status == status }.map(\.city).sorted()
        }
    }

    var retransmits: Int {
        var n = members.count + 1, log = 0
        while n > 0 { log += 1; n >>= 1 }
        return config.retransmitMultiplier * log
    }

    var suspicionTimeout: UInt64 {
        var n = UInt64(members.count + 1), log: UInt64 = 0
        while n > 0 { log += 1; n >>= 1 }
        return config.suspicionMultiplier * log * config.probeInterval
    }

    /// A change waiting to be piggybacked: how many more sends it gets, and when it was queued.
    struct Pending {
        var update: Update
        var left: Int
        var order: UInt64
    }

    mutating func enqueue(_ u: Update) {
        queued &+= 1
        gossip[u.city] = Pending(update: u, left: retransmits, order: queued)
    }

    /// Changes to piggyback on the next message: the least-sent first.
    mutating func piggyback() -> [Update] { gossip.take(config.maxPiggyback) }

    /// The `k` changes sent the fewest times so far (the most sends left), the oldest first among
    /// equals: the order a full sort gives, read off the queue's buckets (see `GossipQueue`)
    /// instead of sorting the queue, which after a partition heals holds a change for every city
    /// while this runs for every message.
    func leastSent(_ k: Int) -> [Pending] { gossip.first(k) }

    /// Lifeguard's buddy system: a probe of a member held suspect tells it so, so it refutes at
    /// once instead of waiting for the rumour, whose retransmissions may all have gone out
    /// while it could not be reached (during a partition, say).
    func aboutItself(_ city: CitySlug) -> [Update] {
        guard let m = members[city], m.status == .suspect else { return [] }
        return [Update(city: city, status: .suspect, incarnation: m.incarnation)]
    }

    mutating func nextSeq() -> UInt32 {
        seq &+= 1
        return seq
    }

    // MARK: Events

    /// Drives probes and timeouts; call it often (every 100 ms or so).
    public mutating func onTick(now: UInt64) -> [Directive] {
        var out: [Directive] = []
        // Suspects that did not refute in time are dead.
        let timeout = suspicionTimeout
        // Only the suspects are looked at (not every member, every tick), in name order so the
        // changes queue in the same order in every process.
        let (deadline, never) = firstSuspected.addingReportingOverflow(timeout)
        if !suspects.isEmpty, !never, now >= deadline {
            let due = suspects.filter { c in members[c].map { $0.status == .suspect && now >= $0.since + timeout } ?? false }.sorted()
            for city in due {
                guard let m = members[city] else { continue }
                put(Member(city: city, status: .dead, incarnation: m.incarnation, since: now))
                enqueue(Update(city: city, status: .dead, incarnation: m.incarnation))
            }
            var first = UInt64.max
            for c in suspects { if let m = members[c] { first = Swift.min(first, m.since) } }
            firstSuspected = first
        }
        if var p = probe {
            if !p.acked, !p.indirect, now >= p.sentAt + config.ackTimeout {
                p.indirect = true
                probe = p
                let helpers = pick(config.indirectProbes, excluding: [p.target])
                for h in helpers { out.append(.send(to: h, .pingReq(seq: p.seq, target: p.target, updates: piggyback()))) }
            }
        }
        guard now >= (periodStart ?? 0) + (periodStart == nil ? 0 : config.probeInterval) else { return out }
        // End of a period: an unanswered probe makes its target suspect.
        if let p = probe, !p.acked, let m = members[p.target], m.status == .alive {
            put(Member(city: p.target, status: .suspect, incarnation: m.incarnation, since: now))
            enqueue(Update(city: p.target, status: .suspect, incarnation: m.incarnation))
        }
        probe = nil
        periodStart = now
        periods += 1
        if config.reconnectPeriods > 0, periods % config.reconnectPeriods == 0 {
            var dead = cities(.dead).filter(canProbe)
            rng.shuffle(&dead)
            if let city = dead.first, let m = members[city] {
                // Not this period's probe: its ACK (if the member is back) carries the refutation.
                out.append(.send(to: city, .ping(seq: nextSeq(), updates: [Update(city: city, status: .dead, incarnation: m.incarnation)])))
            }
        }
        guard let target = nextTarget() else { return out }
        let s = nextSeq()
        probe = Probe(target: target, seq: s, sentAt: now)
        out.append(.send(to: target, .ping(seq: s, updates: aboutItself(target) + piggyback())))
        return out
    }

    /// Round-robin over a shuffled list of live members, reshuffled each pass (SWIM's bound on detection time).
    mutating func nextTarget() -> CitySlug? {
        if next >= order.count {
            order = members.values.filter { $0.status != .dead && canProbe($0.city) }.map(\.city).sorted()
            rng.shuffle(&order)
            next = 0
        }
        while next < order.count {
            let c = order[next]
            next += 1
            if members[c].map({ $0.status != .dead }) == true, canProbe(c) { return c }
        }
        return nil
    }

    mutating func pick(_ k: Int, excluding: Set<CitySlug>) -> [CitySlug] {
        guard k > 0 else { return [] }
        // Among many members, drawn one at a time from this pass's probe order (every member not
        // dead when the pass began), so a pick costs about `k` looks instead of a sort of every
        // member; if the draws find too few live ones, every member is looked at.
        var r = rng  // the draw reads the members table while it advances the generator
        let drawn = r.draw(k, from: order) { c in !excluding.contains(c) && members[c]?.status == .alive && canProbe(c) }
        rng = r
        if let drawn { return drawn }
        var candidates = members.values.filter { $0.status == .alive && !excluding.contains($0.city) && canProbe($0.city) }.map(\.city).sorted()
        rng.shuffle(&candidates)
        return Array(candidates.prefix(k))
    }

    public mutating func onMessage(from sender: CitySlug, _ message: Message, now: UInt64) -> [Directive] {
        // Hearing from a member at all: it is known (joins happen this way).
        admitted?.insert(sender)
        if sender != me, members[sender] == nil, members.count < config.maxMembers {
            put(Member(city: sender, status: .alive, incarnation: 0, since: now))
            enqueue(Update(city: sender, status: .alive, incarnation: 0))
        }
        for u in message.updates { apply(u, now: now) }
        // What an answer carries: the queue's next changes (taken only for a message that is
        // sent, since taking them counts a send).
        func news() -> [Update] {
            var news = piggyback()
            // A member we hold suspect or dead is talking to us (it restarted, or the partition
            // healed): tell it directly, so it refutes with a higher incarnation and rejoins.
            if let m = members[sender], m.status != .alive {
                news.insert(Update(city: sender, status: m.status, incarnation: m.incarnation), at: 0)
            }
            // The sender holds me suspect or dead. If that is an old rumour (I refuted it
            // already, and my refutation's retransmissions are spent), it would never learn
            // better: answer with my current incarnation.
            if message.updates.contains(where: { $0.city == me && $0.status != .alive }) {
                news.removeAll { $0.city == me }
                news.insert(Update(city: me, status: .alive, incarnation: incarnation), at: 0)
            }
            return news
        }
        switch message {
        case .ping(let s, _):
            return [.send(to: sender, .ack(seq: s, updates: news()))]
        case .pingReq(let s, let target, _):
            guard target != me else { return [.send(to: sender, .ack(seq: s, updates: news()))] }
            // Relays whose target never answered are forgotten oldest-first (sequence numbers
            // wrap, so "oldest" is the one furthest behind): the table stays bounded whatever
            // PING-REQs arrive.
            let mine = nextSeq()
            if relays.count >= Self.maxRelays, let oldest = relays.keys.max(by: { mine &- $0 < mine &- $1 }) { relays[oldest] = nil }
            relays[mine] = (sender, s)
            return [.send(to: target, .ping(seq: mine, updates: aboutItself(target) + piggyback()))]
        case .ack(let s, _):
            if var p = probe, p.seq == s {
                p.acked = true
                probe = p
                return []
            }
            if let (requester, theirs) = relays.removeValue(forKey: s) {
                return [.send(to: requester, .ack(seq: theirs, updates: piggyback()))]
            }
            return []
        }
    }

    /// SWIM's precedence: a higher incarnation wins; at the same incarnation suspect beats alive;
    /// dead beats both unless the member comes back with a higher incarnation.
    mutating func apply(_ u: Update, now: UInt64) {
        if u.city == me {
            // Refute: anything but "alive" about me, at or above my incarnation, is answered with a higher one.
            // The decoder refuses incarnations above `maxIncarnation`, so `+ 1` cannot overflow; the
            // guard keeps that true for updates made in-process too.
            if u.status != .alive, u.incarnation >= incarnation, u.incarnation < Self.maxIncarnation {
                incarnation = u.incarnation + 1
                enqueue(Update(city: me, status: .alive, incarnation: incarnation))
            }
            return
        }
        guard let m = members[u.city] else {
            guard admitted?.contains(u.city) ?? true, members.count < config.maxMembers else { return }
            put(Member(city: u.city, status: u.status, incarnation: u.incarnation, since: now))
            enqueue(u)
            return
        }
        let newer: Bool
        switch (u.status, m.status) {
        case (.dead, .dead): newer = false
        case (.dead, _): newer = u.incarnation >= m.incarnation
        case (_, .dead): newer = u.incarnation > m.incarnation
        case (.suspect, .alive): newer = u.incarnation >= m.incarnation
        default: newer = u.incarnation > m.incarnation
        }
        guard newer else {
            // The sender already knew what this node is spreading about that city: one send
            // fewer is owed (rumour mongering with feedback, Demers et al. 1987), so after a heal
            // a change everyone has stops riding on every message long before its count is spent.
            if u.status == m.status, u.incarnation == m.incarnation { gossip.heardAgain(u) }
            return
        }
        put(Member(city: u.city, status: u.status, incarnation: u.incarnation, since: now))
        enqueue(u)
    }
}

/// SWIM's queue of changes to piggyback, kept so that the `k` with the most sends left, oldest
/// first among equals, are found without sorting it: one bucket per count of sends left, each a
/// min-heap by queue order. A change sent (or heard again from a member that holds it) moves to
/// the bucket below; its old place stays behind as a stale entry, skipped when it comes up and
/// dropped when the stale entries outnumber the live ones. The changes live in an array of
/// slots, and the buckets name slots, so reading a bucket looks nothing up by name.
struct GossipQueue: Sendable, ExpressibleByDictionaryLiteral {
    typealias Pending = Membership.Pending
    private var slotOf: [CitySlug: Int] = [:]
    private var slots: [Pending?] = []
    private var free: [Int] = []
    /// A change's place in a bucket: live while its slot holds a change of that order (orders
    /// are never reused) with that many sends left.
    private struct Entry: Sendable { let order: UInt64, slot: Int }
    /// Index: sends left. Each a binary min-heap by `order`.
    private var buckets: [[Entry]] = []
    /// Entries in all buckets, live and stale.
    private var entries = 0

    init() {}
    init(dictionaryLiteral elements: (CitySlug, Pending)...) {
        for (c, p) in elements { self[c] = p }
    }

    var count: Int { slotOf.count }
    var isEmpty: Bool { slotOf.isEmpty }
    var values: [Pending] { slotOf.values.compactMap { slots[$0] } }

    subscript(city: CitySlug) -> Pending? {
        get { slotOf[city].flatMap { slots[$0] } }
        set {
            guard let p = newValue else {
                if let i = slotOf.removeValue(forKey: city) { release(i) }
                return
            }
            let i: Int
            if let at = slotOf[city] {
                i = at
            } else if let reused = free.popLast() {
                i = reused
                slotOf[city] = i
            } else {
                i = slots.count
                slots.append(nil)
                slotOf[city] = i
            }
            slots[i] = p
            guard p.left > 0 else { return }
            push(Entry(order: p.order, slot: i), left: p.left)
            if entries > 2 * count + 64 { rebuild() }
        }
    }

    private mutating func release(_ i: Int) {
        slots[i] = nil
        free.append(i)
    }

    private func live(_ e: Entry, left: Int) -> Pending? {
        guard let p = slots[e.slot], p.order == e.order, p.left == left else { return nil }
        return p
    }

    // MARK: Heaps

    private mutating func push(_ e: Entry, left: Int) {
        while buckets.count <= left { buckets.append([]) }
        Self.push(e, into: &buckets[left])
        entries += 1
    }

    private static func push(_ e: Entry, into h: inout [Entry]) {
        h.append(e)
        var i = h.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard h[parent].order > h[i].order else { break }
            h.swapAt(parent, i)
            i = parent
        }
    }

    private static func popMin(_ h: inout [Entry]) -> Entry? {
        guard let top = h.first else { return nil }
        let last = h.removeLast()
        guard !h.isEmpty else { return top }
        h[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < h.count, h[l].order < h[m].order { m = l }
            if r < h.count, h[r].order < h[m].order { m = r }
            guard m != i else { return top }
            h.swapAt(i, m)
            i = m
        }
    }

    // MARK: Reading

    /// The `k` changes with the most sends left, oldest first among equals.
    func first(_ k: Int) -> [Pending] {
        var out: [Pending] = []
        var left = buckets.count - 1
        while left > 0, out.count < k {
            var h = buckets[left]
            while out.count < k, let e = Self.popMin(&h) {
                if let p = live(e, left: left) { out.append(p) }
            }
            left -= 1
        }
        return out
    }

    /// What `first(k)` gives, each counted as sent once more (a change sent its last time leaves
    /// the queue).
    mutating func take(_ k: Int) -> [Membership.Update] {
        var out: [Membership.Update] = []
        var moved: [(left: Int, entry: Entry)] = []
        var left = buckets.count - 1
        while left > 0, out.count < k {
            while out.count < k, let e = Self.popMin(&buckets[left]) {
                entries -= 1
                guard let p = live(e, left: left) else { continue }
                out.append(p.update)
                if left > 1 {
                    slots[e.slot]?.left = left - 1
                    moved.append((left - 1, e))
                } else {
                    slotOf[p.update.city] = nil
                    release(e.slot)
                }
            }
            left -= 1
        }
        // Put in once every bucket was read, so none is taken twice.
        for (l, e) in moved { push(e, left: l) }
        if entries > 2 * count + 64 { rebuild() }
        while let last = buckets.last, last.isEmpty { buckets.removeLast() }
        return out
    }

    /// `update` came in from another member, which holds it already: if it is the change queued
    /// for its city, that change is owed one send fewer (and leaves the queue at none).
    mutating func heardAgain(_ update: Membership.Update) {
        guard let i = slotOf[update.city], let p = slots[i], p.update == update else { return }
        guard p.left > 1 else {
            slotOf[update.city] = nil
            release(i)
            return
        }
        slots[i]?.left = p.left - 1
        push(Entry(order: p.order, slot: i), left: p.left - 1)
        if entries > 2 * count + 64 { rebuild() }
    }

    /// The buckets made again from the live changes alone.
    private mutating func rebuild() {
        var fresh: [[Entry]] = []
        // In queue order, each bucket's array is already a valid min-heap.
        let live = slots.indices.compactMap { i in slots[i].map { (slot: i, pending: $0) } }.sorted { $0.pending.order < $1.pending.order }
        var n = 0
        for (i, p) in live where p.left > 0 {
            while fresh.count <= p.left { fresh.append([]) }
            fresh[p.left].append(Entry(order: p.order, slot: i))
            n += 1
        }
        buckets = fresh
        entries = n
    }
}

/// A small, fast, seedable generator (SplitMix64), so runs replay exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func shuffle<T>(_ a: inout [T]) { a.shuffle(using: &self) }

    /// `k` distinct elements of a large `candidates` (more than 4·k) for which `eligible` holds,
    /// drawn one at a time at random (about `k` looks instead of a pass over all of them); nil
    /// when the candidates are few or 4·k draws found too few, and the caller looks at them all.
    mutating func draw<T: Equatable>(_ k: Int, from candidates: [T], where eligible: (T) -> Bool) -> [T]? {
        guard k > 0, candidates.count > 4 * k else { return nil }
        var chosen: [T] = []
        var draws = 0
        while chosen.count < k, draws < 4 * k {
            draws += 1
            let c = candidates[Int(next() % UInt64(candidates.count))]
            if !chosen.contains(c), eligible(c) { chosen.append(c) }
        }
        return chosen.count == k ? chosen : nil
    }
}

extension Membership.Message {
    /// The DATA channel membership gossip travels on.
    public static let channel: UInt16 = 1
    /// Most updates one message may carry.
    public static let maxUpdates = 64

    /// `type: u8` (1 PING, 2 ACK, 3 PING-REQ), `seq: u32`, PING-REQ's `target: str8`, then
    /// `count: u8` updates of `city: str8, status: u8 (0 alive, 1 suspect, 2 dead), incarnation: u64`.
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .ping(let s, _): w.u8(1); w.u32(s)
        case .ack(let s, _): w.u8(2); w.u32(s)
        case .pingReq(let s, let target, _): w.u8(3); w.u32(s); w.str8(target.rawValue)
        }
        let updates = self.updates.prefix(Self.maxUpdates)
        w.u8(UInt8(updates.count))
        for u in updates {
            w.str8(u.city.rawValue)
            w.u8(u.status.rawValue)
            w.u64(u.incarnation)
        }
        return w.bytes
    }

    /// `encoded().count`, without making the bytes (the simulator counts every message's size).
    public var encodedCount: Int {
        func str8(_ s: String) -> Int { 1 + Swift.min(s.utf8.count, 255) }
        var n = 5  // type, seq
        if case .pingReq(_, let target, _) = self { n += str8(target.rawValue) }
        n += 1
        for u in updates.prefix(Self.maxUpdates) { n += str8(u.city.rawValue) + 1 + 8 }
        return n
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> Membership.Message {
        var r = WireReader(bytes)
        let type = try r.u8("membership message type")
        let seq = try r.u32("seq")
        func city(_ what: String) throws(WireError) -> CitySlug {
            let text = try r.str8(what)
            guard let c = try? CitySlug(text) else { throw .malformed("\(what) '\(text)' is not a city slug") }
            return c
        }
        var target: CitySlug?
        switch type {
        case 1, 2: break
        case 3: target = try city("PING-REQ target")
        default: throw .malformed("unknown membership message type \(type)")
        }
        let n = Int(try r.u8("update count"))
        guard n <= maxUpdates else { throw .malformed("\(n) updates in one message; at most \(maxUpdates)") }
        var updates: [Membership.Update] = []
        for _ in 0..<n {
            let c = try city("update city")
            let s = try r.u8("status")
            guard let status = Membership.Status(rawValue: s) else { throw .malformed("unknown member status \(s)") }
            let incarnation = try r.u64("incarnation")
            // A city raises its own incarnation by one per refutation, so no honest value comes near
            // this bound; above it, a refutation (`+ 1`) could not answer and would overflow.
            guard incarnation <= Membership.maxIncarnation else {
                throw .malformed("incarnation \(incarnation) of \(c) is above the largest a city can reach (\(Membership.maxIncarnation))")
            }
            updates.append(Membership.Update(city: c, status: status, incarnation: incarnation))
        }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after a membership message") }
        switch type {
        case 1: return .ping(seq: seq, updates: updates)
        case 2: return .ack(seq: seq, updates: updates)
        default: return .pingReq(seq: seq, target: target!, updates: updates)  // type 3 set target above
        }
    }
}
