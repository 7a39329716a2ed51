/// One PCI function, `dddd:bb:dd.f`, always printed in lower case.
///
/// The domain is 32 bits wide, as in the kernel: Intel VMD puts the devices behind it in domains from
/// `10000` on, Hyper-V and SPDK use wider ones still. It prints with at least four digits (`%04x`).
///
/// Parsing is strict on purpose: the printed form becomes a sysfs path component, so nothing but
/// the canonical shape may ever get through (`../../x` must not).
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The card: every function of it shares the slot.
    public let slot: PCISlot
    public let function: UInt8

    public var domain: UInt32 { slot.domain }
    public var bus: UInt8 { slot.bus }
    public var device: UInt8 { slot.device }

    public init?(domain: UInt32, bus: UInt8, device: UInt8, function: UInt8) {
        guard let slot = PCISlot(domain: domain, bus: bus, device: device) else { return nil }
        self.init(slot: slot, function: function)
    }

    public init?(slot: PCISlot, function: UInt8) {
        guard function < 8 else { return nil }
        self.slot = slot
        self.function = function
    }

    /// Parses `DDDD:BB:DD.F` (hex, either case).
    public init?(_ text: String) {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 2,
              let slot = PCISlot(String(parts[0])),
              let function = Hex.fixedWidth(parts[1].utf8, width: 1)
        else { return nil }
        self.init(slot: slot, function: UInt8(function))
    }

    public var description: String { "\(slot).\(function)" }

    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.slot, lhs.function) < (rhs.slot, rhs.function)
    }
}

/// A PCI slot, `dddd:bb:dd`: every function of one physical card.
public struct PCISlot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let domain: UInt32
    public let bus: UInt8
    public let device: UInt8

    public init?(domain: UInt32, bus: UInt8, device: UInt8) {
        guard device < 32 else { return nil }
        self.domain = domain
        self.bus = bus
        self.device = device
    }

    /// Parses `DDDD:BB:DD` (hex, either case); the domain may have up to eight digits.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 3,
              let domain = Hex.domain(parts[0].utf8),
              let bus = Hex.fixedWidth(parts[1].utf8, width: 2),
              let device = Hex.fixedWidth(parts[2].utf8, width: 2)
        else { return nil }
        self.init(domain: domain, bus: UInt8(bus), device: UInt8(device))
    }

    public func function(_ number: UInt8) -> PCIAddress? {
        PCIAddress(slot: self, function: number)
    }

    public var description: String {
        "\(Hex.format(domain, width: 4)):\(Hex.format(UInt32(bus), width: 2)):\(Hex.format(UInt32(device), width: 2))"
    }

    public static func < (lhs: PCISlot, rhs: PCISlot) -> Bool {
        (lhs.domain, lhs.bus, lhs.device) < (rhs.domain, rhs.bus, rhs.device)
    }
}

/// What a card's `address` names: a whole slot or one function of it.
public enum PCIAddressSelector: Hashable, Sendable, CustomStringConvertible {
    case slot(PCISlot)
    case function(PCIAddress)

    /// Accepts either form; anything else is `nil`.
    public init?(_ text: String) {
        if let address = PCIAddress(text) {
            self = .function(address)
        } else if let slot = PCISlot(text) {
            self = .slot(slot)
        } else {
            return nil
        }
    }

    public var slot: PCISlot {
        switch self {
        case .slot(let slot): slot
        case .function(let address): address.slot
        }
    }

    public func contains(_ address: PCIAddress) -> Bool {
        switch self {
        case .slot(let slot): address.slot == slot
        case .function(let own): address == own
        }
    }

    /// Whether some function could be selected by both.
    public func overlaps(_ other: PCIAddressSelector) -> Bool {
        switch (self, other) {
        case (.function(let a), .function(let b)): a == b
        case (.slot(let slot), .function(let address)), (.function(let address), .slot(let slot)): address.slot == slot
        case (.slot(let a), .slot(let b)): a == b
        }
    }

    public var description: String {
        switch self {
        case .slot(let slot): slot.description
        case .function(let address): address.description
        }
    }
}
