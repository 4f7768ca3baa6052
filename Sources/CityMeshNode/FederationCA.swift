public import CityMeshCore
import Crypto
import Foundation
import X509
import SwiftASN1

/// Key types CityMesh makes.
public enum KeyType: String, Sendable, CaseIterable {
    case ed25519, p256

    func generate() -> Certificate.PrivateKey {
        switch self {
        case .ed25519: Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
        case .p256: Certificate.PrivateKey(P256.Signing.PrivateKey())
        }
    }
}

/// `citymesh federation …`: the federation CA on disk (`ca.pem`, `ca.key`).
public enum FederationCA {
    /// Creates a new root CA in `dir`; refuses to overwrite an existing one.
    public static func create(dir: String, name: String, keyType: KeyType, now: Date = Date()) throws -> (cert: String, key: String) {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.count <= 64 else {
            throw CityMeshError(.invalidArgument, "the federation name must be 1-64 characters, e.g. --name \"Yangtze Delta\"")
        }
        let certPath = (dir as NSString).appendingPathComponent("ca.pem")
        let keyPath = (dir as NSString).appendingPathComponent("ca.key")
        if Files.exists(certPath) || Files.exists(keyPath) {
            throw CityMeshError(.fileExists, "\(dir) already holds a federation CA: choose another --out, or remove it if you really mean to replace the federation's root")
        }
        let key = keyType.generate()
        let cert = try FederationPKI.makeRootCA(name: trimmed, key: key, serial: randomSerial(), now: now)
        try Files.makeDirectory(dir)
        try Files.write(try key.serializeAsPEM().pemString + "\n", to: keyPath, mode: 0o600)
        try Files.write(try cert.serializeAsPEM().pemString + "\n", to: certPath, mode: 0o644)
        return (certPath, keyPath)
    }

    /// Issues a node certificate and key for `city` into `out` (`node.pem`, `node.key`).
    public static func issue(
        caDir: String, city: CitySlug, hosts: [String], out: String, keyType: KeyType, days: Int, now: Date = Date()
    ) throws -> (cert: String, key: String, notValidAfter: Date) {
        let caCertPath = (caDir as NSString).appendingPathComponent("ca.pem")
        let caKeyPath = (caDir as NSString).appendingPathComponent("ca.key")
        let ca = try PEM.certificates(try Files.read(caCertPath, what: "the CA certificate"), what: caCertPath)[0]
        let caKey = try PEM.privateKey(try Files.read(caKeyPath, what: "the CA key"), what: caKeyPath)
        guard (1...3650).contains(days) else {
            throw CityMeshError(.invalidArgument, "--days must be from 1 to 3650")
        }
        for h in hosts where h.isEmpty || h.contains(" ") || h.contains("/") {
            throw CityMeshError(.invalidArgument, "invalid --host '\(h)': give a DNS name or an IP address")
        }
        let certPath = (out as NSString).appendingPathComponent("node.pem")
        let keyPath = (out as NSString).appendingPathComponent("node.key")
        if Files.exists(certPath) || Files.exists(keyPath) {
            throw CityMeshError(.fileExists, "\(out) already holds a node certificate: choose another --out or remove the old files")
        }
        let key = keyType.generate()
        let cert = try FederationPKI.issueNode(
            city: city, hosts: hosts, publicKey: key.publicKey, ca: ca, caKey: caKey, serial: randomSerial(), now: now, validDays: days)
        try Files.makeDirectory(out)
        try Files.write(try key.serializeAsPEM().pemString + "\n", to: keyPath, mode: 0o600)
        try Files.write(try cert.serializeAsPEM().pemString + "\n", to: certPath, mode: 0o644)
        return (certPath, keyPath, cert.notValidAfter)
    }

    /// 16 random bytes, positive as DER integers require.
    static func randomSerial() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        bytes[0] = (bytes[0] & 0x7f) | 0x01
        return bytes
    }
}
