import PassthroughCore
import SystemPackage

/// A config-space access that failed or found something other than a sane PCI Express device.
public enum ConfigSpaceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The `config` file could not be read or written; the errno is in the ``SysfsError``.
    case access(SysfsError)
    /// The kernel returned fewer bytes than asked. Unprivileged readers only get the first
    /// 64 bytes of a device's config space, so this usually means "not root".
    case shortRead(PCIAddress, offset: Int, expected: Int, got: Int)
    /// The vendor ID reads `0xffff`: nothing answers on the link (surprise down, or reflashing).
    case notResponding(PCIAddress)
    /// No PCI Express capability (ID 0x10) in the capability list, or the list is unusable.
    case noExpressCapability(PCIAddress)
    /// Bridge Control exists only in a type-1 (PCI-to-PCI bridge) header.
    case notABridge(PCIAddress, headerType: UInt8)

    public var errno: Errno? {
        if case .access(let error) = self { return error.errno }
        return nil
    }

    public var description: String {
        switch self {
        case .access(let error):
            "\(error)"
        case .shortRead(let address, let offset, let expected, let got):
            "\(address): config space read of \(expected) bytes at \(Hex.prefixed(offset, width: 2)) returned \(got) (only root may read past the first 64 bytes)"
        case .notResponding(let address):
            "\(address): config space reads all-ones: the device does not answer on the link"
        case .noExpressCapability(let address):
            "\(address): no PCI Express capability in config space"
        case .notABridge(let address, let headerType):
            "\(address): header type \(Hex.prefixed(headerType, width: 2)) is not a PCI-to-PCI bridge"
        }
    }
}
