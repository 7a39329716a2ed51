/// A kernel PCI driver name such as `vfio-pci`, `xdma` or `e1000e`.
///
/// It becomes a path component under `/sys/bus/pci/drivers/`, so only the characters drivers
/// use are accepted and never `.`/`..`.
public struct DriverName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 64,
              rawValue.utf8.first != UInt8(ascii: "."),
              rawValue.utf8.allSatisfy(Self.isAllowed)
        else { return nil }
        self.rawValue = rawValue
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }

    public static let vfioPCI = DriverName("vfio-pci")!
    public static let pciStub = DriverName("pci-stub")!

    /// Drivers the kernel lets share an IOMMU group with a device handed to a guest.
    public var isVFIOCompatible: Bool { self == .vfioPCI || self == .pciStub }

    public var description: String { rawValue }

    public static func < (lhs: DriverName, rhs: DriverName) -> Bool { lhs.rawValue < rhs.rawValue }
}
