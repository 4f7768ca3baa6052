import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import Foundation

struct Peers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Peers: who is connected, who was refused, and their signed ledger checkpoints.",
        discussion: """
            Examples:
              citymesh peers --dir sh                        # the same as 'peers list'
              citymesh peers checkpoint --dir sh hangzhou    # hangzhou's signed checkpoint, checked
            """,
        subcommands: [PeersList.self, PeersCheckpoint.self],
        defaultSubcommand: PeersList.self)
}

struct PeersCheckpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Fetch a connected peer's latest signed ledger checkpoint over the peer transport, and check it.",
        discussion: """
            Example:
              citymesh peers checkpoint --dir sh hangzhou

            The node asks the peer on the ledger channel, verifies the checkpoint's signature with the
            key in the certificate the peer connected with, and, if it saw an earlier checkpoint of
            that peer, verifies a consistency proof between the two: a peer that shows two histories
            is caught here. Exits non-zero if any check fails.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "The peer city.") var city: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let slug = try CitySlug(city)
        let got: API.PeerCheckpoint = try await node.withNode { client, _ in try await client.post("/v1/peers/\(slug)/checkpoint", body: [String: String]()) }
        if output.json { return try printJSON(got) }
        print("\(got.city): \(got.size) entries, root \(got.rootHash)")
        print("  signature verified with \(got.verifierKey) (from its certificate)")
        print(got.consistentWith.map { "  consistent with its checkpoint at size \($0) (proof verified)" } ?? "  first checkpoint seen from \(got.city) since this node started")
        print("")
        print(got.checkpoint, terminator: "")
    }
}

struct PeersList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List known and connected peers, recent refusals, and each share's sync state (the default).",
        discussion: """
            Example:
              citymesh peers --dir sh
              citymesh peers --dir hz --json

            Shows each peer's state (connected, connecting, disconnected); its SWIM status; its view: \
            seed, partner (a city this node shares with: always dialed), active (dialed for gossip, \
            at most peers.active_view of them) or passive (address held, not dialed); its address and \
            where that came from (seed, hello, gossip via CITY: a record the city signed, stored \
            record); round-trip time, when it was last seen and its certificate's expiry. Members \
            known only by gossip are listed with their SWIM status. Then the connections this node \
            refused (no client certificate, foreign CA, revoked, …) by reason.
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let (list, sync): (API.PeerList, API.Replication) = try await node.withNode { client, _ in
            (try await client.get("/v1/peers"), try await client.get("/v1/replication"))
        }
        if output.json {
            // The peer list as /v1/peers gives it, plus the shares' sync state under "replication".
            var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(list)) as? [String: Any] ?? [:]
            object["replication"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(sync.shares))
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("\(list.city) listens for peers on \(list.listen)")
        if list.peers.isEmpty {
            print("no peers known: add seeds (CITY@HOST:PORT) under peers.seeds in citymesh.yaml, then 'kill -HUP' the node")
        } else {
            Terminal.table(
                ["CITY", "STATE", "SWIM", "VIEW", "ADDRESS", "FROM", "RTT", "LAST SEEN", "CERT EXPIRES", "LAST ERROR"],
                list.peers.map { p in
                    [
                        p.city, p.state, list.membership?[p.city].map { String($0.prefix { $0 != "/" }) } ?? "-", p.view ?? "-", p.address ?? "-",
                        p.addressSource ?? "-", p.rttMs.map { String(format: "%.1fms", $0) } ?? "-",
                        p.lastSeen.map { String($0.prefix(19)) } ?? "-", p.certificateExpires.map { String($0.prefix(10)) } ?? "-",
                        p.state == "connected" ? "" : (p.lastError ?? ""),
                    ]
                } + (list.membership ?? [:]).keys.filter { m in !list.peers.contains { $0.city == m } }.sorted().map { m in
                    [m, "-", String((list.membership?[m] ?? "-").prefix { $0 != "/" }), "member", "-", "gossip", "-", "-", "-", ""]
                })
        }
        let limited = list.peers.filter { !($0.rateLimited ?? [:]).isEmpty }
        if !limited.isEmpty {
            print("\nover their rate limits (messages dropped since start; peers.rate_limits in citymesh.yaml):")
            for p in limited {
                print("  \(p.city): " + (p.rateLimited ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
        }
        if !list.refusals.isEmpty {
            let counts = list.refusals.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("\nrefused since start: \(counts)")
            for r in list.recentRefusals.suffix(5) {
                print("  \(r.at.prefix(19))  \(r.reason)  \(r.remote)  \(r.detail)")
            }
        }
        if !sync.shares.isEmpty {
            print("\nshares replicated (batches held per share; per party: its sync state)")
            var rows: [[String]] = []
            for s in sync.shares {
                for p in s.parties {
                    let state: String
                    switch p.state {
                    case "in_sync": state = "in sync"
                    case "catching_up":
                        let total = p.batchesHeld + p.missingHere
                        state = "catching up \(p.batchesHeld) of \(total)" + (p.behindSince.map { ", behind since \($0.prefix(19))" } ?? "")
                    case "ahead": state = "\(p.city) lacks \(p.missingThere)"
                    default: state = "no summary yet"
                    }
                    rows.append([s.share, s.role, p.city, state, p.lastExchange.map { String($0.prefix(19)) } ?? "-"])
                }
                if s.parties.isEmpty { rows.append([s.share, s.role, "-", "no active members", "-"]) }
            }
            Terminal.table(["SHARE", "ROLE", "PARTY", "STATE", "LAST EXCHANGE"], rows)
        }
    }
}
