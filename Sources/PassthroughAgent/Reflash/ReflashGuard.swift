import Logging
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// Keeps a reflash from taking the host down: while engaged, the card's upstream port has SERR#
/// Enable (Command bit 8) and Fatal Error Reporting Enable (Device Control bit 2) cleared, so
/// the Surprise Down of a JTAG reload is not escalated to a fatal system error, as Corundum's
/// `pcie_disable_fatal_err.sh` does by hand.
///
/// The original values are persisted *before* anything is cleared and removed only after they
/// are restored, so a crash never loses them: ``restoreAll()`` at agent start puts back whatever
/// a killed agent left behind.
public struct ReflashGuard: Sendable {
    /// The bits the guard clears, in the order it clears them.
    public static let guardedBits: [ConfigSpaceBit] = [.serrEnable, .fatalErrorReporting]

    public let layout: SysfsLayout
    public let io: any SysfsIO
    public let store: GuardStateStore
    public let logger: Logger

    public init(layout: SysfsLayout, io: any SysfsIO = LinuxSysfsIO(), store: GuardStateStore = GuardStateStore(), logger: Logger) {
        self.layout = layout
        self.io = io
        self.store = store
        self.logger = logger
    }

    /// Clears the guarded bits on `port`. Idempotent: when a record already exists (engaged
    /// twice, or left by a crash) its original values are kept, never overwritten by ours.
    @discardableResult
    public func engage(port: PCIAddress) throws(ReflashGuardError) -> GuardRecord {
        let space = configSpace(port)
        let record: GuardRecord
        if let saved = try load(port) {
            record = saved
        } else {
            do {
                record = GuardRecord(port: port, command: try space.command(), deviceControl: try space.deviceControl())
            } catch {
                throw .configSpace(error)
            }
            do { try store.save(record) } catch { throw .state(error) }
        }
        for bit in Self.guardedBits {
            do {
                try space.set(bit, to: false)
            } catch {
                logger.error("reflash guard: clearing failed, restoring", metadata: metadata(port, ["bit": "\(bit)", "error": "\(error)"]))
                // Best effort: the record stays if this fails too, so restoreAll() retries.
                _ = try? release(port: port)
                throw .configSpace(error)
            }
        }
        logger.notice("reflash guard engaged: fatal error escalation masked on the upstream port", metadata: metadata(port, [
            "command-was": "\(hex(record.command))", "device-control-was": "\(hex(record.deviceControl))",
        ]))
        return record
    }

    /// Puts the guarded bits back as recorded, then forgets the record.
    ///
    /// - Returns: `false` when the guard was not engaged on `port` (nothing to do).
    @discardableResult
    public func release(port: PCIAddress) throws(ReflashGuardError) -> Bool {
        guard let record = try load(port) else { return false }
        let space = configSpace(port)
        for bit in Self.guardedBits {
            do {
                try space.set(bit, to: record.wasSet(bit))
            } catch {
                logger.error("reflash guard: restoring failed, the record is kept", metadata: metadata(port, [
                    "bit": "\(bit)", "error": "\(error)", "state": "\(store.path(of: port))",
                ]))
                throw .configSpace(error)
            }
        }
        do { try store.remove(port) } catch { throw .state(error) }
        logger.notice("reflash guard released: error reporting restored on the upstream port", metadata: metadata(port, [:]))
        return true
    }

    /// Whether a record for `port` exists (the guard is engaged, or was when the agent died).
    public func isEngaged(port: PCIAddress) throws(ReflashGuardError) -> Bool {
        try load(port) != nil
    }

    /// Releases every port a record exists for. Run at agent start: a record here means a
    /// previous agent was killed with the guard engaged.
    public func restoreAll() -> [(port: PCIAddress, result: Result<Void, ReflashGuardError>)] {
        let ports: [PCIAddress]
        do {
            ports = try store.ports()
        } catch {
            logger.critical("reflash guard: cannot list saved state", metadata: ["error": "\(error)"])
            return []
        }
        return ports.map { port in
            do throws(ReflashGuardError) {
                try release(port: port)
                logger.warning("reflash guard: restored state left by a previous run", metadata: metadata(port, [:]))
                return (port, .success(()))
            } catch {
                logger.critical("reflash guard: cannot restore state left by a previous run", metadata: metadata(port, ["error": "\(error)"]))
                return (port, .failure(error))
            }
        }
    }

    private func configSpace(_ port: PCIAddress) -> ConfigSpace {
        ConfigSpace(address: port, layout: layout, io: io)
    }

    private func load(_ port: PCIAddress) throws(ReflashGuardError) -> GuardRecord? {
        do { return try store.load(port) } catch { throw .state(error) }
    }

    private func metadata(_ port: PCIAddress, _ extra: Logger.Metadata) -> Logger.Metadata {
        extra.merging(["pci-port": "\(port)"]) { $1 }
    }

    private func hex(_ value: UInt16) -> String { "0x" + String(value, radix: 16) }
}
