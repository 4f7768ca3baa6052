/// Decides, for a checked policy, what may leave the node and what may come in: the enforcement
/// points replication calls (`view`, `mayWrite`) and the answers `policy explain` gives. Pure: the
/// time and the state of each agreement are passed in.
public struct PolicyEngine: Sendable {
    /// Whether a member has accepted a share (the agreement is signed by both sides).
    public typealias Accepted = @Sendable (_ share: String, _ member: CitySlug) -> Bool

    public let city: CitySlug
    public let policy: Policy
    let schemas: [String: Schema]
    let filters: [String: RowFilter]

    /// `schemas` are the owner's datasets; the policy must have been loaded against them.
    public init(city: CitySlug, policy: Policy, schemas: [String: Schema]) throws(Predicate.Failure) {
        self.city = city
        self.policy = policy
        self.schemas = schemas
        var filters: [String: RowFilter] = [:]
        for share in policy.shares {
            if let text = share.filter, let schema = schemas[share.dataset] { filters[share.id] = try RowFilter(text, schema: schema) }
        }
        self.filters = filters
    }

    /// Why something is not allowed. `code` is stable (for metrics and the ledger's `reason`).
    public enum Denial: Error, Sendable, Equatable, CustomStringConvertible {
        case noShare(dataset: String, city: CitySlug)
        case notAccepted(share: String, city: CitySlug)
        case notYetValid(share: String, from: Int64)
        case expired(share: String, until: Int64)
        case rowFiltered(share: String, filter: String)
        case fieldNotInView(share: String, field: String)
        case fieldNotWritable(share: String, field: String)

        public var code: String {
            switch self {
            case .noShare: "no_share"
            case .notAccepted: "not_accepted"
            case .notYetValid: "not_yet_valid"
            case .expired: "expired"
            case .rowFiltered: "row_filtered"
            case .fieldNotInView: "field_not_in_view"
            case .fieldNotWritable: "field_not_writable"
            }
        }

        public var description: String {
            switch self {
            case .noShare(let d, let c): "denied by default: no share of '\(d)' includes \(c)"
            case .notAccepted(let s, let c): "share '\(s)' is offered to \(c) but \(c) has not accepted it"
            case .notYetValid(let s, let t): "share '\(s)' is valid only from \(RFC3339.format(microseconds: t))"
            case .expired(let s, let t): "share '\(s)' expired at \(RFC3339.format(microseconds: t))"
            case .rowFiltered(let s, let f): "the record does not match share '\(s)''s filter: \(f)"
            case .fieldNotInView(let s, let f): "'\(f)' is not in share '\(s)''s view"
            case .fieldNotWritable(let s, let f): "share '\(s)' does not let members write '\(f)'"
            }
        }
    }

    /// The share of `dataset` that includes `member`, if it is in force now.
    public func grant(dataset: String, to member: CitySlug, now: Int64, accepted: Accepted) -> Result<Policy.Share, Denial> {
        guard let share = policy.shares.first(where: { $0.dataset == dataset && $0.to.contains(member) }) else {
            return .failure(.noShare(dataset: dataset, city: member))
        }
        if let from = share.validFrom, now < from { return .failure(.notYetValid(share: share.id, from: from)) }
        guard now < share.validUntil else { return .failure(.expired(share: share.id, until: share.validUntil)) }
        guard accepted(share.id, member) else { return .failure(.notAccepted(share: share.id, city: member)) }
        return .success(share)
    }

    /// Exactly the fields of a record that may be sent to `member`: the share's view, if the
    /// share is in force and the record passes its filter. `value` reads the record's fields.
    public func view(dataset: String, for member: CitySlug, now: Int64, accepted: Accepted, value: (String) -> Value?) -> Result<[String], Denial> {
        switch grant(dataset: dataset, to: member, now: now, accepted: accepted) {
        case .failure(let d): return .failure(d)
        case .success(let share):
            if let filter = filters[share.id], !filter.matches(value) { return .failure(.rowFiltered(share: share.id, filter: filter.text)) }
            return .success(share.fields)
        }
    }

    /// Whether `member` may write `field` of an existing record (read through `value`): the share
    /// must be in force, grant the field, and let the member see the record.
    public func mayWrite(dataset: String, member: CitySlug, field: String, now: Int64, accepted: Accepted, value: (String) -> Value?) -> Result<Policy.Share, Denial> {
        switch grant(dataset: dataset, to: member, now: now, accepted: accepted) {
        case .failure(let d): return .failure(d)
        case .success(let share):
            guard share.fields.contains(field) else { return .failure(.fieldNotInView(share: share.id, field: field)) }
            guard share.write.contains(field) else { return .failure(.fieldNotWritable(share: share.id, field: field)) }
            if let filter = filters[share.id], !filter.matches(value) { return .failure(.rowFiltered(share: share.id, filter: filter.text)) }
            return .success(share)
        }
    }

    /// What `member` gets of `dataset`, and which rule decides each part.
    public struct Explanation: Sendable, Codable, Equatable {
        public struct FieldRight: Sendable, Codable, Equatable {
            public let field: String
            public let type: String
            /// "read", "read-write" or "none".
            public let access: String
            /// The rule that decides it.
            public let rule: String
        }

        public let city: String
        public let dataset: String
        /// The share that applies, if any.
        public let share: String?
        /// Whether records flow now.
        public let active: Bool
        /// Why (or why not), in one sentence.
        public let decision: String
        public let fields: [FieldRight]
        public let filter: String?
        public let purpose: String?
        public let legalBasis: String?
        public let validFrom: String?
        public let validUntil: String?
        public let onRevoke: String?
    }

    public func explain(dataset: String, for member: CitySlug, now: Int64, accepted: Accepted) -> Explanation {
        let schema = schemas[dataset]
        let share = policy.shares.first { $0.dataset == dataset && $0.to.contains(member) }
        let decision = grant(dataset: dataset, to: member, now: now, accepted: accepted)
        let active: Bool
        let sentence: String
        switch decision {
        case .success(let s): active = true; sentence = "granted by share '\(s.id)' (accepted by \(member)); valid until \(s.validUntilText)"
        case .failure(let d): active = false; sentence = d.description
        }
        let fields: [Explanation.FieldRight] = (schema?.fields ?? []).map { f in
            guard let share else {
                return .init(field: f.name, type: f.type.rawValue, access: "none", rule: "default deny: no share of '\(dataset)' lists \(member)")
            }
            if share.write.contains(f.name) {
                return .init(field: f.name, type: f.type.rawValue, access: "read-write", rule: "share '\(share.id)': in 'fields' and 'write'")
            }
            if share.fields.contains(f.name) {
                return .init(field: f.name, type: f.type.rawValue, access: "read", rule: "share '\(share.id)': in 'fields'")
            }
            return .init(field: f.name, type: f.type.rawValue, access: "none", rule: "share '\(share.id)': not in 'fields', so it never leaves the node")
        }
        return Explanation(
            city: member.rawValue, dataset: dataset, share: share?.id, active: active, decision: sentence, fields: fields,
            filter: share.map { $0.filter ?? "(none: every row)" }, purpose: share?.purpose, legalBasis: share?.legalBasis,
            validFrom: share?.validFrom.map { RFC3339.format(microseconds: $0) }, validUntil: share?.validUntilText, onRevoke: share?.onRevoke.rawValue)
    }
}

/// What changes between two versions of a policy, per share and per city.
public enum PolicyDiff {
    public struct Change: Sendable, Codable, Equatable, CustomStringConvertible {
        /// The share id (or `accept`).
        public let subject: String
        /// The city the change affects, if it is about one.
        public let city: String?
        public let what: String
        public var description: String { "\(subject)\(city.map { " [\($0)]" } ?? ""): \(what)" }
    }

    public static func between(_ old: Policy?, _ new: Policy) -> [Change] {
        let old = old ?? Policy()
        var out: [Change] = []
        let oldIDs = Set(old.shares.map(\.id)), newIDs = Set(new.shares.map(\.id))
        for share in new.shares where !oldIDs.contains(share.id) {
            out.append(Change(subject: share.id, city: nil, what: "new share of '\(share.dataset)': fields \(share.fields.joined(separator: ", "))" + (share.filter.map { " where \($0)" } ?? "")))
            for c in share.to { out.append(Change(subject: share.id, city: c.rawValue, what: "will be offered '\(share.dataset)' (\(share.write.isEmpty ? "read" : "read-write on \(share.write.joined(separator: ", "))"))")) }
        }
        for share in old.shares where !newIDs.contains(share.id) {
            out.append(Change(subject: share.id, city: nil, what: "removed: the share is revoked (on_revoke: \(share.onRevoke.rawValue))"))
            for c in share.to { out.append(Change(subject: share.id, city: c.rawValue, what: "loses '\(share.dataset)'")) }
        }
        for new in new.shares {
            guard let old = old.share(new.id) else { continue }
            if old.dataset != new.dataset { out.append(Change(subject: new.id, city: nil, what: "dataset \(old.dataset) → \(new.dataset)")) }
            let gained = new.fields.filter { !old.fields.contains($0) }, lost = old.fields.filter { !new.fields.contains($0) }
            if !gained.isEmpty { out.append(Change(subject: new.id, city: nil, what: "fields added to the view: \(gained.joined(separator: ", "))")) }
            if !lost.isEmpty { out.append(Change(subject: new.id, city: nil, what: "fields removed from the view: \(lost.joined(separator: ", "))")) }
            if old.filter != new.filter { out.append(Change(subject: new.id, city: nil, what: "row filter: \(old.filter ?? "(none)") → \(new.filter ?? "(none)")")) }
            let wGained = new.write.filter { !old.write.contains($0) }, wLost = old.write.filter { !new.write.contains($0) }
            if !wGained.isEmpty { out.append(Change(subject: new.id, city: nil, what: "members may now write: \(wGained.joined(separator: ", "))")) }
            if !wLost.isEmpty { out.append(Change(subject: new.id, city: nil, what: "members may no longer write: \(wLost.joined(separator: ", "))")) }
            if old.validUntil != new.validUntil || old.validFrom != new.validFrom {
                out.append(Change(subject: new.id, city: nil, what: "validity: until \(old.validUntilText) → until \(new.validUntilText)"))
            }
            if old.purpose != new.purpose { out.append(Change(subject: new.id, city: nil, what: "purpose: \"\(old.purpose)\" → \"\(new.purpose)\"")) }
            if old.legalBasis != new.legalBasis { out.append(Change(subject: new.id, city: nil, what: "legal basis: \"\(old.legalBasis)\" → \"\(new.legalBasis)\"")) }
            if old.onRevoke != new.onRevoke { out.append(Change(subject: new.id, city: nil, what: "on_revoke: \(old.onRevoke.rawValue) → \(new.onRevoke.rawValue)")) }
            for c in new.to where !old.to.contains(c) { out.append(Change(subject: new.id, city: c.rawValue, what: "added: will be offered '\(new.dataset)'")) }
            for c in old.to where !new.to.contains(c) { out.append(Change(subject: new.id, city: c.rawValue, what: "removed: loses '\(new.dataset)'")) }
        }
        for a in new.accept where !old.accept.contains(a) { out.append(Change(subject: "accept", city: a.from.rawValue, what: "will accept '\(a.from)/\(a.share)'")) }
        for a in old.accept where !new.accept.contains(a) { out.append(Change(subject: "accept", city: a.from.rawValue, what: "no longer accepts '\(a.from)/\(a.share)'")) }
        return out
    }
}
