public import Crypto
import Foundation

/// The key under which record keys enter the ledger (PIPL Art. 73: an entry must not identify a
/// person without further information kept apart). A record key is written as
/// HMAC-SHA256(key, record key), never as its plain SHA-256: an 18-digit ID number or a credit
/// code has few enough candidates that a plain hash can be reversed by trying them all, and a
/// keyed hash cannot without the key.
///
/// A node derives its keys from one secret of its own (`NodeStore.ledgerSecret`): one per dataset
/// it owns (for its own writes) and one per share it offers, which the signed offer carries to
/// every member of the share, so the member's entries about a record of the share hash it the
/// same way and an auditor given that share's key can find a specific record in either ledger.
/// Keys are derived with HMAC-SHA256 from the secret and a label, so one key tells nothing about
/// another.
public struct LedgerKey: Sendable, Equatable {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// From 64 lowercase hex digits.
    public init?(hex: String) {
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            guard let b = UInt8(hex[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        self.init(bytes: out)
    }

    public var hex: String { Self.hex(bytes) }

    /// A public name for the key (the first 8 bytes of a hash of it, hex), written beside each
    /// keyed hash so an auditor knows which key it needs; it does not reveal the key.
    public var id: String { Self.hex(Array(SHA256.hash(data: Array("citymesh-ledger-key-id/v1\n".utf8) + bytes).prefix(8))) }

    /// HMAC-SHA256 of a record key, hex.
    public func hash(_ recordKey: String) -> String {
        Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Array(recordKey.utf8), using: SymmetricKey(data: bytes))))
    }

    /// The `hashes` of an entry about one record: `key.hmac` and the key's id (`hmac.key`).
    public func entryHashes(_ recordKey: String) -> [String: String] { ["key.hmac": hash(recordKey), "hmac.key": id] }

    /// The key of a dataset this node owns, for its own entries.
    public static func dataset(_ id: DatasetID, secret: [UInt8]) -> LedgerKey { derive(secret, "dataset\n\(id)") }

    /// The key of a share (`owner/name`) this node offers: carried in the offer to every member.
    public static func share(_ share: String, secret: [UInt8]) -> LedgerKey { derive(secret, "share\n\(share)") }

    static func derive(_ secret: [UInt8], _ label: String) -> LedgerKey {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("citymesh-ledger-key/v1\n\(label)".utf8), using: SymmetricKey(data: secret))
        return LedgerKey(bytes: Array(mac))!
    }

    static func hex(_ b: [UInt8]) -> String { Hex.lower(b) }
}
