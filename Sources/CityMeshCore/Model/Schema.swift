/// A dataset's schema: typed fields, one of which is the record key.
///
/// Fields carry stable numeric ids: records store cells by id, so renaming is possible later and
/// adding a nullable field changes only the schema, never the stored records.
public struct Schema: Hashable, Sendable, Codable {
    public struct Field: Hashable, Sendable, Codable {
        public let id: Int
        public let name: String
        public let type: FieldType
        public let nullable: Bool

        public init(id: Int, name: String, type: FieldType, nullable: Bool) {
            self.id = id
            self.name = name
            self.type = type
            self.nullable = nullable
        }
    }

    public internal(set) var fields: [Field]
    public let keyField: String

    /// Limits that keep one record bounded; documented in docs/data-model.md.
    public static let maxFields = 256
    public static let maxKeyBytes = 256
    public static let maxValueBytes = 65_536

    public init(keyField: String, fields: [(name: String, type: FieldType)]) throws {
        guard !fields.isEmpty else {
            throw CityMeshError(.invalidSchema, "a dataset needs at least one field: add --field NAME:TYPE (types: string, int, double, bool, timestamp)")
        }
        guard fields.count <= Self.maxFields else {
            throw CityMeshError(.invalidSchema, "a dataset may have at most \(Self.maxFields) fields, got \(fields.count)")
        }
        var seen = Set<String>()
        var built: [Field] = []
        for (i, f) in fields.enumerated() {
            guard Self.isValidFieldName(f.name) else {
                throw CityMeshError(.invalidSchema, "invalid field name '\(f.name)': use 1-64 letters, digits or '_', starting with a letter")
            }
            guard seen.insert(f.name).inserted else {
                throw CityMeshError(.invalidSchema, "field '\(f.name)' is declared twice: give each field one --field")
            }
            built.append(Field(id: i + 1, name: f.name, type: f.type, nullable: f.name != keyField))
        }
        guard let key = built.first(where: { $0.name == keyField }) else {
            throw CityMeshError(.invalidSchema, "key field '\(keyField)' is not among the fields: add --field \(keyField):string")
        }
        guard key.type == .string || key.type == .int else {
            throw CityMeshError(.invalidSchema, "key field '\(keyField)' must be of type string or int, not \(key.type.rawValue)")
        }
        self.fields = built
        self.keyField = keyField
    }

    public static func isValidFieldName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), let first = bytes.first else { return false }
        func isLetter(_ b: UInt8) -> Bool { (65...90).contains(b) || (97...122).contains(b) }
        guard isLetter(first) else { return false }
        return bytes.allSatisfy { isLetter($0) || (48...57).contains($0) || $0 == UInt8(ascii: "_") }
    }

    /// Whether `value` may stand in a cell of `field` as it arrives from a peer: the field's type,
    /// a string within `maxValueBytes`, a finite double. (Local input is checked as it is parsed.)
    public static func accepts(_ value: Value?, in field: Field) -> Bool {
        guard let value else { return true }
        guard value.type == field.type else { return false }
        switch value {
        case .string(let s): return s.utf8.count <= maxValueBytes
        case .double(let d): return d.isFinite
        default: return true
        }
    }

    /// Whether `key` may name a record arriving from a peer: not empty, within `maxKeyBytes`.
    public static func acceptsKey(_ key: String) -> Bool { !key.isEmpty && key.utf8.count <= maxKeyBytes }

    public func field(named name: String) -> Field? { fields.first { $0.name == name } }
    public func field(id: Int) -> Field? { fields.first { $0.id == id } }
    public var key: Field { fields.first { $0.name == keyField }! }  // invariant: init checks the key field exists

    /// Adds a nullable field; existing records need no change because absent cells read as null.
    public mutating func addField(name: String, type: FieldType) throws {
        guard Self.isValidFieldName(name) else {
            throw CityMeshError(.invalidSchema, "invalid field name '\(name)': use 1-64 letters, digits or '_', starting with a letter")
        }
        guard field(named: name) == nil else {
            throw CityMeshError(.invalidSchema, "field '\(name)' already exists")
        }
        guard fields.count < Self.maxFields else {
            throw CityMeshError(.invalidSchema, "a dataset may have at most \(Self.maxFields) fields")
        }
        let nextID = (fields.map(\.id).max() ?? 0) + 1
        fields.append(Field(id: nextID, name: name, type: type, nullable: true))
    }

    /// Parses a `--field name:type` specification.
    public static func parseFieldSpec(_ spec: String) throws -> (name: String, type: FieldType) {
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw CityMeshError(.invalidSchema, "invalid field '\(spec)': write NAME:TYPE, e.g. pm25:double")
        }
        guard let type = FieldType(rawValue: String(parts[1])) else {
            throw CityMeshError(.invalidSchema, "unknown type '\(parts[1])' for field '\(parts[0])': use one of string, int, double, bool, timestamp")
        }
        return (String(parts[0]), type)
    }
}
