import ArgumentParser
import Logging
import PassthroughAgent
import PassthroughLibvirt

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Print what the daemon would do now, step by step; touch nothing.",
        discussion: "With --json: an array of steps, each with at least card and action; [] when all is well."
    )

    @OptionGroup var host: HostOptions

    @Flag(help: "Print a JSON array of steps.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("The libvirt URI (default: from the configuration).", valueName: "uri"))
    var libvirtURI: String?

    func run() async throws {
        let config = try host.loadConfig()
        let logger = Output.errorLogger("passthrough-agent.plan")
        let hypervisor = ReconnectingHypervisor(libvirtURI: libvirtURI ?? config.libvirtURI, logger: logger)
        let connection = Task { await hypervisor.run() }
        defer { connection.cancel() }
        // The first answer is enough: connected, or unreachable (then guest states are unknown).
        for await event in hypervisor.events {
            if case .connected = event { break }
            if case .disconnected = event { break }
        }
        let result: PlanPreview.Result
        do {
            result = try await PlanPreview.compute(config: config, host: host.host, hypervisor: hypervisor)
        } catch {
            Output.error("cannot read the PCI bus: \(error)")
            throw ExitCode(ExitStatus.ioError)
        }
        for note in result.notes { Output.error(note) }
        if json {
            try Output.json(result.steps)
        } else if result.steps.isEmpty {
            Output.print("nothing to do: every card is where it belongs\n")
        } else {
            for step in result.steps {
                Output.print("\(step.card): \(step.action)\(step.address.map { " \($0)" } ?? "")\(step.guest.map { " -> \($0)" } ?? "")\(step.policy.map { " (\($0))" } ?? "")  # \(step.reason)\n")
            }
        }
    }
}
