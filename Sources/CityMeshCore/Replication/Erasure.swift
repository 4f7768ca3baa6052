/// Erasure: what a party may compact out of the batches it keeps once a record is deleted.
///
/// Every party keeps the batches of a share to relay them, so a deleted record's old values would
/// live on in every copy. A batch in the compactable layout (`SignedBatch.compacted`) can have
/// records replaced by their salted digests without breaking its signature, its hash or the
/// chain. The rule here says which records: the node runs it on its stored batches, and the
/// simulator on its model of them, so the invariant "an erased value exists nowhere after the
/// compaction bound" is checked against the rule that runs in production.
public enum Erasure {
    /// Whether a stored record of a key deleted at `deletedAt` (the tombstone's clock) may be
    /// compacted: every cell it carries is no newer than the deletion (so the deletion overrides
    /// all of them everywhere), and so is its own tombstone. A record without cells — the
    /// deletion itself, or a retraction — carries the key and no values; it stays until the
    /// tombstone is collected (`tombstoneCollected`: every party holds it), so a party that has
    /// not merged the deletion yet still gets it.
    public static func compacts(_ state: RecordState, deletedAt: HLC, tombstoneCollected: Bool) -> Bool {
        guard state.cells.allSatisfy({ $0.stamp.hlc <= deletedAt }) else { return false }
        if let t = state.tombstone, t.hlc > deletedAt { return false }
        return !state.cells.isEmpty || tombstoneCollected
    }

    /// Whether a stored record of a share whose view narrowed to `keep` (field names) may be
    /// compacted: it carries a cell of a field no longer in the view (`name` maps the batch's
    /// field ids to names; an id it does not name counts as outside). The owner sends the
    /// records' current states again under the new view, so a party that later pulls the
    /// history from anyone gets them whole.
    public static func outsideView(_ state: RecordState, keep: Set<String>, name: (Int) -> String?) -> Bool {
        state.cells.contains { c in name(c.field).map { !keep.contains($0) } ?? true }
    }

    /// What a party leaves out of a share's stored batches: the rule of a compaction pass, and of
    /// a send before the pass has run — a stored batch goes out with these records as their
    /// digests (the compactable layout keeps its hash and signature), so what a receiver's
    /// current terms exclude is not sent again while it waits for the pass. The node builds it
    /// from its store (`erasures`, `share_erasures`), the simulator from its model of them.
    public struct Screen: Sendable, Equatable {
        public struct Deletion: Sendable, Equatable {
            public var hlc: HLC
            /// Every party held it and the tombstone was collected: the deletion's own record goes too.
            public var collected: Bool
            public init(hlc: HLC, collected: Bool) {
                self.hlc = hlc
                self.collected = collected
            }
        }
        /// Deleted keys of the share's dataset.
        public var deleted: [String: Deletion]
        /// Keys that left the share's view (retractions), with the newest clock their state had.
        public var retracted: [String: HLC]
        /// Keys whose current row the share's row filter leaves out, known before their retraction
        /// is cut (the owner while it re-judges what it sent under new terms): every record of
        /// theirs that carries values.
        public var outside: Set<String>
        /// The view narrowed to these field names.
        public var keep: Set<String>?

        public init(deleted: [String: Deletion] = [:], retracted: [String: HLC] = [:], outside: Set<String> = [], keep: Set<String>? = nil) {
            self.deleted = deleted
            self.retracted = retracted
            self.outside = outside
            self.keep = keep
        }

        /// Nothing to leave out.
        public var isEmpty: Bool { deleted.isEmpty && retracted.isEmpty && outside.isEmpty && keep == nil }

        /// Whether the stored record `state` of `key` is left out (`name` maps the batch's field
        /// ids to names; it is read only under a narrowed view).
        public func erases(_ key: String, _ state: RecordState, name: (Int) -> String?) -> Bool {
            if let d = deleted[key], Erasure.compacts(state, deletedAt: d.hlc, tombstoneCollected: d.collected) { return true }
            if let t = retracted[key], Erasure.compacts(state, deletedAt: t, tombstoneCollected: false) { return true }
            if outside.contains(key), !state.cells.isEmpty { return true }
            if let keep, Erasure.outsideView(state, keep: keep, name: name) { return true }
            return false
        }

        /// `signed` as it may go out: the records this screen leaves out replaced by their digests
        /// (nil: nothing to leave out, or a batch in the first layout, which cannot be compacted).
        public func apply(to signed: SignedBatch) -> SignedBatch? {
            guard !isEmpty, signed.isCompactable else { return nil }
            var names: [Int: String] = [:]
            if keep != nil {
                guard let fields = try? signed.decode().fields else { return nil }
                names = Dictionary(fields.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
            }
            return try? signed.compacted(erasing: { key, state in erases(key, state, name: { names[$0] }) })
        }
    }

    /// How long a compaction pass may wait after the last one: 20 times the last pass's duration
    /// (so it takes at most ~5% of one core on a large share), at least `minimum`.
    public static func nextPass(after lastDurationMillis: UInt64, minimum: UInt64 = 2_000) -> UInt64 {
        Swift.max(minimum, lastDurationMillis.multipliedReportingOverflow(by: 20).overflow ? .max : lastDurationMillis * 20)
    }
}
