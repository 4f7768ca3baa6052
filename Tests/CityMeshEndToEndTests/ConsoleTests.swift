import Foundation
import Testing

/// The web console of real nodes, driven with curl as a browser drives it (a cookie jar, form
/// posts with the CSRF token): a conflict made by two real cities and settled from the console,
/// bundles exported from two cities' consoles and reconciled in one. The real-browser test
/// (scripts/browser-test) covers the policy editor and the in-browser proof check.
@Suite("End to end: the web console")
struct ConsoleTests {
    struct Browser {
        let base: String
        let jar: String
        let work: String
        var csrf = ""

        init(work: String, base: String, name: String) {
            self.work = work
            self.base = base
            self.jar = work + "/\(name).jar"
        }

        /// (status, body, redirect) of a request; `fields` make it a form post.
        func request(_ path: String, form fields: [String]? = nil, out: String? = nil) throws -> (code: Int, body: String, location: String) {
            let file = out ?? work + "/response-\(UUID().uuidString.prefix(6))"
            var args = ["-s", "-b", jar, "-c", jar, "-o", file, "-w", "%{http_code}\n%{redirect_url}"]
            if let fields {
                args += ["-H", "Origin: \(base)"] + fields.flatMap { ["--data-urlencode", $0] }
            }
            let r = try Harness.run("/usr/bin/curl", args + [base + path], cwd: work)
            let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            let body = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            return (Int(parts.first ?? "") ?? 0, body, parts.count > 1 ? String(parts[1]) : "")
        }

        func get(_ path: String) throws -> (code: Int, body: String, location: String) { try request(path) }

        func post(_ path: String, _ fields: [String]) throws -> (code: Int, body: String, location: String) {
            try request(path, form: ["_csrf=\(csrf)"] + fields)
        }

        static func login(work: String, base: String, token: String, name: String) throws -> Browser {
            var b = Browser(work: work, base: base, name: name)
            let r = try b.request("/console/login", form: ["token=\(token)"])
            #expect(r.code == 303 && r.location == base + "/console", "login as \(name): \(r.code) \(r.body.prefix(300))")
            let page = try b.get("/console/datasets").body
            let marker = #"name="_csrf" value=""#
            let start = try #require(page.range(of: marker), "\(page.prefix(300))")
            b.csrf = String(page[start.upperBound...].prefix { $0 != "\"" })
            return b
        }
    }

    static func admin(_ out: String, _ city: String) throws -> String {
        let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("  \(city) ") && $0.contains(" http://") }, "\(out)")
        return String(line.split(separator: " ")[1])
    }

    @Test("a conflict between two real cities is settled from the owner's console; bundles from two consoles reconcile clean in one; an auditor can look but not settle")
    func console() throws {
        let work = try Harness.tempDir("console")
        let (p, out) = try DemoTests.launch(work, dir: "fed")
        defer { DemoTests.stop(p) }
        #expect(p.isRunning, "\(out)\n\(DemoTests.nodeLogs(work + "/fed"))")
        guard p.isRunning else { return }
        let fed = work + "/fed"
        let hzURL = try Self.admin(out, "hangzhou"), szURL = try Self.admin(out, "suzhou")
        let token = { (city: String) in try String(contentsOfFile: "\(fed)/\(city)/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }
        let hz = try Browser.login(work: work, base: hzURL, token: try token("hangzhou"), name: "hz-admin")

        let overview = try hz.get("/console").body
        #expect(overview.contains("<svg") && overview.contains("2 of 2 peers connected"), "\(overview.prefix(2000))")
        let registry = try hz.get("/console/datasets/hangzhou/registry").body
        #expect(registry.contains("Shared under these agreements") && registry.components(separatedBy: "read-write (status)").count == 3, "\(registry.prefix(3000))")

        // Two members write the same enterprise's status at once, until the owner records a conflict.
        let keys = try Harness.citymesh(["export", "--dir", "hangzhou", "registry", "--jsonl"], cwd: fed).stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["credit_code"] as? String
        }
        #expect(keys.count == 10)
        var conflictKey: String?
        for key in keys.suffix(4) where conflictKey == nil {
            let writes = [("shanghai", "closed"), ("suzhou", "merged")].map { city, value -> Process in
                let proc = Process()
                proc.executableURL = URL(fileURLWithPath: Harness.binary)
                proc.arguments = ["record", "put", "--dir", city, "hangzhou/registry", key, "status=\(value)"]
                proc.currentDirectoryURL = URL(fileURLWithPath: fed)
                proc.standardOutput = FileHandle.nullDevice
                proc.standardError = FileHandle.nullDevice
                try? proc.run()
                return proc
            }
            writes.forEach { $0.waitUntilExit() }
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, conflictKey == nil {
                if try hz.get("/console/conflicts").body.contains(">\(key)</a>") { conflictKey = key }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        let key = try #require(conflictKey, "no conflict was recorded in 4 tries: the writes were never concurrent")
        var page = try hz.get("/console/conflicts").body
        #expect(page.contains("Kept now") && page.contains("Overwritten") && page.contains("closed") && page.contains("merged"), "\(page)")

        // The auditor sees it and cannot settle it.
        let created = try Harness.citymesh(["token", "create", "--dir", "hangzhou", "--role", "auditor", "--name", "console-e2e", "--json"], cwd: fed)
        let auditorToken = try #require((try JSONSerialization.jsonObject(with: Data(created.stdout.utf8)) as? [String: Any])?["token"] as? String, "\(created.stdout)")
        let auditor = try Browser.login(work: work, base: hzURL, token: auditorToken, name: "hz-auditor")
        let seen = try auditor.get("/console/conflicts").body
        #expect(seen.contains(">\(key)</a>") && !seen.contains("/console/conflicts/resolve"))
        let refused = try auditor.post("/console/conflicts/resolve", ["dataset=hangzhou/registry", "key=\(key)", "field=status", "choice=keep"])
        #expect(refused.code == 403, "\(refused.body.prefix(500))")

        // The admin takes the overwritten value; every city converges to it.
        let section = try #require(page.range(of: ">\(key)</a>")).upperBound
        let take = try #require(page[section...].range(of: #"value="take:"#))
        let id = String(page[take.upperBound...].prefix { $0.isNumber })
        let overwritten = page[section...].range(of: "<h3>Overwritten</h3><p class=\"value\">").map { String(page[$0.upperBound...].prefix { $0 != "<" }) }
        let settled = try hz.post("/console/conflicts/resolve", ["dataset=hangzhou/registry", "key=\(key)", "field=status", "choice=take:\(id)"])
        #expect(settled.code == 303, "\(settled.body.prefix(800))")
        page = try hz.get("/console/conflicts").body
        #expect(page.contains("Settled \(key).status") && !page.contains(">\(key)</a>"), "\(page.prefix(1500))")
        let value = try #require(overwritten)
        #expect(["closed", "merged"].contains(value))
        try PeerTransportTests.eventually("every city to hold status=\(value) for \(key)", seconds: 60) {
            try ["hangzhou", "shanghai", "suzhou"].allSatisfy { city in
                let r = try Harness.citymesh(["record", "get", "--dir", city, city == "hangzhou" ? "registry" : "hangzhou/registry", key, "--json"], cwd: fed)
                return r.stdout.contains("\"status\" : \"\(value)\"")
            }
        }

        // Bundles from two cities' consoles; the reconcile in hangzhou's console is clean once
        // the latest receipts are countersigned (seconds).
        let sz = try Browser.login(work: work, base: szURL, token: try token("suzhou"), name: "sz-admin")
        var result = ""
        try PeerTransportTests.eventually("the consoles' bundles to reconcile clean", seconds: 90) {
            let a = try auditor.request("/console/ledger/bundle", out: work + "/hz.bundle")
            let b = try sz.request("/console/ledger/bundle", out: work + "/sz.bundle")
            guard a.code == 200, b.code == 200 else { return false }
            result = try auditor.post("/console/reconcile", ["a@\(work)/hz.bundle", "b@\(work)/sz.bundle"]).body
            return result.contains("Clean:")
        }
        #expect(result.contains("hangzhou and suzhou") && result.contains("bundle verified"), "\(result)")
        let verify = try Harness.citymesh(["audit", "verify-bundle", work + "/hz.bundle", "--ca", "fed/fed/ca.pem"], cwd: work)
        #expect(verify.ok && verify.stdout.contains("bundle OK"), "the console's bundle verifies offline: \(verify.stdout)\(verify.stderr)")
        let same = try auditor.post("/console/reconcile", ["a@\(work)/hz.bundle", "b@\(work)/hz.bundle"])
        #expect(same.code == 400 && same.body.contains("both bundles are hangzhou"), "\(same.body.prefix(600))")
        let garbage = try auditor.post("/console/reconcile", ["a=not json", "b@\(work)/sz.bundle"])
        #expect(garbage.code == 400 && garbage.body.contains("is not an audit bundle"))

        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(DemoTests.output(work))")
    }
}
