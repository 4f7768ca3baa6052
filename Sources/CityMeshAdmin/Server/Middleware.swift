import Foundation
public import Hummingbird
import CityMeshCore
import CityMeshStore
import NIOCore
import Logging

/// Turns every error into a JSON `{code, message}` body with a fitting status.
public struct JSONErrorMiddleware: RouterMiddleware {
    public typealias Context = AdminContext
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as CityMeshError {
            return Self.response(status: Self.status(for: error.code), code: error.code.rawValue, message: error.message)
        } catch let error as HTTPError {
            let code: String
            switch error.status {
            case .notFound: code = "not_found"
            case .contentTooLarge: code = "request.too_large"
            case .methodNotAllowed: code = "method_not_allowed"
            default: code = "request.invalid"
            }
            let message = error.body ?? (error.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path) (see docs/admin-api.md)" : error.status.reasonPhrase)
            return Self.response(status: error.status, code: code, message: message)
        } catch let error as DecodingError {
            return Self.response(status: .badRequest, code: "request.invalid_json", message: "the request body is not the JSON this endpoint expects: \(Self.describe(error))")
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            return Self.response(status: .internalServerError, code: "internal", message: "internal error: \(error)")
        }
    }

    static func status(for code: CityMeshError.Code) -> HTTPResponse.Status {
        switch code {
        case .datasetNotFound, .recordNotFound, .tokenNotFound: .notFound
        case .datasetExists: .conflict
        case .unauthenticated: .unauthorized
        case .forbidden: .forbidden
        case .valueTooLarge: .contentTooLarge
        case .internalError, .ioError, .ledgerCorrupt: .internalServerError
        default: .badRequest
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "missing key '\(key.stringValue)'"
        case .typeMismatch(_, let c), .valueNotFound(_, let c):
            "wrong type at '\(c.codingPath.map(\.stringValue).joined(separator: "."))': \(c.debugDescription)"
        case .dataCorrupted(let c): c.underlyingError.map { "\($0)" } ?? c.debugDescription
        @unknown default: "\(error)"
        }
    }

    public static func response(status: HTTPResponse.Status, code: String, message: String) -> Response {
        let body = (try? JSONEncoder().encode(API.ErrorBody(code: code, message: message))) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Bearer-token authentication; read-only enforcement for auditors.
public struct TokenAuthMiddleware: RouterMiddleware {
    public typealias Context = AdminContext
    let store: NodeStore
    static let open: Set<String> = ["/healthz", "/readyz"]

    public init(store: NodeStore) { self.store = store }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // The console authenticates its own way (a session cookie; see Console), then calls
        // these routes with the session's token.
        if Self.open.contains(request.uri.path) || request.uri.path == "/console" || request.uri.path.hasPrefix("/console/") {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw CityMeshError(.unauthenticated, "missing bearer token: pass --token or set CITYMESH_TOKEN (the node dir's admin.token is used by default)")
        }
        let token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        guard let role = try await store.role(forTokenHash: AdminToken.hash(token)) else {
            throw CityMeshError(.unauthenticated, "the token is not valid (wrong, or revoked): check --token / CITYMESH_TOKEN, or create one with 'citymesh token create'")
        }
        var context = context
        context.role = role
        // Tokens are cm_<id>_<secret>; the id is public and names the caller in the ledger.
        let parts = token.split(separator: "_", maxSplits: 2)
        context.actor = parts.count == 3 ? "token:\(parts[1])" : "token:?"
        if role == .auditor, request.method != .get, request.method != .head {
            throw CityMeshError(.forbidden, "auditor tokens are read-only: use an operator or admin token to change anything")
        }
        return try await next(request, context)
    }
}

/// Requests that change something run as urgent writes: replication's background merges hold
/// back while they are in flight (NodeStore.urgent), so an admin write never queues behind more
/// than the chunk of a merge already running (NodeStore.take).
public struct WritePriorityMiddleware: RouterMiddleware {
    public typealias Context = AdminContext
    let store: NodeStore
    public init(store: NodeStore) { self.store = store }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        return try await store.urgent { try await next(request, context) }
    }
}

/// Says how long the node spent on each request, as a `Server-Timing: app;dur=<ms>` header
/// (W3C Server Timing): the time from the request's arrival at the router to its response,
/// without the client's or the network's share. Benchmarks read it to tell time spent waiting
/// inside the node (e.g. for the database's single writer) from time spent elsewhere.
public struct ServerTimingMiddleware: RouterMiddleware {
    public typealias Context = AdminContext
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var response = try await next(request, context)
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1_000 + Double(elapsed.components.attoseconds) / 1e15
        let name = HTTPFields.serverTiming
        response.headers[name] = "app;dur=\(String(format: "%.3f", ms))" + (response.headers[name].map { ", " + $0 } ?? "")
        return response
    }
}

extension HTTPFields {
    static let serverTiming = HTTPFields.Element.Name("Server-Timing")!
}

/// The phases of a request, for its Server-Timing header (`check;dur=…, store;dur=…`): where a
/// slow write spent its time.
struct ServerTiming {
    var last = ContinuousClock.now
    var phases: [(String, Duration)] = []

    mutating func lap(_ name: String) {
        let now = ContinuousClock.now
        phases.append((name, now - last))
        last = now
    }

    func add(to response: Response) -> Response {
        var response = response
        response.headers[HTTPFields.serverTiming] = phases.map { name, d in
            "\(name);dur=\(String(format: "%.3f", Double(d.components.seconds) * 1_000 + Double(d.components.attoseconds) / 1e15))"
        }.joined(separator: ", ")
        return response
    }
}
