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
