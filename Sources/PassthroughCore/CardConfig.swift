/// A card's name in the config, `[a-z0-9-]+`: short, and safe in paths, logs and journal fields.
public struct CardName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 64,
              rawValue.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d })
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
    public static func < (lhs: CardName, rhs: CardName) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A libvirt domain name. libvirt itself forbids `/`; control characters (C0, DEL, C1) would garble
/// logs and terminals, and bidirectional-text controls would make a name print as another one.
public struct GuestName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 255,
              rawValue.unicodeScalars.allSatisfy({ $0 != "/" && !$0.isControlOrBidiControl })
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// Where a card goes when it is not lent to its guest.
public enum HostDriverPolicy: Hashable, Sendable, CustomStringConvertible {
    /// Clear `driver_override` and let the kernel choose (e.g. `xdma`).
    case auto
    /// Bind this driver explicitly.
    case driver(DriverName)
    /// Leave the card without a driver.
    case none

    public init?(_ text: String) {
        switch text {
        case "auto": self = .auto
        case "none": self = .none
        default:
            guard let name = DriverName(text), name != .vfioPCI else { return nil }
            self = .driver(name)
        }
    }

    /// What `driver_override` holds when the card is placed by this policy: the named driver, or nothing
    /// (the kernel's own choice; a driverless card).
    public var driverOverride: DriverName? {
        if case .driver(let name) = self { return name }
        return nil
    }

    /// Whether an override can stay: anything else sends the function elsewhere at its next probe (a
    /// `vfio-pci` left by an interrupted move would hand a stopped guest's card to vfio-pci).
    public func accepts(override: DriverName?) -> Bool {
        override == nil || override == driverOverride
    }

    public var description: String {
        switch self {
        case .auto: "auto"
        case .none: "none"
        case .driver(let name): name.rawValue
        }
    }
}

/// What happens to the card when its guest is not running.
public enum GuestStopPolicy: String, Hashable, Sendable, CaseIterable {
    /// Give the card back to its host driver.
    case host
    /// Keep it on vfio-pci, ready for the next start.
    case keep
}

public struct CardConfig: Hashable, Sendable {
    public var name: CardName
    public var address: PCIAddressSelector?
    public var ids: [PCIID]
    public var guest: GuestName
    public var hostDriver: HostDriverPolicy
    public var whenGuestStops: GuestStopPolicy
    /// `link-watch`: poll the vendor ID to notice a reflash; off unless configured.
    public var linkWatch: LinkWatch
    /// `reflash-guard`: how the upstream port is kept from escalating the card's link-down (``ReflashGuardMode``).
    public var reflashGuard: ReflashGuardMode
    /// `reset`: how the link is brought back during recovery.
    public var reset: CardResetMethod
    /// `recovery-timeout`: how long recovery waits for the card before giving up (and how long a card
    /// may stay off the bus for a reflash before a notification says nobody finished it).
    public var recoveryTimeout: Duration
    /// `guest-requests`: the card's guest may ask for its reflash itself (`prepare`, `finish`, `status`
    /// over its request channel); off unless configured.
    public var guestRequests: Bool

    public init(
        name: CardName, address: PCIAddressSelector? = nil, ids: [PCIID] = [], guest: GuestName,
        hostDriver: HostDriverPolicy = .auto, whenGuestStops: GuestStopPolicy = .host,
        linkWatch: LinkWatch = .off, reflashGuard: ReflashGuardMode = .off, reset: CardResetMethod = .none,
        recoveryTimeout: Duration = RecoveryTimeout.default, guestRequests: Bool = false
    ) {
        self.name = name
        self.address = address
        self.ids = ids
        self.guest = guest
        self.hostDriver = hostDriver
        self.whenGuestStops = whenGuestStops
        self.linkWatch = linkWatch
        self.reflashGuard = reflashGuard
        self.reset = reset
        self.recoveryTimeout = recoveryTimeout
        self.guestRequests = guestRequests
    }

    /// Whether this card claims the function: its address (when given) contains it and its ID
    /// (when `ids` is given) is one the card may show.
    public func matches(address candidate: PCIAddress, id: PCIID) -> Bool {
        if let address, !address.contains(candidate) { return false }
        if !ids.isEmpty, !ids.contains(id) { return false }
        return true
    }

    /// Whether one device could be claimed by both cards.
    public func canMatchSameDevice(as other: CardConfig) -> Bool {
        if let mine = address, let theirs = other.address, !mine.overlaps(theirs) { return false }
        if !ids.isEmpty, !other.ids.isEmpty, Set(ids).isDisjoint(with: other.ids) { return false }
        return true
    }
}

public struct AgentConfig: Hashable, Sendable {
    public static let defaultPath = "/etc/passthrough-agent/config.toml"
    public static let defaultLibvirtURI = "qemu:///system"

    public var libvirtURI: String
    public var cards: [CardConfig]
    /// `[agent] metrics-file`: where node_exporter's textfile collector reads the agent's metrics (an absolute
    /// path ending in `.prom`); `nil`: no metrics are written.
    public var metricsFile: String?

    public init(libvirtURI: String = AgentConfig.defaultLibvirtURI, cards: [CardConfig] = [], metricsFile: String? = nil) {
        self.libvirtURI = libvirtURI
        self.cards = cards
        self.metricsFile = metricsFile
    }

    public func card(named name: String) -> CardConfig? {
        cards.first { $0.name.rawValue == name }
    }

    /// The card that claims a function; validation guarantees there is at most one.
    public func card(claiming address: PCIAddress, id: PCIID) -> CardConfig? {
        cards.first { $0.matches(address: address, id: id) }
    }
}
