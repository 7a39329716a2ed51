import PassthroughCore

/// One line of a function's sysfs `resource` file: `start end flags`, each `0x%016llx`.
///
/// The lines follow the kernel's resource numbering: BARs 0–5, the ROM, the SR-IOV BARs (when the kernel
/// has `CONFIG_PCI_IOV`), then, for a bridge only, its four windows from `PCI_BRIDGE_RESOURCES` on
/// (I/O, memory, prefetchable memory, and one kept for CardBus). An unused resource is all zeros.
public struct PCIResource: Hashable, Sendable {
    /// `IORESOURCE_*` bits of `include/linux/ioport.h` that say what the range is.
    public enum Kind: Hashable, Sendable {
        case io, memory, prefetchableMemory, none
    }

    public var start: UInt64
    public var end: UInt64
    public var flags: UInt64

    static let ioFlag: UInt64 = 0x0000_0100
    static let memoryFlag: UInt64 = 0x0000_0200
    static let prefetchFlag: UInt64 = 0x0000_2000
    static let unsetFlag: UInt64 = 0x2000_0000
    static let disabledFlag: UInt64 = 0x1000_0000

    public init(start: UInt64, end: UInt64, flags: UInt64) {
        self.start = start
        self.end = end
        self.flags = flags
    }

    /// Parses one line; `nil` for anything but three hex numbers.
    init?(line: Substring) {
        let fields = line.split(separator: " ")
        guard fields.count == 3,
              let start = Self.hex(fields[0]), let end = Self.hex(fields[1]), let flags = Self.hex(fields[2])
        else { return nil }
        self.init(start: start, end: end, flags: flags)
    }

    public var kind: Kind {
        if flags & Self.ioFlag != 0 { return .io }
        if flags & Self.memoryFlag != 0 { return flags & Self.prefetchFlag != 0 ? .prefetchableMemory : .memory }
        return .none
    }

    /// Whether the kernel placed it: a range with a kind, an end past its start, not flagged unset or disabled.
    public var isAssigned: Bool {
        kind != .none && end > start && flags & (Self.unsetFlag | Self.disabledFlag) == 0
    }

    public var size: UInt64 { isAssigned ? end - start + 1 : 0 }

    /// The size of a range the kernel sized but did not place: it keeps the kind, flags it
    /// `IORESOURCE_UNSET` and moves it to start at 0 (a BAR it could not claim where the firmware put it).
    /// `nil` for anything else, including the all-zero line of a BAR whose assignment failed outright
    /// (`reset_resource()` in `drivers/pci/setup-bus.c` zeroes start, end and flags): only config space
    /// still knows that one's size.
    public var unplacedSize: UInt64? {
        guard kind != .none, flags & Self.unsetFlag != 0, end > start else { return nil }
        return end - start + 1
    }

    /// A line the kernel zeroed: an unimplemented BAR, or one whose assignment failed.
    public var isZero: Bool { start == 0 && end == 0 && flags == 0 }

    public func contains(_ other: PCIResource) -> Bool {
        isAssigned && other.isAssigned && other.start >= start && other.end <= end
    }

    private static func hex(_ text: Substring) -> UInt64? {
        guard text.hasPrefix("0x") else { return nil }
        return UInt64(text.dropFirst(2), radix: 16)
    }
}

/// A bridge's three address windows, as the kernel assigned them.
public struct BridgeWindows: Hashable, Sendable {
    public var io: PCIResource
    public var memory: PCIResource
    public var prefetchableMemory: PCIResource
}

extension PCISysfsReader {
    /// Every line of the function's `resource` file, in the kernel's numbering.
    public func resources(of address: PCIAddress) throws(SysfsError) -> [PCIResource] {
        let text = try io.read(layout.attribute("resource", of: address))
        return text.split(separator: "\n").compactMap(PCIResource.init(line:))
    }

    /// The bridge's windows: the kernel prints `PCI_BRIDGE_RESOURCES + 4` lines for a bridge, so the
    /// windows are the last four, whatever the kernel's configuration put before them. `nil` when the file
    /// has too few lines to be a bridge's.
    public func bridgeWindows(of address: PCIAddress) throws(SysfsError) -> BridgeWindows? {
        let lines = try resources(of: address)
        // Six BARs and the ROM come first in any configuration.
        guard lines.count >= 7 + 4 else { return nil }
        let first = lines.count - 4
        return BridgeWindows(io: lines[first], memory: lines[first + 1], prefetchableMemory: lines[first + 2])
    }
}
