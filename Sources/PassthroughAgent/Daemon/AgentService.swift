import Logging
import PassthroughConfig
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughUdev
import PassthroughSysfs
import ServiceLifecycle
import SystemPackage

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
    let controlSocket: FilePath?
    /// One element per SIGHUP (or other request to re-read the configuration).
    let reloadRequests: AsyncStream<Void>

    public init(
        configPath: String, config: AgentConfig, host: HostEnvironment, logger: Logger,
        notifier: any SystemdNotifying = SystemdNotifier(), options: CardSupervisor.Options = .init(),
        controlSocket: FilePath? = ControlServer.defaultPath, reloadRequests: AsyncStream<Void> = AsyncStream { $0.finish() }
    ) {
        self.configPath = configPath
        self.initialConfig = config
        self.host = host
        self.logger = logger
        self.notifier = notifier
        self.options = options
        self.controlSocket = controlSocket
        self.reloadRequests = reloadRequests
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
        if !options.dryRun { await supervisor.restoreLeftoverGuards() }
        let notifier = notifier
        let logger = logger
        let control = openControlSocket()

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
            if let control {
                group.addTask {
                    do {
                        try await control.run { request in await Self.answer(request, supervisor: supervisor) }
                    } catch {
                        logger.error("control socket stopped: \(error)")
                    }
                }
            }
            for card in initialConfig.cards {
                guard let interval = card.linkWatch.interval else { continue }
                guard let address = card.address.map(Self.firstFunction) else {
                    logger.warning("\(card.name): link-watch needs an address; not watching")
                    continue
                }
                group.addTask { await watchLink(of: card, at: address, every: interval, supervisor: supervisor) }
            }

            try? await gracefulShutdown()
            logger.notice("stopping: finishing the step in flight")
            Self.tell(notifier, logger) { try $0.stopping() }
            control?.shutdown()
            group.cancelAll()
        }
    }

    private func openControlSocket() -> ControlServer? {
        guard let controlSocket else { return nil }
        do {
            return try ControlServer(path: controlSocket, logger: logger)
        } catch {
            logger.warning("no control socket at \(controlSocket): \(error); reflash and live status are unavailable")
            return nil
        }
    }

    static func firstFunction(_ selector: PCIAddressSelector) -> PCIAddress {
        switch selector {
        case .function(let address): address
        case .slot(let slot): slot.function(0)!
        }
    }

    /// The third kind of host (no hotplug, no AER): the card stays in sysfs but reads all-ones.
    private func watchLink(of card: CardConfig, at address: PCIAddress, every interval: Duration, supervisor: CardSupervisor) async {
        let watcher = LinkWatcher(probe: LinkProbe(layout: host.sysfs, io: host.io))
        await watcher.watch(address, every: interval) { result in
            // A function removed from sysfs is udev's news (remove event), not a dead link.
            guard case .lost(let why) = result, why != .removed else { return }
            _ = try? await supervisor.reflash(card.name, .lost(reason: "link watch: \(address) \(why)"))
        }
    }

    /// What the control socket answers, from the supervisor's state.
    public static func answer(_ request: ControlRequest, supervisor: CardSupervisor) async -> ControlResponse {
        switch request {
        case .status(let only):
            let cards = await supervisor.cardStates.filter { only == nil || $0.card.name == only }.map { card, state in
                var detail: String?
                if case .retrying(let attempt, let lastError) = state.phase {
                    detail = "attempt \(attempt) failed: \(lastError)"
                }
                return ControlCardStatus(name: card.name.rawValue, state: state.summary(for: card), detail: detail)
            }
            return .success(cards: cards)
        case .reflashPrepare(let card):
            return await reflash(card, .prepare, supervisor)
        case .reflashFinish(let card):
            return await reflash(card, .finish, supervisor)
        }
    }

    private static func reflash(_ card: CardName, _ request: CardSupervisor.ReflashRequest, _ supervisor: CardSupervisor) async -> ControlResponse {
        do {
            return .success(try await supervisor.reflash(card, request))
        } catch {
            return .failure(for: error)
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
        for await _ in reloadRequests {
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
