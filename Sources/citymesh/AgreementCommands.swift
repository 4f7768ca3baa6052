import ArgumentParser
import CityMeshAdmin
import CityMeshCore
import Foundation

struct AgreementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agreement",
        abstract: "Sharing agreements: offers made by the policy, accepted or rejected by members, revoked by owners.",
        discussion: """
            Example:
              citymesh agreement list --dir sh
              citymesh agreement accept --dir sh hangzhou/delta-air
            """,
        subcommands: [AgreementList.self, AgreementAccept.self, AgreementReject.self, AgreementRevoke.self])
}

/// `OWNER/SHARE`, checked.
func parseShareRef(_ text: String) throws -> (CitySlug, String) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, !parts[1].isEmpty else {
        throw CityMeshError(.invalidArgument, "'\(text)' is not OWNER/SHARE: write the owner city and its share id, e.g. hangzhou/delta-air")
    }
    return (try CitySlug(String(parts[0])), String(parts[1]))
}

func printAgreement(_ a: API.AgreementInfo) {
    print("\(a.owner)/\(a.share) → \(a.member): \(a.state.uppercased())")
    print("  dataset      \(a.owner)/\(a.dataset): fields \(a.fields.joined(separator: ", "))\(a.write.isEmpty ? " (read)" : "; members write \(a.write.joined(separator: ", "))")")
    print("  rows         \(a.filter ?? "(all)")")
    print("  purpose      \(a.purpose)")
    print("  legal basis  \(a.legalBasis)")
    print("  valid until  \(a.validUntil), on revoke: \(a.onRevoke)")
    print("  offered      \(a.offeredAt), signed \(a.ownerSignature.prefix(40))…")
    if let d = a.decision, let at = a.respondedAt, let sig = a.memberSignature { print("  \(d == "accept" ? "accepted" : "rejected")     \(at), signed \(sig.prefix(40))…") }
    if let at = a.revokedAt { print("  revoked      \(at): \(a.revocationReason ?? "")") }
}

/// `agreement accept` and `agreement reject`: the member's signed answer to an offer.
func answerOffer(_ node: NodeOptions, _ output: OutputOptions, _ share: String, _ action: String) async throws {
    let (owner, id) = try parseShareRef(share)
    let a: API.AgreementInfo = try await node.withNode { client, _ in
        try await client.post("/v1/agreements/\(owner)/\(id)/\(action)", body: [String: String]())
    }
    if output.json { return try printJSON(a) }
    printAgreement(a)
}

struct AgreementList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Agreements this city is party to: offered, active, accepted, rejected, revoked or expired, with both signatures.",
        discussion: """
            Example:
              citymesh agreement list --dir sh
              citymesh agreement list --dir hz --json
            """)

    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let list: API.AgreementList = try await node.withNode { client, _ in try await client.get("/v1/agreements") }
        if output.json { return try printJSON(list) }
        if list.agreements.isEmpty {
            return print("no agreements: \(list.city) has offered no shares and received no offers (docs/policy.md)")
        }
        Terminal.table(
            ["SHARE", "MEMBER", "DATASET", "STATE", "OFFERED", "OWNER SIGNED", "MEMBER SIGNED"],
            list.agreements.map { a in
                [
                    "\(a.owner)/\(a.share)", a.member, a.dataset, a.state, String(a.offeredAt.prefix(19)), a.ownerSignature.split(separator: " ").prefix(2).joined(separator: " "),
                    a.memberSignature.map { $0.split(separator: " ").prefix(2).joined(separator: " ") + " (\(a.decision ?? ""))" } ?? "-",
                ]
            })
    }
}

struct AgreementAccept: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "accept",
        abstract: "Accept another city's offer: signed with this node's key, sent to the owner, ledgered on both sides.",
        discussion: """
            Example:
              citymesh agreement accept --dir sh hangzhou/delta-air

            Needs an admin token. The policy's 'accept' rules accept matching offers by themselves.
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "OWNER/SHARE, e.g. hangzhou/delta-air.") var share: String
    @OptionGroup var output: OutputOptions

    func run() async throws { try await answerOffer(node, output, share, "accept") }
}

struct AgreementReject: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reject",
        abstract: "Reject another city's offer (signed, sent, ledgered); nothing of it is received.",
        discussion: """
            Example:
              citymesh agreement reject --dir sh hangzhou/delta-air
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "OWNER/SHARE, e.g. hangzhou/delta-air.") var share: String
    @OptionGroup var output: OutputOptions

    func run() async throws { try await answerOffer(node, output, share, "reject") }
}

struct AgreementRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "As the owner, end a member's agreement on one of this city's shares (signed, sent, ledgered).",
        discussion: """
            Example:
              citymesh agreement revoke --dir hz delta-air --city shanghai

            The member keeps or purges what it received, as the share's on_revoke says. The share is
            not offered to that city again until the policy changes its terms (or the city is
            removed from it and added back).
            """)

    @OptionGroup var node: NodeOptions
    @Argument(help: "This city's share id.") var share: String
    @Option(help: "The member city.") var city: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let member = try CitySlug(city)
        let a: API.AgreementInfo = try await node.withNode { client, _ in
            try await client.post("/v1/shares/\(share)/revoke", body: [String: String](), query: ["city": member.rawValue])
        }
        if output.json { return try printJSON(a) }
        printAgreement(a)
    }
}
