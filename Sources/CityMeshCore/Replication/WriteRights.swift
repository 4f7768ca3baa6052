/// Who may write what in a share — the one rule for every write that reaches a share's records:
/// the node applies it to each record of every batch it takes (`ReplicationService.permitted`),
/// the admin API to a member's write to its replica (`checkLocalWrite`), and the simulator to
/// both, so a test that breaks it breaks a simulator invariant (docs/policy.md "Write rights").
///
/// The owner writes the fields of the view, deletes and retracts; a member writes only the
/// fields the share lets it write, only cells stamped with its own name, only to records that
/// exist (live, inside the row filter) where they arrive, and never deletes. Refused cells are
/// dropped one by one: the rest of the record, and of the batch, is taken.
public struct WriteRights: Sendable {
    public let owner: CitySlug
    /// The view's fields: what the owner's batches may carry.
    public let view: Set<String>
    /// The fields members may write.
    public let writable: Set<String>
    /// The share's row filter (members write only records inside it).
    public let filter: RowFilter?
    /// The receiver's schema (nil: a replica not created yet).
    public let schema: Schema?

    public init(owner: CitySlug, view: Set<String>, writable: Set<String>, filter: RowFilter?, schema: Schema?) {
        self.owner = owner
        self.view = view
        self.writable = writable
        self.filter = filter
        self.schema = schema
    }

    /// Whether `state` is inside the row filter (always, without one).
    public func admits(_ state: RecordState) -> Bool {
        guard let filter else { return true }
        guard let schema else { return false }
        return filter.matches { name in schema.field(named: name).flatMap { state.value(field: $0.id) } }
    }

    // MARK: A member's own write

    public enum LocalRefusal: Sendable, Equatable {
        /// Only the owner deletes.
        case delete
        /// Fields the share does not let members write.
        case fields([String])
        /// The record does not exist here (or is outside the filter): members create none.
        case create
    }

    /// A write `writer` makes to its copy of the share's dataset (of `fields`, or a deletion) of a
    /// record it holds as `current`: nil if the share allows it.
    public func localWrite(by writer: CitySlug, fields: [String], delete: Bool, current: RecordState?) -> LocalRefusal? {
        guard writer != owner else { return nil }
        if delete { return .delete }
        let denied = fields.filter { $0 != schema?.keyField && !writable.contains($0) }
        if !denied.isEmpty { return .fields(denied) }
        guard let current, current.isLive, admits(current) else { return .create }
        return nil
    }

    /// What a member's batch carries of a write it made (`state`, as written): only its own cells
    /// of the fields members may write (a write a concurrent one overwrote since still goes, as
    /// made), no tombstone — members delete nothing. `field` maps the state's field ids to names.
    /// The node's member cut and the simulator's members cut with it.
    public func outgoing(_ state: RecordState, by member: CitySlug, field: (Int) -> String?) -> RecordState {
        RecordState(sortedCells: state.cells.filter { $0.stamp.city == member && field($0.field).map(writable.contains) == true }, tombstone: nil)
    }

    /// A member's copy of a record once it has merged the owner's deletion of it: cells other
    /// cities stamped after the deletion go too. They are writes made before their writer saw
    /// the deletion, to a record the owner no longer holds — the owner refuses them (members
    /// create no records), and so does every member that holds the deletion — so the deletion
    /// wins everywhere, and every copy ends the same. Cells of the owner after it (a record it
    /// made again) stay; a member's write accepted after that comes back in the owner's batches.
    public static func afterOwnerDeletion(_ state: RecordState, owner: CitySlug) -> RecordState {
        guard state.cells.contains(where: { $0.stamp.city != owner }) else { return state }
        return RecordState(sortedCells: state.cells.filter { $0.stamp.city == owner }, tombstone: state.tombstone)
    }

    // MARK: A record of a batch

    /// What a receiver takes of one record of a batch signed by `origin`.
    public struct Taken: Sendable, Equatable {
        /// The cells and tombstone it may merge (nil: nothing).
        public var state: RecordState?
        /// The owner's retraction of the key (only at a member).
        public var retraction = false
        /// Cells and tombstones refused.
        public var refused = 0
    }

    /// One record `r` of a batch `origin` signed, as a receiver (`receiverIsOwner`) holding the
    /// record as `current` may take it. `field` names the batch's field ids (the receiver's
    /// schema, and at a replica the owner's batch's own field list).
    public func take(_ r: ChangeBatch.Record, origin: CitySlug, receiverIsOwner: Bool, current: RecordState?, field: (Int) -> Schema.Field?) -> Taken {
        var out = Taken()
        let units = r.state.cells.count + (r.state.tombstone == nil ? 0 : 1)
        guard Schema.acceptsKey(r.key) else {
            out.refused = units
            return out
        }
        let fromOwner = origin == owner
        // Only the owner retracts; from anyone else an empty record is nothing.
        if ShareView.isRetraction(r) {
            out.retraction = fromOwner && !receiverIsOwner
            return out
        }
        var cells: [Cell] = []
        for c in r.state.cells {
            guard let f = field(c.field), Schema.accepts(c.value, in: f),
                fromOwner ? view.contains(f.name) : (c.stamp.city == origin && writable.contains(f.name))
            else {
                out.refused += 1
                continue
            }
            cells.append(c)
        }
        var tombstone = r.state.tombstone
        if !fromOwner, tombstone != nil {
            out.refused += 1
            tombstone = nil
        }
        // Members update records that exist here, inside the filter, and create none.
        if !fromOwner {
            guard let current, current.isLive, admits(current) else {
                out.refused += cells.count
                return out
            }
        }
        // Nothing left of it: dropped, so it cannot pass for a retraction.
        guard !cells.isEmpty || tombstone != nil else { return out }
        out.state = RecordState(sortedCells: cells, tombstone: tombstone)
        return out
    }

    // MARK: A whole batch

    /// What a receiver takes of a batch: the states to merge, the keys the owner retracted, the
    /// keys the owner deleted (at a member their other cities' later cells go:
    /// ``afterOwnerDeletion(_:owner:)``), and the cells refused.
    public struct Intake: Sendable, Equatable {
        public var states: [ChangeBatch.Record] = []
        public var retracted: [String] = []
        public var ownerDeletions: [String] = []
        public var refused = 0
        /// At the owner: keys of a member's records not taken whole (a cell or tombstone refused
        /// or denied, or the record dropped). The owner keeps the batch with these records as
        /// their digests, so it never stores or relays what it refused. Only the owner withholds:
        /// its refusal is final (it judges against its own records and terms, and takes a
        /// member's batch once), while a member's refusal may be transient (a replica behind the
        /// owner, a field it has not learnt yet) and a copy it compacted could be the one the
        /// owner pulls, which would lose the write.
        public var withheld: [String] = []
    }

    /// The records of a batch `origin` signed, as `receiver` may take them, record by record
    /// (``take(_:origin:receiverIsOwner:current:field:)``). `current` is the receiver's copy of a
    /// key; `screen` runs first on each record (the owner's policy enforcement point: it returns
    /// the record with the cells it denies removed, or nil to drop it). The node's replication
    /// (`ReplicationService.take`) and the simulator's nodes both take batches through it.
    public func intake(
        _ records: [ChangeBatch.Record], origin: CitySlug, receiver: CitySlug, current: (String) -> RecordState?, field: (Int) -> Schema.Field?,
        screen: (ChangeBatch.Record) -> ChangeBatch.Record? = { $0 }
    ) -> Intake {
        var out = Intake()
        out.states.reserveCapacity(records.count)
        let atOwner = receiver == owner
        let ownerAtMember = origin == owner && !atOwner
        for record in records {
            let judged = atOwner && origin != owner
            guard let r = screen(record) else {
                if judged { out.withheld.append(record.key) }
                continue
            }
            let taken = take(r, origin: origin, receiverIsOwner: atOwner, current: current(r.key), field: field)
            out.refused += taken.refused
            if judged, taken.refused > 0 || r != record { out.withheld.append(r.key) }
            if taken.retraction {
                out.retracted.append(r.key)
                continue
            }
            guard let state = taken.state else { continue }
            out.states.append(.init(key: r.key, state: state))
            // Only a deletion as such: a record the owner made again after deleting it carries
            // its tombstone along with live cells (the owner sends records whole), and members'
            // cells the owner accepted since come back in that same state — dropping them would
            // leave members without what the owner holds.
            if ownerAtMember && state.tombstone != nil && !state.isLive { out.ownerDeletions.append(r.key) }
        }
        return out
    }
}
