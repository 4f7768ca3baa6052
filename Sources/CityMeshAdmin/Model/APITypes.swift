public import CityMeshCore
public import CityMeshStore

/// The JSON shapes of the admin API (documented in docs/admin-api.md). Shared by server and client.
public enum API {
    public struct ErrorBody: Codable, Sendable {
        public let code: String
        public let message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public struct NodeInfo: Codable, Sendable {
        public let city: String
        public let version: String
        public let datasets: Int
        public let startedAt: String
        public init(city: String, version: String, datasets: Int, startedAt: String) {
            self.city = city
            self.version = version
            self.datasets = datasets
            self.startedAt = startedAt
        }
    }

    /// An RFC 9162 inclusion proof, hashes in base64 (`citymesh audit prove --json`).
    public struct InclusionProof: Codable, Sendable {
        public let index: UInt64
        public let treeSize: UInt64
        public let leafHash: String
        public let rootHash: String
        public let proof: [String]
        public let entry: LedgerEntry
        /// The signed checkpoint for `treeSize`, when one was published at exactly that size.
        public let checkpoint: String?
        /// The entry exactly as hashed into the log (base64), so a verifier can compute the leaf
        /// hash itself rather than trust `leafHash` (the console's in-browser check does).
        public var entryBytes: String?
        public init(
            index: UInt64, treeSize: UInt64, leafHash: String, rootHash: String, proof: [String], entry: LedgerEntry, checkpoint: String?,
            entryBytes: String? = nil
        ) {
            self.entryBytes = entryBytes
            self.index = index
            self.treeSize = treeSize
            self.leafHash = leafHash
            self.rootHash = rootHash
            self.proof = proof
            self.entry = entry
            self.checkpoint = checkpoint
        }
    }

    /// An RFC 9162 consistency proof, hashes in base64 (`citymesh audit consistency --json`).
    /// `GET /v1/policy/preview`: what one city would be sent of one record now.
    public struct PolicyPreview: Codable, Sendable {
        public let sent: Bool
        public let values: [String: JSONValue]
        public let denial: String?
        public let reason: String?
        public init(sent: Bool, values: [String: JSONValue], denial: String?, reason: String?) {
            self.sent = sent
            self.values = values
            self.denial = denial
            self.reason = reason
        }
    }

    /// One agreement as `citymesh agreement list` shows it.
    public struct AgreementInfo: Codable, Sendable, Equatable {
        public let id: String
        public let owner: String
        public let share: String
        public let member: String
        public let dataset: String
        /// offered, active, accepted, rejected, revoked or expired.
        public let state: String
        public let fields: [String]
        public let filter: String?
        public let write: [String]
        public let purpose: String
        public let legalBasis: String
        public let validUntil: String
        public let onRevoke: String
        public let offeredAt: String
        /// Each signature as `<city> <algorithm> <base64>`; all were verified when received.
        public let ownerSignature: String
        public let memberSignature: String?
        public let decision: String?
        public let respondedAt: String?
        public let revokedAt: String?
        public let revocationReason: String?

        public init(
            id: String, owner: String, share: String, member: String, dataset: String, state: String, fields: [String], filter: String?, write: [String],
            purpose: String, legalBasis: String, validUntil: String, onRevoke: String, offeredAt: String, ownerSignature: String, memberSignature: String?,
            decision: String?, respondedAt: String?, revokedAt: String?, revocationReason: String?
        ) {
            self.id = id
            self.owner = owner
            self.share = share
            self.member = member
            self.dataset = dataset
            self.state = state
            self.fields = fields
            self.filter = filter
            self.write = write
            self.purpose = purpose
            self.legalBasis = legalBasis
            self.validUntil = validUntil
            self.onRevoke = onRevoke
            self.offeredAt = offeredAt
            self.ownerSignature = ownerSignature
            self.memberSignature = memberSignature
            self.decision = decision
            self.respondedAt = respondedAt
            self.revokedAt = revokedAt
            self.revocationReason = revocationReason
        }
    }

    public struct AgreementList: Codable, Sendable {
        public let city: String
        public let agreements: [AgreementInfo]
        public init(city: String, agreements: [AgreementInfo]) {
            self.city = city
            self.agreements = agreements
        }
    }

    /// `GET /v1/policy`: one version (the latest unless asked), and the list of all.
    public struct PolicyShow: Codable, Sendable {
        public let current: PolicyVersion?
        /// The version the node enforces now.
        public let inForce: Int?
        public let versions: [PolicyVersion]
        public init(current: PolicyVersion?, inForce: Int?, versions: [PolicyVersion]) {
            self.current = current
            self.inForce = inForce
            self.versions = versions
        }
    }

    /// `POST /v1/policy/check`: the problems of a document, or what applying it would change.
    public struct PolicyCheck: Codable, Sendable {
        public let ok: Bool
        public let issues: [PolicyIssue]
        public let changes: [PolicyDiff.Change]
        public let warnings: [String]
        public init(ok: Bool, issues: [PolicyIssue], changes: [PolicyDiff.Change], warnings: [String]) {
            self.ok = ok
            self.issues = issues
            self.changes = changes
            self.warnings = warnings
        }
    }

    public struct PolicyApplied: Codable, Sendable {
        public let version: Int
        public let sha256: String
        public let unchanged: Bool
        public let changes: [PolicyDiff.Change]
        public init(version: Int, sha256: String, unchanged: Bool, changes: [PolicyDiff.Change]) {
            self.version = version
            self.sha256 = sha256
            self.unchanged = unchanged
            self.changes = changes
        }
    }

    /// A peer's latest checkpoint, fetched over the peer transport and checked by this node.
    public struct PeerCheckpoint: Codable, Sendable {
        public let city: String
        /// The signed note, verbatim.
        public let checkpoint: String
        public let size: UInt64
        public let rootHash: String
        /// The key it verified with, from the peer's certificate (signed-note verifier key).
        public let verifierKey: String
        /// The size of the earlier checkpoint of this peer it was proven consistent with, if any.
        public let consistentWith: UInt64?
        public init(city: String, checkpoint: String, size: UInt64, rootHash: String, verifierKey: String, consistentWith: UInt64?) {
            self.city = city
            self.checkpoint = checkpoint
            self.size = size
            self.rootHash = rootHash
            self.verifierKey = verifierKey
            self.consistentWith = consistentWith
        }
    }

    /// Who witnessed this node's ledger: each peer's cosignature of the largest checkpoint it cosigned.
    public struct Witnesses: Codable, Sendable {
        public struct Item: Codable, Sendable {
            public let city: String
            public let witness: String
            public let size: UInt64
            /// When the witness cosigned, in seconds since the epoch.
            public let timestamp: UInt64
            public let cosignature: String
            public init(city: String, witness: String, size: UInt64, timestamp: UInt64, cosignature: String) {
                self.city = city
                self.witness = witness
                self.size = size
                self.timestamp = timestamp
                self.cosignature = cosignature
            }
        }
        /// The size of the latest checkpoint this node signed.
        public let checkpointSize: UInt64
        public let witnesses: [Item]
        public init(checkpointSize: UInt64, witnesses: [Item]) {
            self.checkpointSize = checkpointSize
            self.witnesses = witnesses
        }
    }

    public struct ConsistencyProof: Codable, Sendable {
        public let size1: UInt64
        public let size2: UInt64
        public let rootHash1: String
        public let rootHash2: String
        public let proof: [String]
        public init(size1: UInt64, size2: UInt64, rootHash1: String, rootHash2: String, proof: [String]) {
            self.size1 = size1
            self.size2 = size2
            self.rootHash1 = rootHash1
            self.rootHash2 = rootHash2
            self.proof = proof
        }
    }

    public struct AuditLog: Codable, Sendable {
        public let entries: [LedgerEntry]
        public init(entries: [LedgerEntry]) { self.entries = entries }
    }

    /// A ledger key (`GET /v1/audit/key`, admin only): what an auditor needs to look for one
    /// record's keyed hashes (`key.hmac`, named by `hmac.key` = `id`).
    public struct LedgerKeyInfo: Codable, Sendable {
        public let dataset: String
        /// The share (`owner/name`) when the key is a share's, else nil (the dataset's own key).
        public let share: String?
        public let id: String
        public let key: String
        public init(dataset: String, share: String?, id: String, key: String) {
            self.dataset = dataset
            self.share = share
            self.id = id
            self.key = key
        }
    }

    /// One peer as `GET /v1/peers` and `citymesh peers --json` show it.
    public struct Peer: Codable, Sendable, Equatable {
        public let city: String
        /// connected, connecting or disconnected
        public let state: String
        public let address: String?
        /// inbound or outbound, while connected
        public let direction: String?
        public let rttMs: Double?
        public let lastSeen: String?
        public let certificateExpires: String?
        public let certificateFingerprint: String?
        public let protocolVersion: Int?
        public let software: String?
        public let fromSeed: Bool
        public let lastError: String?
        /// Messages of this peer dropped over its rate limit since start, by channel (absent: none).
        public var rateLimited: [String: Int]?
        /// Why this node dials the city: seed, partner (it shares with it), active (the active
        /// view, for gossip), or passive (the address is held, not dialed).
        public var view: String?
        /// Where the address came from: seed, hello, "gossip via CITY" (a record the city
        /// signed), stored record.
        public var addressSource: String?
        /// Every address known for the city, in the order they are tried.
        public var addresses: [String]?

        public init(
            city: String, state: String, address: String?, direction: String?, rttMs: Double?, lastSeen: String?, certificateExpires: String?,
            certificateFingerprint: String?, protocolVersion: Int?, software: String?, fromSeed: Bool, lastError: String?, rateLimited: [String: Int]? = nil
        ) {
            self.rateLimited = rateLimited
            self.city = city
            self.state = state
            self.address = address
            self.direction = direction
            self.rttMs = rttMs
            self.lastSeen = lastSeen
            self.certificateExpires = certificateExpires
            self.certificateFingerprint = certificateFingerprint
            self.protocolVersion = protocolVersion
            self.software = software
            self.fromSeed = fromSeed
            self.lastError = lastError
        }
    }

    /// A refused or cut-off peer connection.
    public struct Refusal: Codable, Sendable, Equatable {
        public let at: String
        public let reason: String
        public let remote: String
        public let direction: String
        public let detail: String

        public init(at: String, reason: String, remote: String, direction: String, detail: String) {
            self.at = at
            self.reason = reason
            self.remote = remote
            self.direction = direction
            self.detail = detail
        }
    }

    public struct PeerList: Codable, Sendable {
        public let city: String
        public let listen: String
        public let peers: [Peer]
        /// Refusals since start, by reason.
        public let refusals: [String: Int]
        /// The latest refusals (at most 50), oldest first.
        public let recentRefusals: [Refusal]
        /// What SWIM gossip says of each member: `alive`, `suspect` or `dead`, with its incarnation.
        public let membership: [String: String]?

        public init(city: String, listen: String, peers: [Peer], refusals: [String: Int], recentRefusals: [Refusal], membership: [String: String]? = nil) {
            self.city = city
            self.listen = listen
            self.peers = peers
            self.refusals = refusals
            self.recentRefusals = recentRefusals
            self.membership = membership
        }
    }

    public struct FieldSpec: Codable, Sendable, Hashable {
        public let name: String
        public let type: FieldType
        public var id: Int?
        public var nullable: Bool?
        public init(name: String, type: FieldType, id: Int? = nil, nullable: Bool? = nil) {
            self.name = name
            self.type = type
            self.id = id
            self.nullable = nullable
        }
    }

    public struct CreateDataset: Codable, Sendable {
        public let name: String
        public let key: String
        public let fields: [FieldSpec]
        public init(name: String, key: String, fields: [FieldSpec]) {
            self.name = name
            self.key = key
            self.fields = fields
        }
    }

    public struct Dataset: Codable, Sendable {
        public let id: String
        public let owner: String
        public let name: String
        public let key: String
        public let fields: [FieldSpec]
        public let records: Int
        public let lastSeq: Int64
        public let createdAt: String

        public init(_ info: DatasetInfo) {
            id = info.id.description
            owner = info.id.owner.rawValue
            name = info.id.name
            key = info.schema.keyField
            fields = info.schema.fields.map { FieldSpec(name: $0.name, type: $0.type, id: $0.id, nullable: $0.nullable) }
            records = info.recordCount
            lastSeq = info.lastSeq
            createdAt = info.createdAt
        }
    }

    public struct DatasetList: Codable, Sendable {
        public let datasets: [Dataset]
    }

    public struct CellMeta: Codable, Sendable, Hashable {
        public let hlc: String
        public let city: String
    }

    public struct Record: Codable, Sendable {
        public let key: String
        public let seq: Int64
        public let values: [String: JSONValue]
        public var meta: [String: CellMeta]?

        public init(_ r: StoredRecord, schema: Schema, withMeta: Bool) {
            key = r.key
            seq = r.seq
            var values: [String: JSONValue] = [:]
            var meta: [String: CellMeta] = [:]
            for f in schema.fields { values[f.name] = .null }
            for c in r.state.cells {
                guard let f = schema.field(id: c.field) else { continue }
                values[f.name] = c.value?.json ?? .null
                meta[f.name] = CellMeta(hlc: c.stamp.hlc.description, city: c.stamp.city.rawValue)
            }
            self.values = values
            self.meta = withMeta ? meta : nil
        }
    }

    public struct RecordPage: Codable, Sendable {
        public let records: [Record]
        public let next: String?
    }

    public struct PutRecord: Codable, Sendable {
        public let values: [String: JSONValue]
        public init(values: [String: JSONValue]) { self.values = values }
    }

    public struct WriteResult: Codable, Sendable {
        public let written: Int
        public let unchanged: Int
        public let seq: Int64
    }

    /// The body of `POST /v1/datasets/{owner}/{name}/erase` for several keys.
    public struct EraseKeys: Codable, Sendable {
        public let keys: [String]
        public init(keys: [String]) { self.keys = keys }
    }

    /// `POST /v1/datasets/{owner}/{name}/erase` (`citymesh record erase`).
    public struct Erasure: Codable, Sendable {
        public struct Party: Codable, Sendable {
            public let city: String
            public let share: String
            /// Whether it holds every batch this node holds (so the deletion too, and it compacts).
            public let hasDeletion: Bool
            public init(city: String, share: String, hasDeletion: Bool) {
                self.city = city
                self.share = share
                self.hasDeletion = hasDeletion
            }
        }
        /// The key, or "N keys".
        public let key: String
        /// Whether this call deleted every record named (false: some were deleted before).
        public let deleted: Bool
        /// Keys named, and how many of them this call deleted (the others were deleted before).
        public let erased: Int
        public let deletedNow: Int
        /// Records and batches this node's compaction pass rewrote now.
        public let compactedRecords: Int
        public let compactedBatches: Int
        /// Stored batches in the old layout that still hold the values (they cannot be compacted).
        public let legacyBatches: Int
        public let parties: [Party]
        public init(key: String, deleted: Bool, erased: Int, deletedNow: Int, compactedRecords: Int, compactedBatches: Int, legacyBatches: Int, parties: [Party]) {
            self.key = key
            self.deleted = deleted
            self.erased = erased
            self.deletedNow = deletedNow
            self.compactedRecords = compactedRecords
            self.compactedBatches = compactedBatches
            self.legacyBatches = legacyBatches
            self.parties = parties
        }
    }

    public struct AddField: Codable, Sendable {
        public let name: String
        public let type: FieldType
        public init(name: String, type: FieldType) {
            self.name = name
            self.type = type
        }
    }

    public struct Rejection: Codable, Sendable, Hashable {
        public let line: Int
        public let reason: String
    }

    public struct ImportSummary: Codable, Sendable {
        public var imported: Int = 0
        public var unchanged: Int = 0
        public var rejected: Int = 0
        public var rejections: [Rejection] = []
        /// True when more rows were rejected than `rejections` lists.
        public var rejectionsTruncated: Bool = false
        public var seconds: Double = 0
        /// Time spent in write transactions (the rest of `seconds` overlaps with parsing or waits for the upload).
        public var writeSeconds: Double = 0
        /// Bytes received and their SHA-256 (hex): what the ledger records of the upload.
        public var bytes: Int = 0
        public var contentSHA256: String = ""
        public init() {}
    }

    public struct CreateToken: Codable, Sendable {
        public let role: Role
        public let name: String
        public init(role: Role, name: String) {
            self.role = role
            self.name = name
        }
    }

    public struct NewToken: Codable, Sendable {
        public let id: String
        public let name: String
        public let role: Role
        public let token: String
    }

    public struct TokenList: Codable, Sendable {
        public let tokens: [TokenInfo]
    }

    /// One share's replication as this node sees it (GET /v1/replication).
    public struct ShareSync: Codable, Sendable {
        public struct Party: Codable, Sendable {
            public let city: String
            /// `in_sync`, `catching_up` (it holds batches we lack), `ahead` (we hold batches it
            /// lacks), or `unknown` (no summary from it since we connected).
            public let state: String
            public let batchesHeld: UInt64
            public let batchesTheyHold: UInt64?
            public let missingHere: UInt64
            public let missingThere: UInt64
            public let behindSince: String?
            public let lastExchange: String?
            public init(
                city: String, state: String, batchesHeld: UInt64, batchesTheyHold: UInt64?, missingHere: UInt64, missingThere: UInt64, behindSince: String?,
                lastExchange: String?
            ) {
                self.city = city
                self.state = state
                self.batchesHeld = batchesHeld
                self.batchesTheyHold = batchesTheyHold
                self.missingHere = missingHere
                self.missingThere = missingThere
                self.behindSince = behindSince
                self.lastExchange = lastExchange
            }
        }
        public let share: String
        public let dataset: String
        /// `owner` or `member`.
        public let role: String
        public let fields: [String]
        public let write: [String]
        public let batches: UInt64
        public let parties: [Party]
        public init(share: String, dataset: String, role: String, fields: [String], write: [String], batches: UInt64, parties: [Party]) {
            self.share = share
            self.dataset = dataset
            self.role = role
            self.fields = fields
            self.write = write
            self.batches = batches
            self.parties = parties
        }
    }

    public struct Replication: Codable, Sendable {
        public let city: String
        public let shares: [ShareSync]
        public init(city: String, shares: [ShareSync]) {
            self.city = city
            self.shares = shares
        }
    }

    public struct ConflictList: Codable, Sendable {
        public let dataset: String
        public let conflicts: [StoredConflict]
        public init(dataset: String, conflicts: [StoredConflict]) {
            self.dataset = dataset
            self.conflicts = conflicts
        }
    }

    /// Settles the conflicts of one field of one record: write `value`, or the value of conflict
    /// `take`, or (`keep`) confirm the value in force.
    public struct ResolveConflict: Codable, Sendable {
        public let key: String
        public let field: String
        public let value: JSONValue?
        public let take: Int64?
        public let keep: Bool?
        public init(key: String, field: String, value: JSONValue? = nil, take: Int64? = nil, keep: Bool? = nil) {
            self.key = key
            self.field = field
            self.value = value
            self.take = take
            self.keep = keep
        }
    }
}
