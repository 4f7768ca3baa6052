import Foundation
public import Hummingbird
import CityMeshCore
import CityMeshStore
import Logging
import Mustache
import NIOCore

/// The web console (docs/console.md): HTML pages on the admin address, under `/console`.
///
/// It is a client of the admin API that happens to live in the same process: every page asks
/// the API (in memory, not over a socket) with the token its user logged in with, so a page
/// shows and does exactly what that token may, and the API's role checks stay the only ones
/// that decide. The browser never sees the token; it holds a session cookie, and every form
/// carries the session's CSRF token.
struct Console: Sendable {
    let admin: AdminAPI
    /// The admin API's own routes, answered in memory.
    let api: RouterResponder<AdminContext>
    let sessions: ConsoleSessions
    let views: ConsoleViews

    static let cookieName = "citymesh_console"
    /// Bundles pasted or uploaded for a reconcile can be large; nothing else is.
    static let uploadLimit = 256 << 20
    /// The policy editor's forms: a draft is at most 1 MiB, up to three times that URL-encoded.
    static let policyFormLimit = 4 << 20
    /// Every other form (answers, revocations, a conflict's value of at most 64 KiB).
    static let formLimit = 256 << 10
    /// The login form is read before anyone is authenticated: a token is under 100 bytes.
    static let loginLimit = 8 << 10

    init(admin: AdminAPI, api: RouterResponder<AdminContext>, sessions: ConsoleSessions = ConsoleSessions()) {
        self.admin = admin
        self.api = api
        self.sessions = sessions
        self.views = ConsoleViews()
    }

    var city: String { admin.store.city.rawValue }

    // MARK: Errors

    /// What a page shows when something fails: the API's own code and message.
    struct Failure: Error {
        let status: HTTPResponse.Status
        let code: String
        let message: String
    }

    // MARK: Talking to the admin API

    /// Answers one admin API request in memory, as the session's token.
    func call(
        _ method: HTTPRequest.Method, _ path: String, _ s: ConsoleSessions.Session, _ context: AdminContext,
        body: String? = nil, contentType: String = "text/plain; charset=utf-8"
    ) async throws -> Response {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(s.token)"
        if body != nil { headers[.contentType] = contentType }
        let head = HTTPRequest(method: method, scheme: "http", authority: "console", path: path, headerFields: headers)
        var inner = context
        inner.role = nil
        inner.actor = "anonymous"
        do {
            return try await api.respond(to: Request(head: head, body: RequestBody(buffer: ByteBuffer(string: body ?? ""))), context: inner)
        } catch let error as HTTPError {
            throw Failure(status: error.status, code: "request", message: error.body ?? error.status.reasonPhrase)
        }
    }

    static func collect(_ response: Response) async throws -> ByteBuffer {
        let box = BodyBox()
        try await response.body.write(CollectingWriter(box: box))
        return box.buffer
    }

    /// The body of a successful answer; a failure as ``Failure`` with the API's message.
    func fetch(
        _ method: HTTPRequest.Method, _ path: String, _ s: ConsoleSessions.Session, _ context: AdminContext,
        body: String? = nil, contentType: String = "text/plain; charset=utf-8"
    ) async throws -> ByteBuffer {
        let response = try await call(method, path, s, context, body: body, contentType: contentType)
        let buffer = try await Self.collect(response)
        guard response.status.code < 400 else {
            let error = try? JSONDecoder().decode(API.ErrorBody.self, from: Data(buffer.readableBytesView))
            throw Failure(status: response.status, code: error?.code ?? "http.\(response.status.code)", message: error?.message ?? response.status.reasonPhrase)
        }
        return buffer
    }

    func get<T: Decodable>(_ path: String, _ s: ConsoleSessions.Session, _ context: AdminContext, as: T.Type = T.self) async throws -> T {
        try JSONDecoder().decode(T.self, from: Data(try await fetch(.get, path, s, context).readableBytesView))
    }

    func send<T: Decodable>(
        _ method: HTTPRequest.Method, _ path: String, _ s: ConsoleSessions.Session, _ context: AdminContext, body: String,
        contentType: String = "text/plain; charset=utf-8", as: T.Type = T.self
    ) async throws -> T {
        try JSONDecoder().decode(T.self, from: Data(try await fetch(method, path, s, context, body: body, contentType: contentType).readableBytesView))
    }

    /// Like ``get`` but nil where the node has no such part (route tests without a peer transport)
    /// or the resource does not exist yet.
    func optional<T: Decodable>(_ path: String, _ s: ConsoleSessions.Session, _ context: AdminContext, as: T.Type = T.self) async throws -> T? {
        do { return try await get(path, s, context, as: T.self) } catch let f as Failure where f.code == CityMeshError.Code.nodeNotRunning.rawValue || f.status == .notFound {
            return nil
        }
    }

    // MARK: Responses

    static func secured(_ response: Response) -> Response {
        var response = response
        response.headers[.contentSecurityPolicy] =
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.xContentTypeOptions] = "nosniff"
        // Not no-referrer: with it, browsers send "Origin: null" on form posts, and the same-origin check refuses them.
        response.headers[.referrerPolicy] = "same-origin"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }

    static func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        return secured(Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text))))
    }

    static func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        return secured(Response(status: .seeOther, headers: headers))
    }

    func session(_ request: Request) -> ConsoleSessions.Session? {
        request.cookies[Self.cookieName].flatMap { sessions.use($0.value) }
    }

    /// Only same-origin forms: a browser names the page a form came from in `Origin`.
    static func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin] else { return true }
        guard let host = request.head.authority else { return false }
        return origin == "http://\(host)" || origin == "https://\(host)"
    }

    static func readForm(_ request: Request, limit: Int = formLimit) async throws -> [String: String] {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch {
            throw Failure(status: .contentTooLarge, code: "request.too_large", message: "the form is over \(limit >= 1 << 20 ? "\(limit >> 20) MiB" : "\(limit >> 10) KiB")")
        }
        return parseForm(String(decoding: buffer.readableBytesView, as: UTF8.self))
    }

    /// A form with uploads: read as it arrives (never collected whole), the values of the
    /// `spooled` fields decoded into temporary files (0600, removed by `Upload.remove`), every
    /// other field kept up to 8 KiB. At most `limit` bytes in all; a spooled field sent twice is
    /// refused.
    static func readUpload(_ request: Request, limit: Int, spooled: Set<String>) async throws -> Upload {
        var form = StreamingForm(spooled: spooled)
        var upload = Upload(fields: [:], files: [:])
        var handles: [String: FileHandle] = [:]
        defer { for h in handles.values { try? h.close() } }
        func write(_ events: [StreamingForm.Event]) throws {
            for case .bytes(let field, let bytes) in events {
                if handles[field] == nil {
                    let url = FileManager.default.temporaryDirectory.appendingPathComponent("citymesh-upload-\(UUID().uuidString)")
                    guard FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                        throw Failure(status: .internalServerError, code: "io", message: "the upload could not be written to \(url.path)")
                    }
                    upload.files[field] = url
                    handles[field] = try FileHandle(forWritingTo: url)
                }
                try handles[field]?.write(contentsOf: bytes)
            }
        }
        do {
            var total = 0
            for try await buffer in request.body {
                total += buffer.readableBytes
                guard total <= limit else {
                    throw Failure(status: .contentTooLarge, code: "request.too_large", message: "the upload is over \(limit >> 20) MiB")
                }
                try write(try form.feed(buffer.readableBytesView))
            }
            try write(try form.finish())
        } catch let e as StreamingForm.TooLarge {
            upload.remove()
            throw Failure(status: .contentTooLarge, code: "request.too_large", message: "the form field '\(e.field)' is over 8 KiB")
        } catch {
            upload.remove()
            throw error
        }
        guard Set(form.seen).count == form.seen.count else {
            upload.remove()
            throw Failure(status: .badRequest, code: "request.duplicate_field", message: "a file field was sent twice: submit the form again")
        }
        upload.fields = form.small
        return upload
    }

    struct Upload {
        var fields: [String: String]
        var files: [String: URL]
        func remove() { for url in files.values { try? FileManager.default.removeItem(at: url) } }
    }

    /// `application/x-www-form-urlencoded`, the way browsers send forms.
    static func parseForm(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            // Browsers send a textarea's line breaks as CR LF; the node's documents use LF (a
            // policy applied here must hash the same as the same text applied from the CLI).
            func decode(_ s: Substring) -> String {
                (String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s))
                    .replacingOccurrences(of: "\r\n", with: "\n")
            }
            out[decode(kv[0])] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }

    /// A path for the query string, percent-encoded.
    static func query(_ items: [(String, String?)]) -> String {
        var c = URLComponents()
        c.queryItems = items.compactMap { k, v in v.flatMap { $0.isEmpty ? nil : URLQueryItem(name: k, value: $0) } }
        let q = c.percentEncodedQuery ?? ""
        return q.isEmpty ? "" : "?" + q.replacingOccurrences(of: "+", with: "%2B")
    }

    static func pathSegment(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? s
    }

    // MARK: Page and action wrappers

    func loginRedirect(_ request: Request) -> Response {
        let path = request.uri.path
        return Self.redirect("/console/login" + (path == "/console" || path == "/console/" ? "" : Self.query([("next", request.uri.description)])))
    }

    /// A page: needs a session; a failure is shown on the page with what to do.
    func page(
        _ request: Request, _ context: AdminContext,
        _ build: @escaping (ConsoleSessions.Session) async throws -> Response
    ) async -> Response {
        guard let s = session(request) else { return loginRedirect(request) }
        return await guarded(s, request, context) { try await build(s) }
    }

    /// A form post: needs a session, the same origin, the session's CSRF token and, if given,
    /// a role (the API checks it again).
    func action(
        _ request: Request, _ context: AdminContext, needs: Role? = nil, formLimit: Int = formLimit,
        _ perform: @escaping (ConsoleSessions.Session, [String: String]) async throws -> Response
    ) async -> Response {
        guard let s = session(request) else { return loginRedirect(request) }
        guard Self.sameOrigin(request) else {
            return errorPage(s, Failure(status: .forbidden, code: "csrf", message: "a form from another site was refused: use the console's own pages"))
        }
        return await guarded(s, request, context) {
            let form = try await Self.readForm(request, limit: formLimit)
            guard let token = form["_csrf"], ConsoleSessions.same(token, s.csrf) else {
                throw Failure(status: .forbidden, code: "csrf", message: "the form's CSRF token is missing or stale (the page was opened before you logged in again): reload the page and submit it again")
            }
            if let needs, s.role < needs {
                throw Failure(
                    status: .forbidden, code: "forbidden",
                    message: "this action needs the \(needs.rawValue) role; you are logged in as \(s.role.rawValue): log in with a \(needs.rawValue) token")
            }
            return try await perform(s, form)
        }
    }

    /// `action` for a form with uploads (`readUpload`): the spooled files exist while `perform`
    /// runs and are removed after.
    func uploadAction(
        _ request: Request, _ context: AdminContext, limit: Int, spooled: Set<String>,
        _ perform: @escaping (ConsoleSessions.Session, Upload) async throws -> Response
    ) async -> Response {
        guard let s = session(request) else { return loginRedirect(request) }
        guard Self.sameOrigin(request) else {
            return errorPage(s, Failure(status: .forbidden, code: "csrf", message: "a form from another site was refused: use the console's own pages"))
        }
        return await guarded(s, request, context) {
            let upload = try await Self.readUpload(request, limit: limit, spooled: spooled)
            defer { upload.remove() }
            guard let token = upload.fields["_csrf"], ConsoleSessions.same(token, s.csrf) else {
                throw Failure(status: .forbidden, code: "csrf", message: "the form's CSRF token is missing or stale (the page was opened before you logged in again): reload the page and submit it again")
            }
            return try await perform(s, upload)
        }
    }

    func guarded(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext, _ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let f as Failure where f.status == .unauthorized {
            // The token was revoked since login: the session ends with it.
            sessions.end(s.id)
            return Self.redirect("/console/login?expired=1")
        } catch let f as Failure {
            return errorPage(s, f)
        } catch let e as CityMeshError {
            return errorPage(s, Failure(status: JSONErrorMiddleware.status(for: e.code), code: e.code.rawValue, message: e.message))
        } catch {
            context.logger.error("console page failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return errorPage(s, Failure(status: .internalServerError, code: "internal", message: "internal error: \(error)"))
        }
    }

    func errorPage(_ s: ConsoleSessions.Session, _ f: Failure) -> Response {
        render(s, nav: "", title: f.status == .forbidden ? "Not allowed" : "Something went wrong", template: "error", [
            "status": "\(f.status.code)", "code": f.code, "message": f.message,
        ], status: f.status)
    }

    static let navigation: [(id: String, label: String, href: String)] = [
        ("overview", "Overview", "/console"),
        ("datasets", "Datasets", "/console/datasets"),
        ("agreements", "Agreements", "/console/agreements"),
        ("conflicts", "Conflicts", "/console/conflicts"),
        ("policy", "Policy", "/console/policy"),
        ("ledger", "Ledger", "/console/ledger"),
        ("activity", "Activity", "/console/activity"),
        ("reconcile", "Reconcile", "/console/reconcile"),
    ]

    func render(
        _ s: ConsoleSessions.Session, nav: String, title: String, template: String, _ data: [String: Any], status: HTTPResponse.Status = .ok
    ) -> Response {
        var data = data
        data["csrf"] = s.csrf
        data["city"] = city
        if s.role >= .operator { data["canWrite"] = true }
        if s.role >= .admin { data["isAdmin"] = true }
        let content = views.render(template, data)
        var layout: [String: Any] = [
            "title": title, "city": city, "csrf": s.csrf, "role": s.role.rawValue, "tokenID": s.tokenID, "content": content,
            "nav": Self.navigation.map { item -> [String: Any] in
                var m: [String: Any] = ["label": item.label, "href": item.href]
                if item.id == nav { m["current"] = true }
                return m
            },
        ]
        if s.role == .auditor { layout["readOnly"] = true }
        if let flash = sessions.takeFlash(s.id) { layout["flash"] = flash }
        return Self.html(views.render("layout", layout), status: status)
    }
}

/// A response body gathered in memory.
final class BodyBox: @unchecked Sendable {
    var buffer = ByteBuffer()
}

struct CollectingWriter: ResponseBodyWriter {
    let box: BodyBox
    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        box.buffer.writeBuffer(&buffer)
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

extension HTTPFields.Element.Name {
    static let xFrameOptions = Self("X-Frame-Options")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
}
