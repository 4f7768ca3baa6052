/// One record as written by a user: its key and the values of the fields they set.
public struct RecordInput: Sendable, Hashable {
    public let key: String
    /// The key as a typed value of the key field.
    public let keyValue: Value
    /// Field id → value (nil = set to null), in field-id order.
    public let values: [(field: Int, value: Value?)]

    public init(key _: String, keyValue: Value, values: [(field: Int, value: Value?)]) {
        // Keys are stored in canonical form so `007` and `7` name the same int-keyed record.
        self.key = keyValue.text
        self.keyValue = keyValue
        var sorted = true
        var i = 1
        while i < values.count {
            if values[i - 1].field > values[i].field { sorted = false; break }
            i += 1
        }
        self.values = sorted ? values : values.sorted { $0.field < $1.field }
    }

    public static func == (a: RecordInput, b: RecordInput) -> Bool {
        a.key == b.key && a.values.elementsEqual(b.values, by: { $0.field == $1.field && $0.value == $1.value })
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(key)
        for v in values {
            hasher.combine(v.field)
            hasher.combine(v.value)
        }
    }

    /// The state this write produces: every given cell stamped with `stamp`, plus the key cell.
    public func state(schema: Schema, stamp: Stamp) -> RecordState {
        let keyID = schema.key.id
        var cells: [Cell] = []
        cells.reserveCapacity(values.count + 1)
        var keyPlaced = false
        for v in values where v.field != keyID {
            if !keyPlaced && keyID < v.field {
                cells.append(Cell(field: keyID, value: keyValue, stamp: stamp))
                keyPlaced = true
            }
            cells.append(Cell(field: v.field, value: v.value, stamp: stamp))
        }
        if !keyPlaced { cells.append(Cell(field: keyID, value: keyValue, stamp: stamp)) }
        return RecordState(sortedCells: cells)
    }

    /// Validates a record key's text against the key field's type and the size limit.
    public static func keyValue(_ key: String, schema: Schema) throws -> Value {
        guard !key.isEmpty else {
            throw CityMeshError(.keyMissing, "the key field '\(schema.keyField)' is empty: every record needs a key")
        }
        guard key.utf8.count <= Schema.maxKeyBytes else {
            throw CityMeshError(.valueTooLarge, "key is \(key.utf8.count) bytes; the limit is \(Schema.maxKeyBytes) bytes")
        }
        guard let v = try Value.parse(key, as: schema.key.type, field: schema.keyField) else {
            throw CityMeshError(.keyMissing, "the key field '\(schema.keyField)' is empty: every record needs a key")
        }
        return v
    }

    /// Builds an input from `field=value` text pairs (the CLI's form).
    public static func fromText(key: String, assignments: [(String, String)], schema: Schema) throws -> RecordInput {
        let keyValue = try keyValue(key, schema: schema)
        var values: [(field: Int, value: Value?)] = []
        var seen = Set<String>()
        for (name, text) in assignments {
            guard let f = schema.field(named: name) else { throw unknownField(name, schema: schema) }
            guard seen.insert(name).inserted else {
                throw CityMeshError(.invalidArgument, "field '\(name)' is given twice: set each field once")
            }
            if f.name == schema.keyField {
                guard text == key else {
                    throw CityMeshError(.invalidArgument, "the key field '\(name)' cannot be changed by a put: delete the record and put a new one")
                }
                continue
            }
            values.append((f.id, try Value.parse(text, as: f.type, field: f.name)))
        }
        return RecordInput(key: key, keyValue: keyValue, values: values)
    }

    /// Builds an input from a JSON object of field → value; the key comes from the key field unless given.
    public static func fromJSON(_ object: [String: JSONValue], key explicitKey: String?, schema: Schema) throws -> RecordInput {
        var key = explicitKey
        var values: [(field: Int, value: Value?)] = []
        for (name, json) in object {
            guard let f = schema.field(named: name) else { throw unknownField(name, schema: schema) }
            if f.name == schema.keyField {
                let text: String
                switch json {
                case .string(let s): text = s
                case .int(let i): text = String(i)
                default:
                    throw CityMeshError(.typeMismatch, "the key field '\(name)' must be a \(f.type.rawValue), got \(json.kindName)")
                }
                if let explicitKey, explicitKey != text {
                    throw CityMeshError(.invalidArgument, "the key field '\(name)' cannot be changed by a put: delete the record and put a new one")
                }
                key = text
                continue
            }
            values.append((f.id, try Value.fromJSON(json, as: f.type, field: f.name)))
        }
        guard let key else {
            throw CityMeshError(.keyMissing, "the record has no key: set the key field '\(schema.keyField)'")
        }
        return RecordInput(key: key, keyValue: try keyValue(key, schema: schema), values: values)
    }

    static func unknownField(_ name: String, schema: Schema) -> CityMeshError {
        CityMeshError(.unknownField, "unknown field '\(name)': the fields are \(schema.fields.map(\.name).joined(separator: ", "))")
    }
}

/// Maps CSV rows to record inputs using the header row.
public struct CSVRowMapper: Sendable {
    public let schema: Schema
    let columns: [Schema.Field]
    let keyColumn: Int

    /// Checks the header against the schema: every column must be a field and the key must be present.
    public init(header: [String], schema: Schema) throws {
        var cols: [Schema.Field] = []
        var seen = Set<String>()
        for raw in header {
            let name = raw.trimmingSpaces
            guard let f = schema.field(named: name) else { throw RecordInput.unknownField(name, schema: schema) }
            guard seen.insert(name).inserted else {
                throw CityMeshError(.malformedInput, "column '\(name)' appears twice in the header: keep one")
            }
            cols.append(f)
        }
        guard let k = cols.firstIndex(where: { $0.name == schema.keyField }) else {
            throw CityMeshError(.keyMissing, "the header has no column for the key field '\(schema.keyField)': add it")
        }
        self.schema = schema
        self.columns = cols
        self.keyColumn = k
    }

    public func map(_ fields: [String]) throws -> RecordInput {
        guard fields.count == columns.count else {
            throw CityMeshError(.malformedInput, "expected \(columns.count) columns, found \(fields.count)")
        }
        let key = fields[keyColumn]
        let keyValue = try RecordInput.keyValue(key, schema: schema)
        var values: [(field: Int, value: Value?)] = []
        values.reserveCapacity(columns.count)
        for (i, f) in columns.enumerated() where i != keyColumn {
            values.append((f.id, try Value.parse(fields[i], as: f.type, field: f.name)))
        }
        return RecordInput(key: key, keyValue: keyValue, values: values)
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
