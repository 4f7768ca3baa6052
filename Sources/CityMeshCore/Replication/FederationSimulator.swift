import Foundation

/// A whole federation sharing one dataset, simulated deterministically (DESIGN.md §1, §8).
///
/// Every node runs the real ``Membership`` and ``AntiEntropy`` state machines; the simulator is
/// their shell, with a fake clock and a fake network that loses messages, splits the federation
/// in two for a while and crashes nodes. Node 0 owns the dataset and its share; every other node
/// is a member. The share's view holds fields 1–3; field 4 is private to the owner; members may
/// write field 3. Writes are cut into real ``ChangeBatch``es (real encoding and hash chain, not
/// signed: signing changes nothing the simulator checks, and a 64-byte placeholder keeps the byte
/// counts those of an Ed25519-signed batch).
///
/// Time: one round is one second, one anti-entropy tick and one membership probe period.
/// Membership runs on 100 ms steps, its messages taking one step; a replication message
/// (summary, batch, receipt) takes `delay` rounds, so every hop of a change costs at least one
/// round. All randomness comes from the seed: the same config gives the same result.
public enum FederationSimulator {
    /// What to simulate. Durations are in rounds (seconds).
    public struct Config: Sendable, Equatable, Codable {
        /// Nodes in the federation: `city-0` owns the dataset, `city-1`… are members of its share.
        public var nodes = 20
        /// Every random choice (workload, loss, partition sides, crash victims, protocol RNGs) derives from it.
        public var seed: UInt64 = 1
        /// Probability that any one message is lost.
        public var loss = 0.0
        /// Rounds a replication message takes to arrive.
        public var delay = 1
        /// Rounds the federation is split in two (0: never), from round `partitionAt` on.
        public var partition = 0
        public var partitionAt = 10
        /// Members that crash at round `crashAt` and restart `downFor` rounds later.
        public var crashes = 0
        public var crashAt = 20
        public var downFor = 30
        /// Writes, at random rounds in 1…`writeRounds`, to `keys` records.
        public var writes = 200
        public var writeRounds = 60
        public var keys = 50
        /// Members that write besides the owner (`city-1`…`city-<writers>`), each only field 3.
        public var writers = 5
        /// The part of the writes the owner makes, and the part of those that are deletes.
        public var ownerShare = 0.5
        public var deleteShare = 0.05
        /// Give up after this many rounds.
        public var maxRounds = 2000
        /// Rounds measured after everything converged: the idle cost.
        public var idleRounds = 10
        /// The membership invariant's bound: once the last disruption is over (from the start, in
        /// a run without one), no live node may hold another live node dead for longer than this
        /// many rounds — neither a death left by the disruption nor a false one under loss later.
        /// The run goes on, up to this long after the last event, until no live pair is held dead.
        public var healRounds = 120
        /// The anti-entropy settings every node runs with.
        public var fanout = AntiEntropy.Config().fanout
        public var window = AntiEntropy.Config().window
        /// A node's transport redials each peer its membership holds dead every this many rounds
        /// (the capped backoff of docs/protocol.md §6.1); 0: never.
        public var redialInterval = 30
        /// The share has a row filter (pm25 ≥ 25): rows move in and out of it as the owner writes,
        /// and the owner retracts those that leave it (`ShareView`); members write only rows inside
        /// it (`WriteRights`).
        public var rowFilter = false
        /// At this round (0: never) the owner narrows the share: the view loses `note` (field 3,
        /// and with it the members' write rights) and, with `rowFilter`, the filter becomes
        /// pm25 ≥ 40. Every node takes the new terms then (one that is down, when it restarts):
        /// members drop the field from their replicas and compact it out of their stored batches,
        /// the owner retracts the rows the filter now leaves out and sends the rest again whole.
        public var narrowAt = 0
        /// At round `revokeAt` (0: never) the agreements of the last `revoked` members are revoked
        /// with `on_revoke: purge`: they leave the share and purge their replicas.
        public var revokeAt = 0
        public var revoked = 0
        /// Partial views (issue 20). 0: every node is connected to every other, a full mesh.
        /// Otherwise each node runs the node's `PeerDirectory` with an active view of this many
        /// cities, learns addresses by `AddressGossip` from one seed (a random node that joined
        /// before it), and dials its seed, the cities it shares with and its active view; SWIM
        /// probes only the cities it is connected to (`PeerDirectory.probed`), and every message needs a
        /// connection between its two nodes.
        public var activeView = 0
        /// Members of the owner's share, `city-1`…`city-<members>` (0: every other node). The
        /// other nodes are members of the federation only.
        public var members = 0
        /// Further shares, each owned by a random city with `shareSize` random members: agreements
        /// that make their parties partners (dialed whatever the active view), no records moved.
        public var extraShares = 0
        public var shareSize = 4
        /// With partial views: crashed nodes restart at a new address (they moved) and sign a new
        /// address record; the others must find them again.
        public var moveOnRestart = true
        /// Deliberate defects, to show that the invariants can fail.
        public var faults: [Fault] = []

        public init() {}

        /// Throws `invalid_argument` naming the first setting out of range and what to use instead.
        public func validate() throws(CityMeshError) {
            func check(_ ok: Bool, _ message: String) throws(CityMeshError) {
                if !ok { throw CityMeshError(.invalidArgument, message) }
            }
            try check((2...10_000).contains(nodes), "nodes must be from 2 (an owner and a member) to 10000 (time and memory grow faster than the nodes: about 6 minutes and 12 GB at 5000)")
            try check(loss.isFinite && loss >= 0 && loss < 1, "loss must be a probability from 0 up to (not including) 1, e.g. 0.1 for 10%")
            try check((1...10).contains(delay), "delay must be from 1 to 10 rounds")
            try check(partition >= 0 && partitionAt >= 1, "the partition must start at round 1 or later and last 0 rounds or more")
            try check((0...nodes - 1).contains(crashes), "crashes must be from 0 to \(nodes - 1) (the owner does not crash)")
            try check(crashAt >= 1 && downFor >= 1, "crashed nodes must go down at round 1 or later and stay down at least 1 round")
            try check(writes >= 0 && writeRounds >= 1 && keys >= 1, "writes must be 0 or more, over at least 1 round, to at least 1 key")
            try check(writes <= 10_000_000 && keys <= 10_000_000, "at most 10,000,000 writes and keys: the simulator holds them all in memory")
            try check((0...nodes - 1).contains(writers), "writers must be from 0 to \(nodes - 1) members")
            try check((0...1).contains(ownerShare) && (0...1).contains(deleteShare), "the owner's share of the writes, and of deletes among them, must be from 0 to 1")
            try check(writers > 0 || ownerShare == 1 || writes == 0, "with no member writers every write is the owner's: set the owner's share of the writes to 1")
            try check(maxRounds >= 1 && idleRounds >= 0, "the round limit must be at least 1, and the idle time 0 rounds or more")
            try check(maxRounds <= 1_000_000, "the round limit is at most 1,000,000 rounds")
            try check(healRounds >= 0 && healRounds <= 1_000_000, "the membership heal bound must be 0 to 1,000,000 rounds")
            try check(fanout >= 1 && window >= 1, "fanout and window must be at least 1")
            try check(fanout <= 10_000 && window <= 1_000_000, "fanout is at most 10,000 and window at most 1,000,000 batches")
            try check(redialInterval >= 0, "the redial interval must be 0 (never) or more rounds")
            try check(narrowAt >= 0 && revokeAt >= 0, "the rounds the terms narrow and agreements are revoked must be 0 (never) or more")
            try check((0...nodes - 2).contains(revoked), "revoked must be from 0 to \(nodes - 2) members (one member stays)")
            try check(revoked == 0 || revokeAt > 0, "revoked members need the round their agreements are revoked (revokeAt)")
            try check((0...1_000).contains(activeView), "the active view must be from 0 (a full mesh) to 1000 cities")
            try check(members == 0 || (1...nodes - 1).contains(members), "members must be 0 (every other node) or from 1 to \(nodes - 1)")
            try check(members == 0 || (writers <= members && revoked < members), "writers and revoked members must be members of the owner's share (at most \(members))")
            try check((0...100_000).contains(extraShares), "extra shares must be from 0 to 100000")
            try check(extraShares == 0 || (1...nodes - 1).contains(shareSize), "each extra share has from 1 to \(nodes - 1) members")
        }
    }

    /// A deliberate defect in every node, so that the tests can show each invariant failing.
    public enum Fault: String, Sendable, Codable, CaseIterable {
        /// The owner sends every field, ignoring the share's view.
        case leakyOwner = "leaky-owner"
        /// Receivers merge whatever arrives without checking that the share grants the origin those fields.
        case lenientReceivers = "lenient-receivers"
        /// Receivers merge a batch that arrives ahead of the next one expected.
        case takeGaps = "take-gaps"
        /// Nodes never send summaries: epidemic push only, no anti-entropy pull.
        case pushOnly = "push-only"
        /// A crash loses the node's ledger of receipts, as if it were not durable.
        case volatileLedger = "volatile-ledger"
        /// The owner never retracts a row that leaves the row filter (with `rowFilter`).
        case noRetraction = "no-retraction"
        /// Nodes never compact deleted records out of the batches they keep.
        case noCompaction = "no-compaction"
        /// Senders do not ledger the batches they send (`exchange.sent`).
        case unledgeredSends = "unledgered-sends"
        /// Receivers send each receipt once (and again only after a restart), not again when the
        /// sender reconnects or has not answered.
        case receiptsOnce = "receipts-once"
        /// Members keep the fields a narrowed view lost, in their replicas and stored batches.
        case noNarrowing = "no-narrowing"
        /// Members whose agreement was revoked with `on_revoke: purge` keep their replicas.
        case noPurge = "no-purge"
        /// Nodes never ping a member they hold dead (no Serf reconnect): after a partition the two
        /// sides may hold each other dead for good.
        case noReconnect = "no-reconnect"
        /// With partial views: nodes pass on no address record they learn (each sends only its
        /// own): cities that did not meet never learn where the other is.
        case noAddressRelay = "no-address-relay"
        /// With partial views: the cities a node shares with are not dialed beyond the active
        /// view (the directory is never told its partners).
        case noPartnerDial = "no-partner-dial"
    }

    /// One invariant, checked at the end of a run.
    public struct Check: Sendable, Equatable, Codable {
        public let name: String
        public let passed: Bool
        public let detail: String
    }

    /// A distribution of round counts (nearest-rank percentiles).
    public struct Rounds: Sendable, Equatable, Codable {
        /// How many samples.
        public var count = 0
        public var p50 = 0
        public var p99 = 0
        public var p9999 = 0
        public var max = 0

        /// From a histogram: `weights[r]` samples took `r` rounds.
        init(histogram weights: [Int]) {
            count = weights.reduce(0, +)
            guard count > 0 else { return }
            func rank(_ p: Double) -> Int {
                let target = Swift.max(1, Int((p * Double(count)).rounded(.up)))
                var seen = 0
                for (r, w) in weights.enumerated() {
                    seen += w
                    if seen >= target { return r }
                }
                return weights.count - 1
            }
            p50 = rank(0.5)
            p99 = rank(0.99)
            p9999 = rank(0.9999)
            max = weights.lastIndex { $0 > 0 } ?? 0
        }
    }

    /// Bytes sent, as they cross the wire: message payloads (their real encodings) plus the 7-byte
    /// DATA frame header each travels in (docs/protocol.md §3, §4.4); TLS records not included.
    public struct Bytes: Sendable, Equatable, Codable {
        /// Rounds 1 to the round the last batch reached the last node.
        public var activeRounds = 0
        /// Per node per round during those rounds: everything, then replication (summaries,
        /// batches, receipts) and membership separately.
        public var activePerNodePerRound = 0.0
        public var activeReplicationPerNodePerRound = 0.0
        public var activeMembershipPerNodePerRound = 0.0
        /// Per node per round once quiescent (`idleRounds`): summaries only, and membership.
        public var idleRounds = 0
        public var idlePerNodePerRound = 0.0
        public var idleReplicationPerNodePerRound = 0.0
        public var idleMembershipPerNodePerRound = 0.0
        /// An idle exchange of one share: one summary that nobody needs to answer.
        public var idlePerShareExchange = 0.0
        /// Totals over the whole run.
        public var total = ByKind()
    }

    /// A figure for each kind of message.
    public struct ByKind: Sendable, Equatable, Codable {
        public var membership = 0
        public var summaries = 0
        public var batches = 0
        /// Receipts and countersignatures (retries included).
        public var receipts = 0
    }

    /// Messages sent over the whole run, and what became of some of them.
    public struct Messages: Sendable, Equatable, Codable {
        public var sent = ByKind()
        /// Lost by the network (`loss`).
        public var lost = 0
        /// With partial views, where every message travels on a connection: packets lost and sent
        /// again (each delays its message by a retransmission timeout; none is dropped).
        public var retransmitted = 0
        /// Not delivered: the receiver was down or on the other side of the partition (or, with
        /// partial views, the connection closed while the message was on its way).
        public var unreachable = 0
        /// With partial views: not sent, the two nodes had no connection.
        public var unconnected = 0
        /// Batches that arrived already held (a relay raced another), or ahead of the next expected.
        public var duplicateBatches = 0
        public var gapBatches = 0
        /// ANNOUNCE and WANT messages (counted with the summaries in `sent`).
        public var announcements = 0
        public var wants = 0
        /// Batches of a co-member that reached a member before the owner's first: not taken yet.
        public var waitingBatches = 0
        /// Batches with cells the share does not grant their origin (those cells are dropped, the
        /// rest taken: `WriteRights`), and how many cells.
        public var refusedBatches = 0
        public var refusedCells = 0
    }

    /// The bilateral receipts of the exchanges.
    public struct Receipts: Sendable, Equatable, Codable {
        /// Exchanges: a (sender, receiver, round) in which the receiver took batches.
        public var exchanges = 0
        /// Held and countersigned on both sides.
        public var matched = 0
        /// Of those, how many a crash of either party interrupted (completed after its restart).
        public var interrupted = 0
        /// Still open at the end because a party is down.
        public var open = 0
        /// On one side only, or never countersigned: what an audit would flag.
        public var mismatched = 0
        /// Left open because the agreement of one party ended (revoked): one-sided by design.
        public var ended = 0
    }

    /// With partial views (`activeView` > 0): what the nodes' transports did.
    public struct Connections: Sendable, Equatable, Codable {
        /// The most connections any node held at once, over the whole run.
        public var peak = 0
        /// Connections per live node at the end: the most, and the mean.
        public var maxAtEnd = 0
        public var meanAtEnd = 0.0
        /// The most cities any one node shares with (dialed whatever the active view).
        public var maxPartners = 0
        /// Unordered pairs of cities that share (owner and member, or co-members).
        public var partnerPairs = 0
        /// Pairs of live cities that share without a connection at the end.
        public var unlinkedPartnerPairsAtEnd = 0
        /// Rounds after the last disruption (after the start, without one) until every live pair
        /// that shares held a connection for good.
        public var partnersReachedAfter = 0
        /// Address gossip (summaries and signed records with their certificates), counted with
        /// the membership bytes too.
        public var addressBytes = 0
    }

    public struct Result: Sendable, Equatable, Codable {
        public var config: Config
        /// Rounds simulated, the idle ones included.
        public var rounds = 0
        public var writes = 0
        /// Writes not made because the writer was down.
        public var skippedWrites = 0
        /// Members' writes their own node refused (`WriteRights.localWrite`: a record it does not
        /// hold, which members cannot create).
        public var refusedWrites = 0
        public var batches = 0
        /// Per write: rounds from the write until every other node held it.
        public var dissemination = Rounds(histogram: [])
        /// Per write and node: rounds from the write until that node held it.
        public var delivery = Rounds(histogram: [])
        /// Writes that never reached every node.
        public var undelivered = 0
        /// The round the last batch reached the last node (nil: never).
        public var convergedRound: Int?
        /// The round the partition healed or the last crashed node restarted (nil: neither happened).
        public var disruptionEndRound: Int?
        /// Rounds from then until every batch written before it had reached every node.
        public var catchUpRounds: Int?
        public var bytes = Bytes()
        public var messages = Messages()
        public var receipts = Receipts()
        /// Ordered pairs of live nodes where the first holds the second dead at the end.
        public var membershipDeadPairs = 0
        /// The longest any live node held a live node dead, counted from the end of the last
        /// disruption (from the start in a run without one), pairs still dead at the end included.
        public var membershipLongestDead = 0
        /// With partial views: connections per node and the partners' reach.
        public var connections: Connections?
        public var checks: [Check] = []

        public var passed: Bool { checks.allSatisfy(\.passed) }
    }

    /// Runs the simulation described by `config`.
    public static func run(_ config: Config) throws(CityMeshError) -> Result {
        try config.validate()
        var world = SimulatedFederation(config)
        return world.run()
    }
}

// MARK: - The simulated world

/// The simulator's state: the nodes, the batches written, the network and the measurements.
struct SimulatedFederation {
    typealias Config = FederationSimulator.Config

    static let stepsPerRound = 10
    static let stepNanos: UInt64 = 100_000_000
    /// A DATA frame's header: length (u32), type (u8), channel (u16).
    static let frameHeader = 7
    /// Round 0 is 2026-01-01T00:00:00Z.
    static let epochMillis: UInt64 = 1_767_225_600_000
    static let owner = 0
    static let fields = [
        Schema.Field(id: 1, name: "station", type: .string, nullable: false),
        Schema.Field(id: 2, name: "pm25", type: .double, nullable: true),
        Schema.Field(id: 3, name: "note", type: .string, nullable: true),
        Schema.Field(id: 4, name: "inspector", type: .string, nullable: true),
    ]
    /// The share's view: what members may see.
    static let view: Set<Int> = [1, 2, 3]
    /// The one field members may write.
    static let memberField = 3
    static let share = "city-0/air"
    static let dataset = "city-0/air-quality"
    /// An Ed25519 signature's size: the batches and documents are not signed, but weigh as if they were.
    static let signature = [UInt8](repeating: 0, count: 64)
    static let signatureBase64 = String(repeating: "A", count: 86) + "=="

    /// A node. What it keeps in memory is lost in a crash; its store and ledger are durable.
    struct Node {
        var up = true
        var crashes = 0
        // In memory.
        var membership: Membership
        var antiEntropy: AntiEntropy
        /// Peers last withheld from anti-entropy as not connected (nil: tell it afresh).
        var excluded: [Int]?
        /// Peers held dead whose connection the transport re-established.
        var sessions: Set<Int> = []
        /// When the node does what (`SyncSchedule`); in memory, fresh after a restart.
        var schedule = SyncSchedule()
        /// The node's receipts machine (`ReceiptFlow`, the production one): when each open
        /// receipt was last sent. Rebuilt from the store (`open`) at a restart.
        var receiptFlow: ReceiptFlow
        // The store.
        var records: [String: RecordState] = [:]
        /// Per origin: batches 1…held[o] taken, in order.
        var held: [UInt64]
        var clock = HybridClock()
        var seen: [CitySlug: HLC] = [:]
        /// The owner's memory of the keys members hold (with a row filter).
        var visible: Set<String> = []
        // The ledger.
        var ledgerSize: UInt64 = 0
        /// Batches taken and not yet receipted (durable, as the store's `share_batches` rows).
        var pending: [ReceiptFlow.Taken] = []
        /// Receipts issued as the receiver and not yet countersigned, oldest first.
        var open: [String] = []
        /// Receipts issued as the receiver and countersigned.
        var receipts: Set<String> = []
        /// Receipts countersigned as the sender.
        var countersigned: Set<String> = []
        /// Deleted keys (the deletion's clock) whose stored records may need compacting, and
        /// whether a compaction pass is due for them (the store's `erasures`).
        var erasures: [String: (hlc: HLC, pending: Bool)] = [:]
        /// Deleted keys whose tombstone this node collected (every party held the deletion):
        /// their deletions' own records go from the stored batches too.
        /// (The round it was collected.)
        var collected: [String: Int] = [:]
        /// Per stored batch (`batchID`): the records compacted out of this node's copy.
        var compacted: [UInt64: Set<Int>] = [:]
        /// Keys that left the share's view here (retractions) and the newest clock their state
        /// had, and whether a pass is due for them (the store's `share_erasures`).
        var shareErasures: [String: (hlc: HLC, pending: Bool)] = [:]
        /// The view narrowed and the stored batches have not been gone over since.
        var narrowPending = false
        /// The version of the terms this node applied (`SimulatedFederation.termsVersion`).
        var termsApplied = 0
        var narrowApplied = false
        /// Its agreement was revoked with on_revoke: purge and the replica purged.
        var purged = false
        /// At the owner: members' cells taken since its last batch (found again from the store
        /// after a crash, as the node's cut finds changed records by their sequence numbers).
        var relay: [String: RecordState] = [:]
        /// The ledger's `exchange.sent` entries (receiver, origin, seq: `exchangeID`), written
        /// before the batch goes out, and `exchange.received` entries (sender, origin, seq),
        /// written with the batch taken.
        var sentEntries: Set<UInt64> = []
        var receivedEntries: [UInt64] = []
        // With partial views (`activeView` > 0), the node's transport.
        /// Who it dials (the node's `PeerDirectory`); fresh after a restart.
        var directory: PeerDirectory?
        /// The signed address records it holds (`AddressGossip`; the node keeps them in its store).
        var addresses: AddressGossip?
        /// Nodes it has an established connection with.
        var links: Set<Int> = []
        /// Each open connection's other end (its node and its id there).
        var ends: [PeerDirectory.ConnectionID: (node: Int, id: PeerDirectory.ConnectionID)] = [:]
    }

    /// A batch written, as every node that holds it holds it.
    struct Batch {
        let body: ChangeBatch
        let hash: [UInt8]
        /// The batch message's size on the wire.
        let wireBytes: Int
        let round: Int
        let writes: Int
        /// Nodes (the origin excepted) that have not taken it.
        var missing: Int
        var completed: Int?
    }

    /// One exchange's receipt and countersignature, as documents.
    struct Exchange {
        let sender: Int
        let receiver: Int
        let taken: [(origin: Int, seq: UInt64)]
        let receipt: ExchangeReceipt
        let receiptBytes: Int
        var countersignBytes = 0
        /// Crashes of both parties when it began: a later count means a crash interrupted it.
        let crashMark: Int
        var interrupted = false
    }

    enum Payload {
        case membership(Membership.Message)
        case summary(VersionVector, reply: Bool)
        case acked(VersionVector)
        case announce(origin: Int, seq: UInt64)
        case want(origin: Int, seqs: ClosedRange<UInt64>)
        case batch(origin: Int, seq: UInt64)
        case receipt(String)
        case countersign(String)
        case address(AddressGossip.Message)
    }

    struct Envelope {
        let from: Int
        let to: Int
        let payload: Payload
    }

    enum Kind: Int, CaseIterable { case membership, summary, batch, receipt }

    struct Write {
        let round: Int
        let writer: Int
        let key: Int
        let delete: Bool
        let value: UInt64
    }

    let config: Config
    let n: Int
    let cities: [CitySlug]
    let index: [CitySlug: Int]
    let antiEntropyConfig: AntiEntropy.Config
    var nodes: [Node] = []
    var chains: [[Batch]]
    /// Where each key occurs in the batches: origin, seq, position (what a compaction pass looks at).
    var keyIndex: [String: [(origin: Int, seq: UInt64, index: Int)]] = [:]
    var exchanges: [String: Exchange] = [:]
    var exchangeOrder: [String] = []
    var writes: [Write] = []
    var nextWrite = 0
    var side: [Int]
    var victims: [Int] = []
    var rng: SplitMix64
    /// Messages in flight, by the step they arrive at.
    var inFlight: [Int: [Envelope]] = [:]
    var round = 0
    var step = 0

    // Measurements.
    var result: FederationSimulator.Result
    /// Per round: bytes and messages sent, by kind.
    var roundBytes: [[Int]] = [[0, 0, 0, 0]]
    var roundMessages: [[Int]] = [[0, 0, 0, 0]]
    var deliveryHistogram: [Int] = []
    var disseminationHistogram: [Int] = []
    var incomplete = 0
    /// Ordered pairs of live nodes where the first holds the second dead, as of this round; the
    /// last round there were any.
    var deadPairs = 0
    /// Since when each ordered pair of live nodes (i << 32 | j) has been held dead, tracked from
    /// the end of the last disruption; the longest such stretch that ended.
    var deadSince: [UInt64: Int] = [:]
    var longestDead = 0
    var openReceipts = 0
    var viewViolations = 0
    var firstViewViolation: String?
    var orderViolations = 0
    var firstOrderViolation: String?
    var firstRefusal: String?
    /// The share as each node takes part in it, worked out by the production rule
    /// (`ShareDirectory.plan`) from the owner's policy, the members' agreements and the roster.
    var syncShares: [SyncShare?]
    /// The share's write rights, as every node applies them (the production rule).
    var rights: WriteRights
    /// What the owner cuts for its members (the production rule, from the owner's `SyncShare`).
    var ownerView: ShareView
    /// The terms changed this many times (`narrowAt`, `revokeAt`); each node applied `termsApplied`.
    var termsVersion = 0
    var narrowed = false
    var revokedMembers: Set<Int> = []
    /// Receipts left open because a party's agreement ended.
    var endedReceipts: Set<String> = []
    // Partial views (`activeView` > 0).
    /// Each node's seed: a node that joined before it (city-0 has none).
    var seedOf: [Int?] = []
    /// How often each node moved (its port is 7001 + moves).
    var moves: [Int] = []
    var addressIndex: [String: Int] = [:]
    /// The cities each node shares with (owner and co-members, of every share it is a party to).
    var partners: [Set<Int>] = []
    var peakConnections = 0
    /// The last round at which some live pair of partners had no connection.
    var lastUnlinkedRound: Int?
    var unlinkedPartners = 0
    var firstUnlinked: String?
    /// The extra shares' parties, owner first.
    var extraShares: [[Int]] = []
    var addressBytes = 0
    var disputes = 0
    var firstDispute: String?

    init(_ config: Config) {
        self.config = config
        n = config.nodes
        // Always valid slugs: a letter first, then letters, digits and one inner hyphen.
        cities = (0..<config.nodes).map { try! CitySlug("city-\($0)") }
        index = Dictionary(uniqueKeysWithValues: cities.enumerated().map { ($1, $0) })
        syncShares = Self.shares(cities, members: config.members, rowFilter: config.rowFilter, narrowed: false, revoked: []).shares
        // The owner's share always exists: it has active members.
        rights = syncShares[Self.owner]!.rights(schema: Self.schema)
        ownerView = syncShares[Self.owner]!.view(schema: Self.schema)
        antiEntropyConfig = AntiEntropy.Config(fanout: config.fanout, window: config.window)
        chains = Array(repeating: [], count: config.nodes)
        rng = SplitMix64(seed: Self.mix(config.seed, 0x5157))
        result = FederationSimulator.Result(config: config)
        side = Array(repeating: 0, count: config.nodes)
        if config.activeView > 0 { planViews() }
        for i in 0..<n {
            nodes.append(
                Node(membership: freshMembership(i, restart: 0), antiEntropy: freshAntiEntropy(i, restart: 0, held: [:]),
                     receiptFlow: ReceiptFlow(retry: receiptRetry), held: Array(repeating: 0, count: n)))
        }
        // Half the members, chosen at random, end up on the far side of the partition.
        var members = Array(1..<n)
        members.shuffle(using: &rng)
        for i in members.prefix(n / 2) { side[i] = 1 }
        members.shuffle(using: &rng)
        victims = Array(members.prefix(config.crashes)).sorted()
        generateWorkload()
        if config.activeView > 0 { for i in 0..<n { startTransport(i) } }
    }

    /// A well-spread 64-bit mix of a seed and a tag (one SplitMix64 step).
    static func mix(_ seed: UInt64, _ tag: UInt64) -> UInt64 {
        var g = SplitMix64(seed: seed ^ (tag &* 0x9E37_79B9_7F4A_7C15))
        return g.next()
    }

    func freshMembership(_ i: Int, restart: Int) -> Membership {
        // Every node knows the share's roster (durable), so it starts knowing every party.
        var c = Membership.Config()
        if config.faults.contains(.noReconnect) { c.reconnectPeriods = 0 }
        // With partial views a node knows only its seed, and admits the cities whose address
        // records it checked or that connected to it (as the node does).
        let seeds = config.activeView > 0 ? (seedOf[i].map { [cities[$0]] } ?? []) : cities
        var m = Membership(me: cities[i], seeds: seeds, config: c, seed: Self.mix(config.seed, UInt64(restart) << 32 | 0x3E3B))
        if config.activeView > 0 {
            m.admitOnlyKnown()
            for city in nodes.indices.contains(i) ? (nodes[i].addresses?.book.records.keys).map(Array.init) ?? [] : [] { m.admit(city) }
        }
        return m
    }

    func freshAntiEntropy(_ i: Int, restart: Int, held: VersionVector) -> AntiEntropy {
        var ae = AntiEntropy(me: cities[i], config: antiEntropyConfig, seed: Self.mix(config.seed, UInt64(i) << 20 | UInt64(restart) << 8 | 0xAE))
        if let s = syncShares[i] { ae.setParties(share: Self.share, parties: s.parties, held: held) }
        return ae
    }

    /// Microseconds between sends of an open receipt while its sender stays connected (a
    /// receipt and its countersignature take `2 × delay` rounds there and back); with the
    /// `receipts-once` fault, never.
    var receiptRetry: Int64 {
        config.faults.contains(.receiptsOnce) ? .max : Int64(2 * config.delay + 1) * 1_000_000
    }

    /// The owner's policy (one share of `air-quality`, fields 1–3, members may write `note`; once
    /// `narrowed`, fields 1–2, nothing writable and a stricter filter), every member's agreement
    /// accepted and active (the `revoked` ones revoked by the owner, with `on_revoke: purge`),
    /// and the owner's roster: each node's share as the production rule works it out, and each
    /// node's plan (what its replica must lose).
    static func shares(_ cities: [CitySlug], members count: Int, rowFilter: Bool, narrowed: Bool, revoked: Set<Int>) -> (shares: [SyncShare?], plans: [ShareDirectory.Plan]) {
        let owner = cities[Self.owner]
        // Every other node, or the first `count` of them.
        let members = Array(cities[1...(count == 0 ? cities.count - 1 : count)])
        let viewFields: Set<Int> = narrowed ? [1, 2] : view
        let policyShare = Policy.Share(
            id: "air", dataset: "air-quality", to: members.filter { !revoked.contains(index(of: $0, in: cities)) },
            fields: fields.filter { viewFields.contains($0.id) }.map(\.name), filter: rowFilter ? (narrowed ? "pm25 >= 40" : "pm25 >= 25") : nil,
            write: narrowed ? [] : fields.filter { $0.id == memberField }.map(\.name), purpose: "simulation", legalBasis: "simulation", validFrom: nil,
            validUntil: Int64(epochMillis + 10 * 365 * 86_400_000) * 1000, validUntilText: "2036-01-01", onRevoke: .purge)
        let agreements = members.map { m in
            let gone = revoked.contains(index(of: m, in: cities))
            return ShareDirectory.Held(
                id: "offer-\(m)", terms: Agreement.Offer(owner: owner, member: m, share: policyShare, policyVersion: 1, issuedAt: "2026-01-01T00:00:00Z", nonce: nil),
                state: gone ? .revoked : .active, revokedBy: gone ? owner.rawValue : nil)
        }
        let keyField = schema.keyField
        // What a member's replica holds before any narrowing: the original view.
        let replicaFields = Self.fields.filter { view.contains($0.id) }.map(\.name)
        func plan(_ me: CitySlug, rosters: [String: ShareRoster]) -> ShareDirectory.Plan {
            ShareDirectory.plan(.init(
                me: me, policy: me == owner ? Policy(shares: [policyShare]) : nil, agreements: agreements.filter { $0.terms.owner == me.rawValue || $0.terms.member == me.rawValue },
                rosters: rosters, keyField: { $0.owner == owner ? keyField : nil }, replica: { _ in (keyField, replicaFields) }))
        }
        let ownerPlan = plan(owner, rosters: [:])
        // The share's id and dataset are the simulator's constants; a plan that named others would be a bug here.
        guard let ownerShare = ownerPlan.shares[share], let roster = ownerShare.roster(previous: nil, now: 0) else {
            preconditionFailure("the owner's plan has no share \(share)")
        }
        var out: [SyncShare?] = [], plans: [ShareDirectory.Plan] = []
        for c in cities {
            let p = c == owner ? ownerPlan : plan(c, rosters: [share: roster])
            out.append(p.shares[share])
            plans.append(p)
        }
        return (out, plans)
    }

    static func index(of city: CitySlug, in cities: [CitySlug]) -> Int { cities.firstIndex(of: city) ?? -1 }

    /// Members of the owner's share (`city-1`…): the others are federation members only.
    var shareMembers: Int { config.members == 0 ? n - 1 : config.members }

    /// The view's field ids under the terms in force.
    var currentView: Set<Int> { narrowed ? [1, 2] : Self.view }
    /// The row filter in force, as the invariants check it.
    var currentFilter: ShareView { narrowed ? Self.narrowedFilterView : Self.filteredView }

    /// The terms changed: every node works its share out again (the production rule); those that
    /// are up apply what their plan says at once, the others when they restart.
    mutating func replan() {
        termsVersion += 1
        let (shares, _) = Self.shares(cities, members: config.members, rowFilter: config.rowFilter, narrowed: narrowed, revoked: revokedMembers)
        syncShares = shares
        rights = shares[Self.owner]!.rights(schema: Self.schema)
        ownerView = shares[Self.owner]!.view(schema: Self.schema)
        for i in 0..<n where nodes[i].up { applyTerms(i) }
        if config.activeView > 0 { planPartners() }
    }

    /// Node `i` takes the terms in force: its parties, and what its plan makes its replica lose.
    mutating func applyTerms(_ i: Int) {
        guard nodes[i].termsApplied < termsVersion else { return }
        nodes[i].termsApplied = termsVersion
        let narrowing = narrowed && !nodes[i].narrowApplied
        if narrowed { nodes[i].narrowApplied = true }
        let (_, plans) = Self.shares(cities, members: config.members, rowFilter: config.rowFilter, narrowed: narrowed, revoked: revokedMembers)
        let plan = plans[i]
        guard let share = syncShares[i] else {
            // Revoked: out of the share; with on_revoke: purge the replica and its batches go.
            nodes[i].antiEntropy.removeShare(Self.share)
            nodes[i].receiptFlow.end(share: Self.share)
            for id in nodes[i].open where !endedReceipts.contains(id) {
                endedReceipts.insert(id)
                openReceipts -= 1
            }
            nodes[i].pending = []
            if !plan.purge.isEmpty && !config.faults.contains(.noPurge) {
                nodes[i].records = [:]
                nodes[i].purged = true
            }
            return
        }
        var held: VersionVector = [:]
        for (o, h) in nodes[i].held.enumerated() where h > 0 { held[cities[o]] = h }
        nodes[i].antiEntropy.setParties(share: Self.share, parties: share.parties, held: held)
        // Receipts to parties that left the share are not sent again.
        for r in revokedMembers { nodes[i].receiptFlow.end(share: Self.share, peer: cities[r]) }
        for id in nodes[i].open where !endedReceipts.contains(id) {
            guard let x = exchanges[id], revokedMembers.contains(x.sender) else { continue }
            endedReceipts.insert(id)
            openReceipts -= 1
        }
        if i != Self.owner, narrowing, !plan.narrow.isEmpty, !config.faults.contains(.noNarrowing) {
            let keep = Set(share.fields.compactMap { Self.schema.field(named: $0)?.id })
            nodes[i].records = nodes[i].records.mapValues { $0.projected(onto: keep) }
            nodes[i].narrowPending = true
        }
        // The owner re-judges everything under the new terms (once, for the narrowing): rows now
        // outside the filter are retracted, held rows go out whole under the narrowed view.
        if i == Self.owner, narrowing {
            nodes[i].narrowPending = true
            // The node's cut under new terms: every record re-judged (`change: nil`), its whole
            // state for rows newly in view; without a row filter before, members held every row.
            let keys = nodes[i].records.keys.sorted()
            let changes = keys.map { ShareView.Change(key: $0, seq: 0, state: nodes[i].records[$0] ?? RecordState()) }
            let held = config.rowFilter ? nodes[i].visible : Set(keys)
            let c = ownerView.cut(changes, cursor: 0, rescanUntil: 0, visible: held, added: ownerView.fields, maxBytes: .max)
            var records: [String: RecordState] = [:]
            applyOwnerCut(c, into: &records)
            cut(i, records, writes: 0)
        }
    }

    /// What the owner's cut (`ShareView.cut`) changes at the owner: which keys members hold, the
    /// retractions' erasures (and a row back in view ends its own), and the records for the batch.
    /// The `no-retraction` fault drops the retractions (the members are never told).
    mutating func applyOwnerCut(_ c: ShareView.Cut, into records: inout [String: RecordState]) {
        let w = Self.owner
        for key in c.shown {
            nodes[w].visible.insert(key)
            nodes[w].shareErasures[key] = nil
        }
        for key in c.hidden { nodes[w].visible.remove(key) }
        let dropRetractions = config.faults.contains(.noRetraction)
        if !dropRetractions { for r in c.retracted { noteRetraction(w, r.key, hlc: r.hlc) } }
        for r in c.records {
            if ShareView.isRetraction(r) {
                if !dropRetractions { records[r.key] = r.state }
            } else {
                // A whole state supersedes what an earlier write of the round put in the batch
                // (a retraction too): the node sends records whole.
                records[r.key] = r.state
            }
        }
    }

    /// Node `i` notes that `key` left the share's view holding `state`: records of it no newer
    /// leave its stored batches with the next pass (`share_erasures` in the node).
    mutating func noteRetraction(_ i: Int, _ key: String, _ state: RecordState) { noteRetraction(i, key, hlc: state.newestClock) }

    mutating func noteRetraction(_ i: Int, _ key: String, hlc: HLC) {
        nodes[i].shareErasures[key] = (Swift.max(hlc, nodes[i].shareErasures[key]?.hlc ?? .zero), true)
    }

    mutating func generateWorkload() {
        var w: [Write] = []
        for _ in 0..<config.writes {
            let round = 1 + rng.below(config.writeRounds)
            let byOwner = config.writers == 0 || rng.unit() < config.ownerShare
            let writer = byOwner ? Self.owner : 1 + rng.below(config.writers)
            let key = rng.below(config.keys)
            let delete = byOwner && rng.unit() < config.deleteShare
            w.append(Write(round: round, writer: writer, key: key, delete: delete, value: rng.next()))
        }
        // Stable: writes of one round and writer keep the order they were drawn in.
        writes = w.enumerated().sorted { a, b in
            (a.element.round, a.element.writer, a.offset) < (b.element.round, b.element.writer, b.offset)
        }.map(\.element)
    }

    // MARK: Running

    /// The first step at which a probe sent at a period's start is overdue.
    let ackTimeoutStep = Int((Membership.Config().ackTimeout + SimulatedFederation.stepNanos - 1) / SimulatedFederation.stepNanos)

    var partitionEnd: Int { config.partitionAt + config.partition }
    var restartRound: Int { config.crashAt + config.downFor }
    var split: Bool { config.partition > 0 && round >= config.partitionAt && round < partitionEnd }

    /// The last round anything is scheduled to happen.
    /// When the last disruption ended (the partition healed, the last crashed node restarted); 0
    /// in a run without one.
    var disruptionEnd: Int {
        var end = 0
        if config.partition > 0 { end = max(end, partitionEnd) }
        if config.crashes > 0 { end = max(end, restartRound) }
        return end
    }

    var lastEvent: Int {
        var last = config.writeRounds
        if config.partition > 0 { last = max(last, partitionEnd) }
        if config.crashes > 0 { last = max(last, restartRound) }
        return last
    }

    mutating func run() -> FederationSimulator.Result {
        var quietSince: Int?
        while round < config.maxRounds {
            round += 1
            roundBytes.append([0, 0, 0, 0])
            roundMessages.append([0, 0, 0, 0])
            applySchedule()
            refreshConnectivity()
            // Each node's schedule (`SyncSchedule`, the node's): a compaction pass when one is due.
            let now = Int64(round) * 1_000_000
            for i in 0..<n where nodes[i].up {
                let work = nodes[i].schedule.onTick(now: now)
                if work.contains(.collect) { collectTombstones(i) }
                guard work.contains(.compact), !config.faults.contains(.noCompaction), nodes[i].schedule.beginCompaction(now: now, force: false) else { continue }
                compact(i)
                nodes[i].schedule.compactionFinished(now: now, tookMillis: 0, rewrote: false)
            }
            for s in 0..<Self.stepsPerRound {
                step = round * Self.stepsPerRound + s
                // A round begins with each node's anti-entropy tick, then what arrives: every
                // request a node makes in a round (WANT) is then made after that round's tick,
                // and is overdue only at the next one's end (`AntiEntropy.wantTimeout`).
                if s == 0 && !config.faults.contains(.pushOnly) {
                    for i in 0..<n where nodes[i].up { perform(i, nodes[i].antiEntropy.onTick()) }
                }
                deliver()
                if s == 0 {
                    issueReceipts()
                    write()
                    relayMemberChanges()
                }
                // Membership has work due only when a period starts and when a probe's ACK is overdue;
                // ticking it then, rather than every step, changes nothing but the cost.
                guard s == 0 || s == ackTimeoutStep else { continue }
                let now = UInt64(step) * Self.stepNanos
                for i in 0..<n where nodes[i].up {
                    for case .send(let to, let m) in nodes[i].membership.onTick(now: now) { sendMembership(i, to, m) }
                }
            }
            if let q = quietSince {
                if round - q >= config.idleRounds { break }
            } else if round >= lastEvent, incomplete == 0, openReceipts == 0, nextWrite == writes.count,
                deadPairs == 0 || round - lastEvent > config.healRounds, unlinkedPartners == 0 || round - lastEvent > config.healRounds
            {
                quietSince = round
                if config.idleRounds == 0 { break }
            }
        }
        return finish(quietSince: quietSince)
    }

    /// Partition and crashes start and end at round boundaries.
    mutating func applySchedule() {
        if config.narrowAt > 0 && round == config.narrowAt {
            narrowed = true
            replan()
        }
        if config.revokeAt > 0 && round == config.revokeAt && config.revoked > 0 {
            revokedMembers = Set((shareMembers + 1 - config.revoked)..<(shareMembers + 1))
            // They take no batch from now on: what they lack no longer counts as undelivered.
            for r in revokedMembers.sorted() {
                for o in 0..<n where chains[o].count > Int(nodes[r].held[o]) {
                    for k in Int(nodes[r].held[o])..<chains[o].count {
                        chains[o][k].missing -= 1
                        if chains[o][k].missing == 0 {
                            chains[o][k].completed = round
                            incomplete -= 1
                            Self.add(chains[o][k].writes, at: round - chains[o][k].round, to: &disseminationHistogram)
                        }
                    }
                }
            }
            replan()
        }
        if config.crashes > 0 && round == config.crashAt {
            for v in victims { crash(v) }
        }
        if config.crashes > 0 && round == restartRound {
            for v in victims { restart(v) }
        }
    }

    mutating func crash(_ i: Int) {
        nodes[i].up = false
        nodes[i].crashes += 1
        nodes[i].receiptFlow = ReceiptFlow(retry: receiptRetry)
        nodes[i].schedule = SyncSchedule()
        for j in nodes[i].sessions.sorted() { nodes[j].sessions.remove(i) }
        nodes[i].sessions = []
        if config.activeView > 0 { dropTransport(i) }
        if config.faults.contains(.volatileLedger) {
            openReceipts -= nodes[i].open.filter { !endedReceipts.contains($0) }.count
            nodes[i].open = []
            nodes[i].receipts = []
            nodes[i].countersigned = []
            nodes[i].ledgerSize = 0
            nodes[i].sentEntries = []
            nodes[i].receivedEntries = []
        }
    }

    /// A restart: fresh protocol state, from what the store holds.
    mutating func restart(_ i: Int) {
        var held: VersionVector = [:]
        for (o, h) in nodes[i].held.enumerated() where h > 0 { held[cities[o]] = h }
        if config.activeView > 0 && config.moveOnRestart { move(i) }
        nodes[i].membership = freshMembership(i, restart: nodes[i].crashes)
        nodes[i].antiEntropy = freshAntiEntropy(i, restart: nodes[i].crashes, held: held)
        if config.activeView > 0 { startTransport(i) }
        nodes[i].excluded = nil
        nodes[i].receiptFlow.restore(open: nodes[i].open.compactMap { id in
            exchanges[id].flatMap { endedReceipts.contains(id) ? nil : (id, cities[$0.sender], Self.share) }
        })
        nodes[i].up = true
        applyTerms(i)
    }

    func reachable(_ a: Int, _ b: Int) -> Bool {
        nodes[a].up && nodes[b].up && (!split || side[a] == side[b])
    }

    /// What each node's shell tells anti-entropy: every party is connected except those its
    /// membership holds dead, unless the transport has since re-established a connection to one.
    mutating func refreshConnectivity() {
        var dead: [[Int]] = Array(repeating: [], count: n)
        deadPairs = 0
        for i in 0..<n where nodes[i].up {
            nodes[i].sessions = nodes[i].sessions.filter { reachable(i, $0) }
            dead[i] = nodes[i].membership.cities(.dead).compactMap { index[$0] }.sorted()
            deadPairs += dead[i].reduce(0) { $0 + (nodes[$1].up ? 1 : 0) }
        }
        if round >= disruptionEnd {
            var now = Set<UInt64>()
            for i in 0..<n where nodes[i].up {
                for j in dead[i] where nodes[j].up { now.insert(UInt64(i) << 32 | UInt64(j)) }
            }
            for (pair, since) in deadSince where !now.contains(pair) {
                longestDead = max(longestDead, round - since)
                deadSince[pair] = nil
            }
            for pair in now where deadSince[pair] == nil { deadSince[pair] = round }
        }
        if config.activeView > 0 {
            refreshLinks()
            return
        }
        if config.redialInterval > 0 {
            for i in 0..<n where nodes[i].up {
                for j in dead[i] where !nodes[i].sessions.contains(j) && (round + (i &* 7919 &+ j &* 104_729)) % config.redialInterval == 0 {
                    guard reachable(i, j) else { continue }
                    nodes[i].sessions.insert(j)
                    nodes[j].sessions.insert(i)
                }
            }
        }
        for i in 0..<n where nodes[i].up {
            let excluded = dead[i].filter { !nodes[i].sessions.contains($0) }
            guard excluded != nodes[i].excluded else { continue }
            // Peers connected again: their open receipts go again now (as the node does on connect).
            if !config.faults.contains(.receiptsOnce) {
                for j in Set(nodes[i].excluded ?? []).subtracting(excluded) { nodes[i].receiptFlow.onConnect(cities[j]) }
            }
            if let before = nodes[i].excluded {
                // Told as what changed: no set of every city per change.
                let now = Set(excluded), was = Set(before)
                nodes[i].antiEntropy.setConnected(
                    adding: Set(was.subtracting(now).map { cities[$0] }), removing: Set(now.subtracting(was).map { cities[$0] }))
            } else {
                var connected = Set(cities)
                connected.remove(cities[i])
                for j in excluded { connected.remove(cities[j]) }
                nodes[i].antiEntropy.setConnected(connected)
            }
            nodes[i].excluded = excluded
        }
    }

    // MARK: The network

    mutating func send(_ from: Int, _ to: Int, _ payload: Payload, kind: Kind, bytes: Int, arrives: Int, lossless: Bool = false) {
        // With partial views a message goes only over a connection (the node's sends to a
        // city it has none with fail, and SWIM's timeouts decide what that means).
        if config.activeView > 0 && !nodes[from].links.contains(to) {
            result.messages.unconnected += 1
            return
        }
        roundBytes[round][kind.rawValue] += bytes
        roundMessages[round][kind.rawValue] += 1
        var arrives = arrives
        if config.activeView > 0 {
            // Every message travels on a connection (TCP): a lost packet is sent again after the
            // retransmission timeout (200 ms, doubling each time it is lost again), so loss
            // delays a message instead of dropping it.
            if config.loss > 0 && !lossless {
                var rto = 2
                while rng.unit() < config.loss {
                    result.messages.retransmitted += 1
                    arrives += rto
                    rto = Swift.min(rto * 2, 600)
                }
            }
        } else if config.loss > 0 && !lossless && rng.unit() < config.loss {
            result.messages.lost += 1
            return
        }
        inFlight[arrives, default: []].append(Envelope(from: from, to: to, payload: payload))
    }

    /// The first step of the round `delay` rounds from now.
    var replicationArrival: Int { (round + config.delay) * Self.stepsPerRound }

    mutating func sendMembership(_ from: Int, _ to: CitySlug, _ m: Membership.Message) {
        guard let j = index[to] else { return }
        send(from, j, .membership(m), kind: .membership, bytes: m.encodedCount + Self.frameHeader, arrives: step + 1)
    }

    mutating func deliver() {
        guard let arriving = inFlight.removeValue(forKey: step) else { return }
        for e in arriving {
            guard nodes[e.to].up, !split || side[e.from] == side[e.to], config.activeView == 0 || nodes[e.to].links.contains(e.from) else {
                result.messages.unreachable += 1
                continue
            }
            switch e.payload {
            case .membership(let m):
                let now = UInt64(step) * Self.stepNanos
                for case .send(let to, let reply) in nodes[e.to].membership.onMessage(from: cities[e.from], m, now: now) {
                    sendMembership(e.to, to, reply)
                }
            case .summary(let vector, let reply):
                perform(e.to, nodes[e.to].antiEntropy.onSummary(from: cities[e.from], share: Self.share, vector: vector, reply: reply))
            case .acked(let vector):
                nodes[e.to].antiEntropy.onAcked(from: cities[e.from], share: Self.share, vector: vector)
            case .announce(let origin, let seq):
                perform(e.to, nodes[e.to].antiEntropy.onAnnounce(from: cities[e.from], share: Self.share, origin: cities[origin], seq: seq))
            case .want(let origin, let seqs):
                perform(e.to, nodes[e.to].antiEntropy.onWant(from: cities[e.from], share: Self.share, origin: cities[origin], seqs: seqs))
            case .batch(let origin, let seq):
                receiveBatch(at: e.to, from: e.from, origin: origin, seq: seq)
            case .receipt(let id):
                receiveReceipt(at: e.to, id)
            case .countersign(let id):
                receiveCountersign(at: e.to, id)
            case .address(let m):
                receiveAddresses(at: e.to, from: e.from, m)
            }
        }
    }

    /// Performs a node's anti-entropy directives.
    mutating func perform(_ i: Int, _ directives: [AntiEntropy.Directive]) {
        for d in directives {
            switch d {
            case .summary(let to, let share, let vector, let reply):
                guard let j = index[to] else { continue }
                let bytes = ReplicationWire.encode(.summary(share: share, vector: vector, reply: reply)).count + Self.frameHeader
                send(i, j, .summary(vector, reply: reply), kind: .summary, bytes: bytes, arrives: replicationArrival)
            case .acked(let to, let share, let vector):
                // Counted with the summaries: both are what an idle share costs.
                guard let j = index[to] else { continue }
                let bytes = ReplicationWire.encode(.acked(share: share, vector: vector)).count + Self.frameHeader
                send(i, j, .acked(vector), kind: .summary, bytes: bytes, arrives: replicationArrival)
            case .announce(let to, let share, let origin, let seq):
                // Counted with the summaries (replication's control messages); like a membership
                // message it takes one step, where a batch takes whole rounds.
                guard let j = index[to], let o = index[origin] else { continue }
                let bytes = ReplicationWire.encode(.announce(share: share, origin: origin, seq: seq)).count + Self.frameHeader
                result.messages.announcements += 1
                send(i, j, .announce(origin: o, seq: seq), kind: .summary, bytes: bytes, arrives: step + 1)
            case .want(let to, let share, let origin, let seqs):
                guard let j = index[to], let o = index[origin] else { continue }
                let bytes = ReplicationWire.encode(.want(share: share, origin: origin, seqs: seqs)).count + Self.frameHeader
                result.messages.wants += 1
                send(i, j, .want(origin: o, seqs: seqs), kind: .summary, bytes: bytes, arrives: step + 1)
            case .send(let to, _, let origin, let seqs):
                guard let j = index[to], let o = index[origin] else { continue }
                for seq in seqs {
                    if !config.faults.contains(.unledgeredSends) { nodes[i].sentEntries.insert(Self.exchangeID(j, o, seq)) }
                    send(i, j, .batch(origin: o, seq: seq), kind: .batch, bytes: chains[o][Int(seq) - 1].wireBytes, arrives: replicationArrival)
                }
            }
        }
    }

    // MARK: Writing

    /// This round's writes, each writer's cut into one batch.
    mutating func write() {
        var start = nextWrite
        while start < writes.count, writes[start].round == round {
            var end = start
            while end < writes.count, writes[end].round == round, writes[end].writer == writes[start].writer { end += 1 }
            commit(writes[start..<end])
            start = end
        }
        nextWrite = start
    }

    mutating func commit(_ batch: ArraySlice<Write>) {
        guard let w = batch.first?.writer else { return }
        guard nodes[w].up else {
            result.skippedWrites += batch.count
            return
        }
        // A member whose agreement was revoked takes no part in the share: its node refuses the writes.
        guard syncShares[w] != nil else {
            result.refusedWrites += batch.count
            return
        }
        let city = cities[w]
        var records: [String: RecordState] = [:]
        let refusedBefore = result.refusedWrites
        for x in batch {
            let key = "station-\(x.key)"
            // A member's own node checks its write with the share's rule first.
            if w != Self.owner, rights.localWrite(by: city, fields: ["note"], delete: x.delete, current: nodes[w].records[key]) != nil {
                result.refusedWrites += 1
                continue
            }
            let hlc = nodes[w].clock.tick(physicalMillis: Self.epochMillis + UInt64(round) * 1000)
            let stamp = Stamp(hlc: hlc, city: city)
            let change: RecordState
            if x.delete {
                change = .deletion(at: stamp)
            } else if w == Self.owner {
                change = RecordState(sortedCells: [
                    Cell(field: 1, value: .string(key), stamp: stamp),
                    Cell(field: 2, value: .double(Double(x.value % 5000) / 10), stamp: stamp),
                    Cell(field: 3, value: .string("checked \(x.value % 1000)"), stamp: stamp),
                    Cell(field: 4, value: .string("inspector \(x.value % 100)"), stamp: stamp),
                ])
            } else {
                change = RecordState(sortedCells: [Cell(field: Self.memberField, value: .string("\(city) saw \(x.value % 1000)"), stamp: stamp)])
            }
            nodes[w].records[key, default: RecordState()].merge(change)
            nodes[w].seen[city] = hlc
            if x.delete { nodes[w].erasures[key] = (Swift.max(hlc, nodes[w].erasures[key]?.hlc ?? .zero), true) }
            // The owner cuts with the production rule (`ShareView`); a leaky owner sends everything.
            if w == Self.owner && !config.faults.contains(.leakyOwner) {
                ownerCut(key, change, into: &records)
            } else if w != Self.owner {
                // A member cuts its own cells of the fields it may write (`WriteRights.outgoing`).
                let out = rights.outgoing(change, by: city, field: { Self.schema.field(id: $0)?.name })
                if !out.cells.isEmpty { records[key, default: RecordState()].merge(out) }
            } else {
                records[key, default: RecordState()].merge(change)
            }
        }
        cut(w, records, writes: batch.count - (result.refusedWrites - refusedBefore))
    }

    /// The owner's cut of one changed record (`ShareView.cut`, as the node cuts: the record's whole
    /// state now), into the batch being cut.
    mutating func ownerCut(_ key: String, _ change: RecordState, into records: inout [String: RecordState]) {
        let w = Self.owner
        let current = nodes[w].records[key] ?? change
        let held: Set<String>? = config.rowFilter ? (nodes[w].visible.contains(key) ? [key] : []) : nil
        let c = ownerView.cut([ShareView.Change(key: key, seq: 1, state: current)], cursor: 0, visible: held, maxBytes: .max)
        applyOwnerCut(c, into: &records)
    }

    /// Members' cells the owner took since its last batch go out in its next one, as the node's
    /// cut sends every record changed since (the owner vouches for what it relays): a member
    /// that did not hold the record when the member's own batch came gets them this way.
    mutating func relayMemberChanges() {
        let w = Self.owner
        guard nodes[w].up, !nodes[w].relay.isEmpty else { return }
        var records: [String: RecordState] = [:]
        for key in nodes[w].relay.keys.sorted() {
            guard let change = nodes[w].relay[key] else { continue }
            if config.faults.contains(.leakyOwner) { records[key, default: RecordState()].merge(change) } else { ownerCut(key, change, into: &records) }
        }
        nodes[w].relay = [:]
        cut(w, records, writes: 0)
    }

    /// Cuts `records` into writer `w`'s next batch (none if empty).
    mutating func cut(_ w: Int, _ records: [String: RecordState], writes made: Int) {
        let city = cities[w]
        // Every change stayed out of the members' view (or none was allowed): no batch.
        guard !records.isEmpty else {
            result.writes += made
            return
        }
        let seq = nodes[w].held[w] + 1
        // As the node cuts: the key field first, then the fields the records use.
        let used = Set(records.values.flatMap { $0.cells.map(\.field) })
        let body = ChangeBatch(
            share: Self.share, dataset: Self.dataset, origin: city, seq: seq,
            prev: seq == 1 ? ChangeBatch.zeroHash : chains[w][Int(seq) - 2].hash,
            fields: Self.fields.filter { $0.id == 1 || used.contains($0.id) }, seen: nodes[w].seen,
            records: records.keys.sorted().map { ChangeBatch.Record(key: $0, state: records[$0] ?? RecordState()) })
        // Weighed as production cuts it: the compactable layout (salts of zeros: only the size counts).
        let (sealedBody, section) = body.sealed(salts: [UInt8](repeating: 0, count: body.records.count * ChangeBatch.saltBytes))
        let signed = SignedBatch(body: sealedBody, algorithm: 1, signature: Self.signature, records: section)
        let wire = ReplicationWire.encode(.batch(share: Self.share, bytes: signed.bytes)).count + Self.frameHeader
        chains[w].append(Batch(body: body, hash: signed.hash, wireBytes: wire, round: round, writes: made, missing: shareMembers - revokedMembers.count))
        for (x, r) in body.records.enumerated() { keyIndex[r.key, default: []].append((w, seq, x)) }
        incomplete += 1
        result.writes += made
        result.batches += 1
        nodes[w].held[w] = seq
        perform(w, nodes[w].antiEntropy.accepted(share: Self.share, origin: city, seq: seq, from: city))
    }

    static let schema = try! Schema(keyField: "station", fields: fields.map { ($0.name, $0.type) })
    /// The share's view as the owner applies it: without a row filter, and with one (`rowFilter`).
    /// The filter the invariants check against (the owner cuts with its `SyncShare`'s view).
    static let filteredView = ShareView(fields: view, filter: try! RowFilter("pm25 >= 25", schema: schema), schema: schema)
    static let narrowedFilterView = ShareView(fields: [1, 2], filter: try! RowFilter("pm25 >= 40", schema: schema), schema: schema)

    // MARK: Receiving batches

    mutating func receiveBatch(at i: Int, from sender: Int, origin o: Int, seq: UInt64) {
        switch nodes[i].antiEntropy.onBatch(share: Self.share, origin: cities[o], seq: seq, from: cities[sender]) {
        case .take:
            take(at: i, from: sender, origin: o, seq: seq)
        case .duplicate:
            result.messages.duplicateBatches += 1
        case .gap:
            result.messages.gapBatches += 1
            perform(i, nodes[i].antiEntropy.onGap(share: Self.share, origin: cities[o], seq: seq, from: cities[sender]))
            if config.faults.contains(.takeGaps) { take(at: i, from: sender, origin: o, seq: seq) }
        case .notParty:
            break
        }
    }

    mutating func take(at i: Int, from sender: Int, origin o: Int, seq: UInt64) {
        let batch = chains[o][Int(seq) - 1]
        // The node's first checks (`SyncShare`): the batch is of this share, from a party, and a
        // replica takes its schema from the owner's batches first — a co-member's batch that
        // comes before waits (it is not taken; anti-entropy brings it again).
        guard let share = syncShares[i], share.refusal(of: batch.body, at: cities[i]) == nil else { return }
        guard case .take = share.founding(batch.body, replicaExists: i == Self.owner || nodes[i].held[Self.owner] > 0) else {
            result.messages.waitingBatches += 1
            return
        }
        // The chain: the next number, naming the hash of the last batch held.
        let holding = nodes[i].held[o]
        let last = holding == 0 ? ChangeBatch.zeroHash : chains[o][Int(holding) - 1].hash
        if seq != holding + 1 || batch.body.prev != last {
            orderViolations += 1
            if firstOrderViolation == nil { firstOrderViolation = "\(cities[i]) took \(cities[o])'s batch \(seq) holding up to \(holding)" }
        }
        // The batch as the sender keeps it: records it compacted are digests only, here too.
        // So is what its next pass will compact: a send re-checks the stored batch against what
        // waits for the pass (`Erasure.Screen`, as the node's send does).
        let id = Self.batchID(o, seq)
        var gone = nodes[sender].compacted[id] ?? []
        let screen = pendingScreen(sender)
        if !screen.isEmpty {
            for (x, r) in batch.body.records.enumerated() where screen.erases(r.key, r.state, name: { Self.schema.field(id: $0)?.name }) { gone.insert(x) }
        }
        if !gone.isEmpty { nodes[i].compacted[id, default: []].formUnion(gone) }
        var refusedCellsHere = 0
        defer {
            if refusedCellsHere > 0 {
                result.messages.refusedBatches += 1
                result.messages.refusedCells += refusedCellsHere
            }
        }
        let records = batch.body.records.enumerated().filter { !gone.contains($0.offset) }.map(\.element)
        for r in records {
            if let t = r.state.tombstone { nodes[i].erasures[r.key] = (Swift.max(t.hlc, nodes[i].erasures[r.key]?.hlc ?? .zero), true) }
            // A record of a key deleted (or retracted) and compacted before: the next pass looks at it too.
            if nodes[i].erasures[r.key] != nil { nodes[i].erasures[r.key]?.pending = true }
            if nodes[i].shareErasures[r.key] != nil { nodes[i].shareErasures[r.key]?.pending = true }
        }
        // What the share lets the origin write: the production rule (`WriteRights.intake`), cell by
        // cell — a lenient receiver takes everything.
        var intake = WriteRights.Intake()
        if config.faults.contains(.lenientReceivers) {
            for r in records {
                if ShareView.isRetraction(r) {
                    if o == Self.owner && i != Self.owner { intake.retracted.append(r.key) }
                } else {
                    intake.states.append(r)
                }
            }
        } else {
            let held = nodes[i].records
            intake = rights.intake(records, origin: cities[o], receiver: cities[i], current: { held[$0] }, field: { Self.schema.field(id: $0) })
            if intake.refused > 0 {
                refusedCellsHere += intake.refused
                if firstRefusal == nil { firstRefusal = "\(cities[i]) refused \(intake.refused) cells in \(cities[o])'s batch \(seq)" }
            }
        }
        // What it refused of another city's records is not kept for relaying (digests in its copy).
        if !intake.withheld.isEmpty {
            let withheld = Set(intake.withheld)
            for (x, r) in batch.body.records.enumerated() where withheld.contains(r.key) { nodes[i].compacted[id, default: []].insert(x) }
        }
        for key in intake.retracted {
            if let held = nodes[i].records[key] { noteRetraction(i, key, held) }
            nodes[i].records[key] = nil
        }
        for r in intake.states {
            // A row the owner sends live again is back in view: its retraction's erasure ends.
            if o == Self.owner, !r.state.cells.isEmpty { nodes[i].shareErasures[r.key] = nil }
            if i != Self.owner {
                for c in r.state.cells where !Self.view.contains(c.field) {
                    viewViolations += 1
                    if firstViewViolation == nil { firstViewViolation = "\(cities[i]) holds field \(c.field) of \(r.key), from \(cities[o])" }
                }
            }
            nodes[i].records[r.key, default: RecordState()].merge(r.state)
            if i == Self.owner && o != Self.owner { nodes[i].relay[r.key, default: RecordState()].merge(r.state) }
        }
        for key in intake.ownerDeletions {
            if let merged = nodes[i].records[key] { nodes[i].records[key] = WriteRights.afterOwnerDeletion(merged, owner: cities[Self.owner]) }
        }
        // As the node: what it has seen of each writer from the cells it took; its clock from
        // everything the batch carries.
        for r in intake.states {
            for c in r.state.cells where (nodes[i].seen[c.stamp.city] ?? .zero) < c.stamp.hlc { nodes[i].seen[c.stamp.city] = c.stamp.hlc }
        }
        for r in records {
            for c in r.state.cells { nodes[i].clock.observe(c.stamp.hlc) }
            if let t = r.state.tombstone { nodes[i].clock.observe(t.hlc) }
        }
        nodes[i].held[o] = max(holding, seq)
        // A batch cut under a wider view, taken after the view narrowed: what it carries outside
        // the view is compacted out of this copy (the node's pass does it on the next tick).
        if nodes[i].narrowApplied && !config.faults.contains(.noNarrowing) && !config.faults.contains(.noCompaction) {
            compactOutsideView(i, origin: o, seq: seq)
        }
        nodes[i].pending.append(.init(peer: cities[sender], share: Self.share, origin: cities[o], seq: seq, hash: batch.hash, records: batch.body.records.count))
        nodes[i].receivedEntries.append(Self.exchangeID(sender, o, seq))
        // Measurements.
        let rounds = round - batch.round
        Self.add(batch.writes, at: rounds, to: &deliveryHistogram)
        chains[o][Int(seq) - 1].missing -= 1
        if chains[o][Int(seq) - 1].missing == 0 {
            chains[o][Int(seq) - 1].completed = round
            incomplete -= 1
            Self.add(batch.writes, at: rounds, to: &disseminationHistogram)
        }
        perform(i, nodes[i].antiEntropy.accepted(share: Self.share, origin: cities[o], seq: seq, from: cities[sender]))
    }

    /// Rounds within which a compaction pass follows what made it due (`SyncSchedule`: at most
    /// every 2 s, one round each).
    static let passBound = 3

    static func batchID(_ origin: Int, _ seq: UInt64) -> UInt64 { UInt64(origin) << 40 | seq }

    /// One exchange of one batch: the other party, the origin and the batch number (20 bits each
    /// for the cities, 24 for the number: a run's chains are far shorter).
    static func exchangeID(_ party: Int, _ origin: Int, _ seq: UInt64) -> UInt64 { UInt64(party) << 44 | UInt64(origin) << 24 | (seq & 0xFF_FFFF) }

    /// A compaction pass at node `i`, by the production rule (`Erasure.compacts`): for each deleted
    /// key with a pass due, every record of it in a batch this node holds that the deletion
    /// overrides is compacted out of this node's copy. (Tombstone collection is not modelled:
    /// the deletions' own records stay.)
    mutating func compact(_ i: Int) {
        // Deleted and retracted keys' records (the rule the node's pass and sends run), then,
        // with a narrowed view, every record with a cell of a field the view lost.
        var screen = pendingScreen(i, compacting: true)
        screen.keep = nil
        for key in Set(screen.deleted.keys).union(screen.retracted.keys) {
            for occ in keyIndex[key] ?? [] where occ.seq <= nodes[i].held[occ.origin] {
                let state = chains[occ.origin][Int(occ.seq) - 1].body.records[occ.index].state
                if screen.erases(key, state, name: { Self.schema.field(id: $0)?.name }) {
                    nodes[i].compacted[Self.batchID(occ.origin, occ.seq), default: []].insert(occ.index)
                }
            }
            nodes[i].erasures[key]?.pending = false
            nodes[i].shareErasures[key]?.pending = false
        }
        if nodes[i].narrowPending {
            nodes[i].narrowPending = false
            for o in 0..<n where nodes[i].held[o] > 0 {
                for seq in 1...nodes[i].held[o] { compactOutsideView(i, origin: o, seq: seq) }
            }
        }
    }

    /// Tombstone collection at node `i`, by the node's rule: once every party holds every batch it
    /// holds (`AntiEntropy.settled`, `SyncSchedule.collectable`), deleted records older than the
    /// grace (`SyncSchedule.collects`) go, key and all, and the next pass compacts the deletions'
    /// own records out of the stored batches.
    mutating func collectTombstones(_ i: Int) {
        guard syncShares[i] != nil, SyncSchedule.collectable([Self.share], settled: { nodes[i].antiEntropy.settled($0) }) else { return }
        let cutoff = SyncSchedule.tombstoneCutoff(nowMicros: Int64(Self.epochMillis + UInt64(round) * 1000) * 1000)
        for key in nodes[i].records.keys.sorted() {
            guard let state = nodes[i].records[key], SyncSchedule.collects(state, before: cutoff), let t = state.tombstone else { continue }
            nodes[i].records[key] = nil
            nodes[i].collected[key] = round
            nodes[i].erasures[key] = (Swift.max(t.hlc, nodes[i].erasures[key]?.hlc ?? .zero), true)
        }
    }

    /// Compacts, in node `i`'s copy of a batch, the records with a cell outside the view in force.
    mutating func compactOutsideView(_ i: Int, origin o: Int, seq: UInt64) {
        let screen = Erasure.Screen(keep: Set(Self.fields.filter { currentView.contains($0.id) }.map(\.name)))
        for (x, r) in chains[o][Int(seq) - 1].body.records.enumerated() where screen.erases(r.key, r.state, name: { Self.schema.field(id: $0)?.name }) {
            nodes[i].compacted[Self.batchID(o, seq), default: []].insert(x)
        }
    }

    /// What node `i`'s next compaction pass will compact (`Erasure.Screen`, as the node's store
    /// reads it for a send: `NodeStore.sendScreen`): pending deletions and retractions, and a
    /// narrowed view. With the compaction or narrowing faults the node neither compacts nor
    /// screens what those faults leave (`compacting`: the pass itself, which the faults gate elsewhere).
    func pendingScreen(_ i: Int, compacting: Bool = false) -> Erasure.Screen {
        var screen = Erasure.Screen()
        guard compacting || !config.faults.contains(.noCompaction) else { return screen }
        for (key, e) in nodes[i].erasures where e.pending { screen.deleted[key] = .init(hlc: e.hlc, collected: nodes[i].collected[key] != nil) }
        for (key, e) in nodes[i].shareErasures where e.pending { screen.retracted[key] = e.hlc }
        if nodes[i].narrowApplied && !config.faults.contains(.noNarrowing) {
            screen.keep = Set(Self.fields.filter { currentView.contains($0.id) }.map(\.name))
        }
        return screen
    }

    static func add(_ weight: Int, at bucket: Int, to histogram: inout [Int]) {
        if histogram.count <= bucket { histogram.append(contentsOf: repeatElement(0, count: bucket + 1 - histogram.count)) }
        histogram[bucket] += weight
    }

    // MARK: Receipts

    /// Once a round, each node's receipts machine (`ReceiptFlow`, as in the node): a receipt per
    /// (sender, share) for the batches taken and not yet receipted, and open receipts again to
    /// senders that reconnected or have not answered for `receiptRetry`.
    mutating func issueReceipts() {
        let now = Int64(round) * 1_000_000
        for i in 0..<n where nodes[i].up {
            let directives = nodes[i].receiptFlow.onTick(now: now, taken: nodes[i].pending, connected: nodes[i].antiEntropy.connected)
            nodes[i].pending = []
            for d in directives {
                switch d {
                case .issue(let draft):
                    guard let s = index[draft.peer] else { continue }
                    let receipt = ExchangeReceipt(
                        share: draft.share, sender: draft.peer, receiver: cities[i], batches: draft.runs, records: draft.records, batchesSHA256: draft.digest,
                        receiverLedgerSize: nodes[i].ledgerSize, at: timestamp())
                    let (id, bytes) = Self.document(receipt, signer: cities[i])
                    exchanges[id] = Exchange(
                        sender: s, receiver: i, taken: draft.batches.compactMap { b in index[b.origin].map { ($0, b.seq) } }, receipt: receipt, receiptBytes: bytes,
                        crashMark: nodes[s].crashes + nodes[i].crashes)
                    exchangeOrder.append(id)
                    nodes[i].open.append(id)
                    openReceipts += 1
                    nodes[i].receiptFlow.issued(id, to: draft.peer, share: draft.share, now: now)
                    sendReceipt(from: i, id)
                case .resend(let id, _):
                    sendReceipt(from: i, id)
                }
            }
        }
    }

    mutating func sendReceipt(from i: Int, _ id: String) {
        guard let x = exchanges[id] else { return }
        send(i, x.sender, .receipt(id), kind: .receipt, bytes: x.receiptBytes, arrives: replicationArrival)
    }

    /// The sender checks the receipt by the production rule (`ReceiptFlow.check`, `matches`:
    /// a party of the share, every batch held and ledgered as sent to the receiver, the digest
    /// and count equal), countersigns it once, and answers every copy with its countersignature.
    mutating func receiveReceipt(at s: Int, _ id: String) {
        guard var x = exchanges[id], x.sender == s else { return }
        // A party whose agreement was revoked: the receipt stays open, one-sided by design.
        guard !revokedMembers.contains(s) && !revokedMembers.contains(x.receiver) else { return }
        if !nodes[s].countersigned.contains(id) {
            do {
                let runs = try ReceiptFlow.check(
                    x.receipt, sender: cities[s], from: cities[x.receiver], isParty: nodes[s].antiEntropy.isParty(cities[x.receiver], of: Self.share), agreement: nil)
                var held: [[(hash: [UInt8], records: Int)]] = []
                var sent: [Bool] = []
                for run in runs {
                    guard let o = index[run.origin] else { throw CityMeshError(.forbidden, "a run of an unknown city") }
                    held.append(run.seqs.filter { $0 <= nodes[s].held[o] }.map { seq in
                        let b = chains[o][Int(seq) - 1]
                        return (b.hash, b.body.records.count)
                    })
                    sent.append(run.seqs.allSatisfy { nodes[s].sentEntries.contains(Self.exchangeID(x.receiver, o, $0)) })
                }
                try ReceiptFlow.matches(x.receipt, runs: runs, held: held, sent: sent)
            } catch {
                disputes += 1
                if firstDispute == nil { firstDispute = "\(cities[s]) refused \(cities[x.receiver])'s receipt: \((error as? CityMeshError)?.message ?? "\(error)")" }
                return
            }
            let countersign = ReceiptCountersign(receipt: id, sender: cities[s], senderLedgerSize: nodes[s].ledgerSize, at: timestamp())
            x.countersignBytes = Self.document(countersign, signer: cities[s]).bytes
            exchanges[id] = x
            nodes[s].countersigned.insert(id)
            nodes[s].ledgerSize += 1
        }
        send(s, x.receiver, .countersign(id), kind: .receipt, bytes: x.countersignBytes, arrives: replicationArrival)
    }

    mutating func receiveCountersign(at r: Int, _ id: String) {
        guard let k = nodes[r].open.firstIndex(of: id), var x = exchanges[id] else { return }
        nodes[r].open.remove(at: k)
        nodes[r].receiptFlow.countersigned(id)
        nodes[r].receipts.insert(id)
        nodes[r].ledgerSize += 1
        // One counted as ended when the agreement was revoked completed after all.
        if endedReceipts.remove(id) == nil { openReceipts -= 1 }
        if nodes[x.sender].crashes + nodes[x.receiver].crashes != x.crashMark {
            x.interrupted = true
            exchanges[id] = x
        }
    }

    func timestamp() -> String { RFC3339.format(microseconds: Int64(Self.epochMillis + UInt64(round) * 1000) * 1000) }

    /// A document as it would travel signed (channel 5, `document`): its id and its size on the wire.
    static func document<T: Encodable>(_ document: T, signer: CitySlug) -> (id: String, bytes: Int) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings and integers cannot fail.
        let body = String(decoding: (try? encoder.encode(document)) ?? Data(), as: UTF8.self)
        let signed = Agreement.Signed(body: body, signer: signer.rawValue, algorithm: "ed25519", signature: signatureBase64)
        let json = Array((try? encoder.encode(signed)) ?? Data())
        return (signed.id, ReplicationWire.encode(.document(json: json)).count + frameHeader)
    }

    // MARK: The end

    mutating func finish(quietSince: Int?) -> FederationSimulator.Result {
        var r = result
        r.rounds = round
        r.dissemination = FederationSimulator.Rounds(histogram: disseminationHistogram)
        r.delivery = FederationSimulator.Rounds(histogram: deliveryHistogram)
        let all = chains.joined()
        r.undelivered = all.filter { $0.completed == nil }.reduce(0) { $0 + $1.writes }
        if incomplete == 0 { r.convergedRound = all.compactMap(\.completed).max() ?? 0 }
        var ends: [Int] = []
        if config.partition > 0 { ends.append(partitionEnd) }
        if config.crashes > 0 { ends.append(restartRound) }
        if let end = ends.max(), end <= round {
            r.disruptionEndRound = end
            let before = all.filter { $0.round < end }
            if before.allSatisfy({ $0.completed != nil }) {
                r.catchUpRounds = max(0, (before.compactMap(\.completed).max() ?? 0) - end)
            }
        }
        r.bytes = measureBytes(active: r.convergedRound ?? 0, quietSince: quietSince)
        r.messages.sent = byKind { k in roundMessages.reduce(0) { $0 + $1[k.rawValue] } }
        r.receipts = auditReceipts()
        for i in 0..<n where nodes[i].up {
            r.membershipDeadPairs += nodes[i].membership.cities(.dead).compactMap { index[$0] }.filter { nodes[$0].up }.count
        }
        r.membershipLongestDead = deadSince.values.reduce(longestDead) { max($0, round + 1 - $1) }
        r.checks = [convergenceCheck(r), viewCheck(), receiptCheck(r.receipts), orderCheck(), erasureCheck(), exchangeLedgerCheck(), healCheck(r)]
        if config.activeView > 0 {
            let c = connectionFigures()
            r.connections = c
            r.checks.append(partnersCheck(c))
        }
        if config.rowFilter { r.checks.append(retractionCheck()) }
        if config.narrowAt > 0 || config.revokeAt > 0 { r.checks.append(termsCheck()) }
        return r
    }

    func byKind(_ figure: (Kind) -> Int) -> FederationSimulator.ByKind {
        .init(membership: figure(.membership), summaries: figure(.summary), batches: figure(.batch), receipts: figure(.receipt))
    }

    func measureBytes(active: Int, quietSince: Int?) -> FederationSimulator.Bytes {
        var b = FederationSimulator.Bytes()
        func sum(_ rounds: ClosedRange<Int>, _ kinds: [Kind]) -> Int {
            rounds.reduce(0) { total, r in total + kinds.reduce(0) { $0 + roundBytes[r][$1.rawValue] } }
        }
        let replication: [Kind] = [.summary, .batch, .receipt]
        if active > 0 {
            let per = Double(n * active)
            b.activeRounds = active
            b.activePerNodePerRound = Double(sum(1...active, Kind.allCases)) / per
            b.activeReplicationPerNodePerRound = Double(sum(1...active, replication)) / per
            b.activeMembershipPerNodePerRound = Double(sum(1...active, [.membership])) / per
        }
        if let q = quietSince, round > q {
            let idle = (q + 1)...round
            let per = Double(n * idle.count)
            b.idleRounds = idle.count
            b.idlePerNodePerRound = Double(sum(idle, Kind.allCases)) / per
            b.idleReplicationPerNodePerRound = Double(sum(idle, replication)) / per
            b.idleMembershipPerNodePerRound = Double(sum(idle, [.membership])) / per
            let summaries = idle.reduce(0) { $0 + roundMessages[$1][Kind.summary.rawValue] }
            if summaries > 0 { b.idlePerShareExchange = Double(sum(idle, [.summary])) / Double(summaries) }
        }
        b.total = byKind { sum(0...round, [$0]) }
        return b
    }

    func auditReceipts() -> FederationSimulator.Receipts {
        var out = FederationSimulator.Receipts()
        out.exchanges = exchangeOrder.count
        for id in exchangeOrder {
            guard let x = exchanges[id] else { continue }
            let receiverHolds = nodes[x.receiver].receipts.contains(id)
            let senderHolds = nodes[x.sender].countersigned.contains(id)
            if receiverHolds && senderHolds {
                out.matched += 1
                if x.interrupted { out.interrupted += 1 }
            } else if endedReceipts.contains(id) {
                out.ended += 1
            } else if !nodes[x.receiver].up || !nodes[x.sender].up {
                out.open += 1
            } else {
                out.mismatched += 1
            }
        }
        return out
    }

    func firstMismatch() -> String? {
        for id in exchangeOrder {
            guard let x = exchanges[id], nodes[x.receiver].up, nodes[x.sender].up, !endedReceipts.contains(id) else { continue }
            let receiverHolds = nodes[x.receiver].receipts.contains(id)
            let senderHolds = nodes[x.sender].countersigned.contains(id)
            let what = "receipt \(id.prefix(12)) (\(cities[x.sender]) → \(cities[x.receiver]))"
            if senderHolds && !receiverHolds { return "\(what) is countersigned in \(cities[x.sender])'s ledger but missing from \(cities[x.receiver])'s" }
            if !senderHolds { return "\(what) was never countersigned by \(cities[x.sender])" }
        }
        return nil
    }

    func convergenceCheck(_ r: FederationSimulator.Result) -> FederationSimulator.Check {
        let live = (0..<n).filter { nodes[$0].up && !revokedMembers.contains($0) && $0 <= shareMembers }
        // The owner's records as members must hold them: its private field left out.
        // With a row filter: the live records in it (tombstones of rows members held stay where
        // they were sent; rows they never held are nowhere).
        func visible(_ i: Int) -> [String: RecordState] {
            if config.rowFilter {
                let live = nodes[i].records.filter { $0.value.isLive }
                return i == Self.owner ? live.filter { currentFilter.admits($0.value) }.mapValues { $0.projected(onto: currentView) } : live
            }
            // Tombstones are collected at different times at different nodes: live records compare.
            let live = nodes[i].records.filter { $0.value.isLive }
            return i == Self.owner ? live.mapValues { $0.projected(onto: currentView) } : live
        }
        let reference = visible(Self.owner)
        var differing: [String] = []
        for i in live where i != Self.owner {
            let mine = visible(i)
            guard mine != reference else { continue }
            let keys = Set(mine.keys).union(reference.keys)
            let wrong = keys.filter { mine[$0] != reference[$0] }.count
            differing.append("\(cities[i]) (\(wrong) records)")
        }
        let passed = differing.isEmpty && r.undelivered == 0
        let detail: String
        if passed {
            detail = "\(live.count) live nodes hold identical states of \(reference.count) records; every batch reached every node"
        } else if differing.isEmpty {
            detail = "\(r.undelivered) writes never reached every node"
        } else {
            let listed = differing.prefix(3).joined(separator: ", ") + (differing.count > 3 ? ", …" : "")
            detail = "\(differing.count) of \(live.count) live nodes differ from the owner's view: \(listed)"
                + (r.undelivered > 0 ? "; \(r.undelivered) writes never reached every node" : "")
                + (firstRefusal.map { "; \($0)" } ?? "")
        }
        return .init(name: "convergence", passed: passed, detail: detail)
    }

    /// After the terms narrowed or agreements were revoked: no live member holds, in its replica
    /// or in a stored batch it has not compacted, a cell of a field outside the view in force;
    /// a member whose agreement was revoked with on_revoke: purge holds nothing of the share.
    func termsCheck() -> FederationSimulator.Check {
        var outside = 0, stored = 0, kept = 0
        var example: String?
        let keep = Set(Self.fields.filter { currentView.contains($0.id) }.map(\.name))
        for i in 0..<n where i != Self.owner && nodes[i].up {
            if revokedMembers.contains(i) {
                if !nodes[i].records.isEmpty || !nodes[i].purged {
                    kept += 1
                    if example == nil { example = "\(cities[i]) keeps \(nodes[i].records.count) records after its agreement was revoked with on_revoke: purge" }
                }
                continue
            }
            for (key, state) in nodes[i].records {
                for c in state.cells where !currentView.contains(c.field) {
                    outside += 1
                    if example == nil { example = "\(cities[i]) holds field \(c.field) of \(key), outside the narrowed view" }
                }
            }
            for o in 0..<n where nodes[i].held[o] > 0 {
                for seq in 1...nodes[i].held[o] {
                    let gone = nodes[i].compacted[Self.batchID(o, seq)] ?? []
                    for (x, r) in chains[o][Int(seq) - 1].body.records.enumerated() where !gone.contains(x) {
                        guard Erasure.outsideView(r.state, keep: keep, name: { Self.schema.field(id: $0)?.name }) else { continue }
                        stored += 1
                        if example == nil { example = "\(cities[i]) keeps \(r.key) with a field outside the view in \(cities[o])'s batch \(seq)" }
                    }
                }
            }
        }
        let passed = outside + stored + kept == 0
        return .init(
            name: "current terms", passed: passed,
            detail: passed
                ? "no member holds a cell outside the view in force (fields \(currentView.sorted().map(String.init).joined(separator: ","))), in its replica or its stored batches; \(revokedMembers.count) revoked members hold nothing"
                : "\(outside) cells in replicas and \(stored) stored records outside the view, \(kept) revoked members keeping data: \(example ?? "")")
    }

    /// No member holds a live row the owner's filter keeps out, once everything was delivered.
    func retractionCheck() -> FederationSimulator.Check {
        var outside = 0
        var example: String?
        for i in 0..<n where i != Self.owner && nodes[i].up && !revokedMembers.contains(i) {
            for (key, state) in nodes[i].records where state.isLive {
                guard let owner = nodes[Self.owner].records[key], owner.isLive, currentFilter.admits(owner) else {
                    outside += 1
                    if example == nil { example = "\(cities[i]) holds \(key), which the owner's filter keeps out" }
                    continue
                }
            }
        }
        let inFilter = nodes[Self.owner].records.values.filter { $0.isLive && currentFilter.admits($0) }.count
        return .init(
            name: "retraction", passed: outside == 0,
            detail: outside == 0
                ? "no member holds a row outside the filter (\(inFilter) of \(nodes[Self.owner].records.count) records are in it)"
                : "\(outside) rows held outside the filter: \(example ?? "")")
    }

    func viewCheck() -> FederationSimulator.Check {
        // Also what the nodes hold now, in case a cell arrived some way the merge hook did not see.
        var held = 0
        for i in 0..<n where i != Self.owner {
            for s in nodes[i].records.values { held += s.cells.filter { !Self.view.contains($0.field) }.count }
        }
        let passed = viewViolations == 0 && held == 0
        let detail = passed
            ? "no node but the owner ever held a cell outside the view (fields \(Self.view.sorted().map(String.init).joined(separator: ","))); \(result.messages.refusedBatches) batches refused by receivers"
            : "\(viewViolations) cells outside the view merged by members, \(held) held at the end: \(firstViewViolation ?? "")"
        return .init(name: "view confinement", passed: passed, detail: detail)
    }

    func receiptCheck(_ x: FederationSimulator.Receipts) -> FederationSimulator.Check {
        let passed = x.mismatched == 0 && disputes == 0
        var detail = passed
            ? "\(x.matched) exchanges receipted and countersigned on both sides"
            : "\(x.mismatched) of \(x.exchanges) exchanges not matched on both sides: \(firstMismatch() ?? "")"
        if disputes > 0 { detail += "; \(disputes) receipts disputed by their sender: \(firstDispute ?? "")" }
        if x.interrupted > 0 { detail += " (\(x.interrupted) interrupted by a crash, completed after the restart)" }
        if x.open > 0 { detail += " (\(x.open) still open: a party is down)" }
        if x.ended > 0 { detail += " (\(x.ended) left open: a party's agreement was revoked)" }
        return .init(name: "receipts", passed: passed, detail: detail)
    }

    /// No live node keeps, in any batch it holds, a record its own deletion of the key overrides
    /// (the values of a deleted record exist nowhere once the run has been quiet for a round).
    func erasureCheck() -> FederationSimulator.Check {
        var kept = 0, deleted = 0, compacted = 0
        var example: String?
        var keys = 0
        for i in 0..<n where nodes[i].up {
            // Deletions held, and those collected here (then the deletion's own records must be
            // gone too: the key is nowhere).
            var deletions: [(key: String, hlc: HLC, collected: Bool)] = nodes[i].records.compactMap { key, state in state.tombstone.map { (key, $0.hlc, false) } }
            // A key collected within the last pass interval may not have had its pass yet (the bound).
            for (key, at) in nodes[i].collected where nodes[i].records[key] == nil && round - at > Self.passBound {
                if let e = nodes[i].erasures[key] { deletions.append((key, e.hlc, true)) }
            }
            for (key, t, collected) in deletions {
                deleted += 1
                if collected { keys += 1 }
                for occ in keyIndex[key] ?? [] where occ.seq <= nodes[i].held[occ.origin] {
                    let stored = chains[occ.origin][Int(occ.seq) - 1].body.records[occ.index].state
                    guard Erasure.compacts(stored, deletedAt: t, tombstoneCollected: collected) else { continue }
                    if nodes[i].compacted[Self.batchID(occ.origin, occ.seq)]?.contains(occ.index) == true {
                        compacted += 1
                    } else {
                        kept += 1
                        if example == nil { example = "\(cities[i]) keeps \(key) in \(cities[occ.origin])'s batch \(occ.seq), deleted at \(t)" }
                    }
                }
            }
        }
        // What left the share's view: retracted keys' records no newer than the retraction.
        for i in 0..<n where nodes[i].up && !nodes[i].purged {
            for (key, e) in nodes[i].shareErasures {
                for occ in keyIndex[key] ?? [] where occ.seq <= nodes[i].held[occ.origin] {
                    let stored = chains[occ.origin][Int(occ.seq) - 1].body.records[occ.index].state
                    guard Erasure.compacts(stored, deletedAt: e.hlc, tombstoneCollected: false) else { continue }
                    if nodes[i].compacted[Self.batchID(occ.origin, occ.seq)]?.contains(occ.index) == true {
                        compacted += 1
                    } else {
                        kept += 1
                        if example == nil { example = "\(cities[i]) keeps \(key) in \(cities[occ.origin])'s batch \(occ.seq), retracted at \(e.hlc)" }
                    }
                }
            }
        }
        return .init(
            name: "erasure", passed: kept == 0,
            detail: kept == 0
                ? "\(compacted) stored records of \(deleted) deleted keys (\(keys) collected: their deletions went too) and of retracted ones (summed over nodes) compacted; none kept"
                : "\(kept) stored records of deleted keys kept: \(example ?? "")")
    }

    /// Every batch a node took is in its sender's ledger as sent to it (the sender ledgers each
    /// send before it goes out, whether or not a receipt ever comes back).
    func exchangeLedgerCheck() -> FederationSimulator.Check {
        var received = 0, unmatched = 0
        var example: String?
        for i in 0..<n {
            for id in nodes[i].receivedEntries {
                received += 1
                let sender = Int(id >> 44), origin = Int((id >> 24) & 0xF_FFFF), seq = id & 0xFF_FFFF
                guard !nodes[sender].sentEntries.contains(Self.exchangeID(i, origin, seq)) else { continue }
                unmatched += 1
                if example == nil { example = "\(cities[i]) received \(cities[origin])'s batch \(seq) from \(cities[sender]), whose ledger never sent it" }
            }
        }
        return .init(
            name: "exchange ledgers", passed: unmatched == 0,
            detail: unmatched == 0
                ? "\(received) batches received, each ledgered as sent by its sender"
                : "\(unmatched) of \(received) batches received have no sent entry at their sender: \(example ?? "")")
    }

    /// Once the last disruption is over, no live node holds a live node dead for more than
    /// `healRounds`: not a death the disruption left, not a false one under loss later.
    func healCheck(_ r: FederationSimulator.Result) -> FederationSimulator.Check {
        let from = r.disruptionEndRound.map { "the disruption ended (round \($0))" } ?? "the start"
        let atEnd = r.membershipDeadPairs == 0 ? "none at the end" : "\(r.membershipDeadPairs) ordered pairs still held dead at the end, none longer than that"
        return .init(
            name: "membership heals", passed: r.membershipLongestDead <= config.healRounds,
            detail: "after \(from) no live node held a live node dead longer than \(r.membershipLongestDead) rounds (bound \(config.healRounds)); \(atEnd)")
    }

    func orderCheck() -> FederationSimulator.Check {
        let takes = chains.joined().reduce(0) { $0 + (shareMembers - $1.missing) }
        return .init(
            name: "batch order", passed: orderViolations == 0,
            detail: orderViolations == 0
                ? "\(takes) batches taken, each the next of its origin's chain"
                : "\(orderViolations) batches taken out of order: \(firstOrderViolation ?? "")")
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }

    /// Uniform in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
