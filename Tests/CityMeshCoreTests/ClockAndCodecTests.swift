import Testing
@testable import CityMeshCore

@Suite("Hybrid logical clock")
struct HLCTests {
    @Test("ticks are strictly increasing even when the wall clock stalls or goes back")
    func monotonic() {
        var clock = HybridClock()
        var last = HLC.zero
        for physical: UInt64 in [100, 100, 100, 99, 50, 101, 101, 200] {
            let t = clock.tick(physicalMillis: physical)
            #expect(t > last)
            last = t
        }
        #expect(last.millis == 200 && last.logical == 0)
    }

    @Test("observing a remote timestamp moves later ticks past it")
    func observe() {
        var clock = HybridClock()
        _ = clock.tick(physicalMillis: 10)
        clock.observe(HLC(millis: 500, logical: 3))
        let t = clock.tick(physicalMillis: 20)
        #expect(t == HLC(millis: 500, logical: 4))
    }

    @Test("a full logical counter rolls over into the next millisecond")
    func logicalOverflow() {
        var clock = HybridClock(last: HLC(millis: 7, logical: .max))
        #expect(clock.tick(physicalMillis: 7) == HLC(millis: 8, logical: 0))
    }
}

@Suite("RFC 3339 timestamps")
struct RFC3339Tests {
    @Test("parses UTC, offsets and fractions", arguments: [
        ("1970-01-01T00:00:00Z", Int64(0)),
        ("2026-11-29T08:00:00Z", Int64(1_795_939_200_000_000)),
        ("2026-11-29T16:00:00+08:00", Int64(1_795_939_200_000_000)),
        ("2026-11-29 08:00:00.5z", Int64(1_795_939_200_500_000)),
        ("2000-02-29T23:59:59.123456Z", Int64(951_868_799_123_456)),
        ("1969-12-31T23:59:59Z", Int64(-1_000_000)),
    ])
    func parse(text: String, micros: Int64) {
        #expect(RFC3339.parse(text) == micros)
    }

    @Test("rejects what is not RFC 3339", arguments: [
        "2026-11-29", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T08:00:00",
        "2026-11-29T08:00:00+0800", "2026-11-29T08:00:00.Z", "yesterday", "2026-11-29T08:00:00Zjunk", "2001-02-29T00:00:00Z",
    ])
    func reject(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test("format then parse is the identity")
    func roundTrip() {
        var rng = SeededRNG(seed: 9)
        for _ in 0..<2000 {
            let t = Int64.random(in: -2_000_000_000_000_000...4_000_000_000_000_000, using: &rng)
            #expect(RFC3339.parse(RFC3339.format(microseconds: t)) == t)
        }
        #expect(RFC3339.format(microseconds: 1_795_939_200_500_000) == "2026-11-29T08:00:00.5Z")
    }
}

@Suite("Stored record format")
struct RecordStateCodecTests {
    @Test("encode then decode returns the same state")
    func roundTrip() throws {
        var rng = SeededRNG(seed: 11)
        for _ in 0..<2000 {
            let s = Gen.state(&rng)
            #expect(try RecordStateCodec.decode(RecordStateCodec.encode(s)) == s)
        }
        let hz = try CitySlug("hangzhou")
        let rich = RecordState(cells: [
            Cell(field: 1, value: .string("Ünïcode ✓"), stamp: Stamp(hlc: HLC(rawValue: .max), city: hz)),
            Cell(field: 2, value: .double(-0.0), stamp: Stamp(hlc: .zero, city: hz)),
            Cell(field: 300, value: .timestamp(-5), stamp: Stamp(hlc: .zero, city: hz)),
            Cell(field: 4, value: .int(.min), stamp: Stamp(hlc: .zero, city: hz)),
        ], tombstone: nil)
        #expect(try RecordStateCodec.decode(RecordStateCodec.encode(rich)) == rich)
        #expect(try RecordStateCodec.decode(RecordStateCodec.encode(rich, key: "Ünïcode ✓"), key: "Ünïcode ✓") == rich)
        // Int keys: only the canonical text form is elided.
        let intKeyed = RecordState(cells: [Cell(field: 1, value: .int(7), stamp: Stamp(hlc: .zero, city: hz))])
        #expect(try RecordStateCodec.decode(RecordStateCodec.encode(intKeyed, key: "7"), key: "7") == intKeyed)
        #expect(RecordStateCodec.encode(intKeyed, key: "7").count < RecordStateCodec.encode(intKeyed, key: "07").count)
    }

    @Test("a put encoded straight from its input is byte-identical to its encoded state")
    func directEncoding() throws {
        let hz = try CitySlug("hangzhou")
        var rng = SeededRNG(seed: 12)
        // Key field first, in the middle, last; inputs that do and do not name the key field.
        for keyName in ["a", "c", "e"] {
            let schema = try Schema(keyField: keyName, fields: [("a", .string), ("b", .double), ("c", .string), ("d", .bool), ("e", .string)])
            for _ in 0..<300 {
                var assignments: [(String, String)] = []
                for f in ["a", "b", "c", "d", "e"] where f != keyName && Bool.random(using: &rng) {
                    assignments.append((f, f == "b" ? "1.5" : f == "d" ? "true" : "v\(Int.random(in: 0...9, using: &rng))"))
                }
                let input = try RecordInput.fromText(key: "K-\(Int.random(in: 0...99, using: &rng))", assignments: assignments.shuffled(using: &rng), schema: schema)
                let stamp = Stamp(hlc: HLC(millis: UInt64.random(in: 1...1000, using: &rng), logical: 0), city: hz)
                let direct = RecordStateCodec.encode(input, keyField: schema.key.id, stamp: stamp)
                #expect(direct == RecordStateCodec.encode(input.state(schema: schema, stamp: stamp), key: input.key))
                #expect(try RecordStateCodec.decode(direct, key: input.key) == input.state(schema: schema, stamp: stamp))
                // The key is not repeated in the blob, and without the key the blob cannot be read.
                #expect(direct.count < RecordStateCodec.encode(input.state(schema: schema, stamp: stamp)).count)
                #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(direct) }
            }
        }
    }

    @Test("truncated or altered bytes are rejected, never misread")
    func corrupt() throws {
        let hz = try CitySlug("hangzhou")
        let s = RecordState(cells: [Cell(field: 1, value: .string("abc"), stamp: Stamp(hlc: HLC(millis: 1, logical: 0), city: hz))])
        let bytes = RecordStateCodec.encode(s)
        for n in 0..<bytes.count {
            #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(Array(bytes.prefix(n))) }
        }
        var badTag = bytes
        badTag[badTag.count - 5] = 0x7f
        #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(badTag) }
        var badVersion = bytes
        badVersion[0] = 9
        #expect(throws: CityMeshError.self) { try RecordStateCodec.decode(badVersion) }
    }
}
