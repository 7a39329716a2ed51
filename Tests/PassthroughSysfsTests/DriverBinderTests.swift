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

    @Test("an absent card is reported, not guessed")
    func absentCard() {
        let bus = alveoHost()
        let gone = card("gone", address: "0000:07:00")
        #expect(throws: BindError.cardAbsent(CardName("gone")!)) { try binder(bus, cards: [gone]).move(card: gone, to: .vfio) }
    }
}
