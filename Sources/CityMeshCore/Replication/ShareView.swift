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

    /// One changed record as the owner's store lists it since the share's cursor: its key, its
    /// sequence number and its whole state now.
    public struct Change: Sendable, Equatable {
        public let key: String
        public let seq: Int64
        public let state: RecordState
        public init(key: String, seq: Int64, state: RecordState) {
            self.key = key
            self.seq = seq
            self.state = state
        }
    }

    /// One cut of the owner's next batch for its members.
    public struct Cut: Sendable, Equatable {
        public struct Retracted: Sendable, Equatable {
            public let key: String
            /// The newest clock the record's state had: its erasure's bound (`Erasure.Screen.retracted`).
            public let hlc: HLC
        }
        public var records: [ChangeBatch.Record] = []
        public var retracted: [Retracted] = []
        /// Keys the members hold after this batch and did not before, and the reverse (filtered
        /// shares, or while re-judging: `visible` was given).
        public var shown: [String] = []
        public var hidden: [String] = []
        /// The sequence number of the last change this cut consumed: the share's cursor after it.
        public var through: Int64
        /// The index of the first change left for the next cut (`changes.count`: all consumed).
        public var next: Int
    }

    /// The owner's cut: `changes` (in sequence order, after `cursor`) judged one by one by
    /// ``outgoing(current:change:wasVisible:added:)`` — a change numbered up to `rescanUntil` is
    /// being re-judged under new terms (`change: nil`) — until the batch's records would pass
    /// `maxBytes` (each record weighs its encoded state, its key and 6 bytes; at least one record
    /// goes). `visible` holds the keys the members hold among the changes (nil: the share tracks
    /// none — no filter and no re-judging — and every record counts as held). The node's cut and
    /// the simulator's owner both run it.
    public func cut(_ changes: [Change], cursor: Int64, rescanUntil: Int64 = 0, visible: Set<String>?, added: Set<Int> = [], maxBytes: Int) -> Cut {
        var out = Cut(through: cursor, next: changes.count)
        var size = 0
        for (i, r) in changes.enumerated() {
            let was = visible.map { $0.contains(r.key) } ?? true
            let (decision, after) = outgoing(current: r.state, change: r.seq <= rescanUntil ? nil : r.state, wasVisible: was, added: added)
            let state: RecordState
            switch decision {
            case .skip:
                out.through = r.seq
                continue
            case .retract: state = Self.retraction
            case .send(let s): state = s
            }
            let bytes = RecordStateCodec.encode(state).count + r.key.utf8.count + 6
            if size.addingReportingOverflow(bytes).partialValue > maxBytes && !out.records.isEmpty {
                out.next = i
                break
            }
            out.records.append(.init(key: r.key, state: state))
            if decision == .retract { out.retracted.append(.init(key: r.key, hlc: r.state.newestClock)) }
            if visible != nil, after != was { if after { out.shown.append(r.key) } else { out.hidden.append(r.key) } }
            size += bytes
            out.through = r.seq
        }
        return out
    }

    /// A retraction on the wire.
    public static let retraction = RecordState()

    /// Whether a batch record is a retraction (no cells, no tombstone).
    public static func isRetraction(_ record: ChangeBatch.Record) -> Bool {
        record.state.cells.isEmpty && record.state.tombstone == nil
    }
}
