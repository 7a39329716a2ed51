/// The only config-space bits this agent ever changes, each with the 16-bit register it lives in.
///
/// Writes are limited by construction: ``ConfigSpace/set(_:to:)`` takes one of these, and
/// read-modify-writes its register changing exactly this bit.
public enum ConfigSpaceBit: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Command register bit 8: SERR# Enable. Cleared on the upstream port so a Surprise Down
    /// during reflash does not escalate to a system error (Corundum `pcie_disable_fatal_err.sh`).
    case serrEnable
    /// PCI Express Device Control bit 2: Fatal Error Reporting Enable (same script).
    case fatalErrorReporting
    /// Bridge Control bit 6: Secondary Bus Reset (type-1 headers only).
    case secondaryBusReset
    /// PCI Express Link Control bit 4: Link Disable. Set on the upstream port while the card is off the bus
    /// for a reflash, the link is down by software's will and no Surprise Down is reported (PCIe Base 6.2.x;
    /// tapasco PR #412).
    case linkDisable

    public enum Register: Hashable, Sendable {
        /// Offset 0x04 of every header.
        case command
        /// Offset 0x08 of the PCI Express capability.
        case deviceControl
        /// Offset 0x3E of a type-1 header.
        case bridgeControl
        /// Offset 0x10 of the PCI Express capability.
        case linkControl
    }

    public var register: Register {
        switch self {
        case .serrEnable: .command
        case .fatalErrorReporting: .deviceControl
        case .secondaryBusReset: .bridgeControl
        case .linkDisable: .linkControl
        }
    }

    public var mask: UInt16 {
        switch self {
        case .serrEnable: 0x0100
        case .fatalErrorReporting: 0x0004
        case .secondaryBusReset: 0x0040
        case .linkDisable: 0x0010
        }
    }

    public var description: String {
        switch self {
        case .serrEnable: "SERR# Enable"
        case .fatalErrorReporting: "Fatal Error Reporting Enable"
        case .secondaryBusReset: "Secondary Bus Reset"
        case .linkDisable: "Link Disable"
        }
    }
}
