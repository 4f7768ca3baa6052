import CityMeshCore
import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// What the TLS verification callback learned about one connection, read by its channel handler.
final class PeerConnectionContext: Sendable {
    let id: PeerDirectory.ConnectionID
    let direction: PeerDirectory.Direction
    let expectedCity: CitySlug?
    let remote: String
    private let verdict = Mutex<Result<VerifiedIdentity, PeerCheckFailure>?>(nil)

    init(id: PeerDirectory.ConnectionID, direction: PeerDirectory.Direction, expectedCity: CitySlug?, remote: String) {
        self.id = id
        self.direction = direction
        self.expectedCity = expectedCity
        self.remote = remote
    }

    var result: Result<VerifiedIdentity, PeerCheckFailure>? {
        get { verdict.withLock { $0 } }
        set { verdict.withLock { $0 = newValue } }
    }
}

/// Asks a connection's handler to close it with a reason (shutdown, duplicate, revoked on reload).
struct LocalClose: Sendable {
    let reason: DisconnectReason
    let detail: String
}

/// The thin handler around `PeerSession`: feeds it TLS, message, error and timer events and
/// performs what it returns. Everything it learns goes to the `PeerNetwork`.
final class PeerChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = WireInbound
    typealias OutboundIn = WireMessage
    typealias OutboundOut = WireMessage

    let connection: PeerConnectionContext
    let network: PeerNetwork
    var session: PeerSession
    var identity: VerifiedIdentity?
    var closeReason: (DisconnectReason, String)?
    var ticker: RepeatedTask?
    var reported = false
    var wasEstablished = false

    init(connection: PeerConnectionContext, network: PeerNetwork, configuration: PeerSession.Configuration) {
        self.connection = connection
        self.network = network
        self.session = PeerSession(configuration: configuration, now: NIODeadline.now().uptimeNanoseconds)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: network.tickInterval, delay: network.tickInterval) { _ in
            let (handler, context) = bound.value
            handler.perform(handler.session.onTick(now: NIODeadline.now().uptimeNanoseconds), context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            switch connection.result {
            case .success(let id):
                identity = id
                perform(session.onTLSEstablished(city: id.city, fingerprint: id.fingerprint, now: NIODeadline.now().uptimeNanoseconds), context: context)
            case .failure(let f):
                perform([.close(f.reason, f.detail)], context: context)
            case nil:
                perform([.close(.tlsError, "handshake completed without a verified peer certificate")], context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now().uptimeNanoseconds
        switch unwrapInboundIn(data) {
        case .message(let message):
            perform(session.onMessage(message, now: now), context: context)
        case .data(let channel, let payload):
            if let directives = session.onData(now: now) {
                perform(directives, context: context)
            } else if let peer = session.peer {
                network.deliver(PeerMessage(city: peer.city, fingerprint: peer.fingerprint, channel: channel, payload: payload))
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let wire = error as? WireError {
            perform(session.onDecodeError(wire), context: context)
            return
        }
        if closeReason == nil {
            if case .failure(let f)? = connection.result {
                closeReason = (f.reason, f.detail)
            } else if let alert = PeerTLS.alert(in: error) {
                // The other side ended the session with a TLS alert: its refusal, not ours.
                closeReason = (.peerClosed, "\(connection.remote) refused the TLS session (\(alert)): it may not trust this node's certificate (revoked, expired, another federation); see 'citymesh peers' there")
            } else if error is NIOSSLError || error is BoringSSLError, identity == nil {
                let f = PeerTLS.classify(error)
                // A dialer whose certificate the other side refused is not a refusal by this node.
                closeReason = connection.direction == .outbound && f.reason == .tlsError
                    ? (.dialFailed, "TLS handshake with \(connection.remote) failed (the peer may have refused our certificate): \(error)")
                    : (f.reason, f.detail)
            } else if identity != nil, let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
                closeReason = (.connectionLost, "the peer closed the TCP connection without TLS close_notify")
            } else if identity != nil, error is NIOSSLError || error is BoringSSLError {
                closeReason = (.protocolViolation, "TLS error after the handshake (garbage or tampering on the connection): \(error)")
            } else {
                closeReason = (.connectionLost, "\(error)")
            }
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        report(context: context)
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let close = event as? LocalClose {
            perform(session.onLocalClose(close.reason, close.detail), context: context)
            promise?.succeed()
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard session.peer != nil else {
            promise?.fail(CityMeshError(.nodeNotRunning, "the connection to \(connection.remote) is not established"))
            return
        }
        context.write(data, promise: promise)
    }

    func perform(_ directives: [PeerSession.Directive], context: ChannelHandlerContext) {
        var lastWrite: EventLoopFuture<Void>?
        for d in directives {
            switch d {
            case .send(let message):
                lastWrite = context.writeAndFlush(wrapOutboundOut(message))
            case .established(let peer):
                // identity is set before the session can establish (onTLSEstablished needs it).
                guard let identity else { continue }
                wasEstablished = true
                network.established(connection, peer: peer, identity: identity, channel: context.channel)
            case .deliver(let channel, let payload):
                // DATA arrives through onData above; this path only serves messages decoded whole.
                guard let peer = session.peer else { continue }
                network.deliver(PeerMessage(city: peer.city, fingerprint: peer.fingerprint, channel: channel, payload: ByteBuffer(bytes: payload)))
            case .rttMeasured(let ns):
                network.measured(connection, rttNanoseconds: ns)
            case .close(let reason, let detail):
                if closeReason == nil { closeReason = (reason, detail) }
                // Let a CLOSE frame written just before reach the peer, then close.
                let channel = context.channel
                if let lastWrite {
                    lastWrite.whenComplete { _ in channel.close(promise: nil) }
                } else {
                    context.close(promise: nil)
                }
            }
        }
    }

    func report(context: ChannelHandlerContext) {
        guard !reported else { return }
        reported = true
        let (reason, detail) = closeReason ?? (wasEstablished ? (.connectionLost, "the peer closed the connection") : (.connectionLost, "the connection closed before the handshake finished"))
        network.closed(connection, reason: reason, detail: detail, established: wasEstablished)
    }
}
