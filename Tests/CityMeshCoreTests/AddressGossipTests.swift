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
        // Answers announce (HAVE); each side asks (WANT) and the other sends the records.
        var outA: [G.Directive] = [], outB: [G.Directive] = []
        for case .have(let entries) in toA {
            for case .send(_, .want(let cities)) in a.onHave(entries, from: b.me, nowMillis: now) {
                for case .send(_, .records(let items)) in b.onWant(cities, from: a.me) {
                    outA += a.take(items, from: b.me, nowMillis: now, connected: connectedA + [b.me], verify: verify).directives
                }
            }
        }
        for case .have(let entries) in toB {
            for case .send(_, .want(let cities)) in b.onHave(entries, from: a.me, nowMillis: now) {
                for case .send(_, .records(let items)) in a.onWant(cities, from: b.me) {
                    outB += b.take(items, from: a.me, nowMillis: now, connected: connectedB + [a.me], verify: verify).directives
                }
            }
        }
        return (outA, outB)
    }

    @Test("a city reached through a relay: hangzhou's record goes to shanghai on connect and on to suzhou, once, with its certificate; a move is announced on, fetched by those that lack it and reaches everyone")
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
        let announced = G.Entry(city: Self.hz, version: moved.record.version)
        #expect(atB.contains(.send(to: Self.sz, .have([announced]))))
        #expect(!atB.contains { if case .send(Self.hz, _) = $0 { true } else { false } })
        // suzhou asks once, however many connections announce it, until the answer is overdue.
        #expect(c.onHave([announced], from: Self.sh, nowMillis: Self.now) == [.send(to: Self.sh, .want([Self.hz]))])
        #expect(c.onHave([announced], from: Self.hz, nowMillis: Self.now + 1).isEmpty)
        #expect(c.asked[Self.hz]?.from == [Self.sh, Self.hz])
        // shanghai's answer is lost: after the timeout suzhou asks the next announcer.
        let retry = c.onTick(nowMillis: Self.now + G.wantTimeoutMillis, connected: [Self.sh, Self.hz]) { _ in 0 }
        #expect(retry == [.send(to: Self.hz, .want([Self.hz]))])
        let sent = b.onWant([Self.hz], from: Self.sz)
        #expect(sent == [.send(to: Self.sz, .records([moved]))])
        let (atC, _) = c.take([moved], from: Self.sh, nowMillis: Self.now, connected: [Self.sh], verify: Self.verify)
        #expect(atC == [.learned(moved, via: Self.sh)])
        #expect(c.asked.isEmpty)
        // Announced again (by a slow peer): held already, not asked for.
        #expect(c.onHave([announced], from: Self.sh, nowMillis: Self.now + 2).isEmpty)
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
        // A summary claiming a higher version of hangzhou proves nothing: hangzhou announces its
        // own record (so the peer can answer with the newer one, if it has it) and signs nothing.
        let own = try #require(a.own)
        let answer = a.answer(after: nil, through: nil, entries: [.init(city: Self.hz, version: AddressRecord.maxVersion)], peer: Self.sh)
        #expect(answer == [.send(to: Self.sh, .have([.init(city: Self.hz, version: own.record.version)]))])
        // Announced by a peer above its own: fetched, so that `take` can check it; at or below: not.
        #expect(a.onHave([.init(city: Self.hz, version: own.record.version + 1)], from: Self.sh, nowMillis: Self.now) == [.send(to: Self.sh, .want([Self.hz]))])
        #expect(a.onHave([.init(city: Self.hz, version: own.record.version)], from: Self.sz, nowMillis: Self.now).isEmpty)
        #expect(a.onWant([Self.hz, Self.sz], from: Self.sh) == [.send(to: Self.sh, .records([own]))])
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
            for case .send(_, .have(let announced)) in big.answer(after: after, through: through, entries: entries, peer: Self.sh) {
                #expect(announced.count <= AddressWire.maxEntries)
                for case .send(_, .records(let r)) in big.onWant(announced.map(\.city), from: Self.sh) {
                    #expect(r.count <= AddressWire.maxRecords)
                    got += r.count
                }
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

        // HAVE (3) and WANT (4): the same bounds as a summary's entries.
        func have(_ entries: [(String, UInt64)], count: Int? = nil) -> [UInt8] {
            var w = WireWriter()
            w.u8(3)
            w.u16(UInt16(count ?? entries.count))
            for (c, v) in entries {
                w.str8(c)
                w.u64(v)
            }
            return w.bytes
        }
        func want(_ cities: [String], count: Int? = nil) -> [UInt8] {
            var w = WireWriter()
            w.u8(4)
            w.u16(UInt16(count ?? cities.count))
            for c in cities { w.str8(c) }
            return w.bytes
        }
        #expect(try AddressWire.decode(have([("hangzhou", 5), ("suzhou", AddressRecord.maxVersion)])[...]) == .have([.init(city: Self.hz, version: 5), .init(city: Self.sz, version: AddressRecord.maxVersion)]))
        #expect(try AddressWire.decode(want(["hangzhou", "suzhou"])[...]) == .want([Self.hz, Self.sz]))
        refused(have([("hangzhou", .max)]), "above the largest")
        refused(have([("hangzhou", 1 << 63)]), "above the largest")
        refused(have([("hangzhou", 1), ("hangzhou", 1)]), "repeated")
        refused(have([("suzhou", 1), ("hangzhou", 1)]), "out of order")
        refused(have([]), "0 entries in a HAVE")
        refused(have([], count: 2_001), "2001 entries in a HAVE")
        refused(have([("hangzhou", 1)]) + [0], "bytes after")
        refused(want([]), "0 cities in a WANT")
        refused(want([], count: 65_535), "65535 cities in a WANT")
        refused(want(["suzhou", "suzhou"]), "repeated")
        refused(want(["suzhou", "hangzhou"]), "out of order")
        refused(want(["Not A Slug"]), "not a city slug")
        refused(want(["hangzhou"], count: 2), "wanted city")
    }

    @Test("hostile announcements: a flood of HAVEs for invented cities asks for no more than the book can hold; one for this node's own city at UInt64.max, another's record asked for by a WANT it does not hold, or a WANT naming cities twice sends nothing it should not")
    func hostileAnnouncements() throws {
        var a = G(me: Self.sz, maxCities: 50)
        let flood = (0..<2_000).map { G.Entry(city: try! CitySlug(String(format: "city-%04d", $0)), version: 1) }
        guard case .send(_, .want(let asked))? = a.onHave(flood, from: Self.sh, nowMillis: Self.now).first else {
            Issue.record("nothing asked")
            return
        }
        #expect(asked.count == 50 && a.asked.count == 50)
        // The same flood again, from another peer and later: nothing more is asked; the record
        // of asks stays within the bound.
        for t in 1...5 { _ = a.onHave(flood, from: Self.hz, nowMillis: Self.now + UInt64(t) * G.wantTimeoutMillis) }
        #expect(a.asked.count <= 50)
        // Versions past the largest, or this node's own city above its (absent) record: not asked.
        #expect(a.onHave([.init(city: Self.hz, version: .max)], from: Self.sh, nowMillis: Self.now).isEmpty)
        #expect(a.onHave([.init(city: Self.sz, version: 1 << 62)], from: Self.sh, nowMillis: Self.now).isEmpty)
        // A WANT for cities it does not hold sends nothing; its own record goes once per ask.
        let b = try Self.node(Self.hz, port: 7001)
        #expect(b.onWant([Self.sh, Self.sz], from: Self.sz).isEmpty)
        #expect(b.onWant([Self.hz], from: Self.sz) == [.send(to: Self.sz, .records([b.own!]))])
    }

    @Test("who dials whom: the active view is the learned cities that rank first under the node's salt, whatever order they are learned in; the rest are held passive and not dialed; partners are dialed beyond it; a move is dialed at once; a signed record is kept over HELLO; an active city that keeps failing gives its place to a passive one")
    func views() throws {
        let me = try CitySlug("city-000")
        var d = PeerDirectory(configuration: .init(localCity: me, seeds: [try .init("city-001@s:1")], backoffBase: 100, backoffMax: 1_000, activeView: 3))
        for i in 2...10 {
            d.learn(try CitySlug(String(format: "city-%03d", i)), addresses: ["10.0.0.\(i):7001"], source: .gossip(via: try CitySlug("city-001")), now: 0)
        }
        func dialed(_ directives: [PeerDirectory.Directive]) -> Set<String> {
            Set(directives.compactMap { if case .dial(_, let c, _) = $0 { c.rawValue } else { nil } })
        }
        let active = d.entries.values.filter { $0.view == "active" }.map(\.city).sorted()
        let passive = d.entries.values.filter { $0.view == "passive" }.map(\.city).sorted()
        #expect(active.count == 3 && passive.count == 6)
        // The three that rank first, not the first three learned.
        let ranked = (2...10).map { try! CitySlug(String(format: "city-%03d", $0)) }.sorted { d.rank($0) < d.rank($1) }
        #expect(Set(active) == Set(ranked.prefix(3)))
        // Learned in the opposite order: the same view. Under another salt: another view (a
        // node's view is its own sample, so no few cities become every node's hub).
        var reversed = PeerDirectory(configuration: .init(localCity: me, seeds: [], activeView: 3))
        var salted = PeerDirectory(configuration: .init(localCity: me, seeds: [], activeView: 3, viewSalt: 0x5EED))
        for i in (2...10).reversed() {
            reversed.learn(try CitySlug(String(format: "city-%03d", i)), addresses: ["10.0.0.\(i):7001"], source: .gossip(via: me), now: 0)
            salted.learn(try CitySlug(String(format: "city-%03d", i)), addresses: ["10.0.0.\(i):7001"], source: .gossip(via: me), now: 0)
        }
        #expect(Set(reversed.entries.values.filter { $0.view == "active" }.map(\.city)) == Set(active))
        #expect(Set(salted.entries.values.filter { $0.view == "active" }.map(\.city)) != Set(active))
        #expect(d.entries[try CitySlug("city-005")]?.source == .gossip(via: try CitySlug("city-001")))
        let first = d.onTick(now: 1)
        #expect(dialed(first) == Set(["city-001"] + active.map(\.rawValue)))
        // A partner is dialed whatever the budget, as soon as its address is known.
        let partner = passive[0]
        d.setPartners([partner, try CitySlug("city-020")])
        #expect(dialed(d.onTick(now: 2)) == [partner.rawValue])
        let c20 = try CitySlug("city-020")
        #expect(d.entries[c20]?.view == "partner" && d.entries[c20]?.address == nil)
        d.learn(try CitySlug("city-020"), addresses: ["10.0.0.20:7001", "[2001:db8::20]:7001"], source: .gossip(via: try CitySlug("city-002")), now: 3)
        #expect(dialed(d.onTick(now: 3)) == ["city-020"])
        #expect(d.neighbours.count == 6)  // the seed, three active, two partners

        // city-002 fails to answer: backoff, then after `demoteAfter` failures a passive city takes its place.
        let c2 = active[0]
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
        #expect(!dialed(d.onTick(now: t + 100_000)).contains(c2.rawValue))

        // A city that moved (a new signed record) is dialed at once, despite its backoff.
        let c3 = active[1]
        let id3 = try #require(first.compactMap { if case .dial(let i, c3, _) = $0 { i } else { nil } }.first)
        d.onFailed(id3, reason: .dialFailed, detail: "refused", now: t, jitter: 0)
        #expect(!dialed(d.onTick(now: t + 1)).contains(c3.rawValue))
        d.learn(c3, addresses: ["10.0.0.33:7001"], source: .gossip(via: c3), now: t + 2)
        let redial = d.onTick(now: t + 2)
        #expect(redial.contains { if case .dial(_, c3, "10.0.0.33:7001") = $0 { true } else { false } })

        // HELLO's listen does not replace a signed record's addresses; for a seed, the configured
        // address stays as the last one to try.
        let c4 = active[2]
        let c4dial = try #require(first.compactMap { if case .dial(let i, c4, _) = $0 { i } else { nil } }.first)
        _ = d.onEstablished(c4dial, peer: PeerDirectoryTests.peer(c4.rawValue, listen: "1.2.3.4:1"), certificateNotAfter: PeerDirectoryTests.now, wallNow: PeerDirectoryTests.now)
        #expect(d.entries[c4]?.addresses == ["10.0.0.\(Int(c4.rawValue.suffix(3))!):7001"])
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

    @Test("SWIM probes the cities this node is connected to, and for a grace period one whose connection was lost; not a city it only dials and never reached, not one that left a view, not a duplicate (PeerDirectory.probed: the node and the simulator run this one rule)")
    func probedCities() throws {
        let me = try CitySlug("city-000"), a = try CitySlug("city-001"), b = try CitySlug("city-002"), partner = try CitySlug("city-009")
        var d = PeerDirectory(configuration: .init(localCity: me, seeds: [try .init("city-001@10.0.0.1:1"), try .init("city-002@10.0.0.2:1")], activeView: 3))
        d.setPartners([partner])
        let t: UInt64 = 1_000
        let dials = d.onTick(now: t)
        func id(_ c: CitySlug) throws -> PeerDirectory.ConnectionID {
            try #require(dials.compactMap { if case .dial(let i, c, _) = $0 { i } else { nil } }.first)
        }
        // Dialed, not yet connected (and a partner without an address): not probed.
        #expect(d.probed(now: t).isEmpty)
        for c in [a, b] {
            _ = d.onEstablished(try id(c), peer: PeerDirectoryTests.peer(c.rawValue, listen: ""), certificateNotAfter: PeerDirectoryTests.now, wallNow: PeerDirectoryTests.now)
        }
        #expect(d.probed(now: t) == [a, b])
        // a's connection is lost: still probed within the grace, then not; b's peer closed it
        // because its view changed: not probed from then on.
        d.onClosed(try id(a), reason: .connectionLost, detail: "reset", now: t, wallNow: PeerDirectoryTests.now, jitter: 0)
        d.onClosed(try id(b), reason: .viewChanged, detail: "view", now: t, wallNow: PeerDirectoryTests.now, jitter: 0)
        #expect(d.probed(now: t + PeerDirectory.probeGrace - 1) == [a])
        #expect(d.probed(now: t + PeerDirectory.probeGrace).isEmpty)
        // A peer's CLOSE for a view change is told apart from others by its code.
        for (code, reason) in [(CloseCode.viewChanged, DisconnectReason.viewChanged), (.normal, .peerClosed), (.idleTimeout, .peerClosed)] {
            var session = PeerSession(configuration: PeerSessionTests.config(), now: 0)
            _ = session.onTLSEstablished(city: PeerSessionTests.hz, fingerprint: "ab", now: 1)
            _ = session.onMessage(PeerSessionTests.theirHello(), now: 2)
            let closed = session.onMessage(.close(code, "bye"), now: 3)
            #expect(closed.contains { if case .close(reason, _) = $0 { true } else { false } }, "\(code): \(closed)")
        }
        #expect(DisconnectReason.viewChanged.closeCode == .viewChanged && !DisconnectReason.viewChanged.isRefusal)
    }

    @Test("a message's size is counted without encoding it, to the byte (the simulator counts address traffic this way)")
    func encodedCounts() throws {
        let item = try Self.relayed(Self.hz, addresses: ["127.0.0.1:7001", "[::1]:7002"])
        #expect(item.record.encodedCount == item.record.encoded.count)
        let messages: [AddressGossip.Message] = [
            .records([item, item]),
            .summary(after: nil, through: nil, entries: []),
            .summary(after: Self.hz, through: Self.sz, entries: [.init(city: Self.sh, version: .max), .init(city: Self.sz, version: 1)]),
        ]
        for m in messages { #expect(AddressWire.encodedCount(m) == AddressWire.encode(m).count) }
    }
}
