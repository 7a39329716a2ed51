import ArgumentParser
import PassthroughAgent
import SystemPackage

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each configured card: present?, IDs, driver, IOMMU group and its peers, guest."
    )

    @OptionGroup var host: HostOptions

    @Flag(help: "Print a JSON array, one object per card.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("The daemon's control socket, for its live state.", valueName: "path"))
    var controlSocket: String = ControlServer.defaultPath.string

    func run() throws {
        let config = try host.loadConfig()
        var cards: [CardStatus]
        do {
            cards = try CardStatus.all(config: config, reader: host.host.reader)
        } catch {
            Output.error("cannot read the PCI bus: \(error)")
            throw ExitCode(ExitStatus.ioError)
        }
        // The daemon's live view (pending steps, retries, last error) when one runs; sysfs alone otherwise.
        let daemon = try? ControlClient(path: FilePath(controlSocket), timeout: .seconds(5)).send(.status(card: nil))
        for (index, card) in cards.enumerated() {
            let live = daemon?.cards?.first { $0.name == card.name }
            cards[index].daemon = live.map { [$0.state, $0.detail].compactMap { $0 }.joined(separator: "; ") }
        }
        if json {
            try Output.json(cards)
        } else {
            Output.print(StatusTable.render(cards))
            if daemon == nil { Output.print("(no daemon answering at \(controlSocket): showing sysfs only)\n") }
        }
    }
}
