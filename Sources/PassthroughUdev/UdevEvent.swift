// One PCI uevent decoded: the event and its action and PCIe error-recovery values.

import PassthroughCore

/// One PCI device as a uevent (or the coldplug scan) described it, decoded into core types.
///
/// Every `UdevEvent` names a valid PCI address: a uevent that does not is reported as
/// ``UdevMonitorEvent/resync(_:)`` instead, never silently dropped.
public struct UdevEvent: Hashable, Sendable {
    public var action: UdevAction
    /// `true` for the synthetic `add` events of the initial (or post-resync) scan of existing devices.
    public var isColdplug: Bool
    /// `/sys/devices/...`, the device's identity as libudev sees it.
    public var syspath: String
    /// From `PCI_SLOT_NAME`, else from the sysfs name.
    public var address: PCIAddress
    /// From `PCI_ID`, else from the `vendor`/`device` attributes; `nil` if neither is readable.
    public var id: PCIID?
    /// The bound driver; always `nil` for `remove` and `unbind`, which the kernel sends after the
    /// driver has let go.
    public var driver: DriverName?
    /// `ERROR_EVENT`, present on AER recovery `change` events.
    public var errorEvent: AERErrorEvent?
    /// `DEVICE_ONLINE` (`0`/`1`), present on AER recovery `change` events.
    public var deviceOnline: Bool?
    /// The kernel's `SEQNUM`; `nil` for coldplug events.
    public var sequenceNumber: UInt64?

    public init(
        action: UdevAction, isColdplug: Bool = false, syspath: String, address: PCIAddress,
        id: PCIID? = nil, driver: DriverName? = nil, errorEvent: AERErrorEvent? = nil,
        deviceOnline: Bool? = nil, sequenceNumber: UInt64? = nil
    ) {
        self.action = action
        self.isColdplug = isColdplug
        self.syspath = syspath
        self.address = address
        self.id = id
        self.driver = driver
        self.errorEvent = errorEvent
        self.deviceOnline = deviceOnline
        self.sequenceNumber = sequenceNumber
    }
}

/// What the kernel says happened to a device (`ACTION=` of a uevent).
public enum UdevAction: Hashable, Sendable, CustomStringConvertible {
    case add
    case remove
    case bind
    case unbind
    case change
    /// `move`, `online`, `offline` or anything a future kernel invents; passed through verbatim.
    case other(String)

    public init(_ rawValue: String) {
        switch rawValue {
        case "add": self = .add
        case "remove": self = .remove
        case "bind": self = .bind
        case "unbind": self = .unbind
        case "change": self = .change
        default: self = .other(rawValue)
        }
    }

    public var description: String {
        switch self {
        case .add: "add"
        case .remove: "remove"
        case .bind: "bind"
        case .unbind: "unbind"
        case .change: "change"
        case .other(let raw): raw
        }
    }
}

/// The `ERROR_EVENT=` property of the `change` uevents that PCIe error recovery (AER/DPC/EEH)
/// sends through `pci_uevent_ers()`.
public enum AERErrorEvent: Hashable, Sendable, CustomStringConvertible {
    /// `BEGIN_RECOVERY`, sent with `DEVICE_ONLINE=0`.
    case beginRecovery
    /// `SUCCESSFUL_RECOVERY`, sent with `DEVICE_ONLINE=1`.
    case successfulRecovery
    /// `FAILED_RECOVERY`, sent with `DEVICE_ONLINE=0`: the device is disconnected.
    case failedRecovery
    /// A value this code does not know; passed through verbatim.
    case other(String)

    public init(_ rawValue: String) {
        switch rawValue {
        case "BEGIN_RECOVERY": self = .beginRecovery
        case "SUCCESSFUL_RECOVERY": self = .successfulRecovery
        case "FAILED_RECOVERY": self = .failedRecovery
        default: self = .other(rawValue)
        }
    }

    public var description: String {
        switch self {
        case .beginRecovery: "BEGIN_RECOVERY"
        case .successfulRecovery: "SUCCESSFUL_RECOVERY"
        case .failedRecovery: "FAILED_RECOVERY"
        case .other(let raw): raw
        }
    }
}
