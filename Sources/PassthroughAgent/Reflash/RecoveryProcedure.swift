import Logging
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// Brings a card back after it left the link (FPGA reflash): remove its functions, wait for the
/// link (or pulse Secondary Bus Reset), rescan below the upstream port, until its functions are
/// back or the timeout passes, as Corundum's `pcie_hot_reset.sh` and AVED's hot reset do.
///
/// Detaching the card from its guest first, and watching it afterwards, are the caller's.
public struct RecoveryProcedure: Sendable {
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
            "passthrough-card": "\(target.card)", "pci-slot": "\(target.slot)", "pci-port": "\(target.upstreamPort)",
        ]
        logger.notice("recovery: removing the card's functions", metadata: metadata)
        do throws(SysfsError) {
            try await removeFunctions(of: target.slot)
        } catch {
            logger.error("recovery: remove failed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            return .failed(.removal(error), lastState: RecoveryState())
        }
        return await bringBack(target, since: start)
    }

    /// The first half of a planned reflash (`reflash --prepare`): every function of the slot leaves the bus.
    public func remove(_ slot: PCISlot) async throws(SysfsError) {
        try await removeFunctions(of: slot)
    }

    /// The second half: wait for the link (or reset the bus), rescan below the port, until the card's
    /// functions are back or the target's timeout has passed since `start` (on this procedure's clock).
    public func bringBack(_ target: RecoveryTarget, since start: Duration? = nil) async -> RecoveryOutcome {
        let start = start ?? clock.now()
        var state = RecoveryState()
        let metadata: Logger.Metadata = [
            "passthrough-card": "\(target.card)", "pci-slot": "\(target.slot)", "pci-port": "\(target.upstreamPort)",
        ]
        let port = ConfigSpace(address: target.upstreamPort, layout: layout, io: io)
        do {
            if target.reset == .secondaryBus {
                state.stage = .resetting
                logger.notice("recovery: secondary bus reset", metadata: metadata)
                if let failure = await pulseSecondaryBusReset(port) {
                    logger.error("recovery: secondary bus reset failed", metadata: metadata.merging(["error": "\(failure)"]) { $1 })
                    return .failed(failure, lastState: state)
                }
                try await clock.sleep(for: pacing.resetSettle)
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
                        try await blocking.run { () throws(SysfsError) in try rescan(below: port) }
                        let functions = try presentFunctions(of: target.slot)
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

    /// `echo 1 > remove` for every function of the slot, highest function first. A function
    /// that vanished on its own meanwhile (pciehp) is not an error.
    private func removeFunctions(of slot: PCISlot) async throws(SysfsError) {
        try await blocking.run { () throws(SysfsError) in try removeFunctionsInPlace(of: slot) }
    }

    private func removeFunctionsInPlace(of slot: PCISlot) throws(SysfsError) {
        for address in try addresses(in: slot).reversed() {
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
