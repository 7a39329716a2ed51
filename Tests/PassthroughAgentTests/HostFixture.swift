import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import SystemPackage

/// A hand-made host: IOMMU on, vfio-pci loaded, an Alveo with two functions in group 5, and a NIC
/// sharing group 7 with a sound device the host uses.
func readyHost() -> EmulatedPCIBus {
    let sysfs = FakeSysfs()
    let bus = EmulatedPCIBus(sysfs)
    bus.loadDriver("pcieport")
    bus.loadDriver("xdma", claiming: ["10ee:903f", "10ee:9038"])
    bus.loadDriver("vfio-pci")
    bus.loadDriver("e1000e", claiming: ["8086:10d3"])
    bus.loadDriver("snd_hda_intel", claiming: ["8086:a348"])
    sysfs.addFunction("0000:00:01.0", id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 1, subsystem: nil)
    sysfs.addFunction("0000:01:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
    sysfs.addFunction("0000:01:00.1", id: "10ee:9038", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
    sysfs.addFunction("0000:03:00.0", id: "8086:10d3", classCode: 0x020000, driver: "e1000e", iommuGroup: 7)
    sysfs.addFunction("0000:00:1f.3", id: "8086:a348", classCode: 0x040300, driver: "snd_hda_intel", iommuGroup: 7)
    return bus
}

/// A host whose firmware has the IOMMU off: no groups at all, and vfio-pci not loaded.
func hostWithoutIOMMU() -> EmulatedPCIBus {
    let sysfs = FakeSysfs()
    let bus = EmulatedPCIBus(sysfs)
    bus.loadDriver("xdma", claiming: ["10ee:903f"])
    sysfs.addFunction("0000:01:00.0", id: "10ee:903f", driver: "xdma")
    return bus
}

extension EmulatedPCIBus {
    var host: HostEnvironment {
        HostEnvironment(sysfsRoot: sysfs.root, procRoot: sysfs.root.appending("proc"), io: self)
    }

    /// Fake `/proc` files under the tree, for `check`'s hints.
    func setProc(_ name: String, _ contents: String) {
        sysfs.writeFileCreatingDirectories("proc/\(name)", contents)
    }
}

let exampleConfig = """
    [[card]]
    name = "u200"
    address = "0000:01:00"
    ids = ["10ee:903f", "10ee:9038"]
    guest = "fpga-dev"

    [[card]]
    name = "nic"
    address = "0000:03:00.0"
    guest = "router"
    """
