import ArgumentParser
import PassthroughAgent
import PassthroughConfig
import PassthroughCore

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Is this host ready to lend its cards? IOMMU, vfio-pci, the configuration, each card and its IOMMU group, and how a reflash will go.",
        discussion: "Exits 0 when ready, 1 when not (a missing configuration included), 78 when the configuration has mistakes."
    )

    @OptionGroup var host: HostOptions

    @Flag(help: "Print the report as JSON: {ready, items: [{name, status, detail, fix}]}.")
    var json = false

    func run() throws {
        let config: Result<AgentConfig, ConfigError>
        do {
            config = .success(try ConfigLoader.load(path: host.config))
        } catch {
            config = .failure(error)
        }
        let report = ReadinessCheck.run(host: host.host, config: config)
        if json {
            try Output.json(report)
        } else {
            Output.print(report.text)
        }
        if case .failure(let error) = config, error.kind == .invalid {
            Output.error(error.description)
            throw ExitCode(ExitStatus.config)
        }
        if !report.ready { throw ExitCode(ExitStatus.notReady) }
    }
}
