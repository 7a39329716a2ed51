internal import CLibvirt

/// A guest's state as libvirt reports it (`virDomainState`), plus `.absent` for an undefined guest.
public enum GuestState: Hashable, Sendable {
    case absent
    case noState
    case running
    case blocked
    case paused
    case shuttingDown
    case shutOff
    case crashed
    case pmSuspended
    /// A state newer than this code.
    case other(Int32)

    /// Decodes `virDomainGetState`'s state.
    public init(libvirtState state: Int32) {
        switch UInt32(bitPattern: state) {
        case VIR_DOMAIN_NOSTATE.rawValue: self = .noState
        case VIR_DOMAIN_RUNNING.rawValue: self = .running
        case VIR_DOMAIN_BLOCKED.rawValue: self = .blocked
        case VIR_DOMAIN_PAUSED.rawValue: self = .paused
        case VIR_DOMAIN_SHUTDOWN.rawValue: self = .shuttingDown
        case VIR_DOMAIN_SHUTOFF.rawValue: self = .shutOff
        case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_PMSUSPENDED.rawValue: self = .pmSuspended
        default: self = .other(state)
        }
    }

    /// Whether the guest runs (or is paused) with its QEMU answering, so live attach/detach can be attempted.
    public var isActive: Bool {
        switch self {
        case .running, .blocked, .paused, .shuttingDown, .pmSuspended: true
        case .absent, .noState, .shutOff, .crashed, .other: false
        }
    }

    /// Whether a QEMU process may still hold the devices of the guest's live definition, so the host must not
    /// unbind, remove or reset them (the kernel would wait for QEMU, uninterruptibly, holding PCI-wide locks).
    ///
    /// True for every active state and for `.crashed`: libvirt only reports that state while it keeps the
    /// crashed QEMU (`on_crash=preserve`, for a dump), and that QEMU keeps the card. True as well for states
    /// this code cannot read (`.noState`, `.other`): unknown is hands off.
    package var mayHoldDevices: Bool {
        switch self {
        case .running, .blocked, .paused, .shuttingDown, .pmSuspended, .crashed, .noState, .other: true
        case .absent, .shutOff: false
        }
    }
}
