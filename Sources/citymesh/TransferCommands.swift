import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import Foundation

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import records from a CSV (header row) or JSON-lines file.",
        discussion: """
            Example:
              citymesh import --dir hz air-quality --csv stations.csv
              citymesh import --dir hz air-quality --jsonl stations.jsonl

            The file streams to the node, which writes it in transactions of 20,000 rows. Bad rows
            are rejected one by one (line number and reason) and never affect the good ones.
            Exit status: 0 when every row was imported, 2 when some rows were rejected.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Option(help: "A CSV file whose header row names the fields.") var csv: String?
    @Option(help: "A JSON-lines file: one {\"field\": value} object per line.") var jsonl: String?
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (csv == nil) != (jsonl == nil) else { throw ValidationError("give exactly one of --csv FILE or --jsonl FILE") }
    }

    func run() async throws {
        let file = csv ?? jsonl!  // invariant: validate() ensures exactly one is set
        let format = csv != nil ? "csv" : "jsonl"
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDir), !isDir.boolValue else {
            throw CityMeshError(.fileNotFound, "\(file) does not exist: check the path")
        }
        let bar = ProgressBar(label: "importing \((file as NSString).lastPathComponent)")
        let summary: API.ImportSummary = try await node.withNode { client, config in
            try await client.upload(
                try node.datasetPath(dataset, config: config) + "/import", query: ["format": format], file: file,
                progress: { bar.update(done: $0, total: $1) })
        }
        bar.finish()
        if output.json {
            try printJSON(summary)
        } else {
            print("imported \(Terminal.number(summary.imported)) rows into \(dataset) in \(String(format: "%.1f", summary.seconds))s; unchanged \(Terminal.number(summary.unchanged)); rejected \(Terminal.number(summary.rejected))")
            for r in summary.rejections { print("  line \(r.line): \(r.reason)") }
            if summary.rejectionsTruncated { print("  … (only the first \(summary.rejections.count) rejections are listed)") }
        }
        if summary.rejected > 0 { throw ExitCode(2) }
    }
}

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a dataset's live records as JSON lines or CSV, from one consistent snapshot.",
        discussion: """
            Example:
              citymesh export --dir hz air-quality --jsonl > out.jsonl
              citymesh export --dir hz air-quality --csv --out out.csv
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The dataset.") var dataset: String
    @Flag(help: "JSON lines (the default).") var jsonl = false
    @Flag(help: "CSV with a header row.") var csv = false
    @Option(help: "Write to this file instead of standard output.") var out: String?

    func validate() throws {
        guard !(jsonl && csv) else { throw ValidationError("give one of --jsonl or --csv") }
    }

    func run() async throws {
        let sink: FileHandle
        var tmp: String?
        if let out {
            let partial = out + ".partial"
            guard FileManager.default.createFile(atPath: partial, contents: nil), let h = FileHandle(forWritingAtPath: partial) else {
                throw CityMeshError(.ioError, "cannot write \(out): check the directory and permissions")
            }
            tmp = partial
            sink = h
        } else {
            sink = FileHandle.standardOutput
        }
        do {
            try await node.withNode { client, config in
                try await client.download(
                    try node.datasetPath(dataset, config: config) + "/export", query: ["format": csv ? "csv" : "jsonl"]
                ) { chunk in
                    try sink.write(contentsOf: chunk)
                }
            }
        } catch {
            if let tmp { try? FileManager.default.removeItem(atPath: tmp) }
            throw error
        }
        if let out, let tmp {
            try sink.close()
            _ = try? FileManager.default.removeItem(atPath: out)
            try FileManager.default.moveItem(atPath: tmp, toPath: out)
        }
    }
}
