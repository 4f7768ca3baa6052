import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshNode
import Foundation

/// Options shared by every command that talks to a node.
struct NodeOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The node directory (default: $CITYMESH_DIR).", valueName: "dir"))
    var dir: String?

    @Option(name: .long, help: ArgumentHelp("Admin API token (default: $CITYMESH_TOKEN, then the node dir's admin.token).", valueName: "token"))
    var token: String?

    func directory() throws -> NodeDirectory {
        guard let path = dir ?? ProcessInfo.processInfo.environment["CITYMESH_DIR"], !path.isEmpty else {
            throw CityMeshError(.invalidArgument, "no node directory: pass --dir DIR or set CITYMESH_DIR")
        }
        return NodeDirectory(path)
    }

    var dirHint: String { "--dir \(dir ?? ProcessInfo.processInfo.environment["CITYMESH_DIR"] ?? "DIR")" }

    /// A client for the node's admin API, from its config and the token in effect.
    func client() throws -> (AdminClient, NodeConfig, NodeDirectory) {
        let dir = try directory()
        let config = try dir.loadConfig()
        let token = try token ?? ProcessInfo.processInfo.environment["CITYMESH_TOKEN"] ?? dir.adminToken()
        return (AdminClient(address: config.admin, token: token, startHint: dirHint), config, dir)
    }

    /// Runs `body` against the node; while the node is starting (its lock is held but the API not
    /// yet listening) retries for up to ten seconds. A refused connection sent nothing, so retrying is safe.
    func withNode<T>(_ body: (AdminClient, NodeConfig) async throws -> T) async throws -> T {
        let (client, config, dir) = try client()
        var attempts = 0
        while true {
            do {
                return try await body(client, config)
            } catch let e as CityMeshError where e.code == .nodeNotRunning && attempts < 50 && NodeLock.isHeld(dir) {
                attempts += 1
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// The dataset path segment `owner/name` for a dataset argument.
    func datasetPath(_ text: String, config: NodeConfig) throws -> String {
        let id = try DatasetID(parsing: text, localCity: try CitySlug(config.city))
        return "/v1/datasets/\(id.owner)/\(id.name)"
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func printJSONLine<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

extension JSONValue {
    /// The value as shown in a table.
    var display: String {
        switch self {
        case .null: ""
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .double(let d): "\(d)"
        case .string(let s): s
        case .array, .object: "…"
        }
    }
}
