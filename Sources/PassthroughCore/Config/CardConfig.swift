// The config model: a card and the agent as the config describes them, with the value types their keys
// take (names, policies, durations, limits, modes).

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

extension Unicode.Scalar {
    /// Characters that must never reach a log line or a terminal unescaped: the C0 and C1 controls and
    /// DEL, which a terminal may act on, and the bidirectional-text controls (ALM, LRM/RLM, LRE…RLO,
    /// LRI…PDI), which make text print as other text: `vm\u{202E}exe` shows as `vmexe` reversed.
    package var isControlOrBidiControl: Bool {
        switch value {
        case 0x00...0x1f, 0x7f...0x9f: true
        case 0x061c, 0x200e, 0x200f, 0x202a...0x202e, 0x2066...0x2069: true
        default: false
        }
    }
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

/// Durations as the config writes them: a whole number and a unit, `"500ms"`, `"1s"`, `"2m"`, `"1h"`.
///
/// Deliberately narrow (no fractions, no compound forms like `"1m30s"`): one obvious spelling per
/// value keeps config files greppable and errors easy to explain.
public enum ConfigDuration {
    /// The units accepted, in the order they are listed in error messages.
    public static let units = ["ms", "s", "m", "h"]

    /// `nil` for anything that is not `<digits><unit>`, or that overflows.
    public static func parse(_ text: String) -> Duration? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        guard !digits.isEmpty, digits.count <= 9, let value = Int64(digits) else { return nil }
        switch unit {
        case "ms": return .milliseconds(value)
        case "s": return .seconds(value)
        case "m": return .seconds(value * 60)
        case "h": return .seconds(value * 3600)
        default: return nil
        }
    }

    /// The shortest exact config spelling of `duration` (`.seconds(120)` is `"2m"`).
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 != 0 { return "\(milliseconds)ms" }
        let seconds = milliseconds / 1000
        if seconds != 0, seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds != 0, seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
}

/// Limits on `recovery-timeout`.
public enum RecoveryTimeout {
    public static let `default` = Duration.seconds(60)
    public static let minimum = Duration.seconds(1)
    public static let maximum = Duration.seconds(3600)
}

/// How often the agent reads a card's vendor ID to notice that it dropped off the link.
public enum LinkWatch: Hashable, Sendable, CustomStringConvertible {
    case off
    case every(Duration)

    /// Shorter intervals would poll config space faster than any human reflash needs.
    public static let minimumInterval = Duration.milliseconds(100)
    public static let maximumInterval = Duration.seconds(3600)

    public var interval: Duration? {
        if case .every(let interval) = self { return interval }
        return nil
    }

    public var description: String {
        switch self {
        case .off: "off"
        case .every(let interval): "every \(ConfigDuration.format(interval))"
        }
    }
}

/// What `reflash-guard` protects the host with, on the card's upstream port: how a card that leaves the
/// link (an FPGA being programmed) is kept from taking the server down.
public enum ReflashGuardMode: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Nothing is changed on the port (`false`, or the key left out).
    case off
    /// Between `reflash --prepare` and `--finish`, and during a recovery: SERR# Enable and Fatal Error
    /// Reporting Enable cleared, so a Surprise Down is not escalated to a fatal system error (`true`).
    case mask
    /// Between `reflash --prepare` and `--finish`: the port's link disabled once the card's functions are
    /// removed. A link software disabled reports no Surprise Down at all, which firmware-first platforms
    /// escalate whatever the OS masks.
    case linkDisable = "link-disable"
    /// The mask, held for as long as the card is lent to its running guest (and around its reflashes), so
    /// a reprogramming nobody announced on the host never takes the server down.
    case whileLent = "while-lent"

    /// The modes that mask fatal-error reporting (the bits of ``mask``).
    public var masks: Bool { self == .mask || self == .whileLent }

    public var description: String { rawValue }
}

/// How the card is brought back after it left the link (`reset` in the config).
public enum CardResetMethod: String, Hashable, Sendable, CaseIterable {
    /// Wait for the link to come back by itself (JTAG reprogramming retrains it).
    case none
    /// Pulse Secondary Bus Reset on the upstream bridge, as Corundum's `pcie_hot_reset.sh`.
    case secondaryBus = "secondary-bus"
}
