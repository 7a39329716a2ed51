import PassthroughCore
import PassthroughSysfs

/// What the recovery procedure works on: a card's own functions, their slot and the bridge above it.
///
/// The upstream port and the functions must be known before the functions are removed: afterwards sysfs no
/// longer shows where they were (``PCISysfsReader/upstreamPort(of:)`` finds it beforehand).
package struct RecoveryTarget: Hashable, Sendable {
    public var card: CardName
    public var slot: PCISlot
    public var upstreamPort: PCIAddress
    /// The card's own functions, as last seen: the only ones removed. Anything else in the slot or below the
    /// port is someone else's (see ``RecoveryProcedure/strangers(for:)``).
    public var functions: Set<PCIAddress>
    public var reset: CardResetMethod
    public var timeout: Duration

    public init(card: CardName, slot: PCISlot, upstreamPort: PCIAddress, functions: Set<PCIAddress>,
                reset: CardResetMethod = .none, timeout: Duration = RecoveryTimeout.default) {
        self.card = card
        self.slot = slot
        self.upstreamPort = upstreamPort
        self.functions = functions
        self.reset = reset
        self.timeout = timeout
    }

    /// The card's own `reset` and `recovery-timeout`.
    package init(card: CardConfig, slot: PCISlot, upstreamPort: PCIAddress, functions: Set<PCIAddress>) {
        self.init(card: card.name, slot: slot, upstreamPort: upstreamPort, functions: functions, reset: card.reset,
                  timeout: card.recoveryTimeout)
    }
}

/// The waits of the procedure. The defaults are Corundum's `pcie_hot_reset.sh` timings for the
/// reset, and a backoff that answers quickly without hammering config space for a minute.
public struct RecoveryPacing: Hashable, Sendable {
    public var firstPoll: Duration
    public var maximumPoll: Duration
    /// How long Secondary Bus Reset is held (the spec's minimum is 1 ms; the scripts use 10).
    public var resetHold: Duration
    /// How long the link is given to train after the reset is released.
    public var resetSettle: Duration
    /// How long a port's "link down" is believed. Some ports advertise Data Link Layer Link Active
    /// reporting and never set the bit (QEMU's root ports under ACPI hotplug do): past this, every round
    /// rescans anyway, which is harmless when nothing answers.
    public var linkDownBelievedFor: Duration

    public init(firstPoll: Duration = .milliseconds(50), maximumPoll: Duration = .seconds(1),
                resetHold: Duration = .milliseconds(10), resetSettle: Duration = .milliseconds(500),
                linkDownBelievedFor: Duration = .seconds(5)) {
        self.firstPoll = firstPoll
        self.maximumPoll = maximumPoll
        self.resetHold = resetHold
        self.resetSettle = resetSettle
        self.linkDownBelievedFor = linkDownBelievedFor
    }
}
