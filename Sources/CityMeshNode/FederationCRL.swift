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
