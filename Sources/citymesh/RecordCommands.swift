import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshStore
import Foundation

struct RecordCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Put, get, delete and list records.",
        subcommands: [RecordPut.self, RecordGet.self, RecordDelete.self, RecordErase.self, RecordList.self, RecordConflicts.self, RecordResolve.self])
}

struct RecordPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Create or update a record: set the named fields, leave the others as they are.",
        discussion: """
            Example:
              citymesh record put --dir hz air-quality S-001 pm25=41.5 district=Xihu

            'field=' (nothing after '=') sets the field to null.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Argument(help: "The record key.") var key: String
    @Argument(help: "Values as FIELD=VALUE.") var values: [String] = []

    func validate() throws {
        for v in values where !v.contains("=") {
            throw ValidationError("'\(v)' is not FIELD=VALUE: write e.g. pm25=41.5")
        }
    }

    func run() async throws {
        var body: [String: JSONValue] = [:]
        for v in values {
            let parts = v.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            guard body[name] == nil else { throw CityMeshError(.invalidArgument, "field '\(name)' is given twice: set each field once") }
            body[name] = parts[1].isEmpty ? .null : .string(String(parts[1]))
        }
        let r: API.WriteResult = try await node.withNode { client, config in
            try await client.put(try node.datasetPath(dataset, config: config) + "/record", body: API.PutRecord(values: body), query: ["key": key])
        }
        print(r.written > 0 ? "stored \(key) (seq \(r.seq))" : "\(key) unchanged")
    }
}

struct RecordGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Show one record, with who wrote each field and when.",
        discussion: "Example:\n  citymesh record get --dir hz air-quality S-001 --json")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Argument(help: "The record key.") var key: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let (r, d): (API.Record, API.Dataset) = try await node.withNode { client, config in
            let path = try node.datasetPath(dataset, config: config)
            return (try await client.get(path + "/record", query: ["key": key]), try await client.get(path))
        }
        if output.json { return try printJSON(r) }
        print("\(d.id) \(r.key) (seq \(r.seq))")
        Terminal.table(
            ["FIELD", "VALUE", "WRITTEN BY", "AT"],
            d.fields.map { f in
                let meta = r.meta?[f.name]
                return [f.name, r.values[f.name]?.display ?? "", meta?.city ?? "", meta?.hlc ?? ""]
            })
    }
}

struct RecordDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a record (a tombstone: older writes can never bring it back).",
        discussion: "Example:\n  citymesh record delete --dir hz air-quality S-001")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Argument(help: "The record key.") var key: String

    func run() async throws {
        let r: API.WriteResult = try await node.withNode { client, config in
            try await client.delete(try node.datasetPath(dataset, config: config) + "/record", query: ["key": key])
        }
        print("deleted \(key) (seq \(r.seq))")
    }
}

struct RecordErase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erase", abstract: "Erase records: delete them and compact their old values out of every stored batch, here and at every party (admin).",
        discussion: """
            Examples:
              citymesh record erase --dir hz registry 330106199001011234
              citymesh record erase --dir hz registry --keys-from erasure-requests.txt

            A deleted record's old values stay in the batches every party keeps to relay. Erasing
            deletes the records (those not deleted yet) and compacts those values out of this
            node's batches at once; each member compacts its own when it has the deletion, and the
            deletion itself goes once every party holds it. The batches still verify and relay.
            Every step is in the ledgers (record.erased here, share.compacted at each node).
            Every key is checked first: if one does not exist, nothing is erased.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset (one this node owns).") var dataset: String
    @Argument(help: "The record keys.") var keys: [String] = []
    @Option(help: "A file of record keys, one per line (at most 10,000 keys in all).") var keysFrom: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var all = keys
        if let keysFrom {
            guard let text = try? String(contentsOfFile: keysFrom, encoding: .utf8) else {
                throw ValidationError("cannot read --keys-from \(keysFrom): give a UTF-8 text file with one record key per line")
            }
            all += text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
        }
        guard (1...10_000).contains(all.count) else {
            throw ValidationError("name from 1 to 10,000 record keys (got \(all.count)), as arguments or with --keys-from")
        }
        let r: API.Erasure = try await node.withNode { client, config in
            let path = try node.datasetPath(dataset, config: config) + "/erase"
            return all.count == 1
                ? try await client.post(path, body: API.EraseKeys(keys: []), query: ["key": all[0]])
                : try await client.post(path, body: API.EraseKeys(keys: all))
        }
        if output.json { return try printJSON(r) }
        if r.erased == 1 {
            print(r.deleted ? "deleted \(r.key)" : "\(r.key) was deleted before")
        } else {
            print("deleted \(r.deletedNow) of \(r.erased) records (the others were deleted before)")
        }
        print("compacted here: \(r.compactedRecords) records in \(r.compactedBatches) stored batches")
        if r.legacyBatches > 0 {
            print("warning: \(r.legacyBatches) stored batches in the old layout (CMB1) still hold erased values and cannot be compacted")
        }
        for p in r.parties {
            print("  \(p.city) (\(p.share)): " + (p.hasDeletion ? "has the deletion; compacts its batches within its next pass" : "does not have the deletion yet; compacts once it does"))
        }
        if r.parties.isEmpty { print("no share of this dataset: no other node holds its batches") }
    }
}

struct RecordList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List records in key order.",
        discussion: "Example:\n  citymesh record list --dir hz air-quality --limit 20")

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Option(help: "At most this many records (1-10000).") var limit: Int = 20
    @Option(help: "Start after this key (for paging).") var after: String?
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000") }
    }

    func run() async throws {
        let (page, d): (API.RecordPage, API.Dataset) = try await node.withNode { client, config in
            let path = try node.datasetPath(dataset, config: config)
            var query = ["limit": String(limit)]
            if let after { query["after"] = after }
            return (try await client.get(path + "/records", query: query), try await client.get(path))
        }
        if output.json {
            for r in page.records { try printJSONLine(r) }
            return
        }
        Terminal.table(d.fields.map { $0.name.uppercased() }, page.records.map { r in d.fields.map { r.values[$0.name]?.display ?? "" } })
        if let next = page.next { Terminal.note("(more: --after \(next))") }
    }
}

struct RecordConflicts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts", abstract: "List concurrent writes that a merge overwrote, for an admin to settle.",
        discussion: """
            Example:
              citymesh record conflicts --dir hz registry
              citymesh record conflicts --dir sh hangzhou/registry --all

            When two cities write the same field of the same record without either having seen the
            other's write, every node keeps the same winner (the later clock, then the city name) and
            keeps the overwritten value here. Settle one with 'citymesh record resolve'.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset (NAME, or OWNER/NAME for a replica).") var dataset: String
    @Flag(help: "Include settled conflicts.") var all = false
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list: API.ConflictList = try await node.withNode { client, config in
            try await client.get(try node.datasetPath(dataset, config: config) + "/conflicts", query: all ? ["all": "1"] : [:])
        }
        if output.json { return try printJSON(list) }
        if list.conflicts.isEmpty {
            print("no \(all ? "" : "open ")conflicts in \(list.dataset)")
            return
        }
        Terminal.table(
            ["ID", "KEY", "FIELD", "OVERWRITTEN", "BY", "KEPT", "BY", "FOUND", "SETTLED"],
            list.conflicts.map { c in
                [String(c.id), c.key, c.field, c.value ?? "null", c.city, c.winnerValue ?? "null", c.winnerCity, String(c.foundAt.prefix(19)),
                 c.resolvedAt.map { "\($0.prefix(19)) \(c.resolvedBy ?? "")" } ?? "-"]
            })
        if !all { Terminal.note("settle one: citymesh record resolve \(dataset) KEY FIELD --keep | --take ID | --value VALUE") }
    }
}

struct RecordResolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve", abstract: "Settle the conflicts of one field of one record by writing the value to keep.",
        discussion: """
            Examples:
              citymesh record resolve --dir hz registry E-1 status --keep        # confirm the value in force
              citymesh record resolve --dir hz registry E-1 status --take 7      # bring back conflict 7's value
              citymesh record resolve --dir hz registry E-1 status --value closed

            The choice is written as a new write of this city, so it replicates like any other and
            wins over both conflicting writes everywhere; the conflicts are marked settled.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Argument(help: "The record key.") var key: String
    @Argument(help: "The field.") var field: String
    @Flag(help: "Keep the value in force.") var keep = false
    @Option(help: "Take the overwritten value of this conflict id.") var take: Int64?
    @Option(help: "Write this value instead.") var value: String?

    func validate() throws {
        guard [keep, take != nil, value != nil].filter({ $0 }).count == 1 else {
            throw ValidationError("say how to settle it with exactly one of --keep, --take ID or --value VALUE")
        }
    }

    func run() async throws {
        let body = API.ResolveConflict(key: key, field: field, value: value.map { JSONValue.string($0) }, take: take, keep: keep ? true : nil)
        let r: API.WriteResult = try await node.withNode { client, config in
            try await client.post(try node.datasetPath(dataset, config: config) + "/conflicts/resolve", body: body)
        }
        print("settled \(key).\(field) (seq \(r.seq))")
    }
}
