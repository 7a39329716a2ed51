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
