// The host as the agent reads it: where /sys and /proc are (or a test tree), and what the kernel command
// line asks of PCI.

import PassthroughSysfs
import SystemPackage

/// Where the host's kernel interfaces are: `/sys` and `/proc`, or a test tree.
public struct HostEnvironment: Sendable {
    public var sysfs: SysfsLayout
    public var procRoot: FilePath
    public var io: any SysfsIO

    public init(sysfsRoot: FilePath = "/sys", procRoot: FilePath = "/proc", io: any SysfsIO = LinuxSysfsIO()) {
        self.sysfs = SysfsLayout(root: sysfsRoot)
        self.procRoot = procRoot
        self.io = io
    }

    public var reader: PCISysfsReader { PCISysfsReader(layout: sysfs, io: io) }

    func readProc(_ name: String) -> String? {
        try? io.read(procRoot.appending(name))
    }
}

/// The PCI options of `/proc/cmdline` that change how a reflash goes: `pci=` takes a comma-separated
/// list (`pci=realloc,hpmmioprefsize=1G`), and may be given more than once.
struct KernelCommandLine: Sendable {
    private let words: [Substring]
    private let pciOptions: [Substring]

    init(_ text: String) {
        words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        pciOptions = words.filter { $0.hasPrefix("pci=") }.flatMap { $0.dropFirst(4).split(separator: ",") }
    }

    /// `pci=realloc` (or `realloc=on`): a rescan may re-size a bridge's windows.
    var reallocates: Bool { pciOptions.contains("realloc") || pciOptions.contains("realloc=on") }

    /// The hotplug window sizes asked for, as given (`hpmmiosize=64M`).
    var hotplugWindowSizes: [String] {
        pciOptions.filter { $0.hasPrefix("hpmmiosize=") || $0.hasPrefix("hpmmioprefsize=") || $0.hasPrefix("hpmemsize=") }
            .map { "pci=\($0)" }
    }

    /// The option that keeps the kernel from handling AER itself, if any.
    var disablesNativeErrorReporting: String? {
        if pciOptions.contains("noaer") { return "pci=noaer" }
        if words.contains("pcie_ports=compat") { return "pcie_ports=compat" }
        return nil
    }
}
