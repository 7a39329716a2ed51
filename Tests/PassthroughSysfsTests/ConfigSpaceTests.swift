import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import SystemPackage
import Testing

@Suite("Config space through the sysfs config file")
struct ConfigSpaceTests {
    @Test("header fields and the PCI Express capability found after two others")
    func reads() throws {
        let bus = reflashHost()
        let port = bus.configSpace(rootPort)
        #expect(try port.vendorID() == 0x8086)
        #expect(try port.command() == 0x0547)
        #expect(try port.headerLayout() == .bridge)
        #expect(try port.expressCapability() == ConfigSpaceImage.express)
        #expect(try port.deviceControl() == 0x2937)
        #expect(try port.isLinkActive() == true)
        #expect(try port.bridgeControl() == 0x0003)
        #expect(try port.isSet(.serrEnable))
        let card = bus.configSpace(cardFunction)
        #expect(try card.vendorID() == 0x10EE)
        #expect(try card.headerLayout() == .endpoint)
        #expect(try card.expressCapability() == ConfigSpaceImage.express)
    }

    @Test("Bridge Control is refused on a type-0 header, and never written")
    func notABridge() {
        let bus = reflashHost()
        #expect(throws: ConfigSpaceError.notABridge(cardFunction, headerType: 0x80)) {
            try bus.configSpace(cardFunction).set(.secondaryBusReset, to: true)
        }
        #expect(bus.configWrites.isEmpty)
    }

    enum Garbage: String, CaseIterable, Sendable {
        case loop, pointerIntoHeader, noCapabilityListBit, allOnesEntry

        func apply(to image: inout ConfigSpaceImage) {
            switch self {
            case .loop: image.capability(at: ConfigSpaceImage.msi, id: 0x05, next: ConfigSpaceImage.powerManagement)
            case .pointerIntoHeader: image.capability(at: ConfigSpaceImage.msi, id: 0x05, next: 0x3C)
            case .noCapabilityListBit: image.set16(0x06, 0)
            case .allOnesEntry: image.capability(at: ConfigSpaceImage.msi, id: 0xFF, next: ConfigSpaceImage.express)
            }
        }
    }

    @Test("capability list garbage ends the walk", arguments: Garbage.allCases)
    func garbage(_ garbage: Garbage) {
        var image = ConfigSpaceImage.rootPort()
        garbage.apply(to: &image)
        let bus = reflashHost(port: image)
        #expect(throws: ConfigSpaceError.noExpressCapability(rootPort)) { try bus.configSpace(rootPort).deviceControl() }
    }

    @Test("reserved low pointer bits are masked, as the kernel does")
    func unalignedPointer() throws {
        var image = ConfigSpaceImage.rootPort()
        image.capability(at: ConfigSpaceImage.msi, id: 0x05, next: ConfigSpaceImage.express | 0x2)
        #expect(try reflashHost(port: image).configSpace(rootPort).expressCapability() == ConfigSpaceImage.express)
    }

    @Test("set changes exactly one bit with one 16-bit write; the rest of the file is untouched")
    func readModifyWrite() throws {
        let bus = reflashHost()
        let before = bus.sysfs.configBytes(of: "0000:00:01.0")
        #expect(try bus.configSpace(rootPort).set(.fatalErrorReporting, to: false) == true)
        var expected = before
        expected[ConfigSpaceImage.express + 0x08] &= ~0x04
        #expect(bus.sysfs.configBytes(of: "0000:00:01.0") == expected)
        #expect(bus.configWrites.map(\.offset) == [Int64(ConfigSpaceImage.express + 0x08)])
        #expect(bus.configWrites.map(\.bytes) == [[0x33, 0x29]])
        // Already clear: nothing is written.
        #expect(try bus.configSpace(rootPort).set(.fatalErrorReporting, to: false) == false)
        #expect(bus.configWrites.count == 1)
    }

    @Test("a device off the link reads all-ones and is never written")
    func allOnes() throws {
        let bus = reflashHost()
        bus.dropLink("0000:01:00")
        #expect(try bus.configSpace(cardFunction).vendorID() == 0xFFFF)
        #expect(throws: ConfigSpaceError.notResponding(cardFunction)) { try bus.configSpace(cardFunction).command() }
        #expect(throws: ConfigSpaceError.notResponding(cardFunction)) {
            try bus.configSpace(cardFunction).set(.serrEnable, to: false)
        }
        #expect(bus.configWrites.isEmpty)
    }

    @Test("a config file cut short (not root: 64 bytes) is a short read, not a wrong value")
    func shortRead() {
        let bus = reflashHost()
        bus.sysfs.writeBytes("devices/pci0000:00/0000:00:01.0/config", Array(ConfigSpaceImage.rootPort().bytes.prefix(64)))
        #expect(throws: ConfigSpaceError.shortRead(rootPort, offset: ConfigSpaceImage.powerManagement, expected: 2, got: 0)) {
            try bus.configSpace(rootPort).deviceControl()
        }
    }

    @Test("a read error carries its errno")
    func readError() {
        let bus = reflashHost()
        bus.failReads(of: "bus/pci/devices/0000:00:01.0/config", with: .permissionDenied)
        do {
            _ = try bus.configSpace(rootPort).command()
            Issue.record("expected an error")
        } catch {
            #expect(error.errno == .permissionDenied)
        }
    }

    @Test("port facts for check: hot-plug slot, link active reporting, AER found after another extended capability")
    func portFacts() throws {
        let plain = reflashHost().configSpace(rootPort)
        #expect(try plain.isHotPlugCapable() == false)
        #expect(try plain.reportsLinkActive())
        #expect(try plain.hasAdvancedErrorReporting() == false)

        let rich = reflashHost(port: .rootPort().withHotplugSlot().withAdvancedErrorReporting().withoutLinkActiveReporting())
            .configSpace(rootPort)
        #expect(try rich.isHotPlugCapable())
        #expect(try rich.reportsLinkActive() == false)
        #expect(try rich.extendedCapability(0x0001) == ConfigSpaceImage.advancedErrorReporting)
        #expect(try rich.extendedCapability(0x000B) == ConfigSpaceImage.extended)
    }

    @Test("Hot-Plug Capable counts only when the port says it has a slot")
    func hotplugWithoutSlot() throws {
        var image = ConfigSpaceImage.rootPort().withHotplugSlot()
        image.set16(ConfigSpaceImage.express + 0x02, 0x0042)
        #expect(try reflashHost(port: image).configSpace(rootPort).isHotPlugCapable() == false)
    }

    @Test("the extended list ends on a loop, a pointer into conventional space, or a 256-byte config space")
    func extendedGarbage() throws {
        var loop = ConfigSpaceImage.rootPort()
        loop.set32(ConfigSpaceImage.extended, UInt32(ConfigSpaceImage.extended) << 20 | 0x000B)
        #expect(try reflashHost(port: loop).configSpace(rootPort).hasAdvancedErrorReporting() == false)

        var intoHeader = ConfigSpaceImage.rootPort()
        intoHeader.set32(ConfigSpaceImage.extended, 0x040 << 20 | 0x000B)
        #expect(try reflashHost(port: intoHeader).configSpace(rootPort).hasAdvancedErrorReporting() == false)

        let bus = reflashHost()
        bus.sysfs.writeBytes("devices/pci0000:00/0000:00:01.0/config", Array(ConfigSpaceImage.rootPort().withAdvancedErrorReporting().bytes.prefix(256)))
        #expect(try bus.configSpace(rootPort).hasAdvancedErrorReporting() == false)
    }
}
