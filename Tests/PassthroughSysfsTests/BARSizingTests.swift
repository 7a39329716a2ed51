import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import Testing

/// The BARs of a function as the agent reads them: the `resource` lines the kernel writes, and config-space
/// sizing for a line it zeroed after failing to place the BAR (`reset_resource()` in setup-bus.c).
@Suite("BARs: resource lines and config-space sizing")
struct BARSizingTests {
    static let card = "0000:01:00.0"
    static let bars = [
        EmulatedBAR(0, size: 1 << 20),
        EmulatedBAR(2, size: 256 << 20, .prefetchableMemory, is64Bit: true),
        EmulatedBAR(4, size: 64 << 10),
    ]

    /// Sizes every zeroed BAR, counting how many it was asked.
    final class Sizer: @unchecked Sendable {
        var asked: [Int] = []
        func callAsFunction(_ config: ConfigSpace, _ register: BARRegister) -> UInt64? {
            asked.append(register.index)
            return try? config.size(of: register)
        }
    }

    private func bars(_ bus: EmulatedPCIBus, sizer: Sizer? = Sizer()) throws -> [String] {
        try bus.reader.bars(of: PCIAddress(Self.card)!) { config, register in sizer?(config, register) }.map { bar in
            "\(bar.index) \(PCIBar.sizeText(bar.size)) \(bar.space)\(bar.is64Bit ? " 64" : "") \(bar.isAssigned ? "assigned" : "unassigned")"
        }
    }

    @Test("all placed: lines with an address are trusted; only the zeroed ones (1, 5: unimplemented, which only sizing can tell) are asked about, and size to nothing")
    func assigned() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, Self.bars, .assigned(base: 0xE000_0000))
        let before = bus.sysfs.configBytes(of: Self.card)
        let sizer = Sizer()
        #expect(try bars(bus, sizer: sizer) == ["0 1M memory assigned", "2 256M prefetchable memory 64 assigned", "4 64K memory assigned"])
        #expect(sizer.asked == [1, 5])
        #expect(bus.sysfs.configBytes(of: Self.card) == before)
    }

    @Test("BAR 2 got no room and its line was zeroed: sized in config space (both halves of the 64-bit BAR), the rest of the lines trusted")
    func zeroedLineIsSized() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, Self.bars, .assigned(base: 0xE000_0000), except: [2])
        let before = bus.sysfs.configBytes(of: Self.card)
        let sizer = Sizer()
        #expect(try bars(bus, sizer: sizer) == ["0 1M memory assigned", "2 256M prefetchable memory 64 unassigned", "4 64K memory assigned"])
        // Asked for the zeroed lines only: BAR 2 and the unimplemented 1 and 5; 3 is BAR 2's upper half, not a BAR.
        #expect(sizer.asked == [1, 2, 5])
        // Decoding was off while the mask was read, and everything is as it was afterwards.
        #expect(bus.configWrites.first.map { ($0.offset, $0.bytes) } ?? (0, []) == (0x04, [0x44, 0x05]))
        #expect(bus.sysfs.configBytes(of: Self.card) == before)
    }

    @Test("a zeroed line that config space sizes as 0 is an unimplemented BAR, not an unassigned one")
    func unimplemented() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, [EmulatedBAR(0, size: 1 << 20)], .assigned(base: 0xE000_0000))
        // BAR 1's register has no type bits and sizes to nothing.
        #expect(try bars(bus) == ["0 1M memory assigned"])
    }

    @Test("a line the kernel flagged IORESOURCE_UNSET: unassigned with its size, no config access")
    func unset() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, [EmulatedBAR(0, size: 32 << 20)], .unset)
        #expect(try bars(bus, sizer: nil) == ["0 32M memory unassigned"])
        #expect(bus.configWrites.isEmpty)
    }

    @Test("a sizer that declines (dry run, a function on vfio-pci): a zeroed line is not reported")
    func declined() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, Self.bars, .zeroed)
        #expect(try bars(bus, sizer: nil).isEmpty)
        #expect(bus.configWrites.isEmpty)
    }

    @Test("a 32-bit I/O BAR and a 32-bit memory BAR size as hardware answers")
    func ioAndMemory32() throws {
        let bus = reflashHost()
        bus.setBARs(Self.card, [EmulatedBAR(0, size: 128, .io), EmulatedBAR(1, size: 16 << 20)], .zeroed)
        #expect(try bars(bus) == ["0 128 I/O unassigned", "1 16M memory unassigned"])
    }

    @Test("no resource file (an older fake, or a function gone): nothing, not an error")
    func noResourceFile() throws {
        #expect(try bars(reflashHost()).isEmpty)
    }

    @Test("link attributes: as trained and as the function can do")
    func link() {
        let bus = reflashHost()
        bus.setLink(Self.card, current: ("2.5 GT/s PCIe", 4), maximum: ("8.0 GT/s PCIe", 16))
        let link = bus.reader.link(of: PCIAddress(Self.card)!)
        #expect(link.current == PCILinkState(speed: 2.5, width: 4))
        #expect(link.maximum == PCILinkState(speed: 8, width: 16))
        #expect(bus.reader.link(of: rootPort).current == nil)
    }
}
