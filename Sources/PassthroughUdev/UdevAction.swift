/// What the kernel says happened to a device (`ACTION=` of a uevent).
public enum UdevAction: Hashable, Sendable, CustomStringConvertible {
    case add
    case remove
    case bind
    case unbind
    case change
    /// `move`, `online`, `offline` or anything a future kernel invents; passed through verbatim.
    case other(String)

    public init(_ rawValue: String) {
        switch rawValue {
        case "add": self = .add
        case "remove": self = .remove
        case "bind": self = .bind
        case "unbind": self = .unbind
        case "change": self = .change
        default: self = .other(rawValue)
        }
    }

    public var description: String {
        switch self {
        case .add: "add"
        case .remove: "remove"
        case .bind: "bind"
        case .unbind: "unbind"
        case .change: "change"
        case .other(let raw): raw
        }
    }
}
