import PassthroughCore
import SystemPackage

/// Paths of the PCI bus ABI under a sysfs root (`/sys`, or a test tree).
public struct SysfsLayout: Sendable, Hashable {
    public var root: FilePath

    public init(root: FilePath = "/sys") {
        self.root = root
    }

    public var pciDevices: FilePath { root.appending("bus/pci/devices") }
    public var pciDrivers: FilePath { root.appending("bus/pci/drivers") }
    public var driversProbe: FilePath { root.appending("bus/pci/drivers_probe") }
    public var rescan: FilePath { root.appending("bus/pci/rescan") }
    public var iommuGroups: FilePath { root.appending("kernel/iommu_groups") }
    /// Hotplug slots and the slots the firmware names: `bus/pci/slots/<name>/address`.
    public var pciSlots: FilePath { root.appending("bus/pci/slots") }

    /// A PCIe port-service driver (`pciehp`, `aer`) and the port services it holds.
    public func pciExpressDriver(_ name: String) -> FilePath {
        root.appending("bus/pci_express/drivers/\(name)")
    }
    /// The VFIO group character devices (`/dev/vfio/GROUP`), each with its `dev` number: `class/vfio/<name>`.
    package var vfioGroups: FilePath { root.appending("class/vfio") }

    /// The directory of one function. `PCIAddress` only prints `dddd:bb:dd.f`, so this can never
    /// leave `bus/pci/devices`.
    public func device(_ address: PCIAddress) -> FilePath {
        pciDevices.appending(address.description)
    }

    public func attribute(_ name: String, of address: PCIAddress) -> FilePath {
        device(address).appending(name)
    }

    public func driver(_ name: DriverName) -> FilePath {
        pciDrivers.appending(name.rawValue)
    }

    public func iommuGroupDevices(_ group: Int) -> FilePath {
        iommuGroups.appending("\(group)/devices")
    }
}
