import Testing
@testable import CityMeshCore

/// A small deterministic generator (SplitMix64) so failures reproduce from the seed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Gen {
    static let cities = try! ["hangzhou", "shanghai", "suzhou"].map(CitySlug.init)

    static func stamp(_ rng: inout SeededRNG) -> Stamp {
        // A small clock range makes ties (same HLC, different city) and equal stamps common.
        Stamp(hlc: HLC(millis: UInt64.random(in: 1...6, using: &rng), logical: UInt16.random(in: 0...1, using: &rng)),
              city: cities.randomElement(using: &rng)!)
    }

    static func value(_ rng: inout SeededRNG) -> Value? {
        switch Int.random(in: 0...4, using: &rng) {
        case 0: nil
        case 1: .int(Int64.random(in: -3...3, using: &rng))
        case 2: .string(["a", "b", "c"].randomElement(using: &rng)!)
        case 3: .double(Double(Int.random(in: 0...3, using: &rng)) / 2)
        default: .bool(Bool.random(using: &rng))
        }
    }

    /// A state that some sequence of writes and deletes could have produced. Cells at the same
    /// stamp must agree (a stamp names one write), so values are derived from the stamp.
    static func state(_ rng: inout SeededRNG) -> RecordState {
        var cells: [Cell] = []
        for field in 1...4 where Bool.random(using: &rng) {
            let s = stamp(&rng)
            cells.append(Cell(field: field, value: valueFor(field: field, stamp: s), stamp: s))
        }
        let tomb: Stamp? = Int.random(in: 0...3, using: &rng) == 0 ? stamp(&rng) : nil
        return RecordState(cells: cells, tombstone: tomb)
    }

    static func valueFor(field: Int, stamp: Stamp) -> Value? {
        let h = Int(stamp.hlc.rawValue % 7) + field + stamp.city.rawValue.count
        return h % 5 == 0 ? nil : .int(Int64(h))
    }
}

@Suite("CRDT merge laws")
struct MergePropertyTests {
    static let iterations = 5000

    @Test("merge is commutative")
    func commutative() {
        var rng = SeededRNG(seed: 1)
        for _ in 0..<Self.iterations {
            let a = Gen.state(&rng), b = Gen.state(&rng)
            #expect(RecordState.merged(a, b) == RecordState.merged(b, a), "a=\(a) b=\(b)")
        }
    }

    @Test("merge is associative")
    func associative() {
        var rng = SeededRNG(seed: 2)
        for _ in 0..<Self.iterations {
            let a = Gen.state(&rng), b = Gen.state(&rng), c = Gen.state(&rng)
            #expect(RecordState.merged(RecordState.merged(a, b), c) == RecordState.merged(a, RecordState.merged(b, c)))
        }
    }

    @Test("merge is idempotent")
    func idempotent() {
        var rng = SeededRNG(seed: 3)
        for _ in 0..<Self.iterations {
            let a = Gen.state(&rng), b = Gen.state(&rng)
            #expect(RecordState.merged(a, a) == a)
            let ab = RecordState.merged(a, b)
            #expect(RecordState.merged(ab, b) == ab)
            var copy = ab
            #expect(copy.merge(b) == false, "re-merging what is already merged must report no change")
        }
    }

    @Test("any delivery order of the same writes converges")
    func orderIndependence() {
        var rng = SeededRNG(seed: 4)
        for _ in 0..<500 {
            let updates = (0..<6).map { _ in Gen.state(&rng) }
            var reference = RecordState()
            for u in updates { reference.merge(u) }
            for _ in 0..<5 {
                var s = RecordState()
                for u in updates.shuffled(using: &rng) + updates.shuffled(using: &rng).prefix(2) { s.merge(u) }
                #expect(s == reference)
            }
        }
    }

    @Test("a delete is never undone by an older write")
    func deleteWinsOverOlderWrites() {
        var rng = SeededRNG(seed: 5)
        for _ in 0..<Self.iterations {
            let base = Gen.state(&rng)
            let del = Gen.stamp(&rng)
            var s = base
            s.merge(.deletion(at: del))
            // Any number of writes at or before the delete, in any order, leaves no cell visible from them.
            for _ in 0..<3 {
                let old = Stamp(hlc: HLC(rawValue: UInt64.random(in: 0...del.hlc.rawValue, using: &rng)), city: Gen.cities.randomElement(using: &rng)!)
                guard !(del < old) else { continue }
                s.merge(RecordState(cells: [Cell(field: Int.random(in: 1...4, using: &rng), value: .int(1), stamp: old)]))
            }
            #expect(s.cells.allSatisfy { del < $0.stamp }, "a cell older than the delete survived: \(s)")
            #expect(s.tombstone! >= del)
        }
    }

    @Test("a write after a delete brings the record back with only the new cells")
    func writeAfterDelete() throws {
        let hz = try CitySlug("hangzhou")
        var s = RecordState(cells: [
            Cell(field: 1, value: .string("S-001"), stamp: Stamp(hlc: HLC(millis: 1, logical: 0), city: hz)),
            Cell(field: 3, value: .double(41.5), stamp: Stamp(hlc: HLC(millis: 1, logical: 0), city: hz)),
        ])
        s.merge(.deletion(at: Stamp(hlc: HLC(millis: 2, logical: 0), city: hz)))
        #expect(!s.isLive)
        s.merge(RecordState(cells: [Cell(field: 1, value: .string("S-001"), stamp: Stamp(hlc: HLC(millis: 3, logical: 0), city: hz))]))
        #expect(s.isLive)
        #expect(s.cell(field: 3) == nil, "the pm25 written before the delete must not come back")
    }

    @Test("concurrent writes at the same clock pick the same winner everywhere")
    func tieBreakByCity() throws {
        let t = HLC(millis: 10, logical: 0)
        let a = RecordState(cells: [Cell(field: 2, value: .string("from shanghai"), stamp: Stamp(hlc: t, city: try CitySlug("shanghai")))])
        let b = RecordState(cells: [Cell(field: 2, value: .string("from suzhou"), stamp: Stamp(hlc: t, city: try CitySlug("suzhou")))])
        #expect(RecordState.merged(a, b).cell(field: 2)?.value == .string("from suzhou"))
        #expect(RecordState.merged(b, a).cell(field: 2)?.value == .string("from suzhou"))
    }
}
