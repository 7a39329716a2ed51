import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import PassthroughTestSupport
import Testing

/// `check`'s per-card findings on how a reflash will go, against the Alveo of `reflashHost()` below root
/// port 00:01.0 whose config space, `resource` files and port services each test shapes.
@Suite("check: how a reflash will go on this host")
struct ReflashReadinessTests {
    @Test("a hotplug slot that pciehp drives: the kernel removes and re-adds the card")
    func hotplugSlot() throws {
        let bus = host(port: .rootPort().withHotplugSlot())
        bus.sysfs.writeFileCreatingDirectories("bus/pci_express/drivers/pciehp/0000:00:01.0:pcie004", "")
        let path = try item("card u200 reflash path", bus)
        #expect(path.status == .ok)
        #expect(path.detail == "hotplug slot at port 0000:00:01.0 (pciehp): the kernel removes and re-adds it; port 0000:00:01.0 has no AER capability")

        // Who hears of the surprise down is said too: firmware-first AER may reset the server despite the slot.
        let withAER = host(port: .rootPort().withHotplugSlot().withAdvancedErrorReporting())
        withAER.sysfs.writeFileCreatingDirectories("bus/pci_express/drivers/pciehp/0000:00:01.0:pcie004", "")
        let firmwareFirst = try item("card u200 reflash path", withAER)
        #expect(firmwareFirst.status == .ok)
        #expect(firmwareFirst.detail.hasSuffix("re-adds it; AER is firmware-first at 0000:00:01.0 (the kernel was refused AER control; a surprise down goes to the firmware, which may reboot the server)"))
        withAER.sysfs.writeFileCreatingDirectories("bus/pci_express/drivers/aer/0000:00:01.0:pcie002", "")
        #expect(try item("card u200 reflash path", withAER).detail.hasSuffix("re-adds it; AER OS-first at 0000:00:01.0"))
    }

    @Test("a hot-plug capable port that pciehp does not drive is no hotplug path; an acpiphp slot is")
    func hotplugCapableButUndriven() throws {
        let bus = host(port: .rootPort().withHotplugSlot())
        let path = try item("card u200 reflash path", bus)
        #expect(path.status == .problem)
        #expect(path.detail.contains("port 0000:00:01.0 is hot-plug capable but pciehp does not drive it"))

        bus.sysfs.writeFileCreatingDirectories("bus/pci/slots/3/address", "0000:01:00\n")
        #expect(try item("card u200 reflash path", bus).status == .problem, "a physical slot without a hotplug driver's power file")
        bus.sysfs.writeFile("bus/pci/slots/3/power", "1\n")
        let acpi = try item("card u200 reflash path", bus)
        #expect(acpi.status == .ok)
        #expect(acpi.detail.contains("(acpiphp): the kernel removes and re-adds it"))
    }

    @Test("an AER-only port: OS-first means AER recovery; firmware-first or pci=noaer does not")
    func errorReportingOnly() throws {
        let bus = host(port: .rootPort().withAdvancedErrorReporting())
        bus.sysfs.writeFileCreatingDirectories("bus/pci_express/drivers/aer/0000:00:01.0:pcie002", "")
        let path = try item("card u200 reflash path", bus)
        #expect(path.status == .ok)
        #expect(path.detail.hasPrefix("AER recovery: port 0000:00:01.0 reports errors to the kernel (OS-first"))

        bus.setProc("cmdline", "root=/dev/sda1 pci=noaer\n")
        let noAER = try item("card u200 reflash path", bus)
        #expect(noAER.status == .problem)
        #expect(noAER.detail.contains("AER is off (pci=noaer on the kernel command line)"))

        bus.setProc("cmdline", "root=/dev/sda1\n")
        bus.sysfs.removeFile("bus/pci_express/drivers/aer/0000:00:01.0:pcie002")
        let firmwareFirst = try item("card u200 reflash path", bus)
        #expect(firmwareFirst.status == .problem)
        #expect(firmwareFirst.detail.contains("AER is firmware-first at 0000:00:01.0"))
    }

    @Test("AER handled by the root port above a switch port counts for the card below it")
    func errorReportingAboveASwitch() throws {
        let sysfs = FakeSysfs()
        let bus = EmulatedPCIBus(sysfs)
        bus.loadDriver("pcieport")
        bus.loadDriver("vfio-pci")
        sysfs.addFunction("0000:00:01.0", id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 1,
                          subsystem: nil, config: ConfigSpaceImage.rootPort().withAdvancedErrorReporting().bytes)
        sysfs.addFunction("0000:01:00.0", id: "10b5:8747", classCode: 0x060400, driver: "pcieport", iommuGroup: 2,
                          below: "0000:00:01.0", subsystem: nil, config: ConfigSpaceImage.rootPort().bytes)
        sysfs.addFunction("0000:02:08.0", id: "10b5:8747", classCode: 0x060400, driver: "pcieport", iommuGroup: 3,
                          below: "0000:01:00.0", subsystem: nil, config: ConfigSpaceImage.rootPort().withAdvancedErrorReporting().bytes)
        sysfs.addFunction("0000:03:00.0", id: "10ee:903f", iommuGroup: 5, below: "0000:02:08.0",
                          config: ConfigSpaceImage.endpoint().bytes)
        sysfs.writeFileCreatingDirectories("bus/pci_express/drivers/aer/0000:00:01.0:pcie002", "")
        let config = try ConfigLoader.parse("[[card]]\nname = \"u200\"\naddress = \"0000:03:00\"\nguest = \"fpga-dev\"\n", path: "c")
        let path = try #require(ReadinessCheck.run(host: bus.host, config: .success(config)).items.first { $0.name == "card u200 reflash path" })
        #expect(path.status == .ok)
        #expect(path.detail.contains("aer on 0000:00:01.0"))
    }

    @Test("neither hotplug nor AER: a problem with the line to add, and not a problem once link-watch is set")
    func neitherNeedsLinkWatch() throws {
        let bus = host(port: .rootPort())
        let report = ReadinessCheck.run(host: bus.host, config: .success(try ConfigLoader.parse(cardConfig, path: "c")))
        let path = try #require(report.items.first { $0.name == "card u200 reflash path" })
        #expect(path.status == .problem)
        #expect(path.detail.contains("no hotplug slot at port 0000:00:01.0; port 0000:00:01.0 has no AER capability"))
        #expect(path.detail.contains("the card stays in sysfs reading all-ones"))
        #expect(path.fix == "add link-watch = \"2s\" to [[card]] u200")
        #expect(!report.ready)

        let watched = try ConfigLoader.parse(cardConfig + "link-watch = \"2s\"\n", path: "c")
        let watchedReport = ReadinessCheck.run(host: bus.host, config: .success(watched))
        let watchedPath = try #require(watchedReport.items.first { $0.name == "card u200 reflash path" })
        #expect(watchedPath.status == .ok)
        #expect(watchedPath.detail.contains("link-watch (every 2s) notices the loss"))
        #expect(watchedReport.ready)
    }

    @Test("a port whose config space cannot be read (not root) is a warning that says why, not a failed check")
    func unreadablePort() throws {
        let bus = host(port: .rootPort())
        bus.sysfs.writeBytes("devices/pci0000:00/0000:00:01.0/config", Array(ConfigSpaceImage.rootPort().bytes.prefix(64)))
        let report = ReadinessCheck.run(host: bus.host, config: .success(try ConfigLoader.parse(cardConfig, path: "c")))
        let path = try #require(report.items.first { $0.name == "card u200 reflash path" })
        #expect(path.status == .warning)
        #expect(path.detail.contains("only root may read past the first 64 bytes"))
        #expect(path.fix == "run check as root (config space past 64 bytes is root's only)")
        #expect(report.ready)
    }

    @Test("a port without Data Link Layer Link Active reporting is a warning, never a failure")
    func linkActiveMissing() throws {
        let reporting = host(port: .rootPort())
        #expect(try item("card u200 link state", reporting).status == .ok)

        let blind = host(port: .rootPort().withoutLinkActiveReporting())
        let state = try item("card u200 link state", blind)
        #expect(state.status == .warning)
        #expect(state.detail.hasPrefix("port 0000:00:01.0 does not report Data Link Layer Link Active"))
    }

    @Test("the port's windows against the card's BARs: headroom shown, a full window is a warning with the fix")
    func windows() throws {
        let bus = host(port: .rootPort())
        laidOut(bus, prefetchableWindowEnd: 0x3800_1FFF_FFFF)
        let roomy = try item("card u200 windows", bus)
        #expect(roomy.status == .ok)
        #expect(roomy.detail == "port 0000:00:01.0: memory window: BARs use 32.1 MiB of the window's 64 MiB (headroom 31.9 MiB); prefetchable window: BARs use 256 MiB of the window's 512 MiB (headroom 256 MiB)")

        laidOut(bus, prefetchableWindowEnd: 0x3800_0FFF_FFFF)
        let full = try item("card u200 windows", bus)
        #expect(full.status == .warning)
        #expect(full.detail.contains("prefetchable window: BARs use 256 MiB of the window's 256 MiB (headroom 0 bytes)"))
        #expect(full.detail.contains("the prefetchable window has no headroom"))
        #expect(full.fix?.hasPrefix("boot with pci=realloc") == true)
        #expect(full.fix?.contains("pci=hpmmioprefsize=SIZE") == true)
    }

    @Test("a device beside the card below the same port takes its share of the window's headroom")
    func siblingPinsTheWindow() throws {
        let bus = host(port: .rootPort())
        laidOut(bus, prefetchableWindowEnd: 0x3800_1FFF_FFFF)
        bus.sysfs.addFunction("0000:01:01.0", id: "1b36:0010", iommuGroup: 6, below: "0000:00:01.0",
                              config: ConfigSpaceImage.endpoint(vendor: 0x1B36, device: 0x0010).bytes)
        bus.sysfs.writeFile("bus/pci/devices/0000:01:01.0/resource",
                            "0x0000380010000000 0x000038001fffffff 0x000000000014220c\n"
                            + String(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000\n", count: 12))
        let windows = try item("card u200 windows", bus)
        #expect(windows.status == .warning)
        #expect(windows.detail.contains("prefetchable window: BARs use 256 MiB of the window's 512 MiB, other devices below the port 256 MiB (headroom 0 bytes)"))
        #expect(windows.detail.contains("memory window: BARs use 32.1 MiB of the window's 64 MiB (headroom 31.9 MiB)"))
    }

    @Test("pci=realloc and the hotplug window sizes on the command line are a note")
    func commandLine() throws {
        let bus = host(port: .rootPort())
        bus.setProc("cmdline", "BOOT_IMAGE=/vmlinuz quiet\n")
        let none = try item("pci command line", bus)
        #expect(none.status == .ok)
        #expect(none.detail == "no pci=realloc; no hpmmiosize=/hpmmioprefsize=")
        bus.setProc("cmdline", "BOOT_IMAGE=/vmlinuz pci=realloc,hpmmioprefsize=1G quiet\n")
        #expect(try item("pci command line", bus).detail == "pci=realloc is on (windows are re-sized at a rescan); pci=hpmmioprefsize=1G")
    }

    @Test("check never writes: every config space and file is as it was")
    func readOnly() throws {
        let bus = host(port: .rootPort().withHotplugSlot().withAdvancedErrorReporting())
        laidOut(bus, prefetchableWindowEnd: 0x3800_0FFF_FFFF)
        let before = bus.sysfs.configBytes(of: "0000:00:01.0")
        _ = ReadinessCheck.run(host: bus.host, config: .success(try ConfigLoader.parse(cardConfig, path: "c")))
        #expect(bus.configWrites.isEmpty)
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == before)
    }

    @Test("the text output, as the README shows it")
    func text() throws {
        let bus = host(port: .rootPort().withAdvancedErrorReporting().withoutLinkActiveReporting())
        laidOut(bus, prefetchableWindowEnd: 0x3800_0FFF_FFFF)
        bus.setProc("cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n")
        let report = ReadinessCheck.run(host: bus.host, config: .success(try ConfigLoader.parse(cardConfig, path: "c")))
        let text = report.text
        #expect(text.contains("PROBLEM  card u200 reflash path: no hotplug slot at port 0000:00:01.0; AER is firmware-first"))
        #expect(text.contains("         fix: add link-watch = \"2s\" to [[card]] u200\n"))
        #expect(text.contains("warning  card u200 link state: port 0000:00:01.0 does not report"))
        #expect(text.contains("warning  card u200 windows: port 0000:00:01.0: memory window"))
        #expect(text.contains("ok       pci command line: no pci=realloc; no hpmmiosize=/hpmmioprefsize="))

        // The README's example is this output, line for line.
        let readme = try RepositoryFile.contents("README.md")
        let section = try #require(readme.range(of: "**What `check` says about a host**"))
        let block = try #require(readme[section.upperBound...].split(separator: "```text\n", maxSplits: 1).last?
            .split(separator: "```", maxSplits: 1).first)
        let shown = block.split(separator: "\n")
        #expect(shown.count == 7)
        let lines = Set(text.split(separator: "\n"))
        for line in shown { #expect(lines.contains(line), "README line not in check's output: \(line)") }
    }

    // MARK: The host

    private let cardConfig = "[[card]]\nname = \"u200\"\naddress = \"0000:01:00\"\nguest = \"fpga-dev\"\n"

    private func host(port: ConfigSpaceImage) -> EmulatedPCIBus {
        let bus = reflashHost(port: port)
        bus.loadDriver("vfio-pci")
        return bus
    }

    private func item(_ name: String, _ bus: EmulatedPCIBus) throws -> ReadinessReport.Item {
        let config = try ConfigLoader.parse(cardConfig, path: "c")
        return try #require(ReadinessCheck.run(host: bus.host, config: .success(config)).items.first { $0.name == name })
    }

    /// `resource` files as the kernel prints them (`CONFIG_PCI_IOV`: 13 lines for a function, 17 for a
    /// bridge): the card uses 32 MiB + 64 KiB of the port's 64 MiB memory window and 256 MiB of prefetchable
    /// memory, in a prefetchable window that ends at `prefetchableWindowEnd`.
    private func laidOut(_ bus: EmulatedPCIBus, prefetchableWindowEnd: UInt64) {
        func line(_ start: UInt64, _ end: UInt64, _ flags: UInt64) -> String {
            [start, end, flags].map { "0x" + String(repeating: "0", count: 16 - String($0, radix: 16).count) + String($0, radix: 16) }
                .joined(separator: " ") + "\n"
        }
        let unused = line(0, 0, 0)
        func function(_ bars: [String]) -> String {
            (bars + Array(repeating: unused, count: 13 - bars.count)).joined()
        }
        let memory: UInt64 = 0x0004_0200, prefetchable64: UInt64 = 0x0014_220C
        bus.sysfs.writeFile("bus/pci/devices/0000:01:00.0/resource", function([
            line(0x9000_0000, 0x91FF_FFFF, memory), unused,
            line(0x3800_0000_0000, 0x3800_07FF_FFFF, prefetchable64), unused,
        ]))
        bus.sysfs.writeFile("bus/pci/devices/0000:01:00.1/resource", function([
            line(0x9200_0000, 0x9200_FFFF, memory), unused,
            line(0x3800_0800_0000, 0x3800_0FFF_FFFF, prefetchable64), unused,
        ]))
        bus.sysfs.writeFile("bus/pci/devices/0000:00:01.0/resource", String(repeating: unused, count: 13)
            + unused
            + line(0x9000_0000, 0x93FF_FFFF, 0x0000_0200)
            + line(0x3800_0000_0000, prefetchableWindowEnd, 0x0010_2201)
            + unused)
    }
}
