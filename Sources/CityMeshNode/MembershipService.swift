public import CityMeshCore
import CityMeshNet
import Foundation
public import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// SWIM failure detection (``Membership``) over the peer transport, channel 1 (docs/protocol.md
/// §7c): probes, indirect probes through other members, suspicion and refutation. Every message
/// travels on an authenticated mTLS connection, so only federation members take part. What it
/// decides is shown by `citymesh peers` (the SWIM column): a member no one can reach, directly or
/// through others, is suspected and then declared dead.
public final class MembershipService: Service, Sendable {
    let machine: Mutex<Membership>
    let network = Mutex<PeerNetwork?>(nil)
    let logger: Logger
    let start = ContinuousClock.now
    let tick: Duration
    /// Each peer's messages' effects, performed in order, a bounded number waiting.
    let inbox = PeerInbox<[Membership.Directive]>(channel: "membership")

    public init(city: CitySlug, seeds: [CitySlug], logger: Logger, tick: Duration = .milliseconds(100)) {
        var membership = Membership(me: city, seeds: seeds, seed: UInt64.random(in: 0...UInt64.max))
        // Only cities this node has reason to believe are members: its seeds and those it has
        // heard from over an authenticated connection.
        membership.admitOnlyKnown()
        machine = Mutex(membership)
        self.logger = logger
        self.tick = tick
    }

    func attach(_ network: PeerNetwork) { self.network.withLock { $0 = network } }

    /// Admits `city` as a member (its signed address record checked out).
    func admit(_ city: CitySlug) { machine.withLock { $0.admit(city) } }

    /// The members this node probes: those it is connected to, and those whose connection was
    /// lost lately (``PeerDirectory/probed(now:)``); the rest are probed by their own neighbours.
    func setProbed(_ cities: Set<CitySlug>) {
        machine.withLock { $0.setReachable(cities) }
    }

    var now: UInt64 {
        let d = ContinuousClock.now - start
        return UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let t = now
            let (directives, before, after) = machine.withLock { m in
                let before = m.members.mapValues(\.status)
                let d = m.onTick(now: t)
                return (d, before, m.members.mapValues(\.status))
            }
            report(before, after)
            await perform(directives)
            try? await Task.sleep(for: tick)
        }
    }

    func receive(_ message: PeerMessage) {
        guard message.channel == Membership.Message.channel else { return }
        let decoded: Membership.Message
        do { decoded = try Membership.Message.decode(Array(message.payload.readableBytesView)[...]) } catch {
            logger.warning("malformed membership message", metadata: ["peer": "\(message.city)", "error": "\(error)"])
            return
        }
        let t = now
        let directives = machine.withLock { $0.onMessage(from: message.city, decoded, now: t) }
        inbox.submit(directives, from: message.city) { directives in await self.perform(directives) }
    }

    func perform(_ directives: [Membership.Directive]) async {
        guard let network = network.withLock({ $0 }) else { return }
        for case .send(let to, let message) in directives {
            // An unreachable member simply gets no probe: SWIM's timeouts decide what that means.
            try? await network.send(to: to, channel: Membership.Message.channel, payload: message.encoded())
        }
    }

    func report(_ before: [CitySlug: Membership.Status], _ after: [CitySlug: Membership.Status]) {
        for (city, status) in after where before[city] != status {
            switch status {
            case .alive: logger.info("member alive", metadata: ["peer": "\(city)"])
            case .suspect: logger.warning("member suspected: it answered no probe, direct or indirect", metadata: ["peer": "\(city)"])
            case .dead: logger.warning("member declared dead: it did not refute the suspicion in time", metadata: ["peer": "\(city)"])
            }
        }
    }

    /// Each member's status and incarnation, e.g. `alive/0`.
    public func status() -> [String: String] {
        machine.withLock { m in
            Dictionary(uniqueKeysWithValues: m.members.values.map { ($0.city.rawValue, "\($0.status == .alive ? "alive" : $0.status == .suspect ? "suspect" : "dead")/\($0.incarnation)") })
        }
    }
}
