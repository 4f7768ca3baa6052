import Foundation
import Hummingbird
import CityMeshCore
import CityMeshStore
import NIOCore

extension Console {
    /// The console's routes, on the admin API's router (docs/console.md lists them).
    func register(on router: Router<AdminContext>) {
        router.get("/console/assets/console.css") { _, _ in Self.asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
        router.get("/console/assets/console.js") { _, _ in Self.asset(ConsoleAssets.js, type: "text/javascript; charset=utf-8") }
        router.get("/console/login") { request, _ in loginPage(request) }
        router.post("/console/login") { request, context in await login(request, client: context.client ?? "local") }
        router.post("/console/logout") { request, context in
            await action(request, context) { s, _ in
                sessions.end(s.id)
                var r = Self.redirect("/console/login?bye=1")
                r.setCookie(Cookie(name: Self.cookieName, value: "", maxAge: 0, path: "/console", httpOnly: true, sameSite: .strict))
                return r
            }
        }
        router.get("/console") { request, context in await page(request, context) { s in try await overview(s, context) } }
        router.get("/console/datasets") { request, context in await page(request, context) { s in try await datasets(s, context) } }
        router.get("/console/datasets/:owner/:name") { request, context in
            await page(request, context) { s in try await dataset(s, request, context) }
        }
        router.get("/console/datasets/:owner/:name/record") { request, context in
            await page(request, context) { s in try await record(s, request, context) }
        }
        router.get("/console/datasets/:owner/:name/export") { request, context in
            await page(request, context) { s in try await export(s, request, context) }
        }
        router.get("/console/agreements") { request, context in await page(request, context) { s in try await agreements(s, context) } }
        router.post("/console/agreements/respond") { request, context in
            await action(request, context, needs: .admin) { s, form in try await respond(s, form, context) }
        }
        router.post("/console/agreements/revoke") { request, context in
            await action(request, context, needs: .admin) { s, form in try await revoke(s, form, context) }
        }
        router.get("/console/conflicts") { request, context in await page(request, context) { s in try await conflicts(s, context) } }
        router.post("/console/conflicts/resolve") { request, context in
            // Admins only, as docs/console.md says (the API lets operators settle conflicts from the CLI).
            await action(request, context, needs: .admin) { s, form in try await resolve(s, form, context) }
        }
        router.get("/console/policy") { request, context in
            await page(request, context) { s in
                let q = request.uri.queryParameters
                return try await policyPage(s, context, draft: nil, city: q.get("city"), dataset: q.get("dataset"))
            }
        }
        router.post("/console/policy/check") { request, context in
            await action(request, context, needs: .operator, formLimit: Self.policyFormLimit) { s, form in
                try await policyPage(s, context, draft: form["document"] ?? "", city: form["city"], dataset: form["dataset"])
            }
        }
        router.post("/console/policy/apply") { request, context in
            await action(request, context, needs: .admin, formLimit: Self.policyFormLimit) { s, form in try await applyPolicy(s, form, context) }
        }
        router.get("/console/ledger") { request, context in await page(request, context) { s in try await ledger(s, request, context) } }
        router.get("/console/ledger/bundle") { request, context in await page(request, context) { s in try await bundle(s, request, context) } }
        router.get("/console/ledger/:index") { request, context in await page(request, context) { s in try await entry(s, context) } }
        router.get("/console/activity") { request, context in await page(request, context) { s in try await activity(s, request, context) } }
        router.get("/console/reconcile") { request, context in
            await page(request, context) { s in render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", [:]) }
        }
        router.post("/console/reconcile") { request, context in
            await uploadAction(request, context, limit: Self.uploadLimit, spooled: ["a", "b"]) { s, upload in try await reconcile(s, upload) }
        }
        // Anything else under /console: a page saying so, not the API's JSON error.
        router.get("/console/**") { request, context in
            await page(request, context) { s in
                throw Failure(status: .notFound, code: "not_found", message: "the console has no page \(request.uri.path): use the menu above")
            }
        }
    }

    static func asset(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        return secured(Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text))))
    }

    // MARK: Login

    func loginPage(_ request: Request, error: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        let q = request.uri.queryParameters
        var data: [String: Any] = ["city": city, "title": "Log in"]
        if let next = q.get("next"), Self.safeNext(next) { data["next"] = next }
        if let error { data["error"] = error }
        if q.get("expired") == "1" { data["notice"] = "Your token is no longer valid (revoked or replaced): log in again." }
        if q.get("bye") == "1" { data["notice"] = "You are logged out." }
        return Self.html(views.render("login", data), status: status)
    }

    /// Only paths inside the console, never another site (`//evil`, `/\evil`).
    static func safeNext(_ next: String) -> Bool {
        next.hasPrefix("/console") && !next.contains("//") && !next.contains("\\")
    }

    func login(_ request: Request, client: String) async -> Response {
        guard Self.sameOrigin(request) else {
            return loginPage(request, error: "a login form from another site was refused", status: .forbidden)
        }
        if let wait = sessions.loginBlocked(client) {
            return loginPage(
                request, error: "too many failed logins from this address: try again in \(wait) seconds (tokens are 256-bit; a typo is the likely cause)",
                status: .tooManyRequests)
        }
        let form: [String: String]
        do { form = try await Self.readForm(request, limit: Self.loginLimit) } catch {
            return loginPage(request, error: "the login form could not be read (a token is under 100 characters)", status: .badRequest)
        }
        let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { return loginPage(request, error: "paste an admin API token (cm_…): 'citymesh token create --role auditor' makes one", status: .unauthorized) }
        let role: Role?
        do { role = try await admin.store.role(forTokenHash: AdminToken.hash(token)) } catch {
            return loginPage(request, error: "the node could not check the token: \(error)", status: .internalServerError)
        }
        guard let role else {
            sessions.loginFailed(client)
            return loginPage(
                request, error: "that token is not valid (wrong, or revoked): the node directory's admin.token is an admin token; 'citymesh token create' makes others",
                status: .unauthorized)
        }
        let s = sessions.create(token: token, role: role)
        let next = form["next"].flatMap { Self.safeNext($0) ? $0 : nil } ?? "/console"
        var r = Self.redirect(next)
        r.setCookie(Cookie(name: Self.cookieName, value: s.id, path: "/console", httpOnly: true, sameSite: .strict))
        return r
    }

    // MARK: Overview

    func overview(_ s: ConsoleSessions.Session, _ context: AdminContext) async throws -> Response {
        let node: API.NodeInfo = try await get("/v1/node", s, context)
        let peers: API.PeerList? = try await optional("/v1/peers", s, context)
        let agreements: API.AgreementList? = try await optional("/v1/agreements", s, context)
        let replication: API.Replication = try await get("/v1/replication", s, context)
        let now = Int64(admin.physicalMillis()) * 1000
        let graph = ConsoleGraphics.federation(city: city, peers: peers?.peers ?? [], agreements: agreements?.agreements ?? [])
        let peerRows: [[String: Any]] = (peers?.peers ?? []).map { p in
            var row: [String: Any] = ["city": p.city, "state": p.state, "stateClass": p.state == "connected" ? "ok" : "warn"]
            row["direction"] = p.direction ?? "—"
            row["address"] = p.address ?? "—"
            row["rtt"] = p.rttMs.map { String(format: "%.1f ms", $0) } ?? "—"
            row["lastSeen"] = p.lastSeen ?? "—"
            row["software"] = p.software ?? "—"
            if let e = p.lastError { row["lastError"] = e }
            if let expires = p.certificateExpires {
                let days = RFC3339.parse(expires).map { Int(($0 - now) / 86_400_000_000) }
                row["expires"] = String(expires.prefix(10))
                if let days {
                    row["expiresIn"] = days < 0 ? "expired" : "in \(days) days"
                    if days < 30 { row["expiresSoon"] = true }
                }
            } else {
                row["expires"] = "—"
            }
            return row
        }
        let shares: [[String: Any]] = replication.shares.flatMap { share in
            share.parties.map { party -> [String: Any] in
                var row: [String: Any] = [
                    "share": share.share, "dataset": share.dataset, "role": share.role, "city": party.city,
                    "state": party.state.replacingOccurrences(of: "_", with: " "),
                    "held": "\(party.batchesHeld)", "missingHere": "\(party.missingHere)", "missingThere": "\(party.missingThere)",
                    "stateClass": party.state == "in_sync" ? "ok" : (party.state == "unknown" ? "muted" : "warn"),
                ]
                row["lastExchange"] = party.lastExchange ?? "—"
                if let b = party.behindSince { row["behindSince"] = b }
                return row
            }
        }
        var refusals: [[String: Any]] = []
        for r in (peers?.recentRefusals ?? []).suffix(10).reversed() {
            refusals.append(["at": r.at, "reason": r.reason, "remote": r.remote, "direction": r.direction, "detail": r.detail])
        }
        let hasRefusals = !refusals.isEmpty
        var data: [String: Any] = [
            "version": node.version, "startedAt": node.startedAt, "datasetCount": "\(node.datasets)", "graph": graph,
            "peers": peerRows, "shares": shares, "refusals": refusals, "hasRefusals": hasRefusals,
            "connected": "\((peers?.peers ?? []).filter { $0.state == "connected" }.count)", "peerCount": "\((peers?.peers ?? []).count)",
        ]
        if peers == nil { data["noTransport"] = true }
        data["listen"] = peers?.listen ?? "—"
        return render(s, nav: "overview", title: "Federation overview", template: "overview", data)
    }

    // MARK: Datasets and records

    func datasets(_ s: ConsoleSessions.Session, _ context: AdminContext) async throws -> Response {
        let list: API.DatasetList = try await get("/v1/datasets", s, context)
        let rows: [[String: Any]] = list.datasets.map { d in
            [
                "id": d.id, "href": "/console/datasets/\(Self.pathSegment(d.owner))/\(Self.pathSegment(d.name))", "key": d.key,
                "fields": "\(d.fields.count)", "records": "\(d.records)", "lastSeq": "\(d.lastSeq)", "createdAt": d.createdAt,
                "origin": d.owner == city ? "own" : "replica of \(d.owner)",
            ]
        }
        return render(s, nav: "datasets", title: "Datasets", template: "datasets", ["datasets": rows, "none": rows.isEmpty])
    }

    func datasetPath(_ context: AdminContext) throws -> (owner: String, name: String, api: String, console: String) {
        let owner = context.parameters.get("owner") ?? "", name = context.parameters.get("name") ?? ""
        let o = Self.pathSegment(owner), n = Self.pathSegment(name)
        return (owner, name, "/v1/datasets/\(o)/\(n)", "/console/datasets/\(o)/\(n)")
    }

    static func display(_ v: JSONValue?) -> String {
        switch v {
        case nil, .null?: "—"
        case .string(let s)?: s
        case .bool(let b)?: b ? "true" : "false"
        case .int(let i)?: String(i)
        case .double(let d)?: String(d)
        case let other?: String(decoding: (try? JSONEncoder().encode(other)) ?? Data(), as: UTF8.self)
        }
    }

    func dataset(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let path = try datasetPath(context)
        let info: API.Dataset = try await get(path.api, s, context)
        let q = request.uri.queryParameters
        let search = (q.get("q") ?? "").trimmingCharacters(in: .whitespaces)
        let after = q.get("after")
        let pageSize = 50
        var shown: [API.Record] = []
        var scanned = 0
        var next: String? = after
        var more = false
        // Without a search: one page. With one: read pages until a page of matches, or 20,000 records.
        repeat {
            let page: API.RecordPage = try await get(path.api + "/records" + Self.query([("limit", search.isEmpty ? "\(pageSize)" : "500"), ("after", next)]), s, context)
            for r in page.records {
                scanned += 1
                next = r.key
                if search.isEmpty || Self.matches(r, search) {
                    shown.append(r)
                    if shown.count == pageSize { break }
                }
            }
            more = page.next != nil || (shown.count == pageSize && next != page.records.last?.key)
            if page.next == nil { if shown.count < pageSize { more = false }; break }
        } while !search.isEmpty && shown.count < pageSize && scanned < 20_000
        let fieldNames = info.fields.map(\.name)
        let columns = [info.key] + fieldNames.filter { $0 != info.key }
        let rows: [[String: Any]] = shown.map { r in
            [
                "key": r.key, "href": path.console + "/record" + Self.query([("key", r.key)]),
                "cells": columns.dropFirst().map { ["value": Self.display(r.values[$0])] },
            ]
        }
        var data: [String: Any] = [
            "id": info.id, "key": info.key, "records": "\(info.records)", "lastSeq": "\(info.lastSeq)", "createdAt": info.createdAt,
            "fields": info.fields.map { ["name": $0.name, "type": $0.type.rawValue, "isKey": $0.name == info.key] },
            "columns": columns.dropFirst().map { ["name": $0] }, "keyColumn": info.key, "rows": rows, "q": search,
            "exportCSV": path.console + "/export?format=csv", "exportJSONL": path.console + "/export?format=jsonl",
            "action": path.console, "shownCount": "\(shown.count)",
        ]
        if rows.isEmpty { data["empty"] = true }
        if !search.isEmpty { data["searched"] = "\(scanned)"; data["qShown"] = search }
        if more, let next { data["nextHref"] = path.console + Self.query([("q", search), ("after", next)]) }
        if after != nil { data["firstHref"] = path.console + Self.query([("q", search)]) }
        if info.owner != city { data["replicaOf"] = info.owner }
        // The agreements this dataset is shared under (as owner) or received through (as member).
        let agreements: API.AgreementList? = try await optional("/v1/agreements", s, context)
        let shares = (agreements?.agreements ?? []).filter { $0.dataset == info.id || "\($0.owner)/\($0.dataset)" == info.id }
        data["shares"] = shares.map { a -> [String: Any] in
            ["share": "\(a.owner)/\(a.share)", "member": a.member, "state": a.state, "access": a.write.isEmpty ? "read" : "read-write (\(a.write.joined(separator: ", ")))",
             "fields": a.fields.joined(separator: ", "), "filter": a.filter ?? "every row", "stateClass": a.state == "active" ? "ok" : "muted"]
        }
        data["hasShares"] = !shares.isEmpty
        return render(s, nav: "datasets", title: "Dataset \(info.id)", template: "dataset", data)
    }

    static func matches(_ r: API.Record, _ search: String) -> Bool {
        if r.key.localizedCaseInsensitiveContains(search) { return true }
        return r.values.values.contains { display($0).localizedCaseInsensitiveContains(search) }
    }

    func record(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let path = try datasetPath(context)
        guard let key = request.uri.queryParameters.get("key") else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "which record? give ?key=KEY (the dataset page links each one)")
        }
        let info: API.Dataset = try await get(path.api, s, context)
        let r: API.Record = try await get(path.api + "/record" + Self.query([("key", key)]), s, context)
        let rows: [[String: Any]] = info.fields.map { f in
            var row: [String: Any] = ["field": f.name, "type": f.type.rawValue, "value": Self.display(r.values[f.name])]
            if let m = r.meta?[f.name] { row["hlc"] = m.hlc; row["by"] = m.city }
            return row
        }
        return render(s, nav: "datasets", title: "Record \(key)", template: "record", [
            "dataset": info.id, "datasetHref": path.console, "key": key, "seq": "\(r.seq)", "rows": rows,
        ])
    }

    func export(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let path = try datasetPath(context)
        let format = request.uri.queryParameters.get("format") == "csv" ? "csv" : "jsonl"
        // Streamed through, as the API streams it.
        let response = try await call(.get, path.api + "/export?format=\(format)", s, context)
        guard response.status == .ok else { _ = try await fetch(.get, path.api + "/export?format=\(format)", s, context); return response }
        var r = response
        let file = "\(path.owner)-\(path.name).\(format)".replacingOccurrences(of: "\"", with: "")
        r.headers[.contentDisposition] = "attachment; filename=\"\(file)\""
        return Self.secured(r)
    }

    // MARK: Agreements

    func agreements(_ s: ConsoleSessions.Session, _ context: AdminContext) async throws -> Response {
        guard let list: API.AgreementList = try await optional("/v1/agreements", s, context) else {
            return render(s, nav: "agreements", title: "Agreements", template: "agreements", ["none": true, "noTransport": true])
        }
        let rows: [[String: Any]] = list.agreements.map { a in
            var row: [String: Any] = [
                "id": a.id, "shortID": String(a.id.prefix(12)), "owner": a.owner, "member": a.member, "share": a.share, "dataset": a.dataset,
                "state": a.state, "fields": a.fields.joined(separator: ", "), "write": a.write.isEmpty ? "—" : a.write.joined(separator: ", "),
                "purpose": a.purpose, "legalBasis": a.legalBasis, "validUntil": Self.validity(a.validUntil), "onRevoke": a.onRevoke, "offeredAt": a.offeredAt,
                "ownerSignature": a.ownerSignature, "access": a.write.isEmpty ? "read" : "read-write",
                "ledgerHref": "/console/ledger" + Self.query([("agreement", a.id)]),
                "stateClass": a.state == "active" ? "ok" : (a.state == "offered" ? "warn" : "muted"),
            ]
            row["filter"] = a.filter ?? "—"
            row["memberSignature"] = a.memberSignature ?? "(not yet signed)"
            row["respondedAt"] = a.respondedAt ?? "—"
            if let r = a.revocationReason { row["revocationReason"] = r }
            if a.state == "offered", a.member == city { row["canRespond"] = true }
            if a.state == "active", a.owner == city { row["canRevoke"] = true }
            return row
        }
        return render(s, nav: "agreements", title: "Agreements", template: "agreements", ["agreements": rows, "none": rows.isEmpty])
    }

    /// A policy's `valid_until: 2099-12-31` means to the end of that day, so agreements hold the
    /// next midnight; say both.
    static func validity(_ text: String) -> String {
        guard text.hasSuffix("T00:00:00Z"), let micros = RFC3339.parse(text) else { return text }
        return "\(text) (the end of \(RFC3339.format(microseconds: micros - 86_400_000_000).prefix(10)))"
    }

    func respond(_ s: ConsoleSessions.Session, _ form: [String: String], _ context: AdminContext) async throws -> Response {
        guard let owner = form["owner"], let share = form["share"], let decision = form["decision"], ["accept", "reject"].contains(decision) else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "the form names no agreement or decision: reload the agreements page")
        }
        _ = try await fetch(.post, "/v1/agreements/\(Self.pathSegment(owner))/\(Self.pathSegment(share))/\(decision)", s, context, body: "")
        sessions.setFlash(s.id, "You \(decision == "accept" ? "accepted" : "rejected") \(owner)'s share \(share).")
        return Self.redirect("/console/agreements")
    }

    func revoke(_ s: ConsoleSessions.Session, _ form: [String: String], _ context: AdminContext) async throws -> Response {
        guard let share = form["share"], let member = form["member"] else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "the form names no share or member: reload the agreements page")
        }
        _ = try await fetch(.post, "/v1/shares/\(Self.pathSegment(share))/revoke" + Self.query([("city", member)]), s, context, body: "")
        sessions.setFlash(s.id, "Share \(share) is revoked for \(member).")
        return Self.redirect("/console/agreements")
    }

    // MARK: Conflicts

    func conflicts(_ s: ConsoleSessions.Session, _ context: AdminContext) async throws -> Response {
        let list: API.DatasetList = try await get("/v1/datasets", s, context)
        var groups: [[String: Any]] = []
        for d in list.datasets {
            let c: API.ConflictList = try await get("/v1/datasets/\(Self.pathSegment(d.owner))/\(Self.pathSegment(d.name))/conflicts", s, context)
            var byCell: [String: [StoredConflict]] = [:]
            var order: [String] = []
            for x in c.conflicts {
                let k = x.key + "\u{0}" + x.field
                if byCell[k] == nil { order.append(k) }
                byCell[k, default: []].append(x)
            }
            for k in order {
                let xs = byCell[k]!
                let first = xs[0]
                groups.append([
                    "dataset": d.id, "key": first.key, "field": first.field,
                    "recordHref": "/console/datasets/\(Self.pathSegment(d.owner))/\(Self.pathSegment(d.name))/record" + Self.query([("key", first.key)]),
                    "kept": Self.rawDisplay(first.winnerValue), "keptBy": first.winnerCity, "keptStamp": first.winnerStamp,
                    "overwritten": xs.map { x in
                        ["id": "\(x.id)", "value": Self.rawDisplay(x.value), "by": x.city, "stamp": x.stamp, "foundAt": x.foundAt] as [String: Any]
                    },
                ])
            }
        }
        return render(s, nav: "conflicts", title: "Conflicts", template: "conflicts", ["groups": groups, "none": groups.isEmpty])
    }

    /// A stored conflict value is JSON text (nil when the field was empty).
    static func rawDisplay(_ json: String?) -> String {
        guard let json else { return "—" }
        return display(try? JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)))
    }

    func resolve(_ s: ConsoleSessions.Session, _ form: [String: String], _ context: AdminContext) async throws -> Response {
        guard let dataset = form["dataset"], let key = form["key"], let field = form["field"], let choice = form["choice"] else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "choose how to settle the conflict (keep, take a value, or set one), then press Resolve")
        }
        let body: API.ResolveConflict
        if choice == "keep" {
            body = API.ResolveConflict(key: key, field: field, keep: true)
        } else if choice.hasPrefix("take:"), let id = Int64(choice.dropFirst(5)) {
            body = API.ResolveConflict(key: key, field: field, take: id)
        } else if choice == "value" {
            let text = form["value"] ?? ""
            body = API.ResolveConflict(key: key, field: field, value: (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .string(text))
        } else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "'\(choice)' is not a way to settle a conflict: keep, take one, or set a value")
        }
        let parts = dataset.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { throw Failure(status: .badRequest, code: "invalid_argument", message: "'\(dataset)' is not owner/name") }
        let json = String(decoding: try JSONEncoder().encode(body), as: UTF8.self)
        _ = try await fetch(
            .post, "/v1/datasets/\(Self.pathSegment(parts[0]))/\(Self.pathSegment(parts[1]))/conflicts/resolve", s, context, body: json,
            contentType: "application/json")
        sessions.setFlash(s.id, "Settled \(key).\(field) in \(dataset).")
        return Self.redirect("/console/conflicts")
    }

    // MARK: Policy

    /// The policy page: the version in force, and for writers an editor. With `draft` (a check),
    /// the draft's problems inline, its changes and line diff against the version in force, and
    /// explain under both.
    func policyPage(_ s: ConsoleSessions.Session, _ context: AdminContext, draft: String?, city explainCity: String?, dataset explainDataset: String?, error: String? = nil) async throws -> Response {
        let show: API.PolicyShow = try await get("/v1/policy", s, context)
        let active = show.current?.document ?? ""
        let list: API.DatasetList = try await get("/v1/datasets", s, context)
        let own = list.datasets.filter { $0.owner == city }.map(\.name)
        var cities = Set<String>()
        if let peers: API.PeerList = try await optional("/v1/peers", s, context) { cities.formUnion(peers.peers.map(\.city)) }
        if let ags: API.AgreementList = try await optional("/v1/agreements", s, context) { cities.formUnion(ags.agreements.map(\.member)) }
        cities.remove(city)
        let explainCity = explainCity?.trimmingCharacters(in: .whitespaces).lowercased()
        let explainDataset = explainDataset ?? own.first
        var data: [String: Any] = [
            "document": draft ?? active, "activeDocument": active, "hasActive": show.current != nil,
            "versions": show.versions.reversed().prefix(20).map { v -> [String: Any] in
                ["version": "\(v.version)", "sha": String(v.sha256.prefix(16)), "appliedBy": v.appliedBy, "appliedAt": v.appliedAt, "signed": v.signedNote != nil]
            },
            "cities": cities.sorted().map { ["name": $0, "selected": $0 == explainCity] },
            "datasets": own.map { ["name": $0, "selected": $0 == explainDataset] },
            "explainCity": explainCity ?? "",
        ]
        if let v = show.current {
            data["version"] = "\(v.version)"
            data["sha256"] = v.sha256
            data["appliedBy"] = v.appliedBy
            data["appliedAt"] = v.appliedAt
            if let note = v.signedNote { data["signedNote"] = note }
        }
        if let error { data["applyError"] = error }
        if let draft {
            data["checked"] = true
            let check: API.PolicyCheck = try await send(.post, "/v1/policy/check", s, context, body: draft)
            data["ok"] = check.ok
            data["issues"] = check.issues.map { ["line": "\($0.line)", "column": "\($0.column)", "message": $0.message] }
            data["changes"] = check.changes.map { c -> [String: Any] in
                var row: [String: Any] = ["subject": c.subject, "what": c.what]
                // Not "city": a row without one would show the page's city instead.
                if let city = c.city { row["changeCity"] = city }
                return row
            }
            data["hasWarnings"] = !check.warnings.isEmpty
            data["noChanges"] = check.ok && check.changes.isEmpty
            data["warnings"] = check.warnings.map { ["text": $0] }
            let bad = Dictionary(grouping: check.issues, by: \.line)
            data["listing"] = draft.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map { i, line -> [String: Any] in
                var row: [String: Any] = ["n": "\(i + 1)", "text": String(line)]
                if let issues = bad[i + 1] { row["issues"] = issues.map { ["message": "column \($0.column): \($0.message)"] }; row["bad"] = true }
                return row
            }
            let diff = ConsoleGraphics.lineDiff(old: active, new: draft)
            data["diff"] = diff.map { ["mark": $0.mark, "text": $0.text, "cls": $0.mark == "+" ? "add" : ($0.mark == "-" ? "del" : "same")] }
            data["identical"] = active == draft
            if check.ok, let c = explainCity, !c.isEmpty, let d = explainDataset {
                let q = Self.query([("city", c), ("dataset", d)])
                do {
                    let after: PolicyEngine.Explanation = try await send(.post, "/v1/policy/explain" + q, s, context, body: draft)
                    data["explainDraft"] = Self.explanation(after)
                } catch let f as Failure { data["explainDraftError"] = f.message }
            }
        }
        if let c = explainCity, !c.isEmpty, let d = explainDataset {
            do {
                let now: PolicyEngine.Explanation = try await get("/v1/policy/explain" + Self.query([("city", c), ("dataset", d)]), s, context)
                data["explain"] = Self.explanation(now)
            } catch let f as Failure { data["explainError"] = f.message }
        }
        return render(s, nav: "policy", title: "Sharing policy", template: "policy", data, status: error == nil ? .ok : .badRequest)
    }

    static func explanation(_ e: PolicyEngine.Explanation) -> [String: Any] {
        var out: [String: Any] = [
            "city": e.city, "dataset": e.dataset, "decision": e.decision, "active": e.active, "activeText": e.active ? "records flow" : "nothing flows",
            "fields": e.fields.map { ["field": $0.field, "type": $0.type, "access": $0.access, "rule": $0.rule, "cls": $0.access == "none" ? "muted" : "ok"] },
        ]
        out["share"] = e.share ?? "—"
        out["filter"] = e.filter ?? "—"
        out["purpose"] = e.purpose ?? "—"
        out["validUntil"] = e.validUntil ?? "—"
        return out
    }

    func applyPolicy(_ s: ConsoleSessions.Session, _ form: [String: String], _ context: AdminContext) async throws -> Response {
        let document = form["document"] ?? ""
        do {
            let applied: API.PolicyApplied = try await send(.put, "/v1/policy", s, context, body: document)
            sessions.setFlash(
                s.id,
                applied.unchanged
                    ? "The policy is the same as version \(applied.version): nothing changed."
                    : "Policy version \(applied.version) is in force: \(applied.changes.count) change\(applied.changes.count == 1 ? "" : "s"), signed and in the ledger.")
            return Self.redirect("/console/policy" + Self.query([("city", form["city"]), ("dataset", form["dataset"])]))
        } catch let f as Failure where f.status == .badRequest {
            // Nothing the user typed is lost: the page comes back with the draft and the reasons.
            return try await policyPage(s, context, draft: document, city: form["city"], dataset: form["dataset"], error: f.message)
        }
    }

    // MARK: Ledger

    static let kinds: [String] = [
        "peer", "dataset", "record", "token", "node", "policy", "agreement", "exchange", "share",
        LedgerEntry.Kind.exchangeReceipt, LedgerEntry.Kind.exchangeRefused, LedgerEntry.Kind.policyApplied, LedgerEntry.Kind.policyDenied,
        LedgerEntry.Kind.agreementOffered, LedgerEntry.Kind.agreementAccepted, LedgerEntry.Kind.agreementRevoked, LedgerEntry.Kind.recordWritten,
        LedgerEntry.Kind.imported, LedgerEntry.Kind.peerForked, LedgerEntry.Kind.exchangeSent, LedgerEntry.Kind.exchangeReceived,
        LedgerEntry.Kind.shareRetracted,
    ]

    /// `datetime-local` gives 2026-11-30T08:15 or …:15:30; the console's times are UTC.
    static func utc(_ text: String?) -> String? {
        guard let t = text?.trimmingCharacters(in: .whitespaces), !t.isEmpty else { return nil }
        switch t.count {
        case 16: return t + ":00Z"
        case 19: return t + "Z"
        default: return t
        }
    }

    func ledger(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let q = request.uri.queryParameters
        let agreements: API.AgreementList? = try await optional("/v1/agreements", s, context)
        let chosen = q.get("agreement").flatMap { id in agreements?.agreements.first { $0.id == id } }
        if let id = q.get("agreement"), !id.isEmpty, chosen == nil {
            throw Failure(status: .notFound, code: "not_found", message: "no agreement \(id.prefix(16)) on this node: pick one from the list")
        }
        var peer = q.get("peer")
        if let a = chosen { peer = a.owner == city ? a.member : a.owner }
        let limit = 100
        let path = "/v1/audit/log" + Self.query([
            ("order", "newest"), ("limit", "\(limit)"), ("since", Self.utc(q.get("since"))), ("until", Self.utc(q.get("until"))),
            ("peer", peer), ("kind", q.get("kind")), ("dataset", q.get("dataset")), ("contains", chosen?.share), ("before", q.get("before")),
        ])
        let log: API.AuditLog = try await get(path, s, context)
        let checkpoint = try? await fetch(.get, "/v1/audit/checkpoint", s, context)
        let size = checkpoint.flatMap { String(buffer: $0).split(separator: "\n").dropFirst().first.flatMap { UInt64($0) } }
        let witnesses: API.Witnesses? = try? await get("/v1/audit/witnesses", s, context)
        let datasets: API.DatasetList = try await get("/v1/datasets", s, context)
        var peers = Set<String>()
        if let p: API.PeerList = try await optional("/v1/peers", s, context) { peers.formUnion(p.peers.map(\.city)) }
        peers.formUnion(agreements?.agreements.flatMap { [$0.owner, $0.member] } ?? [])
        peers.remove(city)
        let rows: [[String: Any]] = log.entries.map { e in
            var row: [String: Any] = [
                "index": "\(e.index)", "href": "/console/ledger/\(e.index)", "time": String(e.time.prefix(19)).replacingOccurrences(of: "T", with: " "),
                "kind": e.kind, "actor": e.actor, "peer": e.peer ?? "", "dataset": e.dataset ?? "",
                "summary": String((e.detail ?? e.reason ?? (e.counts.map { $0.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") } ?? "")).prefix(140)),
            ]
            if let size, e.index >= size { row["pending"] = true }
            return row
        }
        var data: [String: Any] = [
            "rows": rows, "none": rows.isEmpty,
            "since": q.get("since") ?? "", "until": q.get("until") ?? "",
            "peers": peers.sorted().map { ["name": $0, "selected": $0 == q.get("peer")] },
            "kinds": Self.kinds.map { ["name": $0, "selected": $0 == q.get("kind")] },
            "datasets": datasets.datasets.map { ["name": $0.id, "selected": $0.id == q.get("dataset")] },
            "agreements": (agreements?.agreements ?? []).map {
                ["id": $0.id, "label": "\($0.owner)/\($0.share) → \($0.member) (\($0.state))", "selected": $0.id == chosen?.id]
            },
            "witnessCount": "\(witnesses?.witnesses.count ?? 0)",
            "bundleHref": "/console/ledger/bundle",
        ]
        if let size { data["size"] = "\(size)" }
        if rows.count == limit, let last = log.entries.last {
            data["olderHref"] = "/console/ledger" + Self.query([
                ("since", q.get("since")), ("until", q.get("until")), ("peer", q.get("peer")), ("kind", q.get("kind")),
                ("dataset", q.get("dataset")), ("agreement", q.get("agreement")), ("before", "\(last.index)"),
            ])
        }
        if q.get("before") != nil { data["newestHref"] = "/console/ledger" + Self.query([("since", q.get("since")), ("until", q.get("until")), ("peer", q.get("peer")), ("kind", q.get("kind")), ("dataset", q.get("dataset")), ("agreement", q.get("agreement"))]) }
        return render(s, nav: "ledger", title: "Ledger", template: "ledger", data)
    }

    func entry(_ s: ConsoleSessions.Session, _ context: AdminContext) async throws -> Response {
        // Indices above 2^63 - 1 name no entry; refusing them keeps `index + 1` below in range.
        guard let index = context.parameters.get("index").flatMap({ UInt64($0) }), index < UInt64(Int64.max) else {
            throw Failure(status: .badRequest, code: "invalid_argument", message: "an entry is named by its index (0, 1, …): pick one from the ledger page")
        }
        let log: API.AuditLog = try await get("/v1/audit/log?order=newest&limit=1&before=\(index + 1)", s, context)
        guard let e = log.entries.first, e.index == index else {
            throw Failure(status: .notFound, code: "not_found", message: "the ledger has no entry \(index) yet")
        }
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data: [String: Any] = [
            "index": "\(index)", "kind": e.kind, "time": e.time, "actor": e.actor, "peer": e.peer ?? "—", "dataset": e.dataset ?? "—",
            "json": String(decoding: try pretty.encode(e), as: UTF8.self),
        ]
        if index > 0 { data["prevHref"] = "/console/ledger/\(index - 1)" }
        data["nextHref"] = "/console/ledger/\(index + 1)"
        do {
            let proof: API.InclusionProof = try await get("/v1/audit/prove?index=\(index)", s, context)
            let vkey = String(buffer: try await fetch(.get, "/v1/audit/vkey", s, context)).trimmingCharacters(in: .whitespacesAndNewlines)
            struct ProofData: Encodable {
                let index: UInt64
                let treeSize: UInt64
                let leafHash: String
                let proof: [String]
                let entryBytes: String
                let checkpoint: String
                let vkey: String
            }
            guard let checkpoint = proof.checkpoint, let bytes = proof.entryBytes else {
                throw Failure(status: .internalServerError, code: "internal", message: "the node sent a proof without its checkpoint")
            }
            let blob = try JSONEncoder().encode(ProofData(
                index: index, treeSize: proof.treeSize, leafHash: proof.leafHash, proof: proof.proof, entryBytes: bytes, checkpoint: checkpoint, vkey: vkey))
            // Inert data for console.js; `<` escaped so no text in an entry can end the script element.
            data["proofJSON"] = String(decoding: blob, as: UTF8.self).replacingOccurrences(of: "<", with: "\\u003c")
            data["treeSize"] = "\(proof.treeSize)"
            data["rootHash"] = proof.rootHash
            data["checkpoint"] = checkpoint
            data["vkey"] = vkey
            data["proofHashes"] = proof.proof.enumerated().map { ["n": "\($0.offset + 1)", "hash": $0.element] }
            data["proofCount"] = "\(proof.proof.count)"
        } catch let f as Failure where f.status == .badRequest || f.status == .notFound {
            data["unproven"] = "This entry is not in a signed checkpoint yet: the node signs one within seconds. Reload the page to see its proof."
        }
        return render(s, nav: "ledger", title: "Ledger entry \(index)", template: "entry", data)
    }

    func bundle(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let since = Self.utc(request.uri.queryParameters.get("since"))
        let buffer = try await fetch(.get, "/v1/audit/bundle" + Self.query([("since", since)]), s, context)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        let day = RFC3339.format(microseconds: Int64(admin.physicalMillis()) * 1000).prefix(10)
        headers[.contentDisposition] = "attachment; filename=\"\(city)-\(day).bundle\""
        return Self.secured(Response(status: .ok, headers: headers, body: .init(byteBuffer: buffer)))
    }

    // MARK: Activity

    func activity(_ s: ConsoleSessions.Session, _ request: Request, _ context: AdminContext) async throws -> Response {
        let days = Int(request.uri.queryParameters.get("days") ?? "7").flatMap { [1, 7, 30].contains($0) ? $0 : nil } ?? 7
        let nowMicros = Int64(admin.physicalMillis()) * 1000
        let span = Int64(days) * 86_400_000_000
        let start = nowMicros - span
        let log: API.AuditLog = try await get(
            "/v1/audit/log" + Self.query([("kind", LedgerEntry.Kind.exchangeReceipt), ("since", RFC3339.format(microseconds: start)), ("limit", "10000")]), s, context)
        let buckets = days == 1 ? 24 : (days == 7 ? 28 : 30)
        let width = span / Int64(buckets)
        struct Series { var sent = [Int](repeating: 0, count: 30); var received = [Int](repeating: 0, count: 30); var exchanges = 0 }
        var byShare: [String: Series] = [:], byPeer: [String: Series] = [:]
        for e in log.entries {
            guard let t = RFC3339.parse(e.time), t >= start else { continue }
            let b = min(buckets - 1, Int((t - start) / width))
            let records = e.counts?["records"] ?? 0
            let detail = e.detail ?? ""
            let share = detail.hasPrefix("share ") ? String(detail.dropFirst(6).prefix { $0 != ":" }) : "?"
            let sent = detail.contains(": sent to ")
            for key in [share] {
                // Counts come from peers' receipts: sums saturate rather than trap.
                if sent { byShare[key, default: Series()].sent[b].addSaturating(records) } else { byShare[key, default: Series()].received[b].addSaturating(records) }
                byShare[key, default: Series()].exchanges += 1
            }
            let peer = e.peer ?? "?"
            if sent { byPeer[peer, default: Series()].sent[b].addSaturating(records) } else { byPeer[peer, default: Series()].received[b].addSaturating(records) }
            byPeer[peer, default: Series()].exchanges += 1
        }
        func label(_ i: Int) -> String {
            let t = RFC3339.format(microseconds: start + Int64(i) * width)
            return days == 1 ? String(t.dropFirst(11).prefix(5)) : String(t.dropFirst(5).prefix(5))
        }
        func charts(_ series: [String: Series], _ kind: String) -> [[String: Any]] {
            series.keys.sorted().map { name in
                let s = series[name]!
                let points = (0..<buckets).map { (label($0), s.sent[$0], s.received[$0]) }
                return [
                    "name": name, "svg": ConsoleGraphics.barChart(title: "\(kind) \(name): records per \(days == 1 ? "hour" : (days == 7 ? "6 hours" : "day"))", points: points),
                    "sent": "\(s.sent.reduce(0) { $0.saturatingAdd($1) })", "received": "\(s.received.reduce(0) { $0.saturatingAdd($1) })", "exchanges": "\(s.exchanges)",
                ]
            }
        }
        let data: [String: Any] = [
            "shares": charts(byShare, "Share"), "peers": charts(byPeer, "Peer"), "none": log.entries.isEmpty,
            "hasShares": !byShare.isEmpty, "hasPeers": !byPeer.isEmpty,
            "ranges": [1, 7, 30].map { ["days": "\($0)", "label": $0 == 1 ? "24 hours" : "\($0) days", "current": $0 == days] },
            "receipts": "\(log.entries.count)", "truncated": log.entries.count == 10_000,
        ]
        return render(s, nav: "activity", title: "Exchange activity", template: "activity", data)
    }

    // MARK: Reconcile

    func reconcile(_ s: ConsoleSessions.Session, _ upload: Upload) async throws -> Response {
        guard let ca = admin.certificates?.ca else {
            throw Failure(status: .serviceUnavailable, code: "node_not_running", message: "this node has no federation CA certificate to check bundles against")
        }
        let trusted = try PEM.certificates(ca, what: "the node's CA certificate")
        var sides: [(AuditBundle, AuditBundle.Report)] = []
        for (field, label) in [("a", "the first bundle"), ("b", "the second bundle")] {
            // One bundle in memory at a time, read from the file its field was streamed into.
            let data = try upload.files[field].map { try Data(contentsOf: $0) } ?? Data()
            guard data.contains(where: { !Character(UnicodeScalar($0)).isWhitespace }) else {
                return render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", ["error": "choose two bundle files (exported with 'citymesh audit export' or this console's Ledger page)"], status: .badRequest)
            }
            do {
                let bundle = try JSONDecoder().decode(AuditBundle.self, from: data)
                guard try PEM.certificates(bundle.caCertificate, what: label) == trusted else {
                    throw CityMeshError(.certificateForeignCA, "\(label) comes from another federation (its CA is not this node's CA)")
                }
                sides.append((bundle, try await bundle.verify(now: Date())))
            } catch let e as DecodingError {
                return render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", ["error": "\(label) is not an audit bundle: \(JSONErrorMiddleware.describe(e))"], status: .badRequest)
            } catch {
                return render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", ["error": "\(label) does not verify, so it cannot be reconciled: \(error)"], status: .badRequest)
            }
        }
        let (a, ra) = sides[0], (b, rb) = sides[1]
        guard ra.city != rb.city else {
            return render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", ["error": "both bundles are \(ra.city)'s ledger: choose one bundle of each city"], status: .badRequest)
        }
        let result = Reconciliation.compare(
            a: (ra.city, ra.entries, try PEM.certificates(a.nodeCertificate, what: "the first bundle")[0]),
            b: (rb.city, rb.entries, try PEM.certificates(b.nodeCertificate, what: "the second bundle")[0]),
            complete: a.complete && b.complete)
        func rows(_ x: [Reconciliation.Exchange]) -> [[String: Any]] {
            x.map { ["at": String($0.at.prefix(19)), "share": $0.share, "sender": $0.sender, "receiver": $0.receiver, "records": "\($0.records)", "receipt": String($0.receipt.prefix(16))] }
        }
        var data: [String: Any] = [
            "done": true, "a": result.a, "b": result.b, "clean": result.isClean, "matched": "\(result.matched.count)",
            "records": "\(result.matched.reduce(0) { $0.saturatingAdd($1.records) })",
            "onlyInA": rows(result.onlyInA), "onlyInB": rows(result.onlyInB), "invalid": (result.invalid + result.receivedNotSent + result.outsideAgreement.map { "outside any active agreement: \($0.exchange.sender) → \($0.exchange.receiver) at \($0.exchange.at.prefix(19)), receipt \($0.exchange.receipt.prefix(16)): \($0.why)" }).map { ["text": $0] },
            "hasInvalid": !result.invalid.isEmpty || !result.outsideAgreement.isEmpty || !result.receivedNotSent.isEmpty,
            "reports": [(a, ra), (b, rb)].map { bundle, r in
                ["city": r.city.rawValue, "size": "\(r.checkpoint.size)", "entries": "\(r.entries.count)", "complete": bundle.complete,
                 "warnings": r.warnings.map { ["text": $0] }] as [String: Any]
            },
        ]
        if result.onlyInA.isEmpty { data["noneOnlyInA"] = true }
        if result.onlyInB.isEmpty { data["noneOnlyInB"] = true }
        return render(s, nav: "reconcile", title: "Reconcile two cities' ledgers", template: "reconcile", data)
    }
}
