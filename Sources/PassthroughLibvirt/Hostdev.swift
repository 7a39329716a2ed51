import PassthroughCore

/// A PCI host device in a guest's live definition.
public struct Hostdev: Hashable, Sendable {
    /// The host function passed through (`<source><address …/>`), not the guest-side slot.
    public let address: PCIAddress
    /// libvirt's device alias (`hostdev0`, `ua-…`), which device events name; `nil` if libvirt gave none.
    public let alias: String?
    /// Whether libvirt binds and unbinds the host driver itself (`managed='yes'`).
    public let managed: Bool

    public init(address: PCIAddress, alias: String?, managed: Bool) {
        self.address = address
        self.alias = alias
        self.managed = managed
    }
}
