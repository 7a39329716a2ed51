import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughThreads
import PassthroughUdev

/// Keeps every configured card where it belongs.
///
/// Level-triggered: events only mark cards dirty; a pass reads the actual state (sysfs + libvirt),
/// plans with the pure ``Reconciler`` and runs the steps, each verified. Lost, duplicated or
/// reordered events and restarts therefore do not matter. Cards are reconciled one after another
/// by this actor, so one card's steps never interleave with another plan for it.
public actor CardSupervisor {
    public struct Options: Sendable {
        /// How long to let a burst settle (a reflash is remove, add, bind within milliseconds).
        public var settle: Duration = .milliseconds(250)
        public var backoff: Backoff = .standard
        /// How long the live XML may take to show an attach.
        public var attachTimeout: Duration = .seconds(20)
        /// A pass running longer than this is stuck: the watchdog stops being fed.
        public var stuckAfter: Duration = .seconds(120)
        /// Compute and log plans, change nothing.
        public var dryRun = false
        /// Where the reflash guard keeps the registers it saved (survives a crash of the agent).
        public var guardStore = GuardStateStore()
        public var recoveryClock: any WaitClock = ContinuousWaitClock()
        public var recoveryPacing = RecoveryPacing()
        /// How long a guest may take to release a card before the host removes it anyway.
        public var detachTimeout: Duration = .seconds(20)
        /// How long after an AER BEGIN_RECOVERY without success the card is probed for a dead link.
        public var aerGrace: Duration = .seconds(5)

        public init() {}
    }

    /// Around a reflash: the card was lost (AER, link watch), or a person programs it over JTAG.
    public enum ReflashRequest: Hashable, Sendable {
        case lost(reason: String)
        case prepare
        case finish
    }

    public struct ReflashRefused: Error, CustomStringConvertible {
        public enum Reason: String, Sendable { case unknownCard = "unknown-card", notOnBus = "not-on-bus", unsafe = "refused", failed = "failed", busy = "busy" }

        public var reason: Reason
        public var description: String

        public init(_ reason: Reason, _ description: String) {
            self.reason = reason
            self.description = description
        }
    }

    /// Event sources that must have spoken before the first pass, so READY means "looked at everything".
    public enum Source: Hashable, Sendable { case udev, libvirt }

    private var config: AgentConfig
    private let host: HostEnvironment
    private let hypervisor: any Hypervisor
    private let logger: Logger
    private let options: Options
    /// Runs driver moves, removals and rescans, so a slow driver never stalls the daemon's executor.
    private let hostWorker: WorkerThread?

    private var blocking: BlockingCalls {
        guard let hostWorker else { return .inline }
        return BlockingCalls { call in
            do {
                try await hostWorker.perform(call)
            } catch {
                call()  // stopped at shutdown: the last step still runs, in place
            }
        }
    }
    private var states: [CardName: CardRuntimeState] = [:]
    private var dirty: Set<CardName> = []
    private var pendingSources: Set<Source>
    private var passStartedAt: ContinuousClock.Instant?
    private var completedPasses = 0
    private var retryTimer: Task<Void, Never>?
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private var commands: [(card: CardName, request: ReflashRequest, reply: CheckedContinuation<String, any Error>?)] = []

    public init(
        config: AgentConfig, host: HostEnvironment, hypervisor: any Hypervisor, logger: Logger,
        options: Options = Options(), waitingFor sources: Set<Source> = []
    ) {
        self.config = config
        self.host = host
        self.hypervisor = hypervisor
        self.logger = logger
        self.options = options
        self.pendingSources = sources
        // Without the thread (the process is out of them) moves run inline: slower to shut down, still correct.
        self.hostWorker = options.dryRun ? nil : try? WorkerThread(name: "pa-sysfs")
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        for card in config.cards { states[card.name] = CardRuntimeState() }
    }

    deinit {
        hostWorker?.stop()
    }

    // MARK: Events in

    /// A source has delivered its first picture of the world (udev coldplug, libvirt's first answer).
    public func sourceReady(_ source: Source) {
        guard pendingSources.remove(source) != nil else { return }
        markAllDirty()
    }

    public func markAllDirty() {
        dirty.formUnion(config.cards.map(\.name))
        wake.yield()
    }

    public func markDirty(_ cards: some Sequence<CardName>) {
        let before = dirty.count
        dirty.formUnion(cards)
        if dirty.count != before { wake.yield() }
    }

    /// The cards a uevent may concern: the function is claimed by a card, or was last seen as one
    /// of a card's functions (a `remove` carries an address but no ID).
    public func handle(_ event: UdevMonitorEvent) {
        switch event {
        case .device(let device):
            let concerned = config.cards.filter { card in
                if let id = device.id, card.matches(address: device.address, id: id) { return true }
                if let address = card.address, address.contains(device.address) { return true }
                return states[card.name]?.lastAddresses.contains(device.address) == true
            }
            if !concerned.isEmpty {
                if let aer = device.errorEvent {
                    logger.warning("AER \(aer) on \(device.address)", metadata: [
                        LogMetadataKey.pciSlot: "\(device.address)", "DEVICE_ONLINE": "\(device.deviceOnline.map { $0 ? "1" : "0" } ?? "-")",
                    ])
                    for card in concerned { handleAER(aer, online: device.deviceOnline, on: device.address, card: card.name) }
                }
                markDirty(concerned.map(\.name))
            }
        case .coldplugComplete:
            sourceReady(.udev)
            markAllDirty()
        case .resync(let reason):
            Notify(logger: logger)(.resync, "udev: \(reason); re-reading every card", level: .warning)
            markAllDirty()
        case .failed(let error):
            logger.error("udev monitor failed: \(error)")
        }
    }

    public func handle(_ event: HypervisorEvent) {
        switch event {
        case .connected:
            logger.notice("libvirt connected")
        case .disconnected(let reason):
            logger.warning("libvirt unreachable, retrying: \(reason)")
            sourceReady(.libvirt)
        case .resync:
            Notify(logger: logger)(.resync, "libvirt (re)connected; re-reading every card")
            sourceReady(.libvirt)
            markAllDirty()
        case .deviceRemovalFailed(let guest, let alias):
            logger.warning("\(guest) refused to release \(alias); will retry", metadata: [LogMetadataKey.guest: "\(guest)"])
            markDirty(cards(ownedBy: guest))
        case .lifecycle(let guest, _), .deviceRemoved(let guest, _), .deviceAdded(let guest, _):
            markDirty(cards(ownedBy: guest))
        }
    }

    /// FAILED_RECOVERY: the kernel gave up, so do we: recover. BEGIN_RECOVERY with the device
    /// offline may still end well; look at the link after a grace period and decide then.
    private func handleAER(_ event: AERErrorEvent, online: Bool?, on address: PCIAddress, card: CardName) {
        switch event {
        case .failedRecovery:
            enqueue(card, .lost(reason: "AER recovery failed on \(address)"), reply: nil)
        case .beginRecovery where online == false:
            let grace = options.aerGrace
            let probe = LinkProbe(layout: host.sysfs, io: host.io)
            Task { [weak self] in
                try? await Task.sleep(for: grace)
                if case .lost(let why) = probe.probe(address) {
                    await self?.enqueue(card, .lost(reason: "AER on \(address), then the link stayed down (\(why))"), reply: nil)
                }
            }
        default:
            break
        }
    }

    // MARK: Reflash

    /// Runs a reflash request between passes (never interleaved with a plan for the card) and
    /// answers when it is done.
    public func reflash(_ card: CardName, _ request: ReflashRequest) async throws -> String {
        guard config.cards.contains(where: { $0.name == card }) else {
            throw ReflashRefused(.unknownCard, "no card named \(card) in the configuration")
        }
        return try await withCheckedThrowingContinuation { reply in
            enqueue(card, request, reply: reply)
        }
    }

    private func enqueue(_ card: CardName, _ request: ReflashRequest, reply: CheckedContinuation<String, any Error>?) {
        if case .lost = request {
            // Taken off on purpose, or already being recovered: one recovery at a time.
            let queued = commands.contains { if case .lost = $0.request { $0.card == card } else { false } }
            if states[card]?.held == true || queued {
                reply?.resume(returning: "\(card): recovery already under way or card held for a reflash")
                return
            }
        }
        commands.append((card, request, reply))
        wake.yield()
    }

    private func perform(_ name: CardName, _ request: ReflashRequest) async throws -> String {
        guard let card = config.cards.first(where: { $0.name == name }) else {
            throw ReflashRefused(.unknownCard, "no card named \(name) in the configuration")
        }
        if !options.dryRun, let devices = try? host.reader.allFunctions() {
            noteChanges(await CardObserver(reader: host.reader, hypervisor: hypervisor).observe(card, devices: devices).observed)
        }
        let coordinator = reflashCoordinator
        guard let location = states[name]?.location else {
            throw ReflashRefused(.notOnBus, "\(name) has not been seen on the bus; nothing to take off or bring back")
        }
        let notify = Notify(logger: logger)
        var fields = Logger.Metadata.card(card)
        fields[LogMetadataKey.pciSlot] = "\(location.slot)"
        switch request {
        case .lost(let reason):
            notify(.cardLost, "\(name) lost: \(reason); recovering", level: .warning, card: name, fields)
            let outcome = await coordinator.recover(card, at: location)
            return try conclude(card, outcome, fields: fields)
        case .prepare:
            if states[name]?.held == true { return "\(name) is already off the bus; program it, then run reflash \(name) --finish" }
            try await coordinator.takeOff(card, at: location)
            states[name]?.held = true
            states[name]?.phase = .absent
            logger.notice("\(name) taken off the bus for a reflash", metadata: fields)
            return "\(name) is off the bus (\(location.slot)); program the FPGA, then run: passthrough-agent reflash \(name) --finish"
        case .finish:
            let outcome = await coordinator.bringBack(card, at: location)
            states[name]?.held = false
            return try conclude(card, outcome, fields: fields)
        }
    }

    private func conclude(_ card: CardConfig, _ outcome: RecoveryOutcome, fields: Logger.Metadata) throws -> String {
        switch outcome {
        case .recovered(let functions):
            dirty.insert(card.name)
            return "\(card.name) is back: \(functions.map { "\($0.address) \($0.id)" }.joined(separator: ", "))"
        case .gaveUp(let elapsed, let state):
            // Absent, and known to be: a later `add` is taken back through the ordinary path.
            states[card.name]?.phase = .absent
            Notify(logger: logger)(.recoveryGaveUp, "\(card.name) did not come back within \(elapsed) (\(state)); still watching for it",
                                   level: .error, card: card.name, fields)
            throw ReflashRefused(.failed, "\(card.name) did not come back within \(elapsed) (\(state))")
        case .failed(let failure, _):
            Notify(logger: logger)(.stepFailed, "\(card.name): recovery failed: \(failure)", level: .error, card: card.name, fields)
            throw ReflashRefused(.failed, "\(failure)")
        case .cancelled:
            throw CancellationError()
        }
    }

    private func cards(ownedBy guest: String) -> [CardName] {
        config.cards.filter { $0.guest.rawValue == guest }.map(\.name)
    }

    // MARK: Configuration

    /// A new configuration (SIGHUP). Every card is looked at again; removed cards are forgotten and
    /// left where they are.
    public func reload(_ newConfig: AgentConfig) {
        config = newConfig
        states = states.filter { name, _ in newConfig.cards.contains { $0.name == name } }
        for card in newConfig.cards where states[card.name] == nil { states[card.name] = CardRuntimeState() }
        markAllDirty()
    }

    // MARK: The loop

    /// Passes until cancelled. `onPass` gets a one-line summary after every pass (for STATUS=) and
    /// whether it was the first (for READY=1).
    public func run(onPass: @Sendable (_ summary: String, _ isFirst: Bool) -> Void = { _, _ in }) async {
        var iterator = wakeups.makeAsyncIterator()
        while !Task.isCancelled {
            collectDueRetries()
            while pendingSources.isEmpty, !commands.isEmpty, !Task.isCancelled {
                let command = commands.removeFirst()
                do {
                    let answer = try await perform(command.card, command.request)
                    command.reply?.resume(returning: answer)
                } catch {
                    command.reply?.resume(throwing: error)
                }
            }
            if dirty.isEmpty || !pendingSources.isEmpty {
                guard await iterator.next() != nil else { break }
                continue
            }
            if options.settle > .zero {
                try? await Task.sleep(for: options.settle)
            }
            await pass()
            completedPasses += 1
            onPass(summary, completedPasses == 1)
            scheduleRetryTimer()
        }
        retryTimer?.cancel()
        for command in commands { command.reply?.resume(throwing: CancellationError()) }
        commands.removeAll()
    }

    /// Before the first pass: put back whatever a crashed run left guarded.
    public func restoreLeftoverGuards() {
        reflashCoordinator.restoreLeftoverGuards()
    }

    private var reflashCoordinator: ReflashCoordinator {
        ReflashCoordinator(
            host: host, hypervisor: hypervisor, logger: logger, guardStore: options.guardStore,
            clock: options.recoveryClock, pacing: options.recoveryPacing, detachTimeout: options.detachTimeout,
            blocking: blocking
        )
    }

    /// The daemon's view of each card, for `status` over the control socket.
    public var cardStates: [(card: CardConfig, state: CardRuntimeState)] {
        config.cards.map { ($0, states[$0.name] ?? CardRuntimeState()) }
    }

    /// One pass over the dirty cards, in name order.
    public func pass() async {
        passStartedAt = .now
        defer { passStartedAt = nil }
        let batch = config.cards.filter { dirty.contains($0.name) }
        dirty.subtract(batch.map(\.name))
        let devices: [PCIDeviceSnapshot]
        do {
            devices = try host.reader.allFunctions()
        } catch {
            logger.error("cannot read the PCI bus: \(error)")
            for card in batch { recordFailure(card, "cannot read the PCI bus: \(error)") }
            return
        }
        for card in batch {
            // Shutdown waits for the step in flight, never interrupts one.
            if Task.isCancelled { return }
            await reconcile(card, devices: devices)
        }
    }

    /// Feeds the watchdog only while passes make progress.
    public func heartbeat() -> Bool {
        guard let started = passStartedAt else { return true }
        return ContinuousClock.now - started < options.stuckAfter
    }

    public var summary: String {
        config.cards.map { (states[$0.name] ?? CardRuntimeState()).summary(for: $0) }.joined(separator: "; ")
    }

    public func state(of card: CardName) -> CardRuntimeState? { states[card] }

    public func isDirty(_ card: CardName) -> Bool { dirty.contains(card) }

    // MARK: One card

    private func reconcile(_ card: CardConfig, devices initialDevices: [PCIDeviceSnapshot]) async {
        let observer = CardObserver(reader: host.reader, hypervisor: hypervisor)
        let executor = StepExecutor(
            binder: DriverBinder(config: config, reader: host.reader, logger: logger), blocking: blocking,
            hypervisor: hypervisor, logger: logger, settleTimeout: options.attachTimeout
        )
        var devices = initialDevices
        // A plan, its steps, and a second look to confirm; a third plan means something undoes us.
        for round in 0..<3 {
            let observation = await observer.observe(card, devices: devices)
            noteChanges(observation.observed)
            let steps = Reconciler.plan(for: observation.observed)
            if steps.isEmpty {
                settle(card, observation)
                return
            }
            states[card.name]?.phase = .pending(steps: steps.count)
            for step in steps {
                logger.info("plan: \(step)", metadata: .card(card).merging(["STEP": "\(step.actionName)"]) { $1 })
            }
            if options.dryRun { return }
            for step in steps {
                do {
                    try await executor.run(step, card: card)
                } catch {
                    recordFailure(card, "\(step.actionName) failed: \(error)", step: step)
                    return
                }
            }
            if round < 2 {
                do {
                    devices = try host.reader.allFunctions()
                } catch {
                    recordFailure(card, "cannot read the PCI bus: \(error)")
                    return
                }
            }
        }
        recordFailure(card, "did not converge after three plans")
    }

    /// Appeared, vanished, ID changed: said once, when it happens, not on every pass.
    private func noteChanges(_ observed: ObservedCard) {
        let card = observed.card
        let notify = Notify(logger: logger)
        var state = states[card.name] ?? CardRuntimeState()
        switch observed.resolution.outcome {
        case .present(let functions):
            let ids = Array(Set(functions.map(\.id))).sorted()
            let slot = functions[0].address.slot
            let fields: Logger.Metadata = [
                LogMetadataKey.pciSlot: "\(slot)", LogMetadataKey.pciID: "\(ids.map(\.description).joined(separator: ","))",
                LogMetadataKey.guest: "\(card.guest)",
            ]
            switch state.phase {
            case .absent, .unknown, .ambiguous:
                notify(.cardAppeared, "\(card.name) appeared at \(slot) (\(ids.map(\.description).joined(separator: ", ")))",
                       card: card.name, fields)
            default:
                break
            }
            if !state.lastIDs.isEmpty, state.lastIDs != ids {
                notify(.cardIDChanged, "\(card.name): ID changed \(state.lastIDs.map(\.description).joined(separator: ",")) -> \(ids.map(\.description).joined(separator: ","))",
                       card: card.name, fields)
            }
            state.lastIDs = ids
            state.lastAddresses = Set(functions.map(\.address))
            if let port = functions.compactMap(\.upstreamPort).first {
                state.location = ReflashCoordinator.Location(slot: slot, upstreamPort: port, functions: state.lastAddresses)
            }
            if state.held, let location = state.location {
                // Back without `--finish` (a hotplug slot re-enumerated it): the reflash is over.
                state.held = false
                reflashCoordinator.releaseGuard(card, at: location)
            }
        case .absent:
            if state.held {
                // Taken off on purpose: not news.
            } else if case .absent = state.phase {} else if case .unknown = state.phase {
                logger.warning("\(card.name) is not on the PCI bus", metadata: .card(card))
            } else {
                let slot = state.lastAddresses.sorted().first.map { "\($0.slot)" } ?? "the bus"
                notify(.cardVanished, "\(card.name) vanished from \(slot); waiting for it to return",
                       level: .warning, card: card.name, [LogMetadataKey.guest: "\(card.guest)", LogMetadataKey.pciSlot: "\(slot)"])
            }
            state.phase = .absent
        case .ambiguous(let slots):
            if state.phase != .ambiguous {
                logger.error("\(card.name): its ids match \(slots.count) slots; give it an address", metadata: .card(card))
            }
            state.phase = .ambiguous
        }
        states[card.name] = state
    }

    private func settle(_ card: CardConfig, _ observation: CardObserver.Observation) {
        guard var state = states[card.name] else { return }
        if observation.observed.resolution.isPresent {
            state.phase = .converged(Placement(card: card, guest: observation.observed.guest))
        }
        if state.failures > 0 {
            logger.notice("\(card.name): recovered after \(state.failures) failed attempt(s)", metadata: .card(card))
        }
        state.failures = 0
        state.retryAt = nil
        states[card.name] = state
        if let problem = observation.guestProblem, observation.observed.resolution.isPresent {
            logger.debug("\(card.name): guest state unknown (\(problem)); leaving the card where it is")
        }
    }

    private func recordFailure(_ card: CardConfig, _ message: String, step: PlanStep? = nil) {
        var state = states[card.name] ?? CardRuntimeState()
        state.failures += 1
        let delay = options.backoff.delay(afterFailures: state.failures)
        state.retryAt = .now + delay
        state.phase = .retrying(attempt: state.failures, lastError: message)
        states[card.name] = state
        let notify = Notify(logger: logger)
        var fields = Logger.Metadata.card(card)
        if let step { fields[LogMetadataKey.step] = "\(step.actionName)" }
        fields[LogMetadataKey.attempt] = "\(state.failures)"
        notify(.stepFailed, "\(card.name): \(message)", level: .error, card: card.name, fields)
        notify(.retry, "\(card.name): retrying in \(delay) (attempt \(state.failures + 1))", level: .notice, card: card.name, fields)
    }

    private func collectDueRetries() {
        let now = ContinuousClock.now
        for (name, state) in states {
            if let due = state.retryAt, due <= now {
                states[name]?.retryAt = nil
                dirty.insert(name)
            }
        }
    }

    /// One timer for the earliest retry, none when nothing waits: an idle agent never wakes up.
    private func scheduleRetryTimer() {
        retryTimer?.cancel()
        guard let next = states.values.compactMap(\.retryAt).min() else {
            retryTimer = nil
            return
        }
        retryTimer = Task { [wake] in
            try? await Task.sleep(until: next, clock: .continuous)
            if !Task.isCancelled { wake.yield() }
        }
    }
}
