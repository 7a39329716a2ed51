// The hypervisor seam: what the daemon asks of libvirt, what libvirt tells it, and the session and connector
// seams reconnecting is tested through.

import PassthroughCore

/// The hypervisor seam: everything the daemon asks of libvirt, so its logic can be tested with a fake.
///
/// Errors are `LibvirtError` for failures libvirt reported, `DomainXMLError` for live XML that could not be read.
public protocol Hypervisor: Sendable {
    /// The guest's current state; `.absent` when no such domain is defined.
    func guestState(_ guest: GuestName) async throws -> GuestState

    /// The PCI host devices in the guest's live definition, in document order; `isNoDomain` if it is undefined.
    func hostdevs(of guest: GuestName) async throws -> [Hostdev]

    /// Every domain with a QEMU process whose live definition lists one of `functions`, with the ones it lists
    /// (sorted). Any domain, not only the guests of the configuration: whoever holds a function, the host must
    /// not take it away. Crashed domains count: with `on_crash=preserve` their QEMU lives on, holding the card.
    func guestsHolding(_ functions: Set<PCIAddress>) async throws -> [GuestName: [PCIAddress]]

    /// Hot-plugs the host function into the running guest (`managed='no'`: the caller has bound it to vfio-pci).
    func attach(_ address: PCIAddress, to guest: GuestName) async throws

    /// Asks the running guest to release the host function.
    ///
    /// Returning only means the request was accepted: the guest may still refuse or ignore it. Completion is the
    /// `.deviceRemoved` event (or the address missing from `hostdevs(of:)`); refusal is `.deviceRemovalFailed`.
    func detach(_ address: PCIAddress, from guest: GuestName) async throws

    /// The guest request channel in the guest's live definition (what its QEMU has now).
    func requestChannel(of guest: GuestName) async throws -> GuestRequestChannel

    /// Hot-adds the guest request channel to the running guest's live definition, never to its persistent one:
    /// the host owner's configuration is theirs, and the channel goes when the guest stops. A guest without a
    /// virtio-serial controller fails with ``GuestRequestChannelError``, which says what to add.
    func addRequestChannel(to guest: GuestName) async throws
}

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

/// What an open session reports to its supervisor, straight from libvirt's callbacks.
public enum SessionSignal: Hashable, Sendable {
    case event(HypervisorEvent)
    /// The connection dropped (libvirtd restarted, keepalive timed out, I/O error).
    case closed(reason: String)
}

/// One open connection to the hypervisor.
public protocol HypervisorSession: Hypervisor {
    /// Registers every domain event callback; called once per session, after connecting.
    func registerEventCallbacks() async throws
    /// Deregisters the callbacks and closes the connection. Signals may still arrive briefly afterwards.
    func close() async
}

/// Opens sessions: the seam that lets reconnect logic be tested without libvirt.
public protocol HypervisorConnector: Sendable {
    /// Opens a session whose callbacks yield into `signals`, including its own `.closed`.
    func connect(signals: AsyncStream<SessionSignal>.Continuation) async throws -> any HypervisorSession
}
