import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughTestSupport
import Testing

private let f0 = PCIAddress("0000:01:00.0")!
private let f1 = PCIAddress("0000:01:00.1")!

/// A move the daemon makes: the rebind when the guest starts, the give-back when it stops.
enum RecordedMove: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case rebind, giveBack

    var testDescription: String { rawValue }
}

/// The sysfs writes of a rebind (xdma → vfio-pci, guest started) and of the give-back that follows
/// (guest stopped), as the daemon made them on a host of their own.
private func recordedWrites() async throws -> (rebind: [(path: String, value: String)], giveBack: [(path: String, value: String)]) {
    let fixture = try await DaemonFixture.make(guest: .running)
    await fixture.pass()
    let rebind = fixture.bus.writes
    await fixture.hypervisor.define("fpga-dev", state: .shutOff)
    await fixture.pass()
    return (rebind, Array(fixture.bus.writes.dropFirst(rebind.count)))
}

@Suite("kill -9 at any point of a move: a fresh daemon converges")
struct InterruptedMoveTests {
    @Test("stopped after each write of a move, whatever the guest does meanwhile: the next daemon finishes the job",
          arguments: RecordedMove.allCases, [GuestState.shutOff, .running])
    func killedAfterEachWrite(move: RecordedMove, guest: GuestState) async throws {
        let recorded = try await recordedWrites()
        #expect(recorded.rebind.count == 6)
        #expect(recorded.giveBack.count == 6)
        let before = move == .rebind ? [] : recorded.rebind
        let writes = move == .rebind ? recorded.rebind : recorded.giveBack
        for killedAfter in 0...writes.count {
            // What sysfs holds when the daemon dies right after write `killedAfter`: the kernel's reaction
            // to every write before, none after.
            let fixture = try await DaemonFixture.make(guest: guest)
            for write in before + writes.prefix(killedAfter) {
                try fixture.bus.write(write.value, to: fixture.bus.sysfs.root.appending(write.path))
            }
            let point: Comment = "\(move) stopped after write \(killedAfter) of \(writes.count), guest \(guest)"
            await fixture.pass()
            if guest.isActive {
                #expect(fixture.driver("0000:01:00.0") == "vfio-pci", point)
                #expect(fixture.driver("0000:01:00.1") == "vfio-pci", point)
                #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1], point)
            } else {
                #expect(fixture.driver("0000:01:00.0") == "xdma", point)
                #expect(fixture.driver("0000:01:00.1") == "xdma", point)
                #expect(fixture.bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n", point)
                #expect(fixture.bus.sysfs.driverOverride(of: "0000:01:00.1") == "(null)\n", point)
            }
            #expect(fixture.notifications(.stepFailed).isEmpty, point)
            // Converged means settled: the next pass has nothing to do.
            let settled = fixture.bus.writes.count
            await fixture.pass()
            #expect(fixture.bus.writes.count == settled, point)
        }
    }
}

@Suite("A driverless card whose guest is stopped goes back to the kernel's choice")
struct DriverlessCardTests {
    @Test("driverless, with or without driver_override=vfio-pci left behind: back on xdma, override cleared",
          arguments: [nil, "vfio-pci"] as [String?])
    func backToHostDriver(override: String?) async throws {
        let fixture = try await DaemonFixture.make(guest: .shutOff)
        for function in [f0, f1] {
            fixture.bus.sysfs.unbind(function.description)
            if let override {
                try fixture.bus.write(override, to: fixture.bus.sysfs.layout.attribute("driver_override", of: function))
            }
        }
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "xdma")
        #expect(fixture.driver("0000:01:00.1") == "xdma")
        #expect(fixture.bus.sysfs.driverOverride(of: "0000:01:00.0") == "(null)\n")
        #expect(fixture.bus.sysfs.driverOverride(of: "0000:01:00.1") == "(null)\n")
        #expect(fixture.notifications(.cardGivenBack).count == 2)
        #expect(await fixture.supervisor.summary == "u200: on the host")
    }

    @Test("a card no driver wants is probed once per appearance, then left driverless: no loop")
    func nobodyWantsIt() async throws {
        let fixture = try await DaemonFixture.make(guest: .shutOff)
        fixture.bus.failProbes(of: "xdma")
        fixture.bus.sysfs.unbind("0000:01:00.0")
        fixture.bus.sysfs.unbind("0000:01:00.1")
        let probes = { fixture.bus.writes.filter { $0.path == "bus/pci/drivers_probe" }.map(\.value) }
        await fixture.pass()
        #expect(probes() == ["0000:01:00.0", "0000:01:00.1"])
        for _ in 0..<3 { await fixture.pass() }
        #expect(probes().count == 2)
        #expect(fixture.driver("0000:01:00.0") == nil)
        #expect(fixture.notifications(.stepFailed).isEmpty)
        #expect(await fixture.supervisor.summary == "u200: on the host")

        // It drops off the bus and comes back (a reflash): a new appearance, probed once more.
        fixture.bus.sysfs.removeFunction("0000:01:00.0")
        fixture.bus.sysfs.removeFunction("0000:01:00.1")
        await fixture.pass()
        fixture.bus.sysfs.addFunction("0000:01:00.0", id: "10ee:903f", iommuGroup: 5, below: "0000:00:01.0")
        fixture.bus.sysfs.addFunction("0000:01:00.1", id: "10ee:9038", iommuGroup: 5, below: "0000:00:01.0")
        await fixture.pass()
        await fixture.pass()
        #expect(probes().count == 4)
    }
}

@Suite("The host's own surprises")
struct HostSurpriseTests {
    static let idsOnly = """
        [[card]]
        name = "u200"
        ids = ["10ee:903f", "10ee:9038"]
        guest = "fpga-dev"
        """

    @Test("an ids-only card off the bus does not adopt an identical card elsewhere; its own is taken back when it returns")
    func noLookalikeAdopted() async throws {
        let fixture = try await DaemonFixture.make(config: Self.idsOnly, guest: .running)
        await fixture.pass()
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])

        // Reflashing: the card leaves the link; meanwhile a second card with the same IDs is hot-plugged elsewhere.
        await fixture.hypervisor.unplug(f0, from: "fpga-dev")
        await fixture.hypervisor.unplug(f1, from: "fpga-dev")
        fixture.bus.sysfs.removeFunction("0000:01:00.0")
        fixture.bus.sysfs.removeFunction("0000:01:00.1")
        fixture.bus.sysfs.addFunction("0000:00:02.0", id: "8086:1901", classCode: 0x060400, driver: "pcieport", iommuGroup: 2, subsystem: nil)
        fixture.bus.sysfs.addFunction("0000:02:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 9, below: "0000:00:02.0")
        await fixture.supervisor.handle(fixture.uevent(.add, "0000:02:00.0", id: "10ee:903f"))
        await fixture.pass()
        #expect(fixture.driver("0000:02:00.0") == "xdma")
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        #expect(await fixture.supervisor.summary == "u200: absent")
        let vanished = try #require(fixture.notifications(.cardVanished).first)
        #expect(vanished.message.description.contains("0000:02:00 shows the same IDs and is another card: not taken"))

        // Its own card returns where it was: rebound and re-attached; the other one is left alone.
        fixture.bus.sysfs.addFunction("0000:01:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
        fixture.bus.sysfs.addFunction("0000:01:00.1", id: "10ee:9038", driver: "xdma", iommuGroup: 5, below: "0000:00:01.0")
        await fixture.pass()
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])
        #expect(fixture.driver("0000:02:00.0") == "xdma")
        #expect(!fixture.bus.writes.contains { $0.value.hasPrefix("0000:02:00") || $0.path.contains("0000:02:00") })
    }

    @Test("a PCI bridge configured as a card stays on pcieport, and the daemon says why, once")
    func bridgeAsCard() async throws {
        let config = """
            [[card]]
            name = "port"
            address = "0000:00:01"
            guest = "fpga-dev"
            """
        let fixture = try await DaemonFixture.make(config: config, guest: .running)
        await fixture.pass()
        await fixture.pass()
        #expect(fixture.bus.writes.isEmpty)
        #expect(fixture.driver("0000:00:01.0") == "pcieport")
        #expect(await fixture.hypervisor.attachCalls.isEmpty)
        #expect(await fixture.supervisor.summary.hasPrefix("port: left where it is, 0000:00:01.0 is a PCI bridge (class 0x060400)"))
        #expect(fixture.logs.entries.filter { $0.message.description.contains("is a PCI bridge") }.count == 1)
    }
}
