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
