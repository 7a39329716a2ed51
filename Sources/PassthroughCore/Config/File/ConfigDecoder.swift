// Decoding the parsed TOML into the config model: every key checked, every mistake placed, misspelt keys
// answered with the closest allowed one.

import PassthroughCore
import TOMLKit

/// Turns a parsed TOML table into the config model, collecting every mistake with its place.
struct ConfigDecoder {
    static let topLevelKeys = ["agent", "card", "libvirt"]
    static let agentKeys = ["metrics-file"]
    static let libvirtKeys = ["uri"]
    static let cardKeys = [
        "address", "guest", "guest-requests", "host-driver", "ids", "link-watch", "name", "recovery-timeout",
        "reflash-guard", "reset", "when-guest-stops",
    ]

    let path: String
    let sourceMap: TOMLSourceMap
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(path: String, sourceMap: TOMLSourceMap) {
        self.path = path
        self.sourceMap = sourceMap
    }

    mutating func decode(_ root: TOMLTable) -> AgentConfig? {
        rejectUnknownKeys(in: root, allowed: Self.topLevelKeys, tablePath: "")
        var config = AgentConfig()
        if let libvirt = root["libvirt"] {
            if let table = libvirt.table {
                rejectUnknownKeys(in: table, allowed: Self.libvirtKeys, tablePath: "libvirt")
                if let uri = string(table, "uri", in: "libvirt") {
                    switch LibvirtURIRule.check(uri) {
                    case .local:
                        config.libvirtURI = uri
                    case .malformed:
                        report(valueAt: "libvirt.uri", "'uri' must be a libvirt connection URI such as \"qemu:///system\", not \(Self.quoted(uri))")
                    case .remote(let why):
                        report(valueAt: "libvirt.uri", "remote libvirt URI \(Self.quoted(uri)) (\(why)): the agent must run on the libvirt host, as the service's RestrictAddressFamilies=AF_UNIX AF_NETLINK forbids network sockets; use a local URI such as \"qemu:///system\"")
                    }
                }
            } else {
                report(keyAt: "libvirt", "'libvirt' must be a table ([libvirt]), not \(Self.describe(libvirt.type))")
            }
        }
        if let agent = root["agent"] {
            if let table = agent.table {
                rejectUnknownKeys(in: table, allowed: Self.agentKeys, tablePath: "agent")
                config.metricsFile = metricsFile(table)
            } else {
                report(keyAt: "agent", "'agent' must be a table ([agent]), not \(Self.describe(agent.type))")
            }
        }
        var decoded: [(path: String, card: CardConfig)] = []
        if let cards = root["card"] {
            if let array = cards.array {
                for (index, element) in array.enumerated() {
                    let cardPath = "card[\(index)]"
                    guard let table = element.table else {
                        report(valueAt: cardPath, "each card must be a table ([[card]]), not \(Self.describe(element.type))")
                        continue
                    }
                    if let card = decodeCard(table, path: cardPath) {
                        decoded.append((cardPath, card))
                    }
                }
            } else {
                report(keyAt: "card", "'card' must be an array of tables ([[card]]), not \(Self.describe(cards.type))")
            }
        }
        checkUniqueness(of: decoded)
        config.cards = decoded.map(\.card)
        return diagnostics.isEmpty ? config : nil
    }

    private mutating func decodeCard(_ table: TOMLTable, path cardPath: String) -> CardConfig? {
        let before = diagnostics.count
        rejectUnknownKeys(in: table, allowed: Self.cardKeys, tablePath: cardPath)

        var name: CardName?
        if let text = string(table, "name", in: cardPath) {
            name = CardName(text)
            if name == nil {
                report(valueAt: "\(cardPath).name", "invalid card name \(Self.quoted(text)): use lower-case letters, digits and '-' (at most 64)")
            }
        } else if table["name"] == nil {
            report(keyAt: cardPath, "card has no 'name'")
        }

        var address: PCIAddressSelector?
        if let text = string(table, "address", in: cardPath) {
            address = PCIAddressSelector(text)
            if address == nil {
                report(valueAt: "\(cardPath).address", "invalid PCI address \(Self.quoted(text)): expected DDDD:BB:DD (a slot) or DDDD:BB:DD.F (one function), in hex")
            }
        }

        var ids: [PCIID] = []
        if let value = table["ids"] {
            if let array = value.array {
                for (index, element) in array.enumerated() {
                    let elementPath = "\(cardPath).ids[\(index)]"
                    guard let text = element.string else {
                        report(valueAt: elementPath, "each ID must be a string \"vvvv:dddd\", not \(Self.describe(element.type))")
                        continue
                    }
                    if let id = PCIID(text) {
                        if !ids.contains(id) { ids.append(id) }
                    } else {
                        report(valueAt: elementPath, "invalid PCI ID \(Self.quoted(text)): expected vvvv:dddd in hex, e.g. \"10ee:903f\"")
                    }
                }
            } else {
                report(valueAt: "\(cardPath).ids", "'ids' must be an array of strings, not \(Self.describe(value.type))")
            }
        }

        // A wrongly typed 'ids' was reported above; do not pile a second message on it.
        let hasIDs = table["ids"].map { $0.array.map { !$0.isEmpty } ?? true } ?? false
        if table["address"] == nil, !hasIDs {
            report(keyAt: cardPath, "card \(name.map { Self.quoted($0.rawValue) } ?? "") has neither 'address' nor 'ids': say which device it is")
        }

        var guest: GuestName?
        if let text = string(table, "guest", in: cardPath) {
            guest = GuestName(text)
            if guest == nil {
                report(valueAt: "\(cardPath).guest", "invalid guest name \(Self.quoted(text)): a libvirt domain name has no '/', no control characters and no bidirectional-text controls")
            }
        } else if table["guest"] == nil {
            report(keyAt: cardPath, "card has no 'guest' (the libvirt domain that owns it)")
        }

        var hostDriver = HostDriverPolicy.auto
        if let text = string(table, "host-driver", in: cardPath) {
            if let policy = HostDriverPolicy(text) {
                hostDriver = policy
            } else if text == DriverName.vfioPCI.rawValue {
                report(valueAt: "\(cardPath).host-driver", "'host-driver' cannot be vfio-pci; to keep the card on vfio-pci use when-guest-stops = \"keep\"")
            } else {
                report(valueAt: "\(cardPath).host-driver", "invalid host driver \(Self.quoted(text)): use \"auto\", \"none\" or a kernel driver name such as \"xdma\"")
            }
        }

        var whenGuestStops = GuestStopPolicy.host
        if let text = string(table, "when-guest-stops", in: cardPath) {
            if let policy = GuestStopPolicy(rawValue: text) {
                whenGuestStops = policy
            } else {
                report(valueAt: "\(cardPath).when-guest-stops", "invalid value \(Self.quoted(text)) for 'when-guest-stops': use \"host\" or \"keep\"")
            }
        }

        var linkWatch = LinkWatch.off
        // "off" says explicitly what leaving the key out means.
        if table["link-watch"]?.string != "off",
           let interval = duration(table, "link-watch", in: cardPath,
                                   within: LinkWatch.minimumInterval...LinkWatch.maximumInterval, orElse: "off") {
            linkWatch = .every(interval)
            // The watch reads one function's config space by its address; an ids-only card has none to read
            // until it is found, and a watch that silently never runs is worse than none.
            if table["address"] == nil {
                report(keyAt: "\(cardPath).link-watch", "'link-watch' needs the card's 'address' (the function whose config space it reads); add one or remove 'link-watch'")
            }
        }

        let reflashGuard = guardMode(table, in: cardPath)
        let guestRequests = flag(table, "guest-requests", in: cardPath) ?? false

        var reset = CardResetMethod.none
        if let text = string(table, "reset", in: cardPath) {
            if let method = CardResetMethod(rawValue: text) {
                reset = method
            } else {
                report(valueAt: "\(cardPath).reset", "invalid value \(Self.quoted(text)) for 'reset': use \"none\" or \"secondary-bus\"")
            }
        }

        let recoveryTimeout = duration(table, "recovery-timeout", in: cardPath,
                                       within: RecoveryTimeout.minimum...RecoveryTimeout.maximum) ?? RecoveryTimeout.default

        guard diagnostics.count == before, let name, let guest else { return nil }
        return CardConfig(name: name, address: address, ids: ids, guest: guest, hostDriver: hostDriver, whenGuestStops: whenGuestStops,
                          linkWatch: linkWatch, reflashGuard: reflashGuard, reset: reset, recoveryTimeout: recoveryTimeout,
                          guestRequests: guestRequests)
    }

    private mutating func checkUniqueness(of cards: [(path: String, card: CardConfig)]) {
        for (index, entry) in cards.enumerated() {
            for earlier in cards[..<index] {
                let firstLine = sourceMap.keys[earlier.path]?.line ?? 1
                if earlier.card.name == entry.card.name {
                    report(valueAt: "\(entry.path).name",
                           "duplicate card name \(Self.quoted(entry.card.name.rawValue)) (first defined at line \(firstLine))")
                } else if earlier.card.canMatchSameDevice(as: entry.card) {
                    report(keyAt: entry.path,
                           "card \(Self.quoted(entry.card.name.rawValue)) can match the same device as card \(Self.quoted(earlier.card.name.rawValue)) (line \(firstLine)): give them different addresses or IDs that do not overlap")
                }
            }
        }
    }

    /// `metrics-file`: node_exporter's textfile collector reads only `*.prom` files of one directory, and the
    /// daemon's working directory is `/`, so a relative path would land somewhere nobody looks.
    private mutating func metricsFile(_ table: TOMLTable) -> String? {
        let key = "metrics-file"
        guard let text = string(table, key, in: "agent") else { return nil }
        let example = "e.g. \"/var/lib/prometheus/node-exporter/passthrough_agent.prom\""
        if !text.hasPrefix("/") {
            report(valueAt: "agent.\(key)", "'\(key)' must be an absolute path, not \(Self.quoted(text)): \(example)")
        } else if text.unicodeScalars.contains(where: \.isControlOrBidiControl) {
            report(valueAt: "agent.\(key)", "'\(key)' has a control character: \(Self.quoted(text))")
        } else if !text.hasSuffix(".prom") || text.hasSuffix("/.prom") || text.split(separator: "/").contains(where: { $0 == ".." }) {
            report(valueAt: "agent.\(key)", "'\(key)' must name a file ending in .prom (node_exporter's textfile collector reads no other), "
                + "without '..', not \(Self.quoted(text)): \(example)")
        } else {
            return text
        }
        return nil
    }

    // MARK: Values

    private mutating func string(_ table: TOMLTable, _ key: String, in tablePath: String) -> String? {
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            report(valueAt: "\(tablePath).\(key)", "'\(key)' must be a string, not \(Self.describe(value.type))")
            return nil
        }
        return text
    }

    /// `true` or `false`; `nil` (reported when wrongly typed) when absent or wrong.
    private mutating func flag(_ table: TOMLTable, _ key: String, in tablePath: String) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let flag = value.bool else {
            report(valueAt: "\(tablePath).\(key)", "'\(key)' must be true or false, not \(Self.describe(value.type))")
            return nil
        }
        return flag
    }

    /// `reflash-guard`: `true` (the mask), `false`, or a mode's name; `.off` (reported when wrong) otherwise.
    private mutating func guardMode(_ table: TOMLTable, in tablePath: String) -> ReflashGuardMode {
        let key = "reflash-guard"
        guard let value = table[key] else { return .off }
        let choices = "use true (the same as \"mask\"), false, \"mask\", \"link-disable\" or \"while-lent\""
        if let flag = value.bool { return flag ? .mask : .off }
        guard let text = value.string else {
            report(valueAt: "\(tablePath).\(key)", "'\(key)' must be true, false or a string, not \(Self.describe(value.type)): \(choices)")
            return .off
        }
        guard let mode = ReflashGuardMode(rawValue: text) else {
            report(valueAt: "\(tablePath).\(key)", "invalid value \(Self.quoted(text)) for '\(key)': \(choices)")
            return .off
        }
        return mode
    }

    /// A duration string such as "500ms" within `range`; `nil` (reported) when absent or wrong.
    private mutating func duration(_ table: TOMLTable, _ key: String, in tablePath: String, within range: ClosedRange<Duration>,
                                   orElse alternative: String? = nil) -> Duration? {
        guard let text = string(table, key, in: tablePath) else { return nil }
        let bounds = "\(ConfigDuration.format(range.lowerBound)) and \(ConfigDuration.format(range.upperBound))"
        guard let duration = ConfigDuration.parse(text) else {
            report(valueAt: "\(tablePath).\(key)", "invalid duration \(Self.quoted(text)) for '\(key)': use a whole number and a unit (\(ConfigDuration.units.joined(separator: ", "))), e.g. \"500ms\" or \"2m\"\(alternative.map { ", or \(Self.quoted($0))" } ?? "")")
            return nil
        }
        guard range.contains(duration) else {
            report(valueAt: "\(tablePath).\(key)", "'\(key)' must be between \(bounds), not \(Self.quoted(text))")
            return nil
        }
        return duration
    }

    private mutating func rejectUnknownKeys(in table: TOMLTable, allowed: [String], tablePath: String) {
        for key in table.keys.sorted() where !allowed.contains(key) {
            let path = tablePath.isEmpty ? key : "\(tablePath).\(key)"
            var message = "unknown key \(Self.quoted(key))"
            if let suggestion = KeySuggestion.closest(to: key, among: allowed) {
                message += "; did you mean \(Self.quoted(suggestion))?"
            } else {
                message += " (expected one of: \(allowed.joined(separator: ", ")))"
            }
            report(keyAt: path, message)
        }
    }

    // MARK: Diagnostics

    private mutating func report(keyAt path: String, _ message: String) {
        let position = sourceMap.keys[path] ?? sourceMap.values[path]
        append(position, message)
    }

    private mutating func report(valueAt path: String, _ message: String) {
        let position = sourceMap.values[path] ?? sourceMap.keys[path]
        append(position, message)
    }

    private mutating func append(_ position: TOMLSourceMap.Position?, _ message: String) {
        let location = SourceLocation(path: path, line: position?.line ?? 1, column: position?.column ?? 1)
        diagnostics.append(ConfigDiagnostic(location: location, message: message))
    }

    static func quoted(_ text: String) -> String {
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case _ where scalar.isControlOrBidiControl:
                escaped += "\\u{\(String(scalar.value, radix: 16))}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return "\"\(escaped)\""
    }

    static func describe(_ type: TOMLType) -> String {
        switch type {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a number"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .date: "a date"
        case .time: "a time"
        case .dateTime: "a date-time"
        }
    }
}

/// "did you mean …?" for misspelt keys: the closest allowed key within a small edit distance.
enum KeySuggestion {
    static func closest(to key: String, among allowed: [String]) -> String? {
        let scored = allowed.map { ($0, editDistance(key, $0)) }.filter { $0.1 <= max(2, key.count / 3) }
        return scored.min { $0.1 < $1.1 }?.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
