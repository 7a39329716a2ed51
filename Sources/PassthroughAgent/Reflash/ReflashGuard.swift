// The reflash guard on a card's upstream port: what it flips, and the errors it raises.

import Logging
import PassthroughCore
import PassthroughSysfs
import PassthroughSystemd
import SystemPackage

/// Keeps a reflash from taking the host down, on the card's upstream port, in one of two ways:
///
/// - the mask (`mask`, `while-lent`): SERR# Enable (Command bit 8) and Fatal Error Reporting Enable
///   (Device Control bit 2) cleared, so the Surprise Down of a JTAG reload is not escalated to a fatal
///   system error, as Corundum's `pcie_disable_fatal_err.sh` does by hand;
/// - `link-disable`: Link Disable (Link Control bit 4) set, so the link is down by software's will and
///   no Surprise Down happens at all (tapasco PR #412). Only once the card's functions are removed.
///
/// Config space only: the caller persists the ``GuardRecord`` that ``read(port:mode:)`` returns (with the
/// card's reflash state) *before* calling ``engage(_:)``, so a crash never loses the original values.
package struct ReflashGuard: Sendable {
    public let layout: SysfsLayout
    public let io: any SysfsIO
    public let logger: Logger

    public init(layout: SysfsLayout, io: any SysfsIO = LinuxSysfsIO(), logger: Logger) {
        self.layout = layout
        self.io = io
        self.logger = logger
    }

    /// The port's registers as they are now, for `mode`: what to put back later.
    public func read(port: PCIAddress, mode: ReflashGuardMode = .mask) throws(ReflashGuardError) -> GuardRecord {
        let space = configSpace(port)
        do {
            return GuardRecord(port: port, command: try space.command(), deviceControl: try space.deviceControl(),
                               linkControl: mode == .linkDisable ? try space.linkControl() : nil, mode: mode)
        } catch {
            throw .configSpace(error)
        }
    }

    /// Changes the guarded bits (a bit already as guarded is not written). When one cannot be changed, what
    /// was changed is put back before throwing: the guard is either wholly engaged or not at all.
    ///
    /// - Returns: whether anything had to be written; engaging again what is engaged changes nothing.
    @discardableResult
    public func engage(_ record: GuardRecord) throws(ReflashGuardError) -> Bool {
        let space = configSpace(record.port)
        var changed = false
        for bit in record.guardedBits {
            do {
                changed = try space.set(bit, to: Self.guarded(bit)) != Self.guarded(bit) || changed
            } catch {
                logger.error("reflash guard: engaging failed, restoring", metadata: metadata(record.port, ["bit": "\(bit)", "error": "\(error)"]))
                try? restore(record)
                throw .configSpace(error)
            }
        }
        // A bit the port does not implement reads back as it was: a guard that is not there must not be said to be.
        for bit in record.guardedBits where (try? space.isSet(bit)) != Self.guarded(bit) {
            logger.error("reflash guard: the port ignored the write, restoring", metadata: metadata(record.port, ["bit": "\(bit)"]))
            try? restore(record)
            throw .bitIgnored(bit, port: record.port)
        }
        if changed {
            logger.notice("reflash guard engaged: \(Self.engagedText(record.mode)) on the upstream port", metadata: metadata(record.port, [
                "guard": "\(record.mode)", "registers-were": "\(record.savedRegisters)",
            ]))
        }
        return changed
    }

    /// Puts the guarded bits back as recorded; only those bits are written.
    public func restore(_ record: GuardRecord) throws(ReflashGuardError) {
        let space = configSpace(record.port)
        for bit in record.guardedBits {
            do {
                try space.set(bit, to: record.wasSet(bit))
            } catch {
                logger.error("reflash guard: restoring failed", metadata: metadata(record.port, ["bit": "\(bit)", "error": "\(error)"]))
                throw .configSpace(error)
            }
        }
        logger.notice("reflash guard released: \(Self.releasedText(record.mode)) on the upstream port",
                      metadata: metadata(record.port, ["guard": "\(record.mode)"]))
    }

    /// What the guard does to the port, for a log line: "fatal-error reporting masked".
    static func engagedText(_ mode: ReflashGuardMode) -> String {
        mode == .linkDisable ? "link disabled" : "fatal-error reporting masked"
    }

    static func releasedText(_ mode: ReflashGuardMode) -> String {
        mode == .linkDisable ? "link enabled again" : "error reporting restored"
    }

    /// The value a guarded bit has while the guard is engaged.
    private static func guarded(_ bit: ConfigSpaceBit) -> Bool { bit == .linkDisable }

    private func configSpace(_ port: PCIAddress) -> ConfigSpace {
        ConfigSpace(address: port, layout: layout, io: io)
    }

    private func metadata(_ port: PCIAddress, _ extra: Logger.Metadata) -> Logger.Metadata {
        extra.merging([LogMetadataKey.pciPort: "\(port)"]) { $1 }
    }
}

public enum ReflashGuardError: Error, Hashable, Sendable, CustomStringConvertible {
    case configSpace(ConfigSpaceError)
    case state(ReflashStateError)
    /// The port took the write but the bit reads back as it was: it does not implement it (QEMU's root ports
    /// hard-wire Link Disable to zero, for one). The guard is then not engaged at all.
    case bitIgnored(ConfigSpaceBit, port: PCIAddress)

    public var description: String {
        switch self {
        case .configSpace(let error): "reflash guard: \(error)"
        case .state(let error): "reflash guard: \(error)"
        case .bitIgnored(let bit, let port): "reflash guard: \(port) ignores writes to \(bit) (it does not implement it)"
        }
    }
}
