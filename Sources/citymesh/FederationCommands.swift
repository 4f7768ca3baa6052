import ArgumentParser
import CityMeshCore
import CityMeshNode
import Foundation

struct Federation: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the federation's root CA and issue node certificates.",
        subcommands: [FederationInit.self, FederationIssue.self, FederationRevoke.self])
}

extension KeyType: ExpressibleByArgument {}

struct FederationInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a federation root CA (ca.pem, and ca.key with mode 0600).",
        discussion: """
            Example:
              citymesh federation init --out fed --name "Yangtze Delta"

            Keep ca.key offline: whoever holds it can admit cities to the federation.
            An existing PKI works too: give its CA certificate to 'citymesh init --ca'.
            """)

    @Option(help: "Directory to write ca.pem and ca.key into.") var out: String
    @Option(help: "The federation's name, e.g. \"Yangtze Delta\".") var name: String
    @Option(name: .customLong("key-type"), help: "ed25519 (default) or p256.") var keyType: KeyType = .ed25519

    func run() async throws {
        let (cert, key) = try FederationCA.create(dir: out, name: name, keyType: keyType)
        print("created federation CA '\(name)'")
        print("  certificate: \(cert)")
        print("  private key: \(key) (mode 0600; keep it offline)")
        print("next: citymesh federation issue --ca \(out) --city <slug> --host <hostname> --out <dir>")
    }
}

struct FederationIssue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Issue a node certificate and key for a city (node.pem, node.key).",
        discussion: """
            Example:
              citymesh federation issue --ca fed --city hangzhou --host localhost --out hz-cert

            The certificate carries the SAN URI urn:citymesh:city:<slug>, the given hosts as DNS or
            IP names, and extended key usage serverAuth + clientAuth.
            """)

    @Option(help: "The federation CA directory (holding ca.pem and ca.key).") var ca: String
    @Option(help: "The city's slug, e.g. hangzhou.") var city: String
    @Option(help: "A DNS name or IP address the node is reached at (repeatable).") var host: [String] = []
    @Option(help: "Directory to write node.pem and node.key into.") var out: String
    @Option(name: .customLong("key-type"), help: "ed25519 (default) or p256.") var keyType: KeyType = .ed25519
    @Option(help: "Validity in days.") var days: Int = 365

    func run() async throws {
        let slug = try CitySlug(city)
        let (cert, key, notAfter) = try FederationCA.issue(caDir: ca, city: slug, hosts: host, out: out, keyType: keyType, days: days)
        print("issued certificate for city '\(slug)' (expires \(RFC3339.format(microseconds: Int64(notAfter.timeIntervalSince1970) * 1_000_000)))")
        print("  certificate: \(cert)")
        print("  private key: \(key) (mode 0600)")
    }
}

struct FederationRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke a node certificate: add it to the federation CRL (created if missing).",
        discussion: """
            Example:
              citymesh federation revoke --ca fed --cert sh-cert/node.pem
              kill -HUP <pid of each node>      # nodes re-read the CRL and cut the revoked city off

            Writes <ca>/crl.pem (or --crl), an X.509 CRL signed by the federation CA, valid for
            --days; re-run 'revoke' (any certificate already listed is kept) before it lapses.
            Nodes read it at start and on SIGHUP when their config's peers.crl points at it.
            """)

    @Option(help: "The federation CA directory (holding ca.pem and ca.key).") var ca: String
    @Option(help: "The certificate to revoke (PEM).") var cert: String
    @Option(help: "The CRL file to update (default: <ca>/crl.pem).") var crl: String?
    @Option(help: "Days until the CRL's next update.") var days: Int = 30

    func run() async throws {
        guard (1...3650).contains(days) else { throw CityMeshError(.invalidArgument, "--days must be from 1 to 3650") }
        let result = try FederationCRL.revoke(caDir: ca, certPath: cert, crlPath: crl, validDays: days)
        let serial = result.serial
        print(result.alreadyRevoked ? "\(cert) (serial \(serial)) was already revoked; CRL re-signed" : "revoked \(cert) (serial \(serial))")
        print("  CRL: \(result.path) (number \(result.crl.number ?? 0), \(result.crl.entries.count) revoked, next update \(result.crl.nextUpdate.map { "\($0)" } ?? "-"))")
        print("next: send SIGHUP to every node (kill -HUP <pid>) so they re-read the CRL")
    }
}
