import PassthroughCore

/// What the supervisor tells whoever keeps figures about it (the metrics file, README "Metrics"): where each
/// card is, and the events worth counting. The supervisor only states them; a sink decides what to keep.
package enum AgentFact: Hashable, Sendable {
    /// A card as it stands now; sent whenever it may have changed (a sink drops repeats).
    case card(CardReport)
    /// A card left the configuration: its series go.
    case cardForgotten(CardName)
    /// A card that left the bus for a reflash is back, or will not be.
    case reflashEnded(CardName, ReflashKind, EndResult)
    /// A card that fell off the link was recovered, or not.
    case recoveryEnded(CardName, LossCause, EndResult)
    /// From the card's functions reappearing after it left the bus to its hostdev in the guest's live XML.
    case reattached(CardName, after: Duration)
    /// A plan step whose effect did not show (README, "How the daemon works"), by ``PlanStep/actionName``.
    case stepFailed(action: String)
    case libvirtConnected(Bool)
    /// udev lost events (a receive-buffer overflow) and every card is read again.
    case udevResync
}

/// A card as a metrics reader sees it.
package struct CardReport: Hashable, Sendable {
    package var card: CardName
    package var guest: GuestName
    /// `nil`: in none of the six places (starting, absent, moving, retrying, hands off, …).
    package var placement: CardPlacement?
    /// A function of the card is in its guest's live XML.
    package var attached: Bool
    /// Its guest is running or paused.
    package var guestRunning: Bool
    /// The slot it is (or was last) in.
    package var slot: PCISlot?
    /// The ID of its first function when last on the bus.
    package var id: PCIID?
    /// The link it trained to when it last appeared; `nil` while it is off the bus or the kernel does not say.
    package var link: PCILinkState?
}

/// How a reflash began: `reflash --prepare` (from the host or the guest), or the card left the bus by itself
/// (a hotplug slot dropping it while a JTAG programmer loads a bitstream) and came back.
package enum ReflashKind: String, CaseIterable, Hashable, Sendable {
    case announced
    case unannounced
}

/// What made the agent recover a card: the kernel's AER report, a `link-watch` probe reading all-ones, or a
/// recovery a previous run of the agent left half-done (its cause was not kept).
package enum LossCause: String, CaseIterable, Hashable, Sendable {
    case aer
    case linkWatch = "link_watch"
    case resumed
}

/// How a reflash's bring-back or a recovery ended: ``RecoveryOutcome``'s cases.
package enum EndResult: String, CaseIterable, Hashable, Sendable {
    /// The card's functions are on the bus again.
    case recovered
    /// It did not come back within its `recovery-timeout`.
    case gaveUp = "gave_up"
    /// A step failed (removal refused, bus unreadable, reset refused).
    case failed
    /// The request's client hung up, or the agent stopped (a recovery then resumes at the next start).
    case cancelled

    init(_ outcome: RecoveryOutcome) {
        self = switch outcome {
        case .recovered: .recovered
        case .gaveUp: .gaveUp
        case .failed: .failed
        case .cancelled: .cancelled
        }
    }
}

/// Takes the supervisor's facts; called on the supervisor's actor, so it must not block.
package protocol AgentFactSink: Sendable {
    func record(_ fact: AgentFact)
}
