// What the kernel says about PCI functions in sysfs: IDs, class, driver, override, IOMMU group, the link
// as it trained, and who serves a port's hotplug and errors.

import PassthroughCore
import SystemPackage

/// Reads what the kernel says about PCI functions: IDs, class, driver, override, IOMMU group.
public struct PCISysfsReader: Sendable {
    public let layout: SysfsLayout
    public let io: any SysfsIO

    public init(layout: SysfsLayout, io: any SysfsIO = LinuxSysfsIO()) {
        self.layout = layout
        self.io = io
    }

    /// Every PCI function on the bus. Entries that are not PCI addresses are skipped: they are
    /// not ours to interpret, and must never become paths. A function removed while it is being read
    /// (any of its files ENOENT or ENODEV) is gone, not an error: one hotplug anywhere on the host must
    /// not fail every card's pass.
    ///
    /// `driver_override` is read only for the functions `readsOverride` names (the others' is `nil`): the
    /// kernel takes the device's lock to print it, and a device mid-probe holds its lock for the whole probe,
    /// so a scan reading every override waits for every probe on the host — eight cards hot-added at once
    /// are probed one after another, and each card's pass would wait for all of them.
    public func allFunctions(
        readingOverrideOf readsOverride: (PCIAddress, PCIID) -> Bool = { _, _ in true }
    ) throws(SysfsError) -> [PCIDeviceSnapshot] {
        var snapshots: [PCIDeviceSnapshot] = []
        for name in try io.list(layout.pciDevices) {
            guard let address = PCIAddress(name) else { continue }
            do {
                if let snapshot = try snapshot(of: address, readingOverride: { readsOverride(address, $0) }) {
                    snapshots.append(snapshot)
                }
            } catch where error.isGone {
                continue
            }
        }
        return snapshots
    }

    /// One function, or `nil` when it is not on the bus (removed, or not yet re-enumerated).
    public func snapshot(
        of address: PCIAddress, readingOverride readsOverride: (PCIID) -> Bool = { _ in true }
    ) throws(SysfsError) -> PCIDeviceSnapshot? {
        guard io.exists(layout.device(address)), let id = try id(of: address) else { return nil }
        let group = try iommuGroup(of: address)
        return PCIDeviceSnapshot(
            address: address,
            id: id,
            subsystemID: try subsystemID(of: address),
            classCode: try classCode(of: address),
            driver: try driver(of: address),
            driverOverride: readsOverride(id) ? try driverOverride(of: address) : nil,
            iommuGroup: group,
            groupPeers: try group.map { group throws(SysfsError) in try peers(inGroup: group, excluding: address) } ?? [],
            upstreamPort: try upstreamPort(of: address)
        )
    }

    /// The vendor and device ID, or `nil` when the function is not on the bus (any more).
    public func id(of address: PCIAddress) throws(SysfsError) -> PCIID? {
        do throws(SysfsError) {
            let vendor = try io.read(layout.attribute("vendor", of: address))
            let device = try io.read(layout.attribute("device", of: address))
            guard let parsed = PCIID(sysfsVendor: vendor, sysfsDevice: device) else {
                throw SysfsError(operation: .read, path: layout.attribute("vendor", of: address), errno: .invalidArgument)
            }
            return parsed
        } catch where error.isNotFound {
            // Removed between the existence check and the read.
            return nil
        }
    }

    /// The driver bound right now, read from the `driver` link: the only reliable witness. A link whose
    /// last component is not a driver name is `unreadable`, never "no driver".
    public func driver(of address: PCIAddress) throws(SysfsError) -> BoundDriver {
        guard let target = try io.readLink(layout.attribute("driver", of: address)) else { return .unbound }
        guard let name = target.lastComponent?.string else { return .unreadable(target.string) }
        return DriverName(name).map(BoundDriver.bound) ?? .unreadable(name)
    }

    public func driverOverride(of address: PCIAddress) throws(SysfsError) -> DriverName? {
        let path = layout.attribute("driver_override", of: address)
        guard io.exists(path) else { return nil }
        let text = try io.read(path).trimmingSysfsNewline()
        // The kernel prints "(null)" when no override is set.
        return text == "(null)" || text.isEmpty ? nil : DriverName(text)
    }

    public func iommuGroup(of address: PCIAddress) throws(SysfsError) -> Int? {
        guard let target = try io.readLink(layout.attribute("iommu_group", of: address)),
              let name = target.lastComponent?.string
        else { return nil }
        return Int(name)
    }

    /// The bridge the function hangs off, from the device's place in `/sys/devices`.
    public func upstreamPort(of address: PCIAddress) throws(SysfsError) -> PCIAddress? {
        guard let target = try io.readLink(layout.device(address)) else { return nil }
        var parent = target
        parent.removeLastComponent()
        return parent.lastComponent.flatMap { PCIAddress($0.string) }
    }

    public func classCode(of address: PCIAddress) throws(SysfsError) -> UInt32 {
        try optionalNumber("class", of: address) ?? 0
    }

    private func subsystemID(of address: PCIAddress) throws(SysfsError) -> PCIID? {
        guard let vendor = try optionalText("subsystem_vendor", of: address),
              let device = try optionalText("subsystem_device", of: address)
        else { return nil }
        return PCIID(sysfsVendor: vendor, sysfsDevice: device)
    }

    private func peers(inGroup group: Int, excluding address: PCIAddress) throws(SysfsError) -> [GroupPeer] {
        var peers: [GroupPeer] = []
        for name in try io.list(layout.iommuGroupDevices(group)) {
            guard let peer = PCIAddress(name), peer != address else { continue }
            peers.append(GroupPeer(address: peer, driver: try driver(of: peer), classCode: try classCode(of: peer)))
        }
        return peers.sorted { $0.address < $1.address }
    }

    private func optionalText(_ attribute: String, of address: PCIAddress) throws(SysfsError) -> String? {
        let path = layout.attribute(attribute, of: address)
        guard io.exists(path) else { return nil }
        return try io.read(path)
    }

    private func optionalNumber(_ attribute: String, of address: PCIAddress) throws(SysfsError) -> UInt32? {
        try optionalText(attribute, of: address).flatMap(SysfsNumber.parse)
    }
}

extension PCISysfsReader {
    /// The link of a PCIe function as it trained, and what the function itself can do; `nil` where the
    /// kernel has no such attributes (not PCIe) or says `Unknown`.
    public func link(of address: PCIAddress) -> (current: PCILinkState?, maximum: PCILinkState?) {
        func state(_ speed: String, _ width: String) -> PCILinkState? {
            guard let speedText = try? io.read(layout.attribute(speed, of: address)),
                  let widthText = try? io.read(layout.attribute(width, of: address))
            else { return nil }
            return PCILinkState(speed: speedText, width: widthText)
        }
        return (state("current_link_speed", "current_link_width"), state("max_link_speed", "max_link_width"))
    }

    /// The link between `function` and the port above it: as trained, and the best both ends can do (the
    /// lesser of their `max_link_*`; the function's alone when the port does not say).
    public func trainedLink(of function: PCIAddress, below port: PCIAddress?) -> (now: PCILinkState?, capable: PCILinkState?) {
        let (now, maximum) = link(of: function)
        let portMaximum = port.flatMap { link(of: $0).maximum }
        return (now, maximum.map { card in portMaximum.map(card.limited(by:)) ?? card })
    }
}

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

extension String {
    func trimmingSysfsNewline() -> String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == " " { text = text.dropLast() }
        return String(text)
    }
}
