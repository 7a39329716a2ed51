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

    public init(card: CardConfig, devices: [PCIDeviceSnapshot], guest: GuestActivity, attached: Set<PCIAddress>) {
        self.card = card
        self.resolution = CardResolution(card: card, devices: devices)
        self.guest = guest
        self.attached = attached
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
    }

    public var card: CardName
    public var action: Action
    /// Why, in words a user reads in the journal.
    public var reason: String

    public init(card: CardName, action: Action, reason: String) {
        self.card = card
        self.action = action
        self.reason = reason
    }

    public var actionName: String {
        switch action {
        case .bindVFIO: "bind-vfio"
        case .bindHost: "bind-host"
        case .attach: "attach"
        case .detach: "detach"
        }
    }

    public var description: String {
        switch action {
        case .bindVFIO: "\(card): bind to vfio-pci (\(reason))"
        case .bindHost(let policy): "\(card): give back to the host, \(policy) (\(reason))"
        case .attach(let address, let guest): "\(card): attach \(address) to \(guest) (\(reason))"
        case .detach(let address, let guest): "\(card): detach \(address) from \(guest) (\(reason))"
        }
    }
}

/// Turns (actual, desired) into the steps that close the gap. Pure and level-triggered: the same
/// observation always gives the same plan, whatever events led to it.
public enum Reconciler {
    public static func plan(for observed: ObservedCard) -> [PlanStep] {
        let card = observed.card
        let functions = observed.resolution.functions
        // Absent or ambiguous: nothing to move. A returning card makes the next observation differ.
        guard !functions.isEmpty else { return [] }
        let name = card.name
        var steps: [PlanStep] = []
        switch Placement(card: card, guest: observed.guest) {
        case .unchanged, .heldByCrashedGuest:
            return []
        case .inGuest(let guest):
            let offVFIO = functions.filter { $0.driver != .vfioPCI }
            if !offVFIO.isEmpty {
                let drivers = Set(offVFIO.map { $0.driver?.rawValue ?? "no driver" }).sorted().joined(separator: ", ")
                steps.append(PlanStep(card: name, action: .bindVFIO, reason: "\(guest) is running and the card is on \(drivers)"))
            }
            for function in functions where !observed.attached.contains(function.address) {
                steps.append(PlanStep(card: name, action: .attach(function.address, to: guest),
                                      reason: "\(guest) is running without it"))
            }
        case .vfioIdle:
            if functions.contains(where: { $0.driver != .vfioPCI }) {
                steps.append(PlanStep(card: name, action: .bindVFIO, reason: "\(card.guest) is not running and when-guest-stops is keep"))
            }
        case .host(let policy):
            let target = functions.filter { !policySatisfied(policy, by: $0.driver) }
            if !target.isEmpty {
                steps.append(PlanStep(card: name, action: .bindHost(policy), reason: "\(card.guest) is not running"))
            }
        }
        return steps
    }

    static func policySatisfied(_ policy: HostDriverPolicy, by driver: DriverName?) -> Bool {
        switch policy {
        case .auto: driver != .vfioPCI
        case .driver(let name): driver == name
        case .none: driver == nil
        }
    }
}
