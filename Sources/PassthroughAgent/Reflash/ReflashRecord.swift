import PassthroughCore
import PassthroughSysfs

/// A card's persisted reflash state as `key=value` lines, readable by a person looking into
/// `/run/passthrough-agent/cards/` after a crash:
///
///     state=held
///     slot=0000:01:00
///     port=0000:00:01.0
///     functions=0000:01:00.0,0000:01:00.1
///     guard-command=0x0507
///     guard-device-control=0x002f
///
/// Only the states a restart resumes have a record; `placed` is the absence of one.
struct ReflashRecord: Hashable, Sendable {
    var state: ReflashState

    init?(state: ReflashState) {
        switch state {
        case .held, .recovering, .gaveUp: self.state = state
        case .placed, .takingOff, .bringingBack: return nil
        }
    }

    var fileContents: String {
        guard let site = state.site else { return "" }
        var lines: [String] = []
        switch state {
        case .held: lines.append("state=held")
        case .recovering(_, let generation, _): lines += ["state=recovering", "generation=\(generation)"]
        case .gaveUp: lines.append("state=gave-up")
        case .placed, .takingOff, .bringingBack: return ""
        }
        lines += [
            "slot=\(site.slot)", "port=\(site.upstreamPort)",
            "functions=\(site.functions.sorted().map(\.description).joined(separator: ","))",
        ]
        if let record = state.guardRecord {
            lines += ["guard-command=0x\(Self.hex(record.command))", "guard-device-control=0x\(Self.hex(record.deviceControl))"]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `nil` for anything this code did not write: such a file is left in place for a person.
    init?(fileContents: String) {
        var fields: [Substring: Substring] = [:]
        for line in fileContents.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, fields.updateValue(parts[1], forKey: parts[0]) == nil else { return nil }
        }
        guard let slot = fields["slot"].flatMap({ PCISlot(String($0)) }),
              let port = fields["port"].flatMap({ PCIAddress(String($0)) }),
              let functionList = fields["functions"]
        else { return nil }
        let functions = functionList.split(separator: ",").map { PCIAddress(String($0)) }
        guard !functions.contains(nil) else { return nil }
        let site = ReflashSite(slot: slot, upstreamPort: port, functions: Set(functions.compactMap { $0 }))
        var record: GuardRecord?
        switch (fields["guard-command"].flatMap(Self.parseHex), fields["guard-device-control"].flatMap(Self.parseHex)) {
        case (let command?, let deviceControl?): record = GuardRecord(port: port, command: command, deviceControl: deviceControl)
        case (nil, nil) where fields["guard-command"] == nil && fields["guard-device-control"] == nil: record = nil
        default: return nil
        }
        switch fields["state"] {
        case "held":
            state = .held(site, guard: record)
        case "recovering":
            guard let generation = fields["generation"].flatMap({ Int($0) }) else { return nil }
            state = .recovering(site, generation: generation, guard: record)
        case "gave-up" where record == nil:
            state = .gaveUp(site)
        default:
            return nil
        }
    }

    private static func hex(_ value: UInt16) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    private static func parseHex(_ text: Substring) -> UInt16? {
        guard text.hasPrefix("0x"), text.count == 6 else { return nil }
        return UInt16(text.dropFirst(2), radix: 16)
    }
}
