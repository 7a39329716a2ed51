/// The kernel's VFIO group-viability rule, applied before we touch anything.
///
/// A group can be opened by a guest only when every member is driverless, on a vfio driver, on
/// `pci-stub`, or a bridge. Binding one function to vfio-pci while a peer is still used by a host
/// driver would leave a card that no guest can open, so we refuse instead. A peer whose driver
/// cannot be read may be a host disk or NIC just as well: it blocks too.
public enum GroupInterlock {
    /// Peers that block handing `functions` to vfio-pci. Functions that move together (a card's
    /// own functions) do not block each other.
    public static func blockingPeers(
        of functions: [PCIDeviceSnapshot]
    ) -> [GroupPeer] {
        let moving = Set(functions.map(\.address))
        var blocking: [PCIAddress: GroupPeer] = [:]
        for function in functions {
            for peer in function.groupPeers where !moving.contains(peer.address) && !peer.isBridge && blocks(peer.driver) {
                blocking[peer.address] = peer
            }
        }
        return blocking.values.sorted { $0.address < $1.address }
    }

    private static func blocks(_ driver: BoundDriver) -> Bool {
        switch driver {
        case .unbound: false
        case .bound(let name): !name.isVFIOCompatible
        case .unreadable: true
        }
    }
}
