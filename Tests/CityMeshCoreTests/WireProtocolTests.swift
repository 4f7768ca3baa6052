import Foundation
import Testing
@testable import CityMeshCore

@Suite("Wire protocol codec")
struct WireCodecTests {
    static let hello = Hello(
        versions: 1...3, city: "hangzhou", software: "citymesh/0.1.0", listen: "127.0.0.1:7001",
        maxFrameLength: UInt32(WireFraming.defaultMaxFrameLength), capabilities: ["gossip", "ledger"])

    static let samples: [WireMessage] = [
        .hello(hello), .ping(nonce: 7), .pong(nonce: .max), .close(.versionMismatch, "no common version"),
        .data(channel: 3, payload: ArraySlice(0...255)), .data(channel: 0, payload: []),
    ]

    @Test("every message round-trips through one frame")
    func roundTrip() throws {
        for message in Self.samples {
            var decoder = WireFrameDecoder()
            #expect(try decoder.feed(message.encodeFrame()) == [message])
            #expect(decoder.bufferedBytes == 0)
            try decoder.finish()
        }
    }

    @Test("the encoding matches the byte layout in docs/protocol.md")
    func knownAnswers() {
        #expect(WireMessage.ping(nonce: 0x0102).encodeFrame() == [0, 0, 0, 9, 0x02, 0, 0, 0, 0, 0, 0, 1, 2])
        #expect(WireMessage.close(.duplicate, "dup").encodeFrame() == [0, 0, 0, 8, 0x04, 0, 1, 0, 3, 0x64, 0x75, 0x70])
        #expect(WireMessage.data(channel: 0x0A0B, payload: [0xFF]).encodeFrame() == [0, 0, 0, 4, 0x10, 0x0A, 0x0B, 0xFF])
        let h = Hello(versions: 1...1, city: "sh", software: "x", listen: "", maxFrameLength: 0x0001_0003, capabilities: ["a"])
        #expect(
            WireMessage.hello(h).encodeFrame() == [
                0, 0, 0, 22, 0x01, 0x43, 0x4D, 0x53, 0x48, 0, 1, 0, 1, 2, 0x73, 0x68, 1, 0x78, 0, 0, 1, 0, 3, 1, 1, 0x61,
            ])
    }

    @Test("messages split at every byte boundary decode the same")
    func everySplit() throws {
        let stream = Self.samples.flatMap { $0.encodeFrame() }
        for cut in 0...stream.count {
            var decoder = WireFrameDecoder()
            var got = try decoder.feed(stream[..<cut])
            got += try decoder.feed(stream[cut...])
            #expect(got == Self.samples)
        }
    }

    @Test("an oversize length is refused from its four header bytes, before any body is buffered")
    func oversize() {
        var decoder = WireFrameDecoder(maxFrameLength: 70_000)
        #expect(throws: WireError.frameTooLarge(length: 0x0100_0000, limit: 70_000)) { try decoder.feed([1, 0, 0, 0]) }
        #expect(decoder.bufferedBytes == 0)
        #expect(WireError.frameTooLarge(length: 1, limit: 0).reason == .frameTooLarge)
    }

    @Test("unknown types, empty frames, trailing bytes and bad HELLOs are refused with a reason")
    func malformed() {
        func refuse(_ bytes: [UInt8]) -> WireError? {
            var d = WireFrameDecoder()
            do { _ = try d.feed(bytes); return nil } catch { return error }
        }
        #expect(refuse([0, 0, 0, 1, 0x7F]) == .unknownType(0x7F))
        #expect(refuse([0, 0, 0, 1, 0x7F])?.reason == .unknownMessage)
        #expect(refuse([0, 0, 0, 0])?.reason == .protocolViolation)
        #expect(refuse([0, 0, 0, 10, 0x02, 0, 0, 0, 0, 0, 0, 0, 1, 9])?.reason == .protocolViolation)  // trailing byte
        #expect(refuse([0, 0, 0, 5, 0x02, 0, 0, 0, 1])?.reason == .protocolViolation)  // short PING
        var badMagic = WireMessage.hello(Self.hello).encodeFrame()
        badMagic[5] = 0x58
        #expect(refuse(badMagic)?.reason == .protocolViolation)
        var emptyRange = WireMessage.hello(Self.hello).encodeFrame()
        emptyRange[12] = 0  // max_version 0, below min_version 1
        #expect(refuse(emptyRange)?.reason == .protocolViolation)
        // Invalid UTF-8 in the city.
        let h = Hello(versions: 1...1, city: "ab", software: "", listen: "", maxFrameLength: 70_000, capabilities: [])
        var badUTF8 = WireMessage.hello(h).encodeFrame()
        badUTF8[14] = 0xFF
        #expect(refuse(badUTF8)?.reason == .protocolViolation)
    }

    @Test("HELLO ignores fields appended by later versions")
    func helloExtension() throws {
        var frame = WireMessage.hello(Self.hello).encodeFrame()
        frame += [0xAA, 0xBB]
        let n = UInt32(frame.count - 4)
        frame[0..<4] = [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
        var d = WireFrameDecoder()
        #expect(try d.feed(frame) == [.hello(Self.hello)])
    }

    @Test("a stream that ends inside a frame is reported as truncated")
    func truncated() throws {
        let frame = WireMessage.ping(nonce: 1).encodeFrame()
        for cut in 1..<frame.count {
            var d = WireFrameDecoder()
            #expect(try d.feed(frame[..<cut]).isEmpty)
            #expect(throws: WireError.truncated(buffered: cut)) { try d.finish() }
        }
    }

    @Test("fuzz: random and mutated bytes never crash, and buffering stays under one frame")
    func fuzz() {
        var rng = SeededRNG(seed: 0xC17_3E5)
        let valid = Self.samples.flatMap { $0.encodeFrame() }
        let limit = 70_000
        for round in 0..<3_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = valid
                for _ in 0..<Int.random(in: 1...6, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            }
            var d = WireFrameDecoder(maxFrameLength: limit)
            var i = 0
            while i < bytes.count {
                let n = Int.random(in: 1...64, using: &rng)
                do {
                    _ = try d.feed(bytes[i..<min(bytes.count, i + n)])
                } catch {
                    #expect(d.bufferedBytes == 0)
                    break
                }
                #expect(d.bufferedBytes <= limit + WireFraming.headerSize)
                i += n
            }
        }
    }
}

@Suite("Peer session state machine")
struct PeerSessionTests {
    static let hz = try! CitySlug("hangzhou")  // a valid literal slug
    static func config(_ versions: ClosedRange<UInt16> = 1...1) -> PeerSession.Configuration {
        .init(
            hello: Hello(versions: versions, city: "shanghai", software: "t", listen: "127.0.0.1:7002", maxFrameLength: 70_000, capabilities: []),
            handshakeTimeout: 10, keepaliveInterval: 100, idleTimeout: 300)
    }
    static func theirHello(_ versions: ClosedRange<UInt16> = 1...1, city: String = "hangzhou") -> WireMessage {
        .hello(Hello(versions: versions, city: city, software: "peer", listen: "127.0.0.1:7001", maxFrameLength: 70_000, capabilities: ["x"]))
    }

    @Test("HELLO both ways establishes with the highest common version, then probes RTT")
    func establish() {
        var s = PeerSession(configuration: Self.config(1...3), now: 0)
        #expect(s.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 1) == [.send(.hello(Self.config(1...3).hello))])
        let d = s.onMessage(Self.theirHello(2...5), now: 2)
        guard case .established(let peer) = d.first else {
            Issue.record("not established: \(d)")
            return
        }
        #expect(peer.protocolVersion == 3)
        #expect(peer.city == Self.hz)
        #expect(peer.listen == "127.0.0.1:7001")
        #expect(d.last == .send(.ping(nonce: 1)))
        #expect(s.onMessage(.pong(nonce: 1), now: 9) == [.rttMeasured(nanoseconds: 7)])
        #expect(s.onMessage(.pong(nonce: 1), now: 10) == [])  // stale pong ignored
        #expect(s.onMessage(.ping(nonce: 42), now: 11) == [.send(.pong(nonce: 42))])
        #expect(s.onMessage(.data(channel: 5, payload: [1]), now: 12) == [.deliver(channel: 5, payload: [1])])
        #expect(s.onData(now: 13) == nil)  // established: the shell delivers its own buffer
    }

    @Test("refusals: version mismatch, a HELLO naming another city, messages out of order")
    func refusals() {
        var s = PeerSession(configuration: Self.config(1...1), now: 0)
        _ = s.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        let d = s.onMessage(Self.theirHello(2...4), now: 1)
        #expect(d.count == 2)
        #expect(d.first.map { if case .send(.close(.versionMismatch, _)) = $0 { true } else { false } } == true)
        #expect(d.last.map { if case .close(.versionMismatch, _) = $0 { true } else { false } } == true)
        #expect(s.isClosed)
        #expect(s.onMessage(.ping(nonce: 1), now: 2) == [])

        var w = PeerSession(configuration: Self.config(), now: 0)
        _ = w.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        #expect(w.onMessage(Self.theirHello(city: "suzhou"), now: 1).last.map { if case .close(.wrongCity, _) = $0 { true } else { false } } == true)

        var o = PeerSession(configuration: Self.config(), now: 0)
        _ = o.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        #expect(o.onMessage(.data(channel: 1, payload: []), now: 1).last.map { if case .close(.protocolViolation, _) = $0 { true } else { false } } == true)
        var early = PeerSession(configuration: Self.config(), now: 0)
        _ = early.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        #expect(early.onData(now: 1)?.last.map { if case .close(.protocolViolation, _) = $0 { true } else { false } } == true)
        #expect(early.onData(now: 2) == [])  // closed: dropped silently

        var twice = PeerSession(configuration: Self.config(), now: 0)
        _ = twice.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        _ = twice.onMessage(Self.theirHello(), now: 1)
        #expect(twice.onMessage(Self.theirHello(), now: 2).last.map { if case .close(.protocolViolation, _) = $0 { true } else { false } } == true)
    }

    @Test("timeouts: a silent client loses its slot, an idle peer is cut, keepalive pings")
    func timeouts() {
        var silent = PeerSession(configuration: Self.config(), now: 0)
        #expect(silent.onTick(now: 9) == [])
        // Before TLS there is nobody to send CLOSE to: only the close directive.
        #expect(silent.onTick(now: 10).map { if case .close(.handshakeTimeout, _) = $0 { true } else { false } } == [true])

        var noHello = PeerSession(configuration: Self.config(), now: 0)
        _ = noHello.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 5)
        #expect(noHello.onTick(now: 10).count == 2)  // CLOSE frame + close

        var s = PeerSession(configuration: Self.config(), now: 0)
        _ = s.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
        _ = s.onMessage(Self.theirHello(), now: 0)
        _ = s.onMessage(.pong(nonce: 1), now: 1)
        #expect(s.onTick(now: 50) == [])
        #expect(s.onTick(now: 100) == [.send(.ping(nonce: 2))])
        #expect(s.onTick(now: 150) == [])
        #expect(s.onTick(now: 200) == [.send(.ping(nonce: 3))])
        #expect(s.onTick(now: 301).last.map { if case .close(.idleTimeout, _) = $0 { true } else { false } } == true)
    }

    @Test("decode errors close with the matching reason and a CLOSE code")
    func decodeErrors() {
        for (error, code) in [(WireError.unknownType(9), CloseCode.unknownMessage), (.frameTooLarge(length: 9, limit: 1), .frameTooLarge), (.malformed("x"), .protocolViolation)] {
            var s = PeerSession(configuration: Self.config(), now: 0)
            _ = s.onTLSEstablished(city: Self.hz, fingerprint: "ab", now: 0)
            let d = s.onDecodeError(error)
            #expect(d.first.map { if case .send(.close(let c, _)) = $0 { c == code } else { false } } == true)
            #expect(d.last.map { if case .close(let r, _) = $0 { r == error.reason } else { false } } == true)
        }
    }
}

@Suite("Peer directory")
struct PeerDirectoryTests {
    static func peer(_ city: String, listen: String = "") -> PeerSession.Peer {
        PeerSession.Peer(city: try! CitySlug(city), fingerprint: city, protocolVersion: 1, software: "t", listen: listen, capabilities: [], maxFrameLength: 70_000)
    }
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("seeds parse as CITY@HOST:PORT and bad ones say how to write them")
    func seeds() throws {
        let s = try PeerDirectory.Seed("hangzhou@127.0.0.1:7001")
        #expect(s.city.rawValue == "hangzhou")
        #expect(s.address == "127.0.0.1:7001")
        #expect(try PeerDirectory.Seed("sh@[::1]:7002").address == "[::1]:7002")
        for bad in ["127.0.0.1:7001", "@127.0.0.1:7001", "hangzhou@", "hangzhou@host", "hangzhou@host:0", "Hang Zhou@h:1"] {
            #expect(throws: CityMeshError.self) { try PeerDirectory.Seed(bad) }
        }
    }

    @Test("dials seeds, backs off exponentially with jitter after failures, resets on success")
    func backoff() throws {
        var d = PeerDirectory(configuration: .init(localCity: try CitySlug("shanghai"), seeds: [try .init("hangzhou@h:1")], backoffBase: 100, backoffMax: 1_000))
        guard case .dial(let id, _, let address) = d.onTick(now: 0).first else {
            Issue.record("no dial")
            return
        }
        #expect(address == "h:1")
        #expect(d.onTick(now: 0).isEmpty)  // already connecting
        d.onFailed(id, reason: .dialFailed, detail: "refused", now: 0, jitter: 0.999)
        #expect(d.onTick(now: 98).isEmpty)
        guard case .dial(let id2, _, _) = d.onTick(now: 100).first else {
            Issue.record("no redial")
            return
        }
        d.onFailed(id2, reason: .dialFailed, detail: "refused", now: 100, jitter: 0)
        #expect(d.onTick(now: 199).isEmpty)
        #expect(d.onTick(now: 200).count == 1)  // 2nd failure: 200 × 0.5
        #expect(d.backoff(failures: 30, jitter: 0.999) <= 1_000)
        #expect(d.backoff(failures: 3, jitter: 0) == 200)
        #expect(d.entries[try CitySlug("hangzhou")]?.lastError?.contains("refused") == true)
    }

    @Test("simultaneous dials keep the connection dialed by the smaller city, on both sides")
    func duplicates() throws {
        // shanghai's view: hangzhou < shanghai, so hangzhou's dial (inbound here) wins.
        var sh = PeerDirectory(configuration: .init(localCity: try CitySlug("shanghai"), seeds: [try .init("hangzhou@h:1")]))
        guard case .dial(let out, _, _) = sh.onTick(now: 0).first, let inb = sh.acceptInbound() else {
            Issue.record("setup")
            return
        }
        #expect(sh.onEstablished(out, peer: Self.peer("hangzhou"), certificateNotAfter: Self.now, wallNow: Self.now).isEmpty)
        let closes = sh.onEstablished(inb, peer: Self.peer("hangzhou"), certificateNotAfter: Self.now, wallNow: Self.now)
        #expect(closes.count == 1)
        #expect(closes.first.map { if case .close(let id, .duplicate, _) = $0 { id == out } else { false } } == true)
        #expect(sh.entries[try CitySlug("hangzhou")]?.connection == inb)

        // hangzhou's view of the same two connections: its outbound one wins.
        var hz = PeerDirectory(configuration: .init(localCity: try CitySlug("hangzhou"), seeds: [try .init("shanghai@h:2")]))
        guard case .dial(let hzOut, _, _) = hz.onTick(now: 0).first, let hzIn = hz.acceptInbound() else {
            Issue.record("setup")
            return
        }
        #expect(hz.onEstablished(hzIn, peer: Self.peer("shanghai"), certificateNotAfter: Self.now, wallNow: Self.now).isEmpty)
        let hzCloses = hz.onEstablished(hzOut, peer: Self.peer("shanghai"), certificateNotAfter: Self.now, wallNow: Self.now)
        #expect(hzCloses.first.map { if case .close(let id, .duplicate, _) = $0 { id == hzIn } else { false } } == true)
        // Closing the loser does not disturb the winner.
        hz.onClosed(hzIn, reason: .duplicate, detail: "", now: 1, wallNow: Self.now, jitter: 0)
        #expect(hz.entries[try CitySlug("shanghai")]?.state == .connected)
        #expect(hz.entries[try CitySlug("shanghai")]?.connection == hzOut)
    }

    @Test("the connection limit refuses inbound connections, and an inbound peer's address is learned")
    func limitAndLearning() throws {
        var d = PeerDirectory(configuration: .init(localCity: try CitySlug("hangzhou"), seeds: [], maxConnections: 2))
        let a = d.acceptInbound()
        #expect(a != nil)
        #expect(d.acceptInbound() != nil)
        #expect(d.acceptInbound() == nil)
        // a learns shanghai's listen address from its HELLO, and is redialed after it drops.
        _ = d.onEstablished(a!, peer: Self.peer("shanghai", listen: "10.0.0.2:7002"), certificateNotAfter: Self.now, wallNow: Self.now)
        d.onClosed(a!, reason: .connectionLost, detail: "reset", now: 0, wallNow: Self.now, jitter: 0)
        #expect(d.acceptInbound() != nil)
        let dials = d.onTick(now: 10_000_000_000)
        #expect(dials.isEmpty)  // at the limit again (two open)
        var e = PeerDirectory(configuration: .init(localCity: try CitySlug("hangzhou"), seeds: []))
        let b = e.acceptInbound()!
        _ = e.onEstablished(b, peer: Self.peer("shanghai", listen: "10.0.0.2:7002"), certificateNotAfter: Self.now, wallNow: Self.now)
        e.onClosed(b, reason: .connectionLost, detail: "reset", now: 0, wallNow: Self.now, jitter: 0)
        #expect(e.onTick(now: 10_000_000_000).first.map { if case .dial(_, _, let addr) = $0 { addr == "10.0.0.2:7002" } else { false } } == true)
    }

    @Test("a learned address whose certificate was refused as revoked is forgotten; a seed is kept")
    func forgetRevoked() throws {
        var d = PeerDirectory(configuration: .init(localCity: try CitySlug("hangzhou"), seeds: [try .init("suzhou@h:3")]))
        let a = d.acceptInbound()!
        _ = d.onEstablished(a, peer: Self.peer("shanghai", listen: "h:2"), certificateNotAfter: Self.now, wallNow: Self.now)
        d.onClosed(a, reason: .revoked, detail: "revoked", now: 0, wallNow: Self.now, jitter: 0)
        let dials = d.onTick(now: 100_000_000_000)
        guard case .dial(let id, let city, _) = dials.first(where: { if case .dial(_, let c, _) = $0 { c.rawValue == "shanghai" } else { false } }) else {
            Issue.record("shanghai should be redialed once: \(dials)")
            return
        }
        d.onFailed(id, reason: .revoked, detail: "revoked", now: 0, jitter: 0)
        #expect(d.entries[city]?.address == nil)
        #expect(!d.onTick(now: 500_000_000_000).contains { if case .dial(_, let c, _) = $0 { c == city } else { false } })
        // A configured seed is kept even when refused: the operator named it.
        let suzhou = try CitySlug("suzhou")
        let seedDial = try #require(dials.compactMap { if case .dial(let sid, suzhou, _) = $0 { sid } else { nil } }.first)
        d.onFailed(seedDial, reason: .revoked, detail: "revoked", now: 0, jitter: 0)
        #expect(d.entries[suzhou]?.address == "h:3")
        #expect(d.onTick(now: 700_000_000_000).contains { if case .dial(_, suzhou, _) = $0 { true } else { false } })
    }
}

/// The ledger's messages on the peer transport (channel 3), and the answers a node gives.
@Suite("Ledger messages on the wire")
struct LedgerWireTests {
    /// A prover over an in-memory tree: the same MerkleLevels the store keeps.
    struct TreeProver: LedgerProver {
        let levels: MerkleLevels
        let note: String?
        func latestCheckpoint() async throws -> String? { note }
        func inclusionProof(index: UInt64, size: UInt64) async throws -> [MerkleHash] { try levels.inclusionProof(index: index, size: size) }
        func consistencyProof(size1: UInt64, size2: UInt64) async throws -> [MerkleHash] { try levels.consistencyProof(size1: size1, size2: size2) }
        func size() async throws -> UInt64 { levels.count }
    }

    static let h = MerkleHash([UInt8](repeating: 0xAB, count: 32))!

    @Test("every message round-trips; the bytes of one are as documented")
    func roundTrip() throws {
        let all: [LedgerWire] = [
            .getCheckpoint(id: 1), .checkpoint(id: 2, note: "a\n1\nxyz\n\n— a sig\n"), .getInclusion(id: 3, index: 4, size: 5),
            .inclusion(id: 3, index: 4, size: 5, hashes: [Self.h, Self.h]), .getConsistency(id: 9, size1: 1, size2: 2),
            .consistency(id: 9, size1: 1, size2: 2, hashes: []), .error(id: 7, message: "no"),
        ]
        for m in all { #expect(try LedgerWire.decode(m.encoded()[...]) == m) }
        #expect(LedgerWire.getInclusion(id: 0x0102_0304, index: 41, size: 1000).encoded()
            == [0x03, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 41, 0, 0, 0, 0, 0, 0, 0x03, 0xE8])
    }

    @Test("malformed messages are refused, never crash (fuzzed)")
    func fuzz() {
        #expect(throws: WireError.self) { try LedgerWire.decode([][...]) }
        #expect(throws: WireError.self) { try LedgerWire.decode([0x09, 0, 0, 0, 1][...]) }
        #expect(throws: WireError.self) { try LedgerWire.decode(LedgerWire.getCheckpoint(id: 1).encoded()[...] + [0]) }
        #expect(throws: WireError.self) { try LedgerWire.decode([0x04, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 16) + [200][...]) }
        var rng = SeededRNG(seed: 33)
        let seeds: [[UInt8]] = [LedgerWire.inclusion(id: 3, index: 4, size: 5, hashes: [Self.h]).encoded(), LedgerWire.checkpoint(id: 1, note: "x\n").encoded()]
        for _ in 0..<20_000 {
            var bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                switch Int.random(in: 0..<3, using: &rng) {
                case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
                default: bytes.append(UInt8.random(in: 0...255, using: &rng))
                }
            }
            if let m = try? LedgerWire.decode(bytes[...]) { #expect(m.encoded() == bytes) }
        }
    }

    @Test("a node answers with proofs that verify, and with an error for what it cannot prove")
    func answers() async throws {
        let leaves = (0..<100).map { i in Merkle.leafHash([UInt8(i)]) }
        let prover = TreeProver(levels: MerkleLevels(leaves: leaves), note: "the note\n")
        #expect(await LedgerWire.answer(.getCheckpoint(id: 5), from: prover) == .checkpoint(id: 5, note: "the note\n"))
        guard case .inclusion(6, 41, 90, let path)? = await LedgerWire.answer(.getInclusion(id: 6, index: 41, size: 90), from: prover) else {
            Issue.record("no inclusion proof")
            return
        }
        try Merkle.verifyInclusion(leaf: leaves[41], index: 41, size: 90, proof: path, root: Merkle.root(leaves.prefix(90)))
        guard case .consistency(7, 10, 100, let c)? = await LedgerWire.answer(.getConsistency(id: 7, size1: 10, size2: 100), from: prover) else {
            Issue.record("no consistency proof")
            return
        }
        try Merkle.verifyConsistency(size1: 10, size2: 100, root1: Merkle.root(leaves.prefix(10)), root2: Merkle.root(leaves), proof: c)
        for bad: LedgerWire in [.getInclusion(id: 8, index: 90, size: 90), .getInclusion(id: 8, index: 0, size: 101), .getConsistency(id: 8, size1: 0, size2: 5),
                                .getConsistency(id: 8, size1: 6, size2: 5), .getConsistency(id: 8, size1: 5, size2: 500)] {
            guard case .error(8, let message)? = await LedgerWire.answer(bad, from: prover) else {
                Issue.record("answered \(bad)")
                continue
            }
            #expect(message.contains("100"))
        }
        #expect(await LedgerWire.answer(.getCheckpoint(id: 1), from: TreeProver(levels: MerkleLevels(base: 0), note: nil)) == .error(id: 1, message: "no checkpoint has been signed yet"))
        #expect(await LedgerWire.answer(.error(id: 1, message: "x"), from: prover) == nil, "answers are not answered")
    }
}
