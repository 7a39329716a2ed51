import ArgumentParser
import PassthroughAgent

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each configured card: present?, IDs, driver, IOMMU group and its peers, guest."
    )

    @OptionGroup var host: HostOptions

    @Flag(help: "Print a JSON array, one object per card.")
    var json = false

    func run() throws {
        let config = try host.loadConfig()
        let cards: [CardStatus]
        do {
            cards = try CardStatus.all(config: config, reader: host.host.reader)
        } catch {
            Output.error("cannot read the PCI bus: \(error)")
            throw ExitCode(ExitStatus.ioError)
        }
        if json {
            try Output.json(cards)
        } else {
            Output.print(StatusTable.render(cards))
        }
    }
}
