import Foundation
import Testing
@testable import CityMeshCore

/// Policies: loading with every mistake found at its line and column, the evaluator's decisions, and diffs.
@Suite("Sharing policies")
struct PolicyTests {
    static let hz = try! CitySlug("hangzhou")
    static let sh = try! CitySlug("shanghai")
    static let sz = try! CitySlug("suzhou")
    static let nj = try! CitySlug("nanjing")
    static let air = try! Schema(keyField: "station", fields: [
        ("station", .string), ("district", .string), ("pm25", .double), ("measured_at", .timestamp), ("operator_phone", .string),
    ])
    static let registry = try! Schema(keyField: "id", fields: [("id", .string), ("name", .string), ("status", .string)])
    static let now = RFC3339.parse("2026-11-29T08:00:00Z")!
    static let context = PolicyContext(city: hz, datasets: ["air-quality": air, "registry": registry], now: now)

    static let good = """
        # hz-policy.yaml — kept by hangzhou's data admins
        shares:
          - id: delta-air
            dataset: air-quality
            to: [shanghai, suzhou]
            fields: [station, district, pm25, measured_at]        # the view
            where: "district != 'Restricted' and pm25 >= 0"
            write: []
            purpose: "regional air-quality forecasting"
            legal_basis: "Yangtze Delta environmental data agreement 2026-07"
            valid_until: 2027-12-31
            on_revoke: keep
          - id: registry-rw
            dataset: registry
            to: shanghai
            fields: [id, name, status]
            write: [status]
            purpose: co-maintained enterprise registry
            legal_basis: "Delta registry MoU"
            valid_from: 2026-01-01
            valid_until: 2027-06-30T00:00:00+08:00
            on_revoke: purge
        accept:
          - from: shanghai
            share: sh-enterprises

        """

    static func load(_ text: String) throws(PolicyIssues) -> Policy { try Policy.load(yaml: text, context: context) }

    @Test("a good policy loads with every field as written")
    func loads() throws {
        let p = try Self.load(Self.good)
        #expect(p.shares.count == 2)
        let air = try #require(p.share("delta-air"))
        #expect(air.to == [Self.sh, Self.sz])
        #expect(air.fields == ["station", "district", "pm25", "measured_at"])
        #expect(air.filter == "district != 'Restricted' and pm25 >= 0")
        #expect(air.write.isEmpty && air.onRevoke == .keep)
        #expect(air.validUntil == RFC3339.parse("2028-01-01T00:00:00Z"), "a date is valid through that day")
        let reg = try #require(p.share("registry-rw"))
        #expect(reg.to == [Self.sh] && reg.write == ["status"] && reg.onRevoke == .purge)
        #expect(reg.validUntil == RFC3339.parse("2027-06-29T16:00:00Z"))
        #expect(p.accept == [Policy.Accept(from: Self.sh, share: "sh-enterprises")])
        #expect(try Self.load("shares:\naccept:\n") == Policy())
    }

    /// Replaces `old` with `new` in the good policy.
    static func bad(_ old: String, _ new: String) -> String {
        precondition(good.contains(old), old)
        return good.replacingOccurrences(of: old, with: new)
    }

    @Test("each mistake is reported at its line and column, saying what to write instead", arguments: [
        (bad("dataset: air-quality", "dataset: air-qualty"), 4, 14, "did you mean 'air-quality'?"),
        (bad("dataset: air-quality", "dataset: shanghai/air"), 4, 14, "another city's dataset"),
        (bad("[shanghai, suzhou]", "[shanghai, hangzhou]"), 5, 20, "itself"),
        (bad("[shanghai, suzhou]", "[shanghai, Suzhou!]"), 5, 20, "not a city name"),
        (bad("[shanghai, suzhou]", "[shanghai, shanghai]"), 5, 20, "listed twice"),
        (bad("fields: [station, district, pm25, measured_at]", "fields: [station, district, pm2.5]"), 6, 33, "has no field 'pm2.5'"),
        (bad("fields: [station, district, pm25, measured_at]", "fields: [district, pm25]"), 6, 13, "key field 'station'"),
        // The column of the bad value inside the quoted filter.
        (bad("\"district != 'Restricted' and pm25 >= 0\"", "\"district != 'Restricted' and pm25 >= 'high'\""), 7, 50, "double field"),
        (bad("\"district != 'Restricted' and pm25 >= 0\"", "district = 'X' and pm25 >= 0 and pm25 <= 'x'"), 7, 53, "double field"),
        (bad("\"district != 'Restricted' and pm25 >= 0\"", "\"operator_phone != ''\""), 7, 12, "not in the view"),
        (bad("write: []", "write: [pm25, operator_phone]"), 8, 19, "cannot see it"),
        (bad("write: [status]", "write: [id]"), 17, 13, "key field 'id' cannot be written"),
        (bad("valid_until: 2027-12-31", "valid_until: 2025-12-31"), 11, 18, "in the past"),
        (bad("valid_until: 2027-12-31", "valid_until: next year"), 11, 18, "not a date"),
        (bad("    valid_until: 2027-12-31\n", ""), 3, 5, "'valid_until' is missing"),
        (bad("on_revoke: keep", "on_revoke: forget"), 12, 16, "'keep'"),
        (bad("purpose: \"regional air-quality forecasting\"", "purpose: \"\""), 9, 14, "empty"),
        (bad("    legal_basis: \"Yangtze", "    legal_base: \"Yangtze"), 10, 5, "did you mean 'legal_basis'?"),
        (bad("id: registry-rw", "id: delta-air"), 13, 5, "unique"),
        (bad("id: registry-rw", "id: Registry RW"), 13, 9, "lowercase letters"),
        (bad("accept:", "  - id: air-2\n    dataset: air-quality\n    to: [suzhou]\n    fields: [station]\n    purpose: p\n    legal_basis: b\n    valid_until: 2027-01-01\n    on_revoke: keep\naccept:"),
         23, 5, "suzhou is in both 'delta-air' and 'air-2'"),
        (bad("- from: shanghai", "- from: hangzhou"), 24, 11, "own shares need no acceptance"),
        (bad("accept:", "acept:"), 23, 1, "did you mean 'accept'?"),
        (bad("    share: sh-enterprises", "    share: sh-enterprises\n  - from: shanghai\n    share: sh-enterprises"), 26, 5, "accepted twice"),
        (bad("to: [shanghai, suzhou]", "to: [shanghai, suzhou"), 6, 11, "not valid YAML"),
        (bad("valid_from: 2026-01-01", "valid_from: 2028-01-01"), 21, 18, "not after valid_from"),
        (bad("to: shanghai\n", "to: [shanghai, 7]\n"), 15, 20, "not a city name"),
    ])
    func mistakes(text: String, line: Int, column: Int, says: String) {
        do {
            _ = try Self.load(text)
            Issue.record("accepted; expected \(line):\(column) \(says)")
        } catch {
            let hit = error.issues.first { $0.message.contains(says) }
            #expect(hit != nil, "no issue says '\(says)': \(error)")
            #expect(hit.map { ($0.line, $0.column) } ?? (0, 0) == (line, column), "\(error)")
        }
    }

    @Test("several mistakes are all reported at once, in file order")
    func allAtOnce() {
        let text = Self.bad("dataset: air-quality", "dataset: nope").replacingOccurrences(of: "on_revoke: purge", with: "on_revoke: never")
        #expect(throws: PolicyIssues.self) { try Self.load(text) }
        do { _ = try Self.load(text) } catch {
            #expect(error.issues.count == 2)
            #expect(error.issues.map(\.line) == [4, 22])
        }
        #expect(throws: PolicyIssues.self) { try Self.load("") }
        #expect(throws: PolicyIssues.self) { try Self.load("- just\n- a list\n") }
    }

    // MARK: Evaluation

    static func engine() throws -> PolicyEngine {
        try PolicyEngine(city: hz, policy: try load(good), schemas: context.datasets)
    }

    static let all: PolicyEngine.Accepted = { _, _ in true }
    static let none: PolicyEngine.Accepted = { _, _ in false }
    static let row: [String: Value] = ["station": .string("S-1"), "district": .string("Xihu"), "pm25": .double(41.5), "operator_phone": .string("+86 571 0000")]

    @Test("view: default deny, acceptance, validity window, row filter, and exactly the view's fields")
    func views() throws {
        let e = try Self.engine()
        let value: (String) -> Value? = { Self.row[$0] }
        #expect(e.view(dataset: "air-quality", for: Self.sh, now: Self.now, accepted: Self.all, value: value) == .success(["station", "district", "pm25", "measured_at"]))
        #expect(e.view(dataset: "air-quality", for: Self.nj, now: Self.now, accepted: Self.all, value: value) == .failure(.noShare(dataset: "air-quality", city: Self.nj)))
        #expect(e.view(dataset: "air-quality", for: Self.sh, now: Self.now, accepted: Self.none, value: value) == .failure(.notAccepted(share: "delta-air", city: Self.sh)))
        #expect(e.view(dataset: "air-quality", for: Self.sh, now: RFC3339.parse("2028-01-01T00:00:00Z")!, accepted: Self.all, value: value)
            == .failure(.expired(share: "delta-air", until: RFC3339.parse("2028-01-01T00:00:00Z")!)))
        #expect(e.view(dataset: "registry", for: Self.sh, now: RFC3339.parse("2025-12-31T23:59:59Z")!, accepted: Self.all, value: { _ in nil })
            == .failure(.notYetValid(share: "registry-rw", from: RFC3339.parse("2026-01-01T00:00:00Z")!)))
        var restricted = Self.row
        restricted["district"] = .string("Restricted")
        #expect(e.view(dataset: "air-quality", for: Self.sz, now: Self.now, accepted: Self.all, value: { restricted[$0] })
            == .failure(.rowFiltered(share: "delta-air", filter: "district != 'Restricted' and pm25 >= 0")))
        var noReading = Self.row
        noReading["pm25"] = nil
        #expect(e.view(dataset: "air-quality", for: Self.sz, now: Self.now, accepted: Self.all, value: { noReading[$0] }).isFailure, "unknown is not true")
        #expect(e.view(dataset: "registry", for: Self.sz, now: Self.now, accepted: Self.all, value: { _ in nil }) == .failure(.noShare(dataset: "registry", city: Self.sz)))
        #expect(e.view(dataset: "unknown", for: Self.sh, now: Self.now, accepted: Self.all, value: { _ in nil }).isFailure)
    }

    @Test("mayWrite: only granted fields of visible records, only while the share is in force")
    func writes() throws {
        let e = try Self.engine()
        let rec: [String: Value] = ["id": .string("E-1"), "name": .string("Acme"), "status": .string("active")]
        #expect(e.mayWrite(dataset: "registry", member: Self.sh, field: "status", now: Self.now, accepted: Self.all, value: { rec[$0] }).isSuccess)
        #expect(e.mayWrite(dataset: "registry", member: Self.sh, field: "name", now: Self.now, accepted: Self.all, value: { rec[$0] })
            == .failure(.fieldNotWritable(share: "registry-rw", field: "name")))
        #expect(e.mayWrite(dataset: "registry", member: Self.sh, field: "secret", now: Self.now, accepted: Self.all, value: { rec[$0] })
            == .failure(.fieldNotInView(share: "registry-rw", field: "secret")))
        #expect(e.mayWrite(dataset: "air-quality", member: Self.sh, field: "pm25", now: Self.now, accepted: Self.all, value: { Self.row[$0] })
            == .failure(.fieldNotWritable(share: "delta-air", field: "pm25")))
        #expect(e.mayWrite(dataset: "registry", member: Self.sz, field: "status", now: Self.now, accepted: Self.all, value: { rec[$0] }).isFailure)
        #expect(e.mayWrite(dataset: "registry", member: Self.sh, field: "status", now: Self.now, accepted: Self.none, value: { rec[$0] }).isFailure)
    }

    @Test("explain: every field with its access and the rule that decides it")
    func explains() throws {
        let e = try Self.engine()
        let x = e.explain(dataset: "air-quality", for: Self.sh, now: Self.now, accepted: Self.none)
        #expect(x.share == "delta-air" && !x.active)
        #expect(x.decision.contains("has not accepted"))
        #expect(x.fields.map(\.access) == ["read", "read", "read", "read", "none"])
        #expect(x.fields.last?.rule.contains("never leaves the node") == true)
        #expect(x.filter == "district != 'Restricted' and pm25 >= 0" && x.validUntil == "2027-12-31" && x.onRevoke == "keep")
        let rw = e.explain(dataset: "registry", for: Self.sh, now: Self.now, accepted: Self.all)
        #expect(rw.active && rw.fields.map(\.access) == ["read", "read", "read-write"])
        let nobody = e.explain(dataset: "registry", for: Self.nj, now: Self.now, accepted: Self.all)
        #expect(!nobody.active && nobody.share == nil && nobody.fields.allSatisfy { $0.access == "none" })
        #expect(nobody.decision.contains("denied by default"))
    }

    @Test("diff: per share and per city, and nothing when nothing changed")
    func diffs() throws {
        let old = try Self.load(Self.good)
        #expect(PolicyDiff.between(old, old).isEmpty)
        let new = try Self.load(Self.bad("[shanghai, suzhou]", "[shanghai, nanjing]")
            .replacingOccurrences(of: "fields: [station, district, pm25, measured_at]", with: "fields: [station, district, pm25]")
            .replacingOccurrences(of: "write: [status]", with: "write: [status, name]"))
        let lines = PolicyDiff.between(old, new).map(\.description)
        #expect(lines.contains("delta-air: fields removed from the view: measured_at"))
        #expect(lines.contains("delta-air [nanjing]: added: will be offered 'air-quality'"))
        #expect(lines.contains("delta-air [suzhou]: removed: loses 'air-quality'"))
        #expect(lines.contains("registry-rw: members may now write: name"))
        #expect(lines.count == 4, "\(lines)")
        let first = PolicyDiff.between(nil, old).map(\.description)
        #expect(first.contains("delta-air [shanghai]: will be offered 'air-quality' (read)"))
        #expect(first.contains("registry-rw [shanghai]: will be offered 'registry' (read-write on status)"))
        #expect(first.contains("accept [shanghai]: will accept 'shanghai/sh-enterprises'"))
        #expect(PolicyDiff.between(old, Policy()).contains { $0.description == "delta-air: removed: the share is revoked (on_revoke: keep)" })
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var isFailure: Bool { !isSuccess }
}
