/// A 4 KiB config space with a real capability chain, for `config` files in the fake sysfs.
///
/// Unused bytes hold a pattern, not zeros, so a stray write anywhere shows up in a whole-file
/// comparison.
public struct ConfigSpaceImage: Sendable {
    public var bytes: [UInt8]

    /// Offsets of the capabilities the builders lay out: Power Management first, then MSI, then
    /// PCI Express, so the walk has to follow the chain.
    public static let powerManagement = 0x40
    public static let msi = 0x50
    public static let express = 0x68

    public init(vendor: UInt16, device: UInt16, headerType: UInt8) {
        bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        // The header itself: zero what a real device has as reserved, then set the fields.
        for offset in 0..<0x40 { bytes[offset] = 0 }
        set16(0x00, vendor)
        set16(0x02, device)
        set16(0x04, 0x0547)          // I/O, memory, bus master, parity, SERR# enabled
        set16(0x06, 0x0010)          // capability list present
        bytes[0x0E] = headerType
        bytes[0x34] = UInt8(Self.powerManagement)
        capability(at: Self.powerManagement, id: 0x01, next: Self.msi)
        capability(at: Self.msi, id: 0x05, next: Self.express)
        capability(at: Self.express, id: 0x10, next: 0)
        set16(Self.express + 0x08, 0x2937)   // correctable, non-fatal, fatal, unsupported request reporting on
        set32(Self.express + 0x0C, 0x0010_0000 | 0x3F03)  // link capabilities: DLLLA reporting capable
        set16(Self.express + 0x12, 0x3003)   // link status: DLLLA set, x0 width garbage kept
        // PCI Express Capabilities: version 2, a root port for a type-1 header, an endpoint otherwise; no slot.
        set16(Self.express + 0x02, headerType & 0x7F == 1 ? 0x0042 : 0x0002)
        set32(Self.express + 0x14, 0)        // slot capabilities: nothing
        set32(Self.extended, 0)              // no extended capabilities
    }

    /// Where the extended capability list starts; ``withAdvancedErrorReporting()`` puts AER second in it.
    public static let extended = 0x100
    public static let advancedErrorReporting = 0x148

    /// A port whose slot is hot-plug capable: Slot Implemented, and Slot Capabilities' Hot-Plug Capable.
    public func withHotplugSlot() -> ConfigSpaceImage {
        var image = self
        image.set16(Self.express + 0x02, image.get16(Self.express + 0x02) | 0x0100)
        image.set32(Self.express + 0x14, 0x0000_0060)   // hot-plug surprise + hot-plug capable
        return image
    }

    /// An AER capability, after a vendor-specific one so the walk has to follow the chain.
    public func withAdvancedErrorReporting() -> ConfigSpaceImage {
        var image = self
        image.set32(Self.extended, UInt32(Self.advancedErrorReporting) << 20 | 0x1 << 16 | 0x000B)
        image.set32(Self.advancedErrorReporting, 0x2 << 16 | 0x0001)
        return image
    }

    /// A port that does not report Data Link Layer Link Active (Link Capabilities bit 20 clear).
    public func withoutLinkActiveReporting() -> ConfigSpaceImage {
        var image = self
        image.set32(Self.express + 0x0C, 0x3F03)
        return image
    }

    /// A root port (type-1 header) with SERR# and fatal error reporting on.
    public static func rootPort() -> ConfigSpaceImage {
        var image = ConfigSpaceImage(vendor: 0x8086, device: 0x1901, headerType: 0x01)
        image.set16(0x3E, 0x0003)            // bridge control: parity + SERR# enable
        return image
    }

    public static func endpoint(vendor: UInt16 = 0x10EE, device: UInt16 = 0x903F) -> ConfigSpaceImage {
        ConfigSpaceImage(vendor: vendor, device: device, headerType: 0x80)
    }

    public mutating func capability(at offset: Int, id: UInt8, next: Int) {
        bytes[offset] = id
        bytes[offset + 1] = UInt8(next)
    }

    public mutating func set16(_ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value & 0xFF)
        bytes[offset + 1] = UInt8(value >> 8)
    }

    public mutating func set32(_ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    public func get16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
}
