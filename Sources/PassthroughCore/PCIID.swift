/// A vendor:device pair, `vvvv:dddd`, printed in lower case.
public struct PCIID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let vendor: UInt16
    public let device: UInt16

    public init(vendor: UInt16, device: UInt16) {
        self.vendor = vendor
        self.device = device
    }

    /// Parses `vvvv:dddd` (hex, either case).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 2,
              let vendor = Hex.fixedWidth(parts[0].utf8, width: 4),
              let device = Hex.fixedWidth(parts[1].utf8, width: 4)
        else { return nil }
        self.init(vendor: UInt16(vendor), device: UInt16(device))
    }

    /// Parses the pair of sysfs attributes `vendor` and `device` (`0x10ee\n`, `0x903f\n`).
    public init?(sysfsVendor: String, sysfsDevice: String) {
        guard let vendor = Hex.sysfsNumber(sysfsVendor), vendor <= 0xffff,
              let device = Hex.sysfsNumber(sysfsDevice), device <= 0xffff
        else { return nil }
        self.init(vendor: UInt16(vendor), device: UInt16(device))
    }

    /// A function that stopped answering reads back all-ones.
    public var isAllOnes: Bool { vendor == 0xffff }

    public var description: String {
        "\(Hex.format(UInt32(vendor), width: 4)):\(Hex.format(UInt32(device), width: 4))"
    }

    public static func < (lhs: PCIID, rhs: PCIID) -> Bool {
        (lhs.vendor, lhs.device) < (rhs.vendor, rhs.device)
    }
}
