/// When a merge keeps one write and drops another that was made without knowledge of it: a
/// conflict, kept for an admin to see and settle (DESIGN.md §3). Merging itself stays
/// last-writer-wins; this only decides what to report.
///
/// Knowledge comes from the batches' `seen` maps: a city that had merged city X's cells up to
/// clock `t` when it cut a batch knew every X-cell stamped at or before `t` (X's batches are
/// taken in order). An overwrite is a conflict when the winner's writer had not seen the loser.
public enum ConflictRule {
    public struct Conflict: Sendable, Equatable {
        public let field: Int
        public let loser: Cell
        public let winner: Cell
    }

    /// The conflicts merging `incoming` (from a batch of `origin`, cut with knowledge
    /// `originSeen`) into `stored` would create at node `me`, whose own knowledge before the merge
    /// is `mySeen`. `latestSeen(city)` is the knowledge in the last batch taken from `city`.
    public static func find(
        stored: RecordState, incoming: RecordState, origin: CitySlug, originSeen: [CitySlug: HLC], me: CitySlug, mySeen: [CitySlug: HLC],
        latestSeen: (CitySlug) -> [CitySlug: HLC]?
    ) -> [Conflict] {
        guard !stored.cells.isEmpty, !incoming.cells.isEmpty else { return [] }
        func knowledge(of writer: CitySlug) -> [CitySlug: HLC]? {
            if writer == origin { return originSeen }
            if writer == me { return mySeen }
            return latestSeen(writer)
        }
        var out: [Conflict] = []
        var i = 0
        for theirs in incoming.cells {
            while i < stored.cells.count && stored.cells[i].field < theirs.field { i += 1 }
            guard i < stored.cells.count, stored.cells[i].field == theirs.field else { continue }
            let mine = stored.cells[i]
            guard mine.stamp != theirs.stamp, mine.stamp.city != theirs.stamp.city, mine.value != theirs.value else { continue }
            let (winner, loser) = mine.stamp < theirs.stamp ? (theirs, mine) : (mine, theirs)
            // The winner's writer must not have known the loser. Unknown knowledge: say nothing.
            guard let known = knowledge(of: winner.stamp.city) else { continue }
            if let k = known[loser.stamp.city], !(k < loser.stamp.hlc) { continue }
            // The loser must be news to whoever held it: a loser we had already merged once and
            // see again through a relay was reported then (or knowingly overwritten).
            if loser == theirs, let k = mySeen[loser.stamp.city], !(k < loser.stamp.hlc), winner.stamp.city != me { continue }
            out.append(Conflict(field: theirs.field, loser: loser, winner: winner))
        }
        return out
    }
}

extension RecordState {
    /// The part of this state a share's view lets leave the node: only cells of `fields`, plus
    /// the tombstone. (The row filter is decided by the caller, on the whole record.)
    public func projected(onto fields: Set<Int>) -> RecordState {
        RecordState(sortedCells: cells.filter { fields.contains($0.field) }, tombstone: tombstone)
    }

    /// The values of the live cells by field id.
    public func value(field: Int) -> Value? { cell(field: field)?.value }
}

extension Schema {
    /// A member's copy of an owner's schema: the fields a share lets it see, with the owner's
    /// numbering, so cells need no translation. `keyField` must be among them.
    public init(replicating fields: [Field], keyField: String) throws {
        guard fields.contains(where: { $0.name == keyField }) else {
            throw CityMeshError(.invalidSchema, "the replicated fields do not include the key field '\(keyField)'")
        }
        self.fields = fields.sorted { $0.id < $1.id }
        self.keyField = keyField
    }

    /// Adds a field the owner numbered (from a batch); false if it was already there.
    public mutating func adopt(_ field: Field) throws -> Bool {
        if let existing = self.field(id: field.id) {
            guard existing.name == field.name, existing.type == field.type else {
                throw CityMeshError(.invalidSchema, "field \(field.id) is '\(existing.name)' (\(existing.type.rawValue)) here but '\(field.name)' (\(field.type.rawValue)) in the batch")
            }
            return false
        }
        guard self.field(named: field.name) == nil else {
            throw CityMeshError(.invalidSchema, "field '\(field.name)' has id \(self.field(named: field.name)!.id) here but \(field.id) in the batch")
        }
        fields.append(field)
        fields.sort { $0.id < $1.id }
        return true
    }
}
