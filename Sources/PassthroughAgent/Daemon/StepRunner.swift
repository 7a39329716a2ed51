import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs
import PassthroughSystemd
import PassthroughThreads

/// Runs one plan step and checks that it took, by reading sysfs or the guest's live XML back.
struct StepRunner: Sendable {
    struct VerificationError: Error, CustomStringConvertible {
        var description: String
    }

    /// Built from the configuration in force: it touches only what a configured card claims.
    let binder: DriverBinder
    /// Where driver moves run: an unbind or a probe blocks for as long as the driver takes.
    let blocking: BlockingCalls
    let guests: GuestMoves
    let logger: Logger

    func run(_ step: PlanStep, card: CardConfig) async throws {
        let started = ContinuousClock.now
        switch step.action {
        case .bindVFIO:
            for move in try await moveDrivers(of: card, to: .vfio, in: step.slot) {
                notifyMove(.cardRebound, "rebound to vfio-pci", move, card: card, since: started)
            }
        case .bindHost(let policy):
            for move in try await moveDrivers(of: card, to: .host(policy), in: step.slot) {
                notifyMove(.cardGivenBack, "given back to \(move.to?.rawValue ?? "no driver")", move, card: card, since: started)
            }
        case .attach(let address, let guest):
            try await guests.attach(address, to: guest, card: card)
        case .detach(let address, let guest):
            try await guests.detach(address, from: guest, card: card)
        case .reassignBARs:
            // Removing a port needs the reflash path's safety checks and worker: the supervisor runs it.
            throw VerificationError(description: "\(step.actionName) is not a driver or guest move")
        }
    }

    private func moveDrivers(of card: CardConfig, to target: BindTarget, in slot: PCISlot?) async throws -> [DriverBinder.Move] {
        let binder = binder
        return try await blocking.run { () throws(BindError) in try binder.move(card: card, to: target, in: slot) }
    }

    private func notifyMove(_ kind: NotificationKind, _ what: String, _ move: DriverBinder.Move, card: CardConfig,
                            since started: ContinuousClock.Instant) {
        logger.announce(kind, "\(card.name): \(move.address) \(what)", card: card.name, [
            LogMetadataKey.pciSlot: "\(move.address)", LogMetadataKey.guest: "\(card.guest)",
            LogMetadataKey.driverFrom: "\(move.from?.rawValue ?? "none")", LogMetadataKey.driverTo: "\(move.to?.rawValue ?? "none")",
            LogMetadataKey.durationMicroseconds: "\(microseconds(since: started))",
        ])
    }
}

/// Attaches and detaches a card's functions, each checked by reading the guest's live XML back: the call
/// returning is not the device being there, and a detach only asks the guest.
struct GuestMoves: Sendable {
    let hypervisor: any Hypervisor
    let logger: Logger
    /// How long the guest's live XML may take to show (or drop) a device after attach (detach).
    let settleTimeout: Duration

    func attach(_ address: PCIAddress, to guest: GuestName, card: CardConfig) async throws {
        let started = ContinuousClock.now
        try await hypervisor.attach(address, to: guest)
        try await waitForLiveXML(guest, toContain: address, present: true)
        announceGuestMove(.cardAttached, "attached to", address, guest, card: card, since: started)
    }

    func detach(_ address: PCIAddress, from guest: GuestName, card: CardConfig) async throws {
        let started = ContinuousClock.now
        try await hypervisor.detach(address, from: guest)
        // Without the guest's cooperation the device stays.
        try await waitForLiveXML(guest, toContain: address, present: false)
        announceGuestMove(.cardDetached, "detached from", address, guest, card: card, since: started)
    }

    private func announceGuestMove(_ kind: NotificationKind, _ what: String, _ address: PCIAddress, _ guest: GuestName,
                                   card: CardConfig, since started: ContinuousClock.Instant) {
        logger.announce(kind, "\(card.name): \(address) \(what) \(guest)", card: card.name, [
            LogMetadataKey.pciSlot: "\(address)", LogMetadataKey.guest: "\(guest)",
            LogMetadataKey.durationMicroseconds: "\(microseconds(since: started))",
        ])
    }

    private func waitForLiveXML(_ guest: GuestName, toContain address: PCIAddress, present: Bool) async throws {
        let deadline = ContinuousClock.now + settleTimeout
        var delay = Duration.milliseconds(20)
        while true {
            let addresses = try await hypervisor.hostdevs(of: guest).map(\.address)
            if addresses.contains(address) == present { return }
            if ContinuousClock.now >= deadline {
                throw StepRunner.VerificationError(description: present
                    ? "\(address) is not in \(guest)'s live XML \(settleTimeout) after the attach"
                    : "\(address) is still in \(guest)'s live XML \(settleTimeout) after the detach (the guest did not release it)")
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .milliseconds(500))
        }
    }

}

private func microseconds(since start: ContinuousClock.Instant) -> Int64 {
    let elapsed = ContinuousClock.now - start
    return elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
}
