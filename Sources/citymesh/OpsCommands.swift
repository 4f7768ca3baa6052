import ArgumentParser
import CityMeshCore
import CityMeshNode
import CityMeshStore
import Foundation

/// The node directory from --dir or $CITYMESH_DIR.
func nodeDirectory(_ dir: String?) throws -> NodeDirectory {
    guard let path = dir ?? ProcessInfo.processInfo.environment["CITYMESH_DIR"], !path.isEmpty else {
        throw CityMeshError(.invalidArgument, "no node directory: pass --dir DIR or set CITYMESH_DIR")
    }
    return NodeDirectory(path)
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a node's configuration.",
        subcommands: [ConfigCheck.self])
}

struct ConfigCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a node's config, identity, CRL, database and policy file without starting it.",
        discussion: """
            Example:
              citymesh config check --dir hz && systemctl reload citymesh

            Checks what 'serve' checks at start and on SIGHUP: the config file parses and has no
            unknown keys; the certificate chains to the CA, matches the key and names the config's
            city; the TLS key, admin token and database are not readable by other users (a
            warning); the CRL verifies with the CA; the addresses and seeds parse; the database is sound, of the same
            city and not written by a newer citymesh; the policy file (if the config names one)
            checks against the node's datasets. Changes nothing, and works while the node runs.
            Exits 0 if nothing is wrong (warnings allowed), 1 otherwise.
            """)

    @Option(help: "The node directory (default: $CITYMESH_DIR).") var dir: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let findings = await NodeOperations.checkConfig(try nodeDirectory(dir))
        if output.json {
            try printJSON(findings.map { ["level": $0.level.rawValue, "what": $0.what, "detail": $0.detail] })
        } else {
            for f in findings {
                let mark = switch f.level { case .ok: "ok     "; case .warning: "warning"; case .problem: "PROBLEM" }
                print("\(mark)  \(f.what.padding(toLength: 11, withPad: " ", startingAt: 0))  \(f.detail)")
            }
        }
        let problems = findings.filter { $0.level == .problem }.count
        if problems > 0 {
            Terminal.note("\(problems) problem(s): 'serve' would refuse to start (or a reload would keep the previous settings)")
            throw ExitCode(1)
        }
        if !output.json { print("config OK") }
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take a consistent backup of a node's database (records, ledger and all), online.",
        discussion: """
            Example:
              citymesh backup --dir hz --out /var/backups/citymesh/hz-$(date +%F).db

            Copies one consistent snapshot of the database — datasets and records, the ledger and
            its signed checkpoints, policy versions, agreements, tokens, replication state — into a
            new SQLite file, while the node keeps running and writing. The copy is checked
            (integrity_check) before the command returns. Keys and certificates are files of the
            node directory: back those up with your usual file backup (the key is secret).
            Bring a backup back with 'citymesh restore'.
            """)

    @Option(help: "The node directory (default: $CITYMESH_DIR).") var dir: String?
    @Option(help: "The backup file to write (must not exist).") var out: String

    func run() async throws {
        let directory = try nodeDirectory(dir)
        let config = try directory.loadConfig()
        let found = try NodeStore.backup(path: directory.file(config.database), to: out)
        guard found.check == "ok" else { throw CityMeshError(.ioError, "the backup \(out) does not check out (\(found.check)): try again") }
        let size = ((try? FileManager.default.attributesOfItem(atPath: out))?[.size] as? Int) ?? 0
        print("backup of \(found.city?.rawValue ?? config.city) written to \(out): \(found.datasets) dataset(s), \(found.ledgerEntries) ledger entries, \(size / 1024) KiB, integrity ok")
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into a stopped node; its ledger must verify first.",
        discussion: """
            Example:
              systemctl stop citymesh
              citymesh restore --dir hz --from /var/backups/citymesh/hz-2026-11-30.db
              systemctl start citymesh

            The node must be stopped. The backup must be sound, a backup of this node's city, made
            by this citymesh or an older one (it is upgraded at the next start), and its ledger
            must verify against its signed checkpoints with this node's key. The database it
            replaces is kept beside it (citymesh.db.before-restore-<time>). Records written since
            the backup come back from peers that replicated them; ledger entries written since are
            in the kept file only.
            """)

    @Option(help: "The node directory (default: $CITYMESH_DIR).") var dir: String?
    @Option(help: "The backup file (from 'citymesh backup').") var from: String

    func run() async throws {
        let directory = try nodeDirectory(dir)
        guard FileManager.default.fileExists(atPath: from) else { throw CityMeshError(.fileNotFound, "\(from) does not exist or cannot be read") }
        let (kept, entries, checkpoints) = try await NodeOperations.restore(directory, from: from)
        print("restored \(from): the ledger verifies (\(entries) entries, \(checkpoints) signed checkpoint(s) match)")
        print("the previous database is kept as \(kept)")
    }
}
