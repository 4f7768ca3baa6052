import CityMeshCore
import Crypto
import Foundation
import Testing
import X509
@testable import CityMeshNode

/// Runs the real `openssl` command line in `dir`.
@discardableResult
func openssl(_ args: [String], in dir: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = args
    p.currentDirectoryURL = URL(fileURLWithPath: dir)
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard p.terminationStatus == 0 else { throw CityMeshError(.internalError, "openssl \(args.joined(separator: " ")) failed: \(text)") }
    return text
}

func tempDir() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-node-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Makes a CA and a node certificate with the openssl CLI (an existing PKI, not ours).
func opensslPKI(in dir: String, algorithm: String, city: String, eku: String = "serverAuth,clientAuth", sanURI: String? = nil) throws {
    let gen: [String] = algorithm == "ed25519" ? ["genpkey", "-algorithm", "ed25519"] : ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    try openssl(gen + ["-out", "ca.key"], in: dir)
    // The node's key may differ from the CA's (a P-384 node key under an Ed25519 CA).
    let nodeGen: [String] = algorithm == "p384" ? ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"] : gen
    try openssl(["req", "-x509", "-new", "-key", "ca.key", "-subj", "/O=Test Federation/CN=Test Root", "-days", "30", "-out", "ca.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: dir)
    try openssl(nodeGen + ["-out", "node.key"], in: dir)
    try openssl(["req", "-new", "-key", "node.key", "-subj", "/O=Test Federation/CN=\(city)", "-out", "node.csr"], in: dir)
    let ext = """
        basicConstraints=critical,CA:FALSE
        keyUsage=critical,digitalSignature
        extendedKeyUsage=\(eku)
        subjectAltName=URI:\(sanURI ?? "urn:citymesh:city:\(city)"),DNS:localhost,IP:127.0.0.1
        """
    try ext.write(toFile: dir + "/node.ext", atomically: true, encoding: .utf8)
    try openssl(["x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "10",
                 "-extfile", "node.ext", "-out", "node.pem"], in: dir)
}

func initOptions(_ dir: String, city: String = "hangzhou", ca: String = "ca.pem", cert: String = "node.pem", key: String = "node.key", force: Bool = false) -> NodeInitializer.Options {
    .init(dir: dir + "/node", city: city, ca: dir + "/" + ca, cert: dir + "/" + cert, key: dir + "/" + key,
          listen: "127.0.0.1:7001", admin: "127.0.0.1:7101", force: force)
}

@Suite("Identities")
struct IdentityTests {
    @Test("certificates made with openssl are accepted", arguments: ["ed25519", "p256"])
    func opensslMade(algorithm: String) async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: algorithm, city: "hangzhou")
        let result = try await NodeInitializer.run(initOptions(dir))
        #expect(result.identity.city.rawValue == "hangzhou")
        #expect(Files.mode(dir + "/node/tls/node.key") == 0o600)
        #expect(Files.mode(dir + "/node/admin.token") == 0o600)
    }

    @Test("our CA and node certificates pass openssl verify, with the city URI and both EKUs", arguments: [KeyType.ed25519, .p256])
    func oursPassOpenSSL(keyType: KeyType) throws {
        let dir = try tempDir()
        _ = try FederationCA.create(dir: dir + "/fed", name: "Yangtze Delta", keyType: keyType)
        _ = try FederationCA.issue(caDir: dir + "/fed", city: try CitySlug("suzhou"), hosts: ["localhost", "127.0.0.1", "::1"], out: dir + "/sz", keyType: keyType, days: 30)
        #expect(try openssl(["verify", "-CAfile", "fed/ca.pem", "sz/node.pem"], in: dir).contains("sz/node.pem: OK"))
        let text = try openssl(["x509", "-in", "sz/node.pem", "-noout", "-text"], in: dir)
        #expect(text.contains("URI:urn:citymesh:city:suzhou"))
        #expect(text.contains("IP Address:127.0.0.1") && text.contains("DNS:localhost"))
        #expect(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"))
        // The key file is one openssl reads and it matches the certificate.
        let pub1 = try openssl(["pkey", "-in", "sz/node.key", "-pubout"], in: dir)
        let pub2 = try openssl(["x509", "-in", "sz/node.pem", "-noout", "-pubkey"], in: dir)
        #expect(pub1 == pub2)
        #expect(Files.mode(dir + "/fed/ca.key") == 0o600)
        #expect(throws: CityMeshError(.fileExists, "")) { try FederationCA.create(dir: dir + "/fed", name: "Again", keyType: keyType) }
    }

    @Test("init refuses a key that is not the certificate's")
    func keyMismatch() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        try openssl(["genpkey", "-algorithm", "ed25519", "-out", "other.key"], in: dir)
        await #expect(throws: CityMeshError(.keyMismatch, "")) { try await NodeInitializer.run(initOptions(dir, key: "other.key")) }
        #expect(!Files.exists(dir + "/node"), "a refused init leaves nothing behind")
    }

    @Test("init refuses a certificate from another CA")
    func foreignCA() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        let other = try tempDir()
        try opensslPKI(in: other, algorithm: "ed25519", city: "hangzhou")
        try FileManager.default.copyItem(atPath: other + "/ca.pem", toPath: dir + "/other-ca.pem")
        await #expect(throws: CityMeshError(.certificateForeignCA, "")) { try await NodeInitializer.run(initOptions(dir, ca: "other-ca.pem")) }
    }

    @Test("init refuses a node key that is neither Ed25519 nor P-256 (a P-384 key made with openssl), and says what to do")
    func p384Refused() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "p384", city: "hangzhou")
        do {
            _ = try await NodeInitializer.run(initOptions(dir))
            Issue.record("expected a refusal")
        } catch let e as CityMeshError {
            #expect(e.code == .keyInvalid)
            #expect(e.message.contains("neither Ed25519 nor ECDSA P-256") && e.message.contains("openssl genpkey -algorithm ed25519"), "\(e.message)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/node"), "nothing is left half-made")
    }

    @Test("init refuses a certificate for another city, and says which")
    func wrongCity() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "p256", city: "shanghai")
        do {
            _ = try await NodeInitializer.run(initOptions(dir, city: "hangzhou"))
            Issue.record("expected a refusal")
        } catch let e as CityMeshError {
            #expect(e.code == .certificateWrongCity)
            #expect(e.message.contains("'shanghai'"))
        }
    }

    @Test("init refuses wrong EKU and a malformed city URI")
    func badExtensions() async throws {
        let noClient = try tempDir()
        try opensslPKI(in: noClient, algorithm: "ed25519", city: "hangzhou", eku: "serverAuth")
        await #expect(throws: CityMeshError(.certificateWrongUsage, "")) { try await NodeInitializer.run(initOptions(noClient)) }
        let badURI = try tempDir()
        try opensslPKI(in: badURI, algorithm: "ed25519", city: "hangzhou", sanURI: "urn:citymesh:city:Hang_Zhou")
        await #expect(throws: CityMeshError(.certificateMalformedCity, "")) { try await NodeInitializer.run(initOptions(badURI)) }
    }

    @Test("init refuses an expired certificate")
    func expired() async throws {
        let dir = try tempDir()
        let longAgo = Date().addingTimeInterval(-400 * 86_400)
        _ = try FederationCA.create(dir: dir, name: "Old", keyType: .ed25519, now: longAgo)
        _ = try FederationCA.issue(caDir: dir, city: try CitySlug("hangzhou"), hosts: [], out: dir + "/old", keyType: .ed25519, days: 30, now: longAgo)
        do {
            _ = try await NodeInitializer.run(initOptions(dir, cert: "old/node.pem", key: "old/node.key"))
            Issue.record("expected a refusal")
        } catch let e as CityMeshError {
            #expect(e.code == .certificateExpired)
            #expect(e.message.contains("expired"))
        }
    }

    @Test("init refuses missing files, bad slugs and bad addresses")
    func badArguments() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        await #expect(throws: CityMeshError(.fileNotFound, "")) { try await NodeInitializer.run(initOptions(dir, cert: "missing.pem")) }
        await #expect(throws: CityMeshError(.invalidSlug, "")) { try await NodeInitializer.run(initOptions(dir, city: "Hang Zhou")) }
        var o = initOptions(dir)
        o.admin = "localhost"
        await #expect(throws: CityMeshError(.invalidArgument, "")) { try await NodeInitializer.run(o) }
        await #expect(throws: CityMeshError(.certificateInvalid, "")) { try await NodeInitializer.run(initOptions(dir, cert: "node.ext")) }
        await #expect(throws: CityMeshError(.keyInvalid, "")) { try await NodeInitializer.run(initOptions(dir, key: "node.pem")) }
    }

    @Test("init never overwrites a node without --force, and --force replaces it whole")
    func overwrite() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        _ = try await NodeInitializer.run(initOptions(dir))
        let token1 = try NodeDirectory(dir + "/node").adminToken()
        await #expect(throws: CityMeshError(.nodeExists, "")) { try await NodeInitializer.run(initOptions(dir)) }
        #expect(try NodeDirectory(dir + "/node").adminToken() == token1)
        _ = try await NodeInitializer.run(initOptions(dir, force: true))
        #expect(try NodeDirectory(dir + "/node").adminToken() != token1)
    }

    @Test("a node directory can be locked by one process only")
    func lock() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        _ = try await NodeInitializer.run(initOptions(dir))
        let nd = NodeDirectory(dir + "/node")
        let lock = try NodeLock.acquire(nd)
        #expect(NodeLock.isHeld(nd))
        lock.release()
        #expect(!NodeLock.isHeld(nd))
    }

    @Test("the written config is documented YAML that loads back")
    func config() async throws {
        let dir = try tempDir()
        try opensslPKI(in: dir, algorithm: "ed25519", city: "hangzhou")
        _ = try await NodeInitializer.run(initOptions(dir))
        let text = try String(contentsOfFile: dir + "/node/citymesh.yaml", encoding: .utf8)
        #expect(text.contains("# This node's city slug"))
        let c = try NodeConfig.load(from: dir + "/node/citymesh.yaml")
        #expect(c.city == "hangzhou" && c.admin == "127.0.0.1:7101" && c.tls.key == "tls/node.key")
        try text.replacingOccurrences(of: "format: text", with: "format: xml").write(toFile: dir + "/node/citymesh.yaml", atomically: true, encoding: .utf8)
        #expect(throws: CityMeshError(.configInvalid, "")) { try NodeConfig.load(from: dir + "/node/citymesh.yaml") }
        #expect(c.peers?.advertise == nil)

        // --advertise lands in the config; a bad one is refused before anything is written.
        var o = initOptions(dir, force: true)
        o.advertise = "citymesh.hangzhou.example:7001"
        _ = try await NodeInitializer.run(o)
        #expect(try NodeConfig.load(from: dir + "/node/citymesh.yaml").peers?.advertise == "citymesh.hangzhou.example:7001")
        o.advertise = "no-port"
        await #expect(throws: CityMeshError(.invalidArgument, "")) { _ = try await NodeInitializer.run(o) }
    }
}
