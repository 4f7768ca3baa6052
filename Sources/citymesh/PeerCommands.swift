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
        let got: API.PeerCheckpoint = try await node.withNode { client, _ in try await client.get("/v1/peers/\(slug)/checkpoint") }
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
        abstract: "List known and connected peers, and recent refusals (the default).",
        discussion: """
            Example:
              citymesh peers --dir sh
              citymesh peers --dir hz --json

            Shows each peer's state (connected, connecting, disconnected), address, round-trip time,
            when it was last seen, its certificate's expiry and the protocol version in use, then the
            connections this node refused (no client certificate, foreign CA, revoked, …) by reason.
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list: API.PeerList = try await node.withNode { client, _ in try await client.get("/v1/peers") }
        if output.json { return try printJSON(list) }
        print("\(list.city) listens for peers on \(list.listen)")
        if list.peers.isEmpty {
            print("no peers known: add seeds (CITY@HOST:PORT) under peers.seeds in citymesh.yaml, then 'kill -HUP' the node")
        } else {
            Terminal.table(
                ["CITY", "STATE", "ADDRESS", "RTT", "LAST SEEN", "CERT EXPIRES", "PROTOCOL", "LAST ERROR"],
                list.peers.map { p in
                    [
                        p.city, p.state, p.address ?? "-", p.rttMs.map { String(format: "%.1fms", $0) } ?? "-",
                        p.lastSeen.map { String($0.prefix(19)) } ?? "-", p.certificateExpires.map { String($0.prefix(10)) } ?? "-",
                        p.protocolVersion.map(String.init) ?? "-", p.state == "connected" ? "" : (p.lastError ?? ""),
                    ]
                })
        }
        if !list.refusals.isEmpty {
            let counts = list.refusals.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("\nrefused since start: \(counts)")
            for r in list.recentRefusals.suffix(5) {
                print("  \(r.at.prefix(19))  \(r.reason)  \(r.remote)  \(r.detail)")
            }
        }
    }
}
