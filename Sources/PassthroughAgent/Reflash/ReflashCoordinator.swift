import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughThreads

/// The mechanics of taking a card off the bus and bringing it back: detach it from its guest, make
/// sure nobody else holds it, guard the upstream port, remove the card's own functions, wait for the
/// link, rescan, unguard. *When* each of these may happen is the ``ReflashStateMachine``'s; the
/// supervisor runs these on a task of the card's own, so one card's reflash never stalls another.
///
/// Removing a function that a QEMU still holds makes the kernel wait, uninterruptibly, until the guest
/// lets go, while it holds the locks every rescan, removal and hotplug on the host needs. So nothing is
/// removed while any domain's live XML lists a function or its VFIO group is open: `--prepare` is
/// refused, a recovery waits (and says so) until the guest lets go.
struct ReflashCoordinator: Sendable {
    let host: HostEnvironment
    let hypervisor: any Hypervisor
    let logger: Logger
    let clock: any WaitClock
    let pacing: RecoveryPacing
    /// How long the card's guest may take to release it after a detach request.
    let detachTimeout: Duration
    /// How often a recovery that waits for a guest to let go looks again.
    let holderRecheck: Duration
    /// Runs the removal and rescans, which wait for drivers.
    let blocking: BlockingCalls

    /// Writes the card's state, with the guard's saved registers, before the guard clears anything
    /// and before anything is removed. Throws when it cannot: then nothing more is done.
    typealias Persist = @Sendable (_ savedGuard: GuardRecord?) async throws(ReflashStateError) -> Void

    private var procedure: RecoveryProcedure {
        RecoveryProcedure(reader: host.reader, clock: clock, pacing: pacing, logger: logger, blocking: blocking)
    }

    private var reflashGuard: ReflashGuard {
        ReflashGuard(layout: host.sysfs, io: host.io, logger: logger)
    }


    // MARK: reflash --prepare

    /// Takes the card off the bus for a reflash. Fails closed: when any step before the removal
    /// cannot be done (a guest holds the card, its state is unknown, the guard cannot be engaged or
    /// saved), nothing is removed and the port is as it was. `link-disable` disables the link only once
    /// the functions are removed; when it cannot, they are rescanned back and the request fails.
    ///
    /// - Parameter lentGuard: the `while-lent` guard held for the card: the port is guarded already, and
    ///   reading it again would save masked registers as the original ones.
    func takeOff(_ card: CardConfig, at site: ReflashSite, lentGuard: GuardRecord?, persist: Persist) async throws(CardSupervisor.ReflashRefused) {
        if let strangers = strangers(card, at: site) {
            throw .init(.unsafe, strangers)
        }
        await detachFromGuest(card, site.functions)
        switch await HolderCheck(hypervisor: hypervisor, host: host).holders(of: site.functions) {
        case .free:
            break
        case .held(let holders):
            throw .init(.unsafe, "\(card.name) stays on the bus: \(HolderVerdict.held(holders)); nothing was removed")
        case .unknown(let why):
            throw .init(.unsafe, "\(card.name) stays on the bus: cannot tell who holds it (\(why)); nothing was removed")
        }
        if Task.isCancelled { throw .init(.failed, "\(card.name): cancelled before anything was changed") }

        var engaged: GuardRecord?
        let mode: ReflashGuardMode = card.reflashGuard == .linkDisable ? .linkDisable : .mask
        if card.reflashGuard != .off, lentGuard == nil {
            do throws(ReflashGuardError) {
                // The link goes down only once nothing is left on it to notice; the mask goes first.
                let record = try await saveGuard(at: site, mode: mode, persist: persist)
                engaged = record
                if mode != .linkDisable { try engage(record, of: card, for: "the reflash") }
            } catch {
                throw .init(.failed, "\(card.name) stays on the bus: cannot \(Self.verb(mode)) on \(site.upstreamPort) "
                    + "(\(error)); nothing was removed.\(Self.lockdownHint(error))")
            }
        } else {
            if lentGuard != nil {
                logger.notice("\(card.name): \(site.upstreamPort) stays masked as while the card is lent (reflash-guard = \"while-lent\")",
                              metadata: [LogMetadataKey.card: "\(card.name)"])
            }
            do throws(ReflashStateError) {
                try await persist(nil)
            } catch {
                throw .init(.failed, "\(card.name) stays on the bus: cannot record its state (\(error)); nothing was removed")
            }
        }
        if Task.isCancelled {
            release(engaged, of: card.name)
            throw .init(.failed, "\(card.name): cancelled before anything was removed")
        }
        do {
            try await procedure.remove(target(card, site))
        } catch {
            release(engaged, of: card.name)
            throw .init(.failed, "\(card.name): removing it from the bus failed (\(error))")
        }
        guard let engaged, mode == .linkDisable else { return }
        do throws(ReflashGuardError) {
            try engage(engaged, of: card, for: "the reflash")
        } catch {
            // Off the bus with a live link, a reprogramming would be the Surprise Down the guard is for.
            release(engaged, of: card.name)
            let outcome = await procedure.bringBack(target(card, site))
            let back = if case .recovered = outcome { "it was rescanned back onto the bus" } else { "rescanning it back: \(outcome)" }
            throw .init(.failed, "\(card.name): cannot disable the link on \(site.upstreamPort) (\(error)); \(back).\(Self.lockdownHint(error))")
        }
    }

    private static func verb(_ mode: ReflashGuardMode) -> String {
        mode == .linkDisable ? "save the link state" : "mask fatal-error reporting"
    }

    /// Only where config space refused: a full /run is not fixed by reading `check`.
    private static func lockdownHint(_ error: ReflashGuardError) -> String {
        if case .configSpace = error { " Kernel lockdown forbids config-space writes: see `passthrough-agent check`" } else { "" }
    }

    // MARK: reflash --finish

    /// Rescans until the card's functions are back (or its `recovery-timeout`), then puts the port back.
    /// A disabled link is enabled first, whatever else happens (nothing comes back over a disabled link),
    /// and given time to train: the rescans wait for Data Link Layer Link Active where the port reports
    /// it, and a port that does not is given the pacing's settle time.
    /// - Returns: the outcome and whether the guard was released.
    func bringBack(_ card: CardConfig, at site: ReflashSite, guard record: GuardRecord?) async -> (RecoveryOutcome, guardReleased: Bool) {
        var released = false
        if let record, record.mode == .linkDisable {
            guard release(record, of: card.name) else {
                let why = "\(card.name): the link on \(record.port) cannot be enabled again; it stays off the bus (see the log for the register to write)"
                return (.failed(.refused(why), lastState: RecoveryState()), false)
            }
            released = true
            let port = ConfigSpace(address: record.port, layout: host.sysfs, io: host.io)
            if (try? port.reportsLinkActive()) != true {
                try? await clock.sleep(for: pacing.resetSettle)
            }
        }
        let outcome = await procedure.bringBack(target(card, site))
        guard case .recovered = outcome, !released else { return (outcome, released) }
        return (outcome, release(record, of: card.name))
    }

    // MARK: Lost

    /// Recovers a card that fell off the link: detach, wait until no guest holds it, guard (failing
    /// open: a recovery must go on), remove, wait for the link, rescan, unguard.
    ///
    /// - Parameter resuming: a previous process died mid-recovery; the card may already be gone.
    ///
    /// The mask is engaged for `mask` and `while-lent` (unless held already as lent); a link cannot be
    /// disabled for a card that has to come back over it, so `link-disable` guards no recovery.
    func recover(_ card: CardConfig, at site: ReflashSite, guard saved: GuardRecord?, lentGuard: GuardRecord?, resuming: Bool,
                 persist: Persist) async -> (RecoveryOutcome, guardReleased: Bool) {
        let fields = Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(site.slot)"]) { $1 }
        // A snapshot reads driver_override, which waits for the device's lock: on the worker.
        let reader = host.reader
        let present = await blocking.run { site.functions.filter { (try? reader.snapshot(of: $0)) != nil } }
        if !present.isEmpty {
            if let strangers = strangers(card, at: site) {
                logger.announce(.stepFailed, "\(card.name): not recovering: \(strangers)", level: .error, card: card.name, fields)
                return (.failed(.refused(strangers), lastState: RecoveryState()), false)
            }
            guard await waitUntilReleased(card, Set(present), fields: fields) else {
                return (.cancelled(lastState: RecoveryState()), false)
            }
        }
        var engaged = saved
        if card.reflashGuard.masks, engaged == nil, lentGuard == nil {
            do throws(ReflashGuardError) {
                let record = try await saveGuard(at: site, mode: .mask, persist: persist)
                engaged = record
                try engage(record, of: card, for: "the recovery")
            } catch {
                logger.announce(.stepFailed, "\(card.name): recovering without the reflash guard: \(error)", level: .error, card: card.name, fields)
            }
        } else if engaged == nil {
            do throws(ReflashStateError) {
                try await persist(nil)
            } catch {
                logger.announce(.stepFailed, "\(card.name): recovering, but its state cannot be recorded (\(error)); "
                    + "a restart now would not resume it", level: .error, card: card.name, fields)
            }
        }
        let outcome = resuming && present.isEmpty
            ? await procedure.bringBack(target(card, site))
            : await procedure.recover(target(card, site))
        if case .cancelled = outcome { return (outcome, false) }
        return (outcome, release(engaged, of: card.name))
    }

    /// Detaches the functions from the card's guest, then waits until no domain and no process holds
    /// them. While one does, it says so (once) with what the user can do, and looks again every
    /// `holderRecheck`: the recovery completes once the guest lets go (destroyed, detached, resumed).
    /// - Returns: `false` when cancelled while waiting.
    private func waitUntilReleased(_ card: CardConfig, _ functions: Set<PCIAddress>, fields: Logger.Metadata) async -> Bool {
        var told: HolderVerdict?
        while !Task.isCancelled {
            await detachFromGuest(card, functions)
            let verdict = await HolderCheck(hypervisor: hypervisor, host: host).holders(of: functions)
            if verdict == .free {
                if told != nil { logger.notice("\(card.name): released; recovering", metadata: fields) }
                return true
            }
            if told != verdict {
                logger.announce(.stepFailed, "\(card.name) is lost, but not removed while it is held: \(verdict); waiting",
                                level: .error, card: card.name, fields)
                told = verdict
            }
            do { try await clock.sleep(for: holderRecheck) } catch { return false }
        }
        return false
    }

    // MARK: Steps

    /// Reads the port's registers and saves them with the card's state: the originals are on disk before
    /// ``engage(_:of:for:)`` changes anything, so no crash can lose them.
    private func saveGuard(at site: ReflashSite, mode: ReflashGuardMode, persist: Persist) async throws(ReflashGuardError) -> GuardRecord {
        let record = try reflashGuard.read(port: site.upstreamPort, mode: mode)
        do { try await persist(record) } catch { throw .state(error) }
        return record
    }

    /// Changes the guarded bits of a saved record. When it throws, the port is as it was (the saved
    /// record is released with the rest of the take-off or recovery).
    func engage(_ record: GuardRecord, of card: CardConfig, for purpose: String) throws(ReflashGuardError) {
        try reflashGuard.engage(record)
        logger.notice("\(card.name): \(ReflashGuard.engagedText(record.mode)) on \(record.port) for \(purpose)",
                      metadata: [LogMetadataKey.card: "\(card.name)", LogMetadataKey.pciSlot: "\(record.port)", "guard": "\(record.mode)"])
    }

    /// Reads and saves the port's registers for the `while-lent` guard, then masks; `persist` writes the
    /// card's state with the record as its lent guard. Synchronous, so the supervisor does all of it without
    /// another request slipping in between the reading and the masking.
    func engageWhileLent(_ card: CardConfig, port: PCIAddress,
                         persist: (GuardRecord) throws(ReflashStateError) -> Void) throws(ReflashGuardError) -> GuardRecord {
        let record = try reflashGuard.read(port: port, mode: .whileLent)
        do { try persist(record) } catch { throw .state(error) }
        try engage(record, of: card, for: "as long as it is lent to \(card.guest)")
        return record
    }

    /// Masks again what a `while-lent` record says is masked, reading nothing as original.
    /// - Returns: whether a bit had to be cleared again.
    func reassert(_ record: GuardRecord) throws(ReflashGuardError) -> Bool {
        try reflashGuard.engage(record)
    }

    /// Asks the card's own guest to release the functions it lists and waits (up to the detach timeout)
    /// for its live XML to drop them. A guest that does not is left to the holder check.
    private func detachFromGuest(_ card: CardConfig, _ functions: Set<PCIAddress>) async {
        guard let state = try? await hypervisor.guestState(card.guest), state.isActive,
              let live = try? await hypervisor.hostdevs(of: card.guest)
        else { return }
        let guests = GuestMoves(hypervisor: hypervisor, logger: logger, settleTimeout: detachTimeout)
        for address in live.map(\.address) where functions.contains(address) {
            do {
                try await guests.detach(address, from: card.guest, card: card)
            } catch {
                logger.warning("\(card.name): \(card.guest) did not release \(address): \(error)",
                               metadata: [LogMetadataKey.card: "\(card.name)"])
            }
        }
    }

    /// Why the card cannot be taken off alone: functions in its slot or on its port's secondary bus
    /// that are not the card's (cut off with its link, or reset with it), or a bus that cannot be read.
    private func strangers(_ card: CardConfig, at site: ReflashSite) -> String? {
        do {
            let strangers = try procedure.strangers(for: target(card, site))
            guard !strangers.isEmpty else { return nil }
            return "\(card.name) shares \(site.slot) or the bus below \(site.upstreamPort) with "
                + "\(strangers.map(\.description).joined(separator: ", ")), which no card claims as its own; "
                + "nothing was removed (give the card an address that covers every function it has)"
        } catch {
            return "cannot tell what else is below \(site.upstreamPort) (\(error)); nothing was removed"
        }
    }

    /// Puts the port back; a failure is logged with the values to write by hand.
    @discardableResult
    func release(_ record: GuardRecord?, of card: CardName) -> Bool {
        guard let record else { return true }
        do {
            try reflashGuard.restore(record)
            logger.notice("\(card): \(ReflashGuard.releasedText(record.mode)) on \(record.port)",
                          metadata: [LogMetadataKey.card: "\(card)", "guard": "\(record.mode)"])
            return true
        } catch {
            logger.critical("\(card): cannot put \(record.port) back (\(error)); it was \(record.savedRegisters)",
                            metadata: [LogMetadataKey.card: "\(card)", "guard": "\(record.mode)"])
            return false
        }
    }

    private func target(_ card: CardConfig, _ site: ReflashSite) -> RecoveryTarget {
        RecoveryTarget(card: card, slot: site.slot, upstreamPort: site.upstreamPort, functions: site.functions)
    }
}
