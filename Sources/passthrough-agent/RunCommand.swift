import ArgumentParser
import Logging
import PassthroughAgent
import PassthroughSystemd
import ServiceLifecycle
import SystemPackage

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "The daemon: keep every configured card where it belongs (systemd Type=notify).",
        discussion: """
            Follows udev and libvirt; guest running: the card on vfio-pci and attached; guest stopped: back to \
            its host driver (or kept on vfio-pci). SIGHUP re-reads the configuration; SIGTERM finishes the \
            step in flight and exits 0.
            """
    )

    @OptionGroup var host: HostOptions

    @Flag(help: "Compute and log the plans, change nothing.")
    var dryRun = false

    @Option(name: .long, help: ArgumentHelp("The root-only control socket for reflash and live status.", valueName: "path"))
    var controlSocket: String = ControlServer.defaultPath.string

    @Option(name: .long, help: ArgumentHelp("The instance lock: one agent per host.", valueName: "path", visibility: .hidden))
    var lockFile: String = InstanceLock.defaultPath.string

    func run() async throws {
        // First, while this is the only thread (see SignalledServiceGroup).
        let signalled: SignalledServiceGroup
        do {
            signalled = try SignalledServiceGroup()
        } catch {
            throw cannotStart(error)
        }
        // Before anything on the host is touched: a second agent must not restore the first one's
        // guards, take its control socket over, or reconcile against it.
        let lock: InstanceLock
        do {
            lock = try InstanceLock(path: FilePath(lockFile))
        } catch {
            Output.error(error.description)
            throw ExitCode(ExitStatus.alreadyRunning)
        }
        defer { withExtendedLifetime(lock) {} }
        let config = try host.loadConfig()
        LoggingSystem.bootstrap { LogHandlers.make(label: $0) }
        let logger = Logger(label: "passthrough-agent")
        var options = CardSupervisor.Options()
        options.dryRun = dryRun
        let (hangups, hangup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let daemon = AgentDaemon(configPath: host.config, config: config, host: host.host, logger: logger, options: options,
                                 controlSocket: FilePath(controlSocket), reloadRequests: hangups)
        // SIGTERM, SIGINT: finish the step in flight, then exit 0; SIGHUP: re-read the configuration.
        do {
            try await signalled.run(try await daemon.serviceGroup()) { hangup.yield() }
        } catch {
            throw cannotStart(error)
        }
    }

    /// What the daemon throws is a facility of the host it could not set up (udev's netlink
    /// socket, libvirt's library): a status of its own, not ArgumentParser's generic 1.
    private func cannotStart(_ error: any Error) -> ExitCode {
        Output.error("passthrough-agent cannot run: \(error)")
        return ExitCode(ExitStatus.osError)
    }
}
