import CityMeshCore
import Foundation

/// Random, well-framed messages for every peer channel, built from valid templates and then
/// bent: integers at the edges (0, 1, 2^62, 2^63, UInt64.max), duplicates, other cities' names,
/// wrong types, long strings, times with many fraction digits, and with some probability a few
/// flipped or dropped bytes. The victim's real handlers (replication, agreements, membership, addresses,
/// ledger) get each one over the real transport: a semantic fuzz of the node, not only of its
/// decoders. Seeded (SplitMix64), so a failing run replays exactly.
struct MessageFuzzer {
    var rng: SplitMix64
    let me: CitySlug
    let target: CitySlug
    let share: String
    let dataset: String
    let offers: [String]
    let sign: ([UInt8]) throws -> (UInt8, [UInt8])
    let signDocument: (any Encodable) throws -> [UInt8]
    let certificate: [UInt8]

    mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(max(n, 1))) }
    mutating func chance(_ p: Double) -> Bool { Double(rng.next() % 10_000) / 10_000 < p }

    mutating func u64() -> UInt64 {
        switch int(8) {
        case 0: 0
        case 1: 1
        case 2: ReplicationWire.maxSeq
        case 3: ReplicationWire.maxSeq + 1
        case 4: 1 << 63
        case 5: .max
        case 6: .max - UInt64(int(3))
        default: UInt64(int(100))
        }
    }

    mutating func city() -> String {
        switch int(7) {
        case 0: target.rawValue
        case 1: me.rawValue
        case 2: "shanghai"
        case 3: "ghost-\(int(100_000))"
        case 4: "Not A Slug"
        case 5: ""
        default: String(repeating: "x", count: int(300))
        }
    }

    mutating func text() -> String {
        switch int(6) {
        case 0: ""
        case 1: String(repeating: "é", count: int(40_000))
        case 2: "2026-01-01T00:00:00." + String(repeating: "9", count: 1 + int(40)) + "Z"
        case 3: "\u{0}\u{FFFF}\\\"'"
        default: "s\(int(1000))"
        }
    }

    mutating func time() -> String {
        ["2026-12-01T00:00:00Z", "2099-12-31T00:00:00.1234567Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "soon", ""][int(6)]
    }

    mutating func slug() -> CitySlug { (try? CitySlug(city())) ?? me }

    mutating func value() -> Value? {
        switch int(7) {
        case 0: nil
        case 1: .string(text())
        case 2: .int(Int64(bitPattern: u64()))
        case 3: .double([Double.nan, .infinity, -.infinity, 0, 1e308, 41.5][int(6)])
        case 4: .bool(chance(0.5))
        case 5: .timestamp(Int64(bitPattern: u64()))
        default: .string("x")
        }
    }

    mutating func field() -> Schema.Field {
        let names = ["id", "name", "status", "district", "planted", "bad name", ""]
        return Schema.Field(
            id: [0, 1, 2, 3, 4, 99, 65_535, int(10)][int(8)], name: names[int(names.count)],
            type: [FieldType.string, .int, .double, .bool, .timestamp][int(5)], nullable: chance(0.5))
    }

    mutating func membership() -> [UInt8] {
        var w = WireWriter()
        let type = UInt8(1 + int(4))
        w.u8(type)
        w.u32(UInt32(truncatingIfNeeded: u64()))
        if type == 3 { w.str8(city()) }
        let n = chance(0.1) ? 64 + int(3) : int(8)
        w.u8(UInt8(truncatingIfNeeded: n))
        for _ in 0..<n {
            w.str8(city())
            w.u8(UInt8(int(4)))
            w.u64(u64())
        }
        return w.bytes
    }

    mutating func ledger() -> [UInt8] {
        let id = UInt32(truncatingIfNeeded: u64())
        let m: LedgerWire
        switch int(8) {
        case 0: m = .getCheckpoint(id: id)
        case 1: m = .checkpoint(id: id, note: text())
        case 2: m = .getInclusion(id: id, index: u64(), size: u64())
        case 3: m = .inclusion(id: id, index: u64(), size: u64(), hashes: [])
        case 4: m = .getConsistency(id: id, size1: u64(), size2: u64())
        case 5: m = .consistency(id: id, size1: u64(), size2: u64(), hashes: [])
        case 6: m = .error(id: id, message: text())
        default: m = .cosignature(id: id, size: u64(), line: "\u{2014} \(city()) \(Data((0..<int(90)).map { _ in UInt8(int(256)) }).base64EncodedString())\n")
        }
        return m.encoded()
    }

    mutating func agreement() throws -> [UInt8] {
        let offer = offers.isEmpty || chance(0.3) ? String(repeating: "0", count: 64) : offers[int(offers.count)]
        switch int(5) {
        case 0:
            return try signDocument(Agreement.Revocation(offer: offer, owner: city(), share: ["registry-rw", text()][int(2)], member: city(), reason: text(), at: time()))
        case 1:
            var r = Agreement.Response(offer: offer, owner: city(), share: "registry-rw", member: city(), accept: chance(0.5), at: time())
            if chance(0.3) { r.decision = text() }
            return try signDocument(r)
        case 2:
            let json = """
                {"type":"citymesh-offer/v1","owner":"\(city())","share":"\(int(5))","member":"\(city())","dataset":"d","fields":["id"],"write":[],
                 "purpose":"p","legalBasis":"l","validUntil":"\(time())","onRevoke":"keep","policyVersion":\(Int64(bitPattern: u64())),"issuedAt":"\(time())"}
                """
            let offer = try JSONDecoder().decode(Agreement.Offer.self, from: Data(json.utf8))
            return try signDocument(offer)
        case 3:
            return Array("{\"body\":\"\(text())\",\"signer\":\"\(city())\",\"algorithm\":\"ed25519\",\"signature\":\"AAAA\"}".utf8)
        default:
            return (0..<int(200)).map { _ in UInt8(int(256)) }
        }
    }

    mutating func replication() throws -> [UInt8] {
        switch int(7) {
        case 0, 1:
            var w = WireWriter()
            w.u8([1, 2, 7, 9][int(4)])
            w.str8(chance(0.7) ? share : text().prefix(200).description)
            let n = int(6)
            w.u16(UInt16(n))
            for _ in 0..<n {
                w.str8(city())
                w.u64(u64())
            }
            return w.bytes
        case 2, 3:
            let fields = (0..<int(5)).map { _ in field() }
            let stamp = Stamp(hlc: HLC(rawValue: chance(0.5) ? u64() : HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), logical: 0).rawValue), city: slug())
            let records = (0..<int(4)).map { _ in
                ChangeBatch.Record(
                    key: ["E-1", "E-2", "PLANTED", "", String(repeating: "k", count: 300)][int(5)],
                    state: RecordState(cells: (0..<int(4)).map { _ in Cell(field: [1, 2, 3, 4, 99, Int.max][int(6)], value: value(), stamp: stamp) }, tombstone: chance(0.2) ? stamp : nil))
            }
            let seen = Dictionary((0..<int(3)).map { _ in (slug(), HLC(rawValue: u64())) }, uniquingKeysWith: { a, _ in a })
            let b = ChangeBatch(
                share: chance(0.9) ? share : text(), dataset: chance(0.9) ? dataset : text(), origin: chance(0.9) ? me : slug(),
                seq: [1, 2, 3, u64()][int(4)], prev: chance(0.8) ? ChangeBatch.zeroHash : (0..<32).map { _ in UInt8(int(256)) }, fields: fields, seen: seen, records: records)
            let body = b.encoded()
            let (algorithm, signature) = try sign(SignedBatch.context + body)
            return ReplicationWire.encode(.batch(share: share, bytes: SignedBatch(body: body, algorithm: algorithm, signature: signature).bytes))
        case 4:
            let receipt = ExchangeReceipt(
                share: chance(0.8) ? share : text(), sender: chance(0.8) ? target : slug(), receiver: chance(0.8) ? me : slug(),
                batches: (0..<int(3)).map { _ in "\(city()):\(u64())-\(u64())" }, records: Int(truncatingIfNeeded: u64()), batchesSHA256: text(),
                receiverLedgerSize: u64(), at: time())
            return ReplicationWire.encode(.document(json: try signDocument(receipt)))
        case 5:
            let roster = ShareRoster(
                owner: chance(0.5) ? target : slug(), share: share, dataset: dataset, members: (0..<int(4)).map { _ in slug() }, fields: ["id", text()],
                filter: chance(0.5) ? nil : text(), write: [text()], issued: Int64(bitPattern: u64()))
            return ReplicationWire.encode(.document(json: try signDocument(roster)))
        case 6 where chance(0.3):
            // ANNOUNCE or WANT: the real share or not, any origin (the victim's own, invented,
            // malformed), any batch number.
            var w = WireWriter()
            w.u8(chance(0.5) ? 8 : 9)
            w.str8(chance(0.7) ? share : text().prefix(200).description)
            w.str8(chance(0.5) ? target.rawValue : city())
            w.u64([0, 1, 2, ReplicationWire.maxSeq, ReplicationWire.maxSeq + 1, u64()][int(6)])
            if chance(0.5) { w.u64([0, 1, 3, ReplicationWire.maxSeq, .max, u64()][int(6)]) }
            if chance(0.1) { w.u8(0) }
            return w.bytes
        default:
            return chance(0.5)
                ? ReplicationWire.encode(.certificate(city: slug(), der: chance(0.5) ? certificate : (0..<int(300)).map { _ in UInt8(int(256)) }))
                : ReplicationWire.encode(.checkpoint(city: slug(), note: "\(city()).citymesh/ledger\n\(u64())\n\(text())\n\n\u{2014} x AAAA\n"))
        }
    }

    /// Channel 6: summaries with bent slices and versions, records of any city signed by this
    /// one, with this city's certificate, another's bytes or junk.
    mutating func addresses() throws -> [UInt8] {
        var w = WireWriter()
        if chance(0.2) {
            // HAVE or WANT: counts at and past the bounds, any cities and versions.
            let have = chance(0.5)
            w.u8(have ? 3 : 4)
            let n = [0, 1, 2, 2_000, 2_001, 65_535][int(6)]
            w.u16(UInt16(n))
            for _ in 0..<min(n, 50 + int(50)) {
                w.str8(city())
                if have { w.u64(u64()) }
            }
            return w.bytes
        }
        if chance(0.5) {
            w.u8(1)
            w.str8(chance(0.5) ? "" : city())
            w.str8(chance(0.5) ? "" : city())
            let n = [0, 1, 2, 2_000, 2_001, 65_535][int(6)]
            w.u16(UInt16(n))
            for _ in 0..<min(n, 50 + int(50)) {
                w.str8(city())
                w.u64(u64())
            }
            return w.bytes
        }
        w.u8(2)
        let n = [0, 1, 8, 9, 255][int(5)]
        w.u8(UInt8(n))
        for _ in 0..<min(n, 9) {
            var body = WireWriter()
            body.u8(chance(0.9) ? 1 : UInt8(int(256)))
            body.str8(city())
            body.u64(chance(0.5) ? UInt64(Date().timeIntervalSince1970 * 1000) : u64())
            let addresses = (0..<[0, 1, 8, 9][int(4)]).map { _ in chance(0.7) ? "127.0.0.1:\(int(70_000))" : text() }
            body.u8(UInt8(min(addresses.count, 255)))
            for a in addresses { body.str8(String(a.utf8.prefix(255)) ?? "") }
            let (algorithm, signature) = try sign(AddressRecord.context + body.bytes)
            w.raw(body.bytes)
            w.u8(chance(0.9) ? algorithm : UInt8(int(256)))
            w.u16(UInt16(signature.count))
            w.raw(signature)
            let cert = chance(0.7) ? certificate : (0..<int(5_000)).map { _ in UInt8(int(256)) }
            w.u16(UInt16(cert.count))
            w.raw(cert)
        }
        return w.bytes
    }

    /// One message: its channel and payload.
    mutating func next() throws -> (UInt16, [UInt8]) {
        var (channel, payload): (UInt16, [UInt8])
        switch int(11) {
        case 0, 1: (channel, payload) = (Membership.Message.channel, membership())
        case 2, 3: (channel, payload) = (LedgerWire.channel, ledger())
        case 4, 5: (channel, payload) = (Agreement.channel, try agreement())
        case 6, 7, 8: (channel, payload) = (ReplicationWire.channel, try replication())
        case 9: (channel, payload) = (AddressWire.channel, try addresses())
        default: (channel, payload) = ([0, 2, 6, 7, 9, 4096, .max][int(7)], (0..<int(64)).map { _ in UInt8(int(256)) })
        }
        if chance(0.15), !payload.isEmpty {
            for _ in 0..<(1 + int(4)) {
                switch int(3) {
                case 0: payload[int(payload.count)] = UInt8(int(256))
                case 1: payload.removeLast(min(payload.count, 1 + int(16)))
                default: payload.insert(UInt8(int(256)), at: int(payload.count))
                }
                if payload.isEmpty { break }
            }
        }
        // The transport's own limit: a frame the victim would refuse as too large ends the
        // connection, which is the transport's test, not this one's.
        if payload.count > 60_000 { payload = Array(payload.prefix(60_000)) }
        return (channel, payload)
    }
}
