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
/// `guard=link-disable` or `guard=while-lent` names a guard other than the mask (`link-disable` adds
/// `guard-link-control`). Only the states a restart resumes have a record; `placed` is the absence of
/// one, unless a `while-lent` guard is held: then `state=lent`, the port and the guard's lines.
struct ReflashRecord: Hashable, Sendable {
    var state: ReflashState
    /// The `while-lent` guard, held across the card's reflashes until it comes home.
    var lentGuard: GuardRecord?

    init?(state: ReflashState, lentGuard: GuardRecord? = nil) {
        switch state {
        case .held, .recovering, .gaveUp: break
        case .placed where lentGuard != nil: break
        case .placed, .takingOff, .bringingBack: return nil
        }
        self.state = state
        self.lentGuard = lentGuard
    }

    var fileContents: String {
        var lines: [String] = []
        switch state {
        case .held: lines.append("state=held")
        case .recovering(_, let generation, _): lines += ["state=recovering", "generation=\(generation)"]
        case .gaveUp: lines.append("state=gave-up")
        case .placed: lines.append("state=lent")
        case .takingOff, .bringingBack: return ""
        }
        if let site = state.site {
            lines += [
                "slot=\(site.slot)", "port=\(site.upstreamPort)",
                "functions=\(site.functions.sorted().map(\.description).joined(separator: ","))",
            ]
        } else if let lentGuard {
            lines.append("port=\(lentGuard.port)")
        }
        // At most one of them: a port has one set of original registers.
        if let record = state.guardRecord ?? lentGuard {
            if record.mode != .mask { lines.append("guard=\(record.mode)") }
            lines += ["guard-command=\(Hex.prefixed(record.command, width: 4))", "guard-device-control=\(Hex.prefixed(record.deviceControl, width: 4))"]
            if let linkControl = record.linkControl { lines.append("guard-link-control=\(Hex.prefixed(linkControl, width: 4))") }
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
        guard let port = fields["port"].flatMap({ PCIAddress(String($0)) }),
              case .some(let record) = Self.guardRecord(fields, port: port)
        else { return nil }
        if fields["state"] == "lent" {
            guard let record, record.isHeldWhileLent, fields["slot"] == nil, fields["functions"] == nil else { return nil }
            state = .placed
            lentGuard = record
            return
        }
        guard let slot = fields["slot"].flatMap({ PCISlot(String($0)) }),
              let functionList = fields["functions"]
        else { return nil }
        let functions = functionList.split(separator: ",").map { PCIAddress(String($0)) }
        guard !functions.contains(nil) else { return nil }
        let site = ReflashSite(slot: slot, upstreamPort: port, functions: Set(functions.compactMap { $0 }))
        // A while-lent guard outlives the reflash; any other belongs to it.
        lentGuard = record?.isHeldWhileLent == true ? record : nil
        let reflashGuard = record?.isHeldWhileLent == true ? nil : record
        switch fields["state"] {
        case "held":
            state = .held(site, guard: reflashGuard)
        case "recovering":
            guard let generation = fields["generation"].flatMap({ Int($0) }) else { return nil }
            state = .recovering(site, generation: generation, guard: reflashGuard)
        case "gave-up" where reflashGuard == nil:
            state = .gaveUp(site)
        default:
            return nil
        }
    }

    /// The guard's lines: `.some(nil)` when there are none, `nil` when they are not what this code writes.
    private static func guardRecord(_ fields: [Substring: Substring], port: PCIAddress) -> GuardRecord?? {
        let keys: [Substring] = ["guard", "guard-command", "guard-device-control", "guard-link-control"]
        guard keys.contains(where: { fields[$0] != nil }) else { return .some(nil) }
        // The mask has no `guard=` line: records written before the other modes existed read the same.
        var mode = ReflashGuardMode.mask
        if let name = fields["guard"] {
            guard let named = ReflashGuardMode(rawValue: String(name)), named == .linkDisable || named == .whileLent else { return nil }
            mode = named
        }
        guard let command = fields["guard-command"].flatMap(parseHex),
              let deviceControl = fields["guard-device-control"].flatMap(parseHex)
        else { return nil }
        let linkControl = fields["guard-link-control"].flatMap(parseHex)
        // Link Control is saved exactly when the link is what the guard changes.
        guard (fields["guard-link-control"] != nil) == (mode == .linkDisable), linkControl != nil || mode != .linkDisable else { return nil }
        return .some(GuardRecord(port: port, command: command, deviceControl: deviceControl, linkControl: linkControl, mode: mode))
    }

    private static func parseHex(_ text: Substring) -> UInt16? {
        guard text.hasPrefix("0x"), text.count == 6 else { return nil }
        return UInt16(text.dropFirst(2), radix: 16)
    }
}
