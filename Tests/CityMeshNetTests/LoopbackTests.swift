import CityMeshCore
import CityMeshNet
import Foundation
import NIOCore
import NIOSSL
import Testing
import X509

/// Real TLS on loopback: real sockets, real swift-nio-ssl, the node's own dialer and listener.
@Suite("Peer transport over loopback", .serialized)
struct LoopbackTests {
    @Test("a valid pair (Ed25519 and P-256) connects, negotiates, measures RTT and exchanges messages both ways")
    func validPair() async throws {
        var pki = try TestPKI(name: "Delta")
        let hzNode = try pki.node("hangzhou")
        let shNode = try pki.node("shanghai", p256: true)
        let hzInbox = Inbox()
        let shInbox = Inbox()
        let hz = try Net.make("hangzhou", hzNode, trust: try pki.trust(), inbox: hzInbox)
        try await hz.bind()
        let sh = try Net.make("shanghai", shNode, trust: try pki.trust(), seeds: ["hangzhou@\(Net.address(hz))"], inbox: shInbox)
        try await Net.running([hz, sh]) {
            try await Net.eventually("both sides connected") {
                Net.entry(hz, "shanghai")?.state == .connected && Net.entry(sh, "hangzhou")?.state == .connected
            }
            try await Net.eventually("an RTT measured") { Net.entry(sh, "hangzhou")?.rttNanoseconds != nil }
            let seen = try #require(Net.entry(sh, "hangzhou"))
            #expect(seen.session?.protocolVersion == 1)
            #expect(seen.direction == .outbound)
            #expect(seen.session?.fingerprint.count == 64)
            #expect(seen.certificateNotAfter == hzNode.certificate.notValidAfter)
            #expect(Net.entry(hz, "shanghai")?.direction == .inbound)

            try await sh.send(to: try CitySlug("hangzhou"), channel: 7, payload: Array("hello from shanghai".utf8))
            let big = (0..<200_000).map { UInt8(truncatingIfNeeded: $0) }
            try await hz.send(to: try CitySlug("shanghai"), channel: 8, payload: big)
            try await Net.eventually("hangzhou got the message") { hzInbox.all.count == 1 }
            try await Net.eventually("shanghai got the large message") { shInbox.all.count == 1 }
            let m = try #require(hzInbox.all.first)
            #expect(m.city.rawValue == "shanghai")
            #expect(m.channel == 7)
            #expect(String(buffer: m.payload) == "hello from shanghai")
            #expect(m.fingerprint == Net.entry(hz, "shanghai")?.session?.fingerprint)
            #expect(shInbox.all.first.map { Array($0.payload.readableBytesView) } == big)
            #expect(shInbox.all.first?.city.rawValue == "hangzhou")

            await #expect(throws: CityMeshError.self) { try await hz.send(to: try CitySlug("suzhou"), channel: 1, payload: []) }
            await #expect(throws: CityMeshError.self) {
                try await hz.send(to: try CitySlug("shanghai"), channel: 1, payload: [UInt8](repeating: 0, count: 2_000_000))
            }
            #expect(hz.status().refusals.isEmpty)
            #expect(sh.status().refusals.isEmpty)
        }
    }

    @Test("simultaneous dials settle on one connection per pair, the same one on both sides")
    func simultaneousDials() async throws {
        var pki = try TestPKI(name: "Delta")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        let sh = try Net.make("shanghai", try pki.node("shanghai"), trust: try pki.trust())
        try await hz.bind()
        try await sh.bind()
        hz.reload(trust: try pki.trust(), seeds: [try .init("shanghai@\(Net.address(sh))")])
        sh.reload(trust: try pki.trust(), seeds: [try .init("hangzhou@\(Net.address(hz))")])
        try await Net.running([hz, sh]) {
            try await Net.eventually("both connected") {
                Net.entry(hz, "shanghai")?.state == .connected && Net.entry(sh, "hangzhou")?.state == .connected
            }
            // The kept connection is the one hangzhou (the smaller slug) dialed.
            try await Net.eventually("one connection, dialed by hangzhou") {
                Net.entry(hz, "shanghai")?.direction == .outbound && Net.entry(sh, "hangzhou")?.direction == .inbound
                    && Net.entry(hz, "shanghai")?.state == .connected && Net.entry(sh, "hangzhou")?.state == .connected
            }
            #expect(hz.status().refusals.isEmpty)
        }
    }

    struct CertCase: Sendable, CustomTestStringConvertible {
        let reason: DisconnectReason
        let make: @Sendable (inout TestPKI) throws -> (TestPKI.Node, PeerTrust)
        var testDescription: String { reason.rawValue }
    }

    static let certCases: [CertCase] = [
        CertCase(reason: .foreignCA) { pki in
            var other = try TestPKI(name: "Elsewhere")
            return (try other.node("shanghai"), try pki.trust())
        },
        CertCase(reason: .certificateExpired) { pki in
            (try pki.node("shanghai", issuedAt: Date().addingTimeInterval(-40 * 86_400), days: 30), try pki.trust())
        },
        CertCase(reason: .certificateNotYetValid) { pki in
            (try pki.node("shanghai", issuedAt: Date().addingTimeInterval(10 * 86_400)), try pki.trust())
        },
        CertCase(reason: .wrongKeyUsage) { pki in
            (try pki.odd(ekus: [.serverAuth], uris: ["urn:citymesh:city:shanghai"]), try pki.trust())
        },
        CertCase(reason: .missingCity) { pki in
            (try pki.odd(ekus: [.serverAuth, .clientAuth], uris: []), try pki.trust())
        },
        CertCase(reason: .malformedCity) { pki in
            (try pki.odd(ekus: [.serverAuth, .clientAuth], uris: ["urn:citymesh:city:Shang_Hai"]), try pki.trust())
        },
        CertCase(reason: .revoked) { pki in
            let node = try pki.node("shanghai")
            return (node, try pki.trust(revoking: [node.certificate]))
        },
        CertCase(reason: .denyListed) { pki in
            let node = try pki.node("shanghai")
            return (node, try pki.trust(denied: [try node.fingerprint()]))
        },
    ]

    @Test("the listener refuses each bad client certificate with its reason", arguments: certCases)
    func certificateRefusals(_ c: CertCase) async throws {
        var pki = try TestPKI(name: "Delta")
        let (client, serverTrust) = try c.make(&pki)
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: serverTrust)
        try await hz.bind()
        // The client trusts everything here, so only the server's verdict matters.
        let clientTrust = PeerTrust(roots: [pki.ca], revocations: nil, denied: [])
        let sh = try Net.make("shanghai", client, trust: clientTrust, seeds: ["hangzhou@\(Net.address(hz))"])
        try await Net.running([hz, sh]) {
            try await Net.eventually("refusal \(c.reason.rawValue) counted") { Net.refusals(hz, c.reason) >= 1 }
            #expect(hz.status().recentRefusals.contains { $0.reason == c.reason && $0.direction == .inbound })
            #expect(hz.status().peers.allSatisfy { $0.state != .connected })
            #expect(Net.entry(sh, "hangzhou")?.state != .connected)
        }
    }

    @Test("a dialer refuses a peer whose certificate names another city than the seed says")
    func wrongCityForAddress() async throws {
        var pki = try TestPKI(name: "Delta")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        try await hz.bind()
        let sh = try Net.make("shanghai", try pki.node("shanghai"), trust: try pki.trust(), seeds: ["suzhou@\(Net.address(hz))"])
        try await Net.running([hz, sh]) {
            try await Net.eventually("wrong_city counted by the dialer") { Net.refusals(sh, .wrongCity) >= 1 }
            #expect(sh.status().recentRefusals.last?.detail.contains("hangzhou") == true)
            #expect(Net.entry(sh, "suzhou")?.state != .connected)
            #expect(Net.entry(sh, "hangzhou") == nil)
        }
    }

    @Test("no client certificate, plaintext, and silence before the handshake are refused")
    func beforeTheHandshake() async throws {
        var pki = try TestPKI(name: "Delta")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust()) { $0.handshakeTimeout = .milliseconds(600) }
        try await Net.running([hz]) {
            let anonymous = try await RawClient.connect(port: Net.port(hz), tls: try RawClient.tls(nil))
            try await Net.eventually("no_client_certificate") { Net.refusals(hz, .noClientCertificate) >= 1 }
            try await Net.eventually("anonymous client cut off") { anonymous.isClosed }

            let plain = try await RawClient.connect(port: Net.port(hz), tls: nil)
            try await plain.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            try await Net.eventually("not_tls") { Net.refusals(hz, .notTLS) >= 1 }
            try await Net.eventually("plaintext client cut off") { plain.isClosed }

            let silent = try await RawClient.connect(port: Net.port(hz), tls: nil)
            try await Net.eventually("handshake_timeout") { Net.refusals(hz, .handshakeTimeout) >= 1 }
            try await Net.eventually("silent client cut off") { silent.isClosed }
        }
    }

    struct WireCase: Sendable, CustomTestStringConvertible {
        let name: String
        let reason: DisconnectReason
        let code: CloseCode?
        let helloFirst: Bool
        let bytes: [UInt8]
        let closeAfter: Bool
        var testDescription: String { name }
    }

    static let wireCases: [WireCase] = [
        WireCase(name: "unknown message type", reason: .unknownMessage, code: .unknownMessage, helloFirst: true, bytes: [0, 0, 0, 1, 0x7F], closeAfter: false),
        WireCase(name: "oversize frame", reason: .frameTooLarge, code: .frameTooLarge, helloFirst: true, bytes: [0x7F, 0, 0, 0, 1], closeAfter: false),
        WireCase(name: "message before HELLO", reason: .protocolViolation, code: .protocolViolation, helloFirst: false, bytes: WireMessage.ping(nonce: 1).encodeFrame(), closeAfter: false),
        WireCase(
            name: "version mismatch", reason: .versionMismatch, code: .versionMismatch, helloFirst: false,
            bytes: WireMessage.hello(Hello(versions: 7...9, city: "suzhou", software: "future", listen: "", maxFrameLength: 70_000, capabilities: [])).encodeFrame(),
            closeAfter: false),
        WireCase(
            name: "HELLO claiming another city", reason: .wrongCity, code: .identityMismatch, helloFirst: false,
            bytes: WireMessage.hello(Hello(versions: 1...1, city: "hangzhou", software: "liar", listen: "", maxFrameLength: 70_000, capabilities: [])).encodeFrame(),
            closeAfter: false),
        // Text read as a length is about a gigabyte: refused from the first four bytes.
        WireCase(name: "text garbage", reason: .frameTooLarge, code: .frameTooLarge, helloFirst: true, bytes: Array("GET / HTTP/1.1\r\n\r\n".utf8), closeAfter: false),
        WireCase(name: "malformed message body", reason: .protocolViolation, code: .protocolViolation, helloFirst: true, bytes: [0, 0, 0, 3, 0x02, 0xFF, 0xFF], closeAfter: false),
        WireCase(name: "truncated frame", reason: .truncatedFrame, code: nil, helloFirst: true, bytes: [0, 0, 0, 9, 0x02, 0, 0], closeAfter: true),
    ]

    @Test("after the handshake, bad frames close the connection with a CLOSE reason", arguments: wireCases)
    func afterTheHandshake(_ c: WireCase) async throws {
        var pki = try TestPKI(name: "Delta")
        let suzhou = try pki.node("suzhou")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        try await Net.running([hz]) {
            let client = try await RawClient.connect(port: Net.port(hz), tls: try RawClient.tls(suzhou))
            try await Net.eventually("server HELLO received") { client.messages?.first.map { if case .hello = $0 { true } else { false } } == true }
            if c.helloFirst {
                try await client.sayHello(as: "suzhou")
                try await Net.eventually("established") { Net.entry(hz, "suzhou")?.state == .connected }
            }
            try await client.send(c.bytes)
            if c.closeAfter { await client.close() }
            try await Net.eventually("refusal \(c.reason.rawValue)") { Net.refusals(hz, c.reason) >= 1 }
            if let code = c.code {
                try await Net.eventually("CLOSE(\(code)) received") {
                    client.messages?.contains { if case .close(code, _) = $0 { true } else { false } } == true
                }
                try await Net.eventually("connection closed by the node") { client.isClosed }
            }
            #expect(Net.entry(hz, "suzhou")?.state != .connected)
        }
    }

    @Test("bytes injected under TLS after the handshake are refused as tampering")
    func tamperingUnderTLS() async throws {
        var pki = try TestPKI(name: "Delta")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        let suzhou = try pki.node("suzhou")
        try await Net.running([hz]) {
            let client = try await RawClient.connect(port: Net.port(hz), tls: try RawClient.tls(suzhou))
            try await client.sayHello(as: "suzhou")
            try await Net.eventually("established") { Net.entry(hz, "suzhou")?.state == .connected }
            // A TLS application-data record header followed by bytes no key produced.
            try await client.inject([0x17, 0x03, 0x03, 0x00, 0x20] + [UInt8](repeating: 0xAB, count: 32))
            try await Net.eventually("protocol_violation") { Net.refusals(hz, .protocolViolation) >= 1 }
            try await Net.eventually("disconnected") { Net.entry(hz, "suzhou")?.state != .connected }
        }
    }

    @Test("a peer that stops answering is cut off by the idle timeout; the connection limit holds")
    func idleAndLimit() async throws {
        var pki = try TestPKI(name: "Delta")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust()) {
            $0.keepaliveInterval = .milliseconds(200)
            $0.idleTimeout = .milliseconds(700)
            $0.maxConnections = 1
        }
        let suzhou = try pki.node("suzhou")
        try await Net.running([hz]) {
            let client = try await RawClient.connect(port: Net.port(hz), tls: try RawClient.tls(suzhou))
            try await client.sayHello(as: "suzhou")
            try await Net.eventually("established") { Net.entry(hz, "suzhou")?.state == .connected }
            let second = try await RawClient.connect(port: Net.port(hz), tls: nil)
            try await Net.eventually("too_many_connections") { Net.refusals(hz, .tooManyConnections) >= 1 }
            try await Net.eventually("second client turned away") { second.isClosed }
            // The raw client never answers PING.
            try await Net.eventually("idle_timeout") { Net.refusals(hz, .idleTimeout) >= 1 }
            try await Net.eventually("CLOSE(idleTimeout)") {
                client.messages?.contains { if case .close(.idleTimeout, _) = $0 { true } else { false } } == true
            }
            #expect(client.messages?.contains { if case .ping = $0 { true } else { false } } == true)
        }
    }

    @Test("reload with a CRL revoking one peer cuts it off and leaves the others connected")
    func reloadRevokes() async throws {
        var pki = try TestPKI(name: "Delta")
        let shNode = try pki.node("shanghai")
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        try await hz.bind()
        let sh = try Net.make("shanghai", shNode, trust: try pki.trust(), seeds: ["hangzhou@\(Net.address(hz))"])
        let sz = try Net.make("suzhou", try pki.node("suzhou"), trust: try pki.trust(), seeds: ["hangzhou@\(Net.address(hz))"])
        let revoking = try pki.trust(revoking: [shNode.certificate])
        try await Net.running([hz, sh, sz]) {
            try await Net.eventually("both peers connected") {
                Net.entry(hz, "shanghai")?.state == .connected && Net.entry(hz, "suzhou")?.state == .connected
            }
            let suzhouConnection = Net.entry(hz, "suzhou")?.connection
            hz.reload(trust: revoking, seeds: [])
            try await Net.eventually("shanghai cut off") { Net.entry(hz, "shanghai")?.state != .connected }
            try await Net.eventually("revocation counted") { Net.refusals(hz, .revoked) >= 1 }
            try await Net.eventually("shanghai told why") { Net.entry(sh, "hangzhou")?.lastError?.contains("revoked") == true }
            // suzhou kept the very same connection.
            #expect(Net.entry(hz, "suzhou")?.state == .connected)
            #expect(Net.entry(hz, "suzhou")?.connection == suzhouConnection)
            // shanghai's redials are refused at the handshake now.
            try await Net.eventually("redial refused") { Net.refusals(hz, .revoked) >= 2 }
        }
    }

    @Test("a session ends when the peer's certificate expires, and the expired certificate cannot come back")
    func expiryDuringSession() async throws {
        var pki = try TestPKI(name: "Delta")
        // Valid for about three more seconds.
        let shortLived = try pki.node("shanghai", issuedAt: Date().addingTimeInterval(-86_400 + 3), days: 1)
        let hz = try Net.make("hangzhou", try pki.node("hangzhou"), trust: try pki.trust())
        try await hz.bind()
        let sh = try Net.make("shanghai", shortLived, trust: try pki.trust(), seeds: ["hangzhou@\(Net.address(hz))"])
        try await Net.running([hz, sh]) {
            try await Net.eventually("connected") { Net.entry(hz, "shanghai")?.state == .connected }
            try await Net.eventually("cut off at expiry") { Net.refusals(hz, .certificateExpired) >= 1 }
            try await Net.eventually("disconnected") { Net.entry(hz, "shanghai")?.state != .connected }
        }
    }
}
