import PassthroughCore
import PassthroughSysfs

/// What the reflash guard found on an upstream port before changing anything: the whole registers its
/// mode touches, of which only the guarded bits are ever put back. Command and Device Control for the
/// mask (`mask`, `while-lent`); Link Control as well for `link-disable`.
public struct GuardRecord: Hashable, Sendable {
    public var port: PCIAddress
    /// `mask`, `link-disable` or `while-lent`: which bits are guarded, and for how long.
    public var mode: ReflashGuardMode
    public var command: UInt16
    public var deviceControl: UInt16
    /// Read for `link-disable` only; `nil` otherwise (and in records written before it existed).
    public var linkControl: UInt16?

    public init(port: PCIAddress, command: UInt16, deviceControl: UInt16, linkControl: UInt16? = nil,
                mode: ReflashGuardMode = .mask) {
        self.port = port
        self.mode = mode
        self.command = command
        self.deviceControl = deviceControl
        self.linkControl = linkControl
    }

    /// The bits this record's guard changes, in the order it changes them.
    public var guardedBits: [ConfigSpaceBit] {
        mode == .linkDisable ? [.linkDisable] : [.serrEnable, .fatalErrorReporting]
    }

    /// Whether `bit` was set originally.
    public func wasSet(_ bit: ConfigSpaceBit) -> Bool {
        switch bit.register {
        case .command: command & bit.mask != 0
        case .deviceControl: deviceControl & bit.mask != 0
        case .linkControl: (linkControl ?? 0) & bit.mask != 0
        case .bridgeControl: false
        }
    }

    /// Whether the guard stays when a reflash ends: a `while-lent` record is released only when the card
    /// comes home from its guest.
    public var isHeldWhileLent: Bool { mode == .whileLent }

    /// The saved registers as a person would write them back by hand (`setpci`).
    public var savedRegisters: String {
        var text = "Command \(Hex.prefixed(command, width: 4)), Device Control \(Hex.prefixed(deviceControl, width: 4))"
        if let linkControl { text += ", Link Control \(Hex.prefixed(linkControl, width: 4))" }
        return text
    }
}
