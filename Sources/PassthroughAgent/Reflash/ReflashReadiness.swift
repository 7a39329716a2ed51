import PassthroughCore
import PassthroughSysfs

/// `check`'s view of how a reflash will go for one card on this host, before the first one: the path the
/// kernel takes when the card drops off the link, whether the port shows link state, and whether a bigger
/// bitstream would still fit the port's windows. Read-only: config space and sysfs are only read.
enum ReflashReadiness {
    /// The findings for a card on the bus, below `port`; `neighbours` are the other functions below it,
    /// whose BARs share the port's windows.
    static func items(card: CardConfig, functions: [PCIDeviceSnapshot], neighbours: [PCIDeviceSnapshot], port: PCIAddress,
                      host: HostEnvironment, commandLine: KernelCommandLine) -> [ReadinessReport.Item] {
        var items: [ReadinessReport.Item] = []
        let config = ConfigSpace(address: port, layout: host.sysfs, io: host.io)
        do throws(ConfigSpaceError) {
            items.append(try path(card: card, functions: functions, port: port, config: config, host: host, commandLine: commandLine))
            items.append(try linkActive(card: card, port: port, config: config))
        } catch {
            let notRoot = switch error {
            case .shortRead: true
            case .access: error.errno == .permissionDenied
            default: false
            }
            items.append(.init(name: "card \(card.name) reflash path", status: .warning,
                               detail: "cannot tell how a reflash will go: \(error)",
                               fix: notRoot ? "run check as root (config space past 64 bytes is root's only)" : nil))
        }
        if let windows = windows(card: card, functions: functions, neighbours: neighbours, port: port, host: host) {
            items.append(windows)
        }
        return items
    }

    /// The `pci=` options that decide whether a bigger bitstream can get bigger windows: a note, never a problem.
    static func commandLineNote(_ commandLine: KernelCommandLine) -> ReadinessReport.Item {
        let sizes = commandLine.hotplugWindowSizes
        let detail = [
            commandLine.reallocates ? "pci=realloc is on (windows are re-sized at a rescan)" : "no pci=realloc",
            sizes.isEmpty ? "no hpmmiosize=/hpmmioprefsize=" : sizes.joined(separator: ", "),
        ].joined(separator: "; ")
        return .init(name: "pci command line", status: .ok, detail: detail, fix: nil)
    }

    // MARK: The path a reflash takes

    private static func path(card: CardConfig, functions: [PCIDeviceSnapshot], port: PCIAddress, config: ConfigSpace,
                             host: HostEnvironment, commandLine: KernelCommandLine) throws(ConfigSpaceError) -> ReadinessReport.Item {
        let name = "card \(card.name) reflash path"
        let hotplug = try hotplug(functions: functions, port: port, config: config, host: host)
        let aer = try errorReporting(port: port, config: config, host: host, commandLine: commandLine)
        if case .driven(let driver) = hotplug {
            // Who sees the surprise down matters even with a slot: firmware-first AER may still reset the server.
            return .init(name: name, status: .ok,
                         detail: "hotplug slot at port \(port) (\(driver)): the kernel removes and re-adds it; \(aer)", fix: nil)
        }
        if case .osFirst(let handler) = aer {
            return .init(name: name, status: .ok,
                         detail: "AER recovery: port \(port) reports errors to the kernel (OS-first, aer on \(handler)); the agent recovers the card", fix: nil)
        }
        let why = "\(hotplug.description); \(aer.description)"
        if let interval = card.linkWatch.interval {
            return .init(name: name, status: .ok,
                         detail: "\(why): link-watch (every \(ConfigDuration.format(interval))) notices the loss and the agent recovers the card",
                         fix: nil)
        }
        return .init(name: name, status: .problem,
                     detail: "\(why). After a reflash the card stays in sysfs reading all-ones and nothing notices",
                     fix: "add link-watch = \"2s\" to [[card]] \(card.name)")
    }

    private enum Hotplug: CustomStringConvertible {
        case driven(String)
        case capableButUndriven(PCIAddress)
        case none(PCIAddress)

        var description: String {
            switch self {
            case .driven(let driver): "hotplug by \(driver)"
            case .capableButUndriven(let port): "port \(port) is hot-plug capable but pciehp does not drive it (the firmware kept hotplug control, or pcie_ports=compat)"
            case .none(let port): "no hotplug slot at port \(port)"
            }
        }
    }

    /// pciehp drives the port's slot only when the port is hot-plug capable and the OS got hotplug control;
    /// any other hotplug driver (acpiphp) shows as a registered slot at the card's address.
    private static func hotplug(functions: [PCIDeviceSnapshot], port: PCIAddress, config: ConfigSpace,
                                host: HostEnvironment) throws(ConfigSpaceError) -> Hotplug {
        let capable = try config.isHotPlugCapable()
        if capable, host.reader.portService(of: port, boundTo: "pciehp") { return .driven("pciehp") }
        if let slot = functions.first?.address.slot, host.reader.hasHotplugSlot(slot) { return .driven("acpiphp") }
        return capable ? .capableButUndriven(port) : .none(port)
    }

    private enum ErrorReporting: CustomStringConvertible {
        case osFirst(PCIAddress)
        case firmwareFirst(PCIAddress)
        case disabled(String)
        case absent(PCIAddress)

        var description: String {
            switch self {
            case .osFirst(let port): "AER OS-first at \(port)"
            case .firmwareFirst(let port): "AER is firmware-first at \(port) (the kernel was refused AER control; a surprise down goes to the firmware, which may reboot the server)"
            case .disabled(let option): "AER is off (\(option) on the kernel command line)"
            case .absent(let port): "port \(port) has no AER capability"
            }
        }
    }

    /// OS-first when the kernel's `aer` port service is bound on the port or a port above it (the root port
    /// handles the errors of its whole hierarchy): the port driver creates that service only when the
    /// platform gave the OS control of AER.
    private static func errorReporting(port: PCIAddress, config: ConfigSpace, host: HostEnvironment,
                                       commandLine: KernelCommandLine) throws(ConfigSpaceError) -> ErrorReporting {
        guard try config.hasAdvancedErrorReporting() else { return .absent(port) }
        if let option = commandLine.disablesNativeErrorReporting { return .disabled(option) }
        var current: PCIAddress? = port
        // Switches nest a few levels at most; the bound only guards against a sysfs tree that loops.
        for _ in 0..<16 {
            guard let address = current else { break }
            if host.reader.portService(of: address, boundTo: "aer") { return .osFirst(address) }
            current = try? host.reader.upstreamPort(of: address)
        }
        return .firmwareFirst(port)
    }

    // MARK: Link state

    private static func linkActive(card: CardConfig, port: PCIAddress, config: ConfigSpace) throws(ConfigSpaceError) -> ReadinessReport.Item {
        let name = "card \(card.name) link state"
        if try config.reportsLinkActive() {
            return .init(name: name, status: .ok, detail: "port \(port) reports Data Link Layer Link Active", fix: nil)
        }
        return .init(name: name, status: .warning,
                     detail: "port \(port) does not report Data Link Layer Link Active: the link cannot be seen until config reads fail, so a recovery rescans blindly every round",
                     fix: nil)
    }

    // MARK: Windows

    /// Each window the card's BARs sit in, against the window's size, less what other devices below the port
    /// hold (a sibling pins the window too). A window with no room left is a warning: a bitstream with a
    /// bigger BAR will not fit without the kernel re-sizing it.
    private static func windows(card: CardConfig, functions: [PCIDeviceSnapshot], neighbours: [PCIDeviceSnapshot],
                                port: PCIAddress, host: HostEnvironment) -> ReadinessReport.Item? {
        guard let windows = try? host.reader.bridgeWindows(of: port) else { return nil }
        func assigned(_ devices: [PCIDeviceSnapshot]) -> [PCIResource] {
            devices.flatMap { (try? host.reader.resources(of: $0.address)) ?? [] }.filter(\.isAssigned)
        }
        let bars = assigned(functions)
        let neighbourBARs = assigned(neighbours)
        var parts: [String] = []
        var full: [String] = []
        for (label, window) in [("memory", windows.memory), ("prefetchable", windows.prefetchableMemory), ("I/O", windows.io)] {
            let inside = bars.filter { window.contains($0) }
            guard !inside.isEmpty else { continue }
            let used = inside.reduce(0) { $0 + $1.size }
            let others = neighbourBARs.filter { window.contains($0) }.reduce(0) { $0 + $1.size }
            let headroom = window.size > used + others ? window.size - used - others : 0
            let shared = others == 0 ? "" : ", other devices below the port \(ByteCount(others))"
            parts.append("\(label) window: BARs use \(ByteCount(used)) of the window's \(ByteCount(window.size))\(shared) (headroom \(ByteCount(headroom)))")
            if headroom == 0 { full.append(label) }
        }
        guard !parts.isEmpty else { return nil }
        let name = "card \(card.name) windows"
        let detail = "port \(port): " + parts.joined(separator: "; ")
        if full.isEmpty { return .init(name: name, status: .ok, detail: detail, fix: nil) }
        let option = full.contains("prefetchable") ? "hpmmioprefsize" : "hpmmiosize"
        return .init(name: name, status: .warning,
                     detail: detail + "; the \(full.joined(separator: " and ")) window\(full.count > 1 ? "s have" : " has") no headroom: a bitstream with a bigger BAR will not fit",
                     fix: "boot with pci=realloc (windows re-sized at a rescan), or pci=\(option)=SIZE on a hotplug port; on some servers the firmware's \"above 4G decoding\" is needed too")
    }
}

/// A size in binary units, as `lspci -v` gives BARs: `256 MiB`, or `31.9 MiB` when not a whole number.
struct ByteCount: CustomStringConvertible {
    var bytes: UInt64

    init(_ bytes: UInt64) { self.bytes = bytes }

    var description: String {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= 1 << shift {
            if bytes % (1 << shift) == 0 { return "\(bytes >> shift) \(unit)" }
            let tenths = (bytes * 10 + (1 << shift) / 2) >> shift
            return "\(tenths / 10).\(tenths % 10) \(unit)"
        }
        return "\(bytes) bytes"
    }
}
