import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import SystemPackage
import Testing

@Suite("Reading PCI functions from sysfs")
struct PCISysfsReaderTests {
    @Test("a snapshot carries IDs, class, driver, override, group with peers, and upstream port")
    func snapshot() throws {
        let bus = alveoHost()
        let snapshot = try #require(try bus.reader.snapshot(of: PCIAddress("0000:01:00.0")!))
        #expect(snapshot.id == PCIID("10ee:903f"))
        #expect(snapshot.subsystemID == PCIID("10ee:0007"))
        #expect(snapshot.classCode == 0x058000)
        #expect(snapshot.driver == .bound(DriverName("xdma")!))
        #expect(snapshot.driverOverride == nil)
        #expect(snapshot.iommuGroup == 5)
        #expect(snapshot.groupPeers.map(\.address.description) == ["0000:01:00.1"])
        #expect(snapshot.groupPeers.first?.driver == .bound(DriverName("xdma")!))
        #expect(snapshot.upstreamPort == PCIAddress("0000:00:01.0"))
        #expect(!snapshot.isBridge)
    }

    @Test("a function removed mid-scan (ENOENT or ENODEV on one of its files) is gone, not a failed scan")
    func vanishesMidScan() throws {
        for errno in [Errno.noSuchFileOrDirectory, .operationNotSupportedByDevice] {
            let bus = alveoHost()
            bus.failReads(of: "bus/pci/devices/0000:03:00.0/driver_override", with: errno)
            let functions = try bus.reader.allFunctions().map(\.address.description)
            #expect(!functions.contains("0000:03:00.0"), "\(errno)")
            #expect(functions.contains("0000:01:00.0") && functions.contains("0000:01:00.1"), "\(errno)")
        }
        // Any other error still fails the scan: it says nothing about the device being gone.
        let bus = alveoHost()
        bus.failReads(of: "bus/pci/devices/0000:03:00.0/driver_override", with: .permissionDenied)
        #expect(throws: SysfsError.self) { try bus.reader.allFunctions() }
    }

    @Test("overrides are read only where asked: another device's (its lock held by a probe in progress) is never touched")
    func overridesOnlyWhereAsked() throws {
        let bus = alveoHost()
        bus.sysfs.writeFile("bus/pci/devices/0000:01:00.0/driver_override", "vfio-pci\n")
        // A read of the NIC's override fails: the stand-in for one that would wait for the NIC's probe.
        bus.failReads(of: "bus/pci/devices/0000:03:00.0/driver_override", with: .permissionDenied)
        #expect(throws: SysfsError.self) { try bus.reader.allFunctions() }
        let card = PCISlot("0000:01:00")!
        let functions = try bus.reader.allFunctions { address, _ in address.slot == card }
        #expect(functions.first { $0.address.description == "0000:01:00.0" }?.driverOverride == DriverName("vfio-pci"))
        let nic = try #require(functions.first { $0.address.description == "0000:03:00.0" })
        #expect(nic.driverOverride == nil)
        #expect(nic.driver == .bound(DriverName("e1000e")!))
    }

    @Test("an absent function is nil, not an error")
    func absent() throws {
        let bus = alveoHost()
        #expect(try bus.reader.snapshot(of: PCIAddress("0000:09:00.0")!) == nil)
        bus.sysfs.removeFunction("0000:01:00.1")
        #expect(try bus.reader.snapshot(of: PCIAddress("0000:01:00.1")!) == nil)
        let remaining = try #require(try bus.reader.snapshot(of: PCIAddress("0000:01:00.0")!))
        #expect(remaining.groupPeers.isEmpty)
    }

    @Test("the whole bus is listed; names that are not PCI addresses are ignored")
    func allFunctions() throws {
        let bus = alveoHost()
        bus.sysfs.writeFile("bus/pci/devices/..evil", "")
        let all = try bus.reader.allFunctions()
        #expect(all.map(\.address.description) == ["0000:00:01.0", "0000:00:1c.0", "0000:00:1f.3", "0000:01:00.0", "0000:01:00.1", "0000:03:00.0"])
        #expect(all.first?.isBridge == true)
    }

    @Test("a driver link whose name is not a driver name reads as unreadable, never as no driver", arguments: [
        "xdma\u{202e}gpj", "drv ü", ".hidden", String(repeating: "d", count: 65),
    ])
    func unreadableDriver(name: String) throws {
        let bus = alveoHost()
        bus.sysfs.addDriver(name)
        bus.sysfs.unbind("0000:01:00.1")
        bus.sysfs.bind("0000:01:00.1", to: name)
        #expect(try bus.reader.driver(of: PCIAddress("0000:01:00.1")!) == .unreadable(name))
        let card = try #require(try bus.reader.snapshot(of: PCIAddress("0000:01:00.0")!))
        #expect(card.groupPeers.first?.driver == .unreadable(name))
        #expect(try bus.reader.driver(of: PCIAddress("0000:01:00.0")!) == .bound(DriverName("xdma")!))
        bus.sysfs.unbind("0000:01:00.0")
        #expect(try bus.reader.driver(of: PCIAddress("0000:01:00.0")!) == .unbound)
    }

    @Test("a set driver_override is read back")
    func override() throws {
        let bus = alveoHost()
        try bus.write("vfio-pci", to: bus.sysfs.layout.attribute("driver_override", of: PCIAddress("0000:01:00.0")!))
        #expect(try bus.reader.driverOverride(of: PCIAddress("0000:01:00.0")!) == .vfioPCI)
    }
}

@Suite("The emulated PCI bus behaves like the kernel")
struct EmulatedPCIBusTests {
    @Test("drivers_probe succeeds even when no driver binds")
    func probeWithoutMatch() throws {
        let bus = alveoHost()
        bus.sysfs.unbind("0000:01:00.0")
        try bus.write("0000:01:00.0", to: bus.sysfs.layout.attribute("driver_override", of: PCIAddress("0000:01:00.0")!))
        try bus.write("nonexistent", to: bus.sysfs.layout.attribute("driver_override", of: PCIAddress("0000:01:00.0")!))
        try bus.write("0000:01:00.0", to: bus.sysfs.layout.driversProbe)
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == nil)
    }

    @Test("unbinding from the wrong driver fails with ENODEV")
    func wrongUnbind() {
        let bus = alveoHost()
        #expect(throws: SysfsError.self) {
            try bus.write("0000:01:00.0", to: bus.sysfs.layout.driver(.vfioPCI).appending("unbind"))
        }
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
    }

    @Test("a bridge's windows are the last four lines of its resource file, with or without SR-IOV lines", arguments: [13, 7])
    func bridgeWindows(bridgeResources: Int) throws {
        let bus = alveoHost()
        let unused = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        bus.sysfs.writeFile("bus/pci/devices/0000:00:01.0/resource", String(repeating: unused, count: bridgeResources)
            + "0x0000000000001000 0x0000000000001fff 0x0000000000000101\n"
            + "0x0000000090000000 0x0000000093ffffff 0x0000000000000200\n"
            + "0x0000380000000000 0x000038000fffffff 0x0000000000102201\n"
            + unused)
        let windows = try #require(try bus.reader.bridgeWindows(of: PCIAddress("0000:00:01.0")!))
        #expect(windows.io.kind == .io && windows.io.size == 0x1000)
        #expect(windows.memory.kind == .memory && windows.memory.size == 64 << 20)
        #expect(windows.prefetchableMemory.kind == .prefetchableMemory && windows.prefetchableMemory.size == 256 << 20)
        let bar = PCIResource(start: 0x3800_0800_0000, end: 0x3800_0FFF_FFFF, flags: 0x0014_220C)
        #expect(windows.prefetchableMemory.contains(bar) && !windows.memory.contains(bar))
        #expect(!PCIResource(start: 0, end: 0, flags: 0).isAssigned)
        #expect(!PCIResource(start: 0x9000_0000, end: 0x91FF_FFFF, flags: 0x2000_0200).isAssigned, "IORESOURCE_UNSET")
    }
}
