public import Crypto
public import Foundation
public import X509

/// Who may exchange a share's records: the owner's signed list of the members whose agreements
/// are active, with the share's terms. Members get it from the owner and keep the latest, so they
/// can exchange among themselves (and relay) while the owner is offline. Sent on channel 5 as a
/// signed document (docs/protocol.md §8).
public struct ShareRoster: Codable, Sendable, Equatable {
    public var type = "citymesh-roster/v1"
    public var owner: String
    public var share: String
    public var dataset: String
    public var members: [String]
    public var fields: [String]
    public var filter: String?
    public var write: [String]
    /// Microseconds since the epoch; a later roster replaces an earlier one.
    public var issued: Int64

    public init(owner: CitySlug, share: String, dataset: String, members: [CitySlug], fields: [String], filter: String?, write: [String], issued: Int64) {
        self.owner = owner.rawValue
        self.share = share
        self.dataset = dataset
        self.members = members.map(\.rawValue).sorted()
        self.fields = fields
        self.filter = filter
        self.write = write
        self.issued = issued
    }

    /// `<owner>/<share>`.
    public var id: String { "\(owner)/\(share)" }
}

/// The receiving city's account of one exchange: which batches it took from the sender, under
/// which share, and its own ledger's size when it signed. The sender checks it against what it
/// sent and countersigns with its ledger's size; both append the pair to their ledgers
/// (`exchange.receipt`), so the two ledgers can be reconciled entry for entry.
public struct ExchangeReceipt: Codable, Sendable, Equatable {
    public var type = "citymesh-receipt/v1"
    public var share: String
    public var sender: String
    public var receiver: String
    /// `origin:first-last` runs, in the order taken.
    public var batches: [String]
    public var records: Int
    /// SHA-256 over the taken batches' hashes, in order, hex.
    public var batchesSHA256: String
    public var receiverLedgerSize: UInt64
    public var at: String
    /// The agreement the receiver took the batches under: the offer id (SHA-256 of the signed
    /// offer) of its own agreement for the share — with the sender, if the receiver owns the
    /// share, else with the owner — and that offer's purpose. Absent in receipts made before.
    public var agreement: String?
    public var purpose: String?

    public init(
        share: String, sender: CitySlug, receiver: CitySlug, batches: [String], records: Int, batchesSHA256: String, receiverLedgerSize: UInt64, at: String,
        agreement: String? = nil, purpose: String? = nil
    ) {
        self.agreement = agreement
        self.purpose = purpose
        self.share = share
        self.sender = sender.rawValue
        self.receiver = receiver.rawValue
        self.batches = batches
        self.records = records
        self.batchesSHA256 = batchesSHA256
        self.receiverLedgerSize = receiverLedgerSize
        self.at = at
    }

    /// Runs of consecutive numbers per origin, e.g. `hangzhou:1-64`.
    public static func runs(_ taken: [(origin: CitySlug, seq: UInt64)]) -> [String] {
        var out: [String] = []
        var current: (CitySlug, UInt64, UInt64)?
        for (o, n) in taken {
            if let (co, first, last) = current, co == o, n == last + 1 {
                current = (co, first, n)
            } else {
                if let (co, first, last) = current { out.append("\(co):\(first)-\(last)") }
                current = (o, n, n)
            }
        }
        if let (co, first, last) = current { out.append("\(co):\(first)-\(last)") }
        return out
    }

    /// Parses `origin:first-last`.
    public static func parseRun(_ s: String) -> (origin: CitySlug, seqs: ClosedRange<UInt64>)? {
        let parts = s.split(separator: ":")
        guard parts.count == 2, let o = try? CitySlug(String(parts[0])) else { return nil }
        let r = parts[1].split(separator: "-")
        // Batch numbers above `maxSeq` are never written; refusing them keeps every later use of the
        // run (its count, the store's signed 64-bit columns) in range.
        guard r.count == 2, let a = UInt64(r[0]), let b = UInt64(r[1]), a >= 1, a <= b, b <= ReplicationWire.maxSeq else { return nil }
        return (o, a...b)
    }

    public static func digest(_ hashes: [[UInt8]]) -> String {
        var h = SHA256()
        for x in hashes { h.update(data: x) }
        return Hex.lower(h.finalize())
    }
}

/// The sender's countersignature of a receipt.
public struct ReceiptCountersign: Codable, Sendable, Equatable {
    public var type = "citymesh-countersign/v1"
    /// The receipt document's id (SHA-256 of its body).
    public var receipt: String
    public var sender: String
    public var senderLedgerSize: UInt64
    public var at: String

    public init(receipt: String, sender: CitySlug, senderLedgerSize: UInt64, at: String) {
        self.receipt = receipt
        self.sender = sender.rawValue
        self.senderLedgerSize = senderLedgerSize
        self.at = at
    }
}

/// Two cities' ledgers compared exchange by exchange (`citymesh audit reconcile`).
public enum Reconciliation {
    public struct Exchange: Sendable, Equatable {
        public let receipt: String
        public let share: String
        public let sender: String
        public let receiver: String
        public let batches: [String]
        public let records: Int
        public let at: String
        /// The offer id the receipt names (nil: a receipt made before receipts named one).
        public var agreement: String? = nil
    }

    public struct Result: Sendable {
        public let a: String
        public let b: String
        /// Exchanges between the two that both ledgers hold, both signatures valid.
        public var matched: [Exchange] = []
        /// In `a`'s ledger only.
        public var onlyInA: [Exchange] = []
        public var onlyInB: [Exchange] = []
        /// Receipts whose signatures do not verify, or that differ between the two ledgers.
        public var invalid: [String] = []
        /// Exchanges in both ledgers that no agreement covered when they happened: the agreement
        /// the receipt names was revoked before, or (complete bundles) accepted in neither
        /// ledger; each with why.
        public var outsideAgreement: [(exchange: Exchange, why: String)] = []
        /// Exchanges whose receipt names no agreement (made before receipts named one).
        public var unnamed = 0
        /// Batches one city's ledger says it received from the other (`exchange.received`) that
        /// the other's ledger never says it sent (`exchange.sent`), as "receiver: batch hash".
        /// Complete bundles only: a sent batch may lawfully never be received (the receiver had it
        /// from another party), so only this direction is a gap.
        public var receivedNotSent: [String] = []
        /// How many batches each side's ledger shows received from the other, all found sent.
        public var batchesReceived = 0
        public var isClean: Bool { onlyInA.isEmpty && onlyInB.isEmpty && invalid.isEmpty && outsideAgreement.isEmpty && receivedNotSent.isEmpty }
    }

    /// Compares the `exchange.receipt` entries of two cities' ledgers; signatures are checked with
    /// each city's certificate (from its verified bundle).
    /// How far apart two cities' clocks may be (`ChangeBatch.maxClockAheadMillis`): an exchange
    /// counts as outside an agreement only if it was revoked more than this before.
    public static let clockTolerance: Int64 = Int64(ChangeBatch.maxClockAheadMillis) * 1000

    public static func compare(
        a: (city: CitySlug, entries: [LedgerEntry], certificate: Certificate), b: (city: CitySlug, entries: [LedgerEntry], certificate: Certificate),
        complete: Bool = false
    ) -> Result {
        var result = Result(a: a.city.rawValue, b: b.city.rawValue)
        func receipts(_ side: (city: CitySlug, entries: [LedgerEntry], certificate: Certificate), other: CitySlug) -> [String: (Exchange, [Agreement.Signed])] {
            var out: [String: (Exchange, [Agreement.Signed])] = [:]
            for e in side.entries where e.kind == LedgerEntry.Kind.exchangeReceipt {
                guard let docs = e.documents, docs.count == 2, let r = try? docs[0].decode(ExchangeReceipt.self) else {
                    result.invalid.append("\(side.city) entry \(e.index): an exchange.receipt without its two signed documents")
                    continue
                }
                guard [r.sender, r.receiver].contains(other.rawValue) else { continue }
                var x = Exchange(receipt: docs[0].id, share: r.share, sender: r.sender, receiver: r.receiver, batches: r.batches, records: r.records, at: r.at)
                x.agreement = r.agreement
                out[docs[0].id] = (x, docs)
            }
            return out
        }
        let ra = receipts(a, other: b.city)
        let rb = receipts(b, other: a.city)
        let certs = [a.city.rawValue: a.certificate, b.city.rawValue: b.certificate]
        func check(_ id: String, _ docs: [Agreement.Signed], where side: CitySlug) -> Bool {
            guard let r = try? docs[0].decode(ExchangeReceipt.self), let c = try? docs[1].decode(ReceiptCountersign.self) else { return false }
            guard c.receipt == id, c.sender == r.sender, let rc = certs[r.receiver], let sc = certs[r.sender],
                let receiver = try? CitySlug(r.receiver), let sender = try? CitySlug(r.sender)
            else {
                result.invalid.append("\(side) receipt \(id.prefix(16)): the countersignature does not name this receipt and its sender")
                return false
            }
            do {
                try Agreement.verify(docs[0], city: receiver, certificate: rc)
                try Agreement.verify(docs[1], city: sender, certificate: sc)
                return true
            } catch {
                result.invalid.append("\(side) receipt \(id.prefix(16)): \(error)")
                return false
            }
        }
        for (id, (x, docs)) in ra.sorted(by: { $0.value.0.at < $1.value.0.at }) {
            guard check(id, docs, where: a.city) else { continue }
            if let (_, other) = rb[id] {
                if other[0] != docs[0] { result.invalid.append("receipt \(id.prefix(16)) differs between the two ledgers") }
                result.matched.append(x)
            } else {
                result.onlyInA.append(x)
            }
        }
        for (id, (x, docs)) in rb.sorted(by: { $0.value.0.at < $1.value.0.at }) where ra[id] == nil {
            if check(id, docs, where: b.city) { result.onlyInB.append(x) }
        }
        // Under which agreement: when each offer was accepted and revoked, in either ledger.
        var accepted: [String: Int64] = [:], revoked: [String: Int64] = [:]
        for e in a.entries + b.entries {
            guard let offer = e.hashes?["offer.sha256"], let t = RFC3339.parse(e.time) else { continue }
            if e.kind == LedgerEntry.Kind.agreementAccepted { accepted[offer] = min(accepted[offer] ?? t, t) }
            if e.kind == LedgerEntry.Kind.agreementRevoked { revoked[offer] = min(revoked[offer] ?? t, t) }
        }
        // Every batch received from the other city is in the other's ledger as sent to it.
        if complete {
            func batches(_ entries: [LedgerEntry], kind: String, peer: CitySlug) -> Set<String> {
                Set(entries.filter { $0.kind == kind && $0.peer == peer.rawValue }.compactMap { $0.hashes?["batch.sha256"] })
            }
            for (receiver, sender) in [(a, b), (b, a)] {
                let received = batches(receiver.entries, kind: LedgerEntry.Kind.exchangeReceived, peer: sender.city)
                let sent = batches(sender.entries, kind: LedgerEntry.Kind.exchangeSent, peer: receiver.city)
                for hash in received.subtracting(sent).sorted() { result.receivedNotSent.append("\(receiver.city) received batch \(hash.prefix(16)) from \(sender.city), whose ledger never sent it") }
                result.batchesReceived += received.intersection(sent).count
            }
        }
        for x in result.matched {
            guard let offer = x.agreement else {
                result.unnamed += 1
                continue
            }
            guard let at = RFC3339.parse(x.at) else { continue }
            if let r = revoked[offer], r.saturatingAdd(clockTolerance) < at {
                result.outsideAgreement.append((x, "agreement \(offer.prefix(16)) was revoked at \(RFC3339.format(microseconds: r)), before this exchange"))
            } else if complete, accepted[offer] == nil {
                result.outsideAgreement.append((x, "agreement \(offer.prefix(16)) was accepted in neither ledger"))
            }
        }
        return result
    }
}
