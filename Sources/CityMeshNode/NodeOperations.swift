public import CityMeshCore
import CityMeshNet
public import CityMeshStore
import Foundation

/// City IT's operations on a node directory that need no running node: checking a config before
/// a start or a reload, taking a backup, restoring one.
public enum NodeOperations {
    /// One finding of `config check`.
    public struct Finding: Sendable {
        public enum Level: String, Sendable { case ok, warning, problem }
        public let level: Level
        public let what: String
        public let detail: String
    }

    /// The node's secrets whose file mode lets other users read them: the TLS key, the admin
    /// token and the database (which holds token hashes and every record). Each with its mode
    /// and the command that fixes it.
    public static func exposedSecrets(_ config: NodeConfig, _ directory: NodeDirectory) -> [String] {
        let files = [("tls.key", directory.file(config.tls.key)), ("admin token", directory.adminTokenPath), ("database", directory.file(config.database))]
        return files.compactMap { what, path in
            guard let mode = Files.mode(path), mode & 0o077 != 0, reachable(path) else { return nil }
            return "\(what) \(path) is mode \(String(mode & 0o777, radix: 8)): other users of this host can read it; run 'chmod 600 \(path)'"
        }
    }

    /// Whether users other than the owner can get to `path` at all: every directory above it
    /// lets group or others through (a 0700 node directory keeps everything in it private).
    static func reachable(_ path: String) -> Bool {
        var dir = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent()
        while true {
            guard let mode = Files.mode(dir.path), mode & 0o011 != 0 else { return false }
            if dir.path == "/" { return true }
            dir = dir.deletingLastPathComponent()
        }
    }

    /// Checks everything `serve` would check at start, without starting: the config file, the
    /// identity (certificate chain to the CA, key, city, expiry), the CRL, the addresses and
    /// seeds, the database (present, sound, not written by a newer citymesh, the same city) and
    /// the policy file. Changes nothing.
    public static func checkConfig(_ directory: NodeDirectory) async -> [Finding] {
        var out: [Finding] = []
        func ok(_ what: String, _ detail: String) { out.append(Finding(level: .ok, what: what, detail: detail)) }
        func warn(_ what: String, _ detail: String) { out.append(Finding(level: .warning, what: what, detail: detail)) }
        func problem(_ what: String, _ error: any Error) {
            out.append(Finding(level: .problem, what: what, detail: (error as? CityMeshError)?.message ?? "\(error)"))
        }
        let config: NodeConfig
        let city: CitySlug
        do {
            config = try directory.loadConfig()
            city = try CitySlug(config.city)
            ok("config", "\(directory.configPath) parses: city \(city)")
        } catch {
            problem("config", error)
            return out
        }
        do {
            let listen = try HostPort(config.listen, what: "listen")
            let admin = try HostPort(config.admin, what: "admin")
            ok("addresses", "peers on \(listen), admin API on \(admin)")
            if !admin.isLoopback {
                warn("admin", "the admin API (\(admin)) is plain HTTP and not on loopback: put it behind a TLS proxy or bind it to 127.0.0.1")
            }
        } catch { problem("addresses", error) }
        do {
            let identity = try await NodeServer.checkIdentity(config: config, directory: directory, city: city)
            let days = Int(identity.notValidAfter.timeIntervalSinceNow / 86_400)
            ok("identity", "certificate for \(city), issued by the CA in \(config.tls.ca), key matches, valid \(days) more days")
            if days < 30 { warn("identity", "the certificate expires in \(days) days: issue a new one ('citymesh federation issue') and restart") }
        } catch { problem("identity", error) }
        let exposed = exposedSecrets(config, directory)
        if exposed.isEmpty { ok("permissions", "the TLS key, the admin token and the database are readable by their owner only") }
        for e in exposed { warn("permissions", e) }
        do {
            let (trust, alerts) = try NodeServer.loadTrust(config: config, directory: directory)
            for alert in alerts { warn("crl", alert) }
            if let crl = trust.revocations {
                ok("crl", "\(config.peers?.crl ?? "CRL") verifies with the CA: \(crl.entries.count) revoked certificate(s)")
            } else {
                warn("crl", "no CRL configured (peers.crl): revoked certificates are not refused")
            }
            let seeds = try (config.peers ?? .init()).seedList()
            ok("seeds", seeds.isEmpty ? "no seeds: this node waits for peers to dial it" : seeds.map { "\($0.city)@\($0.address)" }.joined(separator: ", "))
        } catch { problem("peers", error) }
        let database = directory.file(config.database)
        var datasets: [String: Schema]?
        do {
            let found = try NodeStore.inspect(path: database)
            guard found.check == "ok" else { throw CityMeshError(.ioError, "\(database) is damaged (\(found.check)): restore a backup ('citymesh restore')") }
            guard found.unknown.isEmpty else {
                throw CityMeshError(
                    .storeVersionTooNew,
                    "\(database) was written by a newer citymesh (migrations \(found.unknown.joined(separator: ", "))): run that version, or restore a backup made by this one")
            }
            guard found.city == city else {
                throw CityMeshError(.configInvalid, "\(database) belongs to '\(found.city?.rawValue ?? "no city")', the config says '\(city)'")
            }
            ok("database", "\(database): \(found.datasets) dataset(s), \(found.ledgerEntries) ledger entries" + (found.pending.isEmpty ? "" : "; \(found.pending.count) migration(s) will run at start"))
            if found.pending.isEmpty {
                let store = try NodeStore(path: database)
                defer { try? store.close() }
                datasets = [:]
                for info in try await store.datasets() where info.id.owner == city { datasets?[info.id.name] = info.schema }
            }
        } catch { problem("database", error) }
        if let path = config.policy {
            do {
                let text = try Files.read(directory.file(path), what: "the policy file")
                if let datasets {
                    let policy = try Policy.load(yaml: text, context: PolicyContext(city: city, datasets: datasets, now: Int64(Date().timeIntervalSince1970 * 1_000_000)))
                    ok("policy", "\(path): \(policy.shares.count) share(s), checked against this node's datasets")
                } else {
                    warn("policy", "\(path) not checked: the database could not be read")
                }
            } catch { problem("policy", error) }
        }
        if NodeLock.isHeld(directory) { ok("node", "running (it re-reads the config, CRL and policy on SIGHUP)") }
        return out
    }

    /// Restores `backup` (from `citymesh backup`) into the stopped node `directory`. The backup
    /// must be sound, of this node's city, not from a newer citymesh, and its ledger must verify
    /// against its signed checkpoints with this node's key. The database it replaces is kept
    /// beside it as `<database>.before-restore-<time>`.
    public static func restore(_ directory: NodeDirectory, from backup: String) async throws -> (kept: String, entries: UInt64, checkpoints: Int) {
        let config = try directory.loadConfig()
        let city = try CitySlug(config.city)
        let lock = try NodeLock.acquire(directory)
        defer { lock.release() }
        let found = try NodeStore.inspect(path: backup, thorough: true)
        guard found.check == "ok" else { throw CityMeshError(.malformedInput, "\(backup) is damaged (\(found.check)): use another backup") }
        guard found.unknown.isEmpty else {
            throw CityMeshError(.storeVersionTooNew, "\(backup) was made by a newer citymesh (migrations \(found.unknown.joined(separator: ", "))): restore it with that version")
        }
        guard found.city == city else {
            throw CityMeshError(.invalidArgument, "\(backup) is a backup of '\(found.city?.rawValue ?? "no city")', not of '\(city)': restore it into that city's node directory")
        }
        // Its shape before anything reads its rows: a crafted file is refused, not trusted.
        try NodeStore.checkShape(path: backup)
        // Check the ledger on a scratch copy (opening it may run this version's migrations).
        let fm = FileManager.default
        let scratch = fm.temporaryDirectory.appendingPathComponent("citymesh-restore-\(UUID().uuidString).db").path
        try fm.copyItem(atPath: backup, toPath: scratch)
        defer { for suffix in ["", "-wal", "-shm"] { try? fm.removeItem(atPath: scratch + suffix) } }
        let (signer, _) = LedgerService.signer(city: city, keyPEM: try Files.read(directory.file(config.tls.key), what: "the key"))
        var entries: UInt64 = 0
        var checkpoints = 0
        do {
            let store = try NodeStore(path: scratch)
            defer { try? store.close() }
            let ledger = LedgerStore(store: store)
            if let verifier = signer?.verifier {
                let report = try await ledger.audit(verifier: verifier)
                guard report.ok else {
                    throw CityMeshError(.ledgerCorrupt, "the ledger in \(backup) does not verify: \(report.problem ?? "entry \(report.firstBadIndex.map(String.init) ?? "?") is bad"); the node was not changed")
                }
                (entries, checkpoints) = (report.entries, report.checkpointsVerified)
            } else {
                entries = try await ledger.count()
            }
        }
        let database = directory.file(config.database)
        let stamp = RFC3339.format(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)).replacingOccurrences(of: ":", with: "")
        let kept = "\(database).before-restore-\(stamp)"
        if fm.fileExists(atPath: database) {
            // Fold the WAL in first, so the kept file is complete on its own.
            if let store = try? NodeStore(path: database) {
                try? await store.foldWAL()
                try? store.close()
            }
            try fm.moveItem(atPath: database, toPath: kept)
            for suffix in ["-wal", "-shm"] where fm.fileExists(atPath: database + suffix) { try fm.removeItem(atPath: database + suffix) }
        }
        try fm.copyItem(atPath: backup, toPath: database)
        try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: database)
        return (kept, entries, checkpoints)
    }
}
