import Logging
import PassthroughAgent
import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import Testing

private let u200 = CardName("u200")!
private let slot = PCISlot("0000:01:00")!

private let u200Functions: Set<PCIAddress> = [PCIAddress("0000:01:00.0")!, PCIAddress("0000:01:00.1")!]

private func target(reset: CardResetMethod = .none, timeout: Duration = .seconds(60)) -> RecoveryTarget {
    RecoveryTarget(card: u200, slot: slot, upstreamPort: rootPort, functions: u200Functions, reset: reset, timeout: timeout)
}

private func procedure(_ bus: EmulatedPCIBus, _ clock: VirtualClock) -> RecoveryProcedure {
    RecoveryProcedure(reader: bus.reader, clock: clock, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

/// The card drops off the link (JTAG reload) and trains again at `returnsAt`; from then on a
/// rescan finds what `comeBack` adds.
private func reflashing(returnsAt: Duration?, comeBack: @escaping @Sendable (FakeSysfs) -> Void = { _ in }) -> (EmulatedPCIBus, VirtualClock) {
    let bus = reflashHost()
    let clock = VirtualClock()
    bus.dropLink("0000:01:00")
    bus.setLinkActive("0000:00:01.0", false)
    if let returnsAt {
        clock.schedule(at: returnsAt) {
            bus.restoreLink("0000:01:00")
            bus.setLinkActive("0000:00:01.0", true)
            bus.onRescan { sysfs in
                if !LinuxSysfsIOExists(sysfs, "bus/pci/devices/0000:01:00.0") { comeBack(sysfs) }
            }
        }
    }
    return (bus, clock)
}

private func LinuxSysfsIOExists(_ sysfs: FakeSysfs, _ relative: String) -> Bool {
    LinuxSysfsIO().exists(sysfs.root.appending(relative))
}

private func functions(_ outcome: RecoveryOutcome) -> [String] {
    guard case .recovered(let functions) = outcome else { return ["not recovered: \(outcome)"] }
    return functions.map { "\($0.address) \($0.id)" }
}

@Suite("Recovery after a reflash")
struct RecoveryProcedureTests {
    @Test("the card comes back with the same IDs: removed, link awaited, port rescanned")
    func sameID() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(3)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
            addCardFunction(sysfs, "0000:01:00.1", id: "10ee:9038")
        }
        let outcome = await procedure(bus, clock).recover(target())
        #expect(functions(outcome) == ["0000:01:00.0 10ee:903f", "0000:01:00.1 10ee:9038"])
        let writes = bus.writes.map { "\($0.path)=\($0.value)" }
        #expect(writes.prefix(2) == ["bus/pci/devices/0000:01:00.1/remove=1", "bus/pci/devices/0000:01:00.0/remove=1"])
        // No rescan while the port says the link is down.
        #expect(writes.dropFirst(2) == ["bus/pci/devices/0000:00:01.0/rescan=1"])
        #expect(clock.now() >= .seconds(3) && clock.now() < .seconds(4))
        // Backoff: 50 ms doubling, capped at 1 s.
        #expect(clock.sleeps.prefix(6) == [.milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1)])
        #expect(bus.configWrites.isEmpty)
    }

    @Test("a new bitstream with new IDs is reported as it is")
    func newID() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(2)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:9048", driver: nil)
        }
        #expect(functions(await procedure(bus, clock).recover(target())) == ["0000:01:00.0 10ee:9048"])
    }

    @Test("a bitstream without the second function: recovered with one")
    func withoutSecondFunction() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(1)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
        }
        #expect(functions(await procedure(bus, clock).recover(target())) == ["0000:01:00.0 10ee:903f"])
    }

    @Test("a card that never returns: gave up at the timeout exactly, saying the link stayed down")
    func neverReturns() async {
        let (bus, clock) = reflashing(returnsAt: nil)
        let outcome = await procedure(bus, clock).recover(target(timeout: .seconds(60)))
        guard case .gaveUp(let after, let state) = outcome else {
            Issue.record("expected gaveUp, got \(outcome)")
            return
        }
        #expect(after == .seconds(60))
        #expect(clock.now() == .seconds(60))
        #expect(state.linkActive == false)
        // "Link down" is believed for 5 s; after that every round rescans in case the port lies.
        #expect(state.rescans == bus.rescanCount)
        #expect(state.rescans > 40 && state.rescans <= 56)
        #expect(clock.sleeps.allSatisfy { $0 <= .seconds(1) })
    }

    @Test("a port that never sets its link-active bit (QEMU, ACPI hotplug): rescanned after 5 s, card found")
    func portThatNeverReportsTheLink() async {
        let bus = reflashHost()
        let clock = VirtualClock()
        bus.dropLink("0000:01:00")
        bus.setLinkActive("0000:00:01.0", false)
        clock.schedule(at: .seconds(1)) {
            bus.restoreLink("0000:01:00")  // the card answers again; the port's bit stays 0
            bus.onRescan { sysfs in
                if !LinuxSysfsIOExists(sysfs, "bus/pci/devices/0000:01:00.0") {
                    addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
                }
            }
        }
        let outcome = await procedure(bus, clock).recover(target())
        #expect(functions(outcome) == ["0000:01:00.0 10ee:903f"])
        #expect(clock.now() >= .seconds(5) && clock.now() < .seconds(7))
        #expect(bus.rescanCount == 1)
    }

    @Test("the link is up but the slot stays empty: rescans keep trying until the timeout")
    func linkUpButEmpty() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(1))
        let outcome = await procedure(bus, clock).recover(target(timeout: .seconds(5)))
        guard case .gaveUp(_, let state) = outcome else {
            Issue.record("expected gaveUp, got \(outcome)")
            return
        }
        #expect(state.linkActive == true)
        #expect(state.rescans == bus.rescanCount)
        #expect(state.rescans > 1)
    }

    @Test("secondary bus reset writes exactly bit 6 on, then off, on the upstream bridge")
    func secondaryBusReset() async {
        let (bus, clock) = reflashing(returnsAt: .milliseconds(300)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
        }
        let before = bus.sysfs.configBytes(of: "0000:00:01.0")
        let outcome = await procedure(bus, clock).recover(target(reset: .secondaryBus))
        #expect(functions(outcome) == ["0000:01:00.0 10ee:903f"])
        let writes = bus.configWrites.map { "\($0.path)@\(String($0.offset, radix: 16))=\($0.bytes)" }
        #expect(writes == [
            "bus/pci/devices/0000:00:01.0/config@3e=[67, 0]",
            "bus/pci/devices/0000:00:01.0/config@3e=[3, 0]",
        ])
        #expect(clock.sleeps.prefix(2) == [.milliseconds(10), .milliseconds(500)])
        // Only the link-status bit the emulated hardware toggled differs.
        var after = bus.sysfs.configBytes(of: "0000:00:01.0")
        after[ConfigSpaceImage.express + 0x13] = before[ConfigSpaceImage.express + 0x13]
        #expect(after == before)
    }

    @Test("no rescan attribute on the port: the whole bus is rescanned")
    func busRescanFallback() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(1)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
        }
        bus.sysfs.removeFile("devices/pci0000:00/0000:00:01.0/rescan")
        #expect(functions(await procedure(bus, clock).recover(target())) == ["0000:01:00.0 10ee:903f"])
        #expect(bus.writes.last.map { "\($0.path)=\($0.value)" } == "bus/pci/rescan=1")
    }

    @Test("a refused remove stops before any reset or rescan")
    func removeRefused() async {
        let (bus, clock) = reflashing(returnsAt: .seconds(1))
        bus.failWrites(to: "bus/pci/devices/0000:01:00.1/remove", with: .permissionDenied)
        let outcome = await procedure(bus, clock).recover(target(reset: .secondaryBus))
        guard case .failed(.removal(let error), _) = outcome else {
            Issue.record("expected a removal failure, got \(outcome)")
            return
        }
        #expect(error.errno == .permissionDenied)
        #expect(bus.configWrites.isEmpty)
        #expect(bus.rescanCount == 0)
    }

    @Test("cancelled while waiting: returns cancelled")
    func cancelled() async {
        let (bus, clock) = reflashing(returnsAt: nil)
        let task = Task { await procedure(bus, clock).recover(target()) }
        task.cancel()
        let outcome = await task.value
        guard case .cancelled = outcome else {
            Issue.record("expected cancelled, got \(outcome)")
            return
        }
    }
}

/// Only the card's own functions, and no bus reset with anything present below the port.
@Suite("Recovery touches only the card")
struct RecoveryReachTests {
    /// The reflash host with an extra function nobody claims in the card's slot (01:00.2, no driver).
    private func hostWithStrangerInSlot() -> (EmulatedPCIBus, VirtualClock) {
        let (bus, clock) = reflashing(returnsAt: .seconds(1)) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
            addCardFunction(sysfs, "0000:01:00.1", id: "10ee:9038")
        }
        addCardFunction(bus.sysfs, "0000:01:00.2", id: "10ee:9011", driver: nil)
        return (bus, clock)
    }

    /// The reflash host with a second device on the port's secondary bus (01:01.0, on xdma).
    private func hostWithNeighbour(returnsAt: Duration? = .seconds(1)) -> (EmulatedPCIBus, VirtualClock) {
        let (bus, clock) = reflashing(returnsAt: returnsAt) { sysfs in
            addCardFunction(sysfs, "0000:01:00.0", id: "10ee:903f")
            addCardFunction(sysfs, "0000:01:00.1", id: "10ee:9038")
        }
        addCardFunction(bus.sysfs, "0000:01:01.0", id: "10ee:903f")
        return (bus, clock)
    }

    private func removals(_ bus: EmulatedPCIBus) -> [String] {
        bus.writes.filter { $0.path.hasSuffix("/remove") }.map(\.path)
    }

    @Test("an unclaimed extra function in the slot: listed as a stranger, never removed, not taken for the card")
    func strangerInSlot() async throws {
        let (bus, clock) = hostWithStrangerInSlot()
        let procedure = procedure(bus, clock)
        #expect(try procedure.strangers(for: target()) == [PCIAddress("0000:01:00.2")!])

        let outcome = await procedure.recover(target())
        #expect(removals(bus) == ["bus/pci/devices/0000:01:00.1/remove", "bus/pci/devices/0000:01:00.0/remove"])
        #expect(bus.sysfs.exists("bus/pci/devices/0000:01:00.2"), "the stranger stays on the bus")
        // Recovered when the card's functions are back, at 1 s, not at the first look (the stranger was there).
        #expect(functions(outcome) == ["0000:01:00.0 10ee:903f", "0000:01:00.1 10ee:9038"])
        #expect(clock.now() >= .seconds(1))
    }

    @Test("a second device on the port's secondary bus: listed as a stranger, never removed")
    func neighbourOnTheBus() async throws {
        let (bus, clock) = hostWithNeighbour()
        let procedure = procedure(bus, clock)
        #expect(try procedure.strangers(for: target()) == [PCIAddress("0000:01:01.0")!])

        _ = await procedure.recover(target())
        #expect(!removals(bus).contains("bus/pci/devices/0000:01:01.0/remove"))
        #expect(bus.sysfs.driver(of: "0000:01:01.0") == "xdma")
    }

    @Test("the card alone below its port: no strangers")
    func noStrangers() throws {
        let (bus, clock) = reflashing(returnsAt: nil)
        bus.restoreLink("0000:01:00")
        #expect(try procedure(bus, clock).strangers(for: target()).isEmpty)
    }

    @Test("a port that is gone: strangers cannot be told, an error rather than 'none'")
    func strangersOfAVanishedPort() {
        let (bus, clock) = reflashing(returnsAt: nil)
        let elsewhere = RecoveryTarget(card: u200, slot: slot, upstreamPort: PCIAddress("0000:00:02.0")!, functions: u200Functions)
        #expect(throws: SysfsError.self) { try procedure(bus, clock).strangers(for: elsewhere) }
    }

    @Test("a secondary bus reset with a neighbour below the port: refused before anything is removed")
    func resetRefusedBeforeRemoval() async {
        let (bus, clock) = hostWithNeighbour()
        let outcome = await procedure(bus, clock).recover(target(reset: .secondaryBus))
        guard case .failed(.busOccupied(let port, let present), _) = outcome else {
            Issue.record("expected the reset to be refused, got \(outcome)")
            return
        }
        #expect(port == rootPort && present == [PCIAddress("0000:01:01.0")!])
        #expect(bus.writes.isEmpty, "nothing removed, nothing rescanned")
        #expect(bus.configWrites.isEmpty, "no reset")
    }

    @Test("bringing back with a neighbour below the port: the reset is refused, the bus untouched")
    func resetRefusedOnBringBack() async throws {
        let (bus, clock) = hostWithNeighbour()
        let procedure = procedure(bus, clock)
        try await procedure.remove(target())
        #expect(bus.sysfs.exists("bus/pci/devices/0000:01:01.0"))

        let outcome = await procedure.bringBack(target(reset: .secondaryBus))
        guard case .failed(.busOccupied(_, let present), _) = outcome else {
            Issue.record("expected the reset to be refused, got \(outcome)")
            return
        }
        #expect(present == [PCIAddress("0000:01:01.0")!])
        #expect(outcome.description.contains("0000:01:01.0 below 0000:00:01.0 is not the card's"))
        #expect(bus.configWrites.isEmpty)
    }

    @Test("bringing back a card that never left (--finish without --prepare): no reset, the card is just found")
    func noResetUnderAPresentCard() async {
        let bus = reflashHost()
        let clock = VirtualClock()
        let outcome = await procedure(bus, clock).bringBack(target(reset: .secondaryBus))
        #expect(functions(outcome) == ["0000:01:00.0 10ee:903f", "0000:01:00.1 10ee:9038"])
        #expect(bus.configWrites.isEmpty, "Secondary Bus Reset must not be pulsed under present functions")
        #expect(removals(bus).isEmpty)
    }

    @Test("the port cannot be listed: no reset, a failure that says why")
    func resetRefusedOnAnUnreadablePort() async throws {
        let (bus, clock) = reflashing(returnsAt: .seconds(1))
        let procedure = procedure(bus, clock)
        try await procedure.remove(target())
        bus.failReads(of: "bus/pci/devices/0000:00:01.0", with: .permissionDenied)
        let outcome = await procedure.bringBack(target(reset: .secondaryBus))
        guard case .failed(.busUnreadable(let error), _) = outcome else {
            Issue.record("expected busUnreadable, got \(outcome)")
            return
        }
        #expect(error.errno == .permissionDenied)
        #expect(bus.configWrites.isEmpty)
    }
}
