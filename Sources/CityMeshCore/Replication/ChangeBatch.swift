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
    /// The records: key and state (only the cells and tombstone this batch carries). In a
    /// compacted batch, the records still held (see `erased`).
    public var records: [Record]
    /// How many of the records the origin signed were compacted away (erased: only their digests
    /// are kept, docs/protocol.md §8 "Compaction"). The batch counts `records.count + erased`.
    public var erased: Int = 0
    /// The records the origin signed, compacted or not.
    public var signedCount: Int { records.count + erased }

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

    /// The body's bytes in the first layout (CMB1: the records inside the signed body). Batches
    /// are cut in the second (`sealed`); the first is still read.
    public func encoded() -> [UInt8] {
        var w = WireWriter(reservingCapacity: 256 + records.count * 64)
        writeHeader(&w, magic: Self.magic)
        w.u32(UInt32(records.count))
        for r in records {
            w.str16(r.key)
            let state = RecordStateCodec.encode(r.state)
            w.u32(UInt32(state.count))
            w.raw(state)
        }
        return w.bytes
    }

    func writeHeader(_ w: inout WireWriter, magic: [UInt8]) {
        w.raw(magic)
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
    }

    // MARK: The compactable layout (CMB2)

    /// The second layout: the signed body holds the header, the record count and one digest of
    /// all records; the records travel after it, each with an 8-byte random salt, and each is
    /// bound by `recordDigest(salt, key, state)`. A record can so be replaced by its digest
    /// (compacted) without touching the signature: the batch still verifies and can be relayed,
    /// and the salt, erased with the values, keeps the digest from confirming a guess of them.
    public static let magic2: [UInt8] = Array("CMB2".utf8)
    /// 64 unpredictable bits per record: enough that a compacted record's digest cannot be
    /// matched against guesses of its key and values, few enough to cost a repair of small
    /// records under 10% more bytes than the first layout.
    public static let saltBytes = 8
    /// A slot whose key length reads this is a compacted record (keys are at most 256 bytes).
    static let compactedMarker: UInt16 = 0xFFFF
    static let recordContext = Array("citymesh-record/v2\n".utf8)
    static let recordsContext = Array("citymesh-records/v2\n".utf8)

    /// SHA-256 of one record with its salt: `context || salt || u16 key length || key || u32
    /// state length || state`, hashed in place (no copy: it runs for every record cut and taken).
    public static func recordDigest(salt: ArraySlice<UInt8>, key: String, state: ArraySlice<UInt8>) -> [UInt8] {
        var h = SHA256()
        recordContext.withUnsafeBytes { h.update(bufferPointer: $0) }
        salt.withUnsafeBytes { h.update(bufferPointer: $0) }
        var keyLength = UInt16(truncatingIfNeeded: key.utf8.count).bigEndian
        withUnsafeBytes(of: &keyLength) { h.update(bufferPointer: $0) }
        var k = key
        k.withUTF8 { h.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        var stateLength = UInt32(truncatingIfNeeded: state.count).bigEndian
        withUnsafeBytes(of: &stateLength) { h.update(bufferPointer: $0) }
        state.withUnsafeBytes { h.update(bufferPointer: $0) }
        return Array(h.finalize())
    }

    static func recordsDigest(_ digests: [[UInt8]]) -> [UInt8] {
        var h = SHA256()
        h.update(data: recordsContext)
        for d in digests { h.update(data: d) }
        return Array(h.finalize())
    }

    /// The body (signed) and the records section in the second layout, with `salts`
    /// (`saltBytes` per record, unpredictable: `randomSalts`).
    public func sealed(salts: [UInt8]) -> (body: [UInt8], records: [UInt8]) {
        precondition(salts.count == records.count * Self.saltBytes, "saltBytes of salt per record")
        var section = WireWriter(reservingCapacity: records.count * 80)
        var digests: [[UInt8]] = []
        digests.reserveCapacity(records.count)
        for (i, r) in records.enumerated() {
            let salt = salts[(i * Self.saltBytes)..<((i + 1) * Self.saltBytes)]
            let state = RecordStateCodec.encode(r.state)
            digests.append(Self.recordDigest(salt: salt, key: r.key, state: state[...]))
            Self.writeHeld(&section, salt: salt, key: r.key, state: state[...])
        }
        var w = WireWriter(reservingCapacity: 256)
        writeHeader(&w, magic: Self.magic2)
        w.u32(UInt32(records.count))
        w.raw(Self.recordsDigest(digests))
        return (w.bytes, section.bytes)
    }

    /// A held slot: `str16 key, salt, u32 length, state`.
    static func writeHeld(_ w: inout WireWriter, salt: ArraySlice<UInt8>, key: String, state: ArraySlice<UInt8>) {
        w.str16(key)
        w.raw(salt)
        w.u32(UInt32(state.count))
        w.raw(state)
    }

    /// A compacted slot: `u16 0xFFFF, digest`.
    static func writeCompacted(_ w: inout WireWriter, digest: some Collection<UInt8>) {
        w.u16(compactedMarker)
        w.raw(digest)
    }

    /// Salts for `count` records: a ChaCha20 keystream under a fresh random key that is then
    /// forgotten, so no salt tells anything about another.
    public static func randomSalts(count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        let zeros = [UInt8](repeating: 0, count: count * saltBytes)
        // Sealing zeros yields the keystream; the key and nonce are never kept.
        let sealed = try? ChaChaPoly.seal(zeros, using: SymmetricKey(size: .bits256), nonce: ChaChaPoly.Nonce())
        return sealed.map { Array($0.ciphertext) } ?? (0..<(count * saltBytes)).map { _ in UInt8.random(in: 0...255) }
    }

    /// Reads a body in the first layout (CMB1).
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> ChangeBatch {
        var r = WireReader(bytes)
        var batch = try readHeader(&r, magic: magic)
        let nr = Int(try r.u32("batch record count"))
        guard nr <= maxRecords else { throw .malformed("batch holds \(nr) records; the limit is \(maxRecords)") }
        batch.records.reserveCapacity(min(nr, r.remaining / 8))
        // One key may appear more than once: a member's batch carries each of its writes as made.
        for _ in 0..<nr {
            let key = try r.str16("record key")
            let n = Int(try r.u32("record state length"))
            let blob = try r.take(n, "record state")
            guard let state = try? RecordStateCodec.decode(Array(blob)) else { throw .malformed("record '\(key)' has a malformed state") }
            batch.records.append(Record(key: key, state: state))
        }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after the batch's last record") }
        return batch
    }

    /// Reads a body in the second layout (CMB2) and its records section, and checks every record
    /// (held or compacted) against the signed digest: a relay cannot change, add, drop or
    /// reorder a record without the signature failing. Returns the batch and the slots' digests.
    public static func decode(body: ArraySlice<UInt8>, records section: ArraySlice<UInt8>) throws(WireError) -> ChangeBatch {
        try decodeSlots(body: body, records: section).batch
    }

    /// One record of a CMB2 records section: held (its salt and encoded state) or compacted.
    enum Slot {
        case held(salt: ArraySlice<UInt8>, key: String, state: ArraySlice<UInt8>)
        case compacted(digest: ArraySlice<UInt8>)
    }

    static func decodeSlots(body: ArraySlice<UInt8>, records section: ArraySlice<UInt8>) throws(WireError) -> (batch: ChangeBatch, slots: [Slot]) {
        var r = WireReader(body)
        var batch = try readHeader(&r, magic: magic2)
        let nr = Int(try r.u32("batch record count"))
        guard nr <= maxRecords else { throw .malformed("batch holds \(nr) records; the limit is \(maxRecords)") }
        let signedDigest = Array(try r.take(32, "batch records digest"))
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after the batch's records digest") }
        var s = WireReader(section)
        var slots: [Slot] = []
        var digests: [[UInt8]] = []
        slots.reserveCapacity(min(nr, s.remaining / 14))
        digests.reserveCapacity(min(nr, s.remaining / 14))
        batch.records.reserveCapacity(min(nr, s.remaining / 14))
        for i in 0..<nr {
            let keyLength = try s.u16("record key length")
            switch keyLength {
            case compactedMarker:
                let d = try s.take(32, "compacted record digest")
                digests.append(Array(d))
                slots.append(.compacted(digest: d))
                batch.erased += 1
            case let n where Int(n) <= Schema.maxKeyBytes:
                let key = try s.utf8(try s.take(Int(n), "record key"), "record key")
                let salt = try s.take(saltBytes, "record salt")
                let n = Int(try s.u32("record state length"))
                let blob = try s.take(n, "record state")
                guard let state = try? RecordStateCodec.decode(Array(blob)) else { throw .malformed("record '\(key)' has a malformed state") }
                digests.append(recordDigest(salt: salt, key: key, state: blob))
                slots.append(.held(salt: salt, key: key, state: blob))
                batch.records.append(Record(key: key, state: state))
            default:
                throw .malformed("record \(i) of batch \(batch.origin):\(batch.seq) has a key of \(keyLength) bytes: neither a key (at most \(Schema.maxKeyBytes)) nor a compacted record")
            }
        }
        guard s.isAtEnd else { throw .malformed("\(s.remaining) bytes after the batch's last record") }
        guard recordsDigest(digests) == signedDigest else {
            throw .malformed("the records of batch \(batch.origin):\(batch.seq) do not match the digest its origin signed: altered, added, dropped or reordered")
        }
        return (batch, slots)
    }

    static func readHeader(_ r: inout WireReader, magic expected: [UInt8]) throws(WireError) -> ChangeBatch {
        guard Array(try r.take(4, "batch magic")) == expected else { throw .malformed("not a CityMesh change batch (bad magic)") }
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
        return ChangeBatch(share: share, dataset: dataset, origin: origin, seq: seq, prev: prev, fields: fields, seen: seen, records: [])
    }

    /// Cuts the batch in the compactable layout (CMB2) and signs its body with the origin's key.
    public func signed(with key: Agreement.Key) throws -> SignedBatch {
        let (body, section) = sealed(salts: Self.randomSalts(count: records.count))
        let (algorithm, signature) = try key.signRaw(SignedBatch.context + body)
        return SignedBatch(body: body, algorithm: algorithm, signature: signature, records: section)
    }
}

/// A batch as it travels and is stored: `u8 algorithm (1 Ed25519, 2 P-256 ECDSA DER)`,
/// `u16 signature length`, the signature, then — first layout (CMB1) — the body; second layout
/// (CMB2) — `u32` body length, the body, the records section. Its hash, SHA-256 of algorithm,
/// signature length, signature and body (the records section excluded: it is bound by the
/// body's digest), is what the next batch's `prev` names; compacting records leaves it unchanged.
public struct SignedBatch: Sendable, Equatable {
    public let body: [UInt8]
    public let algorithm: UInt8
    public let signature: [UInt8]
    /// The records section of a CMB2 batch (empty for CMB1, whose records are in the body).
    public let records: [UInt8]

    /// Domain separation: a batch signature can never be replayed as any other signed object.
    public static let context = Array("citymesh-batch/v1\n".utf8)

    public init(body: [UInt8], algorithm: UInt8, signature: [UInt8], records: [UInt8] = []) {
        self.body = body
        self.algorithm = algorithm
        self.signature = signature
        self.records = records
    }

    /// Whether this batch is in the compactable layout.
    public var isCompactable: Bool { body.starts(with: ChangeBatch.magic2) }

    public var bytes: [UInt8] {
        var w = WireWriter(reservingCapacity: body.count + signature.count + records.count + 7)
        w.u8(algorithm)
        w.u16(UInt16(signature.count))
        w.raw(signature)
        if isCompactable {
            w.u32(UInt32(body.count))
            w.raw(body)
            w.raw(records)
        } else {
            w.raw(body)
        }
        return w.bytes
    }

    public var hash: [UInt8] {
        var h = SHA256()
        h.update(data: [algorithm, UInt8(truncatingIfNeeded: signature.count >> 8), UInt8(truncatingIfNeeded: signature.count)])
        h.update(data: signature)
        h.update(data: body)
        return Array(h.finalize())
    }

    public init(bytes: ArraySlice<UInt8>) throws(WireError) {
        var r = WireReader(bytes)
        algorithm = try r.u8("batch signature algorithm")
        let n = Int(try r.u16("batch signature length"))
        signature = Array(try r.take(n, "batch signature"))
        let rest = r.rest()
        if rest.starts(with: ChangeBatch.magic) {
            body = Array(rest)
            records = []
        } else {
            var t = WireReader(rest)
            let length = Int(try t.u32("batch body length"))
            let b = try t.take(length, "batch body")
            guard b.starts(with: ChangeBatch.magic2) else { throw .malformed("not a CityMesh change batch (bad magic)") }
            body = Array(b)
            records = Array(t.rest())
        }
    }

    public func decode() throws(WireError) -> ChangeBatch {
        isCompactable ? try ChangeBatch.decode(body: body[...], records: records[...]) : try ChangeBatch.decode(body[...])
    }

    /// The batch with every held record that `erase` picks replaced by its digest; nil when it
    /// picks none (or the batch is in the first layout, whose records cannot be compacted — a
    /// caller drops such a batch's bytes instead). The signature, the hash and the count stay.
    public func compacted(erasing erase: (String, RecordState) -> Bool) throws(WireError) -> SignedBatch? {
        guard isCompactable else { return nil }
        let (_, slots) = try ChangeBatch.decodeSlots(body: body[...], records: records[...])
        var w = WireWriter(reservingCapacity: records.count)
        var changed = false
        for slot in slots {
            switch slot {
            case .held(let salt, let key, let state):
                if let decoded = try? RecordStateCodec.decode(Array(state)), erase(key, decoded) {
                    ChangeBatch.writeCompacted(&w, digest: ChangeBatch.recordDigest(salt: salt, key: key, state: state))
                    changed = true
                } else {
                    ChangeBatch.writeHeld(&w, salt: salt, key: key, state: state)
                }
            case .compacted(let digest):
                ChangeBatch.writeCompacted(&w, digest: digest)
            }
        }
        return changed ? SignedBatch(body: body, algorithm: algorithm, signature: signature, records: w.bytes) : nil
    }

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
