import Foundation
public import Hummingbird
public import CityMeshCore
public import CityMeshStore
import Crypto
import Logging
import NIOCore

/// The admin API: JSON over HTTP on the node's admin address (docs/admin-api.md).
/// The CLI is a client of it, so a running node has exactly one writer: the node.
public struct AdminAPI: Sendable {
    public let store: NodeStore
    public let version: String
    public let startedAt: String
    /// Milliseconds since the epoch; injected so tests control the clock.
    public let physicalMillis: @Sendable () -> UInt64
    /// The peer transport's view (nil when the node runs without one, as in route tests).
    public let peers: (@Sendable () -> API.PeerList)?
    /// The metrics in Prometheus text format (nil when the process has no metrics backend).
    public let metrics: (@Sendable () -> String)?
    /// The accountability ledger and its verifier key (nil in route tests without a ledger writer).
    public let ledger: LedgerStore?
    /// Fetches and checks a peer's latest signed checkpoint over the peer transport.
    public let peerCheckpoint: (@Sendable (CitySlug) async throws -> API.PeerCheckpoint)?
    public let verifierKey: NoteVerifier?
    /// The node's certificate chain and the CA certificate (PEM), for evidence bundles.
    public let certificates: (node: String, ca: String)?
    /// The sharing policy in force (nil in route tests that do not need one).
    public let policy: PolicyManager?
    /// Sharing agreements with other cities (nil without a peer transport).
    public let agreements: (any AgreementDesk)?
    public let replication: (any ReplicaDesk)?
    /// Why the node is not ready yet (nil when it is): `/readyz` answers 503 with it.
    public let notReady: (@Sendable () -> String?)?
    /// What an operator must look at although the node serves (e.g. a CRL kept in force over a
    /// broken file): `/readyz` lists them.
    public let alerts: (@Sendable () -> [String])?

    public init(
        store: NodeStore, version: String, startedAt: String, physicalMillis: @escaping @Sendable () -> UInt64,
        peers: (@Sendable () -> API.PeerList)? = nil, metrics: (@Sendable () -> String)? = nil,
        ledger: LedgerStore? = nil, verifierKey: NoteVerifier? = nil,
        peerCheckpoint: (@Sendable (CitySlug) async throws -> API.PeerCheckpoint)? = nil, certificates: (node: String, ca: String)? = nil,
        policy: PolicyManager? = nil, agreements: (any AgreementDesk)? = nil, replication: (any ReplicaDesk)? = nil,
        notReady: (@Sendable () -> String?)? = nil, alerts: (@Sendable () -> [String])? = nil
    ) {
        self.notReady = notReady
        self.alerts = alerts
        self.replication = replication
        self.policy = policy
        self.agreements = agreements
        self.store = store
        self.version = version
        self.startedAt = startedAt
        self.physicalMillis = physicalMillis
        self.peers = peers
        self.metrics = metrics
        self.ledger = ledger
        self.peerCheckpoint = peerCheckpoint
        self.verifierKey = verifierKey
        self.certificates = certificates
    }

    /// A checkpoint note with the cosignatures witnesses sent for it appended (C2SP tlog-cosignature).
    static func cosigned(_ note: String, size: UInt64, _ ledger: LedgerStore) async throws -> String {
        note + (try await ledger.cosignatures(size: size)).map(\.line).joined()
    }

    /// The admin API and, under `/console`, the web console (a client of the same routes).
    public func makeRouter() -> Router<AdminContext> {
        let router = makeAPIRouter()
        Console(admin: self, api: makeAPIRouter().buildResponder()).register(on: router)
        return router
    }

    func makeAPIRouter() -> Router<AdminContext> {
        let router = Router(context: AdminContext.self)
        router.add(middleware: ServerTimingMiddleware())
        router.add(middleware: JSONErrorMiddleware())
        router.add(middleware: TokenAuthMiddleware(store: store))
        router.add(middleware: WritePriorityMiddleware(store: store))
        router.get("/healthz") { _, _ in json(["status": "ok"]) }
        router.get("/readyz") { _, _ in
            guard let reason = notReady?() else {
                let alerts = alerts?() ?? []
                return alerts.isEmpty ? json(["status": "ready"]) : json(Ready(status: "ready", alerts: alerts))
            }
            return json(["status": "starting", "reason": reason], status: .serviceUnavailable)
        }
        router.get("/v1/node") { _, _ in
            json(API.NodeInfo(city: store.city.rawValue, version: version, datasets: try await store.datasets().count, startedAt: startedAt))
        }

        router.get("/metrics") { _, _ in
            guard let metrics else {
                throw CityMeshError(.nodeNotRunning, "this process has no metrics backend")
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metrics())))
        }
        router.get("/v1/audit/log") { request, _ in
            let ledger = try requireLedger()
            let q = request.uri.queryParameters
            let limit = try limitParameter(request)
            let before = try q.get("before").map { text in
                guard let n = UInt64(text) else { throw CityMeshError(.invalidArgument, "before must be an entry index (0, 1, …), got '\(text)'") }
                return n
            }
            let order = q.get("order") ?? "oldest"
            guard order == "oldest" || order == "newest" else {
                throw CityMeshError(.invalidArgument, "order is 'oldest' (the default) or 'newest', got '\(order)'")
            }
            let entries = try await ledger.entries(
                since: try sinceParameter(request), until: try sinceParameter(request, name: "until"), peer: q.get("peer"), kind: q.get("kind"),
                dataset: q.get("dataset"), contains: q.get("contains").flatMap { $0.isEmpty ? nil : $0 }, before: before,
                newestFirst: order == "newest", limit: limit)
            return json(API.AuditLog(entries: entries))
        }
        // A ledger key gives whoever holds it the power to test guesses of record keys against
        // the ledger: only an admin hands it out (to an auditor, for a specific inquiry).
        router.get("/v1/audit/key") { request, context in
            try context.require(.admin)
            let q = request.uri.queryParameters
            guard let name = q.get("dataset") else { throw CityMeshError(.invalidArgument, "say which dataset: ?dataset=owner/name") }
            let id = try DatasetID(parsing: name, localCity: store.city)
            _ = try await store.dataset(id)
            if let share = q.get("share") {
                let full = "\(id.owner)/\(share)"
                guard let key = try await store.knownShareKey(full) else {
                    throw CityMeshError(.recordNotFound, "no ledger key is known for share \(full): its offers carry none (made before offers did), or it is not a share of this node")
                }
                return json(API.LedgerKeyInfo(dataset: id.description, share: full, id: key.id, key: key.hex))
            }
            let key = try await store.ledgerKey(for: id)
            return json(API.LedgerKeyInfo(dataset: id.description, share: nil, id: key.id, key: key.hex))
        }
        router.get("/v1/audit/checkpoint") { request, _ in
            let ledger = try requireLedger()
            if request.uri.queryParameters.get("witnessed") == "1" {
                guard let size = try await ledger.latestCosignedSize(), let note = try await ledger.checkpoint(size: size) else {
                    throw CityMeshError(.recordNotFound, "no checkpoint has been cosigned yet: peers cosign within about 10 s of connecting (see 'citymesh audit witnesses')")
                }
                return text(try await Self.cosigned(note, size: size, ledger))
            }
            guard let latest = try await ledger.latestCheckpoint() else {
                throw CityMeshError(.recordNotFound, "no checkpoint yet: the node signs one within seconds of the first entry")
            }
            return text(try await Self.cosigned(latest.note, size: latest.size, ledger))
        }
        router.get("/v1/audit/witnesses") { _, _ in
            let ledger = try requireLedger()
            let latest = try await ledger.latestCheckpoint()?.size ?? 0
            return json(API.Witnesses(checkpointSize: latest, witnesses: try await ledger.latestCosignatures().map {
                API.Witnesses.Item(city: $0.city, witness: $0.witness, size: $0.size, timestamp: $0.timestamp, cosignature: $0.line)
            }))
        }
        router.get("/v1/audit/vkey") { request, _ in
            _ = try requireLedger()
            guard let verifierKey else { throw CityMeshError(.nodeNotRunning, "this node's key is neither Ed25519 nor ECDSA P-256, so it signs no checkpoints") }
            if request.uri.queryParameters.get("witness") == "1" {
                return text(try CosignerKey(name: Cosignature.witnessName(store.city), publicKey: verifierKey.publicKey).vkey + "\n")
            }
            return text(verifierKey.vkey + "\n")
        }
        router.get("/v1/audit/prove") { request, _ in
            let ledger = try requireLedger()
            guard let index = request.uri.queryParameters.get("index").flatMap({ UInt64($0) }) else {
                throw CityMeshError(.invalidArgument, "give the entry as ?index=N (see 'citymesh audit log' for indices)")
            }
            let size = try await treeSize(request.uri.queryParameters.get("size"), ledger)
            guard index < size else {
                throw CityMeshError(.invalidArgument, "entry \(index) is not in the tree of size \(size): give --size above \(index), or wait for the next checkpoint")
            }
            let (proof, root, leaf) = try await ledger.inclusionProof(index: index, size: size)
            guard let bytes = try await ledger.entryBytes(index) else { throw CityMeshError(.recordNotFound, "no entry \(index)") }
            var cosignedNote: String?
            if let note = try await ledger.checkpoint(size: size) { cosignedNote = try await Self.cosigned(note, size: size, ledger) }
            return json(API.InclusionProof(
                index: index, treeSize: size, leafHash: leaf.base64, rootHash: root.base64,
                proof: proof.map(\.base64), entry: try LedgerEntry.decode(bytes),
                checkpoint: cosignedNote, entryBytes: Data(bytes).base64EncodedString()))
        }
        router.get("/v1/audit/consistency") { request, _ in
            let ledger = try requireLedger()
            guard let from = request.uri.queryParameters.get("from").flatMap({ UInt64($0) }), from > 0 else {
                throw CityMeshError(.invalidArgument, "give the older tree size as ?from=N (N ≥ 1)")
            }
            let to = try await treeSize(request.uri.queryParameters.get("to"), ledger)
            guard from <= to else { throw CityMeshError(.invalidArgument, "--from \(from) is larger than --to \(to)") }
            let (proof, root1, root2) = try await ledger.consistencyProof(size1: from, size2: to)
            return json(API.ConsistencyProof(size1: from, size2: to, rootHash1: root1.base64, rootHash2: root2.base64, proof: proof.map(\.base64)))
        }
        router.get("/v1/audit/bundle") { request, _ in
            let ledger = try requireLedger()
            guard let verifierKey, let certificates else { throw CityMeshError(.nodeNotRunning, "this node's key is neither Ed25519 nor ECDSA P-256, so it signs no checkpoints") }
            guard let latest = try await ledger.latestCheckpoint() else {
                throw CityMeshError(.recordNotFound, "no checkpoint yet: wait a few seconds for the first one")
            }
            let since = try sinceParameter(request)
            let rows = try await ledger.entryRows(size: latest.size, since: since)
            var items: [AuditBundle.Item] = []
            if since == nil {
                items = rows.map { AuditBundle.Item(index: $0.0, entry: Data($0.1).base64EncodedString(), proof: nil) }
            } else {
                let proofs = try await ledger.inclusionProofs(indices: rows.map(\.0), size: latest.size)
                for ((index, bytes), proof) in zip(rows, proofs) {
                    items.append(AuditBundle.Item(index: index, entry: Data(bytes).base64EncodedString(), proof: proof.map(\.base64)))
                }
            }
            // The largest cosigned checkpoint, and the proof that the bundle's checkpoint extends it.
            var witnessed: AuditBundle.Witnessed?
            if let size = try await ledger.latestCosignedSize(), size <= latest.size, let note = try await ledger.checkpoint(size: size) {
                let cosignatures = try await ledger.cosignatures(size: size)
                let proof = size < latest.size ? try await ledger.consistencyProof(size1: size, size2: latest.size).proof.map(\.base64) : []
                witnessed = AuditBundle.Witnessed(
                    checkpoint: note + cosignatures.map(\.line).joined(), consistency: proof, certificates: cosignatures.map(\.certificate))
            }
            return json(AuditBundle(
                origin: verifierKey.name, verifierKey: verifierKey.vkey, nodeCertificate: certificates.node, caCertificate: certificates.ca,
                checkpoint: latest.note, complete: since == nil, entries: items, witnessed: witnessed))
        }
        router.get("/v1/audit/verify") { request, _ in
            guard let verifierKey else { throw CityMeshError(.nodeNotRunning, "this node's key is neither Ed25519 nor ECDSA P-256, so it signs no checkpoints") }
            let ledger = try requireLedger()
            guard request.uri.queryParameters.get("progress") == "1" else { return json(try await ledger.audit(verifier: verifierKey)) }
            // JSON lines: {"done":N,"total":M} as the audit goes, then {"report":{…}}.
            let total = try await ledger.count()
            let (lines, sink) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(64))
            let audit = Task {
                defer { sink.finish() }
                do {
                    let report = try await ledger.audit(verifier: verifierKey) { done in sink.yield("{\"done\":\(done),\"total\":\(max(total, done))}\n") }
                    sink.yield(String(decoding: try JSONEncoder().encode(["report": report]), as: UTF8.self) + "\n")
                } catch {
                    let e = error as? CityMeshError ?? CityMeshError(.internalError, "the audit failed: \(error)")
                    sink.yield(String(decoding: try! JSONEncoder().encode(["error": ["code": e.code.rawValue, "message": e.message]]), as: UTF8.self) + "\n")
                }
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/x-ndjson"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                for await line in lines { try await writer.write(ByteBuffer(string: line)) }
                _ = await audit.result
                try await writer.finish(nil)
            })
        }
        router.get("/v1/policy") { request, _ in
            let policy = try requirePolicy()
            let number = try request.uri.queryParameters.get("version").map { text in
                guard let n = Int(text), n > 0 else { throw CityMeshError(.invalidArgument, "--version '\(text)' is not a version number (1, 2, …)") }
                return n
            }
            let versions = try await store.policyVersions()
            guard let v = try await store.policyVersion(number) else {
                if let number { throw CityMeshError(.recordNotFound, "there is no policy version \(number): versions are 1 to \(versions.count)") }
                return json(API.PolicyShow(current: nil, inForce: nil, versions: versions))
            }
            return json(API.PolicyShow(current: v, inForce: policy.current?.version, versions: versions))
        }
        router.post("/v1/policy/check") { request, _ in
            let policy = try requirePolicy()
            let document = try await bodyText(request)
            do {
                let (changes, warnings) = try await policy.diff(document)
                return json(API.PolicyCheck(ok: true, issues: [], changes: changes, warnings: warnings))
            } catch let issues as PolicyIssues {
                return json(API.PolicyCheck(ok: false, issues: issues.issues, changes: [], warnings: []))
            }
        }
        router.put("/v1/policy") { request, context in
            try context.require(.admin)
            let policy = try requirePolicy()
            let document = try await bodyText(request)
            do {
                let (version, changes, unchanged) = try await policy.apply(document, actor: context.actor)
                context.logger.info("policy applied", metadata: ["policy.version": "\(version.version)", "policy.changes": "\(changes.count)"])
                return json(API.PolicyApplied(version: version.version, sha256: version.sha256, unchanged: unchanged, changes: changes))
            } catch let issues as PolicyIssues {
                throw CityMeshError(.policyInvalid, "the policy was not applied; fix these first ('citymesh policy validate'):\n" + issues.description)
            }
        }
        router.get("/v1/policy/explain") { request, _ in
            let policy = try requirePolicy()
            let q = request.uri.queryParameters
            guard let cityText = q.get("city"), let dataset = q.get("dataset") else {
                throw CityMeshError(.invalidArgument, "give ?city=CITY&dataset=NAME (e.g. --city shanghai --dataset air-quality)")
            }
            return json(try await policy.explain(member: try CitySlug(cityText), dataset: dataset))
        }
        // The same question asked of a draft (the request body), before it is applied.
        router.post("/v1/policy/explain") { request, _ in
            let policy = try requirePolicy()
            let q = request.uri.queryParameters
            guard let cityText = q.get("city"), let dataset = q.get("dataset") else {
                throw CityMeshError(.invalidArgument, "give ?city=CITY&dataset=NAME and the draft policy as the body")
            }
            let draft = try await bodyText(request)
            do {
                return json(try await policy.explain(member: try CitySlug(cityText), dataset: dataset, draft: draft))
            } catch let issues as PolicyIssues {
                throw CityMeshError(.policyInvalid, "the draft does not validate, so it explains nothing yet:\n" + issues.description)
            }
        }
        router.get("/v1/policy/preview") { request, _ in
            let policy = try requirePolicy()
            let q = request.uri.queryParameters
            guard let cityText = q.get("city"), let dataset = q.get("dataset"), let key = q.get("key") else {
                throw CityMeshError(.invalidArgument, "give ?city=CITY&dataset=NAME&key=KEY")
            }
            // A preview asks the policy; it is not a denial of anything, so it is not ledgered.
            switch try await policy.view(dataset: dataset, key: key, for: try CitySlug(cityText), ledgered: false) {
            case .success(let values):
                return json(API.PolicyPreview(sent: true, values: values.mapValues { $0?.json ?? .null }, denial: nil, reason: nil))
            case .failure(let denial):
                return json(API.PolicyPreview(sent: false, values: [:], denial: denial.code, reason: denial.description))
            }
        }
        router.get("/v1/agreements") { _, _ in
            guard let agreements else { throw CityMeshError(.nodeNotRunning, "this node runs without agreements") }
            return json(try await agreements.list())
        }
        router.post("/v1/agreements/{owner}/{share}/{action}") { _, context in
            try context.require(.admin)
            guard let agreements else { throw CityMeshError(.nodeNotRunning, "this node runs without agreements") }
            let owner = try CitySlug(context.parameters.get("owner") ?? "")
            let share = context.parameters.get("share") ?? ""
            switch context.parameters.get("action") {
            case "accept", "reject":
                let accept = context.parameters.get("action") == "accept"
                return json(try await agreements.respond(owner: owner, share: share, accept: accept, actor: context.actor))
            default:
                throw CityMeshError(.invalidArgument, "the action is accept or reject")
            }
        }
        router.post("/v1/shares/{share}/revoke") { request, context in
            try context.require(.admin)
            guard let agreements else { throw CityMeshError(.nodeNotRunning, "this node runs without agreements") }
            guard let member = request.uri.queryParameters.get("city") else {
                throw CityMeshError(.invalidArgument, "give the member city: --city CITY")
            }
            let share = context.parameters.get("share") ?? ""
            return json(try await agreements.revoke(share: share, member: try CitySlug(member), actor: context.actor))
        }
        // A POST, for operators: fetching a peer's checkpoint keeps it, may ledger a fork and
        // cosigns it — writes, which no GET (and no auditor) may cause.
        router.post("/v1/peers/{city}/checkpoint") { _, context in
            try context.require(.operator)
            guard let peerCheckpoint else { throw CityMeshError(.nodeNotRunning, "this node runs without a peer transport") }
            let city = try CitySlug(context.parameters.get("city") ?? "")
            return json(try await peerCheckpoint(city))
        }
        router.get("/v1/peers") { _, _ in
            guard let peers else {
                throw CityMeshError(.nodeNotRunning, "this node runs without a peer transport")
            }
            return json(peers())
        }

        router.get("/v1/datasets") { _, _ in
            json(API.DatasetList(datasets: try await store.datasets().map(API.Dataset.init)))
        }
        router.post("/v1/datasets") { request, context in
            try context.require(.operator)
            let body = try await decodeBody(request, as: API.CreateDataset.self)
            let id = try DatasetID(owner: store.city, name: body.name)
            let schema = try Schema(keyField: body.key, fields: body.fields.map { ($0.name, $0.type) })
            let info = try await store.createDataset(
                id, schema: schema, createdAt: now(), log: entry(LedgerEntry.Kind.datasetCreated, context, dataset: id, counts: ["fields": schema.fields.count]))
            context.logger.info("dataset created", metadata: ["dataset.id": "\(id)"])
            return json(API.Dataset(info), status: .created)
        }
        router.get("/v1/datasets/:owner/:name") { _, context in
            json(API.Dataset(try await store.dataset(try datasetID(context))))
        }
        router.post("/v1/datasets/:owner/:name/fields") { request, context in
            try context.require(.operator)
            let body = try await decodeBody(request, as: API.AddField.self)
            let id = try datasetID(context)
            guard id.owner == store.city else {
                throw CityMeshError(.forbidden, "'\(id)' is \(id.owner)'s dataset: only \(id.owner) can add fields; they arrive here with its next batch")
            }
            let info = try await store.addField(
                id, name: body.name, type: body.type, log: entry(LedgerEntry.Kind.fieldAdded, context, dataset: id, detail: "\(body.name): \(body.type.rawValue)"))
            return json(API.Dataset(info))
        }
        router.get("/v1/datasets/:owner/:name/records") { request, context in
            let id = try datasetID(context)
            let limit = try limitParameter(request)
            let after = request.uri.queryParameters.get("after")
            let info = try await store.dataset(id)
            let page = try await store.list(id, after: after, limit: limit)
            return json(API.RecordPage(
                records: page.map { API.Record($0, schema: info.schema, withMeta: false) },
                next: page.count == limit ? page.last?.key : nil))
        }
        router.get("/v1/datasets/:owner/:name/record") { request, context in
            let id = try datasetID(context)
            let key = try keyParameter(request)
            let info = try await store.dataset(id)
            guard let r = try await store.get(id, key: key), r.state.isLive else {
                throw CityMeshError(.recordNotFound, "no record '\(key)' in '\(id)': list keys with 'citymesh record list \(id.name)'")
            }
            return json(API.Record(r, schema: info.schema, withMeta: true))
        }
        router.put("/v1/datasets/:owner/:name/record") { request, context in
            try context.require(.operator)
            var timing = ServerTiming()
            let id = try datasetID(context)
            let key = try keyParameter(request)
            let body = try await decodeBody(request, as: API.PutRecord.self)
            let info = try await store.dataset(id)
            try await checkReplicaWrite(id, key: key, fields: Array(body.values.keys), delete: false)
            let input = try RecordInput.fromJSON(body.values, key: key, schema: info.schema)
            timing.lap("check")
            // The schema is already in hand: stamp and encode here. Then one durable transaction
            // writes the record and its ledger entry together.
            let s = try await store.apply(
                id, store.prepare([input], schema: info.schema, physicalMillis: physicalMillis()),
                log: try await ledgerNote(LedgerEntry.Kind.recordWritten, context, dataset: id, key: key) { ["written": $0.written, "unchanged": $0.unchanged] })
            timing.lap("store")
            return timing.add(to: json(API.WriteResult(written: s.written, unchanged: s.unchanged, seq: s.lastSeq)))
        }
        router.delete("/v1/datasets/:owner/:name/record") { request, context in
            try context.require(.operator)
            let id = try datasetID(context)
            let key = try keyParameter(request)
            try await checkReplicaWrite(id, key: key, fields: [], delete: true)
            let s = try await store.delete(
                id, key: key, physicalMillis: physicalMillis(),
                log: try await ledgerNote(LedgerEntry.Kind.recordDeleted, context, dataset: id, key: key) { ["deleted": $0.written] })
            return json(API.WriteResult(written: s.written, unchanged: s.unchanged, seq: s.lastSeq))
        }
        // Erasure (docs/protocol.md §8 "Compaction"): the record is deleted, and its old values
        // are compacted out of every stored batch — here at once, at each party when it has the
        // deletion. Irreversible, so an admin's.
        router.post("/v1/datasets/:owner/:name/erase") { request, context in
            try context.require(.admin)
            let id = try datasetID(context)
            // One key (?key=) or many ({"keys": [...]}, at most 10,000): one compaction pass for all.
            var keys: [String]
            if request.uri.queryParameters.get("key") != nil {
                keys = [try keyParameter(request)]
            } else {
                keys = try await decodeBody(request, as: API.EraseKeys.self).keys
                guard (1...10_000).contains(keys.count) else {
                    throw CityMeshError(.invalidArgument, "name from 1 to 10,000 keys to erase (got \(keys.count)); erase more in several calls")
                }
                // A key named twice is erased once.
                var named: Set<String> = []
                keys = keys.filter { named.insert($0).inserted }
            }
            guard id.owner == store.city else {
                throw CityMeshError(
                    .forbidden, "'\(id)' is \(id.owner)'s dataset: only \(id.owner) can erase its records (the erasure then reaches this replica with the deletion)")
            }
            // Every key is checked before anything is erased: a typo erases nothing.
            var live: Set<String> = []
            for key in keys {
                guard let existing = try await store.get(id, key: key) else {
                    throw CityMeshError(.recordNotFound, "no record '\(key)' in '\(id)' (never written, or erased and collected already): nothing was erased")
                }
                if existing.state.isLive { live.insert(key) }
            }
            // All deleted in one transaction, each with its `record.erased` entry (one fsync).
            var log: (@Sendable (String, Int) -> LedgerEntry)?
            if ledger != nil {
                let (time, actor, ledgerKey) = (now(), context.actor, try await store.ledgerKey(for: id))
                log = { key, deleted in
                    LedgerEntry(time: time, kind: LedgerEntry.Kind.recordErased, actor: actor, dataset: "\(id)", counts: ["deleted": deleted], hashes: ledgerKey.entryHashes(key))
                }
            }
            _ = try await store.erase(id, keys: keys, physicalMillis: physicalMillis(), log: log)
            let compacted = await replication?.compactNow()[id] ?? CompactionResult()
            let parties = (await replication?.status() ?? []).filter { $0.dataset == id.description }.flatMap { share in
                share.parties.map { API.Erasure.Party(city: $0.city, share: share.share, hasDeletion: $0.state == "in_sync" && $0.missingThere == 0) }
            }
            return json(
                API.Erasure(
                    key: keys.count == 1 ? keys[0] : "\(keys.count) keys", deleted: live.count == keys.count, erased: keys.count, deletedNow: live.count,
                    compactedRecords: compacted.records, compactedBatches: compacted.batches, legacyBatches: compacted.legacy, parties: parties))
        }
        router.post("/v1/datasets/:owner/:name/import") { request, context in
            try context.require(.operator)
            let id = try datasetID(context)
            let format = try ImportFormat(request.uri.queryParameters.get("format") ?? "csv")
            let info = try await store.dataset(id)
            guard id.owner == store.city else {
                throw CityMeshError(.forbidden, "'\(id)' is \(id.owner)'s dataset, replicated here: import into your own datasets, and write a replica's granted fields with 'citymesh record put'")
            }
            await replication?.willWrite(dataset: id)
            var importer = Importer(store: store, dataset: id, schema: info.schema, format: format, physicalMillis: physicalMillis)
            if ledger != nil {
                let (time, actor) = (now(), context.actor)
                importer.log = { lines, written in
                    LedgerEntry(
                        time: time, kind: LedgerEntry.Kind.importChunk, actor: actor, dataset: "\(id)", counts: ["imported": written.written, "unchanged": written.unchanged],
                        detail: "lines \(lines.lowerBound)–\(lines.upperBound)")
                }
            }
            let summary = try await importer.run(request.body)
            context.logger.info(
                "import finished",
                metadata: ["dataset.id": "\(id)", "import.rows": "\(summary.imported)", "import.rejected": "\(summary.rejected)"])
            try await record(
                LedgerEntry.Kind.imported, context, dataset: id,
                counts: ["imported": summary.imported, "unchanged": summary.unchanged, "rejected": summary.rejected, "bytes": summary.bytes],
                hashes: ["content.sha256": summary.contentSHA256], detail: format == .csv ? "csv" : "jsonl")
            return json(summary)
        }
        router.get("/v1/datasets/:owner/:name/export") { request, context in
            let id = try datasetID(context)
            let format = try ImportFormat(request.uri.queryParameters.get("format") ?? "jsonl")
            let info = try await store.dataset(id)
            var headers = HTTPFields()
            headers[.contentType] = format == .csv ? "text/csv; charset=utf-8" : "application/x-ndjson"
            let store = self.store
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                if format == .csv {
                    try await writer.write(ByteBuffer(string: Exporter.csvHeader(info.schema)))
                }
                try await store.scan(id) { page in
                    try await writer.write(ByteBuffer(bytes: Exporter.encode(page, schema: info.schema, format: format)))
                }
                try await writer.finish(nil)
            })
        }

        router.get("/v1/replication") { _, _ in
            json(API.Replication(city: store.city.rawValue, shares: await replication?.status() ?? []))
        }
        router.get("/v1/datasets/:owner/:name/conflicts") { request, context in
            let id = try datasetID(context)
            _ = try await store.dataset(id)
            let all = request.uri.queryParameters.get("all") == "1"
            return json(API.ConflictList(dataset: id.description, conflicts: try await replication?.conflicts(dataset: id, all: all) ?? []))
        }
        router.post("/v1/datasets/:owner/:name/conflicts/resolve") { request, context in
            try context.require(.operator)
            let id = try datasetID(context)
            let body = try await decodeBody(request, as: API.ResolveConflict.self)
            let info = try await store.dataset(id)
            guard let field = info.schema.field(named: body.field) else {
                throw CityMeshError(.unknownField, "'\(id)' has no field '\(body.field)': its fields are \(info.schema.fields.map(\.name).joined(separator: ", "))")
            }
            let open = try await store.conflicts(id, open: true).filter { $0.key == body.key && $0.field == body.field }
            guard !open.isEmpty else {
                throw CityMeshError(.recordNotFound, "no open conflict on '\(body.key)'.\(body.field) in '\(id)': list them with 'citymesh record conflicts \(id)'")
            }
            let choices = [body.value != nil, body.take != nil, body.keep == true].filter { $0 }.count
            guard choices == 1 else {
                throw CityMeshError(.invalidArgument, "say how to settle it with exactly one of: a value (--value), a conflict to take (--take ID), or --keep")
            }
            let value: JSONValue
            if let v = body.value {
                value = v
            } else if let take = body.take {
                guard let c = open.first(where: { $0.id == take }) else {
                    throw CityMeshError(.recordNotFound, "conflict \(take) is not an open conflict of '\(body.key)'.\(body.field): the open ones are \(open.map { String($0.id) }.joined(separator: ", "))")
                }
                value = try c.value.map { try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) } ?? .null
            } else {
                guard let r = try await store.get(id, key: body.key) else {
                    throw CityMeshError(.recordNotFound, "no record '\(body.key)' in '\(id)'")
                }
                value = r.state.value(field: field.id)?.json ?? .null
            }
            try await checkReplicaWrite(id, key: body.key, fields: [body.field], delete: false)
            let input = try RecordInput.fromJSON([body.field: value], key: body.key, schema: info.schema)
            // The value, the settlement and their entry: one transaction, durable before the answer.
            let note = try await ledgerNote(LedgerEntry.Kind.recordWritten, context, dataset: id, key: body.key, detail: "settled conflicts on field \(body.field)") {
                ["written": $0.written, "conflicts_settled": $0.settled]
            }
            let s = try await store.apply(
                id, store.prepare([input], schema: info.schema, physicalMillis: physicalMillis()), settling: (body.key, body.field, context.actor, now()), log: note)
            return json(API.WriteResult(written: s.written, unchanged: s.unchanged, seq: s.lastSeq))
        }

        router.get("/v1/tokens") { _, context in
            try context.require(.admin)
            return json(API.TokenList(tokens: try await store.tokens()))
        }
        router.post("/v1/tokens") { request, context in
            try context.require(.admin)
            let body = try await decodeBody(request, as: API.CreateToken.self)
            let (tokenID, token) = AdminToken.generate()
            try await store.insertToken(
                id: tokenID, name: body.name, role: body.role, hash: AdminToken.hash(token), createdAt: now(),
                log: entry(LedgerEntry.Kind.tokenCreated, context, detail: "token:\(tokenID) role \(body.role.rawValue)"))
            context.logger.info("token created", metadata: ["token.id": "\(tokenID)", "token.role": "\(body.role.rawValue)"])
            return json(API.NewToken(id: tokenID, name: body.name, role: body.role, token: token), status: .created)
        }
        router.delete("/v1/tokens/:id") { _, context in
            try context.require(.admin)
            let tokenID = try context.parameters.require("id")
            try await store.revokeToken(id: tokenID, at: now(), log: entry(LedgerEntry.Kind.tokenRevoked, context, detail: "token:\(tokenID)"))
            return json(["revoked": tokenID])
        }
        return router
    }

    /// An admin action's ledger entry, for the store to append in the action's own transaction
    /// (durably, before the API answers); nil without a ledger (route tests).
    func entry(
        _ kind: String, _ context: AdminContext, dataset: DatasetID? = nil, counts: [String: Int]? = nil, hashes: [String: String]? = nil,
        detail: String? = nil
    ) -> LedgerEntry? {
        guard ledger != nil else { return nil }
        return LedgerEntry(time: now(), kind: kind, actor: context.actor, dataset: dataset.map { "\($0)" }, counts: counts, hashes: hashes, detail: detail)
    }

    /// Appends an admin action to the ledger and waits until it is durable (for actions that are
    /// not a store write of their own: the summary of an import whose chunks were ledgered).
    func record(
        _ kind: String, _ context: AdminContext, dataset: DatasetID? = nil, counts: [String: Int]? = nil, hashes: [String: String]? = nil,
        detail: String? = nil
    ) async throws {
        guard let ledger, let e = entry(kind, context, dataset: dataset, counts: counts, hashes: hashes, detail: detail) else { return }
        _ = try await ledger.append(e)
    }

    /// The ledger entry of a record write, made inside the write's own transaction once its counts
    /// are known (nil without a ledger: route tests).
    ///
    /// Record keys can be personal data (a person's or firm's id): the ledger keeps their keyed
    /// hash (`LedgerKey`: the dataset's own key, or for a replica the share's key from the offer).
    func ledgerNote(
        _ kind: String, _ context: AdminContext, dataset: DatasetID, key: String, detail: String? = nil, counts: @escaping @Sendable (WriteSummary) -> [String: Int]
    ) async throws -> NodeStore.LedgerNote? {
        guard ledger != nil else { return nil }
        let (time, actor, hashes) = (now(), context.actor, try await store.ledgerKey(for: dataset).entryHashes(key))
        return { summary in LedgerEntry(time: time, kind: kind, actor: actor, dataset: "\(dataset)", counts: counts(summary), hashes: hashes, detail: detail) }
    }

    /// A tree size from a parameter, defaulting to the latest signed checkpoint; never beyond the log.
    func treeSize(_ text: String?, _ ledger: LedgerStore) async throws -> UInt64 {
        let count = try await ledger.count()
        if let text {
            guard let size = UInt64(text), size > 0, size <= count else {
                throw CityMeshError(.invalidArgument, "tree size '\(text)' is not between 1 and the log's \(count) entries")
            }
            return size
        }
        guard let latest = try await ledger.latestCheckpoint() else {
            throw CityMeshError(.recordNotFound, "no checkpoint yet: give a size, or wait a few seconds for the first one")
        }
        return latest.size
    }

    /// `?since=`: a date (midnight UTC) or an RFC 3339 time, as the UTC text the ledger stores.
    func sinceParameter(_ request: Request, name: String = "since") throws -> String? {
        guard let text = request.uri.queryParameters.get(name), !text.isEmpty else { return nil }
        let date = text.utf8.count == 10 ? RFC3339.parse(text + "T00:00:00Z") : nil
        guard let micros = date ?? RFC3339.parse(text) else {
            throw CityMeshError(.invalidArgument, "--\(name) '\(text)' is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T08:00:00Z or with an offset, +08:00)")
        }
        return RFC3339.format(microseconds: micros)
    }

    func requirePolicy() throws -> PolicyManager {
        guard let policy else { throw CityMeshError(.nodeNotRunning, "this node runs without a policy manager") }
        return policy
    }

    func requireLedger() throws -> LedgerStore {
        guard let ledger else { throw CityMeshError(.nodeNotRunning, "this node runs without a ledger") }
        return ledger
    }

    func now() -> String { RFC3339.format(microseconds: Int64(physicalMillis()) * 1000) }

    /// Writes to another city's dataset (a replica) go through the share's write rights.
    func checkReplicaWrite(_ id: DatasetID, key: String, fields: [String], delete: Bool) async throws {
        await replication?.willWrite(dataset: id)
        guard id.owner != store.city else { return }
        guard let replication else {
            throw CityMeshError(.forbidden, "'\(id)' is \(id.owner)'s dataset: this node cannot write it")
        }
        try await replication.checkLocalWrite(dataset: id, key: key, fields: fields, delete: delete)
    }

    func datasetID(_ context: AdminContext) throws -> DatasetID {
        try DatasetID(owner: CitySlug(try context.parameters.require("owner")), name: try context.parameters.require("name"))
    }

    func keyParameter(_ request: Request) throws -> String {
        guard let key = request.uri.queryParameters.get("key"), !key.isEmpty else {
            throw CityMeshError(.keyMissing, "missing ?key= parameter: name the record's key")
        }
        return key
    }

    func limitParameter(_ request: Request) throws -> Int {
        guard let raw = request.uri.queryParameters.get("limit") else { return 100 }
        guard let n = Int(raw), (1...10_000).contains(n) else {
            throw CityMeshError(.invalidArgument, "limit must be a number from 1 to 10000, got '\(raw)'")
        }
        return n
    }
}

/// Decodes a JSON request body; malformed JSON becomes a `DecodingError` that the error middleware explains.
func decodeBody<T: Decodable>(_ request: Request, as: T.Type) async throws -> T {
    var request = request
    let buffer: ByteBuffer
    do { buffer = try await request.collectBody(upTo: 2 << 20) } catch {
        throw CityMeshError(.valueTooLarge, "the request body is over 2 MiB: send fewer values at once, or use import for bulk data")
    }
    return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
}

/// A plain-text response.
func text(_ body: String) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/plain; charset=utf-8"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
}

/// What the admin API asks of the node's agreements (implemented by the node).
/// Replication, for the admin API: what a local write to a replica may change, conflicts, sync state.
public protocol ReplicaDesk: Sendable {
    /// Throws `forbidden` if a local write of `fields` (or a delete) to `dataset` is not allowed.
    /// Throws `forbidden` if a local write of `fields` (or a delete) to record `key` of `dataset`
    /// is not allowed (`WriteRights.localWrite`).
    func checkLocalWrite(dataset: DatasetID, key: String, fields: [String], delete: Bool) async throws
    /// Called just before a local write to `dataset`: what this node knows of others' writes now
    /// is what the write knew (the `seen` map its batch will carry).
    func willWrite(dataset: DatasetID) async
    func conflicts(dataset: DatasetID, all: Bool) async throws -> [StoredConflict]
    func status() async -> [API.ShareSync]
    /// Runs a compaction pass now (after `record erase`): records and batches rewritten per dataset.
    func compactNow() async -> [DatasetID: CompactionResult]
}

public protocol AgreementDesk: Sendable {
    func list() async throws -> API.AgreementList
    /// The member accepts or rejects the owner's current offer of `share`.
    func respond(owner: CitySlug, share: String, accept: Bool, actor: String) async throws -> API.AgreementInfo
    /// The owner revokes `member`'s agreement on `share`.
    func revoke(share: String, member: CitySlug, actor: String) async throws -> API.AgreementInfo
}

/// The request body as UTF-8 text (a policy document), at most 1 MiB.
func bodyText(_ request: Request) async throws -> String {
    var request = request
    let buffer: ByteBuffer
    do { buffer = try await request.collectBody(upTo: 1 << 20) } catch {
        throw CityMeshError(.valueTooLarge, "the document is over 1 MiB: a policy is a short YAML file")
    }
    guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
        throw CityMeshError(.invalidUTF8, "the document is not UTF-8 text")
    }
    return text
}

/// A JSON response with stable key order.
/// `/readyz` when the node serves but an operator must look at something.
struct Ready: Encodable {
    let status: String
    let alerts: [String]
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
