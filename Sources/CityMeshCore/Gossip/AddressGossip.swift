/// How signed address records travel (issue 20, docs/protocol.md §7c.1): on channel 6, each
/// side of a new connection sends a summary of the records it holds (city and version, in slices
/// of the alphabet), and the other answers with every record it holds that is newer or missing
/// there, each with the certificate of its city. A record learned is announced at once to every
/// other connection (HAVE: city and version, about 20 bytes), and sent only to those that ask for
/// it (WANT), so each node receives a record about once, not once per connection. So a record
/// spreads over the connection graph in a few hops, an idle federation sends nothing, and a node
/// that reconnects catches up in one round trip.
///
/// Pure: the shell checks certificates (they need the trust in force and a clock) and passes a
/// verdict in; what to send and what was learned come back as directives.
public struct AddressGossip: Sendable {
    /// A record with the certificate of its city (DER), so the receiver can check it without
    /// having met the city.
    public struct Relayed: Sendable, Hashable {
        public let record: AddressRecord
        public let certificate: [UInt8]
        public init(record: AddressRecord, certificate: [UInt8]) {
            self.record = record
            self.certificate = certificate
        }
    }

    public struct Entry: Sendable, Hashable {
        public let city: CitySlug
        public let version: UInt64
        public init(city: CitySlug, version: UInt64) {
            self.city = city
            self.version = version
        }
    }

    public enum Message: Sendable, Equatable {
        /// The records held of the cities after `after` up to and including `through` (nil:
        /// unbounded), in ascending order.
        case summary(after: CitySlug?, through: CitySlug?, entries: [Entry])
        case records([Relayed])
        /// Records learned since, announced: ascending cities with their versions.
        case have([Entry])
        /// The records of these cities, please (ascending).
        case want([CitySlug])
    }

    public enum Directive: Sendable, Equatable {
        case send(to: CitySlug, Message)
        /// A record better than the one held: dial by it (`via` relayed it).
        case learned(Relayed, via: CitySlug)
        /// Someone holds a record of this node's own city at `version` or above (a restore from
        /// backup, a clock set back): sign a new one above it, or the old one would win.
        case resign(above: UInt64)
    }

    public let me: CitySlug
    public private(set) var book: AddressBook
    /// The certificate each held record was checked against.
    public private(set) var certificates: [CitySlug: [UInt8]] = [:]
    /// This node's own record, once signed.
    public private(set) var own: Relayed?
    /// Records asked for (WANT) and not yet received: the version announced and when (ms). A
    /// record announced by several connections at once is asked for once, and again only after
    /// `wantTimeoutMillis` if it did not come.
    public private(set) var asked: [CitySlug: Asked] = [:]
    public struct Asked: Sendable {
        public var version: UInt64
        public var at: UInt64
        /// Who announced it (the first few): asked in turn.
        public var from: [CitySlug]
    }
    public static let wantTimeoutMillis: UInt64 = 5_000

    public init(me: CitySlug, maxCities: Int = 10_000) {
        self.me = me
        book = AddressBook(me: me, maxCities: maxCities)
    }

    /// Every record held, this node's own included.
    public var held: [CitySlug: Relayed] {
        var out: [CitySlug: Relayed] = [:]
        for (city, record) in book.records { if let c = certificates[city] { out[city] = Relayed(record: record, certificate: c) } }
        if let own { out[me] = own }
        return out
    }

    /// Sets this node's own record (signed by the shell) and sends it to `connected`.
    public mutating func setOwn(_ relayed: Relayed, connected: [CitySlug]) -> [Directive] {
        guard relayed.record.city == me else { return [] }
        if let own, own.record.version >= relayed.record.version { return [] }
        own = relayed
        return connected.map { .send(to: $0, .records([relayed])) }
    }

    /// The summary to send on a new connection, in messages of at most `AddressWire.maxEntries`.
    public func summary() -> [Message] {
        let all = held.values.map { Entry(city: $0.record.city, version: $0.record.version) }.sorted { $0.city < $1.city }
        guard !all.isEmpty else { return [.summary(after: nil, through: nil, entries: [])] }
        var out: [Message] = []
        var start = 0
        while start < all.count {
            let end = min(all.count, start + AddressWire.maxEntries)
            let last = end == all.count
            out.append(.summary(after: start == 0 ? nil : all[start - 1].city, through: last ? nil : all[end - 1].city, entries: Array(all[start..<end])))
            start = end
        }
        return out
    }

    /// What `peer`'s summary slice lacks, or holds older: announced (HAVE), so that the peer asks
    /// for each record once, however many of its new connections answer its summary at once.
    public func answer(after: CitySlug?, through: CitySlug?, entries: [Entry], peer: CitySlug) -> [Directive] {
        var theirs: [CitySlug: UInt64] = [:]
        for e in entries { theirs[e.city] = e.version }
        let newer = held.values.filter { r in
            let c = r.record.city
            guard after.map({ c > $0 }) ?? true, through.map({ c <= $0 }) ?? true else { return false }
            // This node's own record goes whenever the peer's differs: a summary is an unsigned
            // claim, so a higher version there proves nothing; if the peer holds a newer record
            // this node signed, it sends it in its answer to this node's summary, and `take`
            // checks it before signing above it.
            if c == me { return theirs[c] != r.record.version }
            return theirs[c].map { r.record.version > $0 } ?? true
        }.map { Entry(city: $0.record.city, version: $0.record.version) }.sorted { $0.city < $1.city }
        return Self.pieces(newer, of: AddressWire.maxEntries).map { .send(to: peer, .have($0)) }
    }

    /// Takes records from `from`. `verify` checks one against the federation's trust (its
    /// certificate under the CA, not revoked or denied, naming its city; then the record's
    /// signature under it): nil when valid, else why not. What is learned is announced (HAVE) to
    /// every other connected city. Returns the directives and, for each record refused, why.
    public mutating func take(
        _ items: [Relayed], from: CitySlug, nowMillis: UInt64, connected: [CitySlug], verify: (Relayed) -> String?
    ) -> (directives: [Directive], refused: [String]) {
        var out: [Directive] = [], refused: [String] = [], learned: [Relayed] = []
        for item in items {
            let record = item.record
            if let a = asked[record.city], a.version <= record.version { asked[record.city] = nil }
            if record.city == me {
                // A record this node signed (before a restore from backup, or a clock set back)
                // at or above the current one: sign a newer one. Only one whose signature checks
                // out and that is not far ahead of the clock, so neither a forgery nor a hostile
                // version can make this node sign a record every other city would refuse.
                if let own, record.version >= own.record.version, record != own.record,
                    record.version <= nowMillis.saturatingAdd(AddressBook.maxAheadMillis), record.version < AddressRecord.maxVersion
                {
                    if let why = verify(item) { refused.append("a record of this node's own city from \(from): \(why)") } else { out.append(.resign(above: record.version)) }
                }
                continue
            }
            switch book.learn(record, nowMillis: nowMillis, verify: { _ in verify(item) }) {
            case .learned:
                certificates[record.city] = item.certificate
                learned.append(item)
            case .conflict where book.records[record.city] == record:
                certificates[record.city] = item.certificate
                learned.append(item)
            case .refused(let why): refused.append("address record of \(record.city) from \(from): \(why)")
            case .known, .stale, .conflict: break
            }
        }
        for item in learned { out.append(.learned(item, via: from)) }
        if !learned.isEmpty {
            // Announced, not sent: a node with many connections would otherwise receive each
            // record once per connection (a 650-byte certificate each time).
            var seen = Set<CitySlug>()
            let entries = learned.map { Entry(city: $0.record.city, version: $0.record.version) }.sorted { $0.city < $1.city }.filter { seen.insert($0.city).inserted }
            for peer in connected where peer != from {
                let forward = entries.filter { $0.city != peer }
                out += Self.pieces(forward, of: AddressWire.maxEntries).map { .send(to: peer, .have($0)) }
            }
        }
        return (out, refused)
    }

    /// `peer` announced records: ask for those missing here or newer than held (none past the
    /// book's bound), each once until `wantTimeoutMillis` passes.
    public mutating func onHave(_ entries: [Entry], from peer: CitySlug, nowMillis: UInt64) -> [Directive] {
        var room = book.maxCities - book.records.count
        let wanted = entries.filter { e in
            guard e.version <= AddressRecord.maxVersion else { return false }
            // A record of this node's own city above the one it signed (a restore from backup, a
            // clock set back): fetched, so that `take` can check it and sign above it.
            if e.city == me { return own.map { e.version > $0.record.version } ?? false }
            if let held = book.records[e.city] {
                guard held.version < e.version else { return false }
            } else {
                guard room > 0 else { return false }
                room -= 1
            }
            if var a = asked[e.city], a.version >= e.version {
                // Asked already: this announcer is one more to ask if the answer does not come.
                if a.from.count < Self.maxAnnouncers, !a.from.contains(peer) {
                    a.from.append(peer)
                    asked[e.city] = a
                }
                return false
            }
            return true
        }.map(\.city)
        guard !wanted.isEmpty else { return [] }
        // Bounded like the book: a peer announcing many cities cannot grow it past that.
        if asked.count + wanted.count > book.maxCities { asked = asked.filter { nowMillis < $0.value.at.saturatingAdd(Self.wantTimeoutMillis) } }
        let asking = Set(wanted)
        for e in entries where asking.contains(e.city) && asked.count < book.maxCities { asked[e.city] = Asked(version: e.version, at: nowMillis, from: [peer]) }
        return [.send(to: peer, .want(wanted))]
    }

    /// Most announcers remembered per record asked for.
    public static let maxAnnouncers = 4

    /// Call about once a second. A record asked for that did not come within `wantTimeoutMillis`
    /// (the connection closed, say) is asked of the next connected city that announced it; when
    /// none is left, this node's summary goes to one connected city (`pick` chooses it), whose
    /// answer announces whatever this node still lacks.
    public mutating func onTick(nowMillis: UInt64, connected: [CitySlug], pick: (Int) -> Int) -> [Directive] {
        guard !asked.isEmpty else { return [] }
        var again: [CitySlug: [CitySlug]] = [:]
        var resync = false
        for (city, a) in asked.sorted(by: { $0.key < $1.key }) where nowMillis >= a.at.saturatingAdd(Self.wantTimeoutMillis) {
            var next = a
            next.from.removeFirst(Swift.min(1, next.from.count))
            while let peer = next.from.first, !connected.contains(peer) { next.from.removeFirst() }
            if let peer = next.from.first {
                next.at = nowMillis
                asked[city] = next
                again[peer, default: []].append(city)
            } else {
                asked[city] = nil
                resync = true
            }
        }
        var out: [Directive] = again.sorted { $0.key < $1.key }.map { .send(to: $0.key, .want($0.value)) }
        if resync, !connected.isEmpty {
            let peer = connected[Swift.min(connected.count - 1, Swift.max(0, pick(connected.count)))]
            out += summary().map { .send(to: peer, $0) }
        }
        return out
    }

    /// `peer` asked for records: those held (this node's own included), in messages of at most
    /// `AddressWire.maxRecords`; cities not held are passed over.
    public func onWant(_ cities: [CitySlug], from peer: CitySlug) -> [Directive] {
        let items = cities.compactMap { c -> Relayed? in
            if c == me { return own }
            guard let record = book.records[c], let certificate = certificates[c] else { return nil }
            return Relayed(record: record, certificate: certificate)
        }
        return Self.pieces(items, of: AddressWire.maxRecords).map { .send(to: peer, .records($0)) }
    }

    /// `items` in consecutive pieces of at most `size` (one message each).
    static func pieces<T>(_ items: [T], of size: Int) -> [[T]] {
        stride(from: 0, to: items.count, by: size).map { Array(items[$0..<min(items.count, $0 + size)]) }
    }

    /// Forgets a city (its certificate was revoked or denied).
    public mutating func forget(_ city: CitySlug) {
        book.forget(city)
        certificates[city] = nil
    }
}

/// The wire form of ``AddressGossip/Message`` (channel 6).
public enum AddressWire {
    public static let channel: UInt16 = 6
    /// Most summary entries in one message (about 20 bytes each: well inside the smallest frame).
    public static let maxEntries = 2_000
    /// Most records in one message.
    public static let maxRecords = 8
    /// Most certificate bytes relayed with a record (a federation certificate is under 1 KiB).
    public static let maxCertificate = 4_096

    /// `u8 1` SUMMARY: `str8 after`, `str8 through` ("" for unbounded), `u16 count`, count ×
    /// (`str8 city`, `u64 version`), strictly ascending, each after `after` and up to `through`.
    /// `u8 2` RECORDS: `u8 count` (1…8), count × (address record, `u16 length`, certificate DER).
    /// `u8 3` HAVE: `u16 count` (1…2,000), count × (`str8 city`, `u64 version`), strictly ascending.
    /// `u8 4` WANT: `u16 count` (1…2,000), count × `str8 city`, strictly ascending.
    public static func encode(_ message: AddressGossip.Message) -> [UInt8] {
        var w = WireWriter()
        switch message {
        case .summary(let after, let through, let entries):
            w.u8(1)
            w.str8(after?.rawValue ?? "")
            w.str8(through?.rawValue ?? "")
            w.u16(UInt16(min(entries.count, maxEntries)))
            for e in entries.prefix(maxEntries) {
                w.str8(e.city.rawValue)
                w.u64(e.version)
            }
        case .records(let items):
            w.u8(2)
            w.u8(UInt8(min(items.count, maxRecords)))
            for item in items.prefix(maxRecords) {
                w.raw(item.record.encoded)
                w.u16(UInt16(min(item.certificate.count, Int(UInt16.max))))
                w.raw(item.certificate.prefix(Int(UInt16.max)))
            }
        case .have(let entries):
            w.u8(3)
            w.u16(UInt16(min(entries.count, maxEntries)))
            for e in entries.prefix(maxEntries) {
                w.str8(e.city.rawValue)
                w.u64(e.version)
            }
        case .want(let cities):
            w.u8(4)
            w.u16(UInt16(min(cities.count, maxEntries)))
            for c in cities.prefix(maxEntries) { w.str8(c.rawValue) }
        }
        return w.bytes
    }

    /// `encode(message).count`, without encoding.
    public static func encodedCount(_ message: AddressGossip.Message) -> Int {
        func str8(_ s: String) -> Int { 1 + Swift.min(s.utf8.count, 255) }
        switch message {
        case .summary(let after, let through, let entries):
            return 1 + str8(after?.rawValue ?? "") + str8(through?.rawValue ?? "") + 2 + entries.prefix(maxEntries).reduce(0) { $0 + str8($1.city.rawValue) + 8 }
        case .records(let items):
            return 2 + items.prefix(maxRecords).reduce(0) { $0 + $1.record.encodedCount + 2 + Swift.min($1.certificate.count, Int(UInt16.max)) }
        case .have(let entries):
            return 3 + entries.prefix(maxEntries).reduce(0) { $0 + str8($1.city.rawValue) + 8 }
        case .want(let cities):
            return 3 + cities.prefix(maxEntries).reduce(0) { $0 + str8($1.rawValue) }
        }
    }

    public static func decode(_ bytes: ArraySlice<UInt8>) throws(WireError) -> AddressGossip.Message {
        var r = WireReader(bytes)
        func city(_ what: String, optional: Bool) throws(WireError) -> CitySlug? {
            let text = try r.str8(what)
            if optional, text.isEmpty { return nil }
            guard let c = try? CitySlug(text) else { throw .malformed("\(what) '\(text.prefix(64))' is not a city slug") }
            return c
        }
        let type = try r.u8("address message type")
        let message: AddressGossip.Message
        switch type {
        case 1:
            let after = try city("summary lower bound", optional: true)
            let through = try city("summary upper bound", optional: true)
            if let after, let through, through <= after { throw .malformed("summary slice (\(after), \(through)] is empty or reversed") }
            let n = Int(try r.u16("summary count"))
            guard n <= maxEntries else { throw .malformed("\(n) summary entries in one message; at most \(maxEntries)") }
            var entries: [AddressGossip.Entry] = []
            entries.reserveCapacity(n)
            for _ in 0..<n {
                guard let c = try city("summary city", optional: false) else { throw .malformed("summary city is empty") }
                let version = try r.u64("summary version")
                guard version <= AddressRecord.maxVersion else {
                    throw .malformed("summary version \(version) of \(c) is above the largest a record may carry (\(AddressRecord.maxVersion))")
                }
                if let previous = entries.last, c <= previous.city { throw .malformed("summary cities out of order or repeated at \(c)") }
                if let after, c <= after { throw .malformed("summary city \(c) is not after \(after)") }
                if let through, c > through { throw .malformed("summary city \(c) is after \(through)") }
                entries.append(.init(city: c, version: version))
            }
            message = .summary(after: after, through: through, entries: entries)
        case 2:
            let n = Int(try r.u8("record count"))
            guard n >= 1, n <= maxRecords else { throw .malformed("\(n) address records in one message; 1 to \(maxRecords)") }
            var items: [AddressGossip.Relayed] = []
            for _ in 0..<n {
                let record = try AddressRecord.decode(from: &r)
                let length = Int(try r.u16("certificate length"))
                guard length > 0, length <= maxCertificate else { throw .malformed("a \(length)-byte certificate with the address record of \(record.city); 1 to \(maxCertificate)") }
                let certificate = Array(try r.take(length, "certificate"))
                items.append(.init(record: record, certificate: certificate))
            }
            message = .records(items)
        case 3:
            let n = Int(try r.u16("have count"))
            guard n >= 1, n <= maxEntries else { throw .malformed("\(n) entries in a HAVE; 1 to \(maxEntries)") }
            var entries: [AddressGossip.Entry] = []
            entries.reserveCapacity(n)
            for _ in 0..<n {
                guard let c = try city("have city", optional: false) else { throw .malformed("have city is empty") }
                let version = try r.u64("have version")
                guard version <= AddressRecord.maxVersion else {
                    throw .malformed("have version \(version) of \(c) is above the largest a record may carry (\(AddressRecord.maxVersion))")
                }
                if let previous = entries.last, c <= previous.city { throw .malformed("have cities out of order or repeated at \(c)") }
                entries.append(.init(city: c, version: version))
            }
            message = .have(entries)
        case 4:
            let n = Int(try r.u16("want count"))
            guard n >= 1, n <= maxEntries else { throw .malformed("\(n) cities in a WANT; 1 to \(maxEntries)") }
            var cities: [CitySlug] = []
            cities.reserveCapacity(n)
            for _ in 0..<n {
                guard let c = try city("wanted city", optional: false) else { throw .malformed("wanted city is empty") }
                if let previous = cities.last, c <= previous { throw .malformed("wanted cities out of order or repeated at \(c)") }
                cities.append(c)
            }
            message = .want(cities)
        default:
            throw .malformed("unknown address message type \(type)")
        }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after an address message") }
        return message
    }
}
