/// The host most tests start from: an Alveo (two functions on xdma, IOMMU group 5) behind root port
/// 00:01.0, and a NIC behind 00:1c.0 sharing group 7 with a sound device the host uses. IOMMU on,
/// vfio-pci loaded.
public func alveoHost() -> EmulatedPCIBus {
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
    sysfs.addFunction("0000:00:1c.0", id: "8086:a33c", classCode: 0x060400, driver: "pcieport", iommuGroup: 7, subsystem: nil)
    sysfs.addFunction("0000:03:00.0", id: "8086:10d3", classCode: 0x020000, driver: "e1000e", iommuGroup: 7, below: "0000:00:1c.0")
    sysfs.addFunction("0000:00:1f.3", id: "8086:a348", classCode: 0x040300, driver: "snd_hda_intel", iommuGroup: 7)
    return bus
}

/// The Alveo of ``alveoHost()`` lent to the domain "test" of libvirt's built-in test driver.
public let alveoOnTestDriverConfig = """
    [libvirt]
    uri = "test:///default"
    [[card]]
    name = "u200"
    address = "0000:01:00"
    guest = "test"
    """
