public import CityMeshCore
import Foundation
import GRDB

extension NodeStore {
    /// The address records kept (``AddressGossip/Relayed``), this node's own included. A row that
    /// no longer decodes (written by another version) is skipped: gossip brings it again.
    public func addressRecords() async throws -> [AddressGossip.Relayed] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT record, certificate FROM address_records").compactMap { row in
                let record: Data = row["record"], certificate: Data = row["certificate"]
                guard let r = try? AddressRecord.decode(Array(record)[...]) else { return nil }
                return AddressGossip.Relayed(record: r, certificate: Array(certificate))
            }
        }
    }

    /// Keeps `items`, each replacing its city's row unless that row holds a higher version.
    public func saveAddressRecords(_ items: [AddressGossip.Relayed]) async throws {
        guard !items.isEmpty else { return }
        try await pool.write { db in
            for item in items {
                try db.execute(
                    sql: """
                        INSERT INTO address_records (city, version, record, certificate) VALUES (?, ?, ?, ?)
                        ON CONFLICT (city) DO UPDATE SET version = excluded.version, record = excluded.record, certificate = excluded.certificate
                        WHERE excluded.version >= address_records.version
                        """,
                    arguments: [item.record.city.rawValue, try Int64.stored(item.record.version, "address record version"), Data(item.record.encoded), Data(item.certificate)])
            }
        }
    }

    /// Forgets `cities`' records (their certificates are revoked or denied).
    public func forgetAddressRecords(_ cities: [CitySlug]) async throws {
        guard !cities.isEmpty else { return }
        try await pool.write { db in
            for c in cities { try db.execute(sql: "DELETE FROM address_records WHERE city = ?", arguments: [c.rawValue]) }
        }
    }
}
