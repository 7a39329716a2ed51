// The journal notifications: the kinds an operator is told about, their catalog MESSAGE_IDs, the metadata
// keys every entry is logged under, and the one way the agent's parts raise one, a card expanded into its
// fields in one place (as bolt's LOG_DEV). Talking to the service manager, sd_notify, is `SystemdNotifier`'s.

import Logging
import PassthroughCore

/// The events worth an operator's attention, each with a fixed ``MessageID`` that
/// `systemd/passthrough-agent.catalog` explains (`journalctl -x`), and that lets scripts
/// follow them (`journalctl MESSAGE_ID=…`).
///
/// The ids are part of the interface: never change or reuse one; add a new case instead.
public enum NotificationKind: Hashable, Sendable, CaseIterable {
    case cardAppeared
    case cardVanished
    case cardRebound
    case cardAttached
    case cardDetached
    /// Released from VFIO back to a host driver.
    case cardGivenBack
    case stepFailed
    case retry
    /// State re-read from sysfs and libvirt instead of trusting events.
    case resync
    /// The same slot came back with another vendor:device (new bitstream).
    case cardIDChanged
    /// Link down: the device stays in sysfs but reads all ones.
    case cardLost
    case recoveryGaveUp
    case configReloaded
    case configRejected
    /// The kernel could not recover the card from a PCIe error, yet its link answers: the card stays
    /// where it is (a guest QEMU paused over the error may hold it).
    case errorNotRecovered
    /// A card has been off the bus for a reflash for its `recovery-timeout` and nobody finished it.
    case reflashNotFinished
    /// A guest asked for something over its request channel that it may not have (not its card, requests
    /// off, not running, a dry run) or asked too often.
    case guestRequestRefused
    /// A card bound for vfio-pci came back with BARs the kernel could not place, and re-enumerating it from
    /// above its port did not help (or was not allowed): it is not given to its guest.
    case barsUnassigned
    /// A card's link came back slower or narrower than before (or than both ends can do), or not answering.
    case linkDegraded

    public var messageID: MessageID {
        // Generated once with uuid.uuid4().hex.
        let hex = switch self {
        case .cardAppeared: "60bd35b3daf642e1971e5fbb8afbe012"
        case .cardVanished: "5b329c87f0e74fd7aa5972e86a441a25"
        case .cardRebound: "5db2563f473946c9b832d37769f4ceaf"
        case .cardAttached: "afd79f907deb40c780af2c070fd6d999"
        case .cardDetached: "cc12d91879064ed7aa4395fc376c7f9f"
        case .cardGivenBack: "bb210f37c1034266b6a59b379992bbf1"
        case .stepFailed: "54a0b6a8aeb44d15865234500560809a"
        case .retry: "3022f3392f1d434098d80867868ed648"
        case .resync: "ac13646b04d04005972efe1edc4be850"
        case .cardIDChanged: "87eaf757a9994e0e9e84852aa2bceaad"
        case .cardLost: "34f612af286d42afa749b52c63a45398"
        case .recoveryGaveUp: "c6b6c5e68c224cbba84baf4bda067ba5"
        case .configReloaded: "554c47f893c449829cf9d79605449949"
        case .configRejected: "6215c54ceb534134aef78d470a870f24"
        case .errorNotRecovered: "a2a6543f0cb846ac99fe8c5d5616e123"
        case .reflashNotFinished: "508f9842c9cd4eb38cc936d8fea2ee30"
        case .guestRequestRefused: "14fd44d16c164b9a82737a29ffd6a748"
        case .barsUnassigned: "43fad8bcf5994be2a93b512f5154976f"
        case .linkDegraded: "d38613aa3ec745a08eb4110612b90e40"
        }
        // The literals above are checked by the tests; a typo is a programming error.
        return MessageID(rawValue: hex)!
    }

    /// `["MESSAGE_ID": id]`, the metadata that marks a log entry as this notification.
    public var metadata: Logger.Metadata {
        [LogMetadataKey.messageID: .string(messageID.rawValue)]
    }

    /// `details` plus `MESSAGE_ID`, for one log call:
    /// `logger.notice("card appeared", metadata: NotificationKind.cardAppeared.metadata([LogMetadataKey.card: "fpga0"]))`.
    /// The kind's id wins over a `MESSAGE_ID` in `details`.
    public func metadata(_ details: Logger.Metadata) -> Logger.Metadata {
        details.merging(metadata) { _, id in id }
    }
}

/// A journal `MESSAGE_ID=`: 128 bits as 32 lowercase hex digits, the key into the catalog.
public struct MessageID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Nil unless `rawValue` is exactly 32 lowercase hex digits, the only form journalctl's
    /// catalog lookup matches.
    public init?(rawValue: String) {
        guard rawValue.utf8.count == 32,
              rawValue.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                  || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// Metadata keys the agent logs under; each becomes a journal field of the same name, so
/// `journalctl PASSTHROUGH_CARD=fpga0` finds everything about one card, and the catalog
/// (`systemd/passthrough-agent.catalog`) can quote them as `@PCI_SLOT@`.
public enum LogMetadataKey {
    /// The card's name from the configuration.
    public static let card = "PASSTHROUGH_CARD"
    /// PCI address, `0000:01:00.0`.
    public static let pciSlot = "PCI_SLOT"
    /// The PCIe port above a card, `0000:00:01.0`: what a reflash guards and a recovery rescans below.
    public static let pciPort = "PCI_PORT"
    /// Vendor and device, `10ee:903f`.
    public static let pciID = "PCI_ID"
    /// libvirt domain name.
    public static let guest = "GUEST"
    /// Kernel driver before a rebind (empty when unbound).
    public static let driverFrom = "DRIVER_FROM"
    /// Kernel driver after a rebind.
    public static let driverTo = "DRIVER_TO"
    /// How long an operation took, in microseconds (journal convention for times: `_USEC`).
    public static let durationMicroseconds = "DURATION_USEC"
    /// The operation that failed or is retried (`unbind`, `attach`, …).
    public static let step = "STEP"
    /// 1-based attempt number of a retried step.
    public static let attempt = "ATTEMPT"
    /// The configuration file concerned.
    public static let configPath = "CONFIG_PATH"
    /// The journal's standard field for a numeric errno.
    public static let errno = "ERRNO"
    /// Links an entry to its catalog text; see ``NotificationKind``.
    public static let messageID = "MESSAGE_ID"
}

extension Logger {
    /// Announces one notification: a log line at `level` that carries the kind's `MESSAGE_ID` and the
    /// documented journal fields, so `journalctl -x` explains it and scripts can select it.
    package func announce(
        _ kind: NotificationKind, _ message: String, level: Logger.Level = .notice, card: CardName? = nil,
        _ fields: Logger.Metadata = [:]
    ) {
        var metadata = fields
        if let card { metadata[LogMetadataKey.card] = "\(card)" }
        log(level: level, "\(message)", metadata: kind.metadata(metadata))
    }
}

extension Logger.Metadata {
    /// A card's journal fields: its name and its guest.
    package static func card(_ card: CardConfig) -> Logger.Metadata {
        [LogMetadataKey.card: "\(card.name)", LogMetadataKey.guest: "\(card.guest)"]
    }
}
