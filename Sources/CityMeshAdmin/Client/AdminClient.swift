import AsyncHTTPClient
import Foundation
public import CityMeshCore
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// The admin API client the CLI uses. Errors come back as ``CityMeshError`` with the server's
/// code and message; an unreachable node becomes `node.not_running` with how to start it.
public struct AdminClient: Sendable {
    public let baseURL: String
    public let token: String
    /// Shown in the "not running" hint, e.g. `--dir hz`.
    public let startHint: String

    public init(address: String, token: String, startHint: String) {
        self.baseURL = "http://\(address)"
        self.token = token
        self.startHint = startHint
    }

    public func get<T: Decodable>(_ path: String, query: [String: String] = [:], as: T.Type = T.self) async throws -> T {
        try decode(try await send(.GET, path, query: query))
    }

    /// A plain-text answer (checkpoints, verifier keys).
    public func getText(_ path: String, query: [String: String] = [:]) async throws -> String {
        String(buffer: try await send(.GET, path, query: query).body)
    }

    public func post<B: Encodable, T: Decodable>(_ path: String, body: B, query: [String: String] = [:], as: T.Type = T.self) async throws -> T {
        try decode(try await send(.POST, path, query: query, body: try JSONEncoder().encode(body)))
    }

    public func put<B: Encodable, T: Decodable>(_ path: String, body: B, query: [String: String] = [:], as: T.Type = T.self) async throws -> T {
        try decode(try await send(.PUT, path, query: query, body: try JSONEncoder().encode(body)))
    }

    /// POSTs a text document (a policy in YAML) as the body.
    public func postText<T: Decodable>(_ path: String, text: String, as: T.Type = T.self) async throws -> T {
        try await sendText(.POST, path, text: text)
    }

    /// PUTs a text document (a policy in YAML) as the body.
    public func putText<T: Decodable>(_ path: String, text: String, as: T.Type = T.self) async throws -> T {
        try await sendText(.PUT, path, text: text)
    }

    func sendText<T: Decodable>(_ method: HTTPMethod, _ path: String, text: String) async throws -> T {
        var request = try makeRequest(method, path, query: [:])
        request.headers.add(name: "Content-Type", value: "application/yaml; charset=utf-8")
        request.body = .bytes(ByteBuffer(string: text))
        return try decode(try await execute(request))
    }

    public func delete<T: Decodable>(_ path: String, query: [String: String] = [:], as: T.Type = T.self) async throws -> T {
        try decode(try await send(.DELETE, path, query: query))
    }

    /// Uploads a file as a streamed request body, reporting bytes sent.
    public func upload<T: Decodable>(
        _ path: String, query: [String: String], file: String, progress: @escaping @Sendable (Int64, Int64) -> Void, as: T.Type = T.self
    ) async throws -> T {
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw CityMeshError(.fileNotFound, "cannot read \(file): check the path and permissions")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int64) ?? 0
        let chunks = FileChunks(handle: handle, total: size, progress: progress)
        var request = try makeRequest(.POST, path, query: query)
        request.body = .stream(chunks, length: .known(size))
        return try decode(try await execute(request))
    }

    /// Streams a response body to `sink` chunk by chunk.
    public func download(_ path: String, query: [String: String], sink: (Data) throws -> Void) async throws {
        let request = try makeRequest(.GET, path, query: query)
        guard Self.listening(baseURL.dropFirst(7)) else {
            throw CityMeshError(.nodeNotRunning, "the node is not running (nothing listens on \(baseURL.dropFirst(7))): start it with 'citymesh serve \(startHint)'")
        }
        let response: HTTPClientResponse
        do { response = try await HTTPClient.shared.execute(request, timeout: .hours(24)) } catch { throw mapTransport(error) }
        guard response.status == .ok else {
            throw serverError(status: response.status.code, body: try await response.body.collect(upTo: 1 << 20))
        }
        for try await chunk in response.body { try sink(Data(buffer: chunk)) }
    }

    struct Response {
        let status: UInt
        let body: ByteBuffer
    }

    func send(_ method: HTTPMethod, _ path: String, query: [String: String], body: Data? = nil) async throws -> Response {
        var request = try makeRequest(method, path, query: query)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        return try await execute(request)
    }

    func makeRequest(_ method: HTTPMethod, _ path: String, query: [String: String]) throws -> HTTPClientRequest {
        var components = URLComponents()
        components.path = path
        if !query.isEmpty {
            components.queryItems = query.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        }
        // URLComponents leaves '+' alone in queries; a server reads it as a space, so encode it.
        let encoded = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        let url = baseURL + components.percentEncodedPath + (encoded.map { "?" + $0 } ?? "")
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        return request
    }

    /// Whether something accepts TCP connections at the admin address (within `timeout` ms).
    /// The HTTP client retries a refused connection for a long time; a node that is not running
    /// should be reported at once.
    static func listening(_ address: Substring, timeout: Int32 = 3_000) -> Bool {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else { return true }
        let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { return true }
        defer { freeaddrinfo(list) }
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let ai = next {
            next = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { return true }
            guard errno == EINPROGRESS else { continue }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&poller, 1, timeout) == 1 else { continue }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error == 0 { return true }
        }
        return false
    }

    func execute(_ request: HTTPClientRequest) async throws -> Response {
        guard Self.listening(baseURL.dropFirst(7)) else {
            throw CityMeshError(.nodeNotRunning, "the node is not running (nothing listens on \(baseURL.dropFirst(7))): start it with 'citymesh serve \(startHint)'")
        }
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .hours(24))
            let body = try await response.body.collect(upTo: 256 << 20)
            let r = Response(status: response.status.code, body: body)
            guard (200..<300).contains(r.status) else { throw serverError(status: r.status, body: body) }
            return r
        } catch let e as CityMeshError {
            throw e
        } catch {
            throw mapTransport(error)
        }
    }

    func mapTransport(_ error: any Error) -> CityMeshError {
        let text = "\(error)"
        if text.contains("connectionRefused") || text.contains("Connection refused") || text.contains("connect(descriptor") {
            return CityMeshError(.nodeNotRunning, "the node is not running (nothing listens on \(baseURL.dropFirst(7))): start it with 'citymesh serve \(startHint)'")
        }
        return CityMeshError(.ioError, "the exchange with the node at \(baseURL) failed: \(text)")
    }

    func serverError(status: UInt, body: ByteBuffer) -> CityMeshError {
        if let e = try? JSONDecoder().decode(API.ErrorBody.self, from: body) {
            return CityMeshError(CityMeshError.Code(e.code), e.message)
        }
        return CityMeshError(.internalError, "the node answered HTTP \(status): \(String(buffer: body).prefix(200))")
    }

    func decode<T: Decodable>(_ r: Response) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: r.body) } catch {
            throw CityMeshError(.internalError, "unexpected answer from the node (\(error)): is the admin address a citymesh node?")
        }
    }
}

/// Reads a file in 256 KiB chunks as an async sequence, reporting progress.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let handle: FileHandle
    let total: Int64
    let progress: @Sendable (Int64, Int64) -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle
        let total: Int64
        let progress: @Sendable (Int64, Int64) -> Void
        var sent: Int64 = 0

        mutating func next() async throws -> ByteBuffer? {
            guard let data = try handle.read(upToCount: 256 * 1024), !data.isEmpty else {
                try? handle.close()
                return nil
            }
            sent += Int64(data.count)
            progress(sent, total)
            return ByteBuffer(data: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(handle: handle, total: total, progress: progress) }
}

extension FileHandle: @retroactive @unchecked Sendable {}
