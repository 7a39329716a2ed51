import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd

/// The mechanics of taking a card off the bus and bringing it back around a reflash: detach from
/// the guest, guard the upstream port, remove, wait for the link, rescan, unguard. Policy (when,
/// and what to tell) stays with the supervisor.
struct ReflashCoordinator: Sendable {
    let host: HostEnvironment
    let hypervisor: any Hypervisor
    let logger: Logger
    let guardStore: GuardStateStore
    let clock: any WaitClock
    let pacing: RecoveryPacing
    let detachTimeout: Duration
    /// Runs the removal and rescans, which wait for drivers.
    let blocking: BlockingCalls

    /// Where a card sits: the slot and the port above it (gone from sysfs once the card is removed).
    struct Location: Hashable, Sendable {
        var slot: PCISlot
        var upstreamPort: PCIAddress
        /// The functions last seen in the slot: what the guest may hold.
        var functions: Set<PCIAddress>
    }

    private var procedure: RecoveryProcedure {
        RecoveryProcedure(reader: host.reader, clock: clock, pacing: pacing, logger: logger, blocking: blocking)
    }

    private var reflashGuard: ReflashGuard {
        ReflashGuard(layout: host.sysfs, io: host.io, store: guardStore, logger: logger)
    }

    /// Removes the card from its guest first, so QEMU lets go before the host pulls the device.
    /// A guest that does not release it in time is logged; the host-side removal makes QEMU unplug it.
    func detachFromGuest(_ card: CardConfig, _ functions: Set<PCIAddress>) async {
        guard let state = try? await hypervisor.guestState(card.guest), state.isActive,
              let live = try? await hypervisor.hostdevs(of: card.guest)
        else { return }
        let executor = StepExecutor(
            binder: DriverBinder(config: AgentConfig(cards: [card]), reader: host.reader, logger: logger),
            blocking: blocking,
            hypervisor: hypervisor, logger: logger, settleTimeout: detachTimeout
        )
        for address in live.map(\.address) where functions.contains(address) {
            do {
                try await executor.run(PlanStep(card: card.name, action: .detach(address, from: card.guest), reason: "reflash"), card: card)
            } catch {
                logger.warning("\(card.name): \(card.guest) did not release \(address) (\(error)); removing it anyway",
                               metadata: [LogMetadataKey.card: "\(card.name)"])
            }
        }
    }

    func engageGuard(_ card: CardConfig, at location: Location) {
        guard card.reflashGuard else { return }
        do {
            _ = try reflashGuard.engage(port: location.upstreamPort)
            logger.notice("\(card.name): fatal-error reporting masked on \(location.upstreamPort) for the reflash",
                          metadata: [LogMetadataKey.card: "\(card.name)", LogMetadataKey.pciSlot: "\(location.upstreamPort)"])
        } catch {
            logger.error("\(card.name): cannot guard \(location.upstreamPort): \(error)", metadata: [LogMetadataKey.card: "\(card.name)"])
        }
    }

    func releaseGuard(_ card: CardConfig, at location: Location) {
        guard card.reflashGuard else { return }
        do {
            if try reflashGuard.release(port: location.upstreamPort) {
                logger.notice("\(card.name): error reporting restored on \(location.upstreamPort)",
                              metadata: [LogMetadataKey.card: "\(card.name)"])
            }
        } catch {
            logger.error("\(card.name): cannot restore \(location.upstreamPort): \(error); it is retried at the next start",
                         metadata: [LogMetadataKey.card: "\(card.name)"])
        }
    }

    /// Puts back any port a previous run guarded and never released (a crash, a kill -9).
    func restoreLeftoverGuards() {
        for (port, result) in reflashGuard.restoreAll() {
            switch result {
            case .success: logger.notice("restored error reporting on \(port), left masked by a previous run")
            case .failure(let error): logger.error("cannot restore error reporting on \(port): \(error)")
            }
        }
    }

    func recover(_ card: CardConfig, at location: Location) async -> RecoveryOutcome {
        await detachFromGuest(card, location.functions)
        engageGuard(card, at: location)
        let outcome = await procedure.recover(RecoveryTarget(card: card, slot: location.slot, upstreamPort: location.upstreamPort))
        releaseGuard(card, at: location)
        return outcome
    }

    func takeOff(_ card: CardConfig, at location: Location) async throws(SysfsError) {
        await detachFromGuest(card, location.functions)
        engageGuard(card, at: location)
        do {
            try await procedure.remove(location.slot)
        } catch {
            releaseGuard(card, at: location)
            throw error
        }
    }

    func bringBack(_ card: CardConfig, at location: Location) async -> RecoveryOutcome {
        let outcome = await procedure.bringBack(RecoveryTarget(card: card, slot: location.slot, upstreamPort: location.upstreamPort))
        releaseGuard(card, at: location)
        return outcome
    }
}
