import CityMeshCore
import Foundation

/// The layout of a node directory (`--dir`).
public struct NodeDirectory: Sendable {
    public let root: URL

    public init(_ path: String) {
        self.root = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
    }

    public var configPath: String { file(NodeConfig.fileName) }
    public var adminTokenPath: String { file("admin.token") }
    public var lockPath: String { file("citymesh.lock") }

    public func file(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : root.appendingPathComponent(relative).path
    }

    public func loadConfig() throws -> NodeConfig { try NodeConfig.load(from: configPath) }

    /// The local admin credential written by `citymesh init`.
    public func adminToken() throws -> String {
        guard let data = FileManager.default.contents(atPath: adminTokenPath),
            let token = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty
        else {
            throw CityMeshError(.unauthenticated, "no token: pass --token or set CITYMESH_TOKEN (cannot read \(adminTokenPath))")
        }
        return token
    }
}
