/// The `ERROR_EVENT=` property of the `change` uevents that PCIe error recovery (AER/DPC/EEH)
/// sends through `pci_uevent_ers()`.
public enum AERErrorEvent: Hashable, Sendable, CustomStringConvertible {
    /// `BEGIN_RECOVERY`, sent with `DEVICE_ONLINE=0`.
    case beginRecovery
    /// `SUCCESSFUL_RECOVERY`, sent with `DEVICE_ONLINE=1`.
    case successfulRecovery
    /// `FAILED_RECOVERY`, sent with `DEVICE_ONLINE=0`: the device is disconnected.
    case failedRecovery
    /// A value this code does not know; passed through verbatim.
    case other(String)

    public init(_ rawValue: String) {
        switch rawValue {
        case "BEGIN_RECOVERY": self = .beginRecovery
        case "SUCCESSFUL_RECOVERY": self = .successfulRecovery
        case "FAILED_RECOVERY": self = .failedRecovery
        default: self = .other(rawValue)
        }
    }

    public var description: String {
        switch self {
        case .beginRecovery: "BEGIN_RECOVERY"
        case .successfulRecovery: "SUCCESSFUL_RECOVERY"
        case .failedRecovery: "FAILED_RECOVERY"
        case .other(let raw): raw
        }
    }
}
