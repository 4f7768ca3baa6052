// citymesh-hostile-peer: a member of the federation that sends what no honest node sends.
//
// A test tool, not shipped (it is not a product of the package). It holds a real federation
// certificate (a node directory made by `citymesh init`), completes TLS 1.3 and HELLO with the
// target like a real node (it runs the production `PeerNetwork`), and then sends crafted
// messages on every channel: out-of-range integers, duplicate ids, documents in another city's
// name, forged revocations, and floods. It prints one line per attack and "done" at the end; the
// end-to-end test (`HostilePeerTests`) checks what the victim did with them.
//
//   citymesh-hostile-peer --dir suzhou --target hangzhou --share hangzhou/registry-rw \
//       --dataset hangzhou/registry [--offer <id of another member's offer>] [--flood 20000]

import CityMeshCore
import CityMeshNet
import CityMeshNode
import Crypto
import CryptoExtras
import Foundation
import Logging
import NIOCore
import Synchronization
import SwiftASN1
import X509

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("citymesh-hostile-peer: \(message)\n".utf8))
    exit(2)
}

guard let dirPath = argument("--dir"), let targetName = argument("--target"), let share = argument("--share"), let dataset = argument("--dataset")
else { fail("usage: --dir DIR --target CITY --share OWNER/SHARE --dataset OWNER/NAME [--offer ID] [--flood N]") }
let flood = argument("--flood").flatMap { Int($0) } ?? 20_000
let target = try CitySlug(targetName)
let directory = NodeDirectory(dirPath)
let config = try directory.loadConfig()
let me = try CitySlug(config.city)
let keyPEM = try String(contentsOfFile: directory.file(config.tls.key), encoding: .utf8)
let certPEM = try String(contentsOfFile: directory.file(config.tls.cert), encoding: .utf8)
let roots = try PEM.certificates(try String(contentsOfFile: directory.file(config.tls.ca), encoding: .utf8), what: "the CA")
guard let edKey = try? Curve25519.Signing.PrivateKey(pemRepresentation: keyPEM) else { fail("this tool signs with an Ed25519 node key") }
let signingKey = Agreement.Key.ed25519(edKey)
let listen = try HostPort(config.listen, what: "listen")

var logger = Logger(label: "hostile-peer")
logger.logLevel = .error
/// The address records the target sends (channel 6): the genuine records an attack alters.
let received = Mutex<[AddressGossip.Relayed]>([])
/// The cities whose records the target announced (HAVE): asked for with WANT.
let announced = Mutex<[CitySlug]>([])
let network = try PeerNetwork(
    configuration: .init(
        city: me, listenHost: listen.host, listenPort: listen.port, advertise: listen.description,
        identity: try PeerTLS.Identity(chainPEM: certPEM, keyPEM: keyPEM),
        trust: PeerTrust(roots: roots, revocations: nil, denied: []), seeds: try (config.peers ?? .init()).seedList()),
    logger: logger,
    onMessage: { message in
        guard message.channel == AddressWire.channel, let decoded = try? AddressWire.decode(Array(message.payload.readableBytesView)[...]) else { return }
        switch decoded {
        case .records(let items): received.withLock { $0 += items }
        case .have(let entries): announced.withLock { $0 += entries.map(\.city) }
        case .summary, .want: break
        }
    })

func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func send(_ channel: UInt16, _ payload: [UInt8]) async {
    do { try await network.send(to: target, channel: channel, payload: payload) } catch { say("send failed: \(error)") }
}

func signedJSON(_ document: some Encodable) throws -> [UInt8] {
    Array(try JSONEncoder().encode(try signingKey.sign(document, as: me)))
}

func batch(fields: [Schema.Field], records: [ChangeBatch.Record], seq: UInt64 = 1) throws -> [UInt8] {
    let b = ChangeBatch(share: share, dataset: dataset, origin: me, seq: seq, prev: ChangeBatch.zeroHash, fields: fields, seen: [:], records: records)
    return ReplicationWire.encode(.batch(share: share, bytes: try b.signed(with: signingKey).bytes))
}

/// A summary or ACKED message encoded by hand, so values the encoder would never write (and
/// duplicate origins) go out as they are.
func vector(type: UInt8, share: String, _ entries: [(String, UInt64)]) -> [UInt8] {
    var w = WireWriter()
    w.u8(type)
    w.str8(share)
    w.u16(UInt16(entries.count))
    for (o, n) in entries {
        w.str8(o)
        w.u64(n)
    }
    return w.bytes
}

/// `record` with other fields under its old signature (what a relay that alters a record sends).
func relabel(_ record: AddressRecord, version: UInt64, addresses: [String]) throws -> AddressRecord {
    var w = WireWriter()
    w.u8(1); w.str8(record.city.rawValue); w.u64(version); w.u8(UInt8(addresses.count))
    for a in addresses { w.str8(a) }
    w.u8(record.algorithm); w.u16(UInt16(record.signature.count)); w.raw(record.signature)
    return try AddressRecord.decode(w.bytes[...])
}

func attack() async throws {
    let stamp = Stamp(hlc: HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), logical: 0), city: me)

    // Channel 1, membership: the victim declared dead at incarnations a refutation cannot top.
    for incarnation: UInt64 in [.max, 1 << 63, Membership.maxIncarnation] {
        await send(Membership.Message.channel, Membership.Message.ping(seq: 1, updates: [.init(city: target, status: .dead, incarnation: incarnation)]).encoded())
    }
    say("membership: victim dead at UInt64.max, 2^63, 2^62")

    // Channel 3, ledger: sizes and indices at and beyond 2^63.
    for size: UInt64 in [.max, 1 << 63] {
        await send(LedgerWire.channel, LedgerWire.cosignature(id: 1, size: size, line: "\u{2014} \(me) AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").encoded())
        await send(LedgerWire.channel, LedgerWire.getInclusion(id: 2, index: size, size: size).encoded())
        await send(LedgerWire.channel, LedgerWire.getConsistency(id: 3, size1: size, size2: 1 << 63).encoded())
    }
    say("ledger: cosignature, inclusion and consistency at 2^63 and UInt64.max")

    // Channel 4, agreements: junk, documents in another city's name, a time with 7 fraction digits.
    await send(Agreement.channel, Array("not a document".utf8))
    if let offer = argument("--offer") {
        // Another member's agreement, revoked by this co-member: in its own name, and in the owner's.
        await send(Agreement.channel, try signedJSON(Agreement.Revocation(offer: offer, owner: me.rawValue, share: "registry-rw", member: target.rawValue, reason: "revoked by hand", at: "2026-12-01T00:00:00Z")))
        await send(Agreement.channel, try signedJSON(Agreement.Revocation(offer: offer, owner: target.rawValue, share: "registry-rw", member: "shanghai", reason: "forged", at: "2026-12-01T00:00:00Z")))
        // An answer to an offer made to someone else.
        await send(Agreement.channel, try signedJSON(Agreement.Response(offer: offer, owner: target.rawValue, share: "registry-rw", member: me.rawValue, accept: false, at: "2026-12-01T00:00:00Z")))
    }
    // A well-formed offer of this city's own, dated with more than 6 fraction digits.
    let offerJSON = """
        {"type":"citymesh-offer/v1","owner":"\(me)","share":"hostile","member":"\(target)","dataset":"anything","fields":["id"],"write":[],
         "purpose":"p","legalBasis":"l","validFrom":"2026-12-01T00:00:00.000000000001Z","validUntil":"2099-12-31T00:00:00.1234567Z",
         "onRevoke":"keep","policyVersion":1,"issuedAt":"2026-12-01T00:00:00.123456789Z","nonce":"00"}
        """
    let offer = try JSONDecoder().decode(Agreement.Offer.self, from: Data(offerJSON.utf8))
    await send(Agreement.channel, try signedJSON(offer))
    say("agreements: junk, forged revocations and answer, an offer with 7+ fraction digits")

    // Channel 5, replication.
    // A compactable batch whose records were changed after it was signed (as a relay might), one
    // whose body claims 2^31 records, and one whose first key length no record has.
    let sealed = try ChangeBatch(
        share: share, dataset: dataset, origin: me, seq: 1, prev: ChangeBatch.zeroHash, fields: [.init(id: 1, name: "id", type: .string, nullable: false)],
        seen: [:], records: [.init(key: "E-1", state: RecordState(cells: [Cell(field: 1, value: .string("E-1"), stamp: stamp)]))]
    ).signed(with: signingKey)
    var altered = sealed.records
    altered[altered.count - 1] ^= 0x01
    await send(ReplicationWire.channel, ReplicationWire.encode(.batch(share: share, bytes: SignedBatch(body: sealed.body, algorithm: sealed.algorithm, signature: sealed.signature, records: altered).bytes)))
    var claims = sealed.body
    claims.replaceSubrange((claims.count - 36)..<(claims.count - 32), with: [0x80, 0, 0, 0])
    let (a2, s2) = try signingKey.signRaw(SignedBatch.context + claims)
    await send(ReplicationWire.channel, ReplicationWire.encode(.batch(share: share, bytes: SignedBatch(body: claims, algorithm: a2, signature: s2, records: sealed.records).bytes)))
    await send(ReplicationWire.channel, ReplicationWire.encode(.batch(share: share, bytes: SignedBatch(body: sealed.body, algorithm: sealed.algorithm, signature: sealed.signature, records: [7] + sealed.records.dropFirst()).bytes)))
    say("replication: compactable batches altered after signing, claiming 2^31 records, with a key length no record has")
    // Batch numbers near UInt64.max, duplicate origins, for the real share and for invented ones.
    await send(ReplicationWire.channel, vector(type: 1, share: share, [(target.rawValue, .max), (me.rawValue, 1 << 63), ("shanghai", .max - 1)]))
    await send(ReplicationWire.channel, vector(type: 2, share: share, [(me.rawValue, 5), (me.rawValue, 6)]))
    await send(ReplicationWire.channel, vector(type: 7, share: share, [(target.rawValue, .max)]))
    say("replication: summaries at UInt64.max, duplicate origins")
    // A record-state varint at 2^63 (a field id), inside a properly signed batch.
    var body = ChangeBatch(share: share, dataset: dataset, origin: me, seq: 1, prev: ChangeBatch.zeroHash, fields: [.init(id: 1, name: "id", type: .string, nullable: false)], seen: [:], records: []).encoded()
    body.removeLast(4)
    var w = WireWriter()
    w.u32(1)
    w.str16("E-1")
    var blob: [UInt8] = [RecordStateCodec.formatVersion, 1] + [UInt8](repeating: 0, count: 7) + [1] + [UInt8(me.rawValue.utf8.count)] + Array(me.rawValue.utf8)
    blob += [0, 1] + [UInt8](repeating: 0x80, count: 9) + [0x01] + [0, 0]
    w.u32(UInt32(blob.count))
    w.raw(blob)
    body += w.bytes
    let (algorithm, signature) = try signingKey.signRaw(SignedBatch.context + body)
    await send(ReplicationWire.channel, ReplicationWire.encode(.batch(share: share, bytes: SignedBatch(body: body, algorithm: algorithm, signature: signature).bytes)))
    // Duplicate field ids and names.
    let id = Schema.Field(id: 1, name: "id", type: .string, nullable: false)
    await send(ReplicationWire.channel, try batch(fields: [id, .init(id: 1, name: "status", type: .string, nullable: true)], records: []))
    await send(ReplicationWire.channel, try batch(fields: [id, .init(id: 3, name: "id", type: .string, nullable: true)], records: []))
    say("replication: batches with a 2^63 field id, duplicate field ids and names")
    // Writes this member may not make: a field the owner never defined (id 99, labelled as the
    // writable 'status'), a value of the wrong type, a record created, a deletion.
    let planted = Schema.Field(id: 99, name: "status", type: .string, nullable: true)
    let records: [ChangeBatch.Record] = [
        .init(key: "E-1", state: RecordState(cells: [Cell(field: 99, value: .string("planted"), stamp: stamp)])),
        .init(key: "E-1", state: RecordState(cells: [Cell(field: 3, value: .int(42), stamp: stamp)])),
        .init(key: "PLANTED", state: RecordState(cells: [Cell(field: 1, value: .string("PLANTED"), stamp: stamp), Cell(field: 3, value: .string("planted"), stamp: stamp)])),
        .init(key: "E-2", state: RecordState(cells: [], tombstone: stamp)),
        // The writable field, on a record the row filter keeps from members.
        .init(key: "E-3", state: RecordState(cells: [Cell(field: 3, value: .string("leaked"), stamp: stamp)])),
    ]
    await send(ReplicationWire.channel, try batch(fields: [id, planted], records: records))
    say("replication: a batch planting an undefined field, a wrong type, a new record and a deletion")
    // A receipt with a run up to 2^63, asking the victim to countersign it.
    let receipt = ExchangeReceipt(
        share: share, sender: target, receiver: me, batches: ["\(target):1-9223372036854775808"], records: 1, batchesSHA256: "00", receiverLedgerSize: .max, at: "2026-12-01T00:00:00Z")
    await send(ReplicationWire.channel, ReplicationWire.encode(.document(json: try signedJSON(receipt))))
    // A well-formed receipt for a batch the victim holds but never sent to this member (it was cut
    // while this city was offline; the test gives its number, hash and record count, as a
    // co-member that relayed it could): refused, since countersigning it would have the victim
    // sign that it sent what it did not.
    if let unsent = argument("--unsent") {
        let parts = unsent.split(separator: ":").map(String.init)
        guard parts.count == 4, let seq = UInt64(parts[1]), let records = Int(parts[3]), parts[2].count == 64 else { fail("--unsent ORIGIN:SEQ:HASHHEX:RECORDS") }
        var hash: [UInt8] = []
        var hex = Substring(parts[2])
        while !hex.isEmpty { hash.append(UInt8(hex.prefix(2), radix: 16) ?? 0); hex = hex.dropFirst(2) }
        let honest = ExchangeReceipt(
            share: share, sender: target, receiver: me, batches: ["\(parts[0]):\(seq)-\(seq)"], records: records,
            batchesSHA256: ExchangeReceipt.digest([hash]), receiverLedgerSize: 1, at: "2026-12-01T00:00:00Z")
        await send(ReplicationWire.channel, ReplicationWire.encode(.document(json: try signedJSON(honest))))
        say("replication: a receipt for a batch the victim never sent to this member")
    }
    // A receipt naming another member's agreement (shanghai's offer, which the victim holds) as
    // the one this member took batches under: refused before anything is countersigned.
    if let offer = argument("--offer") {
        let borrowed = ExchangeReceipt(
            share: share, sender: target, receiver: me, batches: ["\(target):1-1"], records: 1, batchesSHA256: "00", receiverLedgerSize: 1,
            at: "2026-12-01T00:00:00Z", agreement: offer, purpose: "someone else's")
        await send(ReplicationWire.channel, ReplicationWire.encode(.document(json: try signedJSON(borrowed))))
        say("replication: a receipt naming another member's agreement")
    }
    // A certificate relayed for the victim's own city.
    let der = try PEM.certificates(certPEM, what: "cert")[0]
    var serializer = DER.Serializer()
    try serializer.serialize(der)
    await send(ReplicationWire.channel, ReplicationWire.encode(.certificate(city: target, der: serializer.serializedBytes)))
    say("replication: a receipt run to 2^63, a certificate relayed for the victim's own city")
    // Announcements and requests (after the receipts above: a request the victim answers makes
    // what it sends a batch sent to this member). The victim's own batches, another city's, an invented share, batch
    // 0, 2^62 + 1, UInt64.max, 2^63, a malformed origin, trailing bytes; a request for a batch the
    // victim does not hold; and a flood announcing invented origins (each would be asked for and
    // kept in a table if unbounded).
    await send(ReplicationWire.channel, ReplicationWire.encode(.announce(share: share, origin: target, seq: 1)))
    await send(ReplicationWire.channel, ReplicationWire.encode(.announce(share: share, origin: try CitySlug("shanghai"), seq: ReplicationWire.maxSeq)))
    await send(ReplicationWire.channel, ReplicationWire.encode(.announce(share: "invented/share", origin: me, seq: 1)))
    await send(ReplicationWire.channel, ReplicationWire.encode(.want(share: share, origin: target, seqs: 1...ReplicationWire.maxSeq)))
    await send(ReplicationWire.channel, ReplicationWire.encode(.want(share: share, origin: try CitySlug("shanghai"), seqs: 1...1)))
    let bent: [(UInt8, String, [UInt64])] = [
        (8, me.rawValue, [0]), (8, me.rawValue, [UInt64.max]), (8, target.rawValue, [1 << 63]), (8, "Not A City", [1]),
        (9, me.rawValue, [0, 1]), (9, target.rawValue, [5, 4]), (9, target.rawValue, [1, ReplicationWire.maxSeq + 1]), (9, target.rawValue, [1 << 63, UInt64.max]),
    ]
    for (type, origin, seqs) in bent {
        var w = WireWriter()
        w.u8(type)
        w.str8(share)
        w.str8(origin)
        for n in seqs { w.u64(n) }
        await send(ReplicationWire.channel, w.bytes)
    }
    await send(ReplicationWire.channel, ReplicationWire.encode(.announce(share: share, origin: me, seq: 1)) + [0, 0, 0, 1])
    say("replication: announcements and requests for the victim's own batches, another city's, an invented share, batch 0, 2^62 + 1, 2^63, UInt64.max, a malformed origin, trailing bytes")

    // Channel 6, address records. Ask for everything the victim holds (an empty summary), then
    // send back a genuine record of another member redirected, re-signed by this city, and with
    // this city's certificate; a record of the victim's own city; summaries at UInt64.max, 2^63,
    // with duplicates, and one claiming the victim's own record at 2^62; a flood of invented cities.
    await send(AddressWire.channel, AddressWire.encode(.summary(after: nil, through: nil, entries: [])))
    let otherName = argument("--address-of") ?? "shanghai"
    var genuine: AddressGossip.Relayed?
    // The answer announces (HAVE); the record comes when asked for (WANT).
    for i in 0..<100 where genuine == nil {
        genuine = received.withLock { $0.first { $0.record.city.rawValue == otherName } }
        if genuine == nil, i % 10 == 0, let other = announced.withLock({ $0.first { $0.rawValue == otherName } }) {
            await send(AddressWire.channel, AddressWire.encode(.want([other])))
        }
        if genuine == nil { try await Task.sleep(for: .milliseconds(100)) }
    }
    guard let genuine else { fail("the target sent no address record of \(otherName)") }
    let ownDER = { () -> [UInt8] in
        var s = DER.Serializer()
        try! s.serialize(try! PEM.certificates(certPEM, what: "cert")[0])
        return s.serializedBytes
    }()
    let g = genuine.record
    let nowMillis = UInt64(Date().timeIntervalSince1970 * 1000)
    var forged: [AddressGossip.Relayed] = []
    // The genuine record redirected (its signature no longer matches).
    forged.append(.init(record: try relabel(g, version: g.version + 1, addresses: ["6.6.6.6:7001"]), certificate: genuine.certificate))
    // Signed by this city in the other's name: with the other's certificate, and with its own.
    let mine = try AddressRecord.sign(city: g.city, version: g.version + 2, addresses: ["6.6.6.6:7002"], key: signingKey)
    forged.append(.init(record: mine, certificate: genuine.certificate))
    forged.append(.init(record: mine, certificate: ownDER))
    // The victim's own city, far ahead and just ahead.
    forged.append(.init(record: try AddressRecord.sign(city: target, version: AddressRecord.maxVersion, addresses: ["6.6.6.6:7003"], key: signingKey), certificate: ownDER))
    forged.append(.init(record: try AddressRecord.sign(city: target, version: nowMillis + 1_000, addresses: ["6.6.6.6:7004"], key: signingKey), certificate: ownDER))
    await send(AddressWire.channel, AddressWire.encode(.records(forged)))
    for version: UInt64 in [.max, 1 << 63] {
        var w = WireWriter()
        w.u8(1); w.str8(""); w.str8(""); w.u16(1); w.str8(target.rawValue); w.u64(version)
        await send(AddressWire.channel, w.bytes)
    }
    var dup = WireWriter()
    dup.u8(1); dup.str8(""); dup.str8(""); dup.u16(2); dup.str8(me.rawValue); dup.u64(1); dup.str8(me.rawValue); dup.u64(2)
    await send(AddressWire.channel, dup.bytes)
    await send(AddressWire.channel, AddressWire.encode(.summary(after: nil, through: nil, entries: [.init(city: target, version: AddressRecord.maxVersion)])))
    var invented: [AddressGossip.Relayed] = []
    for i in 0..<2_000 {
        invented.append(.init(record: try AddressRecord.sign(city: try CitySlug("ghost-addr-\(i)"), version: nowMillis, addresses: ["6.6.6.6:\(1000 + i)"], key: signingKey), certificate: ownDER))
        if invented.count == AddressWire.maxRecords {
            await send(AddressWire.channel, AddressWire.encode(.records(invented)))
            invented = []
        }
    }
    // Announcements (HAVE) and requests (WANT): versions at UInt64.max and 2^63, cities repeated,
    // the victim's own city at 2^62 (it asks, and gets nothing), 2,000 invented cities (it asks
    // for no more than its book holds), and a flood of requests for its own record.
    for version: UInt64 in [.max, 1 << 63] {
        var w = WireWriter()
        w.u8(3); w.u16(1); w.str8(target.rawValue); w.u64(version)
        await send(AddressWire.channel, w.bytes)
    }
    var repeated = WireWriter()
    repeated.u8(4); repeated.u16(2); repeated.str8(target.rawValue); repeated.str8(target.rawValue)
    await send(AddressWire.channel, repeated.bytes)
    await send(AddressWire.channel, AddressWire.encode(.have([.init(city: target, version: AddressRecord.maxVersion)])))
    let ghosts = (0..<2_000).map { AddressGossip.Entry(city: try! CitySlug("ghost-have-\($0)"), version: nowMillis) }.sorted { $0.city < $1.city }
    await send(AddressWire.channel, AddressWire.encode(.have(ghosts)))
    for _ in 0..<200 { await send(AddressWire.channel, AddressWire.encode(.want([me, target]))) }
    say("addresses: \(otherName)'s record redirected and re-signed, the victim's own city at 2^62, summaries at UInt64.max and 2^63 and with duplicates, 2,000 invented cities; HAVE at UInt64.max and 2^63, WANT with a city repeated, the victim's own city announced at 2^62, 2,000 invented cities announced, 200 requests for the victim's own record")

    // Floods: invented share names (each would have been a table row and a metric series), junk
    // documents, and summaries — more than any inbox holds.
    for i in 0..<flood {
        await send(ReplicationWire.channel, vector(type: 1, share: "invented/share-\(i)", [(me.rawValue, UInt64(i))]))
        if i % 4 == 0 { await send(Agreement.channel, Array("{\"junk\": \(i)}".utf8)) }
        if i % 4 == 2 { await send(ReplicationWire.channel, ReplicationWire.encode(.announce(share: share, origin: try CitySlug("ghost-announce-\(i)"), seq: 1))) }
        if i % 4 == 1 { await send(Membership.Message.channel, Membership.Message.ping(seq: UInt32(i), updates: [.init(city: try CitySlug("ghost-\(i)"), status: .alive, incarnation: 1)]).encoded()) }
    }
    say("floods: \(flood) summaries of invented shares, \(flood / 4) junk documents, \(flood / 4) announcements of invented origins, \(flood / 4) membership pings naming unknown cities")
}

/// `n` random well-framed messages (MessageFuzzer), paced so the victim's per-peer inboxes are
/// not simply overrun; a connection the victim closes (it may: some inputs are protocol
/// violations) is dialled again. Fails if the victim stops answering.
func fuzz(_ n: Int, seed: UInt64) async throws {
    let der = try PEM.certificates(certPEM, what: "cert")[0]
    var serializer = DER.Serializer()
    try serializer.serialize(der)
    var fuzzer = MessageFuzzer(
        rng: SplitMix64(seed: seed), me: me, target: target, share: share, dataset: dataset, offers: argument("--offer").map { [$0] } ?? [],
        sign: { try signingKey.signRaw($0) }, signDocument: { try signedJSON($0) }, certificate: serializer.serializedBytes)
    var reconnects = 0
    for i in 0..<n {
        if network.identity(of: target) == nil {
            reconnects += 1
            let deadline = Date().addingTimeInterval(30)
            while network.identity(of: target) == nil {
                guard Date() < deadline else { fail("after \(i) inputs \(target) did not take a connection again within 30 s: is it down?") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let (channel, payload) = try fuzzer.next()
        do { try await network.send(to: target, channel: channel, payload: payload) } catch {}
        if i % 100 == 99 { try await Task.sleep(for: .milliseconds(15)) }
        if i % 10_000 == 9_999 { say("fuzz: \(i + 1) inputs sent") }
    }
    say("fuzz: \(n) inputs sent (seed \(seed)), \(reconnects) reconnects")
}

try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await network.run() }
    let deadline = Date().addingTimeInterval(30)
    while network.identity(of: target) == nil {
        guard Date() < deadline else { fail("no connection to \(target) within 30 s") }
        try await Task.sleep(for: .milliseconds(100))
    }
    say("connected to \(target) as \(me)")
    if let n = argument("--fuzz").flatMap({ Int($0) }) {
        try await fuzz(n, seed: argument("--seed").flatMap { UInt64($0) } ?? 1)
    } else {
        try await attack()
    }
    // Let the last frames leave before the connection closes.
    try await Task.sleep(for: .seconds(2))
    say("done")
    group.cancelAll()
}
exit(0)
