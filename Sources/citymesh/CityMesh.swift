import ArgumentParser
import CityMeshCore
import Foundation

@main
struct CityMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "citymesh",
        abstract: "CityMesh: a data-exchange node for city governments.",
        discussion: """
            Each city runs one node. Nodes share datasets under signed agreements over mutual TLS,
            merge concurrent edits with CRDTs, and log every exchange in a verifiable ledger.

            Quick start:
              citymesh federation init --out fed --name "Yangtze Delta"
              citymesh federation issue --ca fed --city hangzhou --host localhost --out hz-cert
              citymesh init --dir hz --city hangzhou --ca fed/ca.pem --cert hz-cert/node.pem --key hz-cert/node.key \\
                            --listen 127.0.0.1:7001 --admin 127.0.0.1:7101
              citymesh serve --dir hz &

            Commands that take --dir also read CITYMESH_DIR; --token also reads CITYMESH_TOKEN.
            """,
        version: CityMeshVersion.current,
        subcommands: [
            Federation.self, Init.self, Serve.self, Peers.self, DatasetCommand.self, RecordCommand.self, Import.self, Export.self,
            TokenCommand.self, Audit.self, PolicyCommand.self, AgreementCommand.self, Simulate.self, Demo.self, ConfigCommand.self, Backup.self, Restore.self,
        ]
    )

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CityMeshError {
            Terminal.error(error.message)
            Foundation.exit(error.code == .invalidArgument ? 64 : 1)
        } catch {
            exit(withError: error)
        }
    }
}
