import ArgumentParser
import CityMeshCore
import CityMeshNode
import Foundation

struct Federation: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the federation's root CA and issue node certificates.",
        subcommands: [FederationInit.self, FederationIssue.self])
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
