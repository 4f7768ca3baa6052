/// The types a dataset field can have.
public enum FieldType: String, Hashable, Sendable, Codable, CaseIterable {
    case string, int, double, bool, timestamp
}
