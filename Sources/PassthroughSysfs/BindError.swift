import PassthroughCore

/// Why a card was not moved, and whether the host was left as it was.
public enum BindError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Nothing in the configuration claims this function: we never touch it.
    case notClaimed(PCIAddress)
    /// The card is not in the configuration this binder was given.
    case unknownCard(CardName)
    /// Reading the bus failed before anything was changed.
    case readFailed(SysfsError)
    case cardAbsent(CardName)
    case cardAmbiguous(CardName, slots: [PCISlot])
    /// A peer in the card's IOMMU group is used by a host driver; vfio-pci would make the group
    /// unusable for the guest, and stealing the peer could take a disk or NIC from the host.
    case groupInUse(CardName, group: Int?, peers: [GroupPeer])
    /// A bridge, or a function whose driver cannot be read: never moved.
    case handsOff(CardName, CardResolution.HandsOff)
    case driverNotLoaded(DriverName)
    /// A step failed; every function already moved was put back (or the rollback says why not).
    case stepFailed(StepFailure, rollback: RollbackOutcome)

    public var description: String {
        switch self {
        case .notClaimed(let address):
            return "refusing to touch \(address): no card in the configuration claims it"
        case .unknownCard(let card):
            return "refusing to touch card \(card): it is not in the configuration"
        case .readFailed(let error):
            return "nothing was changed: \(error)"
        case .cardAbsent(let card):
            return "card \(card) is not on the PCI bus (no function matches its address or ids)"
        case .cardAmbiguous(let card, let slots):
            return "card \(card) matches functions in \(slots.count) slots (\(slots.map(\.description).joined(separator: ", "))); give it an 'address'"
        case .groupInUse(let card, let group, let peers):
            let list = peers.map { "\($0.address) (\($0.driver))" }.joined(separator: ", ")
            return "refusing to bind \(card) to vfio-pci: IOMMU group \(group.map(String.init) ?? "?") also holds \(list), in use by the host"
        case .handsOff(let card, let reason):
            return "refusing to move \(card): \(reason)"
        case .driverNotLoaded(let driver):
            return "driver \(driver) is not loaded (no /sys/bus/pci/drivers/\(driver)); load it with modprobe \(driver)"
        case .stepFailed(let failure, let rollback):
            return "\(failure); \(rollback)"
        }
    }
}

/// One step of the kernel's rebind sequence that did not do what it should.
public struct StepFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        case sysfs(SysfsError)
        /// The write "succeeded" but the `driver` link says otherwise (e.g. drivers_probe bound nothing).
        case verification(expected: String, actual: DriverName?)
        /// The address holds another device than the one the move was planned for (or none).
        case identityChanged(expected: PCIID, found: PCIID?)
        /// The `driver` link names something that is not a driver name: nobody can say who holds it.
        case unreadableDriver(BoundDriver)
    }

    public var address: PCIAddress
    public var step: String
    public var reason: Reason

    public init(address: PCIAddress, step: String, reason: Reason) {
        self.address = address
        self.step = step
        self.reason = reason
    }

    public var description: String {
        switch reason {
        case .sysfs(let error):
            "\(address): \(step) failed: \(error)"
        case .verification(let expected, let actual):
            "\(address): \(step) did not take: expected \(expected), the kernel reports \(actual.map { "driver \($0)" } ?? "no driver")"
        case .identityChanged(let expected, let found):
            "\(address): not going to \(step): it was \(expected) when the move was planned and is "
                + (found.map { "\($0) now (another device, re-enumerated under the move)" } ?? "gone now")
        case .unreadableDriver(let driver):
            "\(address): not going to \(step): it is held by \(driver)"
        }
    }
}

public enum RollbackOutcome: Hashable, Sendable, CustomStringConvertible {
    case restored
    /// The functions listed may now be without a driver: the one outcome we must shout about.
    case failed([StepFailure])

    public var description: String {
        switch self {
        case .restored:
            "rolled back: every function is on its previous driver"
        case .failed(let failures):
            "ROLLBACK FAILED, the card may be without a driver: "
                + failures.map(\.description).joined(separator: "; ")
                + " (to recover: echo ADDRESS > /sys/bus/pci/drivers_probe)"
        }
    }
}
