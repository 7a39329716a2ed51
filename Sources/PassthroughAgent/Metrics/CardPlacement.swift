import PassthroughCore

/// Where a card is, in the six words of `passthrough_agent_card_placement{placement=…}`.
package enum CardPlacement: String, CaseIterable, Hashable, Sendable {
    /// On its host driver (or none, `host-driver = "none"`), its guest not running.
    case host
    /// On vfio-pci, attached to nothing (`when-guest-stops = "keep"`, its guest not running).
    case vfioIdle = "vfio_idle"
    /// In its running (or paused) guest.
    case attached
    /// Off the bus for a reflash: being taken off, off, or being brought back.
    case held
    /// Fell off the link and is being recovered.
    case recovering
    /// Its recovery timed out; the agent still watches for it to come back.
    case gaveUp = "gave_up"

    /// The supervisor's state, mapped. A reflash or recovery owns the card first: `takingOff`, `held` and
    /// `bringingBack` are `held`, `recovering` is `recovering`, `gaveUp` is `gave_up`. Otherwise the last
    /// settled placement: `converged(.inGuest)` is `attached`, `.vfioIdle` is `vfio_idle`, `.host` is `host`.
    /// Everything else is none of the six (`nil`): not looked at yet, absent without a reflash, ambiguous, hands
    /// off (a bridge, an unreadable driver), waiting for libvirt, held by a crashed guest, a move in progress,
    /// retrying after a failed step, BARs the kernel could not place. `status` tells those apart.
    package init?(_ state: CardRuntimeState) {
        switch state.reflash.state {
        case .takingOff, .held, .bringingBack: self = .held
        case .recovering: self = .recovering
        case .gaveUp: self = .gaveUp
        case .placed:
            switch state.phase {
            case .converged(.inGuest): self = .attached
            case .converged(.vfioIdle): self = .vfioIdle
            case .converged(.host): self = .host
            case .converged(.unchanged), .converged(.heldByCrashedGuest), .unknown, .absent, .ambiguous, .handsOff, .pending,
                 .retrying, .barsUnassigned:
                return nil
            }
        }
    }
}
