import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshStore
import Foundation

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "The sharing policy: what this city shares, with whom, and why (docs/policy.md).",
        discussion: """
            Example:
              citymesh policy validate --dir hz hz-policy.yaml
              citymesh policy diff --dir hz hz-policy.yaml
              citymesh policy apply --dir hz hz-policy.yaml
              citymesh policy explain --dir hz --city shanghai --dataset air-quality
            """,
        subcommands: [PolicyValidate.self, PolicyDiffCommand.self, PolicyApply.self, PolicyShowCommand.self, PolicyExplain.self, PolicyPreview.self])
}

/// Reads a policy file, or says how to get one.
func readPolicyFile(_ path: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CityMeshError(.fileNotFound, "cannot read '\(path)': give the path of a policy YAML file (docs/policy.md has an example)")
    }
    guard let text = String(data: data, encoding: .utf8) else { throw CityMeshError(.invalidUTF8, "'\(path)' is not UTF-8 text") }
    return text
}

/// Checks a file with the node (against its datasets) and prints every problem as FILE:LINE:COLUMN.
func checkPolicy(_ client: AdminClient, file: String) async throws -> API.PolicyCheck {
    let check: API.PolicyCheck = try await client.postText("/v1/policy/check", text: try readPolicyFile(file))
    for issue in check.issues { Terminal.note("\(file):\(issue.line):\(issue.column): error: \(issue.message)") }
    for warning in check.warnings { Terminal.note("\(file): warning: \(warning)") }
    return check
}

func printChanges(_ changes: [PolicyDiff.Change]) {
    for c in changes { print("  \(c.subject)\(c.city.map { " → \($0)" } ?? ""): \(c.what)") }
}

struct PolicyValidate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a policy file against this node's datasets; every problem with its line and column.",
        discussion: """
            Example:
              citymesh policy validate --dir hz hz-policy.yaml

            Exits 0 if the file can be applied, 1 otherwise. Nothing changes on the node.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The policy file (YAML).") var file: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let check = try await node.withNode { client, _ in try await checkPolicy(client, file: file) }
        if output.json { try printJSON(check) } else if check.ok { print("\(file): OK (\(check.changes.count) changes against the policy in force; see 'citymesh policy diff')") }
        if !check.ok {
            if !output.json { Terminal.note("\(check.issues.count) problem\(check.issues.count == 1 ? "" : "s"): nothing was applied") }
            throw ExitCode(1)
        }
    }
}

struct PolicyDiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "What applying a policy file would change, per share and per city.",
        discussion: """
            Example:
              citymesh policy diff --dir hz hz-policy.yaml
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The policy file (YAML).") var file: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let check = try await node.withNode { client, _ in try await checkPolicy(client, file: file) }
        guard check.ok else { throw ExitCode(1) }
        if output.json { return try printJSON(check.changes) }
        if check.changes.isEmpty { return print("no changes: the file says what the policy in force says") }
        printChanges(check.changes)
    }
}

struct PolicyApply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply a policy file: checked, stored as a new signed version, ledgered, in force at once.",
        discussion: """
            Example:
              citymesh policy apply --dir hz hz-policy.yaml

            Needs an admin token. A file with problems is refused as a whole (see 'policy validate');
            the same file applied twice makes no new version.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The policy file (YAML).") var file: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let applied: API.PolicyApplied = try await node.withNode { client, _ in
            let check = try await checkPolicy(client, file: file)
            guard check.ok else {
                Terminal.note("\(check.issues.count) problem\(check.issues.count == 1 ? "" : "s"): nothing was applied")
                throw ExitCode(1)
            }
            return try await client.putText("/v1/policy", text: try readPolicyFile(file))
        }
        if output.json { return try printJSON(applied) }
        if applied.unchanged { return print("unchanged: version \(applied.version) already says this") }
        print("applied as version \(applied.version) (sha256 \(applied.sha256.prefix(16))…), in force now")
        printChanges(applied.changes)
    }
}

struct PolicyShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show the policy in force (or an earlier version), who applied it, and its signature.",
        discussion: """
            Example:
              citymesh policy show --dir hz
              citymesh policy show --dir hz --version 2 > hz-policy-v2.yaml
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "A version number (default: the latest).") var version: Int?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let shown: API.PolicyShow = try await node.withNode { client, _ in
            try await client.get("/v1/policy", query: version.map { ["version": String($0)] } ?? [:])
        }
        if output.json { return try printJSON(shown) }
        guard let v = shown.current else {
            return Terminal.note("no policy applied yet: nothing is shared (default deny). Write one (docs/policy.md) and 'citymesh policy apply' it")
        }
        // The document on stdout (so it can be saved), the facts on stderr.
        print(v.document, terminator: v.document.hasSuffix("\n") ? "" : "\n")
        Terminal.note("version \(v.version) of \(shown.versions.count)\(shown.inForce == v.version ? " (in force)" : ""), applied by \(v.appliedBy) at \(v.appliedAt), sha256 \(v.sha256)")
        if let note = v.signedNote { Terminal.note("signed note:\n\(note)") }
    }
}

struct PolicyExplain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "What a city gets of a dataset: each field, the row filter, write rights, and the rule behind each.",
        discussion: """
            Example:
              citymesh policy explain --dir hz --city shanghai --dataset air-quality
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "The other city.") var city: String
    @Option(help: "One of this node's datasets.") var dataset: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let slug = try CitySlug(city)
        let x: PolicyEngine.Explanation = try await node.withNode { client, _ in
            try await client.get("/v1/policy/explain", query: ["city": slug.rawValue, "dataset": dataset])
        }
        if output.json { return try printJSON(x) }
        print("\(x.city) and \(x.dataset): \(x.active ? "ACTIVE" : "nothing flows") — \(x.decision)")
        if let share = x.share {
            print("  share        \(share)")
            print("  rows         \(x.filter ?? "(all)")")
            print("  purpose      \(x.purpose ?? "-")")
            print("  legal basis  \(x.legalBasis ?? "-")")
            print("  valid        \(x.validFrom.map { "from \($0) " } ?? "")until \(x.validUntil ?? "-")")
            print("  on revoke    \(x.onRevoke ?? "-")")
        }
        print("")
        Terminal.table(["FIELD", "TYPE", "ACCESS", "RULE"], x.fields.map { [$0.field, $0.type, $0.access, $0.rule] })
    }
}

struct PolicyPreview: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Exactly what a city would be sent of one record now, or why nothing.",
        discussion: """
            Example:
              citymesh policy preview --dir hz --city shanghai --dataset air-quality --key S-001
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "The other city.") var city: String
    @Option(help: "One of this node's datasets.") var dataset: String
    @Option(help: "The record's key.") var key: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let slug = try CitySlug(city)
        let p: API.PolicyPreview = try await node.withNode { client, _ in
            try await client.get("/v1/policy/preview", query: ["city": slug.rawValue, "dataset": dataset, "key": key])
        }
        if output.json { return try printJSON(p) }
        guard p.sent else { return print("\(slug) is sent nothing of \(key): \(p.reason ?? p.denial ?? "denied")") }
        print("\(slug) is sent these fields of \(key) (nothing else):")
        Terminal.table(["FIELD", "VALUE"], p.values.sorted { $0.key < $1.key }.map { [$0.key, Self.show($0.value)] })
    }

    static func show(_ v: JSONValue) -> String {
        switch v {
        case .null: "(null)"
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .string(let s): s
        default: "\(v)"
        }
    }
}
