import PassthroughConfig
import PassthroughCore
import PassthroughSysfs

/// `check`: can this host lend its configured cards to guests? Each problem comes with its fix.
public struct ReadinessReport: Encodable, Sendable {
    public struct Item: Encodable, Hashable, Sendable {
        public enum Status: String, Encodable, Sendable {
            case ok, warning, problem
        }

        public var name: String
        public var status: Status
        public var detail: String
        public var fix: String?
    }

    public var ready: Bool { !items.contains { $0.status == .problem } }
    public var items: [Item]

    private enum CodingKeys: String, CodingKey { case ready, items }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(ready, forKey: .ready)
        try container.encode(items, forKey: .items)
    }

    public var text: String {
        var output = ""
        for item in items {
            let mark = switch item.status {
            case .ok: "ok     "
            case .warning: "warning"
            case .problem: "PROBLEM"
            }
            output += "\(mark)  \(item.name): \(item.detail)\n"
            if let fix = item.fix {
                for line in fix.split(separator: "\n") { output += "         fix: \(line)\n" }
            }
        }
        output += ready ? "\nthis host is ready\n" : "\nthis host is not ready\n"
        return output
    }
}

public enum ReadinessCheck {
    /// Runs every check, with the configuration as it loaded (or failed to).
    public static func run(host: HostEnvironment, config: Result<AgentConfig, ConfigError>) -> ReadinessReport {
        var items: [ReadinessReport.Item] = []
        items.append(iommu(host))
        items.append(vfioDriver(host))
        switch config {
        case .failure(let error) where error.kind == .unreadable:
            let path = error.diagnostics.first?.location.path ?? AgentConfig.defaultPath
            items.append(.init(name: "config", status: .problem, detail: error.diagnostics.first?.message ?? "cannot read \(path)",
                               fix: "create \(path) with one [[card]] per card to lend (see README: Configuration)"))
        case .failure(let error):
            let first = error.diagnostics.first?.description ?? ""
            let more = error.diagnostics.count > 1 ? " (and \(error.diagnostics.count - 1) more, all listed on stderr)" : ""
            items.append(.init(name: "config", status: .problem, detail: "invalid: \(first)\(more)",
                               fix: "correct the places listed, then run check again"))
        case .success(let config):
            if config.cards.isEmpty {
                items.append(.init(name: "config", status: .warning, detail: "valid, but no [[card]] is configured",
                                   fix: "add a [[card]] section (see README: Configuration)"))
            } else {
                items.append(.init(name: "config", status: .ok, detail: "valid, \(config.cards.count) card(s)", fix: nil))
            }
            let commandLine = KernelCommandLine(host.readProc("cmdline") ?? "")
            let cardItems = cards(config, host: host, commandLine: commandLine)
            items.append(contentsOf: cardItems)
            if let lockdown = lockdown(config, host: host) { items.append(lockdown) }
            if cardItems.contains(where: { $0.name.hasSuffix(" reflash path") }) {
                items.append(ReflashReadiness.commandLineNote(commandLine))
            }
        }
        return ReadinessReport(items: items)
    }

    /// Kernel lockdown (integrity or confidentiality) refuses every write to a device's `config`, so the
    /// reflash guard and `reset = "secondary-bus"` cannot work: `reflash --prepare` would be refused.
    /// Said only when a card needs those writes; a host without securityfs says nothing.
    private static func lockdown(_ config: AgentConfig, host: HostEnvironment) -> ReadinessReport.Item? {
        let writers = config.cards.filter { $0.reflashGuard != .off || $0.reset == .secondaryBus }
        guard !writers.isEmpty,
              let text = try? host.io.read(host.sysfs.root.appending("kernel/security/lockdown")),
              let mode = text.split(separator: " ").first(where: { $0.hasPrefix("[") && $0.hasSuffix("]") })?.dropFirst().dropLast()
        else { return nil }
        let names = writers.map(\.name.rawValue).joined(separator: ", ")
        if mode == "none" {
            return .init(name: "lockdown", status: .ok, detail: "none: PCI config writes allowed (reflash guard, bus reset of \(names))", fix: nil)
        }
        return .init(name: "lockdown", status: .problem,
                     detail: "kernel lockdown is \(mode): PCI config writes are refused, so the reflash guard / secondary-bus reset of \(names) cannot work and `reflash --prepare` is refused",
                     fix: "boot with lockdown=none (it follows Secure Boot on many distributions), or set reflash-guard = false and reset = \"none\" for \(names)")
    }

    private static func iommu(_ host: HostEnvironment) -> ReadinessReport.Item {
        let groups = (try? host.io.list(host.sysfs.iommuGroups)) ?? []
        if !groups.isEmpty {
            return .init(name: "iommu", status: .ok, detail: "on, \(groups.count) IOMMU groups", fix: nil)
        }
        let cmdline = host.readProc("cmdline") ?? ""
        let cpuVendor = host.readProc("cpuinfo").flatMap(cpuVendor(in:))
        var fix: String
        switch cpuVendor {
        case "AuthenticAMD":
            fix = "enable AMD-Vi (IOMMU) and SVM in the firmware setup; amd_iommu is on by default once the firmware exposes it"
            if cmdline.contains("amd_iommu=off") { fix += "\nremove amd_iommu=off from the kernel command line" }
        default:
            fix = "enable VT-d in the firmware setup"
            if !cmdline.split(separator: " ").contains("intel_iommu=on") {
                fix += "\nadd intel_iommu=on iommu=pt to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)"
            }
        }
        return .init(name: "iommu", status: .problem,
                     detail: "off: no IOMMU groups in \(host.sysfs.iommuGroups)", fix: fix)
    }

    private static func cpuVendor(in cpuinfo: String) -> String? {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("vendor_id") {
            return line.split(separator: ":").last.map { String($0.drop { $0 == " " || $0 == "\t" }) }
        }
        return nil
    }

    private static func vfioDriver(_ host: HostEnvironment) -> ReadinessReport.Item {
        if host.io.exists(host.sysfs.driver(.vfioPCI)) {
            return .init(name: "vfio-pci", status: .ok, detail: "loaded", fix: nil)
        }
        return .init(name: "vfio-pci", status: .problem, detail: "the vfio-pci driver is not loaded",
                     fix: "modprobe vfio-pci, and make it permanent: echo vfio-pci > /etc/modules-load.d/vfio-pci.conf")
    }

    private static func cards(_ config: AgentConfig, host: HostEnvironment, commandLine: KernelCommandLine) -> [ReadinessReport.Item] {
        let devices: [PCIDeviceSnapshot]
        do {
            devices = try host.reader.allFunctions()
        } catch {
            return [.init(name: "pci bus", status: .problem, detail: "cannot read the PCI bus: \(error)",
                          fix: "run as root, on a host with sysfs mounted at \(host.sysfs.root)")]
        }
        return config.cards.flatMap { card in
            let found = presence(card, devices: devices, host: host)
            // How a reflash will go is worth saying only for a card the agent can lend at all.
            guard found.status != .problem, case .present(let functions) = CardResolution(card: card, devices: devices).outcome,
                  let port = functions.compactMap(\.upstreamPort).first
            else { return [found] }
            let neighbours = devices.filter { $0.upstreamPort == port && !functions.map(\.address).contains($0.address) }
            return [found] + ReflashReadiness.items(card: card, functions: functions, neighbours: neighbours, port: port,
                                                    host: host, commandLine: commandLine)
        }
    }

    private static func presence(_ card: CardConfig, devices: [PCIDeviceSnapshot], host: HostEnvironment) -> ReadinessReport.Item {
        let name = "card \(card.name)"
        let resolution = CardResolution(card: card, devices: devices)
        switch resolution.outcome {
        case .absent:
            return .init(name: name, status: .problem,
                         detail: "not on the PCI bus (address \(card.address?.description ?? "any"), ids \(card.ids.isEmpty ? "any" : card.ids.map(\.description).joined(separator: ", ")))",
                         fix: "check that the card is seated and programmed (lspci -nn); if it is being reflashed, run check again when it is back")
        case .ambiguous(let slots):
            return .init(name: name, status: .problem,
                         detail: "its ids match devices in \(slots.count) slots: \(slots.map(\.description).joined(separator: ", "))",
                         fix: "add address = \"\(slots[0])\" (or the slot you mean) to the card")
        case .present(let functions):
            let where_ = functions.map(\.address.description).joined(separator: ", ")
            if let reason = resolution.handsOff {
                let fix = switch reason {
                case .bridge: "give the card the address of the device behind the bridge (lspci -tv shows the tree)"
                case .unreadableDriver(let address, _): "see what holds it: readlink /sys/bus/pci/devices/\(address)/driver"
                }
                return .init(name: name, status: .problem, detail: "found at \(where_); \(reason)", fix: fix)
            }
            guard let group = functions.first?.iommuGroup else {
                return .init(name: name, status: .problem, detail: "found at \(where_), but it has no IOMMU group",
                             fix: "turn the IOMMU on (see the iommu check)")
            }
            let blocking = GroupInterlock.blockingPeers(of: functions)
            if !blocking.isEmpty {
                let list = blocking.map { "\($0.address) (\($0.driver))" }.joined(separator: ", ")
                return .init(name: name, status: .problem,
                             detail: "found at \(where_); IOMMU group \(group) also holds \(list), used by the host",
                             fix: "move the card to a slot with its own IOMMU group (ls /sys/kernel/iommu_groups/*/devices), or hand those devices to the guest too")
            }
            var detail = "found at \(where_), IOMMU group \(group) is viable"
            if case .driver(let hostDriver) = card.hostDriver, !host.io.exists(host.sysfs.driver(hostDriver)) {
                detail += "; host driver \(hostDriver) is not loaded"
                return .init(name: name, status: .warning, detail: detail,
                             fix: "modprobe \(hostDriver), or set host-driver = \"auto\"")
            }
            return .init(name: name, status: .ok, detail: detail, fix: nil)
        }
    }
}
