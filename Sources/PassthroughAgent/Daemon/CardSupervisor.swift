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
/// reordered events and restarts therefore do not matter. Dirty cards are reconciled in lanes
/// (``ReconcileLane``): cards that share an IOMMU group one after another, other lanes beside them, so
/// one card's steps never interleave with another plan for it or for its peers; a guest's attaches and
/// detaches queue for it (``OneJobPerGuest``), as libvirt runs one job per domain.
public actor CardSupervisor {
    public struct Options: Sendable {
        /// How long to let a burst settle (a reflash is remove, add, bind within milliseconds).
        public var settle: Duration = .milliseconds(250)
        /// How long READY=1 waits, after the first look begins, for a card whose events never pause (a flapping
        /// link); the card is reconciled once they do.
        public var readyDespiteBursts: Duration = .seconds(10)
        public var backoff: Backoff = .standard
        /// How long the live XML may take to show an attach.
        public var attachTimeout: Duration = .seconds(20)
        /// A pass running longer than this is stuck: the watchdog stops being fed.
        public var stuckAfter: Duration = .seconds(120)
        /// Compute and log plans, change nothing.
        public var dryRun = false
        /// Where each card's reflash state and the guard's saved registers live (survives a crash,
        /// a restart and a stop of the agent).
        public var reflashStore = ReflashStateStore()
        public var recoveryClock: any WaitClock = ContinuousWaitClock()
        public var recoveryPacing = RecoveryPacing()
        /// How long a guest may take to release a card after a detach request; one that does not is
        /// never removed from under it (`--prepare` is refused, a recovery waits).
        public var detachTimeout: Duration = .seconds(20)
        /// How often a recovery waiting for a guest to let go of the card looks again.
        public var holderRecheck: Duration = .seconds(2)
        /// How long after an AER BEGIN_RECOVERY without success the card is probed for a dead link.
        public var aerGrace: Duration = .seconds(5)
        /// Where the BAR check's and the link check's memory lives; `nil`: `facts` next to the reflash state.
        public var factsStore: CardFactsStore?
        /// Who is told where each card is and what happened to it (the metrics file); `nil`: nobody.
        package var observer: (any AgentFactSink)?

        public init() {}

        var facts: CardFactsStore {
            factsStore ?? CardFactsStore(directory: reflashStore.directory.removingLastComponent().appending("facts"))
        }
    }

    /// A person programs the card over JTAG: take it off the bus, then bring it back.
    public enum ReflashRequest: Hashable, Sendable {
        case prepare
        case finish
    }

    /// Why a reflash request was not carried out; the control socket turns the reason into the
    /// client's exit status.
    public struct ReflashRefused: Error, CustomStringConvertible {
        public enum Reason: String, Sendable {
            case unknownCard = "unknown-card"
            case notOnBus = "not-on-bus"
            /// Carrying it out would risk the host or a guest (held by a guest, unknown state, dry run).
            case unsafe = "refused"
            /// A step failed; what could be rolled back was.
            case failed = "failed"
            case busy = "busy"
        }

        public var reason: Reason
        public var description: String

        public init(_ reason: Reason, _ description: String) {
            self.reason = reason
            self.description = description
        }
    }

    /// Event sources that must have spoken before the first pass, so READY means "looked at everything".
    public enum Source: Hashable, Sendable { case udev, libvirt }

    var config: AgentConfig
    let host: HostEnvironment
    let hypervisor: any Hypervisor
    let logger: Logger
    let options: Options
    /// What is in flight (passes, worker and libvirt calls, commands), for the watchdog.
    let work: InFlightWork
    /// Runs bus scans and driver moves, so a slow driver never stalls the daemon's executor; a few threads,
    /// so one lane's slow remove (a network driver unregistering) does not hold up the others' binds.
    private let hostWorker: WorkerThread?
    /// Runs reflash removals and rescans: a removal waiting for a driver must not hold up every other
    /// card's passes behind it.
    private let reflashWorker: WorkerThread?

    /// Lanes whose driver moves can run at once: past that they queue, which costs time, never safety.
    static let sysfsThreads = 4

    var blocking: BlockingCalls { Self.blockingCalls(on: hostWorker, "sysfs call", work) }

    var reflashBlocking: BlockingCalls { Self.blockingCalls(on: reflashWorker, "reflash sysfs call", work) }

    private static func blockingCalls(on worker: WorkerThread?, _ what: String, _ work: InFlightWork) -> BlockingCalls {
        guard let worker else {
            return BlockingCalls { call in
                let token = work.begin(what)
                call()
                work.end(token)
            }
        }
        return BlockingCalls { call in
            let token = work.begin("\(what) on a worker thread")
            defer { work.end(token) }
            do {
                try await worker.perform(call)
            } catch {
                call()  // stopped at shutdown: the last step still runs, in place
            }
        }
    }
    /// Reads a card's actual state: its functions from a bus scan, its guest from libvirt.
    private let observer: CardObserver
    /// Runs a plan's steps; its driver moves claim only what the configuration in force names, so a reload
    /// makes a new one.
    private var runner: StepRunner
    var states: [CardName: CardRuntimeState] = [:]
    private var dirty: Set<CardName> = []
    /// When each card was last marked dirty: its settle counts from there, so one card's burst does not hold
    /// up another's pass. A card whose events never pause for the settle time is not acted on mid-burst: a
    /// device that flaps faster than that is better left alone until it stops.
    private var markedAt: [CardName: ContinuousClock.Instant] = [:]
    /// Cards not yet looked at since the sources first spoke: READY=1 waits for them (`nil` until then).
    private var firstLookPending: Set<CardName>?
    /// When the sources first spoke: a card still settling `readyDespiteBursts` later no longer holds up READY=1.
    private var firstLookStarted: ContinuousClock.Instant?
    private var pendingSources: Set<Source>
    /// What the running lanes hold: their cards and IOMMU groups.
    private var heldByLanes: Set<ReconcileLane.Claim> = []
    /// Lanes ended since the loop last reported (STATUS=, and READY=1 the first time all are done).
    private var lanesEnded = 0
    /// Wakes the loop for its next reason to look without an event: a retry coming due, a card settled.
    private var wakeTimer: Task<Void, Never>?
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    /// Recoveries in flight, one per card at most; each on a task of its own.
    var recoveries: [CardName: Task<Void, Never>] = [:]
    /// AER BEGIN_RECOVERY grace probes waiting to look at the link.
    var graceProbes: [CardName: Task<Void, Never>] = [:]
    /// One per card off the bus for a reflash: says so once if nobody finishes within its recovery-timeout.
    var heldReminders: [CardName: Task<Void, Never>] = [:]
    /// `link-watch` probes, one per card that has one; restarted by a reload.
    var linkWatches: [CardName: (interval: Duration, task: Task<Void, Never>)] = [:]
    /// Until the sources have spoken: then persisted recoveries resume and link watches start.
    private var awaitingFirstLook = true
    /// Cards whose reconcile is between its first look and its last step, with whoever waits for it to
    /// end. The actor lets a loss or a reflash request in while a step is awaited; the reflash path
    /// takes the card over at once (the reconcile stops at its next step), but acts only once that
    /// step is over: an attach still in flight would hand the guest a function about to be removed.
    private var reconciling: [CardName: [CheckedContinuation<Void, Never>]] = [:]

    public init(
        config: AgentConfig, host: HostEnvironment, hypervisor: any Hypervisor, logger: Logger,
        options: Options = Options(), waitingFor sources: Set<Source> = []
    ) {
        self.config = config
        self.host = host
        self.logger = logger
        self.options = options
        let work = InFlightWork(defaultLimit: options.stuckAfter)
        self.work = work
        let queued = OneJobPerGuest(base: TrackedHypervisor(base: hypervisor, work: work))
        self.hypervisor = options.dryRun ? ChangesNothing(base: queued) : queued
        self.pendingSources = sources
        // Without the thread (the process is out of them) moves run inline: slower to shut down, still correct.
        // A dry run has it too: its bus scans read every device's driver_override, which waits for that
        // device's lock (a device mid-probe anywhere on the host).
        self.hostWorker = try? WorkerThread(name: "pa-sysfs", threads: Self.sysfsThreads)
        observer = CardObserver(reader: host.reader, hypervisor: self.hypervisor)
        runner = Self.runner(for: config, host: host, hypervisor: self.hypervisor, logger: logger, options: options,
                             blocking: Self.blockingCalls(on: hostWorker, "sysfs call", work))
        self.reflashWorker = options.dryRun ? nil : try? WorkerThread(name: "pa-reflash")
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        for card in config.cards {
            states[card.name] = CardRuntimeState(reflash: Self.resumedReflash(of: card.name, from: options.reflashStore, logger: logger),
                                                 facts: options.facts.load(card.name))
        }
    }

    private static func runner(
        for config: AgentConfig, host: HostEnvironment, hypervisor: any Hypervisor, logger: Logger, options: Options,
        blocking: BlockingCalls
    ) -> StepRunner {
        StepRunner(binder: DriverBinder(config: config, reader: host.reader, logger: logger), blocking: blocking,
                   guests: GuestMoves(hypervisor: hypervisor, logger: logger, settleTimeout: options.attachTimeout), logger: logger)
    }

    deinit {
        hostWorker?.stop()
        reflashWorker?.stop()
    }

    // MARK: Events in

    /// A source has delivered its first picture of the world (udev coldplug, libvirt's first answer).
    public func sourceReady(_ source: Source) {
        guard pendingSources.remove(source) != nil else { return }
        markAllDirty()
    }

    var sourcesReady: Bool { pendingSources.isEmpty }

    public func markAllDirty() {
        markDirty(config.cards.map(\.name))
    }

    /// Also for a card dirty already: one the loop left waiting (its reflash in progress, its lane running)
    /// may be due now, and only a wake-up makes the loop look.
    public func markDirty(_ cards: some Sequence<CardName>) {
        let now = ContinuousClock.now
        var marked = false
        for card in cards {
            dirty.insert(card)
            markedAt[card] = now
            marked = true
        }
        guard marked else { return }
        wake.yield()
    }

    /// The cards a uevent may concern: the function is claimed by a card, or was last seen as one
    /// of a card's functions (a `remove` carries an address but no ID).
    public func handle(_ event: UdevMonitorEvent) async {
        switch event {
        case .device(let device):
            let concerned = config.cards.filter { card in
                if let id = device.id, card.matches(address: device.address, id: id) { return true }
                if let address = card.address, address.contains(device.address) { return true }
                return states[card.name]?.lastAddresses.contains(device.address) == true
            }
            if !concerned.isEmpty {
                // A hot-add coalesced with its removal into one pass is still a new pci_dev.
                if device.action == .add {
                    for card in concerned {
                        states[card.name]?.reenumerated()
                        cameBack(card.name)
                    }
                }
                if let aer = device.errorEvent {
                    logger.warning("AER \(aer) on \(device.address)", metadata: [
                        LogMetadataKey.pciSlot: "\(device.address)", "DEVICE_ONLINE": "\(device.deviceOnline.map { $0 ? "1" : "0" } ?? "-")",
                    ])
                    for card in concerned { await handleAER(aer, online: device.deviceOnline, on: device.address, card: card.name) }
                }
                markDirty(concerned.map(\.name))
            }
        case .coldplugComplete:
            sourceReady(.udev)
            markAllDirty()
        case .resync(let reason):
            logger.announce(.resync, "udev: \(reason); re-reading every card", level: .warning)
            tell(.udevResync)
            markAllDirty()
        case .failed:
            break  // AgentDaemon ends the daemon: a deaf agent helps nobody
        }
    }

    public func handle(_ event: HypervisorEvent) {
        switch event {
        case .connected:
            logger.notice("libvirt connected")
            tell(.libvirtConnected(true))
        case .disconnected(let reason):
            logger.warning("libvirt unreachable, retrying: \(reason)")
            tell(.libvirtConnected(false))
            sourceReady(.libvirt)
        case .resync:
            logger.announce(.resync, "libvirt (re)connected; re-reading every card")
            tell(.libvirtConnected(true))
            sourceReady(.libvirt)
            markAllDirty()
        case .deviceRemovalFailed(let guest, let alias):
            logger.warning("\(guest) refused to release \(alias); will retry", metadata: [LogMetadataKey.guest: "\(guest)"])
            markDirty(cards(ownedBy: guest))
        case .lifecycle(let guest, _), .deviceRemoved(let guest, _), .deviceAdded(let guest, _):
            markDirty(cards(ownedBy: guest))
        }
    }

    private func cards(ownedBy guest: String) -> [CardName] {
        config.cards.filter { $0.guest.rawValue == guest }.map(\.name)
    }

    // MARK: Configuration

    /// A new configuration (SIGHUP). Every card is looked at again; removed cards are forgotten and
    /// left where they are, except that a port guarded for them is put back.
    public func reload(_ newConfig: AgentConfig) {
        for card in config.cards where !newConfig.cards.contains(where: { $0.name == card.name }) {
            forgetReflash(of: card)
            tell(.cardForgotten(card.name))
            if let facts = states[card.name]?.facts, facts != CardFacts() {
                states[card.name]?.facts = CardFacts()
                saveFacts(of: card.name)
            }
        }
        config = newConfig
        runner = Self.runner(for: newConfig, host: host, hypervisor: hypervisor, logger: logger, options: options, blocking: blocking)
        let names = Set(newConfig.cards.map(\.name))
        states = states.filter { names.contains($0.key) }
        dirty.formIntersection(names)
        markedAt = markedAt.filter { names.contains($0.key) }
        for card in newConfig.cards where states[card.name] == nil { states[card.name] = CardRuntimeState(facts: options.facts.load(card.name)) }
        // The new configuration may be the fix for what kept failing: every card is due now.
        for name in names { states[name]?.retryAt = nil }
        if !awaitingFirstLook { startLinkWatches() }
        markAllDirty()
    }

    // MARK: The loop

    /// Reconciles dirty cards until cancelled, each lane on a task of its own. `onPass` gets a one-line
    /// summary whenever a lane has ended (for STATUS=), and whether every card has now been looked at for
    /// the first time (for READY=1).
    public func run(onPass: @Sendable (_ summary: String, _ isFirst: Bool) -> Void = { _, _ in }) async {
        var ready = false
        // Shutdown cancels the lanes with the loop; each stops after its step in flight, never inside one.
        await withDiscardingTaskGroup { lanes in
            var iterator = wakeups.makeAsyncIterator()
            while !Task.isCancelled {
                collectDueRetries()
                if pendingSources.isEmpty, awaitingFirstLook {
                    awaitingFirstLook = false
                    firstLookPending = Set(config.cards.map(\.name))
                    firstLookStarted = .now
                    resumeRecoveries()
                    startLinkWatches()
                }
                if lanesEnded > 0 {
                    lanesEnded = 0
                    if ready { onPass(summary, false) }
                }
                if !ready, firstLookDone() {
                    ready = true
                    onPass(summary, true)
                }
                if dueCards().isEmpty || !pendingSources.isEmpty {
                    scheduleWakeTimer()
                    guard await iterator.next() != nil else { break }
                    continue
                }
                let started = await startLanes()
                for lane in started {
                    lanes.addTask { await self.runLane(lane) }
                }
                // Everything due waits for a running lane (its end wakes the loop), or failed to be read (its
                // retry does).
                if started.isEmpty, !Task.isCancelled {
                    scheduleWakeTimer()
                    guard await iterator.next() != nil else { break }
                }
            }
        }
        wakeTimer?.cancel()
        await stopReflashWork()
    }

    /// The daemon's view of each card, for `status` over the control socket.
    public var cardStates: [(card: CardConfig, state: CardRuntimeState)] {
        config.cards.map { ($0, states[$0.name] ?? CardRuntimeState()) }
    }

    /// One pass over the dirty cards whose lanes are free, lanes side by side; returns when they are done.
    public func pass() async {
        let started = await startLanes()
        await withDiscardingTaskGroup { lanes in
            for lane in started {
                lanes.addTask { await self.runLane(lane) }
            }
        }
    }

    /// A lane to run.
    private struct StartedLane: Sendable {
        var lane: ReconcileLane
        /// Where each card's reflash stood when the lanes were formed: a request or a loss handled since (while
        /// the lane awaited a scan or another card's step) may have taken a card off the bus, and a scan that
        /// still showed it would make a held card look back by itself.
        var reflashAtScan: [CardName: ReflashStateMachine]
    }

    /// Dirty cards the loop may take now. A burst (a reflash is remove, add, bind within milliseconds; a
    /// multi-function card appears a function at a time) is looked at once the card has been quiet for the
    /// settle time. A card in a running lane waits for that lane.
    private func dueCards() -> [CardConfig] {
        let now = ContinuousClock.now
        return config.cards.filter { card in
            guard dirty.contains(card.name), let state = states[card.name] else { return false }
            return Self.loopMayTake(state, at: now) && !heldByLanes.contains(.card(card.name)) && settledAt(card.name) <= now
        }
    }

    /// Whether the loop may reconcile a card in `state` at all. A card being taken off, brought back or
    /// recovered is the reflash path's, not the loop's; the reflash marks it dirty again when it is done. A card
    /// in backoff is due at its retry time and never earlier, whatever events say: its own failed move makes
    /// bind/unbind uevents, and answering those at once would flap the host driver several times a second.
    private static func loopMayTake(_ state: CardRuntimeState, at now: ContinuousClock.Instant) -> Bool {
        !state.reflash.state.excludesReconcile && (state.retryAt.map { $0 <= now } ?? true)
    }

    /// When the card will have been quiet for the settle time.
    private func settledAt(_ card: CardName) -> ContinuousClock.Instant {
        (markedAt[card] ?? .now - options.settle) + options.settle
    }

    /// One timer for the loop's next reason to look without an event: the earliest retry coming due, or the
    /// dirty card that settles next. None when there is neither (a lane's or a reflash's end wakes the loop), so
    /// an idle agent never wakes up.
    private func scheduleWakeTimer() {
        wakeTimer?.cancel()
        let now = ContinuousClock.now
        let retries = states.values.compactMap(\.retryAt)
        let settles = dirty.map(settledAt).filter { $0 > now }
        guard let next = (retries + settles).min() else {
            wakeTimer = nil
            return
        }
        wakeTimer = Task { [wake] in
            try? await Task.sleep(until: next, clock: .continuous)
            if !Task.isCancelled { wake.yield() }
        }
    }

    /// Reads the bus once (IOMMU groups, no overrides) and starts a lane for each set of due cards no running
    /// lane holds a claim of.
    private func startLanes() async -> [StartedLane] {
        let due = dueCards()
        guard !due.isEmpty else { return [] }
        dirty.subtract(due.map(\.name))
        let reflashAtScan = Dictionary(uniqueKeysWithValues: due.compactMap { card in states[card.name].map { (card.name, $0.reflash) } })
        let devices: [PCIDeviceSnapshot]
        do {
            devices = try await scanBus(readingOverridesOf: [])
        } catch {
            logger.error("cannot read the PCI bus: \(error)")
            for card in due { recordFailure(card, "cannot read the PCI bus: \(error)") }
            return []
        }
        let candidates = due.map { ReconcileLane.Candidate(card: $0.name, iommuGroups: iommuGroups(of: $0, in: devices)) }
        // Lanes may have started or ended while the bus was read (a test's `pass()` beside the loop).
        let (lanes, waiting) = ReconcileLane.partition(candidates, held: heldByLanes)
        dirty.formUnion(waiting)
        for lane in lanes { heldByLanes.formUnion(lane.claims) }
        return lanes.map { StartedLane(lane: $0, reflashAtScan: reflashAtScan) }
    }

    private func runLane(_ started: StartedLane) async {
        let token = work.begin("reconcile of \(started.lane.cards.map(\.description).joined(separator: ", "))")
        var claims = started.lane.claims
        defer {
            work.end(token)
            heldByLanes.subtract(claims)
            lanesEnded += 1
            wake.yield()
        }
        for name in started.lane.cards {
            // Shutdown waits for the step in flight, never interrupts one.
            if Task.isCancelled { return }
            // A card a reload dropped meanwhile is left where it is; one it changed is reconciled as it is now.
            guard let card = config.cards.first(where: { $0.name == name }) else { continue }
            // Each card from a scan of its own, taken when its turn comes.
            let devices: [PCIDeviceSnapshot]
            do {
                devices = try await scanBus(readingOverridesOf: [card])
            } catch {
                recordFailure(card, "cannot read the PCI bus: \(error)")
                continue
            }
            // Left dirty, not marked again (its settle has passed): the loop looks once the lane ends.
            guard let state = states[name], state.reflash == started.reflashAtScan[name], !state.reflash.state.excludesReconcile else {
                dirty.insert(name)  // read the bus again, once the reflash path is done with it
                continue
            }
            // The card may sit in a group the lanes were not formed with (off the bus then, back now; its address
            // changed by a reload): it is moved only while this lane holds that group too, by the lanes' own rule.
            let candidate = ReconcileLane.Candidate(card: name, iommuGroups: iommuGroups(of: card, in: devices))
            guard let grown = ReconcileLane.partition([candidate], held: heldByLanes.subtracting(claims)).lanes.first else {
                dirty.insert(name)  // another lane moves a peer now: after it
                continue
            }
            heldByLanes.formUnion(grown.claims)
            claims.formUnion(grown.claims)
            await reconcile(card, devices: devices)
            firstLookPending?.remove(name)
        }
    }

    /// The IOMMU groups of the functions `card` resolves to on `devices` (none when it is not on the bus).
    private func iommuGroups(of card: CardConfig, in devices: [PCIDeviceSnapshot]) -> Set<Int> {
        let resolution = CardResolution(card: card, devices: devices, lastSlot: states[card.name]?.history.lastSlot)
        return Set(resolution.functions.compactMap(\.iommuGroup))
    }

    /// Whether every card has been looked at since the sources first spoke: reconciled, or failed to be read
    /// (it waits for its retry), or never due then (the reflash path has it), or dropped by a reload. A card whose
    /// events have not paused for the settle time by `readyDespiteBursts` after that (a flapping link) does not
    /// hold up READY=1 beyond it: systemd would otherwise kill a daemon that never became ready.
    private func firstLookDone() -> Bool {
        guard var pending = firstLookPending, let started = firstLookStarted else { return false }
        let now = ContinuousClock.now
        let stillWaitsForBursts = now < started + options.readyDespiteBursts
        pending = pending.filter { name in
            guard let state = states[name] else { return false }
            return Self.loopMayTake(state, at: now) && (stillWaitsForBursts || settledAt(name) <= now)
        }
        firstLookPending = pending
        return pending.isEmpty
    }

    /// Feeds the watchdog only while nothing in flight (a pass, a worker or libvirt call, a command)
    /// has run past its limit.
    public func heartbeat() -> Bool {
        stuckWork().isEmpty
    }

    /// What is stuck, for the log line that says why the watchdog is no longer fed.
    public nonisolated func stuckWork() -> [String] {
        work.stuck()
    }

    public var summary: String {
        config.cards.map { (states[$0.name] ?? CardRuntimeState()).summary(for: $0) }.joined(separator: "; ")
    }

    public func state(of card: CardName) -> CardRuntimeState? { states[card] }

    public func isDirty(_ card: CardName) -> Bool { dirty.contains(card) }

    // MARK: One card

    /// Returns once no reconcile of `name` is in flight. Called by the reflash path after its transition
    /// has taken the card over, so the one in flight stops at its next step and no other starts.
    func untilReconcileEnds(_ name: CardName) async {
        guard reconciling[name] != nil else { return }
        await withCheckedContinuation { reconciling[name, default: []].append($0) }
    }

    /// Whether the reflash path took the card over since this reconcile began (a loss, a request: each
    /// may arrive at any await), so the reconcile stops where it is, without recording a failure.
    private func reflashTookOver(_ card: CardConfig) -> Bool {
        guard states[card.name]?.reflash.state.excludesReconcile == true else { return false }
        logger.debug("reconcile stopped: the reflash path has the card now", metadata: .card(card))
        return true
    }

    private func reconcile(_ card: CardConfig, devices initialDevices: [PCIDeviceSnapshot]) async {
        assert(reconciling[card.name] == nil, "two reconciles of \(card.name) at once: the first one's waiters would be lost")
        reconciling[card.name] = []
        defer {
            for waiter in reconciling.removeValue(forKey: card.name) ?? [] { waiter.resume() }
        }
        // The configuration this reconcile began with, to its end: a reload meanwhile is the next one's.
        let runner = runner
        var devices = initialDevices
        // Whatever this pass ends in (settled, retrying, a dry run's plan), the metrics hear of it.
        defer { publish(card.name) }
        // A plan, its steps, and a second look to confirm; a third plan means something undoes us.
        for round in 0..<3 {
            var observation = await observer.observe(card, devices: devices, history: states[card.name]?.history ?? CardHistory())
            if reflashTookOver(card) { return }
            noteChanges(observation.observed)
            noteGuestSide(of: card, observation.observed)
            observation.observed.bars = CardBARs(readBARs(of: card, observation.observed))
            checkLink(of: card, observation.observed)
            let steps = Reconciler.plan(for: observation.observed)
            if steps.isEmpty {
                settle(card, observation)
                keepLentGuard(card)
                return
            }
            states[card.name]?.phase = .pending(steps: steps.count)
            for step in steps {
                logger.info("plan: \(step)", metadata: .card(card).merging([LogMetadataKey.step: "\(step.actionName)"]) { $1 })
            }
            if options.dryRun { return }
            for step in steps {
                if reflashTookOver(card) { return }
                if case .reassignBARs(let port) = step.action {
                    await reassignBARs(of: card, observation.observed, below: port)
                    break
                }
                do {
                    try await runner.run(step, card: card)
                    if case .bindHost = step.action {
                        states[card.name]?.probedForHost.formUnion(observation.observed.resolution.functions.map(\.address))
                    }
                } catch {
                    recordFailure(card, "\(step.actionName) failed: \(error)", step: step)
                    return
                }
            }
            if reflashTookOver(card) { return }
            if steps.contains(where: { if case .attach = $0.action { true } else { false } }) {
                reattached(card.name)
            }
            if round < 2 {
                do {
                    devices = try await scanBus(readingOverridesOf: [card])
                } catch {
                    recordFailure(card, "cannot read the PCI bus: \(error)")
                    return
                }
            }
        }
        recordFailure(card, "did not converge after three plans")
    }

    /// Every function on the bus, read on the worker: reading a device's `driver_override` waits for
    /// its lock, and one device mid-probe or mid-remove anywhere on the host must not freeze the loop,
    /// the watchdog and the control socket with it. Overrides are read for `cards`' functions only: the
    /// others' are never looked at, and each costs a wait for a probe in progress.
    func scanBus(readingOverridesOf cards: [CardConfig]) async throws(SysfsError) -> [PCIDeviceSnapshot] {
        let reader = host.reader
        return try await blocking.run { () throws(SysfsError) in
            try reader.allFunctions { address, id in cards.contains { $0.matches(address: address, id: id) } }
        }
    }

    /// Appeared, vanished, ID changed: said once, when it happens, not on every pass.
    func noteChanges(_ observed: ObservedCard) {
        let card = observed.card
        // A card dropped by a reload while its pass was in flight is not brought back to life.
        guard var state = states[card.name] else { return }
        switch observed.resolution.outcome {
        case .present(let functions):
            let ids = Array(Set(functions.map(\.id))).sorted()
            let slot = functions[0].address.slot
            let fields: Logger.Metadata = [
                LogMetadataKey.pciSlot: "\(slot)", LogMetadataKey.pciID: "\(ids.map(\.description).joined(separator: ","))",
                LogMetadataKey.guest: "\(card.guest)",
            ]
            switch state.phase {
            case .absent, .ambiguous:
                if state.phase == .absent {
                    // Back after leaving the bus: the re-attach is timed from here (unless an earlier sign,
                    // a hot-add or a rescan's result, started the clock already).
                    if state.reappearedAt == nil { state.reappearedAt = .now }
                    if state.leftUnannounced {
                        state.leftUnannounced = false
                        tell(.reflashEnded(card.name, .unannounced, .recovered))
                    }
                }
                state.reenumerated()
                fallthrough
            case .unknown:
                logger.announce(.cardAppeared, "\(card.name) appeared at \(slot) (\(ids.map(\.description).joined(separator: ", ")))",
                                card: card.name, fields)
                state.probedForHost = []
            default:
                state.probedForHost.formIntersection(functions.map(\.address))
            }
            if !state.lastIDs.isEmpty, state.lastIDs != ids {
                state.reenumerated()
                logger.announce(.cardIDChanged, "\(card.name): ID changed \(state.lastIDs.map(\.description).joined(separator: ",")) -> \(ids.map(\.description).joined(separator: ","))",
                                card: card.name, fields)
            }
            state.lastIDs = ids
            state.lastAddresses = Set(functions.map(\.address))
            if let port = functions.compactMap(\.upstreamPort).first {
                state.site = ReflashSite(slot: slot, upstreamPort: port, functions: state.lastAddresses)
            }
        case .absent:
            if state.reflash.state.expectsAbsence {
                // Taken off on purpose, or being recovered: not news.
            } else if case .absent = state.phase {} else if case .unknown = state.phase {
                logger.warning("\(card.name) is not on the PCI bus", metadata: .card(card))
            } else {
                let slot = state.lastAddresses.sorted().first.map { "\($0.slot)" } ?? "the bus"
                let lookalikes = observed.resolution.lookalikes.isEmpty ? "" :
                    " (\(observed.resolution.lookalikes.map(\.description).joined(separator: ", ")) shows the same IDs and is another card: not taken)"
                logger.announce(.cardVanished, "\(card.name) vanished from \(slot); waiting for it to return\(lookalikes)",
                                level: .warning, card: card.name, [LogMetadataKey.guest: "\(card.guest)", LogMetadataKey.pciSlot: "\(slot)"])
                state.leftUnannounced = true
            }
            state.phase = .absent
            state.reappearedAt = nil
            state.probedForHost = []
        case .ambiguous(let slots):
            if state.phase != .ambiguous {
                logger.error("\(card.name): its ids match \(slots.count) slots; give it an address", metadata: .card(card))
            }
            state.phase = .ambiguous
        }
        states[card.name] = state
        if observed.resolution.isPresent { sighted(card) }
    }

    private func settle(_ card: CardConfig, _ observation: CardObserver.Observation) {
        guard var state = states[card.name] else { return }
        if let reason = observation.observed.resolution.handsOff {
            if state.phase != .handsOff(reason) {
                logger.error("\(card.name): \(reason)", metadata: .card(card))
            }
            state.phase = .handsOff(reason)
        } else if case .leftAlone(let why)? = Reconciler.barCheck(observation.observed) {
            let bars = observation.observed.bars
            state.phase = .barsUnassigned(bars.summary, why: why, fix: bars.fix)
        } else if observation.observed.resolution.isPresent {
            state.phase = .converged(Placement(card: card, guest: observation.observed.guest))
        }
        if state.failures > 0 {
            logger.notice("\(card.name): recovered after \(state.failures) failed attempt(s)", metadata: .card(card))
        }
        state.failures = 0
        state.retryAt = nil
        // Settled with its guest shut off: nothing is going to be re-attached.
        if observation.observed.guest == .inactive { state.reappearedAt = nil }
        states[card.name] = state
        settleBARs(of: card, observation.observed)
        if let problem = observation.guestProblem, observation.observed.resolution.isPresent {
            logger.debug("\(card.name): guest state unknown (\(problem)); leaving the card where it is")
        }
    }

    private func recordFailure(_ card: CardConfig, _ message: String, step: PlanStep? = nil) {
        // A card the reflash path took over meanwhile (a loss, a take-off: the step failed because the card left
        // under it) is not the loop's failure; a backoff would only delay the pass the reflash asks for when done.
        guard !reflashTookOver(card), var state = states[card.name] else { return }
        state.failures += 1
        let delay = options.backoff.delay(afterFailures: state.failures)
        state.retryAt = .now + delay
        state.phase = .retrying(attempt: state.failures, lastError: message)
        states[card.name] = state
        var fields = Logger.Metadata.card(card)
        if let step {
            fields[LogMetadataKey.step] = "\(step.actionName)"
            tell(.stepFailed(action: step.actionName))
        }
        fields[LogMetadataKey.attempt] = "\(state.failures)"
        logger.announce(.stepFailed, "\(card.name): \(message)", level: .error, card: card.name, fields)
        logger.announce(.retry, "\(card.name): retrying in \(delay) (attempt \(state.failures + 1))", level: .notice, card: card.name, fields)
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
}
