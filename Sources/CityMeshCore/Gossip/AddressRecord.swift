public import Crypto
public import X509

/// Where a city can be reached, signed by the city itself (issue 20, docs/protocol.md §7c.1).
///
/// A node announces its `advertise` addresses in one record signed with its node key; members
/// pass records on, and a node dials an address only from a record whose signature it checked
/// against that city's certificate (from the federation CA, relayed with the record when needed).
/// So no relay can redirect a city's traffic: it can only pass on, or withhold, what the city
/// signed. Records are versioned: a city signs a new record with a higher version whenever its
/// addresses change (the node uses the time of signing, in milliseconds), and everyone keeps the
/// highest (``AddressBook``).
///
/// Wire form: body = `u8 1` (format), `str8 city`, `u64 version`, `u8 count` (1…8), count ×
/// `str8 address` (`host:port`); then `u8 algorithm` (1 Ed25519, 2 ECDSA P-256), `u16 signature
/// length`, signature — over `"citymesh-address/v1\n" || body`.
public struct AddressRecord: Sendable, Equatable, Hashable {
    public static let context = Array("citymesh-address/v1\n".utf8)
    /// Most addresses in one record.
    public static let maxAddresses = 8
    /// The largest version a record may carry (2^62): far above any time in milliseconds, far
    /// below where arithmetic on it could overflow.
    public static let maxVersion: UInt64 = 1 << 62
    /// Most signature bytes (a DER P-256 signature is at most 72).
    public static let maxSignature = 128

    public let city: CitySlug
    public let version: UInt64
    public let addresses: [String]
    public let algorithm: UInt8
    public let signature: [UInt8]

    /// The signed part.
    public var body: [UInt8] { Self.body(city: city, version: version, addresses: addresses) }

    static func body(city: CitySlug, version: UInt64, addresses: [String]) -> [UInt8] {
        var w = WireWriter(reservingCapacity: 64)
        w.u8(1)
        w.str8(city.rawValue)
        w.u64(version)
        w.u8(UInt8(addresses.count))
        for a in addresses { w.str8(a) }
        return w.bytes
    }

    /// Signs a record of `addresses` for `city` (checked: 1…8 valid, distinct `host:port`).
    public static func sign(city: CitySlug, version: UInt64, addresses: [String], key: Agreement.Key) throws -> AddressRecord {
        if let why = refusal(version: version, addresses: addresses) { throw CityMeshError(.invalidArgument, why) }
        let (algorithm, signature) = try key.signRaw(context + body(city: city, version: version, addresses: addresses))
        return AddressRecord(city: city, version: version, addresses: addresses, algorithm: algorithm, signature: signature)
    }

    init(city: CitySlug, version: UInt64, addresses: [String], algorithm: UInt8, signature: [UInt8]) {
        self.city = city
        self.version = version
        self.addresses = addresses
        self.algorithm = algorithm
        self.signature = signature
    }

    /// Checks the signature against the certificate of `city` (the caller finds it and checks it
    /// against the federation's trust: CA, revocation, validity).
    public func verify(certificate: Certificate) throws(Agreement.SignatureError) {
        try Agreement.Key.verifyRaw(algorithm: algorithm, signature: signature, message: Self.context + body, certificate: certificate)
    }

    public var encoded: [UInt8] {
        var w = WireWriter(reservingCapacity: 80 + signature.count)
        w.raw(body)
        w.u8(algorithm)
        w.u16(UInt16(signature.count))
        w.raw(signature)
        return w.bytes
    }

    /// `encoded.count`, without encoding.
    public var encodedCount: Int {
        func str8(_ s: String) -> Int { 1 + Swift.min(s.utf8.count, 255) }
        return 1 + str8(city.rawValue) + 8 + 1 + addresses.reduce(0) { $0 + str8($1) } + 1 + 2 + signature.count
    }

    /// Decodes one record from `r` (a record may be followed by others, or by more of a message).
    public static func decode(from r: inout WireReader) throws(WireError) -> AddressRecord {
        let format = try r.u8("address record format")
        guard format == 1 else { throw .malformed("unknown address record format \(format)") }
        let text = try r.str8("address record city")
        guard let city = try? CitySlug(text) else { throw .malformed("address record city '\(text)' is not a city slug") }
        let version = try r.u64("address record version")
        let n = Int(try r.u8("address count"))
        guard n <= maxAddresses else { throw .malformed("address record of \(city): \(n) addresses; at most \(maxAddresses)") }
        var addresses: [String] = []
        for _ in 0..<n { addresses.append(try r.str8("address")) }
        if let why = refusal(version: version, addresses: addresses) { throw .malformed("address record of \(city): \(why)") }
        let algorithm = try r.u8("address record signature algorithm")
        guard algorithm == 1 || algorithm == 2 else { throw .malformed("unknown signature algorithm \(algorithm) in the address record of \(city)") }
        let length = Int(try r.u16("address record signature length"))
        guard length > 0, length <= maxSignature else { throw .malformed("a \(length)-byte signature in the address record of \(city)") }
        var signature: [UInt8] = []
        signature.reserveCapacity(length)
        for _ in 0..<length { signature.append(try r.u8("address record signature")) }
        return AddressRecord(city: city, version: version, addresses: addresses, algorithm: algorithm, signature: signature)
    }

    /// Decodes exactly one record.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> AddressRecord {
        var r = WireReader(bytes)
        let record = try decode(from: &r)
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after an address record") }
        return record
    }

    /// Why a record with these fields is not valid (nil: it is): a version up to 2^62, one to
    /// eight distinct addresses, each `host:port` with a host of 1…253 printable characters
    /// without spaces and a port 1…65535.
    public static func refusal(version: UInt64, addresses: [String]) -> String? {
        guard version <= maxVersion else { return "version \(version) is above the largest a record may carry (\(maxVersion))" }
        guard !addresses.isEmpty else { return "no address" }
        guard addresses.count <= maxAddresses else { return "\(addresses.count) addresses; at most \(maxAddresses)" }
        guard Set(addresses).count == addresses.count else { return "an address is listed twice" }
        for a in addresses {
            if let why = addressRefusal(a) { return why }
        }
        return nil
    }

    /// Why `address` is not a dialable `host:port` (nil: it is). An IPv6 host is written in brackets.
    public static func addressRefusal(_ address: String) -> String? {
        // The wire gives an address one length byte: a longer one would be cut short, not refused.
        guard address.utf8.count <= 255 else { return "'\(address.prefix(80))…' is longer than 255 bytes" }
        guard let colon = address.lastIndex(of: ":"), colon != address.startIndex else { return "'\(address.prefix(80))' is not HOST:PORT" }
        let host = address[..<colon], portText = address[address.index(after: colon)...]
        guard portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText), (1...65535).contains(port) else {
            return "'\(address.prefix(80))' has no port 1-65535"
        }
        guard host.utf8.count <= 253 else { return "the host of '\(address.prefix(80))…' is longer than 253 bytes" }
        guard host.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f }) else {
            return "the host of '\(address.prefix(80))' has spaces, control or non-ASCII characters"
        }
        if host.contains(":") && !(host.hasPrefix("[") && host.hasSuffix("]")) { return "write the IPv6 host of '\(address.prefix(80))' in brackets" }
        return nil
    }
}

/// The address records a node holds: one per city, the highest version, bounded. Pure: the
/// shell checks each record's signature (``learn(_:nowMillis:verify:)`` calls back) and dials
/// what it holds.
public struct AddressBook: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// New, or a higher version than held.
        case learned
        /// The one held, again.
        case known
        /// A lower version than held (or a loser of a same-version conflict).
        case stale
        /// Two different records of one city under one version: kept is the one whose encoding
        /// is greater, so every node keeps the same. The city signed both: logged, not trusted more.
        case conflict
        case refused(String)
    }

    public let me: CitySlug
    /// Most cities held: records of further cities are refused.
    public let maxCities: Int
    /// How far ahead of the receiver's clock a version may be (milliseconds): a record signed
    /// with a far-future version would stay ahead of every later record of that city.
    public static let maxAheadMillis: UInt64 = 600_000
    public private(set) var records: [CitySlug: AddressRecord] = [:]

    public init(me: CitySlug, maxCities: Int = 10_000) {
        self.me = me
        self.maxCities = maxCities
    }

    /// Takes `record` if it is better than the one held. `verify` checks its signature against
    /// its city's certificate under the federation's trust (nil: valid; else why not); it is
    /// called only for a record that would be kept. Records of this node's own city are not
    /// taken from others (it signs its own).
    public mutating func learn(_ record: AddressRecord, nowMillis: UInt64, verify: (AddressRecord) -> String?) -> Outcome {
        guard record.city != me else { return .refused("a record of this node's own city comes only from itself") }
        if let why = AddressRecord.refusal(version: record.version, addresses: record.addresses) { return .refused(why) }
        guard record.version <= nowMillis.saturatingAdd(Self.maxAheadMillis) else {
            return .refused("version \(record.version) of \(record.city) is more than \(Self.maxAheadMillis / 1000) s ahead of this node's clock")
        }
        var outcome = Outcome.learned
        if let held = records[record.city] {
            if held == record { return .known }
            if held.version > record.version { return .stale }
            if held.version == record.version { outcome = .conflict }
        } else if records.count >= maxCities {
            return .refused("\(records.count) cities held already (at most \(maxCities))")
        }
        // Checked before anything is concluded from it: a conflict too must be the city's own.
        if let why = verify(record) { return .refused(why) }
        if outcome == .conflict, let held = records[record.city], record.encoded.lexicographicallyPrecedes(held.encoded) { return .conflict }
        records[record.city] = record
        return outcome
    }

    /// Forgets a city (its certificate was revoked, say).
    public mutating func forget(_ city: CitySlug) { records[city] = nil }
}
