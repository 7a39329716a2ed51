import PassthroughCore
import PassthroughSysfs

/// The Alveo host of ``alveoHost()`` with config spaces: root port 00:01.0 (type-1, PCIe
/// capability after PM and MSI) above the card's two functions.
public func reflashHost(port: ConfigSpaceImage = .rootPort()) -> EmulatedPCIBus {
    let sysfs = FakeSysfs()
    let bus = EmulatedPCIBus(sysfs)
    bus.loadDriver("pcieport")
    bus.loadDriver("xdma", claiming: ["10ee:903f", "10ee:9038"])
    sysfs.addFunction("0000:00:01.0", id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 1,
                      subsystem: nil, config: port.bytes)
    addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
    addCardFunction(sysfs, "0000:01:00.1", id: "10ee:9038")
    return bus
}

public func addCardFunction(_ sysfs: FakeSysfs, _ address: String, id: String, driver: String? = "xdma") {
    let pciID = PCIID(id)!
    sysfs.addFunction(address, id: id, driver: driver, iommuGroup: 5, below: "0000:00:01.0",
                      config: ConfigSpaceImage.endpoint(vendor: pciID.vendor, device: pciID.device).bytes)
}

public let rootPort = PCIAddress("0000:00:01.0")!
public let cardFunction = PCIAddress("0000:01:00.0")!

extension EmulatedPCIBus {
    public var reader: PCISysfsReader { PCISysfsReader(layout: sysfs.layout, io: self) }

    public func configSpace(_ address: PCIAddress) -> ConfigSpace {
        ConfigSpace(address: address, layout: sysfs.layout, io: self)
    }
}
