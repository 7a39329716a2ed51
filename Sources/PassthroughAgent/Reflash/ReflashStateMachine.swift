import PassthroughCore

/// Where a card sits on the bus: its slot, the port above it and the functions last seen there.
/// Remembered (and persisted) because sysfs stops saying once the card is off the bus.
public struct ReflashSite: Hashable, Sendable, CustomStringConvertible {
    public var slot: PCISlot
    public var upstreamPort: PCIAddress
    /// The card's own functions as last seen: what may be removed, and what a guest may hold.
    public var functions: Set<PCIAddress>

    public init(slot: PCISlot, upstreamPort: PCIAddress, functions: Set<PCIAddress>) {
        self.slot = slot
        self.upstreamPort = upstreamPort
        self.functions = functions
    }

    public var description: String { "\(slot) below \(upstreamPort)" }
}

/// Where one card stands around a reflash. Anything but `placed` is persisted (with the guard's saved
/// registers), so a restarted agent resumes exactly there.
public enum ReflashState: Hashable, Sendable {
    /// The ordinary reconcile loop owns the card.
    case placed
    /// `reflash --prepare` is taking it off the bus: detach, check nobody holds it, guard, remove.
    case takingOff(ReflashSite, guard: GuardRecord?)
    /// Off the bus on purpose until `reflash --finish`, or until it comes back by itself.
    case held(ReflashSite, guard: GuardRecord?)
    /// `reflash --finish` is bringing it back: rescan until its functions are there.
    case bringingBack(ReflashSite, guard: GuardRecord?)
    /// It fell off the link (AER, link watch) and is being recovered; `generation` names this loss.
    case recovering(ReflashSite, generation: Int, guard: GuardRecord?)
    /// A recovery timed out. Nothing is held: a later `add` is taken back through the ordinary path.
    case gaveUp(ReflashSite)

    public var site: ReflashSite? {
        switch self {
        case .placed: nil
        case .takingOff(let site, _), .held(let site, _), .bringingBack(let site, _), .recovering(let site, _, _),
             .gaveUp(let site): site
        }
    }

    /// The upstream port's saved registers while a guard is engaged for this reflash or recovery (a
    /// `while-lent` guard is the machine's ``ReflashStateMachine/lentGuard`` instead: it outlives them).
    public var guardRecord: GuardRecord? {
        switch self {
        case .placed, .gaveUp: nil
        case .takingOff(_, let record), .held(_, let record), .bringingBack(_, let record), .recovering(_, _, let record): record
        }
    }

    /// Whether the reconcile loop keeps its hands off the card: a take-off, bring-back or recovery is
    /// moving it, and marks it dirty when done. A held card is still looked at: when it is back on
    /// the bus by itself, its reflash is over.
    public var excludesReconcile: Bool {
        switch self {
        case .placed, .gaveUp, .held: false
        case .takingOff, .bringingBack, .recovering: true
        }
    }

    /// Whether its absence from the bus is expected (not news worth a "vanished").
    public var expectsAbsence: Bool {
        switch self {
        case .placed, .gaveUp: false
        case .takingOff, .held, .bringingBack, .recovering: true
        }
    }

    /// What a restart must resume from. An operation in flight is persisted as where it leaves the card
    /// when the process dies mid-way: a take-off as held (its guard is engaged; if the card is still on
    /// the bus the first look releases it), a bring-back as still held.
    public var persisted: ReflashState {
        switch self {
        case .takingOff(let site, let record), .bringingBack(let site, let record): .held(site, guard: record)
        default: self
        }
    }
}

/// The reflash state machine of one card: requests, losses and outcomes go in, the state moves, and
/// what to do comes out. It performs nothing itself (the supervisor runs the actions and feeds their
/// outcomes back), so every rule about *when* is here and table-tested.
public struct ReflashStateMachine: Hashable, Sendable {
    public private(set) var state: ReflashState
    /// Counts losses, so an outcome or a grace probe from an earlier loss is recognised as stale.
    public private(set) var generation: Int
    /// `while-lent`: the port's saved registers while the mask is held because the card is lent to its
    /// guest. Held across the card's reflashes and recoveries (which then guard nothing themselves) and
    /// across restarts of the agent; never at the same time as ``ReflashState/guardRecord``, since a port
    /// has one set of original registers and a second reading would save masked values as original.
    public private(set) var lentGuard: GuardRecord?

    public init(resuming state: ReflashState = .placed, lentGuard: GuardRecord? = nil) {
        self.state = state
        self.lentGuard = lentGuard
        if case .recovering(_, let generation, _) = state { self.generation = generation } else { self.generation = 0 }
    }

    /// Where the card is, as the caller just looked: its site when on the bus, else the last one known.
    public struct Sighting: Hashable, Sendable {
        public var present: ReflashSite?
        public var last: ReflashSite?

        public init(present: ReflashSite?, last: ReflashSite?) {
            self.present = present
            self.last = last
        }
    }

    public enum Refusal: Hashable, Sendable {
        case dryRun
        case notOnBus
        case busy(String)
        case inUse
    }

    // MARK: reflash --prepare

    public enum PrepareAction: Hashable, Sendable {
        case takeOff(ReflashSite)
        case alreadyHeld(ReflashSite)
        case refuse(Refusal)
    }

    public mutating func prepare(_ sighting: Sighting, dryRun: Bool) -> PrepareAction {
        if dryRun { return .refuse(.dryRun) }
        switch state {
        case .placed, .gaveUp:
            guard let site = sighting.present else { return .refuse(.notOnBus) }
            state = .takingOff(site, guard: nil)
            return .takeOff(site)
        case .held(let site, _):
            return .alreadyHeld(site)
        case .takingOff: return .refuse(.busy("being taken off the bus"))
        case .bringingBack: return .refuse(.busy("being brought back"))
        case .recovering: return .refuse(.busy("being recovered"))
        }
    }

    /// The guard saved the port's registers and is about to clear them: persist this before it does.
    public mutating func guardSaved(_ record: GuardRecord) {
        switch state {
        case .takingOff(let site, _): state = .takingOff(site, guard: record)
        case .recovering(let site, let generation, _): state = .recovering(site, generation: generation, guard: record)
        default: break
        }
    }

    /// Nothing was removed (refused, cancelled, failed): the card is the loop's again. The caller has
    /// put the port back.
    public mutating func takeOffAbandoned() {
        if case .takingOff = state { state = .placed }
    }

    public mutating func takenOff() {
        if case .takingOff(let site, let record) = state { state = .held(site, guard: record) }
    }

    // MARK: reflash --finish

    public enum FinishAction: Hashable, Sendable {
        case bringBack(ReflashSite)
        case refuse(Refusal)
    }

    /// Only a card that is held, or absent, is brought back: rescanning (or resetting) under a card a
    /// guest is using is what `--finish` without `--prepare` would otherwise do.
    public mutating func finish(_ sighting: Sighting, dryRun: Bool) -> FinishAction {
        if dryRun { return .refuse(.dryRun) }
        switch state {
        case .held(let site, let record):
            state = .bringingBack(site, guard: record)
            return .bringBack(site)
        case .placed, .gaveUp:
            if sighting.present != nil { return .refuse(.inUse) }
            guard let site = sighting.last ?? state.site else { return .refuse(.notOnBus) }
            state = .bringingBack(site, guard: nil)
            return .bringBack(site)
        case .takingOff: return .refuse(.busy("being taken off the bus"))
        case .bringingBack: return .refuse(.busy("already being brought back"))
        case .recovering: return .refuse(.busy("being recovered"))
        }
    }

    /// - Parameter back: whether its functions are on the bus again. Not back: still held, so
    ///   `--finish` can be run again once the FPGA is programmed.
    public mutating func bringBackEnded(back: Bool, guardReleased: Bool) {
        guard case .bringingBack(let site, let record) = state else { return }
        state = back ? .placed : .held(site, guard: guardReleased ? nil : record)
    }

    // MARK: Lost (AER, link watch)

    public enum LossAction: Hashable, Sendable {
        case recover(ReflashSite, generation: Int)
        case ignore(String)
    }

    /// One recovery per loss: a loss reported while anything is under way (including the removal a
    /// recovery makes itself) is the same loss.
    public mutating func lost(_ sighting: Sighting, dryRun: Bool) -> LossAction {
        guard case .placed = state else { return .ignore("a reflash or recovery is already under way") }
        guard let site = sighting.present ?? sighting.last else { return .ignore("its place on the bus is not known") }
        if dryRun { return .ignore("dry run: not recovering") }
        generation += 1
        state = .recovering(site, generation: generation, guard: nil)
        return .recover(site, generation: generation)
    }

    /// Whether a grace probe started for `generation` may still report a loss.
    public func isCurrent(_ generation: Int) -> Bool {
        generation == self.generation && state == .placed
    }

    public enum RecoveryResult: Hashable, Sendable {
        case back
        case timedOut
        /// Nothing was removed (a step failed before), or what failed leaves the card as it is.
        case failed
        /// The agent is stopping: stay `recovering`, so the next start resumes.
        case interrupted
    }

    public mutating func recoveryEnded(generation: Int, _ result: RecoveryResult, guardReleased: Bool) {
        guard case .recovering(let site, let current, let record) = state, current == generation else { return }
        switch result {
        case .back, .failed: state = .placed
        case .timedOut: state = .gaveUp(site)
        case .interrupted: state = .recovering(site, generation: generation, guard: guardReleased ? nil : record)
        }
    }

    // MARK: Seen on the bus

    public enum SightingAction: Hashable, Sendable {
        case none
        /// Back while held (a hotplug slot re-enumerated it, or the agent died mid take-off): the
        /// reflash is over, put the port back.
        case releaseGuard(GuardRecord)
    }

    public mutating func seen(_ sighting: Sighting) -> SightingAction {
        guard sighting.present != nil else { return .none }
        switch state {
        case .held(_, let record):
            state = .placed
            return record.map(SightingAction.releaseGuard) ?? .none
        case .gaveUp:
            state = .placed
            return .none
        case .placed, .takingOff, .bringingBack, .recovering:
            return .none
        }
    }

    // MARK: Lent (`while-lent`)

    public enum LendAction: Hashable, Sendable {
        case none
        /// Lent and not guarded yet: save the port's registers (persist them), then mask.
        case engage
        /// Lent and guarded: make sure the bits are still masked (a crash between saving and masking, or
        /// something else setting them again), never reading them as original again.
        case reassert(GuardRecord)
        /// Home (or no longer `while-lent`): put the port back.
        case release(GuardRecord)
    }

    /// The card settled where it is. `lent`: in its running guest (`true`), home on the host or idle on
    /// vfio-pci (`false`), or not to be told (absent, a crashed guest holding it, libvirt unknown: `nil`),
    /// which changes nothing. While a reflash or recovery has the card, the port is theirs.
    public func lending(lent: Bool?, mode: ReflashGuardMode) -> LendAction {
        guard case .placed = state else { return .none }
        switch lentGuard {
        case nil:
            return lent == true && mode == .whileLent ? .engage : .none
        case let record?:
            if mode != .whileLent || lent == false { return .release(record) }
            return lent == true ? .reassert(record) : .none
        }
    }

    /// The port's registers were read for the `while-lent` guard, which is about to mask: persist this first.
    public mutating func lentGuardSaved(_ record: GuardRecord) {
        guard case .placed = state, lentGuard == nil else { return }
        lentGuard = record
    }

    /// The `while-lent` guard was released (or its engaging failed and was rolled back).
    public mutating func lentGuardReleased() {
        lentGuard = nil
    }

    /// The card left the configuration: forget it. Returns the guard to release, if one is engaged.
    public mutating func forget() -> GuardRecord? {
        defer {
            state = .placed
            lentGuard = nil
        }
        return state.guardRecord ?? lentGuard
    }
}
