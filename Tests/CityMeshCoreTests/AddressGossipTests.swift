import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
@testable import CityMeshCore

/// How address records travel (issue 20): a summary on connect, answered with what the other side
/// lacks; records learned are passed on, once; a relay cannot redirect a city; a node signs above
/// a record of its own only when it really signed it; hostile encodings are refused; who dials
/// whom (seeds, partners, the active view) and whom SWIM probes.
@Suite("Address gossip and views")
struct AddressGossipTests {
    typealias G = AddressGossip
    static let hz = AddressRecordTests.hz, sh = AddressRecordTests.sh, sz = AddressRecordTests.sz
    static let now = AddressRecordTests.now

    /// Three cities with their own keys; the test's "certificate" of a city is its DER, and a
    /// record verifies when it travels with its city's certificate and its signature holds.
    struct City {
        let slug: CitySlug
        let key: Agreement.Key
        let certificate: Certificate
        var der: [UInt8] {
            var s = DER.Serializer()
            try! s.serialize(certificate)
            return s.serializedBytes
        }
    }

    static let cities: [CitySlug: City] = {
        var out: [CitySlug: City] = [:]
        for slug in [hz, sh, sz] {
            let key = Curve25519.Signing.PrivateKey()
            out[slug] = City(slug: slug, key: .ed25519(key), certificate: try! AgreementCoreTests.certificate(Certificate.PrivateKey(key), ed25519: true))
        }
        return out
    }()

    static func verify(_ item: G.Relayed) -> String? {
        guard let city = cities[item.record.city] else { return "unknown city" }
        guard item.certificate == city.der else { return "the certificate relayed with it is another city's" }
        do { try item.record.verify(certificate: city.certificate) } catch { return "its signature does not verify" }
        return nil
    }

    static func relayed(_ city: CitySlug, version: UInt64 = now, addresses: [String]) throws -> G.Relayed {
        let c = cities[city]!
        return G.Relayed(record: try AddressRecord.sign(city: city, version: version, addresses: addresses, key: c.key), certificate: c.der)
    }

    static func node(_ city: CitySlug, port: Int) throws -> G {
        var g = G(me: city)
        _ = g.setOwn(try relayed(city, addresses: ["127.0.0.1:\(port)"]), connected: [])
        return g
    }

    /// Connects `a` and `b` as a new session does: each sends its summary, the other answers, and
    /// the records are taken. Returns what each learned.
    static func connect(_ a: inout G, _ b: inout G, connectedA: [CitySlug] = [], connectedB: [CitySlug] = []) -> (a: [G.Directive], b: [G.Directive]) {
        var toA: [G.Message] = [], toB: [G.Message] = []
        for case .summary(let after, let through, let entries) in a.summary() {
            for case .send(_, let m) in b.answer(after: after, through: through, entries: entries, peer: a.me) { toA.append(m) }
        }
        for case .summary(let after, let through, let entries) in b.summary() {
            for case .send(_, let m) in a.answer(after: after, through: through, entries: entries, peer: b.me) { toB.append(m) }
        }
        var outA: [G.Directive] = [], outB: [G.Directive] = []
        for case .records(let items) in toA { outA += a.take(items, from: b.me, nowMillis: now, connected: connectedA + [b.me], verify: verify).directives }
        for case .records(let items) in toB { outB += b.take(items, from: a.me, nowMillis: now, connected: connectedB + [a.me], verify: verify).directives }
        return (outA, outB)
    }

    @Test("a city reached through a relay: hangzhou's record goes to shanghai on connect and on to suzhou, once, with its certificate; a move is passed on and reaches everyone")
    func spread() throws {
        var a = try Self.node(Self.hz, port: 7001), b = try Self.node(Self.sh, port: 7002), c = try Self.node(Self.sz, port: 7003)
        let (_, learnedB) = Self.connect(&a, &b)
        #expect(b.book.records[Self.hz]?.addresses == ["127.0.0.1:7001"])
        #expect(learnedB.contains { if case .learned(let r, let via) = $0 { r.record.city == Self.hz && via == Self.hz } else { false } })
        // suzhou knows only shanghai: it learns hangzhou's address from shanghai, relayed.
        let (_, learnedC) = Self.connect(&b, &c, connectedA: [Self.hz])
        #expect(c.book.records[Self.hz]?.addresses == ["127.0.0.1:7001"])
        #expect(learnedC.contains { if case .learned(let r, let via) = $0 { r.record.city == Self.hz && via == Self.sh } else { false } })
        #expect(c.certificates[Self.hz] == Self.cities[Self.hz]!.der)
        // The same summary again: nothing new is sent.
        let again = Self.connect(&b, &c)
        #expect(again.a.isEmpty && again.b.isEmpty)

        // hangzhou moves: its new record reaches shanghai (connected), which passes it to suzhou
        // but not back to hangzhou; suzhou, connected to no one else, passes it nowhere.
        let moved = try Self.relayed(Self.hz, version: Self.now + 1, addresses: ["127.0.0.1:9001"])
        let pushed = a.setOwn(moved, connected: [Self.sh])
        #expect(pushed == [.send(to: Self.sh, .records([moved]))])
        let (atB, _) = b.take([moved], from: Self.hz, nowMillis: Self.now, connected: [Self.hz, Self.sz], verify: Self.verify)
        #expect(atB.contains(.send(to: Self.sz, .records([moved]))))
        #expect(!atB.contains { if case .send(Self.hz, _) = $0 { true } else { false } })
        let (atC, _) = c.take([moved], from: Self.sh, nowMillis: Self.now, connected: [Self.sh], verify: Self.verify)
        #expect(atC == [.learned(moved, via: Self.sh)])
        #expect(c.book.records[Self.hz]?.addresses == ["127.0.0.1:9001"])
        // An old copy arriving late is stale: not taken, not passed on (no gossip loops).
        let late = try Self.relayed(Self.hz, version: Self.now, addresses: ["127.0.0.1:7001"])
        #expect(c.take([late], from: Self.sh, nowMillis: Self.now, connected: [Self.sh], verify: Self.verify).directives.isEmpty)
        #expect(c.book.records[Self.hz]?.addresses == ["127.0.0.1:9001"])
    }

    @Test("a relay cannot redirect a city: an altered address, another city's certificate, a record signed by the relay in the city's name are refused, and the true record stays")
    func relayCannotRedirect() throws {
        var c = try Self.node(Self.sz, port: 7003)
        let genuine = try Self.relayed(Self.hz, addresses: ["127.0.0.1:7001"])
        _ = c.take([genuine], from: Self.sh, nowMillis: Self.now, connected: [], verify: Self.verify)
        let r = genuine.record
        let redirected = G.Relayed(
            record: AddressRecord(city: r.city, version: r.version + 1, addresses: ["6.6.6.6:7001"], algorithm: r.algorithm, signature: r.signature),
            certificate: genuine.certificate)
        let borrowedCertificate = G.Relayed(record: r, certificate: Self.cities[Self.sh]!.der)
        let signedByRelay = G.Relayed(
            record: try AddressRecord.sign(city: Self.hz, version: Self.now + 5, addresses: ["6.6.6.6:7001"], key: Self.cities[Self.sh]!.key),
            certificate: Self.cities[Self.sh]!.der)
        let (directives, refused) = c.take([redirected, signedByRelay], from: Self.sh, nowMillis: Self.now, connected: [Self.hz], verify: Self.verify)
        #expect(directives.isEmpty)
        #expect(refused.count == 2 && refused.allSatisfy { $0.contains("hangzhou") && $0.contains("from shanghai") }, "\(refused)")
        // The genuine record with the wrong certificate is "known" (the same record): harmless.
        _ = c.take([borrowedCertificate], from: Self.sh, nowMillis: Self.now, connected: [], verify: Self.verify)
        #expect(c.book.records[Self.hz] == r)
        #expect(c.certificates[Self.hz] == Self.cities[Self.hz]!.der)
        // Control: the verifier is what refuses them; one that accepts everything lets the redirect in.
        var open = try Self.node(Self.sz, port: 7003)
        _ = open.take([genuine, redirected], from: Self.sh, nowMillis: Self.now, connected: [], verify: { _ in nil })
        #expect(open.book.records[Self.hz]?.addresses == ["6.6.6.6:7001"])
    }

    @Test("a record of this node's own city: one it signed above its current version makes it sign a newer one; a forgery, a far-future version or a summary's bare claim do not")
    func ownCity() throws {
        var a = try Self.node(Self.hz, port: 7001)
        let older = try Self.relayed(Self.hz, version: Self.now + 60_000, addresses: ["127.0.0.1:7999"])  // signed before a restore from backup
        #expect(a.take([older], from: Self.sh, nowMillis: Self.now, connected: [], verify: Self.verify).directives == [.resign(above: Self.now + 60_000)])
        let forged = G.Relayed(
            record: try AddressRecord.sign(city: Self.hz, version: Self.now + 70_000, addresses: ["6.6.6.6:1"], key: Self.cities[Self.sh]!.key),
            certificate: Self.cities[Self.hz]!.der)
        let (d1, r1) = a.take([forged], from: Self.sh, nowMillis: Self.now, connected: [], verify: Self.verify)
        #expect(d1.isEmpty && r1.count == 1)
        let farFuture = try Self.relayed(Self.hz, version: Self.now + AddressBook.maxAheadMillis + 1, addresses: ["127.0.0.1:7001"])
        #expect(a.take([farFuture], from: Self.sh, nowMillis: Self.now, connected: [], verify: Self.verify).directives.isEmpty)
        // A summary claiming a higher version of hangzhou proves nothing: hangzhou sends its own
        // record (so the peer can answer with the newer one, if it has it) and signs nothing.
        let answer = a.answer(after: nil, through: nil, entries: [.init(city: Self.hz, version: AddressRecord.maxVersion)], peer: Self.sh)
        #expect(answer == [.send(to: Self.sh, .records([a.own!]))])
    }

    @Test("summaries in slices: 5,000 cities' records are summarised in three messages and a node missing them all gets every one, in messages of at most 8")
    func slices() throws {
        var big = G(me: Self.sz, maxCities: 10_000)
        let template = try Self.relayed(Self.hz, addresses: ["127.0.0.1:7001"])
        // Records of 5,000 invented cities, taken without checks (the book is what is tested).
        var items: [G.Relayed] = []
        for i in 0..<5_000 {
            let city = try CitySlug(String(format: "city-%04d", i))
            items.append(G.Relayed(record: AddressRecord(city: city, version: 1, addresses: ["10.0.0.1:1"], algorithm: 1, signature: [1]), certificate: template.certificate))
        }
        _ = big.take(items, from: Self.sh, nowMillis: Self.now, connected: [], verify: { _ in nil })
        #expect(big.book.records.count == 5_000)
        let summary = big.summary()
        #expect(summary.count == 3)
        for m in summary {
            let bytes = AddressWire.encode(m)
            #expect(bytes.count + 3 <= Int(WireFraming.minimumMaxFrameLength))
            #expect(try AddressWire.decode(bytes[...]) == m)
        }
        let empty = G(me: Self.sh)
        var got = 0
        for case .summary(let after, let through, let entries) in summary {
            // The other direction: the empty node answers nothing; the full node answers the empty summary with all.
            #expect(empty.answer(after: after, through: through, entries: entries, peer: Self.sz).isEmpty)
        }
        for case .summary(let after, let through, let entries) in empty.summary() {
            for case .send(_, .records(let r)) in big.answer(after: after, through: through, entries: entries, peer: Self.sh) {
                #expect(r.count <= AddressWire.maxRecords)
                got += r.count
            }
        }
        #expect(got == 5_000)
        // A flood past the book's bound is refused, not held.
        var small = G(me: Self.sz, maxCities: 100)
        let (_, refused) = small.take(items, from: Self.sh, nowMillis: Self.now, connected: [], verify: { _ in nil })
        #expect(small.book.records.count == 100 && refused.count == 4_900)
    }

    @Test("hostile encodings are refused with a reason: versions at UInt64.max, 2^63 and above 2^62, repeated or unordered cities, cities outside the slice, too many entries or records, empty or oversized certificates, unknown types, trailing bytes")
    func hostileWire() throws {
        func summary(after: String = "", through: String = "", _ entries: [(String, UInt64)], count: Int? = nil) -> [UInt8] {
            var w = WireWriter()
            w.u8(1)
            w.str8(after)
            w.str8(through)
            w.u16(UInt16(count ?? entries.count))
            for (c, v) in entries {
                w.str8(c)
                w.u64(v)
            }
            return w.bytes
        }
        func refused(_ bytes: [UInt8], _ why: String) {
            do {
                let m = try AddressWire.decode(bytes[...])
                Issue.record("decoded \(m), expected a refusal naming '\(why)'")
            } catch {
                #expect("\(error)".contains(why), "\(error)")
            }
        }
        refused(summary([("hangzhou", .max)]), "above the largest")
        refused(summary([("hangzhou", 1 << 63)]), "above the largest")
        refused(summary([("hangzhou", AddressRecord.maxVersion + 1)]), "above the largest")
        refused(summary([("hangzhou", 1), ("hangzhou", 2)]), "repeated")
        refused(summary([("suzhou", 1), ("hangzhou", 2)]), "out of order")
        refused(summary(after: "shanghai", [("hangzhou", 1)]), "not after shanghai")
        refused(summary(through: "hangzhou", [("suzhou", 1)]), "after hangzhou")
        refused(summary(after: "suzhou", through: "hangzhou", []), "empty or reversed")
        refused(summary([("Not A Slug", 1)]), "not a city slug")
        refused(summary([], count: 2_001), "at most 2000")
        refused(summary([("hangzhou", 1)], count: 2), "summary city")
        refused(summary([("hangzhou", 1)]) + [0], "bytes after")
        refused([9], "unknown address message type 9")
        refused([], "address message type")
        let r = try Self.relayed(Self.hz, addresses: ["127.0.0.1:7001"])
        func records(_ items: [([UInt8], [UInt8])], count: Int? = nil) -> [UInt8] {
            var w = WireWriter()
            w.u8(2)
            w.u8(UInt8(count ?? items.count))
            for (record, cert) in items {
                w.raw(record)
                w.u16(UInt16(cert.count))
                w.raw(cert)
            }
            return w.bytes
        }
        #expect(try AddressWire.decode(records([(r.record.encoded, r.certificate)])[...]) == .records([r]))
        refused(records([]), "0 address records")
        refused(records(Array(repeating: (r.record.encoded, r.certificate), count: 9)), "9 address records")
        refused(records([(r.record.encoded, [])]), "0-byte certificate")
        refused(records([(r.record.encoded, [UInt8](repeating: 1, count: 4_097))]), "4097-byte certificate")
        refused(records([(r.record.encoded, r.certificate)]) + [1, 2], "bytes after")
        refused(records([(r.record.encoded, r.certificate)], count: 2), "address record format")
        var huge = r.record.encoded
        huge.replaceSubrange(10..<18, with: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])  // the version, after format and "hangzhou"
        refused(records([(huge, r.certificate)]), "above the largest")
    }

    @Test("who dials whom: learned cities fill the active view up to its budget, the rest are held passive and not dialed; partners are dialed beyond it; a move is dialed at once; a signed record is kept over HELLO; an active city that keeps failing gives its place to a passive one")
    func views() throws {
        let me = try CitySlug("city-000")
        var d = PeerDirectory(configuration: .init(localCity: me, seeds: [try .init("city-001@s:1")], backoffBase: 100, backoffMax: 1_000, activeView: 3))
        for i in 2...10 {
            d.learn(try CitySlug(String(format: "city-%03d", i)), addresses: ["10.0.0.\(i):7001"], source: .gossip(via: try CitySlug("city-001")), now: 0)
        }
        func dialed(_ directives: [PeerDirectory.Directive]) -> Set<String> {
            Set(directives.compactMap { if case .dial(_, let c, _) = $0 { c.rawValue } else { nil } })
        }
        #expect(d.entries.values.filter { $0.view == "active" }.count == 3)
        #expect(d.entries.values.filter { $0.view == "passive" }.count == 6)
        #expect(d.entries[try CitySlug("city-005")]?.source == .gossip(via: try CitySlug("city-001")))
        let first = d.onTick(now: 1)
        #expect(dialed(first) == ["city-001", "city-002", "city-003", "city-004"])
        // A partner is dialed whatever the budget, as soon as its address is known.
        d.setPartners([try CitySlug("city-009"), try CitySlug("city-020")])
        #expect(dialed(d.onTick(now: 2)) == ["city-009"])
        let c20 = try CitySlug("city-020")
        #expect(d.entries[c20]?.view == "partner" && d.entries[c20]?.address == nil)
        d.learn(try CitySlug("city-020"), addresses: ["10.0.0.20:7001", "[2001:db8::20]:7001"], source: .gossip(via: try CitySlug("city-002")), now: 3)
        #expect(dialed(d.onTick(now: 3)) == ["city-020"])
        #expect(d.neighbours.count == 6)  // the seed, three active, two partners

        // city-002 fails to answer: backoff, then after `demoteAfter` failures a passive city takes its place.
        let c2 = try CitySlug("city-002")
        var id = try #require(first.compactMap { if case .dial(let i, c2, _) = $0 { i } else { nil } }.first)
        var t: UInt64 = 10
        for n in 1...PeerDirectory.demoteAfter {
            d.onFailed(id, reason: .dialFailed, detail: "refused", now: t, jitter: 0)
            t += 10_000
            if n < PeerDirectory.demoteAfter {
                id = try #require(d.onTick(now: t).compactMap { if case .dial(let i, c2, _) = $0 { i } else { nil } }.first)
            }
        }
        #expect(d.entries[c2]?.view == "passive")
        #expect(d.entries.values.filter { $0.view == "active" }.count == 3)
        #expect(!dialed(d.onTick(now: t + 100_000)).contains("city-002"))

        // A city that moved (a new signed record) is dialed at once, despite its backoff.
        let c3 = try CitySlug("city-003")
        let id3 = try #require(first.compactMap { if case .dial(let i, c3, _) = $0 { i } else { nil } }.first)
        d.onFailed(id3, reason: .dialFailed, detail: "refused", now: t, jitter: 0)
        #expect(!dialed(d.onTick(now: t + 1)).contains("city-003"))
        d.learn(c3, addresses: ["10.0.0.33:7001"], source: .gossip(via: c3), now: t + 2)
        let redial = d.onTick(now: t + 2)
        #expect(redial.contains { if case .dial(_, c3, "10.0.0.33:7001") = $0 { true } else { false } })

        // HELLO's listen does not replace a signed record's addresses; for a seed, the configured
        // address stays as the last one to try.
        let c4 = try CitySlug("city-004")
        let c4dial = try #require(first.compactMap { if case .dial(let i, c4, _) = $0 { i } else { nil } }.first)
        _ = d.onEstablished(c4dial, peer: PeerDirectoryTests.peer("city-004", listen: "1.2.3.4:1"), certificateNotAfter: PeerDirectoryTests.now, wallNow: PeerDirectoryTests.now)
        #expect(d.entries[c4]?.addresses == ["10.0.0.4:7001"])
        d.learn(try CitySlug("city-001"), addresses: ["10.0.0.1:7001"], source: .gossip(via: try CitySlug("city-001")), now: t)
        #expect(d.entries[try CitySlug("city-001")]?.addresses == ["10.0.0.1:7001", "s:1"])
        #expect(d.entries[try CitySlug("city-001")]?.view == "seed")
    }

    @Test("SWIM probes only the members it can reach: with a reachable set, pings and PING-REQs go to its members alone, and a member outside it is never suspected by this node")
    func probesOnlyNeighbours() throws {
        let me = try CitySlug("hangzhou"), a = try CitySlug("shanghai"), b = try CitySlug("suzhou"), c = try CitySlug("ningbo")
        var m = Membership(me: me, seeds: [a, b, c], seed: 7)
        m.setReachable([a, b])
        var targets = Set<CitySlug>()
        var t: UInt64 = 0
        for _ in 0..<200 {
            t += 100_000_000
            for case .send(let to, _) in m.onTick(now: t) { targets.insert(to) }
        }
        #expect(targets == [a, b])
        // No one answered: a and b are suspected (then dead); ningbo, which this node does not probe, is still alive.
        #expect(m.members[c]?.status == .alive)
        #expect(m.members[a]?.status != .alive && m.members[b]?.status != .alive)
        // Control: without the set, every member is probed.
        var all = Membership(me: me, seeds: [a, b, c], seed: 7)
        var everyone = Set<CitySlug>()
        t = 0
        for _ in 0..<200 {
            t += 100_000_000
            for case .send(let to, _) in all.onTick(now: t) { everyone.insert(to) }
        }
        #expect(everyone == [a, b, c])
    }
}
