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

    public var card: CardConfig
    public var outcome: Outcome

    public init(card: CardConfig, devices: [PCIDeviceSnapshot]) {
        self.card = card
        let matching = devices.filter { card.matches(address: $0.address, id: $0.id) }
            .sorted { $0.address < $1.address }
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
}
