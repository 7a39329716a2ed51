import PassthroughCore
import SystemPackage

/// A BAR's register as config space shows it: which window it needs, whether it takes two registers.
public struct BARRegister: Hashable, Sendable {
    public var index: Int
    public var space: PCIBar.Space
    public var is64Bit: Bool
    /// Whether the register reads anything but zero: type bits (64-bit, prefetchable, I/O) or an address left
    /// in it. Such a BAR is implemented for certain; one that reads zero may be unimplemented (hard-wired to
    /// zero), and only sizing can tell.
    public var readsNonZero: Bool

    /// Decodes the read-only type bits of a BAR (PCI Local Bus 3.0 §6.2.5.1); `nil` for the reserved type.
    init?(index: Int, raw: UInt32) {
        self.index = index
        readsNonZero = raw != 0
        if raw & 0x1 != 0 {
            space = .io
            is64Bit = false
            return
        }
        switch raw >> 1 & 0x3 {
        case 0: is64Bit = false
        case 2: is64Bit = true
        default: return nil
        }
        space = raw & 0x8 != 0 ? .prefetchableMemory : .memory
    }
}

/// Sizing a BAR the way the kernel's `__pci_read_base()` does: decoding off, all-ones written, the mask
/// read back, everything restored. The only other config-space writes this code makes; done only for a BAR
/// whose `resource` line the kernel zeroed (its assignment failed), on a function no guest can hold.
extension ConfigSpace {
    static let firstBAR = 0x10
    static let endpointBARs = 6
    /// Command register: I/O Space and Memory Space decoding.
    static let decodeBits: UInt16 = 0x0003

    /// The registers of a type-0 header's six BARs; the upper half of a 64-bit BAR is not one of its own.
    public func barRegisters() throws(ConfigSpaceError) -> [BARRegister] {
        guard try headerLayout() == .endpoint else { return [] }
        var registers: [BARRegister] = []
        var index = 0
        while index < Self.endpointBARs {
            let raw = try readField(Self.firstBAR + 4 * index, width: 4)
            if let register = BARRegister(index: index, raw: raw) {
                registers.append(register)
                if register.is64Bit { index += 1 }
            }
            index += 1
        }
        return registers
    }

    /// How much address space the BAR asks for; 0 for one that is not implemented.
    public func size(of register: BARRegister) throws(ConfigSpaceError) -> UInt64 {
        if try vendorID() == 0xFFFF { throw .notResponding(address) }
        let offset = Self.firstBAR + 4 * register.index
        let command = UInt16(try readField(0x04, width: 2))
        if command & Self.decodeBits != 0 { try writeRegister(0x04, width: 2, UInt32(command & ~Self.decodeBits)) }
        defer { if command & Self.decodeBits != 0 { try? writeRegister(0x04, width: 2, UInt32(command)) } }
        let low = try probe(offset)
        switch register.space {
        case .io:
            // An I/O BAR may implement only the low 16 address bits; the rest then read back as zeros.
            var mask = low & ~UInt32(0x3)
            if mask & 0xFFFF_0000 == 0 { mask |= 0xFFFF_0000 }
            return mask & 0xFFFF == 0 ? 0 : UInt64(~mask &+ 1)
        case .memory, .prefetchableMemory:
            let high: UInt32 = register.is64Bit ? try probe(offset + 4) : 0xFFFF_FFFF
            let mask = (UInt64(high) << 32 | UInt64(low)) & ~UInt64(0xF)
            return mask == 0 || mask == 0xFFFF_FFFF_0000_0000 ? 0 : ~mask &+ 1
        }
    }

    /// Writes all-ones to one register, reads what sticks, puts the old value back.
    private func probe(_ offset: Int) throws(ConfigSpaceError) -> UInt32 {
        let original = try readField(offset, width: 4)
        try writeRegister(offset, width: 4, 0xFFFF_FFFF)
        let sized = try readField(offset, width: 4)
        try writeRegister(offset, width: 4, original)
        return sized
    }

    private func writeRegister(_ offset: Int, width: Int, _ value: UInt32) throws(ConfigSpaceError) {
        do {
            try io.writeBytes(path, offset: Int64(offset), (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) })
        } catch {
            throw .access(error)
        }
    }
}

extension PCISysfsReader {
    /// The BARs of one function: from its `resource` file, and for a line the kernel zeroed, from config
    /// space, sized by `sizeZeroed` (which may answer from what it found earlier, or decline with `nil`:
    /// then such a BAR is not reported). `[]` when the function has no `resource` file or config space
    /// says it is not an endpoint.
    public func bars(of address: PCIAddress,
                     sizeZeroed: (ConfigSpace, BARRegister) -> UInt64? = { _, _ in nil }) throws(SysfsError) -> [PCIBar] {
        guard io.exists(layout.attribute("resource", of: address)) else { return [] }
        let lines = try resources(of: address)
        let config = ConfigSpace(address: address, layout: layout, io: io)
        // Without config space (not root, a device gone mid-read) only the lines are judged.
        let registers = (try? config.barRegisters()).map { Dictionary(uniqueKeysWithValues: $0.map { ($0.index, $0) }) }
        var bars: [PCIBar] = []
        for index in 0..<min(ConfigSpace.endpointBARs, lines.count) {
            let line = lines[index]
            if line.isAssigned {
                bars.append(PCIBar(function: address, index: index, size: line.size, space: Self.space(of: line),
                                   is64Bit: registers?[index]?.is64Bit ?? false, isAssigned: true))
            } else if let size = line.unplacedSize {
                bars.append(PCIBar(function: address, index: index, size: size, space: Self.space(of: line),
                                   is64Bit: registers?[index]?.is64Bit ?? false, isAssigned: false))
            } else if line.isZero, let register = registers?[index], let size = sizeZeroed(config, register), size > 0 {
                bars.append(PCIBar(function: address, index: index, size: size, space: register.space,
                                   is64Bit: register.is64Bit, isAssigned: false))
            }
        }
        return bars
    }

    private static func space(of line: PCIResource) -> PCIBar.Space {
        switch line.kind {
        case .io: .io
        case .prefetchableMemory: .prefetchableMemory
        case .memory, .none: .memory
        }
    }
}
