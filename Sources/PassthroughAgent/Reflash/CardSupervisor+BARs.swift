import Logging
import PassthroughCore
import PassthroughSysfs
import PassthroughSystemd

/// The BAR check after every re-enumeration of a card, whoever caused it (the agent's own recovery or
/// `--finish`, or the kernel's hotplug after the FPGA came back): its BARs must all have an address before
/// it goes to vfio-pci.
///
/// A BAR the kernel could not place is escalated once per layout of unplaced BARs: the card's functions and
/// its upstream port are removed and the port's parent rescanned, so the kernel sizes the port's windows
/// anew (a rescan below the port only places BARs in the windows the port already has). Only when nothing
/// but the card is below the port and no guest or process holds any of its functions. What was done is
/// persisted before it is done, so neither a restart nor a second event does it again.
extension CardSupervisor {
    // MARK: BARs

    /// The BARs of the card's functions. A BAR whose `resource` line the kernel zeroed (failed, or simply not
    /// implemented: only sizing tells) is sized in config space once per appearance, and only on a function
    /// about to be taken from its host driver for vfio-pci: never one already on vfio-pci (a guest may hold
    /// it), never one staying on the host, never in a dry run. Sizing turns the function's decoding off for a
    /// moment, so under a driver only a register that reads non-zero is sized: that BAR is implemented and the
    /// kernel failed to place it, so the card is leaving that driver anyway. A healthy card's unimplemented
    /// BARs read zero and are never written to. (A 32-bit BAR the kernel could not place whose register reads
    /// zero is then found only on a function without a driver.)
    func readBARs(of card: CardConfig, _ observed: ObservedCard) -> [PCIBar] {
        let functions = observed.resolution.functions
        let boundForVFIO = switch Placement(card: card, guest: observed.guest) {
        case .inGuest, .vfioIdle: true
        case .host, .unchanged, .heldByCrashedGuest: false
        }
        let reader = host.reader
        var bars: [PCIBar] = []
        for function in functions {
            let address = function.address
            let found = try? reader.bars(of: address) { config, register in
                if let known = states[card.name]?.sizedBARs[address]?[register.index] { return known }
                guard boundForVFIO, !options.dryRun, function.driver != .vfioPCI,
                      register.readsNonZero || function.driver == .unbound else { return nil }
                guard let size = try? config.size(of: register) else { return nil }
                states[card.name]?.sizedBARs[address, default: [:]][register.index] = size
                return size
            }
            bars += found ?? []
        }
        return bars
    }

    /// Removes the card's functions and its port and rescans the port's parent, when the safety rules allow;
    /// either way the attempt is persisted first, so it is made once for this layout of unplaced BARs.
    func reassignBARs(of card: CardConfig, _ observed: ObservedCard, below port: PCIAddress) async {
        let functions = Set(observed.resolution.functions.map(\.address))
        guard let slot = functions.min()?.slot else { return }
        let layout = observed.bars.unassignedLayout
        let fields = Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(slot)"]) { $1 }
        let procedure = RecoveryProcedure(reader: host.reader, clock: options.recoveryClock, pacing: options.recoveryPacing,
                                          logger: logger, blocking: reflashBlocking)
        let target = RecoveryTarget(card: card, slot: slot, upstreamPort: port, functions: functions)
        let refusal = await reassignmentRefusal(procedure, target)
        // A loss or a reflash request may have taken the card over while the holders were asked: it is theirs.
        guard states[card.name]?.reflash.state.excludesReconcile != true else { return }
        if let refusal {
            remember(BARReassignment(layout: layout, outcome: .refused, detail: refusal), of: card.name)
            return
        }
        // On disk before anything is removed: a crash mid-way must not make the next start try again.
        remember(BARReassignment(layout: layout, outcome: .reenumerated), of: card.name)
        logger.notice("\(card.name): \(observed.bars.summary); removing it and \(port), rescanning above \(port) so the kernel sizes the port's windows anew",
                      metadata: fields)
        states[card.name]?.reenumerated()
        do {
            try await procedure.reenumerateFromParent(of: target)
        } catch {
            tell(.stepFailed(action: "reassign-bars"))
            logger.announce(.stepFailed, "\(card.name): re-enumerating it from above \(port) failed: \(error)", level: .error,
                            card: card.name, fields.merging([LogMetadataKey.step: "reassign-bars"]) { $1 })
        }
    }

    /// Why the card may not be re-enumerated from above its port, or `nil` when it may.
    private func reassignmentRefusal(_ procedure: RecoveryProcedure, _ target: RecoveryTarget) async -> String? {
        do {
            let strangers = try procedure.strangers(for: target)
            if !strangers.isEmpty {
                return "\(strangers.map(\.description).joined(separator: ", ")) \(strangers.count == 1 ? "is" : "are") below \(target.upstreamPort) too, and would go with it"
            }
        } catch {
            return "cannot read what is below \(target.upstreamPort) (\(error))"
        }
        switch await HolderCheck(hypervisor: hypervisor, host: host).holders(of: target.functions) {
        case .free: return nil
        case .held(let holders): return HolderVerdict.held(holders).description
        case .unknown(let why): return "cannot tell who holds it (\(why))"
        }
    }

    /// After a pass that changed nothing: a card left alone with unplaced BARs is said once per layout (with
    /// the fix); one whose BARs are all placed forgets what was tried, so a later bitstream gets its own try.
    func settleBARs(of card: CardConfig, _ observed: ObservedCard) {
        guard observed.resolution.isPresent, let facts = states[card.name]?.facts else { return }
        let bars = observed.bars
        guard case .leftAlone(let why)? = Reconciler.barCheck(observed) else {
            if bars.unassigned.isEmpty, facts.barReassignment != nil { remember(nil, of: card.name) }
            return
        }
        var tried = facts.barReassignment.flatMap { $0.layout == bars.unassignedLayout ? $0 : nil }
            ?? BARReassignment(layout: bars.unassignedLayout, outcome: .refused, detail: why)
        guard !tried.notified else { return }
        let slot = observed.resolution.functions.first.map { "\($0.address.slot)" } ?? "-"
        logger.announce(.barsUnassigned,
                        "\(card.name): \(bars.summary): not bound to vfio-pci nor attached to \(card.guest); \(why). Fix: \(bars.fix)",
                        level: .error, card: card.name,
                        Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(slot)"]) { $1 })
        tried.notified = true
        remember(tried, of: card.name)
    }

    private func remember(_ tried: BARReassignment?, of card: CardName) {
        states[card]?.facts.barReassignment = tried
        saveFacts(of: card)
    }

    func saveFacts(of card: CardName) {
        guard !options.dryRun, let facts = states[card]?.facts else { return }
        do {
            try options.facts.save(facts, of: card)
        } catch {
            logger.error("\(card): cannot record what was learnt about it in \(options.facts.directory): \(error); a restart forgets it")
        }
    }
}

extension RecoveryProcedure {
    /// The BAR check's escalation: the card's functions, then its upstream port, leave the bus, and the
    /// port's parent is rescanned: `/sys/bus/pci/rescan` for a root port (its parent is the host bridge),
    /// the parent bridge's `rescan` otherwise. The kernel then sizes the port's windows for what it finds
    /// (litepcie #36). The caller has checked that nothing else is below the port and nobody holds the card.
    func reenumerateFromParent(of target: RecoveryTarget) async throws(SysfsError) {
        let reader = reader
        let layout = reader.layout
        try await blocking.run { () throws(SysfsError) in
            // Where to rescan is read before the port is gone and sysfs no longer says.
            let parent = try reader.upstreamPort(of: target.upstreamPort)
            do throws(SysfsError) {
                try removeFunctionsInPlace(target.functions)
                try removeFunctionsInPlace([target.upstreamPort])
                try reader.io.write("1", to: parent.map { layout.attribute("rescan", of: $0) } ?? layout.rescan)
            } catch {
                // Whatever was removed comes back: a card and its port are never left off the bus.
                try? reader.io.write("1", to: layout.rescan)
                throw error
            }
        }
    }
}
