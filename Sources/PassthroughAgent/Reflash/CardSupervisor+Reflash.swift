import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughUdev

/// The supervisor's side of the reflash path: requests (`reflash --prepare|--finish`), losses (AER,
/// link watch) and sightings go through each card's ``ReflashStateMachine``; what it decides runs
/// through the ``ReflashCoordinator`` on a task of the card's own (a request on its client's task, a
/// recovery on one the supervisor keeps), so one card's reflash never delays another card or the
/// control socket. Every transition is persisted before its effects, so a restart resumes exactly
/// where the last process stood.
extension CardSupervisor {
    // MARK: Requests

    /// Carries out a reflash request and answers when it is done. Cancelling the calling task (the
    /// client hung up, the agent is stopping) drops a request that has not started, and stops one
    /// that has at its next safe point: before anything is guarded or removed, never half-way.
    public func reflash(_ name: CardName, _ request: ReflashRequest) async throws -> String {
        guard config.cards.contains(where: { $0.name == name }) else {
            throw ReflashRefused(.unknownCard, "no card named \(name) in the configuration")
        }
        try await untilSourcesReady()
        guard let card = config.cards.first(where: { $0.name == name }) else {
            throw ReflashRefused(.unknownCard, "\(name) left the configuration")
        }
        let limit = options.detachTimeout * 2 + card.recoveryTimeout + options.stuckAfter
        let token = work.begin("reflash \(name) --\(request)", limit: limit)
        defer { work.end(token) }
        switch request {
        case .prepare: return try await prepare(card)
        case .finish: return try await finish(card)
        }
    }

    private func prepare(_ card: CardConfig) async throws -> String {
        let sighting = try await look(at: card)
        switch transition(card.name, { $0.prepare(sighting, dryRun: options.dryRun) }) {
        case .refuse(let refusal):
            throw refused(refusal, card, doing: "take it off the bus")
        case .alreadyHeld(let site):
            return "\(card.name) is already off the bus (\(site.slot)); program the FPGA, then run: passthrough-agent reflash \(card.name) --finish"
        case .takeOff(let site):
            do {
                // The step in flight ends first; the client may hang up, or a reload drop the card, meanwhile.
                await untilReconcileEnds(card.name)
                guard !Task.isCancelled, case .takingOff? = states[card.name]?.reflash.state else {
                    throw ReflashRefused(.failed, "\(card.name): cancelled before anything was changed")
                }
                let lentGuard = states[card.name]?.reflash.lentGuard
                try await coordinator.takeOff(card, at: site, lentGuard: lentGuard) { [weak self] record throws(ReflashStateError) in
                    try await self?.guardSaved(card.name, record)
                }
            } catch {
                transition(card.name) { $0.takeOffAbandoned() }
                persist(card.name)
                markDirty([card.name])
                logger.announce(.stepFailed, "\(card.name): reflash --prepare refused: \(error)", level: .error,
                                card: card.name, .card(card))
                throw error
            }
            transition(card.name) { $0.takenOff() }
            persist(card.name)
            markDirty([card.name])
            remindIfNotFinished(card)
            logger.notice("\(card.name) taken off the bus for a reflash", metadata: .card(card).merging([LogMetadataKey.pciSlot: "\(site.slot)"]) { $1 })
            return "\(card.name) is off the bus (\(site.slot)); program the FPGA, then run: passthrough-agent reflash \(card.name) --finish"
        }
    }

    private func finish(_ card: CardConfig) async throws -> String {
        let wasHeld = if case .held = states[card.name]?.reflash.state { true } else { false }
        let sighting = try await look(at: card)
        switch transition(card.name, { $0.finish(sighting, dryRun: options.dryRun) }) {
        case .refuse(.inUse) where wasHeld:
            return "\(card.name) came back by itself; it is being rebound and re-attached"
        case .refuse(let refusal):
            throw refused(refusal, card, doing: "bring it back")
        case .bringBack(let site):
            heldReminders.removeValue(forKey: card.name)?.cancel()
            await untilReconcileEnds(card.name)
            // Hung up, or the card left the configuration, while the step in flight ended: held again, untouched.
            guard !Task.isCancelled, case .bringingBack? = states[card.name]?.reflash.state else {
                if case .bringingBack? = states[card.name]?.reflash.state {
                    transition(card.name) { $0.bringBackEnded(back: false, guardReleased: false) }
                    persist(card.name)
                }
                markDirty([card.name])
                throw CancellationError()
            }
            let record = states[card.name]?.reflash.state.guardRecord
            let (outcome, released) = await coordinator.bringBack(card, at: site, guard: record)
            if outcome.isRecovered { cameBack(card.name) }
            states[card.name]?.leftUnannounced = false
            tell(.reflashEnded(card.name, .announced, EndResult(outcome)))
            // Cancelled too (the client hung up): held again, or the card would stay "being brought back",
            // refusing every later --finish, until the agent restarts.
            transition(card.name) { $0.bringBackEnded(back: outcome.isRecovered, guardReleased: released) }
            persist(card.name)
            markDirty([card.name])
            return try conclude(card, outcome, at: site)
        }
    }

    private func conclude(_ card: CardConfig, _ outcome: RecoveryOutcome, at site: ReflashSite) throws -> String {
        let fields = Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(site.slot)"]) { $1 }
        switch outcome {
        case .recovered(let functions):
            return "\(card.name) is back: \(functions.map { "\($0.address) \($0.id)" }.joined(separator: ", "))"
        case .gaveUp(let elapsed, let state):
            // Absent, and known to be: a later `add` is taken back through the ordinary path.
            states[card.name]?.phase = .absent
            logger.announce(.recoveryGaveUp, "\(card.name) did not come back within \(elapsed) (\(state)); still watching for it",
                            level: .error, card: card.name, fields)
            throw ReflashRefused(.failed, "\(card.name) did not come back within \(elapsed) (\(state)); "
                + "it stays held: run --finish again once the FPGA is programmed")
        case .failed(let failure, _):
            logger.announce(.stepFailed, "\(card.name): \(failure)", level: .error, card: card.name, fields)
            throw ReflashRefused(.failed, "\(failure)")
        case .cancelled:
            throw CancellationError()
        }
    }

    // MARK: Losses

    /// The card fell off the link (AER, link watch): recover it on a task of its own. One recovery per
    /// loss: a loss reported while a recovery or a reflash is under way is the same loss.
    /// `cause`: what the metrics count the recovery under.
    package func cardLost(_ name: CardName, cause: LossCause, reason: String) async {
        guard let card = config.cards.first(where: { $0.name == name }) else { return }
        let sighting = (try? await look(at: card)) ?? .init(present: nil, last: states[name]?.site)
        switch transition(name, { $0.lost(sighting, dryRun: options.dryRun) }) {
        case .ignore(let why):
            logger.notice("\(name) lost (\(reason)); not recovering: \(why)", metadata: .card(card))
        case .recover(let site, let generation):
            logger.announce(.cardLost, "\(name) lost: \(reason); recovering", level: .warning, card: name,
                            Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(site.slot)"]) { $1 })
            persist(name)
            startRecovery(card, at: site, generation: generation, cause: cause)
        }
    }

    /// FAILED_RECOVERY: the kernel gave up, so do we — once the link confirms it (anyone with root can
    /// write a synthetic `change` into `uevent`). BEGIN_RECOVERY with the device offline may still end
    /// well: look at the link after a grace period, unless a recovery has started meanwhile (its own
    /// removal is not a new loss).
    func handleAER(_ event: AERErrorEvent, online: Bool?, on address: PCIAddress, card: CardName) async {
        let probe = LinkProbe(layout: host.sysfs, io: host.io)
        switch event {
        case .failedRecovery:
            switch probe.probe(address) {
            case .present:
                // Either a paused guest still holds the card (QEMU stops a guest over such an error, and
                // removing a function it holds would block the PCI layer) or the uevent was written by hand.
                let guest = config.cards.first { $0.name == card }.map { " (\($0.guest) may be paused over it: `virsh domstate \($0.guest) --reason`)" } ?? ""
                logger.announce(.errorNotRecovered,
                                "\(card): the kernel could not recover \(address) from a PCIe error, but its link answers; "
                                + "leaving it where it is\(guest)",
                                level: .warning, card: card, [LogMetadataKey.pciSlot: "\(address)"])
            case .lost, .inconclusive:
                await cardLost(card, cause: .aer, reason: "AER recovery failed on \(address)")
            }
        case .beginRecovery where online == false:
            guard let generation = states[card]?.reflash.generation else { return }
            let grace = options.aerGrace
            graceProbes[card]?.cancel()
            graceProbes[card] = Task { [weak self] in
                do { try await Task.sleep(for: grace) } catch { return }
                await self?.graceProbeFired(card, generation: generation, address: address, probe: probe)
            }
        default:
            break
        }
    }

    private func graceProbeFired(_ card: CardName, generation: Int, address: PCIAddress, probe: LinkProbe) async {
        graceProbes[card] = nil
        guard states[card]?.reflash.isCurrent(generation) == true else { return }
        if case .lost(let why) = probe.probe(address), why != .removed {
            await cardLost(card, cause: .aer, reason: "AER on \(address), then the link stayed down (\(why))")
        }
    }

    /// `cause` `.resumed`: a previous run left it half-done.
    private func startRecovery(_ card: CardConfig, at site: ReflashSite, generation: Int, cause: LossCause) {
        recoveries[card.name] = Task { [weak self] in
            await self?.recover(card, at: site, generation: generation, cause: cause)
        }
    }

    private func recover(_ card: CardConfig, at site: ReflashSite, generation: Int, cause: LossCause) async {
        await untilReconcileEnds(card.name)
        // Forgotten meanwhile (the card left the configuration): nothing of this loss is left to recover.
        guard case .recovering(_, let current, _)? = states[card.name]?.reflash.state, current == generation else { return }
        let resuming = cause == .resumed
        let record = states[card.name]?.reflash.state.guardRecord
        let lentGuard = states[card.name]?.reflash.lentGuard
        let (outcome, released) = await coordinator.recover(card, at: site, guard: record, lentGuard: lentGuard,
                                                            resuming: resuming) { [weak self] record throws(ReflashStateError) in
            try await self?.guardSaved(card.name, record)
        }
        let result: ReflashStateMachine.RecoveryResult = switch outcome {
        case .recovered: .back
        case .gaveUp: .timedOut
        case .failed: .failed
        case .cancelled: .interrupted
        }
        if outcome.isRecovered { cameBack(card.name) }
        tell(.recoveryEnded(card.name, cause, EndResult(outcome)))
        transition(card.name) { $0.recoveryEnded(generation: generation, result, guardReleased: released) }
        persist(card.name)
        recoveries[card.name] = nil
        markDirty([card.name])
        if case .cancelled = outcome { return }
        _ = try? conclude(card, outcome, at: site)
    }

    // MARK: Start, sightings, stop

    static func resumedReflash(of card: CardName, from store: ReflashStateStore, logger: Logger) -> ReflashStateMachine {
        do {
            return try store.resume(card)
        } catch {
            logger.critical("\(card): \(error); left in place for a person, the card is treated as placed")
            return ReflashStateMachine()
        }
    }

    /// Recoveries a previous process left half-done go on; held cards stay held, and say so.
    func resumeRecoveries() {
        for card in config.cards {
            switch states[card.name]?.reflash.state {
            case .recovering(let site, let generation, _)?:
                if options.dryRun {
                    logger.notice("\(card.name): a previous run left it recovering; dry run, not resuming", metadata: .card(card))
                } else {
                    logger.notice("\(card.name): resuming the recovery a previous run left", metadata: .card(card))
                    startRecovery(card, at: site, generation: generation, cause: .resumed)
                }
            case .held(let site, let record)?:
                let guarded = record != nil || states[card.name]?.reflash.lentGuard != nil ? ", its port guarded" : ""
                logger.notice("\(card.name) is off the bus for a reflash (\(site.slot))\(guarded); run `passthrough-agent reflash \(card.name) --finish` when the FPGA is programmed",
                              metadata: .card(card))
                remindIfNotFinished(card)
            default:
                break
            }
        }
    }

    /// Before anything else at start: records of cards that are no longer configured are put right
    /// (the port they guarded restored) and removed. Held and recovering cards that are configured
    /// keep theirs.
    public func restoreLeftovers() {
        let store = options.reflashStore
        let recorded: [CardName]
        do {
            recorded = try store.cards()
        } catch {
            logger.critical("cannot list the reflash state: \(error)")
            return
        }
        for name in recorded where !config.cards.contains(where: { $0.name == name }) {
            do {
                let machine = try store.resume(name)
                let state = machine.state
                if let record = state.guardRecord ?? machine.lentGuard, !coordinator.release(record, of: name) { continue }
                try store.remove(name)
                logger.warning(Logger.Message(stringLiteral: "\(name) is no longer configured; its reflash state from a previous run was removed"
                    + (state.site.map { " (it was at \($0.slot))" } ?? "")))
            } catch {
                logger.critical("\(name): \(error); left in place for a person")
            }
        }
    }

    /// Seen on the bus: a held card that came back by itself (a hotplug slot re-enumerated it, or the
    /// agent died mid take-off) ends its reflash, and its port is put back.
    func sighted(_ card: CardConfig) {
        guard let site = states[card.name]?.site, let before = states[card.name]?.reflash.state else { return }
        let action = transition(card.name) { $0.seen(.init(present: site, last: site)) }
        if case .releaseGuard(let record) = action, !options.dryRun {
            logger.notice("\(card.name) is back on the bus without --finish; the reflash is over", metadata: .card(card))
            coordinator.release(record, of: card.name)
        }
        if case .held = before, states[card.name]?.reflash.state == .placed {
            tell(.reflashEnded(card.name, .announced, .recovered))
        }
        if states[card.name]?.reflash.state != before {
            persist(card.name)
            heldReminders.removeValue(forKey: card.name)?.cancel()
        }
    }

    /// A card off the bus for a reflash that nobody finishes (the person or the guest forgot, or went away)
    /// is said once, after its recovery-timeout. Nothing moves: it stays held for a `finish`, however late,
    /// or until it comes back by itself.
    private func remindIfNotFinished(_ card: CardConfig) {
        heldReminders[card.name]?.cancel()
        let clock = options.recoveryClock
        let timeout = card.recoveryTimeout
        heldReminders[card.name] = Task { [weak self] in
            do { try await clock.sleep(for: timeout) } catch { return }
            await self?.heldTooLong(card.name, after: timeout)
        }
    }

    private func heldTooLong(_ name: CardName, after timeout: Duration) {
        heldReminders[name] = nil
        guard case .held(let site, _)? = states[name]?.reflash.state, let card = config.cards.first(where: { $0.name == name }) else { return }
        let finishers = card.guestRequests ? "run `passthrough-agent reflash \(name) --finish`, or send `finish \(name)` from \(card.guest)"
            : "run `passthrough-agent reflash \(name) --finish`"
        logger.announce(.reflashNotFinished,
                        "\(name) has been off the bus for a reflash (\(site.slot)) for \(ConfigDuration.format(timeout)) and nobody finished it; "
                        + "it stays off: once the FPGA is programmed, \(finishers)",
                        level: .warning, card: name, Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(site.slot)"]) { $1 })
    }

    /// A card left the configuration: its recovery stops and a port guarded for it is put back. A card
    /// that is off the bus stays off (nothing claims it any more).
    func forgetReflash(of card: CardConfig) {
        recoveries.removeValue(forKey: card.name)?.cancel()
        heldReminders.removeValue(forKey: card.name)?.cancel()
        graceProbes.removeValue(forKey: card.name)?.cancel()
        guard let machine = states[card.name]?.reflash, machine.state != .placed || machine.lentGuard != nil else { return }
        let state = machine.state
        let record = transition(card.name) { $0.forget() }
        if let record, !options.dryRun { coordinator.release(record, of: card.name) }
        persist(card.name)
        if state.excludesReconcile, let site = state.site {
            logger.warning(Logger.Message(stringLiteral: "\(card.name) left the configuration while off the bus at \(site.slot); it stays off "
                + "(`echo 1 > /sys/bus/pci/devices/\(site.upstreamPort)/rescan` brings it back)"))
        }
    }

    // MARK: Link watch

    /// The third kind of host (no hotplug, no AER): the card stays in sysfs but reads all-ones. Each
    /// card with `link-watch` gets a probe of its own; a reload starts, stops or re-paces them.
    func startLinkWatches() {
        var wanted: [CardName: (Duration, PCIAddress)] = [:]
        for card in config.cards {
            guard let interval = card.linkWatch.interval, let selector = card.address else { continue }
            let address = switch selector {
            case .function(let address): address
            case .slot(let slot): slot.function(0)!
            }
            wanted[card.name] = (interval, address)
        }
        for (name, watch) in linkWatches where wanted[name]?.0 != watch.interval {
            watch.task.cancel()
            linkWatches[name] = nil
        }
        let probe = LinkProbe(layout: host.sysfs, io: host.io)
        for (name, (interval, address)) in wanted where linkWatches[name] == nil {
            let task = Task { [weak self] in
                await LinkWatcher(probe: probe).watch(address, every: interval) { result in
                    // A function removed from sysfs is udev's news (a remove event), not a dead link.
                    guard case .lost(let why) = result, why != .removed else { return }
                    await self?.cardLost(name, cause: .linkWatch, reason: "link watch: \(address) \(why)")
                }
            }
            linkWatches[name] = (interval, task)
        }
    }

    /// At shutdown: link watches and grace probes end, recoveries stop at their next safe point and
    /// stay recorded, so the next start resumes them.
    func stopReflashWork() async {
        for watch in linkWatches.values { watch.task.cancel() }
        linkWatches.removeAll()
        for probe in graceProbes.values { probe.cancel() }
        graceProbes.removeAll()
        for reminder in heldReminders.values { reminder.cancel() }
        heldReminders.removeAll()
        let running = recoveries.values
        for recovery in running { recovery.cancel() }
        for recovery in running { await recovery.value }
    }

    // MARK: Plumbing

    var coordinator: ReflashCoordinator {
        ReflashCoordinator(
            host: host, hypervisor: hypervisor, logger: logger, clock: options.recoveryClock,
            pacing: options.recoveryPacing, detachTimeout: options.detachTimeout, holderRecheck: options.holderRecheck,
            blocking: reflashBlocking
        )
    }

    @discardableResult
    func transition<Action>(_ card: CardName, _ body: (inout ReflashStateMachine) -> Action) -> Action {
        var machine = states[card]?.reflash ?? ReflashStateMachine()
        let before = machine.state
        let action = body(&machine)
        states[card]?.reflash = machine
        if machine.state != before {
            // A take-off or recovery detaches the card first, and keeps the loop's looks at the live XML away
            // until it is done: not in its guest from now on, until a look says otherwise.
            if machine.state.expectsAbsence { states[card]?.inLiveXML = false }
            publish(card)
        }
        return action
    }

    /// The guard saved the port's registers (or, `nil`, a removal is next): on disk before it happens.
    private func guardSaved(_ card: CardName, _ record: GuardRecord?) throws(ReflashStateError) {
        if let record { transition(card) { $0.guardSaved(record) } }
        try save(card)
    }

    func save(_ card: CardName) throws(ReflashStateError) {
        guard !options.dryRun, let machine = states[card]?.reflash else { return }
        try options.reflashStore.save(machine.state, lentGuard: machine.lentGuard, of: card)
    }

    func persist(_ card: CardName) {
        do {
            try save(card)
        } catch {
            logger.error("\(card): \(error); a restart now would not know where the card stands")
        }
    }

    /// Where the card is now (on the bus, and where it was last), read from sysfs. Unreadable is
    /// not "absent": the request is refused.
    private func look(at card: CardConfig) async throws(ReflashRefused) -> ReflashStateMachine.Sighting {
        let devices: [PCIDeviceSnapshot]
        do {
            devices = try await scanBus(readingOverridesOf: [card])
        } catch {
            throw ReflashRefused(.unsafe, "cannot read the PCI bus (\(error)); nothing was changed")
        }
        let observed = ObservedCard(card: card, devices: devices, guest: .unknown, attached: [],
                                    history: states[card.name]?.history ?? CardHistory())
        noteChanges(observed)
        let site = states[card.name]?.site
        return .init(present: observed.resolution.isPresent ? site : nil, last: site)
    }

    private func refused(_ refusal: ReflashStateMachine.Refusal, _ card: CardConfig, doing what: String) -> ReflashRefused {
        switch refusal {
        case .dryRun:
            ReflashRefused(.unsafe, "the agent runs with --dry-run and changes nothing; not going to \(what)")
        case .notOnBus:
            ReflashRefused(.notOnBus, "\(card.name) has not been seen on the bus; not going to \(what)")
        case .busy(let activity):
            ReflashRefused(.busy, "\(card.name) is \(activity); try again when that is done (`passthrough-agent status`)")
        case .inUse:
            ReflashRefused(.unsafe, "\(card.name) is on the bus (its guest \(card.guest) may be using it): --finish only follows "
                + "--prepare, and never rescans or resets under a card that is present")
        }
    }

    private func untilSourcesReady() async throws {
        while !sourcesReady {
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

extension RecoveryOutcome {
    var isRecovered: Bool {
        if case .recovered = self { return true }
        return false
    }
}
