import CityMeshCore
import Foundation
import GRDB

/// One agreement as stored: the signed documents, decoded.
public struct StoredAgreement: Sendable {
    public let id: String
    public let offer: Agreement.Signed
    public let terms: Agreement.Offer
    public let response: Agreement.Signed?
    public let decision: Agreement.Response?
    public let revocation: Agreement.Signed?
    public let receivedAt: String

    public func state(now: Int64) -> Agreement.State {
        Agreement.state(offer: terms, response: decision, revoked: revocation != nil, now: now)
    }
}

/// Each save takes the document's ledger entry (`log`), appended in the same transaction and
/// committed durably (`NodeStore.logged`) only when the document was new.
extension NodeStore {
    /// A document as stored: keys sorted, so the same document is always the same text (the
    /// stores compare it to tell a repeated response from a new one).
    static func json(_ s: Agreement.Signed) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(s)) ?? Data(), as: UTF8.self)
    }

    static func signed(_ text: String?) -> Agreement.Signed? {
        text.flatMap { try? JSONDecoder().decode(Agreement.Signed.self, from: Data($0.utf8)) }
    }

    /// Stores an offer (checked by the caller); false if it was already stored.
    @discardableResult
    public func saveOffer(_ signed: Agreement.Signed, _ offer: Agreement.Offer, at: String, log: LedgerEntry? = nil) async throws -> Bool {
        try await logged({ saved in saved ? (log.map { [$0] } ?? []) : [] }) { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO agreements (offer_id, owner, share, member, dataset, offer, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [signed.id, offer.owner, offer.share, offer.member, offer.dataset, Self.json(signed), at])
            return db.changesCount > 0
        }
    }

    /// Records the member's response to an offer; a later response replaces an earlier one.
    /// False if the offer is unknown, revoked, or the response is the one already stored.
    @discardableResult
    public func saveResponse(_ signed: Agreement.Signed, offer id: String, log: LedgerEntry? = nil) async throws -> Bool {
        try await logged({ saved in saved ? (log.map { [$0] } ?? []) : [] }) { db in
            try db.execute(
                sql: "UPDATE agreements SET response = ? WHERE offer_id = ? AND revocation IS NULL AND (response IS NULL OR response != ?)",
                arguments: [Self.json(signed), id, Self.json(signed)])
            return db.changesCount > 0
        }
    }

    /// Records the owner's revocation; false if the offer is unknown or already revoked.
    @discardableResult
    public func saveRevocation(_ signed: Agreement.Signed, offer id: String, log: LedgerEntry? = nil) async throws -> Bool {
        try await logged({ saved in saved ? (log.map { [$0] } ?? []) : [] }) { db in
            try db.execute(sql: "UPDATE agreements SET revocation = ? WHERE offer_id = ? AND revocation IS NULL", arguments: [Self.json(signed), id])
            return db.changesCount > 0
        }
    }

    /// Every agreement this node is party to, oldest first.
    public func agreements() async throws -> [StoredAgreement] { try await agreements(where: nil, []) }

    /// The agreements between `owner` and `member` for `owner`'s dataset `dataset`, in the order
    /// `agreements()` lists them (one indexed read, not every agreement: a member's replica
    /// write looks up its share key this way).
    public func agreements(owner: CitySlug, member: CitySlug, dataset: String) async throws -> [StoredAgreement] {
        try await agreements(where: "owner = ? AND member = ? AND dataset = ?", [owner.rawValue, member.rawValue, dataset])
    }

    func agreements(where condition: String?, _ arguments: StatementArguments) async throws -> [StoredAgreement] {
        try await pool.read { db in
            let filter = condition.map { "WHERE \($0) " } ?? ""
            return try Row.fetchAll(
                db, sql: "SELECT offer_id, offer, response, revocation, received_at FROM agreements \(filter)ORDER BY received_at, offer_id", arguments: arguments
            ).compactMap { row in
                guard let offer = Self.signed(row[1]), let terms = try? offer.decode(Agreement.Offer.self) else { return nil }
                let response = Self.signed(row[2])
                return StoredAgreement(
                    id: row[0], offer: offer, terms: terms, response: response, decision: try? response?.decode(Agreement.Response.self),
                    revocation: Self.signed(row[3]), receivedAt: row[4])
            }
        }
    }
}
