public import CityMeshCore

/// A dataset as the store knows it.
public struct DatasetInfo: Sendable, Hashable, Codable {
    public let id: DatasetID
    public let schema: Schema
    public let createdAt: String
    public let recordCount: Int
    /// The highest local sequence number of any change to this dataset.
    public let lastSeq: Int64
}

/// One record read from the store.
public struct StoredRecord: Sendable, Hashable {
    public let key: String
    public let seq: Int64
    public let state: RecordState
}

/// The result of a write batch.
public struct WriteSummary: Sendable, Hashable, Codable {
    public var written: Int = 0
    public var unchanged: Int = 0
    public var lastSeq: Int64 = 0
    /// Open conflicts the write settled (`NodeStore.apply(…settling:…)`).
    public var settled: Int = 0
    public init() {}
}

/// An admin API token as listed (never its secret).
public struct TokenInfo: Sendable, Hashable, Codable {
    public let id: String
    public let name: String
    public let role: Role
    public let createdAt: String
    public let revokedAt: String?
}
