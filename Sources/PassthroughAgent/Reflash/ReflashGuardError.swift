import PassthroughCore
import PassthroughSysfs

public enum ReflashGuardError: Error, Hashable, Sendable, CustomStringConvertible {
    case configSpace(ConfigSpaceError)
    case state(ReflashStateError)

    public var description: String {
        switch self {
        case .configSpace(let error): "reflash guard: \(error)"
        case .state(let error): "reflash guard: \(error)"
        }
    }
}
