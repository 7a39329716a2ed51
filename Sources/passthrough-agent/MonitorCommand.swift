import ArgumentParser
import Logging
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import ServiceLifecycle

struct MonitorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Print PCI uevents and libvirt events as they arrive (like udevadm monitor + virsh event).",
        discussion: "One line per event; with --json one object per line. Ctrl-C or SIGTERM ends it."
    )

    @Flag(help: "One JSON object per line: source, action (udev) or event (libvirt), address, id, driver, guest…")
    var json = false

    @Flag(help: "Also print the PCI functions already present when monitoring starts.")
    var coldplug = false

    @Option(name: .long, help: ArgumentHelp("The libvirt URI (default: from the configuration, else qemu:///system).", valueName: "uri"))
    var libvirtURI: String?

    @Flag(help: "Watch udev only.")
    var noLibvirt = false

    @Option(name: .long, help: ArgumentHelp("The configuration file, for the libvirt URI.", valueName: "path"))
    var config: String = AgentConfig.defaultPath

    func run() async throws {
        let signalled = try SignalledServiceGroup()
        let uri: String? = noLibvirt ? nil : try libvirtURI ?? configuredURI()
        let json = json
        let logger = Output.errorLogger("passthrough-agent.monitor")
        let service = MonitorService(libvirtURI: uri, includeColdplug: coldplug, logger: logger) { record in
            if json {
                Output.jsonLine(record)
            } else {
                Output.print(record.text + "\n")
            }
        }
        try await signalled.run(service.serviceGroup())
    }

    /// A missing configuration is fine here (the default URI); a broken one is not.
    private func configuredURI() throws -> String {
        do {
            return try ConfigLoader.load(path: config).libvirtURI
        } catch where error.kind == .unreadable {
            return AgentConfig.defaultLibvirtURI
        } catch {
            Output.error(error.description)
            throw ExitCode(ExitStatus.config)
        }
    }
}
