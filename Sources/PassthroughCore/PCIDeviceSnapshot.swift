/// What sysfs says about one PCI function at one moment.
public struct PCIDeviceSnapshot: Hashable, Sendable {
    public var address: PCIAddress
    public var id: PCIID
    public var subsystemID: PCIID?
    /// The 24-bit class code, e.g. `0x058000` for a memory controller (typical of XDMA designs).
    public var classCode: UInt32
    public var driver: BoundDriver
    /// `nil` when the kernel reports `(null)`.
    public var driverOverride: DriverName?
    public var iommuGroup: Int?
    /// The other functions in the same IOMMU group, without this one.
    public var groupPeers: [GroupPeer]
    /// The bridge or root port above the function, if it is a PCI function itself.
    public var upstreamPort: PCIAddress?

    public init(
        address: PCIAddress, id: PCIID, subsystemID: PCIID? = nil, classCode: UInt32 = 0,
        driver: BoundDriver = .unbound, driverOverride: DriverName? = nil, iommuGroup: Int? = nil,
        groupPeers: [GroupPeer] = [], upstreamPort: PCIAddress? = nil
    ) {
        self.address = address
        self.id = id
        self.subsystemID = subsystemID
        self.classCode = classCode
        self.driver = driver
        self.driverOverride = driverOverride
        self.iommuGroup = iommuGroup
        self.groupPeers = groupPeers
        self.upstreamPort = upstreamPort
    }

    public var isBridge: Bool { PCIClass.isBridge(classCode) }
}

/// Another function in the same IOMMU group.
public struct GroupPeer: Hashable, Sendable {
    public var address: PCIAddress
    public var driver: BoundDriver
    public var classCode: UInt32

    public init(address: PCIAddress, driver: BoundDriver, classCode: UInt32) {
        self.address = address
        self.driver = driver
        self.classCode = classCode
    }

    public var isBridge: Bool { PCIClass.isBridge(classCode) }
}

public enum PCIClass {
    /// PCI-to-PCI and CardBus bridges have a non-normal header; VFIO tolerates them in a group.
    public static func isBridge(_ classCode: UInt32) -> Bool {
        let baseAndSub = classCode >> 8
        return baseAndSub == 0x0604 || baseAndSub == 0x0607 || baseAndSub == 0x0609
    }
}
