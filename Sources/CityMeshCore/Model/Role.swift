/// What an admin API token may do.
public enum Role: String, Sendable, Codable, CaseIterable, Comparable {
    /// Read-only: every GET, nothing that writes.
    case auditor
    /// Data operations: datasets, records, import; not token management.
    case `operator`
    /// Everything.
    case admin

    private var rank: Int {
        switch self {
        case .auditor: 0
        case .operator: 1
        case .admin: 2
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}
