import PassthroughAgent
import PassthroughCore
import PassthroughTestSupport
import Synchronization
import Testing

/// Eight cards reflashed at once come back side by side: each card in a lane of its own (cards sharing an
/// IOMMU group share one), one guest's attaches queued one after another (libvirt runs one job per domain).
@Suite("Cards of different guests come back side by side")
struct SideBySideTests {
    @Test("an attach that hangs in one guest does not hold up another guest's card")
    func otherGuestNotHeldUp() async throws {
        let rig = try await ReflashRig(secondCard: true)
        defer { rig.loop.cancel() }
        // fpga-dev's QEMU stops answering while its card is being given back to it; fpga-test starts.
        await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        await rig.hypervisor.hang(.attach, in: "fpga-dev")
        await rig.hypervisor.define("fpga-test", state: .running)
        await rig.supervisor.markDirty([ReflashRig.card, ReflashRig.secondCard])

        try await waitUntil("u250 attached to fpga-test while u200's attach hangs") {
            await rig.hypervisor.liveHostdevs(of: "fpga-test") == [ReflashRig.secondFunction]
        }
        #expect(await rig.hypervisor.liveHostdevs(of: "fpga-dev").isEmpty)
        await rig.hypervisor.unhang(.attach)
        try await waitUntil("u200 back in fpga-dev") { await rig.isBackInItsGuest() }
        #expect(rig.notifications(.stepFailed).isEmpty)
    }

    @Test("two cards in one IOMMU group are never moved at once: the second waits while the first's attach is in flight")
    func sharedGroupInTurn() async throws {
        let rig = try await ReflashRig(secondCard: true)
        defer { rig.loop.cancel() }
        await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        await rig.hypervisor.hang(.attach, in: "fpga-dev")
        await rig.supervisor.markDirty([ReflashRig.card])
        try await waitUntil("u200's attach in flight") { await rig.hypervisor.attachCalls.last == ReflashRig.function }
        // u250 comes back in u200's group (a bitstream behind the same switch, no ACS) and its guest starts.
        rig.bus.sysfs.removeFunction(ReflashRig.secondFunction.description)
        ReflashRig.plugCard(rig.bus.sysfs, id: "10ee:903f", at: ReflashRig.secondFunction, below: ReflashRig.secondPort, iommuGroup: 5)
        await rig.hypervisor.define("fpga-test", state: .running)
        await rig.supervisor.markDirty([ReflashRig.secondCard])
        try await Task.sleep(for: .milliseconds(300))   // a lane of its own would have bound it by now
        #expect(rig.bus.sysfs.driver(of: ReflashRig.secondFunction.description) == "xdma")
        await rig.hypervisor.unhang(.attach)
        try await waitUntil("both in their guests") {
            let back = await rig.isBackInItsGuest()
            let lent = await rig.hypervisor.liveHostdevs(of: "fpga-test")
            return back && lent == [ReflashRig.secondFunction]
        }
        #expect(rig.bus.sysfs.driver(of: ReflashRig.secondFunction.description) == "vfio-pci")
    }

    @Test("one guest's cards are attached one after another, never two of its jobs at once")
    func oneGuestInTurn() async throws {
        let rig = try await ReflashRig(secondCard: true, secondGuest: "fpga-dev")
        defer { rig.loop.cancel() }
        let before = await rig.hypervisor.attachCalls.count
        await rig.hypervisor.unplug(ReflashRig.function, from: "fpga-dev")
        await rig.hypervisor.unplug(ReflashRig.secondFunction, from: "fpga-dev")
        await rig.hypervisor.hang(.attach, in: "fpga-dev")
        await rig.supervisor.markDirty([ReflashRig.card, ReflashRig.secondCard])

        try await waitUntil("the first attach in flight") { await rig.hypervisor.attachCalls.count == before + 1 }
        try await Task.sleep(for: .milliseconds(300))   // u250's lane would have called by now, were it not queued
        let calls = await rig.hypervisor.attachCalls
        #expect(calls.count == before + 1)
        await rig.hypervisor.unhang(.attach)
        try await waitUntil("both back in fpga-dev") {
            Set(await rig.hypervisor.liveHostdevs(of: "fpga-dev")) == [ReflashRig.function, ReflashRig.secondFunction]
        }
        #expect(await rig.hypervisor.attachCalls.count == before + 2)
    }

    @Test("one card's burst of events does not hold up another card: each settles on its own")
    func settlesPerCard() async throws {
        let rig = try await ReflashRig(secondCard: true) { $0.settle = .milliseconds(300) }
        defer { rig.loop.cancel() }
        await rig.hypervisor.define("fpga-test", state: .running)
        await rig.supervisor.markDirty([ReflashRig.secondCard])
        // u200 keeps making events (a flapping link, a driver probing over and over), for as long as a loaded
        // machine could take to attach u250 — and a loop that waits for all to be quiet would never do it.
        let burstEnds = ContinuousClock.now + .seconds(30)
        var attachedDuringTheBurst = false
        while ContinuousClock.now < burstEnds {
            await rig.supervisor.markDirty([ReflashRig.card])
            if await rig.hypervisor.liveHostdevs(of: "fpga-test") == [ReflashRig.secondFunction] {
                attachedDuringTheBurst = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(attachedDuringTheBurst)
    }

    @Test("READY=1 comes once every card has been looked at, also when the only one is off the bus for a reflash at start")
    func readyWithACardHeld() async throws {
        let rig = try await ReflashRig()
        _ = try await rig.supervisor.reflash(ReflashRig.card, .prepare)
        rig.loop.cancel()
        await rig.loop.value
        // The agent starts again while u200 is held off the bus: no card can be reconciled, none is to wait for.
        let supervisor = CardSupervisor(config: rig.config, host: rig.bus.host, hypervisor: rig.hypervisor,
                                        logger: rig.logs.logger(), options: rig.options, waitingFor: [.udev, .libvirt])
        let ready = Mutex<[String]>([])
        let loop = Task { await supervisor.run { summary, isFirst in if isFirst { ready.withLock { $0.append(summary) } } } }
        defer { loop.cancel() }
        await supervisor.sourceReady(.udev)
        await supervisor.sourceReady(.libvirt)
        try await waitUntil("READY=1") { !ready.withLock { $0 }.isEmpty }
        #expect(ready.withLock { $0 }.count == 1)
        #expect(ready.withLock { $0 }.first?.contains("u200: off the bus for a reflash") == true)
    }

    @Test("READY=1 does not wait for ever for a card whose events never pause (a flapping link)")
    func readyDespiteAFlappingCard() async throws {
        let rig = try await ReflashRig()
        rig.loop.cancel()
        await rig.loop.value
        var options = rig.options
        options.settle = .milliseconds(200)
        options.readyDespiteBursts = .milliseconds(600)
        let supervisor = CardSupervisor(config: rig.config, host: rig.bus.host, hypervisor: rig.hypervisor,
                                        logger: rig.logs.logger(), options: options, waitingFor: [.udev])
        let ready = Mutex<[String]>([])
        let loop = Task { await supervisor.run { summary, isFirst in if isFirst { ready.withLock { $0.append(summary) } } } }
        defer { loop.cancel() }
        // u200's uevents come every 50 ms, never 200 ms apart.
        let flapping = Task {
            while !Task.isCancelled {
                await supervisor.markDirty([ReflashRig.card])
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { flapping.cancel() }
        let started = ContinuousClock.now
        await supervisor.sourceReady(.udev)
        try await waitUntil("READY=1", timeout: .seconds(10)) { !ready.withLock { $0 }.isEmpty }
        #expect(ContinuousClock.now - started >= .milliseconds(600))
        #expect(ready.withLock { $0 }.count == 1)
    }

    @Test("READY=1 with no card configured: nothing to look at is looked at")
    func readyWithoutCards() async throws {
        let rig = try await ReflashRig()
        defer { rig.loop.cancel() }
        let supervisor = CardSupervisor(config: AgentConfig(cards: []), host: rig.bus.host, hypervisor: rig.hypervisor,
                                        logger: rig.logs.logger(), options: rig.options, waitingFor: [.udev])
        let ready = Mutex(false)
        let loop = Task { await supervisor.run { _, isFirst in if isFirst { ready.withLock { $0 = true } } } }
        defer { loop.cancel() }
        await supervisor.sourceReady(.udev)
        try await waitUntil("READY=1") { ready.withLock { $0 } }
    }
}
