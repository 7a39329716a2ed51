import Logging
import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import SystemPackage
import Testing

private func binder(_ bus: EmulatedPCIBus, cards: [CardConfig]) -> DriverBinder {
    DriverBinder(config: AgentConfig(cards: cards), reader: bus.reader, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

@Suite("Binding a card to vfio-pci and back")
struct DriverBinderTests {
    @Test("vfio: every function moves from xdma to vfio-pci, in the kernel's order, verified")
    func toVFIO() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        let moves = try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
        #expect(moves.map { "\($0.address) \($0.from?.rawValue ?? "-")→\($0.to?.rawValue ?? "-")" }
            == ["0000:01:00.0 xdma→vfio-pci", "0000:01:00.1 xdma→vfio-pci"])
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "vfio-pci")
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "vfio-pci")
        let first = bus.writes.prefix(3).map { "\($0.path)=\($0.value)" }
        #expect(first == [
            "bus/pci/devices/0000:01:00.0/driver_override=vfio-pci",
            "bus/pci/drivers/xdma/unbind=0000:01:00.0",
            "bus/pci/drivers_probe=0000:01:00.0",
        ])
    }

    @Test("a second move is a no-op: nothing is written")
    func idempotent() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
        let writes = bus.writes.count
        #expect(try binder(bus, cards: [u200]).move(card: u200, to: .vfio).isEmpty)
        #expect(bus.writes.count == writes)
    }

    @Test("host (auto): override cleared, the kernel's own driver takes it back")
    func backToAuto() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        let binder = binder(bus, cards: [u200])
        try binder.move(card: u200, to: .vfio)
        try binder.move(card: u200, to: .host(.auto))
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
    }

    @Test("host (named driver) and host (none)")
    func namedAndNone() throws {
        let bus = alveoHost()
        let named = card("u200", address: "0000:01:00", hostDriver: .driver(DriverName("xdma")!))
        try binder(bus, cards: [named]).move(card: named, to: .vfio)
        try binder(bus, cards: [named]).move(card: named, to: .host(.driver(DriverName("xdma")!)))
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "xdma")
        try binder(bus, cards: [named]).move(card: named, to: .host(.none))
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == nil)
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == nil)
    }

    @Test("a device no card claims is never touched")
    func unconfigured() {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        let stranger = card("nic", address: "0000:03:00")
        #expect(throws: BindError.unknownCard(CardName("nic")!)) {
            try binder(bus, cards: [u200]).move(card: stranger, to: .vfio)
        }
        #expect(bus.writes.isEmpty)
        #expect(bus.sysfs.driver(of: "0000:03:00.0") == "e1000e")
    }

    @Test("vfio-pci is refused while a group peer is used by the host; nothing is written")
    func groupInterlock() throws {
        let bus = alveoHost()
        let nic = card("nic", address: "0000:03:00")
        do {
            try binder(bus, cards: [nic]).move(card: nic, to: .vfio)
            Issue.record("expected a refusal")
        } catch {
            guard case .groupInUse(_, let group, let peers) = error else { Issue.record("wrong error \(error)"); return }
            #expect(group == 7)
            #expect(peers.map(\.address.description) == ["0000:00:1f.3"])
            #expect(error.description.contains("snd_hda_intel"))
        }
        #expect(bus.writes.isEmpty)
        #expect(bus.sysfs.driver(of: "0000:03:00.0") == "e1000e")
    }

    @Test("vfio-pci not loaded: a clear error before anything is written")
    func vfioMissing() {
        let sysfs = FakeSysfs()
        let bus = EmulatedPCIBus(sysfs)
        bus.loadDriver("xdma", claiming: ["10ee:903f"])
        sysfs.addFunction("0000:01:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 5)
        let u200 = card("u200", address: "0000:01:00")
        #expect(throws: BindError.driverNotLoaded(.vfioPCI)) { try binder(bus, cards: [u200]).move(card: u200, to: .vfio) }
        #expect(bus.writes.isEmpty)
    }

    @Test("a probe that binds nothing is caught by reading the link back, and rolled back")
    func silentProbeFailure() throws {
        let bus = alveoHost()
        bus.failProbes(of: "vfio-pci")
        let u200 = card("u200", address: "0000:01:00")
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a failure")
        } catch {
            guard case .stepFailed(let failure, let rollback) = error else { Issue.record("wrong error \(error)"); return }
            #expect(failure.address == PCIAddress("0000:01:00.0"))
            #expect(failure.reason == .verification(expected: "driver vfio-pci", actual: nil))
            #expect(rollback == .restored)
        }
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
    }

    @Test("an unbind the kernel refuses stops the move; the override is put back")
    func unbindRefused() throws {
        let bus = alveoHost()
        bus.failWrites(to: "bus/pci/drivers/xdma/unbind", with: .permissionDenied)
        let u200 = card("u200", address: "0000:01:00")
        #expect(throws: BindError.self) { try binder(bus, cards: [u200]).move(card: u200, to: .vfio) }
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.1") == "(null)\n")
    }

    @Test("the second function failing after the first moved: both end on xdma again")
    func secondFunctionFails() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        bus.failWrites(to: "bus/pci/devices/0000:01:00.1/driver_override", with: .ioError)
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a failure")
        } catch {
            guard case .stepFailed(let failure, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(failure.address == PCIAddress("0000:01:00.1"))
            guard case .sysfs(let sysfsError) = failure.reason else { Issue.record("wrong reason"); return }
            #expect(sysfsError.errno == .ioError)
        }
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "xdma")
    }

    @Test("when the rollback itself fails, the error says the card may be driverless")
    func rollbackFailure() throws {
        let bus = alveoHost()
        bus.failProbes(of: "vfio-pci")
        bus.failProbes(of: "xdma")
        let u200 = card("u200", address: "0000:01:00")
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a failure")
        } catch {
            guard case .stepFailed(_, .failed(let failures)) = error else { Issue.record("wrong error \(error)"); return }
            #expect(failures.map(\.address.description) == ["0000:01:00.0"])
            #expect(error.description.contains("ROLLBACK FAILED"))
        }
    }

    @Test("a card that drops off the bus mid-move is reported as gone, not as driverless")
    func goneMidMove() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00")
        // Function 0 has moved; as the binder turns to function 1, the whole card falls off the link.
        bus.beforeWrite(to: "bus/pci/devices/0000:01:00.1/driver_override") { sysfs in
            sysfs.removeFunction("0000:01:00.0")
            sysfs.removeFunction("0000:01:00.1")
        }
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a failure")
        } catch {
            guard case .stepFailed(let failure, let rollback) = error else { Issue.record("wrong error \(error)"); return }
            #expect(failure.address == PCIAddress("0000:01:00.1"))
            #expect(rollback == .restored)
            #expect(!error.description.contains("ROLLBACK FAILED"))
        }
    }

    @Test("a group peer whose driver name cannot be read blocks vfio-pci; nothing is written")
    func unreadablePeerBlocks() throws {
        let bus = alveoHost()
        bus.sysfs.addDriver("nvme\u{1b}[2J")
        bus.sysfs.addFunction("0000:01:01.0", id: "144d:a808", classCode: 0x010802, driver: "nvme\u{1b}[2J", iommuGroup: 5, below: "0000:00:01.0")
        let u200 = card("u200", address: "0000:01:00")
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a refusal")
        } catch {
            guard case .groupInUse(_, _, let peers) = error else { Issue.record("wrong error \(error)"); return }
            #expect(peers.map(\.address.description) == ["0000:01:01.0"])
            #expect(error.description.contains("0000:01:01.0 (an unreadable driver (\"nvme\\u{1b}[2J\"))"))
        }
        #expect(bus.writes.isEmpty)
    }

    @Test("a card function whose driver cannot be read is never moved, to vfio-pci or back", arguments: [BindTarget.vfio, .host(.auto)])
    func unreadableOwnDriver(target: BindTarget) throws {
        let bus = alveoHost()
        bus.sysfs.addDriver("x\u{202e}dma")
        bus.sysfs.unbind("0000:01:00.1")
        bus.sysfs.bind("0000:01:00.1", to: "x\u{202e}dma")
        try bus.write("vfio-pci", to: bus.sysfs.layout.attribute("driver_override", of: PCIAddress("0000:01:00.1")!))
        let u200 = card("u200", address: "0000:01:00")
        let before = bus.writes.count
        #expect(throws: BindError.handsOff(CardName("u200")!, .unreadableDriver(PCIAddress("0000:01:00.1")!, .unreadable("x\u{202e}dma")))) {
            try binder(bus, cards: [u200]).move(card: u200, to: target)
        }
        #expect(bus.writes.count == before)
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "x\u{202e}dma")
    }

    @Test("a PCI bridge matched by a card is refused, by address or by ids: pcieport keeps it", arguments: [
        card("port", address: "0000:00:01"), card("port", ids: ["8086:1901"]),
    ])
    func bridgeRefused(port: CardConfig) throws {
        let bus = alveoHost()
        do {
            try binder(bus, cards: [port]).move(card: port, to: .vfio)
            Issue.record("expected a refusal")
        } catch {
            guard case .handsOff(_, .bridge(let address, _)) = error else { Issue.record("wrong error \(error)"); return }
            #expect(address == PCIAddress("0000:00:01.0"))
            #expect(error.description.contains("0000:00:01.0 is a PCI bridge (class 0x060400)"))
        }
        #expect(bus.writes.isEmpty)
        #expect(bus.sysfs.driver(of: "0000:00:01.0") == "pcieport")
    }

    @Test("another device at the address by the time of the unbind (a reflash under the move) is not unbound")
    func identityChangedBeforeUnbind() throws {
        let bus = alveoHost()
        let u200 = card("u200", address: "0000:01:00", ids: ["10ee:903f", "10ee:9038"])
        // Claimed on the snapshot; as the override is written, the card re-enumerates with a bitstream
        // whose ID the card does not list, and xdma grabs it at once.
        bus.beforeWrite(to: "bus/pci/devices/0000:01:00.0/driver_override") { sysfs in
            sysfs.removeFunction("0000:01:00.0")
            sysfs.addFunction("0000:01:00.0", id: "10ee:5044", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
        }
        do {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio)
            Issue.record("expected a refusal")
        } catch {
            guard case .stepFailed(let failure, let rollback) = error else { Issue.record("wrong error \(error)"); return }
            #expect(failure.reason == .identityChanged(expected: PCIID("10ee:903f")!, found: PCIID("10ee:5044")!))
            #expect(failure.step == "unbind from xdma")
            #expect(rollback == .restored)
            #expect(error.description.contains("it was 10ee:903f when the move was planned and is 10ee:5044 now"))
        }
        #expect(!bus.writes.contains { $0.path.hasSuffix("/unbind") })
        #expect(bus.sysfs.driver(of: "0000:01:00.0") == "xdma")
        // The override the move had just written on it is taken back: the next probe is the kernel's own.
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "xdma")
    }

    @Test("an ids-only card is moved in the slot the plan was made for, never a look-alike elsewhere")
    func plannedSlotOnly() throws {
        let bus = alveoHost()
        // A second, identical card, which is not this one; the configured one is off the bus.
        bus.sysfs.addFunction("0000:00:02.0", id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 2, subsystem: nil)
        bus.sysfs.addFunction("0000:02:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 9, below: "0000:00:02.0")
        bus.sysfs.removeFunction("0000:01:00.0")
        bus.sysfs.removeFunction("0000:01:00.1")
        let u200 = card("u200", ids: ["10ee:903f", "10ee:9038"])
        #expect(throws: BindError.cardAbsent(CardName("u200")!)) {
            try binder(bus, cards: [u200]).move(card: u200, to: .vfio, in: PCISlot("0000:01:00"))
        }
        #expect(bus.writes.isEmpty)
        #expect(bus.sysfs.driver(of: "0000:02:00.0") == "xdma")
    }

    @Test("on its host driver, but with driver_override left on vfio-pci by an interrupted move: only the override is put right")
    func staleOverride() throws {
        let bus = alveoHost()
        try bus.write("vfio-pci", to: bus.sysfs.layout.attribute("driver_override", of: PCIAddress("0000:01:00.1")!))
        let u200 = card("u200", address: "0000:01:00")
        let before = bus.writes.count
        #expect(try binder(bus, cards: [u200]).move(card: u200, to: .host(.auto)).isEmpty)
        #expect(bus.writes.dropFirst(before).map { "\($0.path)=\($0.value)" } == ["bus/pci/devices/0000:01:00.1/driver_override=\n"])
        #expect(bus.sysfs.driver(of: "0000:01:00.1") == "xdma")
        #expect(bus.sysfs.driverOverride(of: "0000:01:00.1") == "(null)\n")
    }

    @Test("an absent card is reported, not guessed")
    func absentCard() {
        let bus = alveoHost()
        let gone = card("gone", address: "0000:07:00")
        #expect(throws: BindError.cardAbsent(CardName("gone")!)) { try binder(bus, cards: [gone]).move(card: gone, to: .vfio) }
    }
}
