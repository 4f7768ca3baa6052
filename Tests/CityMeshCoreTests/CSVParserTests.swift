import Testing
@testable import CityMeshCore

@Suite("CSV parser")
struct CSVParserTests {
    func parse(_ text: String, chunk: Int = 3) -> [CSVParser.Row] {
        parse(Array(text.utf8), chunk: chunk)
    }

    func parse(_ bytes: [UInt8], chunk: Int) -> [CSVParser.Row] {
        var p = CSVParser()
        var rows: [CSVParser.Row] = []
        var i = 0
        while i < bytes.count {
            p.feed(bytes[i..<min(i + chunk, bytes.count)]) { rows.append($0) }
            i += chunk
        }
        p.finish { rows.append($0) }
        return rows
    }

    @Test("plain rows, CRLF, no trailing newline, blank lines skipped")
    func basics() {
        let rows = parse("a,b,c\r\n1,2,3\n\n4,,6")
        #expect(rows.map(\.fields) == [["a", "b", "c"], ["1", "2", "3"], ["4", "", "6"]])
        #expect(rows.map(\.line) == [1, 2, 4])
        #expect(rows.allSatisfy { $0.error == nil })
    }

    @Test("quoted fields hold commas, doubled quotes and newlines; line numbers stay right")
    func quoting() {
        let rows = parse("k,v\n\"a,b\",\"say \"\"hi\"\"\"\n\"multi\nline\",x\nlast,y\n", chunk: 1)
        #expect(rows.map(\.fields) == [["k", "v"], ["a,b", "say \"hi\""], ["multi\nline", "x"], ["last", "y"]])
        #expect(rows.map(\.line) == [1, 2, 3, 5])
    }

    @Test("the result does not depend on how the input is chunked")
    func chunking() {
        let text = "station,pm25\n\"S,1\",41.5\r\nS-2,\"\"\"q\"\"\"\n"
        let reference = parse(text, chunk: 1000).map(\.fields)
        for c in 1...8 { #expect(parse(text, chunk: c).map(\.fields) == reference) }
    }

    @Test("a UTF-8 byte order mark is skipped")
    func bom() {
        let rows = parse([0xEF, 0xBB, 0xBF] + Array("a,b\n1,2\n".utf8), chunk: 2)
        #expect(rows.first?.fields == ["a", "b"])
    }

    @Test("structural errors reject only their row")
    func errors() {
        let rows = parse("k,v\n\"ab\"x,1\nok,2\n" + "\"open,3\n")
        #expect(rows[1].error?.contains("closing quote") == true)
        #expect(rows[2].fields == ["ok", "2"] && rows[2].error == nil)
        #expect(rows[3].error?.contains("unterminated") == true)
        #expect(rows[3].line == 4)
    }

    @Test("invalid UTF-8 is reported with its column")
    func invalidUTF8() {
        let rows = parse(Array("k,v\nS-1,".utf8) + [0xff, 0xfe] + Array("\nS-2,ok\n".utf8), chunk: 4)
        #expect(rows[1].error?.contains("invalid UTF-8 in column 2") == true)
        #expect(rows[2].error == nil)
    }

    @Test("an over-long row is rejected without being buffered whole")
    func longRow() {
        let big = String(repeating: "x", count: CSVParser.maxRowBytes + 10)
        let rows = parse("k,v\n1,\(big)\n2,ok\n", chunk: 65536)
        #expect(rows[1].error?.contains("longer than") == true)
        #expect(rows[2].fields == ["2", "ok"])
    }
}

@Suite("Schemas, values and rows")
struct SchemaTests {
    let schema = try! Schema(keyField: "station", fields: [
        ("station", .string), ("district", .string), ("pm25", .double), ("measured_at", .timestamp), ("count", .int), ("ok", .bool),
    ])

    @Test("slugs", arguments: [("hangzhou", true), ("new-york", true), ("a1", true), ("H", false), ("Hangzhou", false),
                               ("-x", false), ("x-", false), ("a--b", false), ("1abc", false), ("ab_c", false), ("", false)])
    func slugs(raw: String, valid: Bool) {
        #expect(CitySlug.isValid(raw) == valid)
    }

    @Test("invalid schemas are refused with a reason")
    func badSchemas() {
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema(keyField: "k", fields: []) }
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema(keyField: "k", fields: [("k", .string), ("k", .int)]) }
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema(keyField: "missing", fields: [("k", .string)]) }
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema(keyField: "k", fields: [("k", .double)]) }
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema.parseFieldSpec("pm25:float") }
        #expect(throws: CityMeshError(.invalidSchema, "")) { try Schema.parseFieldSpec("pm25") }
    }

    @Test("adding a field gives it a fresh id and leaves existing ids alone")
    func addField() throws {
        var s = schema
        try s.addField(name: "no2", type: .double)
        #expect(s.field(named: "no2")?.id == 7)
        #expect(s.field(named: "no2")?.nullable == true)
        #expect(s.fields.prefix(6) == schema.fields.prefix(6))
        #expect(throws: CityMeshError(.invalidSchema, "")) { try s.addField(name: "pm25", type: .int) }
    }

    @Test("text values are typed by the schema")
    func textValues() throws {
        let input = try RecordInput.fromText(
            key: "S-001", assignments: [("pm25", "41.5"), ("district", "Xihu"), ("measured_at", "2026-11-29T08:00:00Z"), ("count", "3"), ("ok", "true")],
            schema: schema)
        #expect(input.values.map(\.value) == [.string("Xihu"), .double(41.5), .timestamp(1_795_939_200_000_000), .int(3), .bool(true)])
        #expect(throws: CityMeshError(.typeMismatch, "")) { try RecordInput.fromText(key: "S", assignments: [("pm25", "high")], schema: schema) }
        #expect(throws: CityMeshError(.typeMismatch, "")) { try RecordInput.fromText(key: "S", assignments: [("pm25", "nan")], schema: schema) }
        #expect(throws: CityMeshError(.unknownField, "")) { try RecordInput.fromText(key: "S", assignments: [("pm10", "1")], schema: schema) }
        #expect(throws: CityMeshError(.keyMissing, "")) { try RecordInput.fromText(key: "", assignments: [], schema: schema) }
        let big = String(repeating: "x", count: Schema.maxValueBytes + 1)
        #expect(throws: CityMeshError(.valueTooLarge, "")) { try RecordInput.fromText(key: "S", assignments: [("district", big)], schema: schema) }
        #expect(throws: CityMeshError(.valueTooLarge, "")) {
            try RecordInput.fromText(key: String(repeating: "k", count: Schema.maxKeyBytes + 1), assignments: [], schema: schema)
        }
    }

    @Test("JSON values are checked against field types")
    func jsonValues() throws {
        let ok = try RecordInput.fromJSON(["station": .string("S-1"), "pm25": .int(40), "ok": .bool(false), "district": .null], key: nil, schema: schema)
        #expect(ok.key == "S-1")
        #expect(ok.values.map(\.value) == [nil, .double(40), .bool(false)])
        #expect(throws: CityMeshError(.typeMismatch, "")) { try RecordInput.fromJSON(["station": .string("S"), "ok": .int(1)], key: nil, schema: schema) }
        #expect(throws: CityMeshError(.keyMissing, "")) { try RecordInput.fromJSON(["pm25": .double(1)], key: nil, schema: schema) }
    }

    @Test("the CSV header must name known fields and include the key")
    func header() throws {
        #expect(throws: CityMeshError(.unknownField, "")) { try CSVRowMapper(header: ["station", "pm10"], schema: schema) }
        #expect(throws: CityMeshError(.keyMissing, "")) { try CSVRowMapper(header: ["pm25"], schema: schema) }
        let m = try CSVRowMapper(header: ["pm25", "station"], schema: schema)
        #expect(try m.map(["41.5", "S-1"]).key == "S-1")
        #expect(throws: CityMeshError(.malformedInput, "")) { try m.map(["41.5"]) }
    }

    @Test("int keys are stored in canonical form")
    func intKeys() throws {
        let s = try Schema(keyField: "id", fields: [("id", .int), ("v", .string)])
        #expect(try RecordInput.fromText(key: "007", assignments: [], schema: s).key == "7")
    }
}
