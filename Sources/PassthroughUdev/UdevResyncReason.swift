import SystemPackage

/// Why the monitor's picture of the PCI bus may have a hole in it.
public enum UdevResyncReason: Hashable, Sendable, CustomStringConvertible {
    /// The netlink socket overflowed (`ENOBUFS`): the kernel dropped uevents.
    case receiveBufferOverflow
    /// Receiving a uevent failed for another reason.
    case receiveFailed(Errno)
    /// A device reached the monitor but could not be decoded.
    case unparsableDevice(UdevParseError)

    public var description: String {
        switch self {
        case .receiveBufferOverflow: "udev receive buffer overflow (ENOBUFS), events were lost"
        case .receiveFailed(let errno): "receiving a uevent failed: \(errno)"
        case .unparsableDevice(let error): "unparsable device: \(error)"
        }
    }
}
