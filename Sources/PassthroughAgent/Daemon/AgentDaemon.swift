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
public struct AgentDaemon: Sendable {
    let configPath: String
    let initialConfig: AgentConfig
    let host: HostEnvironment
    let logger: Logger
    let notifier: any SystemdNotifying
    let options: CardSupervisor.Options
    let controlSocket: FilePath?
    /// One element per SIGHUP (or other request to re-read the configuration).
    let reloadRequests: AsyncStream<Void>
    let ueventSource: UeventSource
    let guestChannels: GuestChannelsFactory?

    /// Where uevents come from: the udev monitor (its thread started, and how to stop it), or a test's stream.
    package typealias UeventSource = @Sendable (Logger) throws -> (events: AsyncStream<UdevMonitorEvent>, stop: @Sendable () -> Void)

    /// The guests' request channels (README, "Guest requests"), made once the libvirt connection exists:
    /// where the lines come from, and what keeps that running. `nil`: no guest is listened to.
    package typealias GuestChannelsFactory = @Sendable (any Hypervisor, Logger) throws -> (source: any GuestRequestSource, run: @Sendable () async -> Void)

    static let udevMonitor: UeventSource = { logger in
        let udev = UdevMonitor(logger: logger)
        return (try udev.start(), { udev.shutdown() })
    }

    /// One virtio-serial channel per guest that lends a card with `guest-requests = true`.
    static let virtioSerial: GuestChannelsFactory = { hypervisor, logger in
        let channels = try GuestChannels(hypervisor: hypervisor, logger: logger)
        return (channels, {
            do { try await channels.run() } catch { logger.error("guest requests stopped: \(error); no guest is listened to") }
        })
    }

    public init(
        configPath: String, config: AgentConfig, host: HostEnvironment, logger: Logger,
        notifier: any SystemdNotifying = SystemdNotifier(), options: CardSupervisor.Options = .init(),
        controlSocket: FilePath? = ControlServer.defaultPath, reloadRequests: AsyncStream<Void> = AsyncStream { $0.finish() }
    ) {
        self.init(configPath: configPath, config: config, host: host, logger: logger, notifier: notifier, options: options,
                  controlSocket: controlSocket, reloadRequests: reloadRequests, uevents: Self.udevMonitor,
                  guestChannels: Self.virtioSerial)
    }

    package init(
        configPath: String, config: AgentConfig, host: HostEnvironment, logger: Logger, notifier: any SystemdNotifying,
        options: CardSupervisor.Options, controlSocket: FilePath?, reloadRequests: AsyncStream<Void>,
        uevents: @escaping UeventSource, guestChannels: GuestChannelsFactory? = nil
    ) {
        self.ueventSource = uevents
        self.guestChannels = guestChannels
        self.configPath = configPath
        self.initialConfig = config
        self.host = host
        self.logger = logger
        self.notifier = notifier
        self.options = options
        self.controlSocket = controlSocket
        self.reloadRequests = reloadRequests
    }

    /// The daemon, each part built once and run as a service of one group, in start order: the libvirt
    /// connection, the metrics file, the supervisor, the routing of udev's and libvirt's events into it, the
    /// guests' request channels, the control socket, and what systemd hears. A graceful shutdown (SIGTERM)
    /// stops them in reverse: systemd hears STOPPING=1 first, the control socket closes, and the supervisor
    /// finishes its step in flight while libvirt is still connected. The udev monitor is subscribed before
    /// the group runs (bolt: subscribe first, then enumerate through the same stream).
    public func serviceGroup() async throws -> ServiceGroup {
        let (uevents, stopUdev) = try ueventSource(logger)
        let hypervisor = ReconnectingHypervisor(libvirtURI: initialConfig.libvirtURI, logger: logger)
        var options = options
        let metricsFile = openMetricsFile()
        if let metricsFile { options.observer = metricsFile.metrics }
        let supervisor = CardSupervisor(
            config: initialConfig, host: host, hypervisor: hypervisor, logger: logger,
            options: options, waitingFor: [.udev, .libvirt]
        )
        logger.notice("passthrough-agent starting: \(initialConfig.cards.count) card(s), libvirt \(initialConfig.libvirtURI)\(options.dryRun ? ", dry run" : "")")
        if !options.dryRun { await supervisor.restoreLeftovers() }
        let (notifier, logger) = (notifier, logger)
        let control = openControlSocket()
        var channels: (source: any GuestRequestSource, run: @Sendable () async -> Void)?
        do {
            // Through the supervisor's seam: a channel hot-add queues with the card moves of its guest.
            channels = try guestChannels?(supervisor.hypervisor, logger)
        } catch {
            logger.error("cannot listen to guests: \(error); guest requests are refused by silence")
        }
        let guestRequests = channels.map { GuestRequestService(supervisor: supervisor, source: $0.source, logger: logger) }

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: DaemonPart("libvirt connection") {
            await hypervisor.run()
        })]
        if let metricsFile {
            services.append(.init(service: DaemonPart("metrics file") { await metricsFile.run() }))
        }
        services.append(.init(service: DaemonPart("supervisor") {
            await supervisor.run { summary, isFirst in
                Self.tell(notifier, logger) { try $0.status(summary) }
                if isFirst {
                    Self.tell(notifier, logger) { try $0.ready() }
                    logger.notice("ready: \(summary)")
                }
            }
        }))
        // A deaf agent would keep feeding the watchdog while it misses every reflash: a udev monitor that fails
        // ends the group, and the daemon exits for systemd to start a fresh one.
        services.append(.init(service: DaemonPart("event routing") {
            defer { stopUdev() }
            try await Self.route(uevents, hypervisor.events, to: supervisor, guestRequests, logger: logger)
        }, failureTerminationBehavior: .gracefullyShutdownGroup))
        if let guestRequests, let channels {
            // Without its transport a guest's requests go unanswered; the cards still go where they belong.
            services.append(.init(service: DaemonPart("guest requests") {
                async let requests: Void = guestRequests.run()
                await channels.run()
                await requests
            }, successTerminationBehavior: .ignore))
        }
        if let control {
            services.append(.init(service: DaemonPart("control socket", onGracefulShutdown: control.shutdown) {
                do {
                    try await control.run { request in await Self.answer(request, supervisor: supervisor) }
                } catch {
                    logger.error("control socket stopped: \(error)")
                }
            }, successTerminationBehavior: .ignore))
        }
        services.append(.init(service: DaemonPart("systemd") { try await systemdSide(supervisor, guestRequests) }))
        return ServiceGroup(configuration: .init(services: services, logger: logger))
    }

    /// udev's and libvirt's events into the supervisor, until cancelled; throws when the udev monitor fails or
    /// its stream ends, after saying that the daemon exits for it.
    private static func route(
        _ uevents: AsyncStream<UdevMonitorEvent>, _ hypervisorEvents: AsyncStream<HypervisorEvent>,
        to supervisor: CardSupervisor, _ guestRequests: GuestRequestService?, logger: Logger
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in hypervisorEvents {
                    await supervisor.handle(event)
                    // A guest started or stopped (or libvirt is back): its channel is opened or dropped.
                    switch event {
                    case .connected, .resync, .lifecycle: guestRequests?.guestsMayHaveChanged()
                    case .disconnected, .deviceRemoved, .deviceAdded, .deviceRemovalFailed: break
                    }
                }
            }
            group.addTask {
                var failure = AgentDaemonError.udevMonitorFailed("its event stream ended")
                for await event in uevents {
                    await supervisor.handle(event)
                    if case .failed(let error) = event {
                        failure = .udevMonitorFailed("\(error)")
                        break
                    }
                }
                guard !Task.isCancelled else { return }
                logger.critical("\(failure); exiting so that systemd restarts the agent")
                throw failure
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// WATCHDOG=1 while the supervisor makes progress, SIGHUP's reloads, and STOPPING=1 as the group's shutdown
    /// begins (this service is the last started, so the first stopped).
    private func systemdSide(_ supervisor: CardSupervisor, _ guestRequests: GuestRequestService?) async throws {
        await withDiscardingTaskGroup { group in
            if let interval = try? notifier.watchdogInterval {
                group.addTask { await feedWatchdog(every: interval, supervisor: supervisor) }
            }
            group.addTask { await reloadOnHangup(supervisor, guestRequests) }
            try? await gracefulShutdown()
            logger.notice("stopping: finishing the step in flight")
            Self.tell(notifier, logger) { try $0.stopping() }
            group.cancelAll()
        }
    }

    /// `[agent] metrics-file`, unless this is a dry run: `--dry-run` changes nothing on the host, and a file
    /// that node_exporter serves is a change others see (a dry run's metrics would claim cards it never moved).
    private func openMetricsFile() -> MetricsFileWriter? {
        guard let path = initialConfig.metricsFile else { return nil }
        if options.dryRun {
            logger.notice("dry run: the metrics file \(path) is not written")
            return nil
        }
        return MetricsFileWriter(file: FilePath(path), metrics: AgentMetrics(), logger: logger)
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
                logger.critical("stuck: \(supervisor.stuckWork().joined(separator: "; ")); not feeding the watchdog")
            }
        }
    }

    private func reloadOnHangup(_ supervisor: CardSupervisor, _ guestRequests: GuestRequestService?) async {
        for await _ in reloadRequests {
            Self.tell(notifier, logger) { try $0.reloading() }
            if let config = Self.reloadedConfig(path: configPath, running: initialConfig, logger: logger) {
                await supervisor.reload(config)
                // guest-requests turned on or off, a card lent to another guest.
                guestRequests?.guestsMayHaveChanged()
            }
            Self.tell(notifier, logger) { try $0.ready() }
        }
    }

    /// SIGHUP: the new configuration, or `nil` (the old one kept) with the reason logged. `running`: the one the
    /// agent started with, whose connections a reload does not reopen.
    package static func reloadedConfig(path: String, running: AgentConfig, logger: Logger) -> AgentConfig? {
        do {
            let (config, waiting) = try ConfigLoader.reload(path: path, running: running)
            for setting in waiting { logger.warning("\(setting) changed; the new value takes effect after a restart") }
            logger.announce(.configReloaded, "configuration reloaded: \(config.cards.count) card(s)", card: nil, [LogMetadataKey.configPath: "\(path)"])
            return config
        } catch {
            logger.announce(.configRejected, "new configuration rejected, keeping the old one:\n\(error)", level: .error, card: nil,
                            [LogMetadataKey.configPath: "\(path)"])
            return nil
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

/// Why `run` ends by itself: what a restart by systemd may cure.
package enum AgentDaemonError: Error, Hashable, Sendable, CustomStringConvertible {
    case udevMonitorFailed(String)

    public var description: String {
        switch self {
        case .udevMonitorFailed(let why): "the udev monitor stopped (\(why)): no uevent would reach the agent"
        }
    }
}

/// One part of a long-running command (`run`, `monitor`) as a service of its group: `body` runs until a graceful
/// shutdown cancels it (after `onGracefulShutdown`, for a part that stops by being told rather than by
/// cancellation), or until it ends by itself, which its configuration in the group says what to make of.
struct DaemonPart: Service, CustomStringConvertible {
    let description: String
    let onGracefulShutdown: @Sendable () -> Void
    let body: @Sendable () async throws -> Void

    init(_ name: String, onGracefulShutdown: @escaping @Sendable () -> Void = {}, body: @escaping @Sendable () async throws -> Void) {
        description = name
        self.onGracefulShutdown = onGracefulShutdown
        self.body = body
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await cancelWhenGracefulShutdown(body)
        } onGracefulShutdown: {
            onGracefulShutdown()
        }
    }
}
