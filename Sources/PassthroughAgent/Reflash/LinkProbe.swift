import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// What one look at a function's vendor ID says about its link.
package enum LinkProbeResult: Hashable, Sendable, CustomStringConvertible {
    case present(vendorID: UInt16)
    /// The card dropped off the link (being reflashed, or gone).
    case lost(LinkLossEvidence)
    /// The read failed in a way that says nothing about the link (e.g. not root): keep watching,
    /// but do not start a recovery on this.
    case inconclusive(ConfigSpaceError)

    public var isLost: Bool {
        if case .lost = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .present(let vendor): "present (vendor \(Hex.prefixed(vendor, width: 4)))"
        case .lost(let evidence): "lost: \(evidence)"
        case .inconclusive(let error): "unknown: \(error)"
        }
    }
}

public enum LinkLossEvidence: Hashable, Sendable, CustomStringConvertible {
    /// The vendor ID read `0xffff`: a read that nobody completed.
    case allOnes
    /// The kernel failed the read (`EIO`, `ENODEV`): the device is marked disconnected.
    case readFailed(Errno)
    /// The function is no longer in sysfs (pciehp removed it, or someone did).
    case removed

    public var description: String {
        switch self {
        case .allOnes: "vendor ID reads 0xffff"
        case .readFailed(let errno): "config read failed: \(errno)"
        case .removed: "function removed from sysfs"
        }
    }
}

/// The link watch's probe: one 2-byte read of the vendor ID from a function's `config` file.
package struct LinkProbe: Sendable {
    public let layout: SysfsLayout
    public let io: any SysfsIO

    public init(layout: SysfsLayout, io: any SysfsIO = LinuxSysfsIO()) {
        self.layout = layout
        self.io = io
    }

    public func probe(_ address: PCIAddress) -> LinkProbeResult {
        do {
            let vendor = try ConfigSpace(address: address, layout: layout, io: io).vendorID()
            return vendor == 0xFFFF ? .lost(.allOnes) : .present(vendorID: vendor)
        } catch {
            guard let errno = error.errno else { return .inconclusive(error) }
            switch errno {
            case .ioError, .noSuchAddressOrDevice, .operationNotSupportedByDevice: return .lost(.readFailed(errno))
            case .noSuchFileOrDirectory: return .lost(.removed)
            default: return .inconclusive(error)
            }
        }
    }
}
