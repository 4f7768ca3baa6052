import CityMeshCore
import Metrics
import NIOCore
import Synchronization

/// What peers send on one channel, handled one message at a time per peer, in the order it
/// arrived, with at most `limit` waiting per peer.
///
/// A task per message reordered documents (a revocation handled before the offer it revokes) and
/// let one member start any number of tasks. Here each peer has a queue and at most one task
/// draining it; a message that finds the queue full is dropped and counted
/// (`citymesh_peer_inbox_dropped_total{channel}`): the protocols above resend what matters
/// (documents on every connect, summaries every tick), so a flood costs its sender, not the node.
final class PeerInbox<Item: Sendable>: Sendable {
    let channel: String
    let limit: Int
    private let queues = Mutex<[CitySlug: (items: CircularBuffer<Item>, draining: Bool)]>([:])

    init(channel: String, limit: Int = 1024) {
        self.channel = channel
        self.limit = limit
        Counter(label: "citymesh_peer_inbox_dropped_total", dimensions: [("channel", channel)]).increment(by: 0)
    }

    /// Queues `item` from `peer` and, unless a task is already draining that peer's queue, starts
    /// one that hands each item to `handle` in order. False when the queue was full and the item
    /// was dropped.
    @discardableResult
    func submit(_ item: Item, from peer: CitySlug, to handle: @escaping @Sendable (Item) async -> Void) -> Bool {
        let (accepted, start) = queues.withLock { q -> (Bool, Bool) in
            var entry = q[peer] ?? (CircularBuffer(), false)
            guard entry.items.count < limit else { return (false, false) }
            entry.items.append(item)
            let start = !entry.draining
            entry.draining = true
            q[peer] = entry
            return (true, start)
        }
        guard accepted else {
            Counter(label: "citymesh_peer_inbox_dropped_total", dimensions: [("channel", channel)]).increment()
            return false
        }
        if start {
            Task {
                while let item = self.next(peer) { await handle(item) }
            }
        }
        return true
    }

    /// Messages from `peer` waiting now.
    func waiting(from peer: CitySlug) -> Int { queues.withLock { $0[peer]?.items.count ?? 0 } }

    private func next(_ peer: CitySlug) -> Item? {
        queues.withLock { q in
            guard var entry = q[peer], !entry.items.isEmpty else {
                q[peer] = nil  // drained: the peer holds no memory until it sends again
                return nil
            }
            let item = entry.items.removeFirst()
            q[peer] = entry
            return item
        }
    }
}
