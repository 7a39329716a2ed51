import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// One BAR of an emulated function: what it asks for.
public struct EmulatedBAR: Hashable, Sendable {
    public var index: Int
    public var size: UInt64
    public var space: PCIBar.Space
    public var is64Bit: Bool

    public init(_ index: Int, size: UInt64, _ space: PCIBar.Space = .memory, is64Bit: Bool = false) {
        self.index = index
        self.size = size
        self.space = space
        self.is64Bit = is64Bit
    }

    /// The BAR's read-only type bits.
    var typeBits: UInt32 {
        switch space {
        case .io: 0x1
        case .memory: is64Bit ? 0x4 : 0
        case .prefetchableMemory: (is64Bit ? 0x4 : 0) | 0x8
        }
    }

    /// `IORESOURCE_*` flags as the kernel prints them: MEM/IO, PREFETCH, MEM_64, SIZEALIGN.
    var resourceFlags: UInt64 {
        switch space {
        case .io: 0x0004_0101
        case .memory: 0x0004_0200 | (is64Bit ? 0x0010_0000 : 0)
        case .prefetchableMemory: 0x0004_2200 | (is64Bit ? 0x0010_0000 : 0)
        }
    }
}

/// How the kernel left a BAR in the function's `resource` file.
public enum BARPlacement: Sendable {
    /// Placed: consecutive addresses from `base`, each BAR aligned to its size.
    case assigned(base: UInt64)
    /// The assignment failed: `reset_resource()` zeroed the line (what a rescan that finds no room leaves).
    case zeroed
    /// Sized but not claimed: start 0, end size-1, `IORESOURCE_UNSET`.
    case unset
}

extension EmulatedPCIBus {
    /// Gives a function on the bus its BARs: the registers in its `config` (which then size as hardware does:
    /// write all-ones, read the mask back) and its `resource` file, written as the kernel would leave it.
    /// With `.assigned`, the BARs in `unplaced` got no room: their lines are zeroed, as a failed assignment leaves them.
    public func setBARs(_ address: String, _ bars: [EmulatedBAR], _ placement: BARPlacement, except unplaced: Set<Int> = []) {
        let configPath = sysfs.root.appending("bus/pci/devices/\(address)/config")
        var registers: [Int: (writable: UInt32, fixed: UInt32)] = [:]
        for index in 0..<6 { registers[0x10 + 4 * index] = (0, 0) }
        var lines = [String](repeating: Self.line(0, 0, 0), count: 13)
        var next: UInt64 = if case .assigned(let base) = placement { base } else { 0 }
        for bar in bars {
            let offset = 0x10 + 4 * bar.index
            let mask = ~(bar.size - 1)
            registers[offset] = (UInt32(truncatingIfNeeded: mask) & (bar.space == .io ? ~0x3 : ~0xF), bar.typeBits)
            if bar.is64Bit { registers[offset + 4] = (UInt32(truncatingIfNeeded: mask >> 32), 0) }
            switch placement {
            case .assigned where !unplaced.contains(bar.index):
                next = (next + bar.size - 1) & mask
                lines[bar.index] = Self.line(next, next + bar.size - 1, bar.resourceFlags)
                writeRegister(configPath, offset, UInt32(truncatingIfNeeded: next) | bar.typeBits)
                if bar.is64Bit { writeRegister(configPath, offset + 4, UInt32(truncatingIfNeeded: next >> 32)) }
                next += bar.size
            case .unset:
                lines[bar.index] = Self.line(0, bar.size - 1, bar.resourceFlags | 0x2000_0000)
                writeRegister(configPath, offset, bar.typeBits)
            case .zeroed, .assigned:
                writeRegister(configPath, offset, bar.typeBits)
            }
        }
        emulateBARRegisters(configPath, registers)
        sysfs.writeFile("bus/pci/devices/\(address)/resource", lines.joined())
    }

    /// The link attributes the kernel gives a PCIe function: as trained, and as the function can do.
    public func setLink(_ address: String, current: (speed: String, width: Int), maximum: (speed: String, width: Int)) {
        sysfs.writeFile("bus/pci/devices/\(address)/current_link_speed", "\(current.speed)\n")
        sysfs.writeFile("bus/pci/devices/\(address)/current_link_width", "\(current.width)\n")
        sysfs.writeFile("bus/pci/devices/\(address)/max_link_speed", "\(maximum.speed)\n")
        sysfs.writeFile("bus/pci/devices/\(address)/max_link_width", "\(maximum.width)\n")
    }

    private func writeRegister(_ path: FilePath, _ offset: Int, _ value: UInt32) {
        try! LinuxSysfsIO().writeBytes(path, offset: Int64(offset), (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) })
    }

    private static func line(_ start: UInt64, _ end: UInt64, _ flags: UInt64) -> String {
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16).leftPadded(16) }
        return "\(hex(start)) \(hex(end)) \(hex(flags))\n"
    }
}
