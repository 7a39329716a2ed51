/// What the supervisor remembers about a card that the bus no longer tells, handed to the pure
/// ``Reconciler`` with every observation.
public struct CardHistory: Hashable, Sendable {
    /// The slot the card was last seen in. An `ids`-only card is looked for there only: another card
    /// with the same IDs elsewhere is not it, even while its own is off the bus for a reflash.
    public var lastSlot: PCISlot?
    /// Functions given back to the host since they (re)appeared, a driverless one by asking the kernel
    /// to probe it. With `host-driver = "auto"` a function still driverless after that is where the
    /// kernel wants it (no driver claims its ID) and is left so, instead of being probed on every pass.
    public var probedForHost: Set<PCIAddress>
    /// What was done, once, about BARs that did not fit (see ``BARReassignment``).
    public var barReassignment: BARReassignment?

    public init(lastSlot: PCISlot? = nil, probedForHost: Set<PCIAddress> = [], barReassignment: BARReassignment? = nil) {
        self.lastSlot = lastSlot
        self.probedForHost = probedForHost
        self.barReassignment = barReassignment
    }
}
