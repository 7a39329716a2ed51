import Logging
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// Keeps a reflash from taking the host down: while engaged, the card's upstream port has SERR#
/// Enable (Command bit 8) and Fatal Error Reporting Enable (Device Control bit 2) cleared, so
/// the Surprise Down of a JTAG reload is not escalated to a fatal system error, as Corundum's
/// `pcie_disable_fatal_err.sh` does by hand.
///
/// Config space only: the caller persists the ``GuardRecord`` that ``read(port:)`` returns (with the
/// card's reflash state) *before* calling ``clear(_:)``, so a crash never loses the original values.
public struct ReflashGuard: Sendable {
    /// The bits the guard clears, in the order it clears them.
    public static let guardedBits: [ConfigSpaceBit] = [.serrEnable, .fatalErrorReporting]

    public let layout: SysfsLayout
    public let io: any SysfsIO
    public let logger: Logger

    public init(layout: SysfsLayout, io: any SysfsIO = LinuxSysfsIO(), logger: Logger) {
        self.layout = layout
        self.io = io
        self.logger = logger
    }

    /// The port's Command and Device Control registers as they are now: what to put back later.
    public func read(port: PCIAddress) throws(ReflashGuardError) -> GuardRecord {
        let space = configSpace(port)
        do {
            return GuardRecord(port: port, command: try space.command(), deviceControl: try space.deviceControl())
        } catch {
            throw .configSpace(error)
        }
    }

    /// Clears the guarded bits. When one cannot be cleared, what was cleared is put back before
    /// throwing: the guard is either wholly engaged or not at all.
    public func clear(_ record: GuardRecord) throws(ReflashGuardError) {
        let space = configSpace(record.port)
        for bit in Self.guardedBits {
            do {
                try space.set(bit, to: false)
            } catch {
                logger.error("reflash guard: clearing failed, restoring", metadata: metadata(record.port, ["bit": "\(bit)", "error": "\(error)"]))
                try? restore(record)
                throw .configSpace(error)
            }
        }
        logger.notice("reflash guard engaged: fatal error escalation masked on the upstream port", metadata: metadata(record.port, [
            "command-was": "\(hex(record.command))", "device-control-was": "\(hex(record.deviceControl))",
        ]))
    }

    /// Puts the guarded bits back as recorded; only those bits are written.
    public func restore(_ record: GuardRecord) throws(ReflashGuardError) {
        let space = configSpace(record.port)
        for bit in Self.guardedBits {
            do {
                try space.set(bit, to: record.wasSet(bit))
            } catch {
                logger.error("reflash guard: restoring failed", metadata: metadata(record.port, ["bit": "\(bit)", "error": "\(error)"]))
                throw .configSpace(error)
            }
        }
        logger.notice("reflash guard released: error reporting restored on the upstream port", metadata: metadata(record.port, [:]))
    }

    private func configSpace(_ port: PCIAddress) -> ConfigSpace {
        ConfigSpace(address: port, layout: layout, io: io)
    }

    private func metadata(_ port: PCIAddress, _ extra: Logger.Metadata) -> Logger.Metadata {
        extra.merging(["pci-port": "\(port)"]) { $1 }
    }

    private func hex(_ value: UInt16) -> String { "0x" + String(value, radix: 16) }
}
