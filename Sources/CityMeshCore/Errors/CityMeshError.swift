/// The one error type of CityMesh: a stable code, a message that says what to do next, and where it was raised.
///
/// Equality compares the code only, so tests can assert exactly which failure happened
/// without depending on the wording of the message.
public struct CityMeshError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, machine-readable error code (`dataset.not_found`, …).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let invalidArgument = Code("invalid_argument")
        public static let invalidSlug = Code("invalid_slug")
        public static let invalidName = Code("invalid_name")
        public static let datasetNotFound = Code("dataset.not_found")
        public static let datasetExists = Code("dataset.exists")
        public static let invalidSchema = Code("schema.invalid")
        public static let unknownField = Code("field.unknown")
        public static let typeMismatch = Code("value.type_mismatch")
        public static let valueTooLarge = Code("value.too_large")
        public static let invalidUTF8 = Code("value.invalid_utf8")
        public static let keyMissing = Code("record.key_missing")
        public static let recordNotFound = Code("record.not_found")
        public static let malformedInput = Code("input.malformed")
        public static let fileNotFound = Code("file.not_found")
        public static let fileExists = Code("file.exists")
        public static let ioError = Code("io.error")
        public static let certificateInvalid = Code("identity.certificate_invalid")
        public static let certificateExpired = Code("identity.certificate_expired")
        public static let certificateForeignCA = Code("identity.foreign_ca")
        public static let certificateWrongCity = Code("identity.wrong_city")
        public static let certificateNotYetValid = Code("identity.not_yet_valid")
        public static let certificateWrongUsage = Code("identity.wrong_eku")
        public static let certificateNoCity = Code("identity.missing_city")
        public static let certificateMalformedCity = Code("identity.malformed_city")
        public static let certificateRevoked = Code("identity.revoked")
        public static let keyMismatch = Code("identity.key_mismatch")
        public static let keyInvalid = Code("identity.key_invalid")
        public static let crlInvalid = Code("identity.crl_invalid")
        public static let unauthenticated = Code("auth.unauthenticated")
        public static let forbidden = Code("auth.forbidden")
        public static let tokenNotFound = Code("auth.token_not_found")
        public static let nodeNotRunning = Code("node.not_running")
        public static let nodeLocked = Code("node.locked")
        public static let nodeNotInitialized = Code("node.not_initialized")
        public static let nodeExists = Code("node.exists")
        public static let configInvalid = Code("config.invalid")
        public static let storeVersionTooNew = Code("store.version_too_new")
        public static let ledgerCorrupt = Code("ledger.corrupt")
        public static let policyInvalid = Code("policy.invalid")
        public static let internalError = Code("internal")
    }

    public let code: Code
    public let message: String
    public let file: String
    public let line: Int

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String { message }

    public static func == (lhs: CityMeshError, rhs: CityMeshError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
