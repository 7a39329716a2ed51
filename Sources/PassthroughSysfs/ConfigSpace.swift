import PassthroughCore
import SystemPackage

/// One function's PCI config space, through its sysfs `config` file (`pread`/`pwrite`).
///
/// Reads are little-endian, of exactly the width of the field. The only writes are 16-bit
/// read-modify-writes of the bits in ``ConfigSpaceBit``: nothing else in config space is touched.
public struct ConfigSpace: Sendable {
    /// What the low 7 bits of the header type say about the layout of offsets 0x10–0x3F.
    public enum HeaderLayout: Hashable, Sendable {
        case endpoint
        case bridge
        case cardBus
        case unknown(UInt8)
    }

    public let address: PCIAddress
    public let path: FilePath
    public let io: any SysfsIO

    public init(address: PCIAddress, layout: SysfsLayout, io: any SysfsIO) {
        self.address = address
        self.path = layout.attribute("config", of: address)
        self.io = io
    }

    // MARK: Header

    /// The raw vendor ID: `0xffff` when nothing answers. Does not throw for all-ones, so the
    /// link probe can tell "lost" from "unreadable".
    public func vendorID() throws(ConfigSpaceError) -> UInt16 {
        try read16(ConfigSpaceLayout.vendorID)
    }

    public func command() throws(ConfigSpaceError) -> UInt16 {
        try responding()
        return try read16(ConfigSpaceLayout.command)
    }

    public func headerLayout() throws(ConfigSpaceError) -> HeaderLayout {
        try responding()
        let type = try read8(ConfigSpaceLayout.headerType) & ConfigSpaceLayout.headerLayoutMask
        switch type {
        case 0: return .endpoint
        case 1: return .bridge
        case 2: return .cardBus
        default: return .unknown(type)
        }
    }

    /// Bridge Control; only a type-1 header has one.
    public func bridgeControl() throws(ConfigSpaceError) -> UInt16 {
        try requireBridge()
        return try read16(ConfigSpaceLayout.bridgeControl)
    }

    // MARK: PCI Express capability

    /// Offset of the PCI Express capability (ID 0x10), found by walking the capability list with
    /// the kernel's guards: at most 48 hops, pointers below 0x40 end the walk, the low two
    /// pointer bits are reserved and masked off.
    public func expressCapability() throws(ConfigSpaceError) -> Int {
        try responding()
        guard try read16(ConfigSpaceLayout.status) & ConfigSpaceLayout.statusCapabilityList != 0 else {
            throw .noExpressCapability(address)
        }
        let headerLayout = try headerLayout()
        guard headerLayout == .endpoint || headerLayout == .bridge else { throw .noExpressCapability(address) }
        var pointer = Int(try read8(ConfigSpaceLayout.capabilitiesPointer))
        for _ in 0..<ConfigSpaceLayout.maximumCapabilityHops {
            pointer &= ~3
            guard pointer >= ConfigSpaceLayout.firstCapability else { break }
            let entry = try read16(pointer)
            let id = UInt8(entry & 0xFF)
            // 0xff is what an all-ones read gives: the device went away mid-walk.
            if id == 0xFF { break }
            if id == ConfigSpaceLayout.expressCapabilityID { return pointer }
            pointer = Int(entry >> 8)
        }
        throw .noExpressCapability(address)
    }

    public func deviceControl() throws(ConfigSpaceError) -> UInt16 {
        try read16(try expressCapability() + ConfigSpaceLayout.expressDeviceControl)
    }

    public func linkControl() throws(ConfigSpaceError) -> UInt16 {
        try read16(try expressCapability() + ConfigSpaceLayout.expressLinkControl)
    }

    public func linkStatus() throws(ConfigSpaceError) -> UInt16 {
        try read16(try expressCapability() + ConfigSpaceLayout.expressLinkStatus)
    }

    public func linkCapabilities() throws(ConfigSpaceError) -> UInt32 {
        try read32(try expressCapability() + ConfigSpaceLayout.expressLinkCapabilities)
    }

    /// Whether the port reports Data Link Layer Link Active (Link Capabilities bit 20). Without it link
    /// state cannot be seen: only a config read that fails tells the card is gone.
    public func reportsLinkActive() throws(ConfigSpaceError) -> Bool {
        try linkCapabilities() & ConfigSpaceLayout.linkActiveReportingCapable != 0
    }

    /// Whether the port has a hot-plug capable slot: Slot Capabilities bit 6, read only when the PCI Express
    /// Capabilities register says a slot is implemented (as the kernel decides `is_hotplug_bridge`).
    public func isHotPlugCapable() throws(ConfigSpaceError) -> Bool {
        let capability = try expressCapability()
        guard try read16(capability + ConfigSpaceLayout.expressCapabilities) & ConfigSpaceLayout.slotImplemented != 0 else {
            return false
        }
        return try read32(capability + ConfigSpaceLayout.expressSlotCapabilities) & ConfigSpaceLayout.hotPlugCapable != 0
    }

    /// Whether the function has an Advanced Error Reporting capability (extended ID 0x0001).
    public func hasAdvancedErrorReporting() throws(ConfigSpaceError) -> Bool {
        try extendedCapability(ConfigSpaceLayout.advancedErrorReportingID) != nil
    }

    /// Offset of an extended capability, walking the list at 0x100 with the kernel's guards
    /// (`pci_find_next_ext_capability`): a zero or all-ones header ends it, as does a pointer back into
    /// conventional space or more hops than headers fit. A config space of 256 bytes has none.
    public func extendedCapability(_ id: UInt16) throws(ConfigSpaceError) -> Int? {
        _ = try expressCapability()
        var pointer = ConfigSpaceLayout.firstExtendedCapability
        for _ in 0..<ConfigSpaceLayout.maximumExtendedCapabilityHops {
            let header: UInt32
            do {
                header = try read32(pointer)
            } catch .shortRead where pointer == ConfigSpaceLayout.firstExtendedCapability {
                return nil
            }
            if header == 0 || header == 0xFFFF_FFFF { return nil }
            if UInt16(header & 0xFFFF) == id { return pointer }
            pointer = Int(header >> 20) & ~3
            guard pointer >= ConfigSpaceLayout.firstExtendedCapability else { return nil }
        }
        return nil
    }

    /// Whether the Data Link Layer is up; `nil` when this port does not report it (Link
    /// Capabilities bit 20 clear), in which case only a rescan can tell.
    public func isLinkActive() throws(ConfigSpaceError) -> Bool? {
        let capability = try expressCapability()
        let capabilities = try read32(capability + ConfigSpaceLayout.expressLinkCapabilities)
        guard capabilities & ConfigSpaceLayout.linkActiveReportingCapable != 0 else { return nil }
        let status = try read16(capability + ConfigSpaceLayout.expressLinkStatus)
        return status & ConfigSpaceLayout.dataLinkLayerLinkActive != 0
    }

    // MARK: The only writes

    /// Whether `bit` is set.
    public func isSet(_ bit: ConfigSpaceBit) throws(ConfigSpaceError) -> Bool {
        try read16(try offset(of: bit.register)) & bit.mask != 0
    }

    /// Sets or clears one bit with a 16-bit read-modify-write of its register; other bits are
    /// written back as read. Nothing is written when the bit already has the value.
    ///
    /// - Returns: whether the bit was set before.
    @discardableResult
    public func set(_ bit: ConfigSpaceBit, to on: Bool) throws(ConfigSpaceError) -> Bool {
        let offset = try offset(of: bit.register)
        let before = try read16(offset)
        // Writing back an all-ones read would set every bit of the register.
        if before == 0xFFFF { try responding() }
        let after = on ? before | bit.mask : before & ~bit.mask
        if after != before {
            do {
                try io.writeBytes(path, offset: Int64(offset), [UInt8(after & 0xFF), UInt8(after >> 8)])
            } catch {
                throw .access(error)
            }
        }
        return before & bit.mask != 0
    }

    private func offset(of register: ConfigSpaceBit.Register) throws(ConfigSpaceError) -> Int {
        switch register {
        case .command:
            try responding()
            return ConfigSpaceLayout.command
        case .deviceControl:
            return try expressCapability() + ConfigSpaceLayout.expressDeviceControl
        case .bridgeControl:
            try requireBridge()
            return ConfigSpaceLayout.bridgeControl
        case .linkControl:
            return try expressCapability() + ConfigSpaceLayout.expressLinkControl
        }
    }

    // MARK: Reads

    private func responding() throws(ConfigSpaceError) {
        if try vendorID() == 0xFFFF { throw .notResponding(address) }
    }

    private func requireBridge() throws(ConfigSpaceError) {
        try responding()
        let type = try read8(ConfigSpaceLayout.headerType)
        guard type & ConfigSpaceLayout.headerLayoutMask == 1 else { throw .notABridge(address, headerType: type) }
    }

    /// One little-endian field of `width` bytes (1, 2 or 4): the one funnel every config-space read goes through.
    func readField(_ offset: Int, width: Int) throws(ConfigSpaceError) -> UInt32 {
        let bytes: [UInt8]
        do {
            bytes = try io.readBytes(path, offset: Int64(offset), count: width)
        } catch {
            throw .access(error)
        }
        guard bytes.count == width else { throw .shortRead(address, offset: offset, expected: width, got: bytes.count) }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    private func read8(_ offset: Int) throws(ConfigSpaceError) -> UInt8 { UInt8(try readField(offset, width: 1)) }
    private func read16(_ offset: Int) throws(ConfigSpaceError) -> UInt16 { UInt16(try readField(offset, width: 2)) }
    private func read32(_ offset: Int) throws(ConfigSpaceError) -> UInt32 { try readField(offset, width: 4) }
}
