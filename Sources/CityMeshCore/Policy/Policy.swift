public import Foundation
import Yams

/// A city's sharing policy, as its data admins write it in YAML (docs/policy.md): the shares it
/// offers of its own datasets, and the shares of other cities it accepts. Default deny: nothing
/// leaves the node unless a share allows it.
public struct Policy: Sendable, Equatable {
    public enum OnRevoke: String, Sendable, Equatable, Codable { case keep, purge }

    public struct Share: Sendable, Equatable {
        /// Unique within the owner's policy; `<owner>/<id>` names it across the federation.
        public var id: String
        /// The owner's dataset (by name; the owner is the city whose policy this is).
        public var dataset: String
        public var to: [CitySlug]
        /// The view: the only fields that leave the node.
        public var fields: [String]
        /// The row filter's text, if any (checked against the schema into a `RowFilter`).
        public var filter: String?
        /// Fields members may write (a subset of `fields`).
        public var write: [String]
        public var purpose: String
        public var legalBasis: String
        /// Microseconds since the epoch; the share is valid while `validFrom ≤ now < validUntil`.
        public var validFrom: Int64?
        public var validUntil: Int64
        /// The text of `valid_until` as written (a date is valid through that day, UTC).
        public var validUntilText: String
        public var onRevoke: OnRevoke
    }

    public struct Accept: Sendable, Equatable, Hashable {
        public var from: CitySlug
        public var share: String
    }

    public var shares: [Share]
    public var accept: [Accept]

    public init(shares: [Share] = [], accept: [Accept] = []) {
        self.shares = shares
        self.accept = accept
    }

    public func share(_ id: String) -> Share? { shares.first { $0.id == id } }
}

/// One problem in a policy file: where (1-based line and column), what, and what to write instead.
public struct PolicyIssue: Sendable, Equatable, CustomStringConvertible, Codable {
    public let line: Int
    public let column: Int
    public let message: String

    public init(line: Int, column: Int, _ message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "\(line):\(column): \(message)" }
}

/// Every problem found in a policy file, in file order.
public struct PolicyIssues: Error, Sendable, Equatable, CustomStringConvertible {
    public let issues: [PolicyIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// What a policy is checked against: the owner, its datasets' schemas, and the time.
public struct PolicyContext: Sendable {
    public let city: CitySlug
    /// The owner's datasets by name.
    public let datasets: [String: Schema]
    /// Microseconds since the epoch.
    public let now: Int64

    public init(city: CitySlug, datasets: [String: Schema], now: Int64) {
        self.city = city
        self.datasets = datasets
        self.now = now
    }
}

extension Policy {
    static let shareKeys = ["id", "dataset", "to", "fields", "where", "write", "purpose", "legal_basis", "valid_from", "valid_until", "on_revoke"]
    static let acceptKeys = ["from", "share"]
    static let topKeys = ["shares", "accept"]

    /// Parses and checks a policy file. Every problem is reported (not just the first), each with
    /// its line and column; the policy is returned only if there are none.
    public static func load(yaml text: String, context: PolicyContext) throws(PolicyIssues) -> Policy {
        var loader = Loader(context: context)
        let policy = loader.load(text)
        if loader.issues.isEmpty, let policy { return policy }
        throw PolicyIssues(issues: loader.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
    }

    struct Loader {
        let context: PolicyContext
        var issues: [PolicyIssue] = []

        mutating func issue(_ node: Node?, _ message: String, offset: Int = 0) {
            issues.append(PolicyIssue(line: node?.mark?.line ?? 1, column: (node?.mark?.column ?? 1) + offset, message))
        }

        func suggestion(_ word: String, _ among: [String]) -> String {
            if let close = Spelling.nearest(word, in: among, within: 2) { return "did you mean '\(close)'?" }
            return "expected one of: \(among.joined(separator: ", "))"
        }

        /// The pairs of a mapping, reporting keys that are not `allowed` or appear twice.
        mutating func pairs(_ node: Node, allowed: [String], what: String) -> [String: (key: Node, value: Node)] {
            guard case .mapping(let mapping) = node else {
                issue(node, "\(what) must be a mapping of keys (\(allowed.joined(separator: ", ")))")
                return [:]
            }
            var out: [String: (key: Node, value: Node)] = [:]
            for (k, v) in mapping {
                guard case .scalar(let s) = k else { issue(k, "a key must be plain text"); continue }
                if !allowed.contains(s.string) {
                    issue(k, "unknown key '\(s.string)' in \(what): \(suggestion(s.string, allowed))")
                } else if out[s.string] != nil {
                    issue(k, "'\(s.string)' is given twice in \(what): keep one")
                } else {
                    out[s.string] = (k, v)
                }
            }
            return out
        }

        mutating func string(_ node: Node?, _ key: String, in owner: Node, required: Bool = true) -> String? {
            guard let node else {
                if required { issue(owner, "'\(key)' is missing: every share states it") }
                return nil
            }
            guard case .scalar(let s) = node, s.tag.description.hasSuffix(":str") || s.style != .plain || !["~", "null", ""].contains(s.string) else {
                issue(node, "'\(key)' must be text")
                return nil
            }
            let text = s.string.trimmingCharacters(in: .whitespacesAndNewlines)
            if required, text.isEmpty { issue(node, "'\(key)' is empty: write it out") }
            return text
        }

        mutating func list(_ node: Node?, _ key: String, in owner: Node, required: Bool) -> [(String, Node)]? {
            guard let node else {
                if required { issue(owner, "'\(key)' is missing") }
                return nil
            }
            if case .scalar(let s) = node, s.style == .plain {
                // A single value instead of a list: `to: shanghai` means `to: [shanghai]`.
                return [(s.string, node)]
            }
            guard case .sequence(let seq) = node else {
                issue(node, "'\(key)' must be a list, e.g. [a, b]")
                return nil
            }
            var out: [(String, Node)] = []
            for item in seq {
                guard case .scalar(let s) = item else { issue(item, "each item of '\(key)' must be plain text"); continue }
                out.append((s.string, item))
            }
            return out
        }

        /// A date (valid through that day, UTC) or an RFC 3339 time.
        mutating func time(_ node: Node, _ key: String, endOfDay: Bool) -> Int64? {
            guard case .scalar(let s) = node else {
                issue(node, "'\(key)' must be a date such as 2027-12-31")
                return nil
            }
            let text = s.string
            if text.utf8.count == 10, let day = RFC3339.parse(text + "T00:00:00Z") {
                return endOfDay ? day + 86_400_000_000 : day
            }
            if let t = RFC3339.parse(text) { return t }
            issue(node, "'\(text)' is not a date: write \(key): 2027-12-31 (or an RFC 3339 time such as 2027-12-31T16:00:00Z)")
            return nil
        }

        mutating func load(_ text: String) -> Policy? {
            let root: Node?
            do { root = try UntrustedYAML.compose(text) } catch let problem as UntrustedYAML.Problem {
                issues.append(PolicyIssue(line: problem.line, column: problem.column, problem.message))
                return nil
            } catch let e as YamlError {
                let (line, column, message) = Self.describe(e)
                issues.append(PolicyIssue(line: line, column: column, "not valid YAML: \(message)"))
                return nil
            } catch {
                issues.append(PolicyIssue(line: 1, column: 1, "not valid YAML: \(error)"))
                return nil
            }
            guard let root else {
                issues.append(PolicyIssue(line: 1, column: 1, "the policy is empty: write 'shares:' and/or 'accept:' (see docs/policy.md)"))
                return nil
            }

            let top = pairs(root, allowed: Policy.topKeys, what: "the policy")
            var policy = Policy()
            var loadedShares: [(Share, Node)] = []
            var loadedAccepts: [(Accept, Node)] = []
            if let sharesNode = top["shares"]?.value {
                if case .sequence(let seq) = sharesNode {
                    for item in seq { if let share = self.share(item) { loadedShares.append((share, item)) } }
                } else if case .scalar(let s) = sharesNode, s.string.isEmpty || s.string == "~" || s.string == "null" {
                    // `shares:` with nothing under it: no shares.
                } else {
                    issue(sharesNode, "'shares' must be a list of shares, each starting with '- id: …'")
                }
            }
            if let acceptNode = top["accept"]?.value {
                if case .sequence(let seq) = acceptNode {
                    for item in seq { if let a = self.accept(item) { loadedAccepts.append((a, item)) } }
                } else if case .scalar(let s) = acceptNode, s.string.isEmpty || s.string == "~" || s.string == "null" {
                } else {
                    issue(acceptNode, "'accept' must be a list of '- from: CITY' / 'share: ID' pairs")
                }
            }
            checkAcrossShares(loadedShares, loadedAccepts)
            policy.shares = loadedShares.map(\.0)
            policy.accept = loadedAccepts.map(\.0)
            return policy
        }

        mutating func share(_ node: Node) -> Share? {
            let p = pairs(node, allowed: Policy.shareKeys, what: "a share")
            guard case .mapping = node else { return nil }
            let before = issues.count
            let id = string(p["id"]?.value, "id", in: node) ?? ""
            if let idNode = p["id"]?.value, !id.isEmpty, !Self.isValidID(id) {
                issue(idNode, "the share id '\(id)' must be 1–64 lowercase letters, digits and '-', starting with a letter (e.g. delta-air)")
            }
            let datasetName = string(p["dataset"]?.value, "dataset", in: node) ?? ""
            var schema: Schema?
            if let dsNode = p["dataset"]?.value, !datasetName.isEmpty {
                let name = datasetName.hasPrefix("\(context.city)/") ? String(datasetName.dropFirst(context.city.rawValue.count + 1)) : datasetName
                if name.contains("/") {
                    issue(dsNode, "'\(datasetName)' is another city's dataset: a city shares only its own (write the name, e.g. air-quality)")
                } else if let s = context.datasets[name] {
                    schema = s
                } else {
                    let names = context.datasets.keys.sorted()
                    issue(dsNode, "this node has no dataset '\(name)': " + (names.isEmpty ? "create it first with 'citymesh dataset create'" : suggestion(name, names)))
                }
            }
            let dataset = datasetName.hasPrefix("\(context.city)/") ? String(datasetName.dropFirst(context.city.rawValue.count + 1)) : datasetName

            var members: [CitySlug] = []
            for (text, item) in list(p["to"]?.value, "to", in: node, required: true) ?? [] {
                guard let city = try? CitySlug(text) else {
                    issue(item, "'\(text)' is not a city name: lowercase letters, digits and '-' (e.g. shanghai)")
                    continue
                }
                if city == context.city {
                    issue(item, "a share to '\(city)' itself: this is \(city)'s own policy; list other cities")
                } else if members.contains(city) {
                    issue(item, "'\(city)' is listed twice")
                } else {
                    members.append(city)
                }
            }
            if let toNode = p["to"]?.value, members.isEmpty, issues.count == before { issue(toNode, "'to' is empty: list the cities this share is for") }

            var fields: [String] = []
            for (name, item) in list(p["fields"]?.value, "fields", in: node, required: true) ?? [] {
                if let schema, schema.field(named: name) == nil {
                    issue(item, "'\(dataset)' has no field '\(name)': \(suggestion(name, schema.fields.map(\.name)))")
                } else if fields.contains(name) {
                    issue(item, "'\(name)' is listed twice")
                } else {
                    fields.append(name)
                }
            }
            if let schema, let fNode = p["fields"]?.value, !fields.isEmpty, !fields.contains(schema.keyField) {
                issue(fNode, "the view must include the key field '\(schema.keyField)': records are matched by it; add it to 'fields'")
            }

            var write: [String] = []
            for (name, item) in list(p["write"]?.value, "write", in: node, required: false) ?? [] {
                if let schema, schema.field(named: name) == nil {
                    issue(item, "'\(dataset)' has no field '\(name)': \(suggestion(name, schema.fields.map(\.name)))")
                } else if !fields.contains(name), schema != nil {
                    issue(item, "members may write '\(name)' but cannot see it: add it to 'fields' or remove it from 'write'")
                } else if let schema, name == schema.keyField {
                    issue(item, "the key field '\(name)' cannot be written by members: it names the record")
                } else if !write.contains(name) {
                    write.append(name)
                }
            }

            var filterText: String?
            if let wNode = p["where"]?.value, let text = string(wNode, "where", in: node) {
                filterText = text
                if let schema {
                    do { _ = try RowFilter(text, schema: schema) } catch {
                        // Point at the character in the file: a quoted scalar starts one column later.
                        var offset = error.offset
                        if case .scalar(let s) = wNode, s.style == .singleQuoted || s.style == .doubleQuoted { offset += 1 }
                        issue(wNode, "in 'where': \(error.message)", offset: offset)
                    }
                    if let f = try? RowFilter(text, schema: schema) {
                        for name in f.fields.sorted() where !fields.contains(name) {
                            issue(wNode, "the filter reads '\(name)', which is not in the view: members could learn it from which rows they get; add it to 'fields' or filter on a shared field")
                        }
                    }
                }
            }

            let purpose = string(p["purpose"]?.value, "purpose", in: node) ?? ""
            let legalBasis = string(p["legal_basis"]?.value, "legal_basis", in: node) ?? ""
            var validFrom: Int64?
            if let n = p["valid_from"]?.value { validFrom = time(n, "valid_from", endOfDay: false) }
            var validUntil: Int64 = 0
            var untilText = ""
            if let n = p["valid_until"]?.value {
                if case .scalar(let s) = n { untilText = s.string }
                if let t = time(n, "valid_until", endOfDay: true) {
                    validUntil = t
                    if t <= context.now {
                        issue(n, "valid_until \(untilText) is in the past: the share would be expired already; give a later date")
                    }
                    if let validFrom, validFrom >= t { issue(n, "valid_until \(untilText) is not after valid_from") }
                }
            } else {
                issue(node, "'valid_until' is missing: every share ends (e.g. valid_until: 2027-12-31)")
            }
            var onRevoke = OnRevoke.keep
            if let n = p["on_revoke"]?.value {
                if case .scalar(let s) = n, let v = OnRevoke(rawValue: s.string) {
                    onRevoke = v
                } else {
                    issue(n, "on_revoke is 'keep' (members keep what they received) or 'purge' (members delete it)")
                }
            } else {
                issue(node, "'on_revoke' is missing: write on_revoke: keep or on_revoke: purge")
            }
            guard issues.count == before else { return nil }
            return Share(
                id: id, dataset: dataset, to: members, fields: fields, filter: filterText, write: write, purpose: purpose, legalBasis: legalBasis,
                validFrom: validFrom, validUntil: validUntil, validUntilText: untilText, onRevoke: onRevoke)
        }

        mutating func accept(_ node: Node) -> Accept? {
            let p = pairs(node, allowed: Policy.acceptKeys, what: "an accept rule")
            guard case .mapping = node else { return nil }
            let before = issues.count
            let from = string(p["from"]?.value, "from", in: node) ?? ""
            let share = string(p["share"]?.value, "share", in: node) ?? ""
            var city: CitySlug?
            if let n = p["from"]?.value, !from.isEmpty {
                if let c = try? CitySlug(from) {
                    if c == context.city { issue(n, "'accept' is for other cities' shares; \(c)'s own shares need no acceptance") } else { city = c }
                } else {
                    issue(n, "'\(from)' is not a city name: lowercase letters, digits and '-'")
                }
            }
            if let n = p["share"]?.value, !share.isEmpty, !Self.isValidID(share) {
                issue(n, "the share id '\(share)' must be lowercase letters, digits and '-', as the owner wrote it")
            }
            guard issues.count == before, let city else { return nil }
            return Accept(from: city, share: share)
        }

        /// Rules that involve more than one share, reported at the later of the two.
        mutating func checkAcrossShares(_ shares: [(Share, Node)], _ accepts: [(Accept, Node)]) {
            var ids: Set<String> = []
            var seen: [String: String] = [:]  // "dataset city" -> share id
            for (share, node) in shares {
                if !ids.insert(share.id).inserted {
                    issue(node, "two shares are called '\(share.id)': share ids must be unique")
                }
                for city in share.to {
                    if let other = seen["\(share.dataset) \(city)"], other != share.id {
                        issue(node, "\(city) is in both '\(other)' and '\(share.id)' for dataset '\(share.dataset)': a city gets one view of a dataset; merge the two shares")
                    }
                    seen["\(share.dataset) \(city)"] = share.id
                }
            }
            var accepted: Set<Accept> = []
            for (a, node) in accepts where !accepted.insert(a).inserted {
                issue(node, "'\(a.from)/\(a.share)' is accepted twice: keep one")
            }
        }

        static func isValidID(_ id: String) -> Bool {
            let b = Array(id.utf8)
            guard (1...64).contains(b.count), let first = b.first, (97...122).contains(first) else { return false }
            return b.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == UInt8(ascii: "-") }
        }

        static func describe(_ error: YamlError) -> (Int, Int, String) {
            switch error {
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _), .composer(let context, let problem, let mark, _):
                return (mark.line, mark.column, [context?.text, problem].compactMap { $0 }.joined(separator: ": "))
            default:
                return (1, 1, "\(error)")
            }
        }
    }
}
