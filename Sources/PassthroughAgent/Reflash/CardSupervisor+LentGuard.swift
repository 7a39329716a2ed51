import Logging
import PassthroughCore
import PassthroughSystemd

/// `reflash-guard = "while-lent"`: the upstream port's fatal-error reporting masked for as long as the
/// card is lent to its running guest, so that a colleague programming the FPGA from inside the VM (with
/// nobody on the host to run `reflash --prepare`) never takes the server down.
///
/// Engaged when a pass leaves the card attached to its running guest, released when one leaves it home
/// (on its host driver, or idle on vfio-pci) or the card stops being `while-lent`; a card that is absent,
/// or whose guest cannot be told, keeps what it has. The original registers are persisted before anything
/// is masked and are never read again while the guard is held: not by a restarted agent, not by the card's
/// reflashes and recoveries (which find the port guarded already). Stopping the agent keeps the guard: the
/// card stays lent, and the mask is what keeps the host safe while no agent watches (and what a restart
/// must find).
extension CardSupervisor {
    /// Called when a pass leaves `card` settled.
    func keepLentGuard(_ card: CardConfig) {
        guard let state = states[card.name] else { return }
        let lent: Bool? = switch state.phase {
        case .converged(.inGuest): true
        case .converged(.host), .converged(.vfioIdle): false
        default: nil
        }
        let action = state.reflash.lending(lent: lent, mode: card.reflashGuard)
        if action == .none { return }
        if options.dryRun {
            logger.debug("\(card.name): dry run: the while-lent guard is left as it is (\(action))", metadata: .card(card))
            return
        }
        switch action {
        case .none:
            return
        case .engage:
            guard let port = state.site?.upstreamPort else { return }
            engageLentGuard(card, on: port)
        case .reassert(let record):
            do throws(ReflashGuardError) {
                if try coordinator.reassert(record) {
                    logger.warning("\(card.name): fatal-error reporting on \(record.port) was on again while the card is lent; masked again",
                                   metadata: .card(card))
                }
            } catch {
                logger.announce(.stepFailed, "\(card.name): cannot keep fatal-error reporting masked on \(record.port) (\(error)); "
                                + "a reprogramming from \(card.guest) may take the host down", level: .error, card: card.name, .card(card))
            }
        case .release(let record):
            // A failure is logged with the registers to write by hand; the record stays, and the next pass tries again.
            guard coordinator.release(record, of: card.name) else { return }
            transition(card.name) { $0.lentGuardReleased() }
            persist(card.name)
            let why = card.reflashGuard == .whileLent ? "it is home from \(card.guest)" : "reflash-guard is no longer \"while-lent\""
            logger.notice("\(card.name): the while-lent guard on \(record.port) is released: \(why)", metadata: .card(card))
        }
    }

    private func engageLentGuard(_ card: CardConfig, on port: PCIAddress) {
        do throws(ReflashGuardError) {
            _ = try coordinator.engageWhileLent(card, port: port) { record throws(ReflashStateError) in
                transition(card.name) { $0.lentGuardSaved(record) }
                try save(card.name)
            }
        } catch {
            // Nothing is masked (the guard puts back what it changed): the record must not claim otherwise.
            transition(card.name) { $0.lentGuardReleased() }
            persist(card.name)
            let hint = if case .configSpace = error { " (kernel lockdown forbids config-space writes: see `passthrough-agent check`)" } else { "" }
            logger.announce(.stepFailed, "\(card.name): cannot mask fatal-error reporting on \(port) while it is lent to \(card.guest): "
                            + "\(error)\(hint); a reprogramming from the guest may take the host down", level: .error, card: card.name, .card(card))
        }
    }
}
