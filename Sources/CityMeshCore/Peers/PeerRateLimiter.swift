/// Per-peer, per-channel rate limits: token buckets, one per (peer, channel). Each channel's
/// messages from one peer are admitted at up to `perSecond` a second, in bursts of up to `burst`;
/// the shell drops the rest and counts them (`citymesh_peer_rate_limited_total`, and per peer in
/// `citymesh peers`). With the per-peer inbox bounds this caps the work any one member can ask of
/// a node. Time is passed in (microseconds), so the rule is the same in the node and in tests.
public struct PeerRateLimiter: Sendable {
    public struct Limit: Sendable, Equatable {
        public var perSecond: Int
        public var burst: Int
        public init(perSecond: Int, burst: Int? = nil) {
            self.perSecond = max(1, perSecond)
            self.burst = max(1, burst ?? perSecond * 2)
        }
    }

    /// The channels by name, as `citymesh.yaml` (`peers.rate_limits`) and the metrics name them.
    public static let channels: [(name: String, channel: UInt16)] = [
        ("membership", Membership.Message.channel), ("ledger", LedgerWire.channel), ("agreements", Agreement.channel), ("replication", ReplicationWire.channel),
        ("addresses", AddressWire.channel),
    ]

    public static func name(of channel: UInt16) -> String { channels.first { $0.channel == channel }?.name ?? "other" }

    /// Limits generous for honest traffic: an initial sync of a million records is about 100
    /// batches a second, an owner sends every offer and revocation on connect, a witness asks a
    /// handful of ledger questions every 10 s.
    public static let defaults: [String: Limit] = [
        "membership": Limit(perSecond: 200, burst: 400), "ledger": Limit(perSecond: 200, burst: 1_000),
        "agreements": Limit(perSecond: 100, burst: 2_000), "replication": Limit(perSecond: 5_000, burst: 20_000),
        // A catch-up of 10,000 cities' records is 1,250 messages; afterwards only changes.
        "addresses": Limit(perSecond: 100, burst: 2_000),
        "other": Limit(perSecond: 10, burst: 20),
    ]

    public var limits: [String: Limit]
    /// Buckets kept at most; idle ones (full again) are dropped first when it is reached.
    public let capacity: Int

    struct Bucket {
        var tokens: Double
        var at: Int64
    }
    var buckets: [String: Bucket] = [:]
    /// Messages refused, per peer and channel name, since start.
    public private(set) var refused: [CitySlug: [String: Int]] = [:]

    public init(limits: [String: Limit] = defaults, capacity: Int = 16_384) {
        self.limits = Self.defaults.merging(limits) { _, configured in configured }
        self.capacity = capacity
    }

    /// Whether a message from `peer` on `channel` at `now` is within its limit (and counts it).
    public mutating func admit(_ peer: CitySlug, channel: UInt16, now: Int64) -> Bool {
        let name = Self.name(of: channel)
        let limit = limits[name] ?? Self.defaults["other"] ?? Limit(perSecond: 10)
        let key = "\(peer) \(name)"
        var bucket = buckets[key] ?? Bucket(tokens: Double(limit.burst), at: now)
        let elapsed = Double(max(0, now.saturatingSubtract(bucket.at))) / 1_000_000
        bucket.tokens = min(Double(limit.burst), bucket.tokens + elapsed * Double(limit.perSecond))
        bucket.at = now
        let admitted = bucket.tokens >= 1
        if admitted { bucket.tokens -= 1 }
        if buckets[key] == nil, buckets.count >= capacity { evict(now: now) }
        buckets[key] = bucket
        if !admitted, refused[peer] != nil || refused.count < capacity {
            refused[peer, default: [:]][name, default: 0].addSaturating(1)
        }
        return admitted
    }

    mutating func evict(now: Int64) {
        // Buckets that have refilled are as good as new: forgetting them changes nothing.
        buckets = buckets.filter { key, b in
            let name = String(key.split(separator: " ").last ?? "")
            let limit = limits[name] ?? Limit(perSecond: 10)
            return b.tokens + Double(max(0, now.saturatingSubtract(b.at))) / 1_000_000 * Double(limit.perSecond) < Double(limit.burst)
        }
        if buckets.count >= capacity, let oldest = buckets.min(by: { $0.value.at < $1.value.at }) { buckets[oldest.key] = nil }
    }
}
