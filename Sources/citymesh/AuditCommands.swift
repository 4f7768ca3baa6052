import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import CityMeshStore
import Foundation

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and verify the node's accountability ledger (an auditor token is enough).",
        subcommands: [AuditLog.self, AuditVerify.self, AuditCheckpoint.self, AuditVKey.self])
}

struct AuditLog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List ledger entries, oldest first.",
        discussion: """
            Example:
              citymesh audit log --dir hz --since 2026-11-01 --peer shanghai --kind peer
              citymesh audit log --dir hz --kind dataset.imported --json

            --kind matches a kind or its family (peer matches peer.connected and peer.refused).
            Entries hold metadata and hashes, never record values.
            """)

    @OptionGroup var node: NodeOptions
    @Option(help: "Only entries at or after this time (RFC 3339 or a date, e.g. 2026-11-01).") var since: String?
    @Option(help: "Only entries about this peer city.") var peer: String?
    @Option(help: "Only this kind or family of kinds.") var kind: String?
    @Option(help: "Only entries about this dataset (owner/name).") var dataset: String?
    @Option(help: "At most this many entries (1-10000).") var limit: Int = 1000
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var query: [String: String] = ["limit": String(limit)]
        if let since { query["since"] = since }
        if let peer { query["peer"] = peer }
        if let kind { query["kind"] = kind }
        if let dataset { query["dataset"] = dataset }
        let log: API.AuditLog = try await node.withNode { client, _ in try await client.get("/v1/audit/log", query: query) }
        if output.json {
            for e in log.entries { try printJSONLine(e) }
            return
        }
        if log.entries.isEmpty { return print("no entries match") }
        Terminal.table(
            ["INDEX", "TIME", "KIND", "ACTOR", "PEER", "DATASET", "DETAIL"],
            log.entries.map { e in
                let counts = (e.counts ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                let detail = [e.reason, e.detail, counts.isEmpty ? nil : counts].compactMap { $0 }.joined(separator: "; ")
                return [String(e.index), String(e.time.prefix(19)), e.kind, e.actor, e.peer ?? "", e.dataset ?? "", detail]
            })
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Recompute the whole Merkle tree from the stored entries and check it against every signed checkpoint.",
        discussion: """
            Example:
              citymesh audit verify --dir hz

            Exits 0 when every entry, leaf hash and signed checkpoint agree; otherwise prints the first
            bad index and why, and exits 1. An entry edited, deleted or moved by hand is caught.
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let report: LedgerAuditReport = try await node.withNode { client, _ in try await client.get("/v1/audit/verify") }
        if output.json { try printJSON(report) } else if report.ok {
            print("ledger OK: \(report.entries) entries, root \(report.root), \(report.checkpointsVerified) signed checkpoints match (latest at size \(report.latestCheckpointSize.map(String.init) ?? "-"))")
        } else {
            print("ledger FAILED at entry \(report.firstBadIndex.map(String.init) ?? "?"): \(report.problem ?? "unknown problem")")
        }
        if !report.ok { throw ExitCode(1) }
    }
}

struct AuditCheckpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Print the latest signed checkpoint (C2SP tlog-checkpoint in a C2SP signed note).",
        discussion: "Example:\n  citymesh audit checkpoint --dir hz > checkpoint.txt")

    @OptionGroup var node: NodeOptions

    func run() async throws {
        print(try await node.withNode { client, _ in try await client.getText("/v1/audit/checkpoint") }, terminator: "")
    }
}

struct AuditVKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vkey",
        abstract: "Print the log's verifier key (C2SP signed-note format: name+keyid+key).",
        discussion: "Example:\n  citymesh audit vkey --dir hz > hz.vkey")

    @OptionGroup var node: NodeOptions

    func run() async throws {
        print(try await node.withNode { client, _ in try await client.getText("/v1/audit/vkey") }, terminator: "")
    }
}
