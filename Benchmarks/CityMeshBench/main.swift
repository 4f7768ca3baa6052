import CityMeshCore
import Foundation

// Benchmarks of the pure core (no I/O). Run: swift run -c release citymesh-bench [merge|codec|csv]
// Figures go to docs/performance.md; there are no timed assertions in tests.

func measure(_ label: String, units: Int, unitName: String, repeats: Int = 5, _ body: () -> Void) {
    var best = Double.infinity
    for _ in 0..<repeats {
        let start = ContinuousClock.now
        body()
        let d = ContinuousClock.now - start
        best = min(best, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
    let rate = Double(units) / best
    print(String(format: "%-44@ %12.0f %@/s  (best of %d: %.3f s for %d)", label as NSString, rate, unitName, repeats, best, units))
}

let cities = try ["hangzhou", "shanghai", "suzhou"].map { try CitySlug($0) }
let which = CommandLine.arguments.dropFirst().first ?? "all"

if which == "merge" || which == "all" {
    // 250,000 stored records of 4 cells; an incoming update of 4 cells each, half newer, half older.
    let n = 250_000
    var rng = SystemRandomNumberGenerator()
    let existing: [RecordState] = (0..<n).map { i in
        let s = Stamp(hlc: HLC(millis: 1_000 + UInt64(i % 97), logical: 0), city: cities[i % 3])
        return RecordState(sortedCells: (1...4).map { Cell(field: $0, value: .double(Double(i)), stamp: s) })
    }
    let incoming: [RecordState] = (0..<n).map { i in
        let newer = Bool.random(using: &rng)
        let s = Stamp(hlc: HLC(millis: newer ? 5_000 : 10, logical: 0), city: cities[(i + 1) % 3])
        return RecordState(sortedCells: (1...4).map { Cell(field: $0, value: .double(Double(-i)), stamp: s) })
    }
    var sink = 0
    measure("merge incoming cells into stored records", units: n * 4, unitName: "cells") {
        var states = existing
        for i in 0..<n where states[i].merge(incoming[i]) { sink &+= 1 }
    }
    let deletes = (0..<n).map { i in RecordState.deletion(at: Stamp(hlc: HLC(millis: 3_000, logical: 0), city: cities[i % 3])) }
    measure("merge tombstones into stored records", units: n, unitName: "records") {
        var states = existing
        for i in 0..<n where states[i].merge(deletes[i]) { sink &+= 1 }
    }
    if sink == -1 { print(sink) }
}

if which == "codec" || which == "all" {
    let n = 250_000
    let states: [RecordState] = (0..<n).map { i in
        let s = Stamp(hlc: HLC(millis: 1_000 + UInt64(i), logical: 0), city: cities[i % 3])
        return RecordState(sortedCells: [
            Cell(field: 1, value: .string("S-\(i)"), stamp: s), Cell(field: 2, value: .string("Xihu"), stamp: s),
            Cell(field: 3, value: .double(41.5), stamp: s), Cell(field: 4, value: .timestamp(1_795_939_200_000_000), stamp: s),
        ])
    }
    var encoded: [[UInt8]] = []
    measure("encode stored records (4 cells)", units: n, unitName: "records") { encoded = states.map { RecordStateCodec.encode($0) } }
    var total = 0
    measure("decode stored records (4 cells)", units: n, unitName: "records") {
        total = 0
        for e in encoded { total &+= (try? RecordStateCodec.decode(e))?.cells.count ?? 0 }
    }
    if total == -1 { print(total) }
}

if which == "csv" || which == "all" {
    var text = "station,district,pm25,measured_at\n"
    for i in 0..<200_000 { text += "S-\(i),District \(i % 13),\(Double(i % 500) / 10),2026-11-29T08:\(String(format: "%02d", i % 60)):00Z\n" }
    let bytes = Array(text.utf8)
    let schema = try Schema(keyField: "station", fields: [("station", .string), ("district", .string), ("pm25", .double), ("measured_at", .timestamp)])
    var rows = 0
    measure("parse + type CSV rows (air-quality shape)", units: 200_000, unitName: "rows") {
        var p = CSVParser()
        var mapper: CSVRowMapper?
        rows = 0
        let emit: (CSVParser.Row) -> Void = { row in
            if let m = mapper { if (try? m.map(row.fields)) != nil { rows += 1 } } else { mapper = try? CSVRowMapper(header: row.fields, schema: schema) }
        }
        var i = 0
        while i < bytes.count {
            p.feed(bytes[i..<min(i + 65536, bytes.count)], emit: emit)
            i += 65536
        }
        p.finish(emit: emit)
    }
    if rows != 200_000 { print("parsed \(rows) rows, expected 200000") }
}
