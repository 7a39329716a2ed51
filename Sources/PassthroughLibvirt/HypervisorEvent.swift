/// What the hypervisor tells the daemon, in the order it happened.
///
/// Guests are libvirt's own domain names, unvalidated: an event must never be dropped because a name is odd.
public enum HypervisorEvent: Hashable, Sendable {
    case lifecycle(guest: String, LifecycleEvent)
    /// The guest released a device (`alias` as in the live XML, e.g. `hostdev0`): a detach has completed.
    case deviceRemoved(guest: String, alias: String)
    /// The guest refused to release a device, e.g. because it was busy.
    case deviceRemovalFailed(guest: String, alias: String)
    case deviceAdded(guest: String, alias: String)
    /// A connection to libvirt is open and every event callback is registered.
    case connected
    /// libvirt became unreachable; sent once per outage, not once per failed retry.
    case disconnected(reason: String)
    /// Events may have been missed (always follows `.connected`): re-read every guest's state.
    case resync
}

extension HypervisorEvent {
    /// The guest the event is about; `nil` for connection events, which concern every guest.
    public var guest: String? {
        switch self {
        case .lifecycle(let guest, _), .deviceRemoved(let guest, _), .deviceRemovalFailed(let guest, _),
            .deviceAdded(let guest, _):
            guest
        case .connected, .disconnected, .resync:
            nil
        }
    }
}
