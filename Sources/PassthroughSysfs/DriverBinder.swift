import Logging
import PassthroughCore
import PassthroughSystemd
import SystemPackage

/// Moves a configured card between vfio-pci and its host driver with the kernel's own sequence,
/// checking every step by reading the `driver` link back, and undoing everything on failure.
///
/// Safety is enforced here, not by callers: only functions a configured card claims are touched,
/// and vfio-pci is refused while an IOMMU-group peer is in use by the host.
public struct DriverBinder: Sendable {
    public let config: AgentConfig
    public let reader: PCISysfsReader
    public let logger: Logger

    public init(config: AgentConfig, reader: PCISysfsReader, logger: Logger) {
        self.config = config
        self.reader = reader
        self.logger = logger
    }

    private var layout: SysfsLayout { reader.layout }
    private var io: any SysfsIO { reader.io }

    /// A function's driver before and after a move.
    public struct Move: Hashable, Sendable {
        public var address: PCIAddress
        public var from: DriverName?
        public var to: DriverName?
    }

    /// Moves every function of `card` to `target`. Returns what changed (empty when nothing had to).
    /// `slot`: where the card was when the move was planned; an `ids`-only card is then moved there or
    /// not at all, never a look-alike elsewhere.
    @discardableResult
    public func move(card: CardConfig, to target: BindTarget, in slot: PCISlot? = nil) throws(BindError) -> [Move] {
        guard config.cards.contains(card) else { throw .unknownCard(card.name) }
        let devices: [PCIDeviceSnapshot]
        do {
            devices = try reader.allFunctions(readingOverrideOf: card.matches)
        } catch {
            throw .readFailed(error)
        }
        let resolution = CardResolution(card: card, devices: devices, lastSlot: slot)
        switch resolution.outcome {
        case .absent: throw .cardAbsent(card.name)
        case .ambiguous(let slots): throw .cardAmbiguous(card.name, slots: slots)
        case .present: break
        }
        if let reason = resolution.handsOff { throw .handsOff(card.name, reason) }
        let functions = resolution.functions
        for function in functions where config.card(claiming: function.address, id: function.id) != card {
            throw .notClaimed(function.address)
        }
        if target == .vfio {
            let blocking = GroupInterlock.blockingPeers(of: functions)
            if !blocking.isEmpty {
                logger.warning("refusing vfio-pci: IOMMU group peer in use by the host", metadata: [
                    LogMetadataKey.card: "\(card.name)",
                    "peers": "\(blocking.map { "\($0.address)=\($0.driver)" })",
                ])
                throw .groupInUse(card.name, group: functions.first?.iommuGroup, peers: blocking)
            }
        }
        if let required = target.requiredDriver, !io.exists(layout.driver(required)) {
            throw .driverNotLoaded(required)
        }

        var moved: [(before: PCIDeviceSnapshot, move: Move)] = []
        for function in functions {
            do {
                if let move = try moveFunction(function, to: target, card: card) {
                    moved.append((function, move))
                }
            } catch {
                logger.error("step failed, rolling back", metadata: [
                    LogMetadataKey.card: "\(card.name)", LogMetadataKey.pciSlot: "\(error.address)", "error": "\(error)",
                ])
                var rollbackFailures: [StepFailure] = []
                if let failure = restore(function, after: target) { rollbackFailures.append(failure) }
                for (before, _) in moved.reversed() {
                    if let failure = restore(before, after: target) { rollbackFailures.append(failure) }
                }
                throw .stepFailed(error, rollback: rollbackFailures.isEmpty ? .restored : .failed(rollbackFailures))
            }
        }
        return moved.map(\.move)
    }

    /// One function: override, unbind, probe, each verified. `nil` when its driver did not change.
    private func moveFunction(_ function: PCIDeviceSnapshot, to target: BindTarget, card: CardConfig) throws(StepFailure) -> Move? {
        let address = function.address
        let current = try currentDriver(address, step: "read the driver")
        let overrideNeeded = target.driverOverride
        let overrideStep = "set driver_override to \(overrideNeeded?.rawValue ?? "(none)")"
        if target.isSatisfied(by: current), current != nil || !target.probes {
            // On the right driver; an override left by an interrupted move would send it elsewhere at its next probe.
            guard !target.accepts(override: function.driverOverride) else { return nil }
            try checkIdentity(of: function, before: overrideStep)
            try write(overrideNeeded?.rawValue ?? "\n", to: layout.attribute("driver_override", of: address),
                      address: address, step: overrideStep)
            logger.notice("driver_override \(function.driverOverride?.rawValue ?? "(none)") replaced: its next probe goes to \(target)",
                          metadata: [LogMetadataKey.card: "\(card.name)", LogMetadataKey.pciSlot: "\(address)"])
            return nil
        }
        let metadata: Logger.Metadata = [
            LogMetadataKey.card: "\(card.name)", LogMetadataKey.pciSlot: "\(address)",
            LogMetadataKey.driverFrom: "\(current?.rawValue ?? "none")", LogMetadataKey.driverTo: "\(target)",
        ]
        logger.debug("rebinding", metadata: metadata)

        // Override first (as libvirt does): if anything reprobes the device between our unbind and
        // our probe, the kernel already knows which driver may have it.
        if function.driverOverride != overrideNeeded {
            try checkIdentity(of: function, before: overrideStep)
            try write(overrideNeeded?.rawValue ?? "\n", to: layout.attribute("driver_override", of: address),
                      address: address, step: overrideStep)
        }
        if let current {
            try checkIdentity(of: function, before: "unbind from \(current)")
            try write(address.description, to: layout.driver(current).appending("unbind"),
                      address: address, step: "unbind from \(current)")
            let after = try currentDriver(address, step: "unbind from \(current)")
            if after != nil {
                throw StepFailure(address: address, step: "unbind from \(current)", reason: .verification(expected: "no driver", actual: after))
            }
        }
        var bound: DriverName?
        if target.probes {
            // drivers_probe reports success even when no driver binds: only the link tells.
            try write(address.description, to: layout.driversProbe, address: address, step: "probe for \(target.expectation)")
            bound = try currentDriver(address, step: "probe")
            guard target.isSatisfied(by: bound) else {
                throw StepFailure(address: address, step: "probe", reason: .verification(expected: target.expectation, actual: bound))
            }
        }
        logger.debug("rebound", metadata: metadata.merging([LogMetadataKey.driverTo: "\(bound?.rawValue ?? "none")"]) { $1 })
        return Move(address: address, from: current, to: bound)
    }

    /// The claim was checked on a snapshot, and a reflash re-enumerates a card in milliseconds: the ID is
    /// read again right before a write, and a function that is no longer the one claimed is not touched.
    private func checkIdentity(of function: PCIDeviceSnapshot, before step: String) throws(StepFailure) {
        let now: PCIID?
        do {
            now = try reader.id(of: function.address)
        } catch {
            throw StepFailure(address: function.address, step: step, reason: .sysfs(error))
        }
        guard now == function.id else {
            throw StepFailure(address: function.address, step: step, reason: .identityChanged(expected: function.id, found: now))
        }
    }

    /// Puts a function back on the driver and override it had; the failure, if that fails too.
    private func restore(_ before: PCIDeviceSnapshot, after target: BindTarget) -> StepFailure? {
        let address = before.address
        // Gone from the bus (a reflash, a hot-unplug): no driver to restore, and not driverless either.
        guard io.exists(layout.device(address)) else {
            logger.notice("left the bus during the move; nothing to roll back", metadata: [LogMetadataKey.pciSlot: "\(address)"])
            return nil
        }
        do throws(StepFailure) {
            let overridePath = layout.attribute("driver_override", of: address)
            let now: PCIID?
            do {
                now = try reader.id(of: address)
            } catch {
                throw StepFailure(address: address, step: "read the ID during rollback", reason: .sysfs(error))
            }
            guard let now else {
                logger.notice("left the bus during the move; nothing to roll back", metadata: [LogMetadataKey.pciSlot: "\(address)"])
                return nil
            }
            guard now == before.id else {
                // Another device now (re-enumerated under us): its driver is not ours to restore. Only an
                // override this move wrote is taken back; a new device starts without one.
                if let written = target.driverOverride, (try? reader.driverOverride(of: address)) == written {
                    try write("\n", to: overridePath, address: address, step: "clear driver_override")
                }
                logger.notice("another device is at this address now; its driver is left alone", metadata: [
                    LogMetadataKey.pciSlot: "\(address)", LogMetadataKey.pciID: "\(now)",
                ])
                return nil
            }
            try write(before.driverOverride?.rawValue ?? "\n", to: overridePath, address: address,
                      step: "restore driver_override")
            let previousDriver = before.driver.name
            let current = try currentDriver(address, step: "read the driver")
            if current == previousDriver { return nil }
            if let current {
                try write(address.description, to: layout.driver(current).appending("unbind"),
                          address: address, step: "unbind from \(current) during rollback")
            }
            if let previousDriver {
                try write(address.description, to: layout.driver(previousDriver).appending("bind"),
                          address: address, step: "bind back to \(previousDriver)")
            }
            let restored = try currentDriver(address, step: "verify rollback")
            guard restored == previousDriver else {
                throw StepFailure(address: address, step: "rollback",
                                  reason: .verification(expected: previousDriver.map { "driver \($0)" } ?? "no driver", actual: restored))
            }
            logger.notice("rolled back", metadata: [LogMetadataKey.pciSlot: "\(address)", LogMetadataKey.driverTo: "\(previousDriver?.rawValue ?? "none")"])
            return nil
        } catch {
            if !io.exists(layout.device(address)) {
                logger.notice("left the bus during the rollback; nothing to restore", metadata: [LogMetadataKey.pciSlot: "\(address)"])
                return nil
            }
            logger.critical("rollback failed: the function may be without a driver", metadata: [
                LogMetadataKey.pciSlot: "\(address)", "error": "\(error)",
            ])
            return error
        }
    }

    /// The driver now; one whose name cannot be read stops the move (unknown is hands off).
    private func currentDriver(_ address: PCIAddress, step: String) throws(StepFailure) -> DriverName? {
        let driver: BoundDriver
        do {
            driver = try reader.driver(of: address)
        } catch {
            throw StepFailure(address: address, step: step, reason: .sysfs(error))
        }
        if driver.isUnreadable { throw StepFailure(address: address, step: step, reason: .unreadableDriver(driver)) }
        return driver.name
    }

    private func write(_ value: String, to path: FilePath, address: PCIAddress, step: String) throws(StepFailure) {
        do {
            try io.write(value, to: path)
        } catch {
            throw StepFailure(address: address, step: step, reason: .sysfs(error))
        }
    }
}
