import Foundation

// MARK: - Partial views (`Config.activeView` > 0)

/// The node's transport in the simulated federation: each node runs the production
/// `PeerDirectory` (who to dial, backoff, the active and passive views, duplicate connections,
/// and which members SWIM probes: `probed`) and `AddressGossip` (signed address records:
/// summaries on every new connection, announced and asked for). The simulator only carries out
/// their directives: a dial reaches the node listening at the address if the two can reach each
/// other, and a connection breaks when they no longer can.
///
/// What it does not model: TLS and signatures (every record's verdict is "valid"; the hostile
/// cases are `AddressGossipTests`). Loss on a connection delays a message by a retransmission
/// timeout instead of dropping it (`send`), as TCP does; address messages are never delayed.
extension SimulatedFederation {

    /// A stand-in for a federation certificate relayed with each record (the size of a real one).
    static let certificate = [UInt8](repeating: 0x30, count: 650)

    /// Where node `i` listens now (it moves to the next port at each restart, with `moveOnRestart`).
    func address(_ i: Int, moved: Int? = nil) -> String {
        "10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255):\(7001 + (moved ?? moves[i]))"
    }

    var nanosNow: UInt64 { UInt64(Swift.max(step, round * Self.stepsPerRound)) * Self.stepNanos }
    var millisNow: UInt64 { Self.epochMillis + nanosNow / 1_000_000 }
    var wallNow: Date { Date(timeIntervalSince1970: Double(millisNow) / 1000) }

    /// Seeds, addresses, the extra shares' parties and every node's partners, drawn from their own
    /// generator (a run without views draws exactly what it drew before).
    mutating func planViews() {
        var g = SplitMix64(seed: Self.mix(config.seed, 0x71E5))
        seedOf = (0..<n).map { $0 == 0 ? nil : g.below($0) }
        moves = Array(repeating: 0, count: n)
        for i in 0..<n { addressIndex[address(i)] = i }
        extraShares = (0..<config.extraShares).map { _ in
            let owner = g.below(n)
            var members = Set<Int>()
            while members.count < config.shareSize {
                let m = g.below(n)
                if m != owner { members.insert(m) }
            }
            return [owner] + members.sorted()
        }
        planPartners()
    }

    /// Every party of a share is a partner of every other (owner and co-members: the node dials
    /// them whatever its active view). Revoked members are no one's partners.
    mutating func planPartners() {
        var p = Array(repeating: Set<Int>(), count: n)
        let main = [Self.owner] + (1...shareMembers).filter { !revokedMembers.contains($0) }
        for parties in [main] + extraShares {
            for a in parties { for b in parties where b != a { p[a].insert(b) } }
        }
        partners = p
        guard !config.faults.contains(.noPartnerDial) else { return }
        for i in nodes.indices where nodes[i].up { nodes[i].directory?.setPartners(Set(p[i].map { cities[$0] })) }
    }

    /// A (re)started node's transport: a fresh directory with its seed (at the address the
    /// config names) and its partners, the records it stored dialed again, its own record signed
    /// for where it listens now.
    mutating func startTransport(_ i: Int) {
        let seeds = seedOf[i].map { [PeerDirectory.Seed(city: cities[$0], address: address($0, moved: 0))] } ?? []
        var d = PeerDirectory(configuration: .init(
                localCity: cities[i], seeds: seeds, activeView: config.activeView, viewSalt: Self.mix(config.seed, UInt64(i) << 20 | UInt64(nodes[i].crashes) << 8 | 0x5A)))
        if !config.faults.contains(.noPartnerDial) { d.setPartners(Set(partners[i].map { cities[$0] })) }
        if nodes[i].addresses == nil { nodes[i].addresses = AddressGossip(me: cities[i]) }
        let now = nanosNow
        for (city, record) in nodes[i].addresses!.book.records.sorted(by: { $0.key < $1.key }) {
            d.learn(city, addresses: record.addresses, source: .stored, now: now)
        }
        nodes[i].directory = d
        let version = Self.epochMillis + UInt64(round) * 1000 + UInt64(moves[i])
        let record = AddressRecord(city: cities[i], version: version, addresses: [address(i)], algorithm: 1, signature: Self.signature)
        _ = nodes[i].addresses!.setOwn(.init(record: record, certificate: Self.certificate), connected: [])
    }

    /// A crash: every connection of the node closes (its peers see them go); the directory goes
    /// with the process, the address records stay in the store.
    mutating func dropTransport(_ i: Int) {
        for id in nodes[i].ends.keys.sorted() { close(i, id, .connectionLost, "the node crashed") }
        nodes[i].directory = nil
        nodes[i].links = []
        nodes[i].ends = [:]
    }

    /// The node comes back at the next port: the old address answers no more.
    mutating func move(_ i: Int) {
        addressIndex[address(i)] = nil
        moves[i] += 1
        addressIndex[address(i)] = i
    }

    /// Once a round: connections that can no longer carry anything close, each directory dials
    /// what it wants, SWIM is told its neighbours, and the partners' connections are counted.
    mutating func refreshLinks() {
        for i in 0..<n where nodes[i].up {
            for j in nodes[i].links.sorted() where !reachable(i, j) {
                guard let id = nodes[i].directory?.entries[cities[j]]?.connection else { continue }
                close(i, id, .idleTimeout, "the peer stopped answering")
            }
        }
        let now = nanosNow
        for i in 0..<n where nodes[i].up {
            guard let dials = nodes[i].directory?.onTick(now: now) else { continue }
            for d in dials {
                switch d {
                case .dial(let id, let city, let address): dial(i, id, city: city, address: address)
                case .close(let id, let reason, let detail): close(i, id, reason, detail)
                }
            }
        }
        // Records asked for that did not come are asked for again (`AddressGossip.onTick`).
        let millis = millisNow
        for i in 0..<n where nodes[i].up && !(nodes[i].addresses?.asked.isEmpty ?? true) {
            let connected = nodes[i].links.sorted().map { cities[$0] }
            var r = rng
            let directives = nodes[i].addresses!.onTick(nowMillis: millis, connected: connected) { r.below($0) }
            rng = r
            for case .send(let to, let message) in directives { if let k = index[to] { sendAddress(i, k, message) } }
        }
        var unlinked = 0
        for i in 0..<n where nodes[i].up {
            if let d = nodes[i].directory { nodes[i].membership.setReachable(d.probed(now: now)) }
            peakConnections = Swift.max(peakConnections, nodes[i].links.count)
            for j in partners[i] where j > i && nodes[j].up && !nodes[i].links.contains(j) {
                unlinked += 1
                if firstUnlinked == nil || round >= disruptionEnd {
                    firstUnlinked = "\(cities[i]) and \(cities[j]) share and had no connection at round \(round)"
                }
            }
        }
        unlinkedPartners = unlinked
        if unlinked > 0 { lastUnlinkedRound = round }
    }

    func peer(_ j: Int) -> PeerSession.Peer {
        PeerSession.Peer(
            city: cities[j], fingerprint: "simulated", protocolVersion: 1, software: "simulator", listen: address(j), capabilities: [], maxFrameLength: 1 << 20)
    }

    /// Node `i` dials `address` for `city`: it connects if a node listens there, is that city
    /// (its certificate must name it), can be reached, and has room for one more connection.
    mutating func dial(_ i: Int, _ id: PeerDirectory.ConnectionID, city: CitySlug, address: String) {
        let now = nanosNow
        guard let j = addressIndex[address], cities[j] == city, reachable(i, j) else {
            nodes[i].directory?.onFailed(id, reason: .dialFailed, detail: "no answer at \(address)", now: now, jitter: rng.unit())
            return
        }
        guard let inbound = nodes[j].directory?.acceptInbound() else {
            nodes[i].directory?.onFailed(id, reason: .tooManyConnections, detail: "\(city) is at its connection limit", now: now, jitter: rng.unit())
            return
        }
        nodes[i].ends[id] = (j, inbound)
        nodes[j].ends[inbound] = (i, id)
        let wall = wallNow
        let peerJ = peer(j), peerI = peer(i)
        let closeAtDialer = nodes[i].directory?.onEstablished(id, peer: peerJ, certificateNotAfter: .distantFuture, wallNow: wall) ?? []
        let closeAtListener = nodes[j].directory?.onEstablished(inbound, peer: peerI, certificateNotAfter: .distantFuture, wallNow: wall) ?? []
        for case .close(let c, let reason, let detail) in closeAtDialer { close(i, c, reason, detail) }
        for case .close(let c, let reason, let detail) in closeAtListener { close(j, c, reason, detail) }
        updateLink(i, j)
    }

    /// Node `i` closes its connection `id`; the other end sees it close.
    mutating func close(_ i: Int, _ id: PeerDirectory.ConnectionID, _ reason: DisconnectReason, _ detail: String) {
        guard let other = nodes[i].ends.removeValue(forKey: id) else { return }
        let now = nanosNow, wall = wallNow
        nodes[i].directory?.onClosed(id, reason: reason, detail: detail, now: now, wallNow: wall, jitter: rng.unit())
        if nodes[other.node].ends.removeValue(forKey: other.id) != nil {
            // What the other end's session reports for the CLOSE it received (`PeerSession.closedByPeer`).
            let seen: DisconnectReason = reason == .viewChanged ? .viewChanged : .peerClosed
            nodes[other.node].directory?.onClosed(other.id, reason: seen, detail: "closed by \(cities[i]): \(detail)", now: now, wallNow: wall, jitter: rng.unit())
        }
        updateLink(i, other.node)
    }

    /// Whether `a` and `b` hold a connection to each other now (both directories say so).
    func connected(_ a: Int, _ b: Int) -> Bool {
        nodes[a].up && nodes[b].up && nodes[a].directory?.entries[cities[b]]?.state == .connected
            && nodes[b].directory?.entries[cities[a]]?.state == .connected
    }

    /// What a connection coming or going means to the two nodes, as the node's shell does it:
    /// anti-entropy and receipts learn of it; a new one starts with each side's address summary.
    mutating func updateLink(_ a: Int, _ b: Int) {
        let linked = connected(a, b)
        guard linked != nodes[a].links.contains(b) else { return }
        for (x, y) in [(a, b), (b, a)] {
            if linked {
                nodes[x].links.insert(y)
                nodes[x].antiEntropy.onConnect(cities[y])
                if !config.faults.contains(.receiptsOnce) { nodes[x].receiptFlow.onConnect(cities[y]) }
                nodes[x].membership.admit(cities[y])
            } else {
                nodes[x].links.remove(y)
                nodes[x].antiEntropy.setConnected(adding: [], removing: [cities[y]])
            }
        }
        guard linked else { return }
        for (x, y) in [(a, b), (b, a)] {
            for m in nodes[x].addresses?.summary() ?? [] { sendAddress(x, y, m) }
        }
    }

    mutating func sendAddress(_ from: Int, _ to: Int, _ m: AddressGossip.Message) {
        let bytes = AddressWire.encodedCount(m) + Self.frameHeader
        addressBytes += bytes
        send(from, to, .address(m), kind: .membership, bytes: bytes, arrives: Swift.max(step + 1, round * Self.stepsPerRound), lossless: true)
    }

    /// An address message arrives: a summary is answered with an announcement of what the sender
    /// lacks, an announcement with a request for what this node lacks, a request with the records,
    /// and records are taken (what is new is announced to every other connection) and dialed by.
    mutating func receiveAddresses(at i: Int, from j: Int, _ m: AddressGossip.Message) {
        guard nodes[i].addresses != nil else { return }
        let relay = !config.faults.contains(.noAddressRelay)
        let me = cities[i]
        var directives: [AddressGossip.Directive]
        switch m {
        case .summary(let after, let through, let entries):
            directives = nodes[i].addresses!.answer(after: after, through: through, entries: entries, peer: cities[j])
            if !relay {
                // The fault: only the node's own record goes out.
                directives = directives.compactMap { d in
                    guard case .send(let to, .records(let items)) = d else { return d }
                    let own = items.filter { $0.record.city == me }
                    return own.isEmpty ? nil : .send(to: to, .records(own))
                }
            }
        case .records(let items):
            let connected = relay ? nodes[i].links.sorted().map { cities[$0] } : []
            directives = nodes[i].addresses!.take(items, from: cities[j], nowMillis: millisNow, connected: connected, verify: { _ in nil }).directives
        case .have(let entries):
            directives = nodes[i].addresses!.onHave(entries, from: cities[j], nowMillis: millisNow)
        case .want(let wanted):
            directives = nodes[i].addresses!.onWant(relay ? wanted : wanted.filter { $0 == me }, from: cities[j])
        }
        let now = nanosNow
        for d in directives {
            switch d {
            case .send(let to, let message):
                if let k = index[to] { sendAddress(i, k, message) }
            case .learned(let item, let via):
                nodes[i].directory?.learn(item.record.city, addresses: item.record.addresses, source: .gossip(via: via), now: now)
                nodes[i].membership.admit(item.record.city)
            case .resign:
                break
            }
        }
    }

    /// Every pair of live cities that share holds a connection once the disruption is over,
    /// within the heal bound — found by address gossip from one seed each, moved nodes included.
    func partnersCheck(_ c: FederationSimulator.Connections) -> FederationSimulator.Check {
        let from = disruptionEnd > 0 ? "the disruption ended (round \(disruptionEnd))" : "the start"
        let passed = c.unlinkedPartnerPairsAtEnd == 0 && c.partnersReachedAfter <= config.healRounds
        let moved = config.crashes > 0 && config.moveOnRestart ? ", \(config.crashes) of them restarted at new addresses," : ""
        let detail = passed
            ? "every live pair of the \(c.partnerPairs) pairs of cities that share\(moved) was connected \(c.partnersReachedAfter) rounds after \(from) (bound \(config.healRounds)) and stayed so; at most \(c.maxAtEnd) connections per node at the end (mean \(String(format: "%.1f", c.meanAtEnd)); active view \(config.activeView), at most \(c.maxPartners) partners per node)"
            : "\(c.unlinkedPartnerPairsAtEnd) live pairs of cities that share have no connection at the end (of \(c.partnerPairs)); the last unconnected pair \(c.partnersReachedAfter) rounds after \(from) (bound \(config.healRounds)): \(firstUnlinked ?? "")"
        return .init(name: "partners reached", passed: passed, detail: detail)
    }

    func connectionFigures() -> FederationSimulator.Connections {
        var c = FederationSimulator.Connections()
        c.peak = peakConnections
        let live = (0..<n).filter { nodes[$0].up }
        c.maxAtEnd = live.map { nodes[$0].links.count }.max() ?? 0
        c.meanAtEnd = live.isEmpty ? 0 : Double(live.reduce(0) { $0 + nodes[$1].links.count }) / Double(live.count)
        c.maxPartners = partners.map(\.count).max() ?? 0
        c.partnerPairs = partners.enumerated().reduce(0) { total, p in total + p.element.filter { $0 > p.offset }.count }
        c.unlinkedPartnerPairsAtEnd = unlinkedPartners
        c.partnersReachedAfter = lastUnlinkedRound.map { Swift.max(0, $0 + 1 - disruptionEnd) } ?? 0
        c.addressBytes = addressBytes
        return c
    }
}
