import Logging
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughUdev
import ServiceLifecycle
import UnixSignals

/// `passthrough-agent run`: udev and libvirt in, the supervisor deciding, systemd told about it.
///
/// Start order (as bolt): subscribe to udev, then let the monitor enumerate through the same
/// stream; connect to libvirt; READY=1 only after the first pass that saw both.
public struct AgentService: Service {
    let configPath: String
    let initialConfig: AgentConfig
    let host: HostEnvironment
    let logger: Logger
    let notifier: any SystemdNotifying
    let options: CardSupervisor.Options

    public init(
        configPath: String, config: AgentConfig, host: HostEnvironment, logger: Logger,
        notifier: any SystemdNotifying = SystemdNotifier(), options: CardSupervisor.Options = .init()
    ) {
        self.configPath = configPath
        self.initialConfig = config
        self.host = host
        self.logger = logger
        self.notifier = notifier
        self.options = options
    }

    public func run() async throws {
        let udev = UdevMonitor(logger: logger)
        defer { udev.shutdown() }
        let uevents = try udev.start()
        let hypervisor = ReconnectingHypervisor(libvirtURI: initialConfig.libvirtURI, logger: logger)
        let supervisor = CardSupervisor(
            config: initialConfig, host: host, hypervisor: hypervisor, logger: logger,
            options: options, waitingFor: [.udev, .libvirt]
        )
        logger.notice("passthrough-agent starting: \(initialConfig.cards.count) card(s), libvirt \(initialConfig.libvirtURI)\(options.dryRun ? ", dry run" : "")")
        let notifier = notifier
        let logger = logger

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await hypervisor.run() }
            group.addTask {
                for await event in hypervisor.events { await supervisor.handle(event) }
            }
            group.addTask {
                for await event in uevents { await supervisor.handle(event) }
            }
            group.addTask {
                await supervisor.run { summary, isFirst in
                    Self.tell(notifier, logger) { try $0.status(summary) }
                    if isFirst {
                        Self.tell(notifier, logger) { try $0.ready() }
                        logger.notice("ready: \(summary)")
                    }
                }
            }
            if let interval = try? SystemdNotifier().watchdogInterval {
                group.addTask { await feedWatchdog(every: interval, supervisor: supervisor) }
            }
            group.addTask { await reloadOnHangup(supervisor) }

            try? await gracefulShutdown()
            logger.notice("stopping: finishing the step in flight")
            Self.tell(notifier, logger) { try $0.stopping() }
            group.cancelAll()
        }
    }

    /// WATCHDOG=1 only when the supervisor answers and its pass is not stuck.
    private func feedWatchdog(every interval: Duration, supervisor: CardSupervisor) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            if await supervisor.heartbeat() {
                Self.tell(notifier, logger) { try $0.watchdog() }
            } else {
                logger.critical("a reconcile pass is stuck; not feeding the watchdog")
            }
        }
    }

    private func reloadOnHangup(_ supervisor: CardSupervisor) async {
        for await _ in await UnixSignalsSequence(trapping: .sighup) {
            Self.tell(notifier, logger) { try $0.reloading() }
            if let config = ConfigReload.load(path: configPath, current: initialConfig, logger: logger) {
                await supervisor.reload(config)
            }
            Self.tell(notifier, logger) { try $0.ready() }
        }
    }

    static func tell(_ notifier: any SystemdNotifying, _ logger: Logger, _ message: (any SystemdNotifying) throws -> NotifyDelivery) {
        do {
            _ = try message(notifier)
        } catch {
            logger.warning("sd_notify failed: \(error)")
        }
    }
}

/// SIGHUP: the new configuration, or the old one kept with the reason logged.
public enum ConfigReload {
    public static func load(path: String, current: AgentConfig, logger: Logger) -> AgentConfig? {
        let notify = Notify(logger: logger)
        do {
            let config = try ConfigLoader.load(path: path)
            if config.libvirtURI != current.libvirtURI {
                logger.warning("libvirt.uri changed; the new URI takes effect after a restart")
            }
            notify(.configReloaded, "configuration reloaded: \(config.cards.count) card(s)", card: nil, [LogMetadataKey.configPath: "\(path)"])
            return config
        } catch {
            notify(.configRejected, "new configuration rejected, keeping the old one:\n\(error)", level: .error, card: nil,
                   [LogMetadataKey.configPath: "\(path)"])
            return nil
        }
    }
}
