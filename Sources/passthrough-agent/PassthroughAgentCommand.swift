import ArgumentParser

struct PassthroughAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passthrough-agent",
        abstract: "Keeps PCIe cards (FPGAs, XDMA/QDMA designs) where they belong: on vfio-pci in their running guest, or back on the host.",
        discussion: """
            Exit statuses: 0 success; 1 host not ready (check); 64 usage or unknown card; 69 card absent; \
            70 internal error; 71 run cannot start; 73 another agent is running; 74 a sysfs step failed and \
            was rolled back; 75 libvirt unavailable, or no daemon answers; 76 sent, no answer; 77 refused for \
            safety; 78 invalid configuration.
            """,
        subcommands: [RunCommand.self, PlanCommand.self, StatusCommand.self, CheckCommand.self, BindCommand.self, MonitorCommand.self, ReflashCommand.self]
    )
}
