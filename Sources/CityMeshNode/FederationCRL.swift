public import CityMeshCore
import Foundation
public import X509

/// The federation CRL file: read and checked by nodes, written by `citymesh federation revoke`.
public enum FederationCRL {
    /// Reads the CRL at `path` and checks it is signed by one of `roots`. A missing file is not an
    /// error (nil): the federation may not have revoked anything yet.
    @discardableResult
    public static func load(path: String, roots: [Certificate]) throws -> RevocationList? {
        guard Files.exists(path) else { return nil }
        let crl = try RevocationList(pemEncoded: try Files.read(path, what: "the federation CRL"), what: path)
        var lastError: (any Error)?
        for root in roots {
            do {
                try crl.verify(issuer: root, what: path)
                return crl
            } catch {
                lastError = error
            }
        }
        throw lastError ?? CityMeshError(.crlInvalid, "\(path) could not be checked: no federation CA certificate given")
    }

    /// The CRL to put in force and what is wrong, if anything. Revocation fails closed: the last
    /// good CRL (`inForce`, or the copy kept in the node directory at `keptPath`) stays in force
    /// when the file disappears, fails to parse or to verify, or is older than it; each of those
    /// is an alert. Without a last good CRL, a file that is there but bad is an error (the node
    /// does not start with it), and a missing file means nothing is revoked yet.
    public struct Resolution: Sendable {
        public let crl: RevocationList?
        /// Why the file was not taken (the last good CRL stays in force), or nil.
        public let problem: String?
        /// The CRL in force is past its nextUpdate: it still applies, but the federation has
        /// likely issued a newer one.
        public let stale: String?

        public var alerts: [String] { [problem, stale].compactMap { $0 } }
    }

    public static func resolve(path: String?, roots: [Certificate], inForce: RevocationList?, keptPath: String, now: Date = Date()) throws -> Resolution {
        let kept = inForce ?? keptCopy(keptPath, roots: roots)
        func staleness(_ crl: RevocationList?) -> String? {
            guard let crl, let next = crl.nextUpdate, next < now else { return nil }
            return "the federation CRL in force is past its next update (\(next)): fetch the CA's current CRL (or run 'citymesh federation revoke' at the CA) and send SIGHUP"
        }
        func keep(_ why: String) -> Resolution {
            Resolution(crl: kept, problem: "\(why); the last good CRL (\(kept.map { "number \($0.number.map(String.init) ?? "none"), \($0.entries.count) revoked" } ?? "")) stays in force", stale: staleness(kept))
        }
        guard let path else { return Resolution(crl: nil, problem: nil, stale: nil) }
        let crl: RevocationList?
        do { crl = try load(path: path, roots: roots) } catch {
            guard kept != nil else { throw error }
            return keep("\(path) could not be used (\(error))")
        }
        guard let crl else {
            guard kept != nil else { return Resolution(crl: nil, problem: nil, stale: nil) }
            return keep("\(path) is missing: put the federation's CRL back there")
        }
        if let kept, let why = crl.refusalToReplace(kept) {
            return keep("\(path) is refused: \(why); get the federation's current CRL")
        }
        if kept?.derBytes != crl.derBytes {
            try? Files.write(crl.pemString, to: keptPath, mode: 0o644)
        }
        return Resolution(crl: crl, problem: nil, stale: staleness(crl))
    }

    /// The node's copy of the last CRL it put in force, if it is there and still verifies.
    static func keptCopy(_ path: String, roots: [Certificate]) -> RevocationList? {
        (try? load(path: path, roots: roots)) ?? nil
    }

    /// Adds the certificate at `certPath` to the CRL at `crlPath` (created if missing), signed by the
    /// CA in `caDir`. Returns the new CRL and whether the certificate was already listed.
    public static func revoke(caDir: String, certPath: String, crlPath: String?, now: Date = Date(), validDays: Int = 30) throws -> (crl: RevocationList, path: String, serial: String, alreadyRevoked: Bool) {
        let caCertPath = (caDir as NSString).appendingPathComponent("ca.pem")
        let caKeyPath = (caDir as NSString).appendingPathComponent("ca.key")
        let ca = try PEM.certificates(try Files.read(caCertPath, what: "the CA certificate"), what: caCertPath)[0]
        let caKey = try PEM.privateKey(try Files.read(caKeyPath, what: "the CA key"), what: caKeyPath)
        let target = try PEM.certificates(try Files.read(certPath, what: "the certificate to revoke"), what: certPath)[0]
        guard target.issuer == ca.subject, ca.publicKey.isValidSignature(target.signature, for: target) else {
            throw CityMeshError(.certificateForeignCA, "\(certPath) was not issued by the CA in \(caDir): revoke it with the CA that issued it")
        }
        let path = crlPath ?? (caDir as NSString).appendingPathComponent("crl.pem")
        let existing = try load(path: path, roots: [ca])
        var entries = existing?.entries ?? []
        let already = entries.contains { $0.serial == target.serialNumber }
        if !already { entries.append(.init(serial: target.serialNumber, revokedAt: now)) }
        let crl = try RevocationList.make(
            issuer: ca, key: caKey, entries: entries, number: (existing?.number ?? 0) + 1,
            thisUpdate: now, nextUpdate: now.addingTimeInterval(Double(validDays) * 86_400))
        try Files.write(crl.pemString, to: path, mode: 0o644)
        return (crl, path, "\(target.serialNumber)", already)
    }
}
