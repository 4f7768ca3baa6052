#if canImport(Glibc)
import Glibc
#endif

/// The compact binary form of a ``RecordState`` kept in the store (layout in docs/data-model.md).
///
/// Format 1: `0x01`; the distinct stamps of the record (LEB128 count, then each as the HLC in
/// 8 bytes little-endian and the city slug with a 1-byte length); the tombstone (`0x00`, or
/// `0x01` and a stamp index); the cell count; then per cell: field id, stamp index, value tag
/// and payload. A put writes all its cells with one stamp, so most records store one stamp.
/// Value tags: 0 null, 1 string (LEB128 length, UTF-8), 2 int (8 bytes LE), 3 double (IEEE 754
/// bits, 8 bytes LE), 4 false, 5 true, 6 timestamp (microseconds, 8 bytes LE), 7 the string that
/// is the record's key, 8 the int that is the record's key. Tags 7 and 8 keep the key, which the
/// store already holds in its own column, out of the blob; decoding them needs that key.
public enum RecordStateCodec {
    public static let formatVersion: UInt8 = 1

    public static func encode(_ state: RecordState, key: String? = nil) -> [UInt8] {
        var stamps: [Stamp] = []
        func index(_ s: Stamp) -> Int {
            if let i = stamps.firstIndex(of: s) { return i }
            stamps.append(s)
            return stamps.count - 1
        }
        let tombIndex = state.tombstone.map(index)
        let cellIndexes = state.cells.map { index($0.stamp) }
        var out: [UInt8] = []
        out.reserveCapacity(24 + state.cells.count * 16)
        out.append(formatVersion)
        writeVarint(UInt64(stamps.count), to: &out)
        for s in stamps { writeStamp(s, to: &out) }
        if let tombIndex {
            out.append(1)
            writeVarint(UInt64(tombIndex), to: &out)
        } else {
            out.append(0)
        }
        writeVarint(UInt64(state.cells.count), to: &out)
        for (c, si) in zip(state.cells, cellIndexes) {
            writeCell(field: c.field, stampIndex: si, value: c.value, key: key, to: &out)
        }
        return out
    }

    /// The encoding of `input.state(schema:stamp:)`, written straight from the input: a put's
    /// cells all share one stamp, so no intermediate state is built on the import path.
    public static func encode(_ input: RecordInput, keyField: Int, stamp: Stamp) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32 + input.values.count * 16)
        out.append(formatVersion)
        out.append(1)  // one stamp
        writeStamp(stamp, to: &out)
        out.append(0)  // no tombstone
        let count = input.values.count + (input.values.contains { $0.field == keyField } ? 0 : 1)
        writeVarint(UInt64(count), to: &out)
        var keyWritten = false
        for v in input.values {
            if !keyWritten && keyField <= v.field {
                writeCell(field: keyField, stampIndex: 0, value: input.keyValue, key: input.key, to: &out)
                keyWritten = true
                if v.field == keyField { continue }
            }
            writeCell(field: v.field, stampIndex: 0, value: v.value, key: input.key, to: &out)
        }
        if !keyWritten { writeCell(field: keyField, stampIndex: 0, value: input.keyValue, key: input.key, to: &out) }
        return out
    }

    @inline(__always)
    static func writeCell(field: Int, stampIndex: Int, value: Value?, key: String?, to out: inout [UInt8]) {
        writeVarint(UInt64(field), to: &out)
        writeVarint(UInt64(stampIndex), to: &out)
        switch value {
        case nil: out.append(0)
        case .string(let s) where s == key: out.append(7)
        case .int(let i) where key != nil && Int64(key!) == i && String(i) == key: out.append(8)  // invariant: key != nil checked first
        case .string(let s):
            out.append(1)
            let u = s.utf8
            writeVarint(UInt64(u.count), to: &out)
            out.append(contentsOf: u)
        case .int(let i):
            out.append(2)
            writeUInt64(UInt64(bitPattern: i), to: &out)
        case .double(let d):
            out.append(3)
            writeUInt64(d.bitPattern, to: &out)
        case .bool(let b): out.append(b ? 5 : 4)
        case .timestamp(let t):
            out.append(6)
            writeUInt64(UInt64(bitPattern: t), to: &out)
        }
    }

    public static func decode(_ bytes: [UInt8], key: String? = nil) throws -> RecordState {
        try bytes.withUnsafeBytes { try decode(buffer: $0, key: key) }
    }

    /// Decodes a stored state; `key` is the record's key, needed when the blob refers to it (tags 7, 8).
    public static func decode(buffer: UnsafeRawBufferPointer, key: String? = nil) throws -> RecordState {
        var r = Reader(bytes: buffer)
        guard try r.byte() == formatVersion else {
            throw CityMeshError(.malformedInput, "stored record uses an unknown format: upgrade citymesh")
        }
        let stampCount = try r.varint()
        guard stampCount <= UInt64(Schema.maxFields) + 1 else { throw r.corrupt() }
        var stamps: [Stamp] = []
        stamps.reserveCapacity(Int(stampCount))
        for _ in 0..<stampCount { stamps.append(try r.stamp()) }
        func stamp(_ i: UInt64) throws -> Stamp {
            guard i < UInt64(stamps.count) else { throw r.corrupt() }
            return stamps[Int(i)]
        }
        var tombstone: Stamp?
        switch try r.byte() {
        case 0: break
        case 1: tombstone = try stamp(try r.varint())
        default: throw r.corrupt()
        }
        let count = try r.varint()
        guard count <= UInt64(Schema.maxFields) * 4 else { throw r.corrupt() }
        var cells: [Cell] = []
        cells.reserveCapacity(Int(count))
        for _ in 0..<count {
            // Varints come from peers' batches too: a value at or above 2^63 is refused, not trapped on.
            guard let field = Int(exactly: try r.varint()) else { throw r.corrupt() }
            let cellStamp = try stamp(try r.varint())
            let value: Value?
            switch try r.byte() {
            case 0: value = nil
            case 1:
                guard let n = Int(exactly: try r.varint()) else { throw r.corrupt() }
                value = .string(try r.string(n))
            case 2: value = .int(Int64(bitPattern: try r.uint64()))
            case 3: value = .double(Double(bitPattern: try r.uint64()))
            case 4: value = .bool(false)
            case 5: value = .bool(true)
            case 6: value = .timestamp(Int64(bitPattern: try r.uint64()))
            case 7:
                guard let key else { throw r.corrupt() }
                value = .string(key)
            case 8:
                guard let key, let i = Int64(key) else { throw r.corrupt() }
                value = .int(i)
            default: throw r.corrupt()
            }
            cells.append(Cell(field: field, value: value, stamp: cellStamp))
        }
        guard r.i == buffer.count else { throw r.corrupt() }
        // Stored states are written sorted with one cell per field; take the fast path when that holds.
        var sorted = true
        var i = 1
        while i < cells.count {
            if cells[i - 1].field >= cells[i].field { sorted = false; break }
            i += 1
        }
        if sorted, cells.allSatisfy({ Stamp.precedes(tombstone, $0.stamp) }) {
            return RecordState(sortedCells: cells, tombstone: tombstone)
        }
        return RecordState(cells: cells, tombstone: tombstone)
    }

    @inline(__always)
    static func writeVarint(_ v: UInt64, to out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    @inline(__always)
    static func writeUInt64(_ v: UInt64, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    @inline(__always)
    static func writeStamp(_ s: Stamp, to out: inout [UInt8]) {
        writeUInt64(s.hlc.rawValue, to: &out)
        let u = s.city.rawValue.utf8
        out.append(UInt8(u.count))  // invariant: slugs are at most 63 bytes
        out.append(contentsOf: u)
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var i: Int
        var lastCity: (bytes: UnsafeRawBufferPointer, slug: CitySlug)?

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            self.i = 0
        }

        func corrupt() -> CityMeshError {
            CityMeshError(.malformedInput, "stored record is corrupt at byte \(i - bytes.startIndex): restore the node from a backup")
        }

        mutating func byte() throws -> UInt8 {
            guard i < bytes.endIndex else { throw corrupt() }
            defer { i += 1 }
            return bytes[i]
        }

        mutating func varint() throws -> UInt64 {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                let b = try byte()
                v |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
                guard shift < 64 else { throw corrupt() }
            }
        }

        mutating func uint64() throws -> UInt64 {
            guard bytes.endIndex - i >= 8 else { throw corrupt() }
            let v = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            i += 8
            return v
        }

        mutating func string(_ n: Int) throws -> String {
            guard n >= 0, bytes.endIndex - i >= n else { throw corrupt() }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)])
            i += n
            guard let s = String(validating: slice, as: UTF8.self) else { throw corrupt() }
            return s
        }

        mutating func stamp() throws -> Stamp {
            let hlc = HLC(rawValue: try uint64())
            let n = Int(try byte())
            guard bytes.count - i >= n else { throw corrupt() }
            let raw = UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)])
            // Cells of one record are mostly written by one city: reuse the last slug.
            if n > 0, let last = lastCity, last.bytes.count == n, let a = last.bytes.baseAddress, let b = raw.baseAddress, memcmp(a, b, n) == 0 {
                i += n
                return Stamp(hlc: hlc, city: last.slug)
            }
            let text = try string(n)
            guard let city = try? CitySlug(text) else { throw corrupt() }
            lastCity = (raw, city)
            return Stamp(hlc: hlc, city: city)
        }
    }
}
