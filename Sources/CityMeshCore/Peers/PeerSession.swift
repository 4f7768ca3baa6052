/// One peer connection's protocol after TLS: HELLO exchange and version negotiation, keepalive
/// with RTT measurement, handshake and idle timeouts. Pure: the shell feeds it events with a
/// monotonic time in nanoseconds and performs the directives it returns.
public struct PeerSession: Sendable {
    public struct Configuration: Sendable {
        public var hello: Hello
        public var handshakeTimeout: UInt64
        public var keepaliveInterval: UInt64
        public var idleTimeout: UInt64

        /// Times in nanoseconds. The idle timeout should be a few keepalive intervals.
        public init(hello: Hello, handshakeTimeout: UInt64 = 10_000_000_000, keepaliveInterval: UInt64 = 15_000_000_000, idleTimeout: UInt64 = 45_000_000_000) {
            self.hello = hello
            self.handshakeTimeout = handshakeTimeout
            self.keepaliveInterval = keepaliveInterval
            self.idleTimeout = idleTimeout
        }
    }

    /// What the session knows of the peer once established.
    public struct Peer: Sendable, Equatable {
        public let city: CitySlug
        public let fingerprint: String
        public let protocolVersion: UInt16
        public let software: String
        public let listen: String
        public let capabilities: [String]
        public let maxFrameLength: UInt32
    }

    public enum Directive: Sendable, Equatable {
        case send(WireMessage)
        case established(Peer)
        case deliver(channel: UInt16, payload: ArraySlice<UInt8>)
        case rttMeasured(nanoseconds: UInt64)
        /// Send CLOSE (when the reason has a code and TLS is up), then close the connection.
        case close(DisconnectReason, String)
    }

    enum State: Sendable {
        case awaitingTLS(since: UInt64)
        case awaitingHello(since: UInt64, city: CitySlug, fingerprint: String)
        case established(Peer)
        case closed
    }

    public let configuration: Configuration
    var state: State
    var lastReceived: UInt64
    var lastPingSent: UInt64
    var outstandingPing: (nonce: UInt64, sentAt: UInt64)?
    var nextNonce: UInt64 = 1

    public init(configuration: Configuration, now: UInt64) {
        self.configuration = configuration
        self.state = .awaitingTLS(since: now)
        self.lastReceived = now
        self.lastPingSent = now
    }

    public var peer: Peer? {
        if case .established(let p) = state { return p }
        return nil
    }

    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// The TLS handshake finished and the peer's certificate was verified as `city`.
    public mutating func onTLSEstablished(city: CitySlug, fingerprint: String, now: UInt64) -> [Directive] {
        guard case .awaitingTLS(let since) = state else { return [] }
        state = .awaitingHello(since: since, city: city, fingerprint: fingerprint)
        lastReceived = now
        return [.send(.hello(configuration.hello))]
    }

    public mutating func onMessage(_ message: WireMessage, now: UInt64) -> [Directive] {
        if case .data(let channel, let payload) = message {
            return onData(now: now) ?? [.deliver(channel: channel, payload: payload)]
        }
        lastReceived = now
        switch state {
        case .closed:
            return []
        case .awaitingTLS:
            return close(.protocolViolation, "\(message.name) before the TLS handshake finished")
        case .awaitingHello(_, let city, let fingerprint):
            switch message {
            case .hello(let hello):
                return onHello(hello, certificateCity: city, fingerprint: fingerprint, now: now)
            case .close(let code, let text):
                return closedByPeer(code, text)
            default:
                return close(.protocolViolation, "expected HELLO first, got \(message.name)")
            }
        case .established:
            switch message {
            case .ping(let nonce):
                return [.send(.pong(nonce: nonce))]
            case .pong(let nonce):
                guard let out = outstandingPing, out.nonce == nonce else { return [] }
                outstandingPing = nil
                return [.rttMeasured(nanoseconds: now &- out.sentAt)]
            case .data:
                return []  // handled by onData above
            case .close(let code, let text):
                return closedByPeer(code, text)
            case .hello:
                return close(.protocolViolation, "a second HELLO on an established connection")
            }
        }
    }

    /// DATA arrived and the shell holds the payload itself (so it is never copied): nil means
    /// deliver it; otherwise perform the returned directives instead.
    public mutating func onData(now: UInt64) -> [Directive]? {
        lastReceived = now
        switch state {
        case .established: return nil
        case .closed: return []
        case .awaitingTLS: return close(.protocolViolation, "DATA before the TLS handshake finished")
        case .awaitingHello: return close(.protocolViolation, "expected HELLO first, got DATA")
        }
    }

    /// The frame decoder failed: close with the matching reason.
    public mutating func onDecodeError(_ error: WireError) -> [Directive] {
        close(error.reason, error.detail)
    }

    /// Called periodically (about once a second) by the shell.
    public mutating func onTick(now: UInt64) -> [Directive] {
        switch state {
        case .closed:
            return []
        case .awaitingTLS(let since), .awaitingHello(let since, _, _):
            if now &- since >= configuration.handshakeTimeout {
                return close(.handshakeTimeout, "no completed handshake within \(configuration.handshakeTimeout / 1_000_000) ms")
            }
            return []
        case .established:
            if now &- lastReceived >= configuration.idleTimeout {
                return close(.idleTimeout, "nothing received for \(configuration.idleTimeout / 1_000_000) ms")
            }
            if now &- lastPingSent >= configuration.keepaliveInterval {
                lastPingSent = now
                let nonce = nextNonce
                nextNonce &+= 1
                outstandingPing = (nonce, now)
                return [.send(.ping(nonce: nonce))]
            }
            return []
        }
    }

    /// The node closes the connection itself (shutdown, duplicate, revoked on reload, …).
    public mutating func onLocalClose(_ reason: DisconnectReason, _ detail: String) -> [Directive] {
        close(reason, detail)
    }

    /// Sends a PING now (used to measure RTT right after the handshake).
    public mutating func probe(now: UInt64) -> [Directive] {
        guard case .established = state, outstandingPing == nil else { return [] }
        lastPingSent = now
        let nonce = nextNonce
        nextNonce &+= 1
        outstandingPing = (nonce, now)
        return [.send(.ping(nonce: nonce))]
    }

    mutating func onHello(_ hello: Hello, certificateCity: CitySlug, fingerprint: String, now: UInt64) -> [Directive] {
        let ours = configuration.hello.versions
        let lo = max(ours.lowerBound, hello.versions.lowerBound)
        let hi = min(ours.upperBound, hello.versions.upperBound)
        guard lo <= hi else {
            return close(
                .versionMismatch,
                "no common protocol version: we speak \(ours.lowerBound)...\(ours.upperBound), the peer \(hello.versions.lowerBound)...\(hello.versions.upperBound); upgrade the older node")
        }
        guard hello.city == certificateCity.rawValue else {
            return close(.wrongCity, "HELLO claims city '\(hello.city)' but the certificate is for '\(certificateCity)'")
        }
        // A certificate for this node's own city is a copy of its identity (a second node started
        // from the same directory, or a stolen key): as a peer it could speak for this city to itself.
        guard certificateCity.rawValue != configuration.hello.city else {
            return close(.wrongCity, "the peer's certificate is for \(certificateCity), this node's own city: a city runs one node; stop the other one")
        }
        let peer = Peer(
            city: certificateCity, fingerprint: fingerprint, protocolVersion: hi, software: hello.software,
            listen: hello.listen, capabilities: hello.capabilities, maxFrameLength: hello.maxFrameLength)
        state = .established(peer)
        return [.established(peer)] + probe(now: now)
    }

    mutating func closedByPeer(_ code: CloseCode, _ text: String) -> [Directive] {
        state = .closed
        // A peer that closed because its view changed did not fail: its city is not probed for it.
        return [.close(code == .viewChanged ? .viewChanged : .peerClosed, "peer closed (\(code)): \(text)")]
    }

    mutating func close(_ reason: DisconnectReason, _ detail: String) -> [Directive] {
        if case .closed = state { return [] }
        let tlsUp: Bool
        if case .awaitingTLS = state { tlsUp = false } else { tlsUp = true }
        state = .closed
        var out: [Directive] = []
        if tlsUp, let code = reason.closeCode {
            out.append(.send(.close(code, detail)))
        }
        out.append(.close(reason, detail))
        return out
    }
}
