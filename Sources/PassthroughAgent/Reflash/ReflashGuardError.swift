import PassthroughCore
import PassthroughSysfs

public enum ReflashGuardError: Error, Hashable, Sendable, CustomStringConvertible {
    case configSpace(ConfigSpaceError)
    case state(ReflashStateError)
    /// The port took the write but the bit reads back as it was: it does not implement it (QEMU's root ports
    /// hard-wire Link Disable to zero, for one). The guard is then not engaged at all.
    case bitIgnored(ConfigSpaceBit, port: PCIAddress)

    public var description: String {
        switch self {
        case .configSpace(let error): "reflash guard: \(error)"
        case .state(let error): "reflash guard: \(error)"
        case .bitIgnored(let bit, let port): "reflash guard: \(port) ignores writes to \(bit) (it does not implement it)"
        }
    }
}
