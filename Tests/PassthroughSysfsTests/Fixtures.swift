import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport

func card(_ name: String, address: String? = nil, ids: [String] = [], hostDriver: HostDriverPolicy = .auto) -> CardConfig {
    CardConfig(name: CardName(name)!, address: address.flatMap(PCIAddressSelector.init),
               ids: ids.compactMap(PCIID.init), guest: GuestName("fpga-dev")!, hostDriver: hostDriver)
}
