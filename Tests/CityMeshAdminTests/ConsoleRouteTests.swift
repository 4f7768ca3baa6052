import CityMeshCore
import CityMeshStore
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
@testable import CityMeshAdmin

/// A console login as the tests hold it: the session cookie and the CSRF token of its forms.
struct ConsoleLogin {
    let cookie: String
    let csrf: String
}

struct Page {
    let status: HTTPResponse.Status
    let html: String
    let headers: HTTPFields
    var location: String? { headers[.location] }
}

/// The web console on the admin router, over a real SQLite store, each role logged in through
/// the login form as a browser would (docs/console.md).
@Suite("Web console routes")
struct ConsoleRouteTests {
    static func form(_ fields: [(String, String)]) -> ByteBuffer {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return ByteBuffer(string: fields.map { k, v in
            "\(k.addingPercentEncoding(withAllowedCharacters: allowed)!)=\(v.addingPercentEncoding(withAllowedCharacters: allowed)!)"
        }.joined(separator: "&"))
    }

    static func formHeaders(_ login: ConsoleLogin?, origin: String? = nil) -> HTTPFields {
        var h = HTTPFields()
        h[.contentType] = "application/x-www-form-urlencoded"
        if let login { h[.cookie] = login.cookie }
        if let origin { h[.origin] = origin }
        return h
    }

    static func get(_ client: some TestClientProtocol, _ login: ConsoleLogin?, _ path: String) async throws -> Page {
        var h = HTTPFields()
        if let login { h[.cookie] = login.cookie }
        let r = try await client.execute(uri: path, method: .get, headers: h)
        return Page(status: r.status, html: String(buffer: r.body), headers: r.headers)
    }

    static func post(_ client: some TestClientProtocol, _ login: ConsoleLogin?, _ path: String, _ fields: [(String, String)], csrf: Bool = true, origin: String? = nil) async throws -> Page {
        let all = (csrf && login != nil ? [("_csrf", login!.csrf)] : []) + fields
        let r = try await client.execute(uri: path, method: .post, headers: formHeaders(login, origin: origin), body: form(all))
        return Page(status: r.status, html: String(buffer: r.body), headers: r.headers)
    }

    static func csrf(in html: String) -> String? {
        guard let r = html.range(of: #"name="_csrf" value=""#) else { return nil }
        return String(html[r.upperBound...].prefix { $0 != "\"" })
    }

    static func login(_ client: some TestClientProtocol, _ token: String) async throws -> ConsoleLogin {
        let r = try await post(client, nil, "/console/login", [("token", token)])
        #expect(r.status == .seeOther && r.location == "/console", "\(r.status) \(r.html)")
        let setCookie = try #require(r.headers[.setCookie])
        let cookie = String(setCookie.prefix { $0 != ";" })
        let page = try await get(client, ConsoleLogin(cookie: cookie, csrf: ""), "/console/datasets")
        return ConsoleLogin(cookie: cookie, csrf: try #require(csrf(in: page.html), "\(page.html)"))
    }

    /// A node with a ledger (and a policy manager) whose ledger writer runs while `test` does,
    /// with the air-quality dataset created.
    static func withNode(policy: Bool, _ test: @escaping @Sendable (Fixture, any TestClientProtocol) async throws -> Void) async throws {
        let f = try await Fixture(withLedger: true, withPolicy: policy)
        let ledger = try #require(f.ledger)
        let writer = Task { await ledger.runWriter() }
        defer { ledger.finish(); writer.cancel() }
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.operator), body: body(createAir)) { #expect($0.status == .created) }
            try await test(f, client)
        }
    }

    /// Form posts that change something, and the least role each needs.
    static let writeForms = ["/console/policy/apply", "/console/policy/check", "/console/conflicts/resolve", "/console/agreements/respond", "/console/agreements/revoke"]

    static let policy = """
        shares:
          - id: delta-air
            dataset: air-quality
            to: [shanghai]
            fields: [station, district, pm25]
            write: [pm25]
            purpose: forecasting
            legal_basis: MoU
            valid_until: 2099-12-31
            on_revoke: keep

        """

    @Test("login: a session cookie (HttpOnly, SameSite=Strict) and never the token in a URL; wrong, empty and foreign-origin logins refused; logout and revocation end the session")
    func login() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            var r = try await Self.get(client, nil, "/console/ledger?kind=policy")
            #expect(r.status == .seeOther && r.location?.hasPrefix("/console/login?next=") == true, "\(r.status)")
            r = try await Self.get(client, nil, "/console/login")
            #expect(r.status == .ok && r.html.contains(#"type="password""#) && r.html.contains(#"action="/console/login""#))
            #expect(r.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)

            for (token, why) in [("cm_00000000_wrong", "wrong"), ("", "empty")] {
                let bad = try await Self.post(client, nil, "/console/login", [("token", token)])
                #expect(bad.status == .unauthorized && bad.headers[.setCookie] == nil, "\(why)")
                #expect(bad.html.contains(#"role="alert""#) && !bad.html.contains("cm_00000000_wrong"), "\(why): \(bad.html)")
            }
            let foreign = try await Self.post(client, nil, "/console/login", [("token", f.tokens[.admin]!)], origin: "http://evil.example")
            #expect(foreign.status == .forbidden && foreign.headers[.setCookie] == nil)

            let ok = try await Self.post(client, nil, "/console/login", [("token", f.tokens[.admin]!), ("next", "/console/ledger?kind=policy")])
            #expect(ok.status == .seeOther && ok.location == "/console/ledger?kind=policy")
            let cookie = try #require(ok.headers[.setCookie])
            #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/console"), "\(cookie)")
            #expect(!cookie.contains(f.tokens[.admin]!) && !(ok.location ?? "").contains("cm_"))
            // A next= pointing away from the console is ignored.
            for next in ["//evil.example/console", "https://evil.example", "/console/\\evil"] {
                let away = try await Self.post(client, nil, "/console/login", [("token", f.tokens[.admin]!), ("next", next)])
                #expect(away.location == "/console", "\(next)")
            }

            // The login form is read before anyone is authenticated: a few KiB at most.
            let huge = try await Self.post(client, nil, "/console/login", [("token", String(repeating: "x", count: 64 << 10))])
            #expect(huge.status == .badRequest && huge.headers[.setCookie] == nil)

            let admin = try await Self.login(client, f.tokens[.admin]!)
            #expect(try await Self.get(client, admin, "/console/datasets").status == .ok)
            // Logout needs the CSRF token too; then the cookie is worth nothing.
            #expect(try await Self.post(client, admin, "/console/logout", [], csrf: false).status == .forbidden)
            #expect(try await Self.get(client, admin, "/console/datasets").status == .ok)
            let out = try await Self.post(client, admin, "/console/logout", [])
            #expect(out.status == .seeOther && out.headers[.setCookie]?.contains("Max-Age=0") == true)
            #expect(try await Self.get(client, admin, "/console/datasets").status == .seeOther)

            // A revoked token ends its sessions at their next request.
            let auditor = try await Self.login(client, f.tokens[.auditor]!)
            let id = f.tokens[.auditor]!.split(separator: "_")[1]
            try await client.execute(uri: "/v1/tokens/\(id)", method: .delete, headers: f.headers(.admin)) { #expect($0.status == .ok || $0.status == .noContent) }
            let gone = try await Self.get(client, auditor, "/console/datasets")
            #expect(gone.status == .seeOther && gone.location == "/console/login?expired=1")
            #expect(try await Self.get(client, auditor, "/console/datasets").status == .seeOther)
            // A made-up cookie is no session.
            #expect(try await Self.get(client, ConsoleLogin(cookie: "citymesh_console=made-up", csrf: ""), "/console").status == .seeOther)
        }
    }

    @Test("logins are throttled per client: after 10 failures in a minute even the right token waits (429)")
    func loginThrottle() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            for i in 0..<ConsoleSessions.maxFailures {
                #expect(try await Self.post(client, nil, "/console/login", [("token", "cm_0000_guess\(i)")]).status == .unauthorized)
            }
            let blocked = try await Self.post(client, nil, "/console/login", [("token", f.tokens[.admin]!)])
            #expect(blocked.status == .tooManyRequests && blocked.headers[.setCookie] == nil)
            #expect(blocked.html.contains("too many failed logins"))
        }
    }

    @Test("every page renders for admin and auditor with security headers; auditors get no write controls; assets are served")
    func pages() async throws {
        try await Self.withNode(policy: true) { f, client in
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-1", method: .put, headers: f.headers(.operator), body: body(#"{"values":{"district":"Xihu","pm25":41.5}}"#)) {
                #expect($0.status == .ok)
            }
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.admin), body: body(Self.policy)) { #expect($0.status == .ok) }
            let pages = [
                ("/console", "Federation overview"), ("/console/datasets", "hangzhou/air-quality"),
                ("/console/datasets/hangzhou/air-quality", "Xihu"), ("/console/datasets/hangzhou/air-quality/record?key=S-1", "41.5"),
                ("/console/agreements", "without a peer transport"), ("/console/conflicts", "No open conflicts"),
                ("/console/policy", "delta-air"), ("/console/policy?city=shanghai&dataset=air-quality", "read-write"),
                ("/console/ledger", "policy.applied"), ("/console/ledger/0", "dataset.created"), ("/console/activity", "No exchanges"),
                ("/console/reconcile", "Reconcile"),
            ]
            for role in [Role.admin, .auditor] {
                let login = try await Self.login(client, f.tokens[role]!)
                for (path, text) in pages {
                    let p = try await Self.get(client, login, path)
                    #expect(p.status == .ok, "\(role) \(path): \(p.status) \(p.html.prefix(600))")
                    #expect(p.html.contains(text), "\(role) \(path) shows '\(text)'")
                    #expect(p.headers[.contentType] == "text/html; charset=utf-8")
                    #expect(p.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true && p.headers[.cacheControl] == "no-store")
                    #expect(p.html.contains(##"<a class="skip" href="#main">"##) && p.html.contains(#"aria-current="page""#) || path.contains("record"), "\(path)")
                    #expect(!p.html.contains(f.tokens[role]!), "the token never reaches a page")
                    for action in Self.writeForms {
                        #expect(role == .admin || !p.html.contains("action=\"\(action)\"") && !p.html.contains("formaction=\"\(action)\""), "auditor sees \(action) on \(path)")
                    }
                }
                let policy = try await Self.get(client, login, "/console/policy")
                #expect(policy.html.contains("<textarea") == (role == .admin) && policy.html.contains(#"id="apply-button""#) == (role == .admin))
                let unknown = try await Self.get(client, login, "/console/no/such/page")
                #expect(unknown.status == .notFound && unknown.html.contains("the console has no page /console/no/such/page"))
                let missing = try await Self.get(client, login, "/console/datasets/hangzhou/nothing")
                #expect(missing.status == .notFound && missing.html.contains("dataset.not_found"), "\(missing.html)")
            }
            for asset in ["/console/assets/console.css", "/console/assets/console.js"] {
                let a = try await Self.get(client, nil, asset)
                #expect(a.status == .ok && a.html.count > 1000 && a.headers[.contentType]?.hasPrefix("text/") == true)
            }
            #expect(try await Self.get(client, nil, "/console/assets/console.js").html.contains("crypto.subtle.verify"))
        }
    }

    @Test("write actions: the CSRF token is required, the role is checked by the console and again by the API")
    func actions() async throws {
        try await Self.withNode(policy: true) { f, client in
            let actions: [(String, [(String, String)], Role)] = [
                ("/console/policy/apply", [("document", Self.policy)], .admin),
                ("/console/policy/check", [("document", Self.policy)], .operator),
                ("/console/conflicts/resolve", [("dataset", "hangzhou/air-quality"), ("key", "S-1"), ("field", "pm25"), ("choice", "keep")], .admin),
                ("/console/agreements/respond", [("owner", "shanghai"), ("share", "x"), ("decision", "accept")], .admin),
                ("/console/agreements/revoke", [("share", "x"), ("member", "shanghai")], .admin),
            ]
            var logins: [Role: ConsoleLogin] = [:]
            for role in Role.allCases { logins[role] = try await Self.login(client, f.tokens[role]!) }
            for (path, fields, needs) in actions {
                for role in Role.allCases {
                    let login = logins[role]!
                    let noCSRF = try await Self.post(client, login, path, fields, csrf: false)
                    #expect(noCSRF.status == .forbidden && noCSRF.html.contains("CSRF"), "\(path) without CSRF as \(role)")
                    let stale = try await client.execute(
                        uri: path, method: .post, headers: Self.formHeaders(login), body: Self.form([("_csrf", "stale")] + fields))
                    #expect(stale.status == .forbidden, "\(path) with a wrong CSRF token")
                    let foreign = try await Self.post(client, login, path, fields, origin: "http://evil.example")
                    #expect(foreign.status == .forbidden, "\(path) from another origin")
                    let r = try await Self.post(client, login, path, fields)
                    if role < needs {
                        #expect(r.status == .forbidden && r.html.contains("needs the \(needs.rawValue) role"), "\(path) as \(role): \(r.status)")
                    } else {
                        // Allowed past the console; what the API then says is the page.
                        #expect(r.status != .forbidden, "\(path) as \(role): \(r.status) \(r.html.prefix(400))")
                    }
                }
                let anonymous = try await Self.post(client, nil, path, fields)
                #expect(anonymous.status == .seeOther && anonymous.location?.hasPrefix("/console/login") == true)
            }
            // Reconcile uploads are streamed into files: a bundle field sent twice is refused, a
            // small field over 8 KiB too; the spooled files are removed after every request.
            let auditor = logins[.auditor]!
            let twice = try await Self.post(client, auditor, "/console/reconcile", [("a", "{}"), ("a", "{}"), ("b", "{}")])
            #expect(twice.status == .badRequest && twice.html.contains("sent twice"), "\(twice.html.prefix(600))")
            let bloated = try await Self.post(client, auditor, "/console/reconcile", [("a", "{}"), ("b", "{}"), ("note", String(repeating: "x", count: 9_000))])
            #expect(bloated.status == .contentTooLarge && bloated.html.contains("over 8 KiB"), "\(bloated.html.prefix(600))")
            // (This fixture has no federation CA, so a well-formed upload gets that far and no further;
            // the browser test reconciles real bundles.)
            let noCA = try await Self.post(client, auditor, "/console/reconcile", [("a", "{\"not\": \"a bundle\"}"), ("b", "{}")])
            #expect(noCA.status == .serviceUnavailable && noCA.html.contains("no federation CA certificate"), "\(noCA.status) \(noCA.html.prefix(600))")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path).filter { $0.hasPrefix("citymesh-upload-") }
            #expect(leftovers.isEmpty, "uploads are removed after the request: \(leftovers)")
            // The API refuses a too-weak token itself too: the console's check is not the only one.
            let operatorLogin = logins[.operator]!
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.operator), body: body(Self.policy)) { #expect($0.status == .forbidden) }
            #expect(try await Self.get(client, operatorLogin, "/console/policy").html.contains("Applying needs the admin role"))
        }
    }

    @Test("policy editor: an invalid draft is marked inline and kept; a check shows changes, the line diff and explain under the draft; apply changes explain")
    func policyEditor() async throws {
        try await Self.withNode(policy: true) { f, client in
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.admin), body: body(Self.policy)) { #expect($0.status == .ok) }
            let admin = try await Self.login(client, f.tokens[.admin]!)
            var p = try await Self.get(client, admin, "/console/policy?city=shanghai&dataset=air-quality")
            #expect(p.html.contains(#"<div id="explain-now">"#))
            #expect(Self.access(p.html, section: "explain-now", field: "pm25") == "read-write")

            // A draft with a mistake on line 4: marked there, and the text comes back whole.
            let broken = Self.policy.replacingOccurrences(of: "fields: [station, district, pm25]", with: "fields: [station, nosuchfield]")
            p = try await Self.post(client, admin, "/console/policy/check", [("document", broken), ("city", "shanghai"), ("dataset", "air-quality")])
            #expect(p.status == .ok && p.html.contains(#"id="check-bad""#))
            #expect(p.html.contains(#"<li value="5" class="bad">"#) && p.html.contains("nosuchfield"), "\(p.html)")
            #expect(p.html.contains("fields: [station, nosuchfield]</textarea>") || p.html.contains("nosuchfield]\n"), "the draft is kept")
            // Applying it is refused with the reasons, and the draft is still there.
            p = try await Self.post(client, admin, "/console/policy/apply", [("document", broken), ("city", "shanghai"), ("dataset", "air-quality")])
            #expect(p.status == .badRequest && p.html.contains(#"id="apply-error""#) && p.html.contains("nosuchfield"))

            // Browsers send a textarea's lines with CR LF: the same text is the same policy.
            p = try await Self.post(client, admin, "/console/policy/check", [("document", Self.policy.replacingOccurrences(of: "\n", with: "\r\n"))])
            #expect(p.html.contains(#"id="check-ok""#) && p.html.contains("Identical.") && p.html.contains("Nothing: the draft grants the same"), "\(p.html)")

            // A valid change: pm25 becomes read-only.
            let draft = Self.policy.replacingOccurrences(of: "write: [pm25]", with: "write: []")
            p = try await Self.post(client, admin, "/console/policy/check", [("document", draft), ("city", "shanghai"), ("dataset", "air-quality")])
            #expect(p.html.contains(#"id="check-ok""#) && p.html.contains(#"<ul id="changes"><li>"#), "\(p.html)")
            #expect(p.html.contains(#"<span class="del">- &#39;write: [pm25]&#39;"#) || p.html.contains(#"<span class="del">-     write: [pm25]</span>"#), "\(p.html)")
            #expect(p.html.contains(#"<span class="add">+     write: []</span>"#))
            #expect(Self.access(p.html, section: "explain-draft", field: "pm25") == "read")
            #expect(Self.access(p.html, section: "explain-now", field: "pm25") == "read-write", "nothing applied by a check")

            p = try await Self.post(client, admin, "/console/policy/apply", [("document", draft), ("city", "shanghai"), ("dataset", "air-quality")])
            #expect(p.status == .seeOther && p.location == "/console/policy?city=shanghai&dataset=air-quality")
            p = try await Self.get(client, admin, p.location!)
            #expect(p.html.contains("Policy version 2 is in force"), "\(p.html)")
            #expect(Self.access(p.html, section: "explain-now", field: "pm25") == "read")
            #expect(!(try await Self.get(client, admin, "/console/policy")).html.contains("Policy version 2 is in force"), "the message shows once")
            let versions = try await f.store.policyVersions()
            #expect(versions.count == 2 && versions.last?.appliedBy.hasPrefix("token:") == true)
        }
    }

    /// The access column of `field` in the explain table inside the element with id `section`.
    static func access(_ html: String, section: String, field: String) -> String? {
        guard let start = html.range(of: "id=\"\(section)\"") else { return nil }
        let rest = html[start.upperBound...]
        guard let row = rest.range(of: "<th scope=\"row\">\(field)</th>") else { return nil }
        guard let cell = rest[row.upperBound...].range(of: #"<td class="access">"#) else { return nil }
        return String(rest[cell.upperBound...].prefix { $0 != "<" })
    }

    @Test("ledger browser: filters, an entry with proof data that verifies, a pending entry says so; records: search, export")
    func ledgerAndRecords() async throws {
        try await Self.withNode(policy: false) { f, client in
            let ledger = try #require(f.ledger), signer = try #require(f.signer)
            for (key, district) in [("S-1", "Xihu"), ("S-2", "Binjiang"), ("S-3", "Xihu </script><b>")] {
                try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=\(key)", method: .put, headers: f.headers(.operator), body: body(#"{"values":{"district":"\#(district)","pm25":12}}"#)) {
                    #expect($0.status == .ok)
                }
            }
            let leaves = try await ledger.leafHashes(from: 0)
            #expect(leaves.count == 4)
            let cp = Checkpoint(origin: signer.verifier.name, size: 4, root: Merkle.root(leaves))
            try await ledger.saveCheckpoint(size: 4, note: try signer.sign(cp.text), createdAt: "t")
            // One more entry, after the checkpoint.
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-4", method: .put, headers: f.headers(.operator), body: body(#"{"values":{"pm25":1}}"#)) {
                #expect($0.status == .ok)
            }
            let auditor = try await Self.login(client, f.tokens[.auditor]!)
            var p = try await Self.get(client, auditor, "/console/ledger")
            #expect(p.html.contains(#"<a href="/console/ledger/4">4</a> <span class="badge muted""#), "the newest is not checkpointed yet")
            #expect(p.html.contains("The latest signed checkpoint covers 4 entries"))
            p = try await Self.get(client, auditor, "/console/ledger?kind=dataset")
            #expect(p.html.contains("/console/ledger/0") && !p.html.contains("/console/ledger/1\""))
            p = try await Self.get(client, auditor, "/console/ledger?kind=record&since=2020-01-01T00:00&until=2020-01-02T00:00")
            #expect(p.html.contains("No entries match"))
            p = try await Self.get(client, auditor, "/console/ledger?since=yesterday")
            #expect(p.status == .badRequest && p.html.contains("RFC 3339"))

            // The proof data the page hands to console.js verifies (the browser test runs the script itself).
            p = try await Self.get(client, auditor, "/console/ledger/3")
            #expect(!p.html.contains("</script><b>"), "an entry's text cannot end the script element")
            let start = try #require(p.html.range(of: #"<script type="application/json" id="proof-data">"#))
            let json = String(p.html[start.upperBound...].prefix { $0 != "<" })
            struct ProofData: Decodable { let index: UInt64; let treeSize: UInt64; let proof: [String]; let entryBytes: String; let checkpoint: String; let vkey: String }
            let d = try JSONDecoder().decode(ProofData.self, from: Data(json.utf8))
            let key = try NoteVerifier(vkey: d.vkey)
            #expect(key.vkey == signer.verifier.vkey)
            let checkpoint = try Checkpoint.verify(signedNote: d.checkpoint, key: key)
            let bytes = try #require(Data(base64Encoded: d.entryBytes))
            #expect(try LedgerEntry.decode(bytes).index == 3)
            try Merkle.verifyInclusion(leaf: Merkle.leafHash(bytes), index: 3, size: d.treeSize, proof: d.proof.compactMap { MerkleHash(base64: $0) }, root: checkpoint.root)
            p = try await Self.get(client, auditor, "/console/ledger/4")
            #expect(p.status == .ok && p.html.contains("not in a signed checkpoint yet") && !p.html.contains("proof-data"))
            #expect(try await Self.get(client, auditor, "/console/ledger/99").status == .notFound)
            #expect(try await Self.get(client, auditor, "/console/ledger/x").status == .badRequest)
            // An index at the top of UInt64 used to overflow building the next/previous links.
            for index in ["18446744073709551615", "9223372036854775807", "9223372036854775808"] {
                #expect(try await Self.get(client, auditor, "/console/ledger/\(index)").status.code >= 400, "\(index)")
            }
            #expect(try await Self.get(client, auditor, "/console/ledger?since=2025-12-01T00:00:00.1234567Z").status == .ok)

            // Records: search across keys and values; export streams with a file name.
            p = try await Self.get(client, auditor, "/console/datasets/hangzhou/air-quality?q=binjiang")
            #expect(p.html.contains("S-2") && !p.html.contains(">S-1<") && p.html.contains("1 matches in 4 records searched"), "\(p.html)")
            let all = try await Self.get(client, auditor, "/console/datasets/hangzhou/air-quality")
            #expect(all.html.contains("Xihu &lt;/script&gt;&lt;b&gt;") && !all.html.contains("<b>"), "values are escaped")
            let export = try await client.execute(uri: "/console/datasets/hangzhou/air-quality/export?format=csv", method: .get, headers: [.cookie: auditor.cookie])
            #expect(export.status == .ok && export.headers[.contentDisposition] == "attachment; filename=\"hangzhou-air-quality.csv\"")
            #expect(String(buffer: export.body).split(whereSeparator: \.isNewline).count == 5, "\(String(buffer: export.body))")
            // Without a CA certificate the node cannot build a bundle, and the page says so.
            p = try await Self.get(client, auditor, "/console/ledger/bundle")
            #expect(p.status == .badRequest && p.html.contains(#"role="alert""#), "\(p.html)")
        }
    }

    @Test("activity charts come from the exchange receipts in the ledger, per share and per peer")
    func activity() async throws {
        let f = try await Fixture(withLedger: true)
        let ledger = try #require(f.ledger)
        let writer = Task { await ledger.runWriter() }
        defer { ledger.finish(); writer.cancel() }
        for (peer, direction, records) in [("shanghai", "sent to", 7), ("suzhou", "received from", 3), ("shanghai", "sent to", 5)] {
            _ = try await ledger.append(LedgerEntry(
                time: "2026-11-27T10:00:00.000000Z", kind: LedgerEntry.Kind.exchangeReceipt, actor: "peer:\(peer)", peer: peer, dataset: "hangzhou/registry",
                counts: ["batches": 1, "records": records], detail: "share hangzhou/registry-rw: \(direction) \(peer), hangzhou:1"))
        }
        try await f.app.test(.router) { client in
            let login = try await Self.login(client, f.tokens[.auditor]!)
            // The fixture's clock says 2026-11-29T08:00Z: the receipts (two days earlier) fall in the last 7 days, not the last day.
            let p = try await Self.get(client, login, "/console/activity?days=7")
            #expect(p.html.contains("Share <strong>hangzhou/registry-rw</strong>: 12 records sent, 3 received, 3 exchanges"), "\(p.html)")
            #expect(p.html.contains("Peer <strong>shanghai</strong>: 12 records sent, 0 received, 2 exchanges"))
            #expect(p.html.contains("Peer <strong>suzhou</strong>: 0 records sent, 3 received, 1 exchanges"))
            #expect(p.html.components(separatedBy: "<svg").count - 1 == 3)
            #expect(try await Self.get(client, login, "/console/activity?days=1").html.contains("No exchanges"), "a day before the clock's time: none")
        }
    }
}
