import PassthroughCore

/// Who handles a port's hotplug and errors, as sysfs shows it.
///
/// The PCIe port driver gives each service it takes on a device of its own on the `pci_express` bus,
/// named `PORT:pcieNNN` (`0000:00:1c.0:pcie004`), and creates one only when the platform let the OS
/// control that service. A hotplug driver (pciehp, acpiphp) registers a slot under `bus/pci/slots` with a
/// `power` file; a slot without one is only the firmware naming a physical slot.
extension PCISysfsReader {
    /// Whether the port-service driver `driver` (`pciehp`, `aer`) holds one of `port`'s services.
    public func portService(of port: PCIAddress, boundTo driver: String) -> Bool {
        let names = (try? io.list(layout.pciExpressDriver(driver))) ?? []
        return names.contains { $0.hasPrefix("\(port):pcie") }
    }

    /// Whether a hotplug driver registered a slot at `slot` (its `address` file reads `DDDD:BB:DD`).
    public func hasHotplugSlot(_ slot: PCISlot) -> Bool {
        for name in (try? io.list(layout.pciSlots)) ?? [] {
            let directory = layout.pciSlots.appending(name)
            guard let address = try? io.read(directory.appending("address")) else { continue }
            if address.trimmingSysfsNewline() == slot.description, io.exists(directory.appending("power")) { return true }
        }
        return false
    }
}
