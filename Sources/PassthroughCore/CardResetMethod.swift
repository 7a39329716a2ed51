/// How the card is brought back after it left the link (`reset` in the config).
public enum CardResetMethod: String, Hashable, Sendable, CaseIterable {
    /// Wait for the link to come back by itself (JTAG reprogramming retrains it).
    case none
    /// Pulse Secondary Bus Reset on the upstream bridge, as Corundum's `pcie_hot_reset.sh`.
    case secondaryBus = "secondary-bus"
}
