/// The replicated state of one record: a last-writer-wins register per field plus a tombstone.
///
/// The state is a join-semilattice: ``merge(_:)`` keeps, per field, the cell with the greatest
/// stamp, and the greatest tombstone; then it drops every cell not newer than the tombstone.
/// That makes merge commutative, associative and idempotent, and means a delete can never be
/// undone by an older write, while a write made after the delete brings the record back.
public struct RecordState: Hashable, Sendable {
    /// Cells sorted by field id, at most one per field, all newer than ``tombstone``.
    public private(set) var cells: [Cell]
    public private(set) var tombstone: Stamp?

    public init(cells: [Cell] = [], tombstone: Stamp? = nil) {
        var byField: [Int: Cell] = [:]
        for c in cells {
            if let old = byField[c.field], !(old.stamp < c.stamp) { continue }
            byField[c.field] = c
        }
        self.cells = byField.values.sorted { $0.field < $1.field }
        self.tombstone = nil
        if let tombstone { self.applyTombstone(tombstone) }
    }

    /// A state from cells already sorted by field id with no field twice (the hot import path).
    public init(sortedCells: [Cell], tombstone: Stamp? = nil) {
        assert(zip(sortedCells, sortedCells.dropFirst()).allSatisfy { $0.field < $1.field }, "cells must be sorted and unique")
        assert(sortedCells.allSatisfy { Stamp.precedes(tombstone, $0.stamp) }, "cells must be newer than the tombstone")
        self.cells = sortedCells
        self.tombstone = tombstone
    }

    /// A record is live when some cell was written after its last delete.
    /// Every put writes the key cell, so a record put after a delete is live again.
    public var isLive: Bool { !cells.isEmpty }

    public func cell(field: Int) -> Cell? { cells.first { $0.field == field } }

    /// The newest clock the state carries (its cells and its tombstone; zero for an empty state).
    public var newestClock: HLC { Swift.max(cells.map(\.stamp.hlc).max() ?? .zero, tombstone?.hlc ?? .zero) }

    /// Joins `other` into this state; returns whether anything changed.
    @discardableResult
    public mutating func merge(_ other: RecordState) -> Bool {
        var changed = false
        if let t = other.tombstone, Stamp.precedes(tombstone, t) {
            tombstone = t
            changed = true
            // Cells the newer delete covers are gone for good.
            cells.removeAll { !(t < $0.stamp) }
        }
        guard !other.cells.isEmpty else { return changed }
        let floor = tombstone
        @inline(__always) func survives(_ c: Cell) -> Bool { Stamp.precedes(floor, c.stamp) }
        if cells.isEmpty {
            for c in other.cells where survives(c) {
                cells.append(c)
                changed = true
            }
            return changed
        }
        var out: [Cell] = []
        out.reserveCapacity(max(cells.count, other.cells.count))
        var i = 0
        var j = 0
        let mine = cells
        let theirs = other.cells
        while i < mine.count || j < theirs.count {
            if j == theirs.count || (i < mine.count && mine[i].field < theirs[j].field) {
                out.append(mine[i])
                i += 1
            } else if i == mine.count || theirs[j].field < mine[i].field {
                if survives(theirs[j]) {
                    out.append(theirs[j])
                    changed = true
                }
                j += 1
            } else {
                if mine[i].stamp < theirs[j].stamp {
                    out.append(theirs[j])
                    changed = true
                } else {
                    out.append(mine[i])
                }
                i += 1
                j += 1
            }
        }
        cells = out
        return changed
    }

    /// The join of two states, as a pure function.
    public static func merged(_ a: RecordState, _ b: RecordState) -> RecordState {
        var out = a
        out.merge(b)
        return out
    }

    private mutating func applyTombstone(_ t: Stamp) {
        merge(RecordState(cells: [], tombstoneOnly: t))
    }

    private init(cells: [Cell], tombstoneOnly: Stamp) {
        self.cells = cells
        self.tombstone = tombstoneOnly
    }

    /// A state holding only a delete at `stamp`.
    public static func deletion(at stamp: Stamp) -> RecordState {
        RecordState(cells: [], tombstoneOnly: stamp)
    }
}
