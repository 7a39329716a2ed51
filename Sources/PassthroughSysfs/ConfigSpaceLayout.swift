/// Offsets and bits of the PCI config header and the PCI Express capability that we read.
/// (PCI Local Bus 3.0 §6.1, PCI-to-PCI Bridge 1.2 §3.2, PCI Express Base §7.5.3.)
enum ConfigSpaceLayout {
    static let vendorID = 0x00
    static let command = 0x04
    static let status = 0x06
    /// Status bit 4: the header has a capability list at ``capabilitiesPointer``.
    static let statusCapabilityList: UInt16 = 0x0010
    static let headerType = 0x0E
    /// Bit 7 of the header type flags a multi-function device; the low 7 bits are the layout.
    static let headerLayoutMask: UInt8 = 0x7F
    static let capabilitiesPointer = 0x34
    static let bridgeControl = 0x3E

    /// Capabilities live after the 64-byte header; anything lower is garbage.
    static let firstCapability = 0x40
    /// The kernel's `PCI_FIND_CAP_TTL`: (256 - 0x40) / 4 entries fit; more means a loop.
    static let maximumCapabilityHops = 48
    static let expressCapabilityID: UInt8 = 0x10

    /// Offsets inside the PCI Express capability.
    static let expressCapabilities = 0x02
    /// PCI Express Capabilities bit 8: the port has a slot, so Slot Capabilities is valid.
    static let slotImplemented: UInt16 = 1 << 8
    static let expressDeviceControl = 0x08
    static let expressLinkCapabilities = 0x0C
    static let expressLinkControl = 0x10
    static let expressLinkStatus = 0x12
    /// Link Capabilities bit 20: the port reports Data Link Layer Link Active. Without it the
    /// DLLLA bit always reads 0 and says nothing about the link.
    static let linkActiveReportingCapable: UInt32 = 1 << 20
    /// Link Status bit 13: Data Link Layer Link Active.
    static let dataLinkLayerLinkActive: UInt16 = 1 << 13
    static let expressSlotCapabilities = 0x14
    /// Slot Capabilities bit 6: Hot-Plug Capable (what makes the kernel call it a hotplug bridge).
    static let hotPlugCapable: UInt32 = 1 << 6

    /// Extended capabilities start after the 256 bytes of conventional config space.
    static let firstExtendedCapability = 0x100
    /// The kernel's TTL for the extended list: (4096 - 256) / 8 headers fit; more means a loop.
    static let maximumExtendedCapabilityHops = (4096 - 256) / 8
    static let advancedErrorReportingID: UInt16 = 0x0001
}
