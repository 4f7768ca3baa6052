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

    /// How long a compaction pass may wait after the last one: 20 times the last pass's duration
    /// (so it takes at most ~5% of one core on a large share), at least `minimum`.
    public static func nextPass(after lastDurationMillis: UInt64, minimum: UInt64 = 2_000) -> UInt64 {
        Swift.max(minimum, lastDurationMillis.multipliedReportingOverflow(by: 20).overflow ? .max : lastDurationMillis * 20)
    }
}
