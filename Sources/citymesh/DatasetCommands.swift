import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshNode
import Foundation

struct DatasetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset",
        abstract: "Create, list and inspect datasets.",
        subcommands: [DatasetCreate.self, DatasetList.self, DatasetShow.self, DatasetAddField.self])
}

struct DatasetCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a dataset with a typed schema.",
        discussion: """
            Example:
              citymesh dataset create --dir hz air-quality --key station --field station:string \\
                  --field district:string --field pm25:double --field measured_at:timestamp

            Types: string, int, double, bool, timestamp (RFC 3339). The key field must be a string or int.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset name, e.g. air-quality.") var name: String
    @Option(help: "The key field (one of the --field names).") var key: String
    @Option(help: "A field as NAME:TYPE (repeatable).") var field: [String] = []
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let specs = try field.map { spec -> API.FieldSpec in
            let (n, t) = try Schema.parseFieldSpec(spec)
            return API.FieldSpec(name: n, type: t)
        }
        // Check locally first so a typo never reaches the node.
        _ = try Schema(keyField: key, fields: specs.map { ($0.name, $0.type) })
        let created: API.Dataset = try await node.withNode { client, config in
            _ = try DatasetID(owner: CitySlug(config.city), name: name)
            return try await client.post("/v1/datasets", body: API.CreateDataset(name: name, key: key, fields: specs))
        }
        if output.json { return try printJSON(created) }
        print("created dataset \(created.id) (\(created.fields.count) fields, key '\(created.key)')")
    }
}

struct DatasetList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the node's datasets.",
        discussion: "Example:\n  citymesh dataset list --dir hz")

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list: API.DatasetList = try await node.withNode { client, _ in try await client.get("/v1/datasets") }
        if output.json { return try printJSON(list) }
        if list.datasets.isEmpty {
            print("no datasets yet: create one with 'citymesh dataset create'")
            return
        }
        Terminal.table(
            ["DATASET", "KEY", "FIELDS", "RECORDS", "CREATED"],
            list.datasets.map { [$0.id, $0.key, String($0.fields.count), Terminal.number($0.records), $0.createdAt] })
    }
}

struct DatasetShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a dataset's schema and size.",
        discussion: "Example:\n  citymesh dataset show --dir hz air-quality")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset (name, or owner/name).") var dataset: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let d: API.Dataset = try await node.withNode { client, config in
            try await client.get(try node.datasetPath(dataset, config: config))
        }
        if output.json { return try printJSON(d) }
        print("dataset   \(d.id)")
        print("records   \(Terminal.number(d.records))")
        print("last seq  \(d.lastSeq)")
        print("created   \(d.createdAt)")
        print("")
        Terminal.table(
            ["FIELD", "TYPE", "ID", "NOTE"],
            d.fields.map { [$0.name, $0.type.rawValue, String($0.id ?? 0), $0.name == d.key ? "key" : ($0.nullable == true ? "nullable" : "")] })
    }
}

struct DatasetAddField: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-field", abstract: "Add a nullable field to a dataset (existing records are not rewritten).",
        discussion: "Example:\n  citymesh dataset add-field --dir hz air-quality --field no2:double")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Option(help: "The new field as NAME:TYPE.") var field: String

    func run() async throws {
        let (n, t) = try Schema.parseFieldSpec(field)
        let d: API.Dataset = try await node.withNode { client, config in
            try await client.post(try node.datasetPath(dataset, config: config) + "/fields", body: API.AddField(name: n, type: t))
        }
        print("added field '\(n)' (\(t.rawValue)) to \(d.id)")
    }
}
