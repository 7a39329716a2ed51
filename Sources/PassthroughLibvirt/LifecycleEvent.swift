internal import CLibvirt

/// A domain lifecycle event (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`), with the detail the daemon acts on.
public enum LifecycleEvent: Hashable, Sendable {
    case defined
    case undefined
    case started
    case suspended
    case resumed
    case stopped(StopReason)
    /// The guest began or finished shutting down; `.stopped(.shutdown)` follows once it is off.
    case shutdown
    case pmSuspended
    case crashed
    /// An event type newer than this code; kept rather than dropped.
    case other(event: Int32, detail: Int32)

    /// Why a guest stopped (`virDomainEventStoppedDetailType`).
    public enum StopReason: Hashable, Sendable {
        case shutdown
        case destroyed
        case crashed
        case migrated
        case saved
        case failed
        case fromSnapshot
        case other(Int32)
    }

    /// Decodes libvirt's `(event, detail)` pair.
    public init(event: Int32, detail: Int32) {
        switch event {
        case Self.code(VIR_DOMAIN_EVENT_DEFINED.rawValue): self = .defined
        case Self.code(VIR_DOMAIN_EVENT_UNDEFINED.rawValue): self = .undefined
        case Self.code(VIR_DOMAIN_EVENT_STARTED.rawValue): self = .started
        case Self.code(VIR_DOMAIN_EVENT_SUSPENDED.rawValue): self = .suspended
        case Self.code(VIR_DOMAIN_EVENT_RESUMED.rawValue): self = .resumed
        case Self.code(VIR_DOMAIN_EVENT_STOPPED.rawValue): self = .stopped(StopReason(detail: detail))
        case Self.code(VIR_DOMAIN_EVENT_SHUTDOWN.rawValue): self = .shutdown
        case Self.code(VIR_DOMAIN_EVENT_PMSUSPENDED.rawValue): self = .pmSuspended
        case Self.code(VIR_DOMAIN_EVENT_CRASHED.rawValue): self = .crashed
        default: self = .other(event: event, detail: detail)
        }
    }

    private static func code(_ raw: UInt32) -> Int32 { Int32(bitPattern: raw) }
}

extension LifecycleEvent.StopReason {
    init(detail: Int32) {
        switch UInt32(bitPattern: detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN.rawValue: self = .shutdown
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED.rawValue: self = .destroyed
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_EVENT_STOPPED_MIGRATED.rawValue: self = .migrated
        case VIR_DOMAIN_EVENT_STOPPED_SAVED.rawValue: self = .saved
        case VIR_DOMAIN_EVENT_STOPPED_FAILED.rawValue: self = .failed
        case VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT.rawValue: self = .fromSnapshot
        default: self = .other(detail)
        }
    }
}
