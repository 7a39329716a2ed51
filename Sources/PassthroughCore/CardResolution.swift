/// Which present functions belong to a configured card.
public struct CardResolution: Hashable, Sendable {
    public enum Outcome: Hashable, Sendable {
        /// No function matches: the card is absent (removed, reflashing, or misconfigured).
        case absent
        /// The functions of one slot, sorted by address.
        case present([PCIDeviceSnapshot])
        /// `ids` match functions in several slots; the card needs an `address`.
        case ambiguous([PCISlot])
    }

    /// Why a card on the bus must be left exactly where it is, whatever its guest does.
    public enum HandsOff: Hashable, Sendable, CustomStringConvertible {
        /// A PCI bridge matched: it carries the link of every device behind it, and unbinding it from
        /// `pcieport` takes hotplug, AER and power management away from all of them.
        case bridge(PCIAddress, classCode: UInt32)
        /// Something holds the function and its name cannot be read: unknown is hands off.
        case unreadableDriver(PCIAddress, BoundDriver)

        public var description: String {
            switch self {
            case .bridge(let address, let classCode):
                "\(address) is a PCI bridge (class 0x\(Hex.format(classCode, width: 6))), which is never passed through or unbound; "
                    + "point the card's address at the device behind it"
            case .unreadableDriver(let address, let driver):
                "\(address) is held by \(driver); the card is left where it is until its driver can be read"
            }
        }
    }

    public var card: CardConfig
    public var outcome: Outcome
    /// Slots whose functions match an `ids`-only card but are not where it was last seen: another card
    /// with the same IDs, which this one never adopts (see ``CardHistory/lastSlot``).
    public var lookalikes: [PCISlot]

    /// `lastSlot`: where an `ids`-only card was last seen; it is then looked for there only.
    public init(card: CardConfig, devices: [PCIDeviceSnapshot], lastSlot: PCISlot? = nil) {
        self.card = card
        var matching = devices.filter { card.matches(address: $0.address, id: $0.id) }
            .sorted { $0.address < $1.address }
        lookalikes = []
        if card.address == nil, let lastSlot {
            lookalikes = Set(matching.map(\.address.slot)).subtracting([lastSlot]).sorted()
            matching.removeAll { $0.address.slot != lastSlot }
        }
        let slots = Set(matching.map(\.address.slot)).sorted()
        switch slots.count {
        case 0: outcome = .absent
        case 1: outcome = .present(matching)
        default: outcome = .ambiguous(slots)
        }
    }

    public var functions: [PCIDeviceSnapshot] {
        if case .present(let functions) = outcome { return functions }
        return []
    }

    public var isPresent: Bool { !functions.isEmpty }

    /// Set when the card is present but must not be touched; bridges first, as no driver makes them a card.
    public var handsOff: HandsOff? {
        if let bridge = functions.first(where: \.isBridge) {
            return .bridge(bridge.address, classCode: bridge.classCode)
        }
        if let unreadable = functions.first(where: \.driver.isUnreadable) {
            return .unreadableDriver(unreadable.address, unreadable.driver)
        }
        return nil
    }
}
