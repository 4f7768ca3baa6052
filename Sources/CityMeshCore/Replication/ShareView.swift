/// What a share's members may see of its records — the view's fields and the row filter — and
/// the one rule by which an owner decides, at send time, what goes out about a record. The node's
/// owner (`ReplicationService.cutOwner`) and the simulator both cut with it.
///
/// The owner remembers which keys its members were sent and not told to drop since (*visible*).
/// Then, for a record's state now:
///
/// | the record now | visible before | goes out | visible after |
/// | --- | --- | --- | --- |
/// | live, in the filter | yes | the change, projected onto the view | yes |
/// | live, in the filter | no | the whole state, projected | yes |
/// | live, outside the filter | yes | a **retraction** | no |
/// | live, outside the filter | no | nothing | no |
/// | deleted | yes | the deletion | no |
/// | deleted | no | nothing (a hidden row's deletion would leak its key and time) | no |
///
/// A retraction is a record with no cells and no tombstone (``isRetraction(_:)``); only the
/// owner's retractions count, and a member drops the key from its replica without a trace.
public struct ShareView: Sendable {
    /// Field ids of the view (the key field among them).
    public let fields: Set<Int>
    /// The row filter, if the share has one.
    public let filter: RowFilter?
    /// The name → id mapping the filter reads fields through.
    let fieldID: @Sendable (String) -> Int?

    public init(fields: Set<Int>, filter: RowFilter?, schema: Schema) {
        self.fields = fields
        self.filter = filter
        self.fieldID = { schema.field(named: $0)?.id }
    }

    /// What goes out about a record.
    public enum Outgoing: Sendable, Equatable {
        /// These cells (and tombstone).
        case send(RecordState)
        /// Drop the key: it left the view.
        case retract
        /// Nothing.
        case skip
    }

    /// Whether a live state passes the row filter.
    public func admits(_ state: RecordState) -> Bool {
        guard let filter else { return true }
        return filter.matches { name in fieldID(name).flatMap { state.value(field: $0) } }
    }

    /// `current` is the record's whole state at the owner now, `change` what changed since the
    /// members were last sent it (the node sends whole states: `change == current`), and
    /// `wasVisible` whether they hold it. Returns what goes out and whether they hold it after.
    ///
    /// When the share's *terms* changed (a new filter or view), the owner goes over the records
    /// it had sent under the old ones with `change: nil` (the record itself did not change):
    /// a held record still in view gets only the cells of `added` fields (new in the view), one
    /// now outside the filter is retracted, one now inside and not held goes out whole.
    public func outgoing(current: RecordState, change: RecordState?, wasVisible: Bool, added: Set<Int> = []) -> (Outgoing, visible: Bool) {
        guard current.isLive else {
            // A deletion goes only to members that hold the record.
            guard wasVisible, let tombstone = current.tombstone else { return (.skip, false) }
            return (.send(RecordState(tombstone: tombstone)), false)
        }
        guard admits(current) else { return (wasVisible ? .retract : .skip, false) }
        let projected: RecordState
        if !wasVisible {
            projected = current.projected(onto: fields)
        } else if let change {
            projected = change.projected(onto: fields)
        } else {
            projected = RecordState(sortedCells: current.cells.filter { added.contains($0.field) && fields.contains($0.field) }, tombstone: nil)
        }
        guard projected.isLive || projected.tombstone != nil else { return (.skip, wasVisible) }
        return (.send(projected), true)
    }

    /// A retraction on the wire.
    public static let retraction = RecordState()

    /// Whether a batch record is a retraction (no cells, no tombstone).
    public static func isRetraction(_ record: ChangeBatch.Record) -> Bool {
        record.state.cells.isEmpty && record.state.tombstone == nil
    }
}
