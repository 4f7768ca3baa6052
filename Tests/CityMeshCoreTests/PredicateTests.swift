import Testing
@testable import CityMeshCore

/// The row-filter language: what parses, what it means (three-valued, as SQL), and every error with its column.
@Suite("Row filters")
struct PredicateTests {
    static let schema = try! Schema(keyField: "station", fields: [
        ("station", .string), ("district", .string), ("pm25", .double), ("count", .int), ("ok", .bool), ("measured_at", .timestamp),
    ])

    static func row(_ values: [String: Value]) -> (String) -> Value? { { values[$0] } }
    static let xihu: [String: Value] = [
        "station": .string("S-1"), "district": .string("Xihu"), "pm25": .double(41.5), "count": .int(3), "ok": .bool(true),
        "measured_at": .timestamp(RFC3339.parse("2026-11-29T08:00:00Z")!),
    ]

    @Test("what each filter keeps", arguments: [
        ("district != 'Restricted' and pm25 >= 0", true),
        ("district = 'Restricted' or pm25 >= 0", true),
        ("district = 'Restricted'", false),
        ("pm25 > 41.5", false), ("pm25 >= 41.5", true), ("pm25 < 50", true), ("pm25 <= 41.4", false),
        ("count = 3", true), ("count <> 3", false), ("count == 3", true), ("count != 4", true),
        ("count in (1, 2, 3)", true), ("count not in (1, 2, 3)", false), ("district in ('Xihu')", true),
        ("ok", true), ("not ok", false), ("ok = false", false), ("ok != false", true),
        ("measured_at >= '2026-11-29'", true), ("measured_at < '2026-11-29T07:59:59Z'", false),
        ("measured_at > '2026-11-29T16:00:00+08:00'", false), ("measured_at >= '2026-11-29T16:00:00+08:00'", true),
        ("not (district = 'Xihu' and count = 3)", false), ("NOT (district = 'Binjiang') AND count = 3", true),
        ("true", true), ("false", false), ("district = 'It''s'", false),
        ("district is not null", true), ("district is null", false),
        ("((((count = 3))))", true), ("count = -3 or pm25 = 4.15e1", true),
    ])
    func keeps(filter: String, kept: Bool) throws {
        let f = try RowFilter(filter, schema: Self.schema)
        #expect(f.matches(Self.row(Self.xihu)) == kept, "\(filter)")
    }

    @Test("null fields: comparisons are unknown, so neither a filter nor its negation keeps the row", arguments: [
        ("pm25 >= 0", false), ("not (pm25 >= 0)", false), ("pm25 < 0", false), ("pm25 in (1.0)", false), ("pm25 not in (1.0)", false),
        ("pm25 is null", true), ("pm25 is not null", false), ("pm25 >= 0 or count = 3", true), ("pm25 >= 0 and count = 4", false),
        ("not (pm25 >= 0 and count = 4)", true),
    ])
    func nulls(filter: String, kept: Bool) throws {
        var values = Self.xihu
        values["pm25"] = nil
        #expect(try RowFilter(filter, schema: Self.schema).matches(Self.row(values)) == kept, "\(filter)")
    }

    @Test("errors name the column and what to write instead", arguments: [
        ("", 1, "empty"),
        ("pm25 >= ", 9, "expected a value"),
        ("pm26 >= 0", 1, "did you mean 'pm25'"),
        ("district = 3", 12, "'district' is a string field and cannot be compared with the number 3"),
        ("pm25 >= 'high'", 9, "double field"),
        ("count = 1.5", 9, "not an integer"),
        ("measured_at > 'yesterday'", 15, "not a time"),
        ("district = 'Xihu", 12, "no closing '"),
        ("district = Xihu", 12, "quote text"),
        ("district = null", 12, "is null"),
        ("pm25 >= 0 pm25 < 9", 11, "join conditions with 'and' or 'or'"),
        ("(pm25 >= 0", 11, "expected ')'"),
        ("pm25 >= 0 and", 14, "ends too early"),
        ("district; drop table x", 9, "not part of the filter language"),
        ("district", 1, "not a condition"),
        ("ok > true", 1, "= or != only"),
        ("count in 1, 2", 10, "expected '('"),
        ("count in (1 2)", 13, "expected ',' or ')'"),
        ("count is 3", 10, "expected 'null'"),
        ("pm25 = station", 8, "not with another field"),
        ("'Xihu' = district", 1, "starts each comparison with a field name"),
        ("and", 1, "expected a field name but found the word 'and'"),
    ])
    func errors(filter: String, column: Int, says: String) {
        do {
            _ = try RowFilter(filter, schema: Self.schema)
            Issue.record("accepted: \(filter)")
        } catch {
            #expect(error.offset + 1 == column, "\(filter): \(error)")
            #expect(error.message.contains(says), "\(filter): \(error)")
        }
    }

    @Test("bounded: length, depth and list size are limited; deep input fails cleanly, never overflows")
    func bounds() {
        #expect(throws: Predicate.Failure.self) { try Predicate.parse(String(repeating: "(", count: 10_000) + "ok" + String(repeating: ")", count: 10_000)) }
        #expect(throws: Predicate.Failure.self) { try Predicate.parse(String(repeating: "not ", count: 40) + "ok") }
        _ = try? Predicate.parse(String(repeating: "not ", count: 30) + "ok")
        #expect(throws: Predicate.Failure.self) { try Predicate.parse("count in (" + (0...1000).map(String.init).joined(separator: ",") + ")") }
        #expect(throws: Predicate.Failure.self) { try Predicate.parse("count = 1 " + String(repeating: "and count = 1 ", count: 400)) }
        // A long chain of 'and' within the size limit is fine, and evaluates without recursion trouble.
        let chain = "count = 3" + String(repeating: " and count = 3", count: 250)
        #expect((try? RowFilter(chain, schema: Self.schema))?.matches(Self.row(Self.xihu)) == true)
    }

    @Test("the fields a filter reads are known, so a view can be checked against them")
    func fieldsRead() throws {
        #expect(try RowFilter("district != 'R' and (pm25 >= 0 or count is null)", schema: Self.schema).fields == ["district", "pm25", "count"])
    }
}
