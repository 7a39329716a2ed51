import PassthroughCore

/// What the supervisor remembers about a card between passes: only what events cannot tell again
/// (presence and IDs for "appeared"/"ID changed", failures for backoff). Placement itself is
/// always re-read.
public struct CardRuntimeState: Hashable, Sendable {
    public enum Phase: Hashable, Sendable {
        /// Not observed yet.
        case unknown
        case absent
        case ambiguous
        case converged(Placement)
        /// On the bus, and left exactly as it is whatever its guest does (a bridge, a driver that cannot be read).
        case handsOff(CardResolution.HandsOff)
        case pending(steps: Int)
        case retrying(attempt: Int, lastError: String)
        /// Present, bound for vfio-pci, but with BARs the kernel could not place: left on whatever driver it
        /// has, neither bound to vfio-pci nor attached, until the person applies `fix`.
        case barsUnassigned(String, why: String, fix: String)
    }

    public var phase: Phase = .unknown
    /// The IDs the card showed when last present.
    public var lastIDs: [PCIID] = []
    /// Functions seen when last present: how a `remove` (which names only an address) finds its card.
    public var lastAddresses: Set<PCIAddress> = []
    public var failures = 0
    public var retryAt: ContinuousClock.Instant?
    /// Where it was when last present; after a removal sysfs no longer says.
    public var site: ReflashSite?
    /// Functions probed for their host driver since the card last appeared (see ``CardHistory``).
    public var probedForHost: Set<PCIAddress> = []
    /// Where it stands around a reflash (persisted while not `placed`).
    public var reflash: ReflashStateMachine
    /// What the BAR check and the link check remember (persisted, see ``CardFactsStore``).
    public var facts: CardFacts
    /// Sizes config space gave for BARs whose `resource` line the kernel zeroed, per function: sized once
    /// per appearance (sizing turns the function's decoding off for a moment), forgotten when it re-enumerates.
    public var sizedBARs: [PCIAddress: [Int: UInt64]] = [:]
    /// The card (re)appeared since its link was last judged.
    public var linkCheckDue = true
    /// The last judgement of its link, for `status`.
    public var link: LinkVerdict?
    /// The link it trained to when it last appeared, as judged in ``link`` (for the metrics).
    public var trainedLink: PCILinkState?
    /// What the last look found on the guest's side: its guest running or not, and a function of the card in
    /// the guest's live XML (for the metrics; placement itself is re-read on every pass).
    public var guestActivity: GuestActivity = .unknown
    public var inLiveXML = false
    /// When its functions came back after it left the bus (a reflash, a recovery, a hot-plug): where the
    /// re-attach the metrics time starts. Cleared once it is attached, or when its guest is not running.
    public var reappearedAt: ContinuousClock.Instant?
    /// It left the bus without a reflash request or a recovery ("vanished"): its return ends an unannounced reflash.
    public var leftUnannounced = false

    public init(reflash: ReflashStateMachine = ReflashStateMachine(), facts: CardFacts = CardFacts()) {
        self.reflash = reflash
        self.facts = facts
        self.site = reflash.state.site
        self.lastAddresses = reflash.state.site?.functions ?? []
    }

    /// What the pure reconciler is told about the card's past.
    public var history: CardHistory {
        CardHistory(lastSlot: site?.slot ?? lastAddresses.min()?.slot, probedForHost: probedForHost,
                    barReassignment: facts.barReassignment)
    }

    /// A new pci_dev for the card (hot-add, rescan, reflash): what was learnt about the old one's BARs and
    /// link no longer holds.
    public mutating func reenumerated() {
        sizedBARs = [:]
        linkCheckDue = true
    }

    /// ``summary(for:)`` in one token, for a guest's `status` (`u200=held`): a script splits on spaces.
    public var statusWord: String {
        switch reflash.state {
        case .takingOff: return "taking-off"
        case .held: return "held"
        case .bringingBack: return "bringing-back"
        case .recovering: return "recovering"
        case .placed, .gaveUp: break
        }
        return switch phase {
        case .unknown: "starting"
        case .absent: "absent"
        case .ambiguous: "ambiguous"
        case .converged(.inGuest): "attached"
        case .converged(.vfioIdle): "idle"
        case .converged(.host): "host"
        case .converged(.unchanged): "waiting"
        case .converged(.heldByCrashedGuest): "crashed-guest"
        case .handsOff: "hands-off"
        case .pending: "moving"
        case .retrying: "retrying"
        case .barsUnassigned: "bars-unassigned"
        }
    }

    /// Where the card stands, and the guard held on its upstream port if one is: what `status` says.
    public func summary(for card: CardConfig) -> String {
        guard let note = guardNote else { return placementSummary(for: card) }
        return "\(placementSummary(for: card)) (\(note))"
    }

    /// The guard held on the upstream port: what a person reading the port's registers would find changed.
    public var guardNote: String? {
        if let lent = reflash.lentGuard { return "fatal-error reporting masked on \(lent.port) while lent" }
        return reflash.state.guardRecord.map { "\(ReflashGuard.engagedText($0.mode)) on \($0.port)" }
    }

    private func placementSummary(for card: CardConfig) -> String {
        switch reflash.state {
        case .takingOff: return "\(card.name): being taken off the bus for a reflash"
        case .held: return "\(card.name): off the bus for a reflash"
        case .bringingBack: return "\(card.name): being brought back after a reflash"
        case .recovering: return "\(card.name): recovering (lost from the link)"
        case .placed, .gaveUp: break
        }
        let linkNote = if case .degraded(let why)? = link { "; link degraded: \(why)" } else { "" }
        return phaseSummary(for: card) + linkNote
    }

    private func phaseSummary(for card: CardConfig) -> String {
        switch phase {
        case .unknown: "\(card.name): starting"
        case .absent: "\(card.name): absent"
        case .ambiguous: "\(card.name): ambiguous, add an address"
        case .converged(.inGuest(let guest)): "\(card.name): attached to \(guest)"
        case .converged(.vfioIdle): "\(card.name): on vfio-pci, \(card.guest) not running"
        case .converged(.host): "\(card.name): on the host"
        case .converged(.unchanged): "\(card.name): waiting for libvirt"
        case .converged(.heldByCrashedGuest(let guest)): "\(card.name): left where it is, \(guest) crashed and still holds it"
        case .handsOff(let reason): "\(card.name): left where it is, \(reason)"
        case .pending(let steps): "\(card.name): \(steps) step(s) pending"
        case .retrying(let attempt, _): "\(card.name): retrying (attempt \(attempt))"
        case .barsUnassigned(let bars, let why, let fix):
            "\(card.name): \(bars); not given to \(card.guest) (\(why)); fix: \(fix)"
        }
    }
}
