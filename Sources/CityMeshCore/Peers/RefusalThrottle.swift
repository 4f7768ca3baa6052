/// Which refusals of peers' messages go into the ledger.
///
/// Every refusal is evidence, but a ledger anyone can append to without bound is a disk anyone
/// can fill (threat model G11): a member repeating a bad message, or a stranger reaching the
/// port, must not grow it faster than an operator can read it. So the first refusal of each
/// (peer, kind, reason) in an interval is ledgered, and the ones like it that follow are only
/// counted — the next ledgered one says how many were left out. A reason's digits are ignored
/// ("batch suzhou:17 refused" and "…:18…" are alike). On top, each (peer, kind) gets at most
/// `perPeer` entries an interval, so reasons that differ each time (a share name chosen by the
/// sender) cannot get around it. Time is passed in (microseconds), so the rule runs the same in
/// the node and in tests.
public struct RefusalThrottle: Sendable {
    public let interval: Int64
    public let perPeer: Int
    public let capacity: Int

    struct Slot {
        var since: Int64
        var suppressed: Int
    }
    var slots: [String: Slot] = [:]
    var budgets: [String: (since: Int64, used: Int, suppressed: Int)] = [:]

    public init(interval: Int64 = 60_000_000, perPeer: Int = 20, capacity: Int = 4096) {
        self.interval = interval
        self.perPeer = perPeer
        self.capacity = capacity
    }

    /// nil: leave this refusal out of the ledger (it is counted); otherwise ledger it, noting how
    /// many like it (same peer and kind) were left out since the last one that was ledgered.
    public mutating func admit(peer: String, kind: String, reason: String, now: Int64) -> Int? {
        let budgetKey = "\(peer) \(kind)"
        var budget = budgets[budgetKey] ?? (now, 0, 0)
        if now - budget.since >= interval { budget = (now, 0, budget.suppressed) }
        let key = "\(budgetKey) \(Self.reasonClass(reason))"
        if let slot = slots[key], now - slot.since < interval {
            slots[key]?.suppressed += 1
            budget.suppressed += 1
            store(budget, at: budgetKey, now: now)
            return nil
        }
        guard budget.used < perPeer else {
            budget.suppressed += 1
            store(budget, at: budgetKey, now: now)
            return nil
        }
        let leftOut = budget.suppressed
        budget.used += 1
        budget.suppressed = 0
        store(budget, at: budgetKey, now: now)
        if slots[key] == nil, slots.count >= capacity {
            slots = slots.filter { now - $0.value.since < interval }
            if slots.count >= capacity, let oldest = slots.min(by: { $0.value.since < $1.value.since }) { slots[oldest.key] = nil }
        }
        slots[key] = Slot(since: now, suppressed: 0)
        return leftOut
    }

    /// Refusals counted but not ledgered, over every peer and kind, since each one's last entry.
    public var suppressed: Int { budgets.values.reduce(0) { $0.saturatingAdd($1.suppressed) } }

    mutating func store(_ budget: (since: Int64, used: Int, suppressed: Int), at key: String, now: Int64) {
        if budgets[key] == nil, budgets.count >= capacity {
            budgets = budgets.filter { now - $0.value.since < interval }
            if budgets.count >= capacity, let oldest = budgets.min(by: { $0.value.since < $1.value.since }) { budgets[oldest.key] = nil }
        }
        budgets[key] = budget
    }

    /// A reason without its digits, at most 80 characters: the class refusals are counted in.
    static func reasonClass(_ reason: String) -> String { String(reason.lazy.filter { !$0.isNumber }.prefix(80)) }
}
