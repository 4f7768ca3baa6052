import Foundation
import CityMeshCore
import Synchronization

/// The web console's logins. A browser holds only a random session id (an HttpOnly,
/// SameSite=Strict cookie); the admin token it logged in with stays here, in the node's memory,
/// and every page asks the admin API with it, so the console has exactly the token's rights.
/// Sessions end at logout, after `idle` without a request, after `lifetime` in any case, and
/// when the node stops.
final class ConsoleSessions: Sendable {
    struct Session: Sendable {
        let id: String
        let token: String
        let tokenID: String
        let role: Role
        /// Sent back with every form as `_csrf`; a POST without it is refused.
        let csrf: String
        let created: ContinuousClock.Instant
        var lastUsed: ContinuousClock.Instant
        /// A one-time message for the next page (after a POST redirects).
        var flash: String?
    }

    let idle: Duration
    let lifetime: Duration
    let limit: Int
    private let sessions = Mutex<[String: Session]>([:])

    init(idle: Duration = .seconds(30 * 60), lifetime: Duration = .seconds(12 * 3600), limit: Int = 1000) {
        self.idle = idle
        self.lifetime = lifetime
        self.limit = limit
    }

    /// Failed logins per client address in the current window: past `maxFailures` the address is
    /// refused (429) until the window ends. Guessing a 256-bit token is hopeless anyway; this keeps
    /// a script from making the node hash and look up tokens as fast as it can send forms.
    private let failures = Mutex<[String: (count: Int, since: ContinuousClock.Instant)]>([:])
    static let maxFailures = 10
    static let failureWindow: Duration = .seconds(60)
    /// Most addresses tracked at once (the oldest windows are dropped first).
    static let maxTrackedClients = 10_000

    /// Seconds until `client` may try again, if it is blocked now.
    func loginBlocked(_ client: String) -> Int? {
        let now = ContinuousClock.now
        return failures.withLock { f in
            guard let e = f[client], now - e.since < Self.failureWindow else { return nil }
            guard e.count >= Self.maxFailures else { return nil }
            return max(1, Int((Self.failureWindow - (now - e.since)).components.seconds))
        }
    }

    func loginFailed(_ client: String) {
        let now = ContinuousClock.now
        failures.withLock { f in
            if var e = f[client], now - e.since < Self.failureWindow {
                e.count += 1
                f[client] = e
                return
            }
            if f.count >= Self.maxTrackedClients {
                f = f.filter { now - $0.value.since < Self.failureWindow }
                if f.count >= Self.maxTrackedClients, let oldest = f.min(by: { $0.value.since < $1.value.since }) { f[oldest.key] = nil }
            }
            f[client] = (1, now)
        }
    }

    static func randomID() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    func create(token: String, role: Role) -> Session {
        let parts = token.split(separator: "_", maxSplits: 2)
        let now = ContinuousClock.now
        let session = Session(
            id: Self.randomID(), token: token, tokenID: parts.count == 3 ? String(parts[1]) : "?", role: role, csrf: Self.randomID(),
            created: now, lastUsed: now)
        sessions.withLock { all in
            all = all.filter { now - $0.value.lastUsed < idle && now - $0.value.created < lifetime }
            if all.count >= limit, let oldest = all.min(by: { $0.value.lastUsed < $1.value.lastUsed }) { all[oldest.key] = nil }
            all[session.id] = session
        }
        return session
    }

    /// The live session with this id, touched; nil if unknown or expired.
    func use(_ id: String) -> Session? {
        let now = ContinuousClock.now
        return sessions.withLock { all in
            guard var s = all[id] else { return nil }
            guard now - s.lastUsed < idle, now - s.created < lifetime else {
                all[id] = nil
                return nil
            }
            s.lastUsed = now
            all[id] = s
            return s
        }
    }

    func end(_ id: String) { sessions.withLock { $0[id] = nil } }

    func setFlash(_ id: String, _ message: String) { sessions.withLock { $0[id]?.flash = message } }

    func takeFlash(_ id: String) -> String? {
        sessions.withLock { all in
            defer { all[id]?.flash = nil }
            return all[id]?.flash
        }
    }

    /// Constant-time comparison of a submitted CSRF token with the session's.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in x.indices { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}
