public import Crypto
public import Foundation
public import X509

/// A run of changes to one share's records, written by one city (its *origin*) and signed by it.
///
/// Batches of one origin in one share are numbered 1, 2, 3, … and chained: each names the hash of
/// the one before. Any member may relay them as they are; a receiver takes batch `n + 1` only after
/// batch `n`, only if its `prev` matches, and only with a valid signature of the origin. So a relay
/// can neither forge nor alter a batch, nor drop one and put another in its place; an origin that
/// signs two different batches under one number is caught with both as evidence.
/// The layout is in docs/protocol.md §8.
public struct ChangeBatch: Sendable, Equatable {
    /// `<owner>/<share>`: whose share, and which.
    public var share: String
    /// `<owner>/<dataset>`.
    public var dataset: String
    public var origin: CitySlug
    public var seq: UInt64
    /// SHA-256 of the signed bytes of batch `seq - 1` (32 zero bytes for the first).
    public var prev: [UInt8]
    /// The fields this batch's cells use, as the owner's schema numbers them. A receiver adds any
    /// it does not know yet, so a new field costs only its own cells, never a resync.
    public var fields: [Schema.Field]
    /// The greatest clock of each city's cells that the origin had merged when it cut the batch:
    /// what lets a receiver tell a concurrent overwrite (a conflict) from a later edit.
    public var seen: [CitySlug: HLC]
    /// The records: key and state (only the cells and tombstone this batch carries).
    public var records: [Record]

    public struct Record: Sendable, Equatable {
        public var key: String
        public var state: RecordState
        public init(key: String, state: RecordState) {
            self.key = key
            self.state = state
        }
    }

    public init(
        share: String, dataset: String, origin: CitySlug, seq: UInt64, prev: [UInt8], fields: [Schema.Field], seen: [CitySlug: HLC], records: [Record]
    ) {
        self.share = share
        self.dataset = dataset
        self.origin = origin
        self.seq = seq
        self.prev = prev
        self.fields = fields
        // Receivers refuse a seen map over `maxSeen` (and the count is a u16 on the wire); the owner's
        // cells may carry stamps of any city, so a cutter could otherwise build one. The newest
        // clocks are kept: the map only serves conflict reporting.
        self.seen = seen.count <= Self.maxSeen ? seen : Dictionary(seen.sorted { $0.value > $1.value }.prefix(Self.maxSeen).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        self.records = records
    }

    /// The greatest clock among the batch's cells and tombstones: what a receiver's clock would
    /// be pulled up to by merging it.
    public var latestStamp: HLC { Self.latestStamp(of: records) }

    public static func latestStamp(of records: [Record]) -> HLC {
        records.reduce(HLC.zero) { m, r in
            r.state.cells.reduce(Swift.max(m, r.state.tombstone?.hlc ?? .zero)) { Swift.max($0, $1.stamp.hlc) }
        }
    }

    /// How far ahead of a receiver's clock a batch's stamps may be. Beyond it the receiver holds
    /// the batch back until its own clock catches up, so a city whose clock runs ahead (or lies)
    /// can neither win every last-writer-wins race by the margin nor drag everyone's clock
    /// forward with it (threat model G8).
    public static let maxClockAheadMillis: UInt64 = 60_000

    /// Whether the batch is stamped too far ahead of `nowMillis` to merge yet: how far, if so.
    public func aheadOfClock(nowMillis: UInt64) -> UInt64? {
        let latest = latestStamp.millis
        return latest > nowMillis &+ Self.maxClockAheadMillis ? latest - nowMillis : nil
    }

    public static let magic: [UInt8] = Array("CMB1".utf8)
    public static let zeroHash = [UInt8](repeating: 0, count: 32)
    /// Limits a receiver enforces before it allocates anything.
    public static let maxRecords = 100_000
    public static let maxFields = Schema.maxFields
    public static let maxSeen = 4096

    /// The body's bytes (what the origin signs).
    public func encoded() -> [UInt8] {
        var w = WireWriter(reservingCapacity: 256 + records.count * 64)
        w.raw(Self.magic)
        w.str8(share)
        w.str8(dataset)
        w.str8(origin.rawValue)
        w.u64(seq)
        w.raw(prev)
        w.u16(UInt16(fields.count))
        for f in fields {
            w.u16(UInt16(f.id))
            w.str8(f.name)
            w.str8(f.type.rawValue)
            w.u8(f.nullable ? 1 : 0)
        }
        let seenSorted = seen.sorted { $0.key.rawValue < $1.key.rawValue }
        w.u16(UInt16(seenSorted.count))
        for (city, hlc) in seenSorted {
            w.str8(city.rawValue)
            w.u64(hlc.rawValue)
        }
        w.u32(UInt32(records.count))
        for r in records {
            w.str16(r.key)
            let state = RecordStateCodec.encode(r.state)
            w.u32(UInt32(state.count))
            w.raw(state)
        }
        return w.bytes
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> ChangeBatch {
        var r = WireReader(bytes)
        guard Array(try r.take(4, "batch magic")) == magic else { throw .malformed("not a CityMesh change batch (bad magic)") }
        let share = try r.str8("batch share")
        let dataset = try r.str8("batch dataset")
        guard let origin = try? CitySlug(try r.str8("batch origin")) else { throw .malformed("batch origin is not a city slug") }
        let seq = try r.u64("batch seq")
        guard seq >= 1 else { throw .malformed("batch seq must start at 1") }
        guard seq <= ReplicationWire.maxSeq else { throw .malformed("batch seq \(seq) is above the largest a city can reach (\(ReplicationWire.maxSeq))") }
        let prev = Array(try r.take(32, "batch prev"))
        let nf = Int(try r.u16("batch field count"))
        guard nf <= maxFields else { throw .malformed("batch names \(nf) fields; the limit is \(maxFields)") }
        var fields: [Schema.Field] = []
        var fieldIDs = Set<Int>()
        var fieldNames = Set<String>()
        for _ in 0..<nf {
            let id = Int(try r.u16("field id"))
            let name = try r.str8("field name")
            guard let type = FieldType(rawValue: try r.str8("field type")) else { throw .malformed("batch field '\(name)' has an unknown type") }
            guard Schema.isValidFieldName(name), id > 0 else { throw .malformed("batch field '\(name)' (id \(id)) is not a valid field") }
            guard fieldIDs.insert(id).inserted else { throw .malformed("batch names field id \(id) twice") }
            guard fieldNames.insert(name).inserted else { throw .malformed("batch names field '\(name)' twice") }
            fields.append(Schema.Field(id: id, name: name, type: type, nullable: try r.u8("field nullable") == 1))
        }
        let ns = Int(try r.u16("batch seen count"))
        guard ns <= maxSeen else { throw .malformed("batch seen map has \(ns) cities; the limit is \(maxSeen)") }
        var seen: [CitySlug: HLC] = [:]
        for _ in 0..<ns {
            guard let city = try? CitySlug(try r.str8("seen city")) else { throw .malformed("batch seen map names an invalid city") }
            guard seen.updateValue(HLC(rawValue: try r.u64("seen clock")), forKey: city) == nil else { throw .malformed("batch seen map names \(city) twice") }
        }
        let nr = Int(try r.u32("batch record count"))
        guard nr <= maxRecords else { throw .malformed("batch holds \(nr) records; the limit is \(maxRecords)") }
        var records: [Record] = []
        records.reserveCapacity(min(nr, r.remaining / 8))
        // One key may appear more than once: a member's batch carries each of its writes as made.
        for _ in 0..<nr {
            let key = try r.str16("record key")
            let n = Int(try r.u32("record state length"))
            let blob = try r.take(n, "record state")
            guard let state = try? RecordStateCodec.decode(Array(blob)) else { throw .malformed("record '\(key)' has a malformed state") }
            records.append(Record(key: key, state: state))
        }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after the batch's last record") }
        return ChangeBatch(share: share, dataset: dataset, origin: origin, seq: seq, prev: prev, fields: fields, seen: seen, records: records)
    }

    /// Signs the body with the origin's key.
    public func signed(with key: Agreement.Key) throws -> SignedBatch {
        let body = encoded()
        let (algorithm, signature) = try key.signRaw(SignedBatch.context + body)
        return SignedBatch(body: body, algorithm: algorithm, signature: signature)
    }
}

/// A batch as it travels and is stored: `u8 algorithm (1 Ed25519, 2 P-256 ECDSA DER)`,
/// `u16 signature length`, the signature, then the body. Its hash (SHA-256 of all of it) is what
/// the next batch's `prev` names.
public struct SignedBatch: Sendable, Equatable {
    public let body: [UInt8]
    public let algorithm: UInt8
    public let signature: [UInt8]

    /// Domain separation: a batch signature can never be replayed as any other signed object.
    public static let context = Array("citymesh-batch/v1\n".utf8)

    public init(body: [UInt8], algorithm: UInt8, signature: [UInt8]) {
        self.body = body
        self.algorithm = algorithm
        self.signature = signature
    }

    public var bytes: [UInt8] {
        var w = WireWriter(reservingCapacity: body.count + signature.count + 3)
        w.u8(algorithm)
        w.u16(UInt16(signature.count))
        w.raw(signature)
        w.raw(body)
        return w.bytes
    }

    public var hash: [UInt8] { Array(SHA256.hash(data: bytes)) }

    public init(bytes: ArraySlice<UInt8>) throws(WireError) {
        var r = WireReader(bytes)
        algorithm = try r.u8("batch signature algorithm")
        let n = Int(try r.u16("batch signature length"))
        signature = Array(try r.take(n, "batch signature"))
        body = Array(r.rest())
    }

    public func decode() throws(WireError) -> ChangeBatch { try ChangeBatch.decode(body[...]) }

    /// Checks the signature against the origin's certificate (already verified to chain to the
    /// federation CA and to name the origin).
    public func verify(certificate: Certificate) throws(Agreement.SignatureError) {
        try Agreement.Key.verifyRaw(algorithm: algorithm, signature: signature, message: Self.context + body, certificate: certificate)
    }
}

extension Agreement.Key {
    /// Signs raw bytes: `(1, 64-byte Ed25519 signature)` or `(2, DER ECDSA P-256/SHA-256)`.
    public func signRaw(_ message: [UInt8]) throws -> (UInt8, [UInt8]) {
        switch self {
        case .ed25519(let k): (1, Array(try k.signature(for: message)))
        case .p256(let k): (2, Array(try k.signature(for: message).derRepresentation))
        }
    }

    public static func verifyRaw(algorithm: UInt8, signature: [UInt8], message: [UInt8], certificate: Certificate) throws(Agreement.SignatureError) {
        let valid: Bool
        switch algorithm {
        case 1:
            guard let key = Curve25519.Signing.PublicKey(certificate.publicKey) else { throw .init("the certificate's key is not Ed25519") }
            valid = key.isValidSignature(signature, for: message)
        case 2:
            guard let key = P256.Signing.PublicKey(certificate.publicKey) else { throw .init("the certificate's key is not P-256") }
            guard let sig = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { throw .init("the P-256 signature is not DER") }
            valid = key.isValidSignature(sig, for: message)
        default:
            throw .init("unknown signature algorithm \(algorithm)")
        }
        guard valid else { throw .init("the signature does not verify: the batch was altered or signed by another key") }
    }
}
