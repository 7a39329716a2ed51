import PassthroughCore

/// The supervisor's side of the metrics: it states facts (where each card is, what ended how) to
/// ``CardSupervisor/Options/observer``, and keeps only what a later fact needs (when a card came back, for
/// the re-attach time). What to count, and the file, are the sink's.
extension CardSupervisor {
    func tell(_ fact: AgentFact) {
        options.observer?.record(fact)
    }

    /// The card as it stands now; the sink ignores a report equal to the last one.
    func publish(_ name: CardName) {
        guard let observer = options.observer, let card = config.cards.first(where: { $0.name == name }),
              let state = states[name] else { return }
        let onBus = state.phase != .absent && !state.reflash.state.expectsAbsence
        observer.record(.card(CardReport(
            card: name, guest: card.guest, placement: CardPlacement(state), attached: state.inLiveXML,
            guestRunning: state.guestActivity == .active, slot: state.site?.slot ?? state.lastAddresses.min()?.slot,
            id: state.lastIDs.first, link: onBus ? state.trainedLink : nil
        )))
    }

    /// What this look found on the guest's side: running or not, and the card in its live XML.
    func noteGuestSide(of card: CardConfig, _ observed: ObservedCard) {
        guard var state = states[card.name] else { return }
        state.guestActivity = observed.guest
        let functions = Set(observed.resolution.functions.map(\.address)).union(state.lastAddresses)
        state.inLiveXML = observed.guest == .active && !observed.attached.isDisjoint(with: functions)
        states[card.name] = state
    }

    /// The card's functions are back after it left the bus (a hot-add, a rescan that found them): the re-attach
    /// is timed from the first such sign. A card that never left (an `add` at coldplug) starts no clock.
    func cameBack(_ name: CardName) {
        guard var state = states[name], state.reappearedAt == nil,
              state.phase == .absent || state.reflash.state.expectsAbsence else { return }
        state.reappearedAt = .now
        states[name] = state
    }

    /// Its attach steps ran and the live XML shows them: the re-attach after a return is done.
    func reattached(_ name: CardName) {
        guard let since = states[name]?.reappearedAt else { return }
        states[name]?.reappearedAt = nil
        tell(.reattached(name, after: .now - since))
    }
}
