public import CityMeshCore
import Foundation
import GRDB
import Synchronization

/// The keys of the ledger's keyed hashes (`LedgerKey`): derived from one secret of this node, or
/// for a replica, taken from the owner's signed offer.
extension NodeStore {
    /// This node's ledger secret: 32 random bytes made on first use, kept in the database (so a
    /// backup restores it) and never sent anywhere.
    public func ledgerSecret() async throws -> [UInt8] {
        if let cached = ledgerSecretCache.withLock({ $0 }) { return cached }
        let secret: [UInt8]
        if let held = try await pool.read({ db in try Data.fetchOne(db, sql: "SELECT value FROM node_secrets WHERE name = 'ledger'") }) {
            secret = Array(held)
        } else {
            var random = SystemRandomNumberGenerator()
            let fresh = (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
            secret = try await pool.write { db in
                try db.execute(sql: "INSERT OR IGNORE INTO node_secrets (name, value) VALUES ('ledger', ?)", arguments: [Data(fresh)])
                // Another caller may have made one first: that one stands.
                return Array(try Data.fetchOne(db, sql: "SELECT value FROM node_secrets WHERE name = 'ledger'") ?? Data(fresh))
            }
        }
        ledgerSecretCache.withLock { $0 = secret }
        return secret
    }

    /// The key this node hashes `dataset`'s record keys with in its ledger: for a dataset it owns,
    /// its own dataset key; for a replica, the share key in the owner's offer this node accepted
    /// (the latest one that carries a key), so both cities' entries about a record match; for a
    /// replica whose offer carries none (made before offers did), a key of this node's own.
    public func ledgerKey(for dataset: DatasetID) async throws -> LedgerKey {
        if dataset.owner != city {
            let offered = try await agreements(owner: dataset.owner, member: city, dataset: dataset.name).last { a in
                a.terms.member == city.rawValue && a.terms.owner == dataset.owner.rawValue && a.terms.dataset == dataset.name && a.decision?.decision == "accept"
                    && a.terms.ledgerKey != nil
            }
            if let hex = offered?.terms.ledgerKey, let key = LedgerKey(hex: hex) { return key }
        }
        return LedgerKey.dataset(dataset, secret: try await ledgerSecret())
    }

    /// The key of a share this node offers (`owner/name`, owner = this node), for its offers.
    public func shareLedgerKey(_ share: String) async throws -> LedgerKey {
        LedgerKey.share(share, secret: try await ledgerSecret())
    }

    /// The key of a share (`owner/name`) as this node knows it: its own for a share it offers; the
    /// one in the owner's latest offer to this node otherwise (nil if that offer carries none).
    public func knownShareKey(_ share: String) async throws -> LedgerKey? {
        if share.hasPrefix(city.rawValue + "/") { return try await shareLedgerKey(share) }
        let offer = try await agreements().last { "\($0.terms.owner)/\($0.terms.share)" == share && $0.terms.member == city.rawValue && $0.terms.ledgerKey != nil }
        return offer?.terms.ledgerKey.flatMap(LedgerKey.init(hex:))
    }
}
