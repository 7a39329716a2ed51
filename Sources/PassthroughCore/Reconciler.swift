// The pure reconciler: what it is told about a card (observation, history) and the placement and steps it decides.

/// What the guest that owns a card is doing, as far as placement is concerned.
public enum GuestActivity: Hashable, Sendable, CustomStringConvertible {
    /// Running or paused: it holds its devices.
    case active
    /// Crashed, with its QEMU kept (`on_crash=preserve`): it still holds its devices, but takes no live attach
    /// or detach. Taking the card back now would leave the kernel waiting for that QEMU, holding PCI-wide locks.
    case crashed
    /// Shut off or not defined: it holds nothing.
    case inactive
    /// libvirt cannot be asked right now: no decision about the guest side can be made.
    case unknown

    public var description: String {
        switch self {
        case .active: "running"
        case .crashed: "crashed"
        case .inactive: "not running"
        case .unknown: "unknown"
        }
    }
}

/// Everything the reconciler needs to know about one card, read fresh before every decision.
public struct ObservedCard: Hashable, Sendable {
    public var card: CardConfig
    public var resolution: CardResolution
    public var guest: GuestActivity
    /// PCI functions in the guest's live XML (only meaningful while the guest is active).
    public var attached: Set<PCIAddress>
    public var history: CardHistory
    /// The BARs of the card's functions, as the kernel placed them (empty when it could not be read).
    public var bars: CardBARs

    public init(card: CardConfig, devices: [PCIDeviceSnapshot], guest: GuestActivity, attached: Set<PCIAddress>,
                history: CardHistory = CardHistory(), bars: [PCIBar] = []) {
        self.card = card
        self.resolution = CardResolution(card: card, devices: devices, lastSlot: history.lastSlot)
        self.guest = guest
        self.attached = attached
        self.history = history
        self.bars = CardBARs(bars)
    }
}

/// What the supervisor remembers about a card that the bus no longer tells, handed to the pure
/// ``Reconciler`` with every observation.
public struct CardHistory: Hashable, Sendable {
    /// The slot the card was last seen in. An `ids`-only card is looked for there only: another card
    /// with the same IDs elsewhere is not it, even while its own is off the bus for a reflash.
    public var lastSlot: PCISlot?
    /// Functions given back to the host since they (re)appeared, a driverless one by asking the kernel
    /// to probe it. With `host-driver = "auto"` a function still driverless after that is where the
    /// kernel wants it (no driver claims its ID) and is left so, instead of being probed on every pass.
    public var probedForHost: Set<PCIAddress>
    /// What was done, once, about BARs that did not fit (see ``BARReassignment``).
    public var barReassignment: BARReassignment?

    public init(lastSlot: PCISlot? = nil, probedForHost: Set<PCIAddress> = [], barReassignment: BARReassignment? = nil) {
        self.lastSlot = lastSlot
        self.probedForHost = probedForHost
        self.barReassignment = barReassignment
    }
}

/// Where a card should be, given its guest.
public enum Placement: Hashable, Sendable, CustomStringConvertible {
    /// On vfio-pci and in the guest's live definition.
    case inGuest(GuestName)
    /// On vfio-pci, attached to nothing (`when-guest-stops = "keep"`).
    case vfioIdle
    /// On the host driver the policy names.
    case host(HostDriverPolicy)
    /// Leave it as it is: the guest's state is unknown.
    case unchanged
    /// Leave it as it is: the guest crashed and its kept QEMU still holds the card until it is destroyed.
    case heldByCrashedGuest(GuestName)

    public init(card: CardConfig, guest: GuestActivity) {
        switch (guest, card.whenGuestStops) {
        case (.active, _): self = .inGuest(card.guest)
        case (.crashed, _): self = .heldByCrashedGuest(card.guest)
        case (.inactive, .keep): self = .vfioIdle
        case (.inactive, .host): self = .host(card.hostDriver)
        case (.unknown, _): self = .unchanged
        }
    }

    public var description: String {
        switch self {
        case .inGuest(let guest): "attached to \(guest)"
        case .vfioIdle: "on vfio-pci, idle"
        case .host(let policy): "on the host (\(policy))"
        case .unchanged: "unchanged"
        case .heldByCrashedGuest(let guest):
            "left where it is: \(guest) crashed and its QEMU still holds the card (`virsh destroy \(guest)` releases it)"
        }
    }
}

/// One step of a plan. Steps of one card run in order; each is verified before the next.
public struct PlanStep: Hashable, Sendable, CustomStringConvertible {
    public enum Action: Hashable, Sendable {
        /// Every function of the card to vfio-pci.
        case bindVFIO
        /// Every function back to the host, per the policy.
        case bindHost(HostDriverPolicy)
        case attach(PCIAddress, to: GuestName)
        case detach(PCIAddress, from: GuestName)
        /// Remove the card's functions and the port above them, then rescan the port's parent, so the
        /// kernel sizes the port's windows anew for BARs that did not fit.
        case reassignBARs(port: PCIAddress)
    }

    public var card: CardName
    public var action: Action
    /// Why, in words a user reads in the journal.
    public var reason: String
    /// The slot the plan was made for: a bind moves that slot's functions or nothing, whatever the bus
    /// shows by the time it runs.
    public var slot: PCISlot?

    public init(card: CardName, action: Action, reason: String, slot: PCISlot? = nil) {
        self.card = card
        self.action = action
        self.reason = reason
        self.slot = slot
    }

    public var actionName: String {
        switch action {
        case .bindVFIO: "bind-vfio"
        case .bindHost: "bind-host"
        case .attach: "attach"
        case .detach: "detach"
        case .reassignBARs: "reassign-bars"
        }
    }

    public var description: String {
        switch action {
        case .bindVFIO: "\(card): bind to vfio-pci (\(reason))"
        case .bindHost(let policy): "\(card): give back to the host, \(policy) (\(reason))"
        case .attach(let address, let guest): "\(card): attach \(address) to \(guest) (\(reason))"
        case .detach(let address, let guest): "\(card): detach \(address) from \(guest) (\(reason))"
        case .reassignBARs(let port): "\(card): remove it and \(port), rescan above \(port) (\(reason))"
        }
    }
}

/// What the BAR check says about a card bound for vfio-pci with BARs that did not fit.
public enum BARCheck: Hashable, Sendable {
    /// Re-enumerate it from above its port (once per layout of unassigned BARs).
    case reassign(port: PCIAddress)
    /// Left on whatever driver it has; the fix is the person's (the kernel command line, the firmware).
    case leftAlone(String)
}

/// Turns (actual, desired) into the steps that close the gap. Pure and level-triggered: the same
/// observation always gives the same plan, whatever events led to it.
public enum Reconciler {
    public static func plan(for observed: ObservedCard) -> [PlanStep] {
        let card = observed.card
        let functions = observed.resolution.functions
        // Absent or ambiguous: nothing to move. A returning card makes the next observation differ.
        guard let slot = functions.first?.address.slot else { return [] }
        // A bridge, or a driver nobody can name: whatever the guest does, the card stays as it is.
        if observed.resolution.handsOff != nil { return [] }
        let name = card.name
        switch barCheck(observed) {
        case .reassign(let port)?:
            return [PlanStep(card: name, action: .reassignBARs(port: port),
                             reason: "\(observed.bars.summary): the kernel found no room below \(port)", slot: slot)]
        case .leftAlone?:
            return []
        case nil:
            break
        }
        var steps: [PlanStep] = []
        switch Placement(card: card, guest: observed.guest) {
        case .unchanged, .heldByCrashedGuest:
            return []
        case .inGuest(let guest):
            let offVFIO = functions.filter { $0.driver != .vfioPCI }
            if !offVFIO.isEmpty {
                let drivers = Set(offVFIO.map(\.driver.description)).sorted().joined(separator: ", ")
                steps.append(PlanStep(card: name, action: .bindVFIO, reason: "\(guest) is running and the card is on \(drivers)", slot: slot))
            }
            for function in functions where !observed.attached.contains(function.address) {
                steps.append(PlanStep(card: name, action: .attach(function.address, to: guest),
                                      reason: "\(guest) is running without it"))
            }
        case .vfioIdle:
            if functions.contains(where: { $0.driver != .vfioPCI }) {
                steps.append(PlanStep(card: name, action: .bindVFIO, reason: "\(card.guest) is not running and when-guest-stops is keep",
                                      slot: slot))
            }
        case .host(let policy):
            let misplaced = functions.compactMap { hostMisplacement(of: $0, policy: policy, history: observed.history) }
            if !misplaced.isEmpty {
                steps.append(PlanStep(card: name, action: .bindHost(policy),
                                      reason: "\(card.guest) is not running and \(misplaced.joined(separator: ", "))", slot: slot))
            }
        }
        return steps
    }

    /// What to do about a card bound for vfio-pci with a BAR the kernel could not place; `nil` when there is
    /// nothing to do (every BAR placed, or the card goes to the host, whose driver copes or fails on its own).
    /// Such a card is never bound to vfio-pci nor attached: a guest would get a half-working device.
    public static func barCheck(_ observed: ObservedCard) -> BARCheck? {
        let bars = observed.bars
        guard !bars.unassigned.isEmpty, let first = observed.resolution.functions.first else { return nil }
        switch Placement(card: observed.card, guest: observed.guest) {
        case .inGuest, .vfioIdle: break
        case .host, .unchanged, .heldByCrashedGuest: return nil
        }
        if let tried = observed.history.barReassignment, tried.layout == bars.unassignedLayout {
            switch tried.outcome {
            case .reenumerated: return .leftAlone("still unassigned after re-enumerating it below its port's parent")
            case .refused: return .leftAlone("not re-enumerated: \(tried.detail ?? "refused")")
            }
        }
        // Functions already in the guest (attached by an older run, or by hand) are its: never removed under it.
        if observed.resolution.functions.contains(where: { observed.attached.contains($0.address) }) {
            return .leftAlone("not re-enumerated: the guest \(observed.card.guest) holds it")
        }
        guard let port = first.upstreamPort else {
            return .leftAlone("not re-enumerated: it has no upstream port whose windows could be sized anew")
        }
        return .reassign(port: port)
    }

    /// What keeps a function from its host placement, or `nil` when it is there.
    static func hostMisplacement(of function: PCIDeviceSnapshot, policy: HostDriverPolicy, history: CardHistory) -> String? {
        let address = function.address
        if !policySatisfied(policy, by: function.driver) {
            return function.driver == .unbound ? "\(address) has no driver" : "\(address) is on \(function.driver)"
        }
        if let override = function.driverOverride, !policy.accepts(override: override) {
            return "\(address) has driver_override \(override) (its next probe would go there)"
        }
        // "auto" is the kernel's choice, which it makes when asked: a driverless function (left by an
        // interrupted move) is probed once per appearance; still driverless after that, no driver wants it.
        if policy == .auto, function.driver == .unbound, !history.probedForHost.contains(address) {
            return "\(address) has no driver and has not been probed since it appeared"
        }
        return nil
    }

    static func policySatisfied(_ policy: HostDriverPolicy, by driver: BoundDriver) -> Bool {
        switch policy {
        case .auto: driver != .vfioPCI
        case .driver(let name): driver == .bound(name)
        case .none: driver == .unbound
        }
    }
}
