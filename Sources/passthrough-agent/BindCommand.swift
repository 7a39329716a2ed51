import ArgumentParser
import Logging
import PassthroughAgent
import PassthroughCore
import PassthroughSysfs

struct BindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bind",
        abstract: "Move one configured card to vfio-pci or back to its host driver, once, with the safety rules.",
        discussion: """
            Refuses devices no card claims and vfio-pci while an IOMMU-group peer is used by the host.
            Every step is verified by reading the driver link back; on failure everything is rolled back.
            A running daemon may move the card again to where its policy says it belongs.
            """
    )

    enum Target: String, ExpressibleByArgument, CaseIterable {
        case vfio, host
    }

    @Argument(help: "The card's name in the configuration.")
    var card: String

    @Option(name: .long, help: "Where to: vfio (vfio-pci) or host (the card's host-driver).")
    var to: Target

    @OptionGroup var host: HostOptions

    func run() throws {
        let config = try host.loadConfig()
        guard let card = config.card(named: card) else {
            let known = config.cards.map(\.name.rawValue).joined(separator: ", ")
            Output.error("no card named \"\(self.card)\" in \(host.config)" + (known.isEmpty ? "" : " (cards: \(known))"))
            throw ExitCode(ExitStatus.usage)
        }
        let logger = Logger(label: "passthrough-agent")
        let binder = DriverBinder(config: config, reader: host.host.reader, logger: logger)
        let target: BindTarget = to == .vfio ? .vfio : .host(card.hostDriver)
        do {
            let moves = try binder.move(card: card, to: target)
            if moves.isEmpty {
                Output.print("\(card.name): already on \(target)\n")
            }
            for move in moves {
                Output.print("\(card.name): \(move.address) \(move.from?.rawValue ?? "(none)") -> \(move.to?.rawValue ?? "(none)")\n")
            }
        } catch {
            Output.error("\(card.name): \(error)")
            throw ExitCode(Self.exitStatus(for: error))
        }
    }

    static func exitStatus(for error: BindError) -> Int32 {
        switch error {
        case .notClaimed, .unknownCard, .groupInUse, .handsOff: ExitStatus.refused
        case .cardAbsent, .cardAmbiguous, .driverNotLoaded: ExitStatus.unavailable
        case .readFailed, .stepFailed: ExitStatus.ioError
        }
    }
}
