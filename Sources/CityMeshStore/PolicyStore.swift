import CityMeshCore
import Foundation
import GRDB

/// One applied version of the sharing policy.
public struct PolicyVersion: Sendable, Codable, Equatable {
    public let version: Int
    public let document: String
    public let sha256: String
    public let appliedBy: String
    public let appliedAt: String
    /// The node's signed note over the version (C2SP signed-note), when its key is Ed25519.
    public let signedNote: String?

    public init(version: Int, document: String, sha256: String, appliedBy: String, appliedAt: String, signedNote: String?) {
        self.version = version
        self.document = document
        self.sha256 = sha256
        self.appliedBy = appliedBy
        self.appliedAt = appliedAt
        self.signedNote = signedNote
    }
}

extension NodeStore {
    /// Stores the next version; `make` gets its number and returns the row to store.
    public func appendPolicyVersion(_ make: @Sendable (Int) throws -> PolicyVersion) async throws -> PolicyVersion {
        try await pool.write { db in
            let next = (try Int.fetchOne(db, sql: "SELECT MAX(version) FROM policy_versions") ?? 0) + 1
            let v = try make(next)
            try db.execute(
                sql: "INSERT INTO policy_versions (version, document, sha256, applied_by, applied_at, signed_note) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [v.version, v.document, v.sha256, v.appliedBy, v.appliedAt, v.signedNote])
            return v
        }
    }

    /// Version `number`, or the latest when nil; nil if there is none.
    public func policyVersion(_ number: Int? = nil) async throws -> PolicyVersion? {
        try await pool.read { db in
            let sql = "SELECT version, document, sha256, applied_by, applied_at, signed_note FROM policy_versions "
                + (number == nil ? "ORDER BY version DESC LIMIT 1" : "WHERE version = ?")
            return try Row.fetchOne(db, sql: sql, arguments: number.map { [$0] } ?? []).map(Self.policyVersion)
        }
    }

    /// Every version, oldest first, without their documents' text.
    public func policyVersions() async throws -> [PolicyVersion] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT version, '' AS document, sha256, applied_by, applied_at, signed_note FROM policy_versions ORDER BY version")
                .map(Self.policyVersion)
        }
    }

    static func policyVersion(_ row: Row) -> PolicyVersion {
        PolicyVersion(version: row[0], document: row[1], sha256: row[2], appliedBy: row[3], appliedAt: row[4], signedNote: row[5])
    }
}
