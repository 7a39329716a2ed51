import PassthroughCore
import PassthroughSysfs

/// What the reflash guard found on an upstream port before clearing anything: the whole
/// Command and Device Control registers, of which only the guarded bits are ever put back.
public struct GuardRecord: Hashable, Sendable {
    public var port: PCIAddress
    public var command: UInt16
    public var deviceControl: UInt16

    public init(port: PCIAddress, command: UInt16, deviceControl: UInt16) {
        self.port = port
        self.command = command
        self.deviceControl = deviceControl
    }

    /// Whether `bit` was set originally.
    public func wasSet(_ bit: ConfigSpaceBit) -> Bool {
        switch bit.register {
        case .command: command & bit.mask != 0
        case .deviceControl: deviceControl & bit.mask != 0
        case .bridgeControl: false
        }
    }
}
