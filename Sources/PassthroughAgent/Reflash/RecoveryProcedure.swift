import Logging
import PassthroughCore
import PassthroughSysfs
import PassthroughSystemd
import PassthroughThreads
import SystemPackage

/// Brings a card back after it left the link (FPGA reflash): remove its functions, wait for the
/// link (or pulse Secondary Bus Reset), rescan below the upstream port, until its functions are
/// back or the timeout passes, as Corundum's `pcie_hot_reset.sh` and AVED's hot reset do.
///
/// It touches the card's own functions only: nothing else in the slot is removed, and no Secondary Bus
/// Reset is pulsed while anything is present below the port (the reset reaches all of it). Detaching the
/// card from its guest first, refusing when ``strangers(for:)`` finds someone else's functions, and
/// watching the card afterwards, are the caller's.
package struct RecoveryProcedure: Sendable {
    public let reader: PCISysfsReader
    public let clock: any WaitClock
    public let pacing: RecoveryPacing
    public let logger: Logger
    /// Runs the removal and the rescans, which wait for drivers.
    public let blocking: BlockingCalls

    public init(reader: PCISysfsReader, clock: any WaitClock = ContinuousWaitClock(),
                pacing: RecoveryPacing = RecoveryPacing(), logger: Logger, blocking: BlockingCalls = .inline) {
        self.reader = reader
        self.clock = clock
        self.pacing = pacing
        self.logger = logger
        self.blocking = blocking
    }

    private var layout: SysfsLayout { reader.layout }
    private var io: any SysfsIO { reader.io }

    /// Remove, wait for the link (or reset the bus), rescan: the whole recovery.
    public func recover(_ target: RecoveryTarget) async -> RecoveryOutcome {
        let start = clock.now()
        let metadata: Logger.Metadata = [
            LogMetadataKey.card: "\(target.card)", LogMetadataKey.pciSlot: "\(target.slot)", LogMetadataKey.pciPort: "\(target.upstreamPort)",
        ]
        // A reset refused now refuses before anything is removed, not with the card off the bus.
        if target.reset == .secondaryBus, case .refused(let failure) = busBeforeReset(target) {
            logger.error("recovery: \(failure)", metadata: metadata)
            return .failed(failure, lastState: RecoveryState())
        }
        logger.notice("recovery: removing the card's functions", metadata: metadata)
        do throws(SysfsError) {
            try await removeFunctions(target.functions)
        } catch {
            logger.error("recovery: remove failed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            return .failed(.removal(error), lastState: RecoveryState())
        }
        return await bringBack(target, since: start)
    }

    /// The first half of a planned reflash (`reflash --prepare`): the card's functions leave the bus.
    package func remove(_ target: RecoveryTarget) async throws(SysfsError) {
        try await removeFunctions(target.functions)
    }

    /// Functions present in the target's slot or on its port's secondary bus that are not the card's. A
    /// recovery must not start while there are any: a function left alone in the slot is cut off with the
    /// card's link, and a Secondary Bus Reset resets everything below the port. An unreadable port is an error,
    /// not an empty answer.
    package func strangers(for target: RecoveryTarget) throws(SysfsError) -> [PCIAddress] {
        let present = Set(try addresses(in: target.slot)).union(try functionsBelow(target.upstreamPort))
        return present.subtracting(target.functions).sorted()
    }

    /// The second half: wait for the link (or reset the bus), rescan below the port, until the card's
    /// functions are back or the target's timeout has passed since `start` (on this procedure's clock).
    public func bringBack(_ target: RecoveryTarget, since start: Duration? = nil) async -> RecoveryOutcome {
        let start = start ?? clock.now()
        var state = RecoveryState()
        let metadata: Logger.Metadata = [
            LogMetadataKey.card: "\(target.card)", LogMetadataKey.pciSlot: "\(target.slot)", LogMetadataKey.pciPort: "\(target.upstreamPort)",
        ]
        let port = ConfigSpace(address: target.upstreamPort, layout: layout, io: io)
        // Someone else's function left in the slot is not the card coming back.
        let othersInSlot: Set<PCIAddress>
        do throws(SysfsError) {
            othersInSlot = Set(try addresses(in: target.slot)).subtracting(target.functions)
        } catch {
            return .failed(.busUnreadable(error), lastState: state)
        }
        do {
            if target.reset == .secondaryBus {
                switch busBeforeReset(target) {
                case .refused(let failure):
                    logger.error("recovery: \(failure)", metadata: metadata)
                    return .failed(failure, lastState: state)
                case .cardPresent:
                    // Back already (re-enumerated by the slot's hotplug), or never removed (a `--finish` without
                    // `--prepare`): a reset would only hit the card, perhaps under a running guest.
                    logger.notice("recovery: the card's functions are on the bus; no secondary bus reset", metadata: metadata)
                case .empty:
                    state.stage = .resetting
                    logger.notice("recovery: secondary bus reset", metadata: metadata)
                    if let failure = await pulseSecondaryBusReset(port) {
                        logger.error("recovery: secondary bus reset failed", metadata: metadata.merging(["error": "\(failure)"]) { $1 })
                        return .failed(failure, lastState: state)
                    }
                    try await clock.sleep(for: pacing.resetSettle)
                }
            }

            var delay = pacing.firstPoll
            while true {
                try Task.checkCancellation()
                state.stage = .waitingForLink
                // A port that cannot report the link (nil) is rescanned on every round instead.
                switch Result(catching: { () throws(ConfigSpaceError) in try port.isLinkActive() }) {
                case .success(let active):
                    state.linkActive = active
                case .failure(let error):
                    state.linkActive = nil
                    state.lastError = "\(error)"
                }
                if state.linkActive != false || clock.now() - start >= pacing.linkDownBelievedFor {
                    state.stage = .rescanning
                    state.rescans += 1
                    do throws(SysfsError) {
                        let port = target.upstreamPort
                        // Reading a function's driver_override takes its device lock: off the executor, too.
                        let functions = try await blocking.run { () throws(SysfsError) in
                            try rescan(below: port)
                            return try presentFunctions(of: target.slot)
                        }.filter { !othersInSlot.contains($0.address) }
                        if !functions.isEmpty {
                            logger.notice("recovery: the card is back", metadata: metadata.merging([
                                "functions": "\(functions.map { "\($0.address)=\($0.id)" })",
                                "elapsed": "\(clock.now() - start)",
                            ]) { $1 })
                            return .recovered(functions)
                        }
                    } catch {
                        state.lastError = "\(error)"
                    }
                }
                let elapsed = clock.now() - start
                if elapsed >= target.timeout {
                    logger.error("recovery: giving up, the card did not come back", metadata: metadata.merging([
                        "elapsed": "\(elapsed)", "state": "\(state)",
                    ]) { $1 })
                    return .gaveUp(after: elapsed, lastState: state)
                }
                try await clock.sleep(for: min(delay, target.timeout - elapsed))
                delay = min(delay * 2, pacing.maximumPoll)
            }
        } catch {
            logger.notice("recovery: cancelled", metadata: metadata.merging(["state": "\(state)"]) { $1 })
            return .cancelled(lastState: state)
        }
    }

    /// What a Secondary Bus Reset would reach, judged right before it.
    private enum BusBeforeReset {
        /// Nothing below the port: the reset touches no one.
        case empty
        /// Only the card's own functions: it is on the bus, no reset is needed.
        case cardPresent
        /// Someone else's functions, or an unreadable port: no reset, and no waiting either, since the card
        /// was configured with the reset because it does not come back without one.
        case refused(RecoveryFailure)
    }

    private func busBeforeReset(_ target: RecoveryTarget) -> BusBeforeReset {
        let below: Set<PCIAddress>
        do throws(SysfsError) {
            below = try functionsBelow(target.upstreamPort)
        } catch {
            return .refused(.busUnreadable(error))
        }
        let others = below.subtracting(target.functions)
        if !others.isEmpty { return .refused(.busOccupied(port: target.upstreamPort, functions: others.sorted())) }
        return below.isEmpty ? .empty : .cardPresent
    }

    /// The functions on the port's secondary bus: the PCI devices among the children of its sysfs directory.
    private func functionsBelow(_ port: PCIAddress) throws(SysfsError) -> Set<PCIAddress> {
        Set(try io.list(layout.device(port)).compactMap(PCIAddress.init))
    }

    /// Sets Secondary Bus Reset, holds it, clears it. The clear happens even when the hold is
    /// cancelled: the bus must never be left in reset.
    private func pulseSecondaryBusReset(_ port: ConfigSpace) async -> RecoveryFailure? {
        do throws(ConfigSpaceError) {
            try port.set(.secondaryBusReset, to: true)
        } catch {
            _ = try? port.set(.secondaryBusReset, to: false)
            return .reset(error)
        }
        try? await clock.sleep(for: pacing.resetHold)
        do throws(ConfigSpaceError) {
            try port.set(.secondaryBusReset, to: false)
        } catch {
            return .reset(error)
        }
        return nil
    }

    /// `echo 1 > remove` for each of `functions` on the bus, highest first. A function that vanished on
    /// its own meanwhile (pciehp) is not an error.
    private func removeFunctions(_ functions: Set<PCIAddress>) async throws(SysfsError) {
        try await blocking.run { () throws(SysfsError) in try removeFunctionsInPlace(functions) }
    }

    func removeFunctionsInPlace(_ functions: Set<PCIAddress>) throws(SysfsError) {
        let present = try io.list(layout.pciDevices).compactMap(PCIAddress.init).filter(functions.contains)
        for address in present.sorted().reversed() {
            do {
                try io.write("1", to: layout.attribute("remove", of: address))
            } catch where error.isNotFound {
                continue
            }
        }
    }

    /// The port's own `rescan` (or the older `dev_rescan`); the whole bus when it has neither.
    private func rescan(below port: PCIAddress) throws(SysfsError) {
        let candidates = [layout.attribute("rescan", of: port), layout.attribute("dev_rescan", of: port), layout.rescan]
        let path = candidates.first { io.exists($0) } ?? layout.rescan
        try io.write("1", to: path)
    }

    private func presentFunctions(of slot: PCISlot) throws(SysfsError) -> [PCIDeviceSnapshot] {
        var functions: [PCIDeviceSnapshot] = []
        for address in try addresses(in: slot) {
            if let snapshot = try reader.snapshot(of: address) { functions.append(snapshot) }
        }
        return functions
    }

    private func addresses(in slot: PCISlot) throws(SysfsError) -> [PCIAddress] {
        try io.list(layout.pciDevices).compactMap(PCIAddress.init).filter { $0.slot == slot }.sorted()
    }
}
