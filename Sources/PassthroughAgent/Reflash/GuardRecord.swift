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

    /// `key=value` lines, readable by a human looking into the state directory after a crash.
    var fileContents: String {
        "port=\(port)\ncommand=0x\(Self.hex(command))\ndevice-control=0x\(Self.hex(deviceControl))\n"
    }

    init?(fileContents: String) {
        var fields: [Substring: Substring] = [:]
        for line in fileContents.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            fields[parts[0]] = parts[1]
        }
        guard let port = fields["port"].flatMap({ PCIAddress(String($0)) }),
              let command = fields["command"].flatMap(Self.parseHex),
              let deviceControl = fields["device-control"].flatMap(Self.parseHex)
        else { return nil }
        self.init(port: port, command: command, deviceControl: deviceControl)
    }

    private static func hex(_ value: UInt16) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    private static func parseHex(_ text: Substring) -> UInt16? {
        guard text.hasPrefix("0x") else { return nil }
        return UInt16(text.dropFirst(2), radix: 16)
    }
}
