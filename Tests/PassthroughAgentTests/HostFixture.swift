import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import SystemPackage

/// The shared Alveo host (see `alveoHost()` in the test support).
func readyHost() -> EmulatedPCIBus { alveoHost() }

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
