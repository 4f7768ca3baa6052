import CityMeshCore
import CityMeshStore
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing
@testable import CityMeshAdmin

final class AcceptedPairs: Sendable {
    let pairs = Mutex<Set<String>>([])
}

/// A router over a real SQLite store with one token per role.
struct Fixture {
    let store: NodeStore
    let app: Application<RouterResponder<AdminContext>>
    var tokens: [Role: String] = [:]

    var ledger: LedgerStore?
    var signer: NoteSigner?
    var policy: PolicyManager?
    /// The (share, member) pairs the tests declare accepted.
    let accepted = AcceptedPairs()

    init(peers: (@Sendable () -> API.PeerList)? = nil, metrics: (@Sendable () -> String)? = nil, withLedger: Bool = false, withPolicy: Bool = false) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cm-admin-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        store = try NodeStore(path: dir + "/citymesh.db", createFor: try CitySlug("hangzhou"))
        for role in Role.allCases {
            let (id, token) = AdminToken.generate()
            try await store.insertToken(id: id, name: role.rawValue, role: role, hash: AdminToken.hash(token), createdAt: "t")
            tokens[role] = token
        }
        if withLedger {
            ledger = LedgerStore(store: store)
            signer = try NoteSigner(name: "hangzhou.citymesh/ledger", key: Curve25519.Signing.PrivateKey())
        }
        if withPolicy {
            let accepted = self.accepted
            policy = PolicyManager(
                store: store, ledger: ledger, signer: try NoteSigner(name: "hangzhou.citymesh/policy", key: Curve25519.Signing.PrivateKey()),
                clock: { 1_795_939_200_000_000 }, accepted: { share, member in accepted.pairs.withLock { $0.contains("\(share) \(member)") } })
        }
        let api = AdminAPI(
            store: store, version: "test", startedAt: "t", physicalMillis: { 1_795_939_200_000 }, peers: peers, metrics: metrics,
            ledger: ledger, verifierKey: signer?.verifier, policy: policy)
        app = Application(router: api.makeRouter())
    }

    func headers(_ role: Role?) -> HTTPFields {
        var h = HTTPFields()
        if let role { h[.authorization] = "Bearer \(tokens[role]!)" }
        h[.contentType] = "application/json"
        return h
    }
}

func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
func data(_ b: ByteBuffer) -> Data { Data(b.readableBytesView) }

func errorCode(_ r: TestResponse) -> String? {
    (try? JSONDecoder().decode(API.ErrorBody.self, from: data(r.body)))?.code
}

let createAir = #"{"name":"air-quality","key":"station","fields":[{"name":"station","type":"string"},{"name":"district","type":"string"},{"name":"pm25","type":"double"},{"name":"measured_at","type":"timestamp"}]}"#

@Suite("Admin API")
struct AdminAPITests {
    @Test("no token is 401, a wrong token is 401, health needs none")
    func authentication() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect(errorCode(r) == "auth.unauthenticated")
            }
            var bad = HTTPFields()
            bad[.authorization] = "Bearer cm_00000000_wrong"
            try await client.execute(uri: "/v1/datasets", method: .get, headers: bad) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/healthz", method: .get) { r in #expect(r.status == .ok) }
        }
    }

    @Test("auditors read but every write is 403; token management is admin-only")
    func roles() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.auditor), body: body(createAir)) { r in
                #expect(r.status == .forbidden)
                #expect(errorCode(r) == "auth.forbidden")
            }
            try await client.execute(uri: "/v1/datasets", method: .get, headers: f.headers(.auditor)) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/v1/tokens", method: .get, headers: f.headers(.operator)) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.operator), body: body(createAir)) { r in
                #expect(r.status == .created)
            }
            try await client.execute(
                uri: "/v1/datasets/hangzhou/air-quality/record?key=S-1", method: .put, headers: f.headers(.auditor),
                body: body(#"{"values":{"pm25":1}}"#)
            ) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-1", method: .delete, headers: f.headers(.auditor)) { r in
                #expect(r.status == .forbidden)
            }
        }
    }

    @Test("records: put, get with cell metadata, list, delete, and clear errors")
    func records() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.admin), body: body(createAir)) { r in
                #expect(r.status == .created)
            }
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.admin), body: body(createAir)) { r in
                #expect(r.status == .conflict)
                #expect(errorCode(r) == "dataset.exists")
            }
            let put = #"{"values":{"pm25":"41.5","district":"Xihu"}}"#
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-001", method: .put, headers: f.headers(.admin), body: body(put)) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-001", method: .get, headers: f.headers(.auditor)) { r in
                let rec = try JSONDecoder().decode(API.Record.self, from: data(r.body))
                #expect(rec.values["pm25"] == .double(41.5))
                #expect(rec.values["district"] == .string("Xihu"))
                #expect(rec.values["measured_at"] == .null)
                #expect(rec.meta?["pm25"]?.city == "hangzhou")
            }
            for (bad, code) in [
                (#"{"values":{"pm25":"high"}}"#, "value.type_mismatch"),
                (#"{"values":{"pm10":1}}"#, "field.unknown"),
                (#"{"values":{"pm25":true}}"#, "value.type_mismatch"),
                (#"{"values":"#, "request.invalid_json"),
            ] {
                try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-001", method: .put, headers: f.headers(.admin), body: body(bad)) { r in
                    #expect(r.status == .badRequest, "\(bad)")
                    #expect(errorCode(r) == code, "\(bad): \(String(buffer: r.body))")
                }
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/nope/records", method: .get, headers: f.headers(.admin)) { r in
                #expect(r.status == .notFound)
                #expect(errorCode(r) == "dataset.not_found")
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/records?limit=0", method: .get, headers: f.headers(.admin)) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-001", method: .delete, headers: f.headers(.operator)) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=S-001", method: .get, headers: f.headers(.admin)) { r in
                #expect(r.status == .notFound)
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/records", method: .get, headers: f.headers(.admin)) { r in
                let page = try JSONDecoder().decode(API.RecordPage.self, from: data(r.body))
                #expect(page.records.isEmpty)
            }
        }
        // Nothing the refused writes sent was stored.
        #expect(try await f.store.dataset(DatasetID(owner: CitySlug("hangzhou"), name: "air-quality")).recordCount == 0)
    }

    @Test("erase and ledger keys: admin only; garbage, too many or unknown keys are refused with nothing erased; a repeated key is fine")
    func eraseAndKeys() async throws {
        let f = try await Fixture(withLedger: true)
        let ledger = try #require(f.ledger)
        let writer = Task { await ledger.runWriter() }
        defer { ledger.finish(); writer.cancel() }
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.admin), body: body(createAir)) { r in #expect(r.status == .created) }
            for key in ["S-1", "S-2"] {
                try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/record?key=\(key)", method: .put, headers: f.headers(.admin), body: body(#"{"values":{"pm25":1}}"#)) { r in
                    #expect(r.status == .ok)
                }
            }
            let erase = "/v1/datasets/hangzhou/air-quality/erase"
            try await client.execute(uri: erase + "?key=S-1", method: .post, headers: f.headers(.operator), body: body("{}")) { r in #expect(r.status == .forbidden) }
            let tooMany = "{\"keys\":[" + Array(repeating: "\"S-1\"", count: 10_001).joined(separator: ",") + "]}"
            for (bad, status) in [("{\"keys\":", HTTPResponse.Status.badRequest), (#"{"keys":[]}"#, .badRequest), (tooMany, .badRequest), (#"{"keys":["S-1","NOPE"]}"#, .notFound)] {
                try await client.execute(uri: erase, method: .post, headers: f.headers(.admin), body: body(bad)) { r in
                    #expect(r.status == status, "\(bad.prefix(40)): \(String(buffer: r.body))")
                }
            }
            // Nothing was erased by the refused calls.
            #expect(try await f.store.get(DatasetID(owner: CitySlug("hangzhou"), name: "air-quality"), key: "S-1")?.state.isLive == true)
            try await client.execute(uri: erase, method: .post, headers: f.headers(.admin), body: body(#"{"keys":["S-1","S-1"]}"#)) { r in
                #expect(r.status == .ok, "\(String(buffer: r.body))")
                let e = try JSONDecoder().decode(API.Erasure.self, from: data(r.body))
                #expect(e.erased == 1 && e.deletedNow == 1, "a key named twice is erased once")
            }
            #expect(try await f.store.get(DatasetID(owner: CitySlug("hangzhou"), name: "air-quality"), key: "S-1")?.state.isLive == false)
            #expect(try await f.store.get(DatasetID(owner: CitySlug("hangzhou"), name: "air-quality"), key: "S-2")?.state.isLive == true)
            // Several keys, one deleted already: one transaction deletes the other, and each gets its entry.
            try await client.execute(uri: erase, method: .post, headers: f.headers(.admin), body: body(#"{"keys":["S-1","S-2"]}"#)) { r in
                #expect(r.status == .ok, "\(String(buffer: r.body))")
                let e = try JSONDecoder().decode(API.Erasure.self, from: data(r.body))
                #expect(e.erased == 2 && e.deletedNow == 1)
            }
            #expect(try await f.store.get(DatasetID(owner: CitySlug("hangzhou"), name: "air-quality"), key: "S-2")?.state.isLive == false)
            let erased = try await ledger.entries(kind: LedgerEntry.Kind.recordErased)
            #expect(erased.count == 3 && erased.map { $0.counts?["deleted"] ?? -1 }.sorted() == [0, 1, 1], "\(erased)")
            #expect(erased.allSatisfy { $0.hashes?["key.hmac"] != nil }, "keyed hashes, never the key")
            // Ledger keys: an admin's, for a dataset that exists; a share with no key is 404.
            try await client.execute(uri: "/v1/audit/key?dataset=hangzhou/air-quality", method: .get, headers: f.headers(.auditor)) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/v1/audit/key", method: .get, headers: f.headers(.admin)) { r in #expect(r.status == .badRequest) }
            try await client.execute(uri: "/v1/audit/key?dataset=not%20a%20dataset", method: .get, headers: f.headers(.admin)) { r in #expect(r.status == .badRequest || r.status == .notFound) }
            try await client.execute(uri: "/v1/audit/key?dataset=hangzhou/nope", method: .get, headers: f.headers(.admin)) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/v1/audit/key?dataset=hangzhou/air-quality&share=nope", method: .get, headers: f.headers(.admin)) { r in
                // The owner derives every share's key; it answers even for a share it has not offered yet.
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/v1/audit/key?dataset=shanghai/air-quality&share=x", method: .get, headers: f.headers(.admin)) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/v1/audit/key?dataset=hangzhou/air-quality", method: .get, headers: f.headers(.admin)) { r in
                let k = try JSONDecoder().decode(API.LedgerKeyInfo.self, from: data(r.body))
                #expect(LedgerKey(hex: k.key)?.id == k.id && k.share == nil)
            }
        }
    }

    @Test("import keeps good rows, rejects bad ones by line; export round-trips")
    func importExport() async throws {
        let f = try await Fixture()
        let csv = """
            station,district,pm25,measured_at
            S-1,Xihu,41.5,2026-11-29T08:00:00Z
            S-2,Binjiang,not-a-number,2026-11-29T08:00:00Z
            S-3,"Shang, cheng",12,
            ,Xihu,1,
            S-4,Xihu,7
            S-5,Gongshu,3.25,2026-11-29T09:30:00+08:00

            """
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.admin), body: body(createAir))
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/import?format=csv", method: .post, headers: f.headers(.operator), body: body(csv)) { r in
                #expect(r.status == .ok)
                let s = try JSONDecoder().decode(API.ImportSummary.self, from: data(r.body))
                #expect(s.imported == 3)
                #expect(s.rejected == 3)
                #expect(s.rejections.map(\.line) == [3, 5, 6])
                #expect(s.rejections[0].reason.contains("pm25"))
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/import?format=csv", method: .post, headers: f.headers(.operator), body: body("station,pm10\nS-9,1\n")) { r in
                #expect(r.status == .badRequest)
                #expect(errorCode(r) == "field.unknown")
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/import?format=xml", method: .post, headers: f.headers(.operator), body: body("")) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/export?format=csv", method: .get, headers: f.headers(.auditor)) { r in
                #expect(String(buffer: r.body) == """
                    station,district,pm25,measured_at\r
                    S-1,Xihu,41.5,2026-11-29T08:00:00Z\r
                    S-3,"Shang, cheng",12.0,\r
                    S-5,Gongshu,3.25,2026-11-29T01:30:00Z\r

                    """)
            }
            let jsonl = #"{"station":"J-1","pm25":2}"# + "\n" + #"{"station":"J-2","pm25":"x"}"# + "\nnot json\n" + #"{"station":"J-3","district":null}"# + "\n"
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/import?format=jsonl", method: .post, headers: f.headers(.operator), body: body(jsonl)) { r in
                let s = try JSONDecoder().decode(API.ImportSummary.self, from: data(r.body))
                #expect(s.imported == 2)
                #expect(s.rejections.map(\.line) == [2, 3])
            }
            try await client.execute(uri: "/v1/datasets/hangzhou/air-quality/export?format=jsonl", method: .get, headers: f.headers(.auditor)) { r in
                let lines = String(buffer: r.body).split(separator: "\n")
                #expect(lines.count == 5)
                #expect(lines.first == #"{"station":"J-1","district":null,"pm25":2.0,"measured_at":null}"#)
            }
        }
    }

    @Test("tokens: create shows the secret once, the new token works, revoke stops it")
    func tokens() async throws {
        let f = try await Fixture()
        try await f.app.test(.router) { client in
            let created = try await client.execute(uri: "/v1/tokens", method: .post, headers: f.headers(.admin), body: body(#"{"role":"auditor","name":"audit"}"#)) { r in
                #expect(r.status == .created)
                return try JSONDecoder().decode(API.NewToken.self, from: data(r.body))
            }
            var h = HTTPFields()
            h[.authorization] = "Bearer \(created.token)"
            try await client.execute(uri: "/v1/datasets", method: .get, headers: h) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/v1/tokens", method: .get, headers: f.headers(.admin)) { r in
                #expect(!String(buffer: r.body).contains(created.token), "the list must never show secrets")
            }
            try await client.execute(uri: "/v1/tokens/\(created.id)", method: .delete, headers: f.headers(.admin)) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/v1/datasets", method: .get, headers: h) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/v1/tokens", method: .post, headers: f.headers(.admin), body: body(#"{"role":"root","name":"x"}"#)) { r in
                #expect(r.status == .badRequest)
            }
        }
    }

    @Test("peers and metrics: readable by auditors, never anonymously; absent parts say so")
    func peersAndMetrics() async throws {
        let list = API.PeerList(
            city: "hangzhou", listen: "127.0.0.1:7001",
            peers: [
                API.Peer(
                    city: "shanghai", state: "connected", address: "127.0.0.1:7002", direction: "inbound", rttMs: 0.4, lastSeen: "t",
                    certificateExpires: "2027-11-29T00:00:00Z", certificateFingerprint: "ab", protocolVersion: 1, software: "citymesh/0.1.0",
                    fromSeed: false, lastError: nil)
            ],
            refusals: ["foreign_ca": 2], recentRefusals: [])
        let f = try await Fixture(peers: { list }, metrics: { "citymesh_peers_connected 1\n" })
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/peers", method: .get, headers: f.headers(.auditor)) { r in
                #expect(r.status == .ok)
                let got = try JSONDecoder().decode(API.PeerList.self, from: data(r.body))
                #expect(got.peers == list.peers)
                #expect(got.refusals == ["foreign_ca": 2])
            }
            try await client.execute(uri: "/metrics", method: .get, headers: f.headers(.auditor)) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body) == "citymesh_peers_connected 1\n")
                #expect(r.headers[.contentType]?.hasPrefix("text/plain") == true)
            }
            try await client.execute(uri: "/metrics", method: .get) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/v1/peers", method: .get) { r in #expect(r.status == .unauthorized) }
        }
        let bare = try await Fixture()
        try await bare.app.test(.router) { client in
            try await client.execute(uri: "/v1/peers", method: .get, headers: bare.headers(.admin)) { r in
                #expect(r.status != .ok)
                #expect(errorCode(r) == "node.not_running")
            }
        }
    }

    @Test("audit routes: proofs from the stored levels verify; verify streams its progress; --since is checked")
    func auditRoutes() async throws {
        let f = try await Fixture(withLedger: true)
        let ledger = try #require(f.ledger), signer = try #require(f.signer)
        let writer = Task { await ledger.runWriter() }
        defer { ledger.finish(); writer.cancel() }
        try await f.app.test(.router) { client in
            // 300 logged actions: more than one block of 256 leaves.
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.operator), body: body(createAir)) { r in #expect(r.status == .created) }
            for i in 0..<300 {
                try await client.execute(
                    uri: "/v1/datasets/hangzhou/air-quality/record?key=S-\(i)", method: .put, headers: f.headers(.operator),
                    body: body(#"{"values":{"district":"Xihu","pm25":\#(i)}}"#)) { r in #expect(r.status == .ok) }
            }
            let leaves = try await ledger.leafHashes(from: 0)
            #expect(leaves.count == 301)
            let cp = Checkpoint(origin: signer.verifier.name, size: 301, root: Merkle.root(leaves))
            try await ledger.saveCheckpoint(size: 301, note: try signer.sign(cp.text), createdAt: "t")

            for index in [0, 255, 256, 300] {
                try await client.execute(uri: "/v1/audit/prove?index=\(index)", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status == .ok)
                    let p = try JSONDecoder().decode(API.InclusionProof.self, from: data(r.body))
                    #expect(p.rootHash == cp.root.base64 && p.leafHash == leaves[index].base64)
                    try Merkle.verifyInclusion(
                        leaf: leaves[index], index: UInt64(index), size: 301, proof: p.proof.compactMap { MerkleHash(base64: $0) }, root: cp.root)
                }
            }
            try await client.execute(uri: "/v1/audit/consistency?from=200", method: .get, headers: f.headers(.auditor)) { r in
                let p = try JSONDecoder().decode(API.ConsistencyProof.self, from: data(r.body))
                #expect(p.rootHash1 == Merkle.root(leaves.prefix(200)).base64)
                try Merkle.verifyConsistency(
                    size1: 200, size2: 301, root1: Merkle.root(leaves.prefix(200)), root2: cp.root, proof: p.proof.compactMap { MerkleHash(base64: $0) })
            }
            try await client.execute(uri: "/v1/audit/prove?index=301", method: .get, headers: f.headers(.auditor)) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/audit/verify?progress=1", method: .get, headers: f.headers(.auditor)) { r in
                #expect(r.status == .ok)
                let lines = String(buffer: r.body).split(separator: "\n")
                #expect(lines.first == #"{"done":0,"total":301}"#)
                let last = try JSONDecoder().decode([String: LedgerAuditReport].self, from: Data(lines.last!.utf8))
                #expect(last["report"]?.ok == true)
                #expect(last["report"]?.entries == 301)
            }
            for bad in ["yesterday", "2026-13-01", "2026-11-01T25:00:00Z"] {
                try await client.execute(uri: "/v1/audit/log?since=\(bad)", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status == .badRequest)
                    #expect(String(buffer: r.body).contains("RFC 3339"))
                }
            }
            // An offset is turned into the UTC the ledger stores: 2025-12-01 08:00+08:00 is midnight UTC.
            for since in ["2025-12-01", "2025-12-01T08:00:00%2B08:00"] {
                try await client.execute(uri: "/v1/audit/log?since=\(since)&limit=5", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status == .ok)
                    let log = try JSONDecoder().decode(API.AuditLog.self, from: data(r.body))
                    #expect(log.entries.count == 5)
                }
            }
            try await client.execute(uri: "/v1/audit/log?since=2099-01-01", method: .get, headers: f.headers(.auditor)) { r in
                let log = try JSONDecoder().decode(API.AuditLog.self, from: data(r.body))
                #expect(log.entries.isEmpty)
            }
            // Hostile values an auditor can send (issue 18): more than 6 fraction digits used to
            // trap the node building a range; huge numbers must not trap either.
            for since in ["2025-12-01T00:00:00.1234567Z", "2025-12-01T00:00:00.123456789012345678901234567890Z"] {
                try await client.execute(uri: "/v1/audit/log?since=\(since)&until=\(since)&limit=5", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status == .ok)
                }
            }
            for query in [
                "before=18446744073709551615", "before=9223372036854775808", "limit=18446744073709551615", "limit=-1",
            ] {
                try await client.execute(uri: "/v1/audit/log?\(query)", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status == .ok || r.status == .badRequest, "\(query)")
                }
            }
            for query in [
                "prove?index=18446744073709551615", "prove?index=9223372036854775808&size=18446744073709551615",
                "consistency?from=18446744073709551615&to=9223372036854775808", "consistency?from=1&to=18446744073709551615",
            ] {
                try await client.execute(uri: "/v1/audit/\(query)", method: .get, headers: f.headers(.auditor)) { r in
                    #expect(r.status.code >= 400 && r.status.code < 500, "\(query): \(r.status)")
                }
            }
        }
    }

    @Test("policy routes with each role; preview and the enforcement points; every denial ledgered")
    func policyRoutes() async throws {
        let f = try await Fixture(withLedger: true, withPolicy: true)
        let ledger = try #require(f.ledger), policy = try #require(f.policy)
        let writer = Task { await ledger.runWriter() }
        defer { ledger.finish(); writer.cancel() }
        let document = """
            shares:
              - id: delta-air
                dataset: air-quality
                to: [shanghai]
                fields: [station, district, pm25]
                where: "district != 'Restricted'"
                write: [pm25]
                purpose: forecasting
                legal_basis: MoU
                valid_until: 2099-12-31
                on_revoke: keep

            """
        try await f.app.test(.router) { client in
            try await client.execute(uri: "/v1/datasets", method: .post, headers: f.headers(.operator), body: body(createAir)) { r in #expect(r.status == .created) }
            for (key, district) in [("S-1", "Xihu"), ("S-2", "Restricted")] {
                try await client.execute(
                    uri: "/v1/datasets/hangzhou/air-quality/record?key=\(key)", method: .put, headers: f.headers(.operator),
                    body: body(#"{"values":{"district":"\#(district)","pm25":41.5}}"#)) { r in #expect(r.status == .ok) }
            }
            try await client.execute(uri: "/v1/policy/check", method: .post, headers: f.headers(.auditor), body: body(document)) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/v1/policy/check", method: .post, headers: f.headers(.operator), body: body(document)) { r in
                let check = try JSONDecoder().decode(API.PolicyCheck.self, from: data(r.body))
                #expect(check.ok && !check.changes.isEmpty)
            }
            try await client.execute(uri: "/v1/policy/check", method: .post, headers: f.headers(.operator), body: body("shares: [1")) { r in
                let check = try JSONDecoder().decode(API.PolicyCheck.self, from: data(r.body))
                #expect(!check.ok && check.issues.first?.message.contains("not valid YAML") == true)
            }
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.operator), body: body(document)) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.admin), body: body("shares: 3")) { r in
                #expect(r.status == .badRequest && errorCode(r) == "policy.invalid")
            }
            try await client.execute(uri: "/v1/policy", method: .put, headers: f.headers(.admin), body: body(document)) { r in
                let applied = try JSONDecoder().decode(API.PolicyApplied.self, from: data(r.body))
                #expect(applied.version == 1 && !applied.unchanged)
            }
            try await client.execute(uri: "/v1/policy", method: .get, headers: f.headers(.auditor)) { r in
                let shown = try JSONDecoder().decode(API.PolicyShow.self, from: data(r.body))
                #expect(shown.current?.document == document && shown.inForce == 1 && shown.current?.signedNote?.contains("— hangzhou.citymesh/policy ") == true)
            }
            try await client.execute(uri: "/v1/policy?version=7", method: .get, headers: f.headers(.auditor)) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/v1/policy/explain?city=shanghai&dataset=air-quality", method: .get, headers: f.headers(.auditor)) { r in
                let x = try JSONDecoder().decode(PolicyEngine.Explanation.self, from: data(r.body))
                #expect(x.share == "delta-air" && !x.active)
            }
            func preview(_ city: String, _ key: String) async throws -> API.PolicyPreview {
                try await client.execute(uri: "/v1/policy/preview?city=\(city)&dataset=air-quality&key=\(key)", method: .get, headers: f.headers(.auditor)) { r in
                    try JSONDecoder().decode(API.PolicyPreview.self, from: data(r.body))
                }
            }
            #expect(try await preview("shanghai", "S-1").denial == "not_accepted")
            f.accepted.pairs.withLock { _ = $0.insert("delta-air shanghai") }
            let sent = try await preview("shanghai", "S-1")
            #expect(sent.sent && Set(sent.values.keys) == ["station", "district", "pm25"], "exactly the view: \(sent.values)")
            #expect(try await preview("shanghai", "S-2").denial == "row_filtered")
            #expect(try await preview("nanjing", "S-1").denial == "no_share")
        }
        // Previews are not ledgered; the enforcement points ledger every denial with its reason.
        #expect(try await ledger.entries(kind: "policy.denied").isEmpty)
        #expect(try await policy.view(dataset: "air-quality", key: "S-1", for: CitySlug("nanjing")) == .failure(.noShare(dataset: "air-quality", city: CitySlug("nanjing"))))
        #expect(try await policy.mayWrite(dataset: "air-quality", key: "S-1", field: "pm25", member: CitySlug("shanghai")) == .success("delta-air"))
        #expect(try await policy.mayWrite(dataset: "air-quality", key: "S-1", field: "district", member: CitySlug("shanghai"))
            == .failure(.fieldNotWritable(share: "delta-air", field: "district")))
        #expect(try await policy.mayWrite(dataset: "air-quality", key: "S-2", field: "pm25", member: CitySlug("shanghai")).isFailure)
        let denied = try await ledger.entries(kind: "policy.denied")
        #expect(denied.map { $0.reason ?? "" } == ["no_share", "field_not_writable", "row_filtered"])
        // The key as a keyed hash under the dataset's ledger key, never as a plain SHA-256.
        let ledgerKey = try await f.store.ledgerKey(for: DatasetID(owner: CitySlug("hangzhou"), name: "air-quality"))
        #expect(denied.allSatisfy { $0.hashes == ["key.hmac": ledgerKey.hash($0.reason == "row_filtered" ? "S-2" : "S-1"), "hmac.key": ledgerKey.id] && $0.dataset == "hangzhou/air-quality" })
        #expect(!(try await ledger.entries(kind: "policy").map(\.detail).contains { $0?.contains("S-1") == true }), "keys never reach the ledger")
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { true } else { false } }
}
