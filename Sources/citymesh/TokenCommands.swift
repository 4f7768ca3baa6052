import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshStore
import Foundation

extension Role: ExpressibleByArgument {}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Manage admin API tokens (admin role needed).",
        subcommands: [TokenCreate.self, TokenList.self, TokenRevoke.self])
}

struct TokenCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a token; it is shown once, the node keeps only its hash.",
        discussion: """
            Example:
              citymesh token create --dir hz --role auditor --name "external audit 2026"

            Roles: admin (everything), operator (datasets and records), auditor (read-only).
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "admin, operator or auditor.") var role: Role
    @Option(help: "A label to recognise the token by.") var name: String = ""
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let t: API.NewToken = try await node.withNode { client, _ in
            try await client.post("/v1/tokens", body: API.CreateToken(role: role, name: name.isEmpty ? "\(role.rawValue) token" : name))
        }
        if output.json { return try printJSON(t) }
        print(t.token)
        Terminal.note("created \(t.role.rawValue) token \(t.id); it is shown only now. Use it with --token or CITYMESH_TOKEN.")
    }
}

struct TokenList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List tokens (ids, roles, names; never secrets).",
        discussion: "Example:\n  citymesh token list --dir hz")

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list: API.TokenList = try await node.withNode { client, _ in try await client.get("/v1/tokens") }
        if output.json { return try printJSON(list) }
        Terminal.table(
            ["ID", "ROLE", "NAME", "CREATED", "REVOKED"],
            list.tokens.map { [$0.id, $0.role.rawValue, $0.name, $0.createdAt, $0.revokedAt ?? ""] })
    }
}

struct TokenRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke a token by id; it stops working at once.",
        discussion: "Example:\n  citymesh token revoke --dir hz 3f2a9c1e")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The token id (from 'token list').") var id: String

    func run() async throws {
        let _: [String: String] = try await node.withNode { client, _ in try await client.delete("/v1/tokens/\(id)") }
        print("revoked token \(id)")
    }
}
