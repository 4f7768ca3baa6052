public import Foundation
public import X509
import SwiftASN1

/// An X.509 certificate revocation list (RFC 5280 §5): the federation CA's signed list of the
/// certificates it has withdrawn.
///
/// The parts of RFC 5280 this file leans on:
/// - §5.1: `CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }`. The
///   signature covers the DER of `tbsCertList` exactly as received, so parsing keeps that slice
///   rather than re-encoding it; the inner and outer algorithm identifiers must be identical (§5.1.1.2).
/// - §5.1.2.4–5 (time rules of §4.1.2.5): dates up to 2049 are UTCTime, later ones GeneralizedTime,
///   in whole seconds.
/// - §5.1.2.6: `revokedCertificates` is left out, not sent empty, when nothing is revoked.
/// - §5.2: a CRL with a critical extension the reader does not understand must not be used. That
///   refuses delta CRLs (§5.2.4) and scoped CRLs (issuing distribution point, §5.2.5), whose lists
///   are incomplete by design, and indirect CRLs (certificate issuer entry extension, §5.3.3).
/// - §5.2.1, §5.2.3: CityMesh writes CRL Number and Authority Key Identifier, both non-critical.
/// - §6.3.3: the CRL issuer must match the CA by name, may sign CRLs (`cRLSign`) and its key must
///   verify the signature.
///
/// CRLs made by `openssl ca -gencrl` (v1 or v2, any extensions that are not critical, reason codes
/// on entries) parse; ones signed with an algorithm CityMesh cannot check parse but fail `verify`.
public struct RevocationList: Sendable {
    /// One revoked certificate: its serial number and when the CA revoked it.
    public struct Entry: Sendable, Hashable {
        public let serial: Certificate.SerialNumber
        public let revokedAt: Date

        /// An entry for `serial`, revoked at `revokedAt` (stored in whole seconds).
        public init(serial: Certificate.SerialNumber, revokedAt: Date) {
            self.serial = serial
            self.revokedAt = revokedAt
        }
    }

    /// 1 for a v1 CRL (no version field), 2 for a v2 CRL.
    public let version: Int
    /// The CA that issued the CRL.
    public let issuer: DistinguishedName
    /// When this CRL was issued.
    public let thisUpdate: Date
    /// When the CA promises the next CRL at the latest; `nil` when the CRL does not say.
    public let nextUpdate: Date?
    /// The CRL Number extension's big-endian magnitude, when present.
    public let numberBytes: [UInt8]?
    /// The key identifier of the Authority Key Identifier extension, when present.
    public let authorityKeyIdentifier: [UInt8]?
    /// The revoked certificates, in the order the CRL lists them.
    public let entries: [Entry]
    /// The CRL exactly as received (or as made), DER-encoded.
    public let derBytes: [UInt8]
    /// The signature algorithm's object identifier, dotted (`1.3.101.112` for Ed25519).
    public let signatureAlgorithmOID: String

    /// The signed part, a slice of `derBytes`: the signature is checked over these bytes as received.
    let tbsBytes: ArraySlice<UInt8>
    let signatureBytes: [UInt8]
    /// `nil` when the algorithm is one CityMesh cannot verify; `verify` then refuses the CRL.
    let signatureAlgorithm: Certificate.SignatureAlgorithm?
    /// Serial numbers are normalised by `Certificate.SerialNumber`, so a certificate's serial and
    /// the same serial read from a CRL hash alike.
    private let revokedSerials: Set<Certificate.SerialNumber>

    /// The CRL number as an `Int`, or `nil` when absent or too large (RFC 5280 allows 20 octets).
    public var number: Int? {
        guard let bytes = numberBytes, bytes.count <= MemoryLayout<Int>.size else { return nil }
        if bytes.count == MemoryLayout<Int>.size, let top = bytes.first, top & 0x80 != 0 { return nil }
        return bytes.reduce(0) { $0 << 8 | Int($1) }
    }

    /// When `serial` was revoked, if this CRL lists it.
    public func revocationDate(_ serial: Certificate.SerialNumber) -> Date? {
        entries.first { $0.serial == serial }?.revokedAt
    }

    /// Why this CRL must not replace `current`, the one in force, if it must not. An older CRL
    /// (a lower CRL number, or issued earlier) is validly signed too: taking it would bring back
    /// every certificate the federation revoked since — a rollback anyone holding the old file
    /// could cause by putting it in place.
    public func refusalToReplace(_ current: RevocationList) -> String? {
        switch (numberBytes.map(Self.magnitude), current.numberBytes.map(Self.magnitude)) {
        case (nil, .some(let old)):
            return "it has no CRL number, and the CRL in force has number \(Self.decimal(old))"
        case (.some(let new), .some(let old)) where Self.less(new, old):
            return "its CRL number \(Self.decimal(new)) is lower than \(Self.decimal(old)) of the CRL in force"
        default:
            break
        }
        if thisUpdate < current.thisUpdate {
            return "it was issued \(thisUpdate), before the CRL in force (\(current.thisUpdate))"
        }
        return nil
    }

    /// A DER INTEGER's bytes without leading zero bytes (CRL numbers are non-negative, up to 20 octets).
    static func magnitude(_ bytes: [UInt8]) -> [UInt8] { Array(bytes.drop { $0 == 0 }) }
    static func less(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.count != b.count ? a.count < b.count : a.lexicographicallyPrecedes(b) }
    static func decimal(_ bytes: [UInt8]) -> String {
        guard bytes.count <= 8 else { return "0x" + bytes.map { String(format: "%02x", $0) }.joined() }
        return String(bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// The CRL as a `-----BEGIN X509 CRL-----` PEM block.
    public var pemString: String {
        PEMDocument(type: Self.pemLabel, derBytes: derBytes).pemString
    }

    /// Whether the CRL lists `serial`.
    public func isRevoked(_ serial: Certificate.SerialNumber) -> Bool {
        revokedSerials.contains(serial)
    }
}

// MARK: - Making

extension RevocationList {
    /// Builds and signs a v2 CRL listing `entries`, issued by `ca` with its private key `key`.
    ///
    /// Times are written in whole seconds (fractions are dropped), so read them back from the result.
    public static func make(
        issuer ca: Certificate,
        key: Certificate.PrivateKey,
        entries: [Entry],
        number: Int,
        thisUpdate: Date,
        nextUpdate: Date
    ) throws -> RevocationList {
        guard key.publicKey == ca.publicKey else {
            throw CityMeshError(.keyMismatch, "the CA key does not match the CA certificate: use the ca.key made with ca.pem")
        }
        guard try mayIssueCRLs(ca) else {
            throw CityMeshError(
                .certificateInvalid,
                "the CA certificate's key usage does not include cRLSign, so its CRLs would be refused: re-issue the CA certificate with keyUsage cRLSign"
            )
        }
        guard number >= 0 else {
            throw CityMeshError(.invalidArgument, "CRL number \(number) is negative: CRL numbers count up from 0")
        }
        // Compared as encoded (whole seconds), so a sub-second gap cannot yield equal times.
        guard nextUpdate.timeIntervalSince1970.rounded(.down) > thisUpdate.timeIntervalSince1970.rounded(.down) else {
            throw CityMeshError(.invalidArgument, "nextUpdate \(nextUpdate) is not after thisUpdate \(thisUpdate): give the CRL a validity period")
        }
        var seen = Set<Certificate.SerialNumber>()
        for entry in entries where !seen.insert(entry.serial).inserted {
            throw CityMeshError(.invalidArgument, "serial \(entry.serial) is listed twice: list each revoked certificate once")
        }
        let algorithm = FederationPKI.signatureAlgorithm(for: key)
        guard let algorithmID = SignatureAlgorithmID(algorithm) else {
            throw CityMeshError(.keyInvalid, "CityMesh cannot sign CRLs with \(algorithm): use an Ed25519 or ECDSA CA key")
        }
        let extensions = try crlExtensions(ca: ca, number: number)

        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { tbs in
            try tbs.serialize(Int(1))  // Version v2: the CRL carries extensions (§5.1.2.1).
            try tbs.serialize(algorithmID)
            try tbs.serialize(ca.subject)
            try CRLTime.serialize(thisUpdate, into: &tbs)
            try CRLTime.serialize(nextUpdate, into: &tbs)
            if !entries.isEmpty {
                try tbs.appendConstructedNode(identifier: .sequence) { list in
                    for entry in entries {
                        try list.appendConstructedNode(identifier: .sequence) { revoked in
                            // ArraySlice<UInt8> encodes as an unsigned INTEGER, as serials are.
                            try revoked.serialize(entry.serial.bytes)
                            try CRLTime.serialize(entry.revokedAt, into: &revoked)
                        }
                    }
                }
            }
            try tbs.serialize(explicitlyTaggedWithTagNumber: 0, tagClass: .contextSpecific) { tagged in
                try tagged.serializeSequenceOf(extensions)
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try key.sign(bytes: tbsBytes, signatureAlgorithm: algorithm)

        var crl = DER.Serializer()
        try crl.appendConstructedNode(identifier: .sequence) { crl in
            // The TBS bytes were just produced by a DER.Serializer, so they are well-formed DER.
            crl.serializeRawBytes(tbsBytes)
            try crl.serialize(algorithmID)
            // `rawRepresentation` is what X.509 puts in the BIT STRING: the DER ECDSA-Sig-Value
            // for ECDSA, the 64 raw bytes for Ed25519 (RFC 8410 §6).
            try crl.serialize(ASN1BitString(bytes: signature.rawRepresentation[...]))
        }
        // Reading our own output back keeps one source of truth for every field.
        return try RevocationList(derEncoded: crl.serializedBytes, what: "the CRL just made")
    }

    private static func crlExtensions(ca: Certificate, number: Int) throws -> [Certificate.Extension] {
        var numberValue = DER.Serializer()
        try numberValue.serialize(number)
        var extensions = [
            Certificate.Extension(oid: ExtensionOID.crlNumber, critical: false, value: numberValue.serializedBytes[...])
        ]
        // §5.2.1 wants the AKI so readers can pick the right CA key; without an SKI on the CA
        // there is no identifier a reader could match, so the extension is left out.
        if let keyID = try ca.extensions.subjectKeyIdentifier?.keyIdentifier {
            extensions.append(try Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: keyID), critical: false))
        }
        return extensions
    }
}

// MARK: - Parsing

extension RevocationList {
    static let pemLabel = "X509 CRL"

    /// Reads a PEM file holding one `-----BEGIN X509 CRL-----` block; `what` names it in errors.
    public init(pemEncoded text: String, what: String = "the CRL") throws {
        let blocks = PEM.blocks(text).filter { $0.label == Self.pemLabel }
        guard let block = blocks.first else {
            throw Self.invalid(
                "\(what) holds no '-----BEGIN \(Self.pemLabel)-----' block: convert it with 'openssl crl -in <file> -outform PEM'"
            )
        }
        guard blocks.count == 1 else {
            throw Self.invalid("\(what) holds \(blocks.count) CRLs: keep only the federation CA's current CRL in it")
        }
        let document: PEMDocument
        do {
            document = try PEMDocument(pemString: block.pem)
        } catch {
            throw Self.invalid("\(what) has a damaged PEM block (\(error)): get a fresh copy from the federation's CA operator")
        }
        try self.init(derEncoded: document.derBytes, what: what)
    }

    /// Reads a DER-encoded CRL; `what` names it in errors.
    public init(derEncoded der: [UInt8], what: String = "the CRL") throws {
        do {
            try self.init(parsing: der, what: what)
        } catch let error as CityMeshError {
            throw error
        } catch {
            throw Self.invalid(
                "\(what) is not a well-formed DER X.509 CRL (\(error)): get a fresh copy from the federation's CA operator"
            )
        }
    }

    private init(parsing der: [UInt8], what: String) throws {
        // DER.parse refuses trailing bytes and truncated lengths, so `der` is exactly one CRL.
        let root = try DER.parse(der)
        let (tbsNode, outerAlgorithm, signature) = try DER.sequence(root, identifier: .sequence) { nodes in
            guard let tbs = nodes.next(), let algorithm = nodes.next() else {
                throw ASN1Error.invalidASN1Object(reason: "CertificateList is missing fields")
            }
            return (tbs, algorithm, try ASN1BitString(derEncoded: &nodes))
        }
        guard signature.paddingBits == 0 else {
            throw Self.invalid("\(what) has a signature that is not a whole number of bytes: get a fresh copy from the federation's CA operator")
        }
        let tbs = try TBSCertList(tbsNode, what: what)
        guard tbs.algorithm.encodedBytes == outerAlgorithm.encodedBytes else {
            throw Self.invalid("\(what) names two different signature algorithms (RFC 5280 §5.1.1.2): it was altered or badly made; ask the CA operator for a new one")
        }
        let algorithmID = try SignatureAlgorithmID(derEncoded: outerAlgorithm)

        self.version = tbs.version
        self.issuer = tbs.issuer
        self.thisUpdate = tbs.thisUpdate
        self.nextUpdate = tbs.nextUpdate
        self.numberBytes = tbs.numberBytes
        self.authorityKeyIdentifier = tbs.authorityKeyIdentifier
        self.entries = tbs.entries
        self.derBytes = der
        self.signatureAlgorithmOID = algorithmID.oid.description
        self.tbsBytes = tbsNode.encodedBytes
        self.signatureBytes = Array(signature.bytes)
        self.signatureAlgorithm = algorithmID.certificateAlgorithm
        self.revokedSerials = Set(tbs.entries.map(\.serial))
    }

    static func invalid(_ message: String, file: String = #fileID, line: Int = #line) -> CityMeshError {
        CityMeshError(.crlInvalid, message, file: file, line: line)
    }

    /// RFC 5280 §6.3.3 (f): a CA whose key usage is stated must state cRLSign to sign CRLs.
    static func mayIssueCRLs(_ ca: Certificate) throws -> Bool {
        guard let usage = try ca.extensions.keyUsage else { return true }
        return usage.cRLSign
    }
}

// MARK: - Verifying

extension RevocationList {
    /// Checks that `ca` issued this CRL: same name, allowed to sign CRLs, and its key signed these exact bytes;
    /// `what` names the CRL in errors (e.g. "fed/crl.pem").
    public func verify(issuer ca: Certificate, what: String = "the CRL") throws {
        guard issuer == ca.subject else {
            throw Self.invalid(
                "\(what) was issued by '\(issuer)', not by the federation CA '\(ca.subject)': get the CRL from the federation's CA operator"
            )
        }
        let allowed: Bool
        do {
            allowed = try Self.mayIssueCRLs(ca)
        } catch {
            throw Self.invalid("the federation CA certificate has an unreadable key usage extension (\(error)): check the CA certificate")
        }
        guard allowed else {
            throw Self.invalid(
                "the federation CA certificate's key usage does not include cRLSign, so it may not sign CRLs: re-issue the CA certificate with keyUsage cRLSign"
            )
        }
        guard let algorithm = signatureAlgorithm else {
            throw Self.invalid(
                "\(what) is signed with algorithm \(signatureAlgorithmOID), which CityMesh cannot check: ask the CA operator to sign CRLs with Ed25519 or ECDSA"
            )
        }
        guard ca.publicKey.isValidSignature(signatureBytes, for: tbsBytes, signatureAlgorithm: algorithm) else {
            throw Self.invalid("\(what) is not signed by the federation CA: get the CRL from the federation's CA operator")
        }
    }
}

extension RevocationList: Hashable {
    /// Two CRLs are equal when their encodings are: every field is read from `derBytes`.
    public static func == (lhs: RevocationList, rhs: RevocationList) -> Bool { lhs.derBytes == rhs.derBytes }
    /// Hashes the encoding, consistent with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(derBytes) }
}

// MARK: - ASN.1 pieces

/// Extension OIDs CityMesh reads (RFC 5280 §5.2, §5.3).
private enum ExtensionOID {
    static let authorityKeyIdentifier: ASN1ObjectIdentifier = "2.5.29.35"
    static let crlNumber: ASN1ObjectIdentifier = "2.5.29.20"
    static let reasonCode: ASN1ObjectIdentifier = "2.5.29.21"
    static let invalidityDate: ASN1ObjectIdentifier = "2.5.29.24"
}

/// The fields of `TBSCertList` (RFC 5280 §5.1.2).
private struct TBSCertList {
    var version = 1
    var algorithm: ASN1Node
    var issuer: DistinguishedName
    var thisUpdate: Date
    var nextUpdate: Date?
    var entries: [RevocationList.Entry] = []
    var numberBytes: [UInt8]?
    var authorityKeyIdentifier: [UInt8]?

    init(_ node: ASN1Node, what: String) throws {
        self = try DER.sequence(node, identifier: .sequence) { nodes in
            // `version` is OPTIONAL and absent for v1, so look before consuming.
            var lookahead = nodes
            var version = 1
            if let first = lookahead.next(), first.identifier == .integer {
                let raw = try Int(derEncoded: first)
                guard raw == 1 else {
                    throw RevocationList.invalid("\(what) says it is version \(raw.saturatingAdd(1)); only v1 and v2 CRLs exist: get a fresh copy from the federation's CA operator")
                }
                version = 2
                nodes = lookahead
            }
            guard let algorithm = nodes.next(), let issuerNode = nodes.next() else {
                throw ASN1Error.invalidASN1Object(reason: "TBSCertList has no signature algorithm or issuer")
            }
            // The node form: the iterator form goes through a deprecated implicit-tagging conformance.
            let issuer = try DistinguishedName(derEncoded: issuerNode)
            guard let thisUpdateNode = nodes.next() else {
                throw ASN1Error.invalidASN1Object(reason: "TBSCertList has no thisUpdate")
            }
            var tbs = TBSCertList(algorithm: algorithm, issuer: issuer, thisUpdate: try CRLTime.parse(thisUpdateNode))
            tbs.version = version

            lookahead = nodes
            if let next = lookahead.next(), CRLTime.isTime(next) {
                tbs.nextUpdate = try CRLTime.parse(next)
                nodes = lookahead
            }
            lookahead = nodes
            if let next = lookahead.next(), next.identifier == .sequence {
                tbs.entries = try DER.sequence(next, identifier: .sequence) { list in
                    var entries: [RevocationList.Entry] = []
                    while let entry = list.next() {
                        entries.append(try Self.entry(entry, version: version, what: what))
                    }
                    return entries
                }
                nodes = lookahead
            }
            let extensions = try DER.optionalExplicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { node in
                try DER.sequence(of: Certificate.Extension.self, identifier: .sequence, rootNode: node)
            }
            if let extensions {
                try tbs.read(extensions, version: version, what: what)
            }
            return tbs
        }
    }

    private init(algorithm: ASN1Node, issuer: DistinguishedName, thisUpdate: Date) {
        self.algorithm = algorithm
        self.issuer = issuer
        self.thisUpdate = thisUpdate
    }

    private mutating func read(_ extensions: [Certificate.Extension], version: Int, what: String) throws {
        try Self.check(extensions, known: [ExtensionOID.crlNumber, ExtensionOID.authorityKeyIdentifier], version: version, what: what, place: "")
        for ext in extensions {
            switch ext.oid {
            case ExtensionOID.crlNumber:
                // ArraySlice<UInt8> parses an unsigned INTEGER and refuses negative ones (§5.2.3).
                numberBytes = Array(try ArraySlice<UInt8>(derEncoded: ext.value))
            case ExtensionOID.authorityKeyIdentifier:
                authorityKeyIdentifier = try AuthorityKeyIdentifier(ext).keyIdentifier.map(Array.init)
            default:
                continue
            }
        }
    }

    private static func entry(_ node: ASN1Node, version: Int, what: String) throws -> RevocationList.Entry {
        try DER.sequence(node, identifier: .sequence) { fields in
            let serial = try ArraySlice<UInt8>(derEncoded: &fields)
            guard let dateNode = fields.next() else {
                throw ASN1Error.invalidASN1Object(reason: "revoked certificate has no revocation date")
            }
            let revokedAt = try CRLTime.parse(dateNode)
            if let extensionsNode = fields.next() {
                let extensions = try DER.sequence(of: Certificate.Extension.self, identifier: .sequence, rootNode: extensionsNode)
                // Reason codes and invalidity dates do not change whether the certificate is revoked.
                try check(extensions, known: [ExtensionOID.reasonCode, ExtensionOID.invalidityDate], version: version, what: what, place: " on serial \(Certificate.SerialNumber(bytes: serial))")
            }
            return RevocationList.Entry(serial: Certificate.SerialNumber(bytes: serial), revokedAt: revokedAt)
        }
    }

    /// §5.2: unknown critical extensions make a CRL unusable; §4.2: no extension twice; §5.1.2.1: v2 only.
    private static func check(_ extensions: [Certificate.Extension], known: Set<ASN1ObjectIdentifier>, version: Int, what: String, place: String) throws {
        guard version == 2 else {
            throw RevocationList.invalid("\(what) has extensions\(place) but says it is a v1 CRL (RFC 5280 §5.1.2.1): ask the CA operator for a well-formed v2 CRL")
        }
        var seen = Set<ASN1ObjectIdentifier>()
        for ext in extensions {
            guard seen.insert(ext.oid).inserted else {
                throw RevocationList.invalid("\(what) has extension \(ext.oid) twice\(place): ask the CA operator for a well-formed CRL")
            }
            if ext.critical, !known.contains(ext.oid) {
                throw RevocationList.invalid(
                    "\(what) has critical extension \(ext.oid)\(place), which CityMesh does not understand (delta, partitioned and indirect CRLs are not supported): ask the CA operator for a complete CRL without it"
                )
            }
        }
    }
}

/// `AlgorithmIdentifier` for signatures, and the algorithms CityMesh can verify.
private struct SignatureAlgorithmID: DERSerializable {
    var oid: ASN1ObjectIdentifier
    var certificateAlgorithm: Certificate.SignatureAlgorithm?

    private static let ed25519: ASN1ObjectIdentifier = "1.3.101.112"
    private static let ecdsaWithSHA256: ASN1ObjectIdentifier = "1.2.840.10045.4.3.2"
    private static let ecdsaWithSHA384: ASN1ObjectIdentifier = "1.2.840.10045.4.3.3"
    private static let ecdsaWithSHA512: ASN1ObjectIdentifier = "1.2.840.10045.4.3.4"
    private static let sha256WithRSA: ASN1ObjectIdentifier = "1.2.840.113549.1.1.11"
    private static let sha384WithRSA: ASN1ObjectIdentifier = "1.2.840.113549.1.1.12"
    private static let sha512WithRSA: ASN1ObjectIdentifier = "1.2.840.113549.1.1.13"

    /// The identifier CityMesh writes; only Ed25519 and ECDSA, whose parameters are absent (RFC 8410 §3, RFC 5758 §3.2).
    init?(_ algorithm: Certificate.SignatureAlgorithm) {
        switch algorithm {
        case .ed25519: oid = Self.ed25519
        case .ecdsaWithSHA256: oid = Self.ecdsaWithSHA256
        case .ecdsaWithSHA384: oid = Self.ecdsaWithSHA384
        case .ecdsaWithSHA512: oid = Self.ecdsaWithSHA512
        default: return nil
        }
        certificateAlgorithm = algorithm
    }

    /// Any identifier parses; `certificateAlgorithm` stays nil unless the OID and its parameters are
    /// ones swift-certificates can verify (RSA with SHA-1 is left out on purpose).
    init(derEncoded node: ASN1Node) throws {
        let (oid, parameters) = try DER.sequence(node, identifier: .sequence) { nodes in
            (try ASN1ObjectIdentifier(derEncoded: &nodes), nodes.next())
        }
        self.oid = oid
        let parametersAbsent = parameters == nil
        let parametersNullOrAbsent = parameters == nil || parameters?.identifier == .null
        switch oid {
        case Self.ed25519 where parametersAbsent: certificateAlgorithm = .ed25519
        case Self.ecdsaWithSHA256 where parametersAbsent: certificateAlgorithm = .ecdsaWithSHA256
        case Self.ecdsaWithSHA384 where parametersAbsent: certificateAlgorithm = .ecdsaWithSHA384
        case Self.ecdsaWithSHA512 where parametersAbsent: certificateAlgorithm = .ecdsaWithSHA512
        case Self.sha256WithRSA where parametersNullOrAbsent: certificateAlgorithm = .sha256WithRSAEncryption
        case Self.sha384WithRSA where parametersNullOrAbsent: certificateAlgorithm = .sha384WithRSAEncryption
        case Self.sha512WithRSA where parametersNullOrAbsent: certificateAlgorithm = .sha512WithRSAEncryption
        default: certificateAlgorithm = nil
        }
    }

    func serialize(into coder: inout DER.Serializer) throws {
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(oid)
        }
    }
}

/// RFC 5280 `Time`: UTCTime for 1950–2049, GeneralizedTime otherwise, always UTC and whole seconds.
private enum CRLTime {
    static func isTime(_ node: ASN1Node) -> Bool {
        node.identifier == .utcTime || node.identifier == .generalizedTime
    }

    static func serialize(_ date: Date, into coder: inout DER.Serializer) throws {
        let interval = date.timeIntervalSince1970.rounded(.down)
        // GeneralizedTime's four-digit year bounds what a CRL can say.
        guard interval.isFinite, interval >= -62_167_219_200, interval < 253_402_300_800 else {
            throw CityMeshError(.invalidArgument, "\(date) is outside the years 0000–9999 that a CRL can state: use a realistic date")
        }
        let seconds = Int(interval)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let inDay = seconds - days * 86_400
        let (year, month, day) = RFC3339.civilFromDays(days)
        let (hours, minutes, secs) = (inDay / 3600, inDay % 3600 / 60, inDay % 60)
        if (1950...2049).contains(year) {
            try coder.serialize(UTCTime(year: year, month: month, day: day, hours: hours, minutes: minutes, seconds: secs))
        } else {
            try coder.serialize(
                GeneralizedTime(year: year, month: month, day: day, hours: hours, minutes: minutes, seconds: secs, fractionalSeconds: 0)
            )
        }
    }

    static func parse(_ node: ASN1Node) throws -> Date {
        let (year, month, day, hours, minutes, seconds, fraction): (Int, Int, Int, Int, Int, Int, Double)
        switch node.identifier {
        case .utcTime:
            let t = try UTCTime(derEncoded: node)
            (year, month, day, hours, minutes, seconds, fraction) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds, 0)
        case .generalizedTime:
            let t = try GeneralizedTime(derEncoded: node)
            (year, month, day, hours, minutes, seconds, fraction) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds, t.fractionalSeconds)
        default:
            throw ASN1Error.unexpectedFieldType(node.identifier)
        }
        let days = RFC3339.daysFromCivil(year: year, month: month, day: day)
        let interval = Double(days * 86_400 + hours * 3600 + minutes * 60 + seconds) + fraction
        return Date(timeIntervalSince1970: interval)
    }
}
